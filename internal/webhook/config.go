package webhook

import (
	"errors"
	"slices"
	"strings"
)

// DefaultBearerTokenFile is where the chart mounts the webhook token Secret.
const DefaultBearerTokenFile = "/etc/autorollbackd/webhook/token"

// DefaultMaxBodyBytes is the default webhook.maxBodyBytes: 4 MiB, over three
// times a group of 1,000 kube-prometheus-stack alerts (1.26 MB, see
// TestDefaultBodyLimitTakesAThousandAlerts), so that the max_alerts: 1000
// the documentation recommends never meets a 413.
const DefaultMaxBodyBytes = 4 << 20

// Config is the `webhook:` section of the configuration.
type Config struct {
	// MaxBodyBytes bounds the request body; a larger one is refused with 413.
	MaxBodyBytes int64      `json:"maxBodyBytes" mapstructure:"maxBodyBytes"`
	Auth         AuthConfig `json:"auth" mapstructure:"auth"`
}

// AuthConfig says how webhook requests authenticate. When several methods
// are configured, a request passing any one of them is authenticated.
type AuthConfig struct {
	// InsecureDisableAuth turns authentication off; the other keys are then
	// ignored. NewAuthenticator logs a warning.
	InsecureDisableAuth bool `json:"insecureDisableAuth" mapstructure:"insecureDisableAuth"`
	// BearerTokenFile holds the token expected in `Authorization: Bearer`;
	// empty disables bearer authentication.
	BearerTokenFile string          `json:"bearerTokenFile" mapstructure:"bearerTokenFile"`
	BasicAuth       BasicAuthConfig `json:"basicAuth" mapstructure:"basicAuth"`
	// RequireClientCert accepts a request that carries a client certificate
	// verified against server.tls.clientCAFile.
	RequireClientCert bool `json:"requireClientCert" mapstructure:"requireClientCert"`
}

// BasicAuthConfig configures HTTP basic authentication; an empty Username
// disables it.
type BasicAuthConfig struct {
	Username     string `json:"username" mapstructure:"username"`
	PasswordFile string `json:"passwordFile" mapstructure:"passwordFile"`
}

// TLSConfig is the `server.tls` section: the server's certificate and the
// CA that verifies client certificates. All empty serves plain HTTP.
type TLSConfig struct {
	CertFile string `json:"certFile" mapstructure:"certFile"`
	KeyFile  string `json:"keyFile" mapstructure:"keyFile"`
	// ClientCAFile verifies client certificates when a client presents one
	// (tls.VerifyClientCertIfGiven), so kubelet probes without a certificate
	// still work; webhook.auth.requireClientCert then demands one.
	ClientCAFile string `json:"clientCAFile" mapstructure:"clientCAFile"`
}

// DefaultConfig returns the webhook section used for every key not set.
func DefaultConfig() Config {
	return Config{
		MaxBodyBytes: DefaultMaxBodyBytes,
		Auth:         AuthConfig{BearerTokenFile: DefaultBearerTokenFile},
	}
}

// KeyError is a problem with the value of one key, named relative to its
// section (for example `auth.basicAuth.passwordFile`).
type KeyError struct {
	Key string
	Err error
}

func (e *KeyError) Error() string { return e.Key + ": " + e.Err.Error() }
func (e *KeyError) Unwrap() error { return e.Err }

// Validate checks every key of the section and returns all problems at once,
// joined, each a *KeyError. It does not read the files it names.
func (c Config) Validate() error {
	var errs []error
	if c.MaxBodyBytes <= 0 {
		errs = append(errs, &KeyError{Key: "maxBodyBytes", Err: errors.New("must be positive")})
	}
	errs = append(errs, c.Auth.validate()...)
	return sortedJoin(errs)
}

// ValidateTLS checks the webhook section against the server's TLS section:
// requireClientCert needs a client CA, or no request could ever pass.
func (c Config) ValidateTLS(t TLSConfig) error {
	if c.Auth.RequireClientCert && !c.Auth.InsecureDisableAuth && t.ClientCAFile == "" {
		return &KeyError{Key: "auth.requireClientCert", Err: errors.New("requires server.tls.clientCAFile")}
	}
	return nil
}

func (c AuthConfig) validate() []error {
	if c.InsecureDisableAuth {
		return nil
	}
	var errs []error
	bad := func(key, msg string) {
		errs = append(errs, &KeyError{Key: key, Err: errors.New(msg)})
	}
	b := c.BasicAuth
	switch {
	case b.Username != "" && b.PasswordFile == "":
		bad("auth.basicAuth.passwordFile", "required with auth.basicAuth.username")
	case b.Username == "" && b.PasswordFile != "":
		bad("auth.basicAuth.username", "required with auth.basicAuth.passwordFile")
	}
	// RFC 7617: the user-id cannot contain a colon.
	if strings.Contains(b.Username, ":") {
		bad("auth.basicAuth.username", `must not contain ":"`)
	}
	if c.BearerTokenFile == "" && b.Username == "" && b.PasswordFile == "" && !c.RequireClientCert {
		bad("auth", "no authentication configured: set bearerTokenFile, basicAuth or requireClientCert, or insecureDisableAuth: true")
	}
	return errs
}

// Validate checks that certificate and key come together and that a client
// CA is only set with them. It does not read the files.
func (c TLSConfig) Validate() error {
	var errs []error
	bad := func(key, msg string) {
		errs = append(errs, &KeyError{Key: key, Err: errors.New(msg)})
	}
	switch {
	case c.CertFile != "" && c.KeyFile == "":
		bad("keyFile", "required with certFile")
	case c.CertFile == "" && c.KeyFile != "":
		bad("certFile", "required with keyFile")
	}
	if c.ClientCAFile != "" && (c.CertFile == "" || c.KeyFile == "") {
		bad("clientCAFile", "requires certFile and keyFile")
	}
	return sortedJoin(errs)
}

// enabled reports whether TLS is configured at all.
func (c TLSConfig) enabled() bool { return c.CertFile != "" || c.KeyFile != "" }

// sortedJoin joins errors in a stable order so messages are reproducible.
func sortedJoin(errs []error) error {
	slices.SortFunc(errs, func(a, b error) int { return strings.Compare(a.Error(), b.Error()) })
	return errors.Join(errs...)
}
