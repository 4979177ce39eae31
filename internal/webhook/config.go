package webhook

import (
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strings"

	"k8s.io/apimachinery/pkg/util/validation"
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

// AuthConfig says how webhook requests authenticate: with the single
// Credential, whose holder may send alerts about any namespace, or as one of
// the Senders, each allowed its own namespaces. A request passing any one of
// them is authenticated, and Notification.Sender says as whom.
type AuthConfig struct {
	Credential `mapstructure:",squash"`
	// Senders are named credentials, each limited to some namespaces: in a
	// cluster shared by several teams, one per team's Alertmanager.
	Senders []SenderConfig `json:"senders" mapstructure:"senders"`
}

// Credential is one set of authentication methods; a request passing any
// one is authenticated. It is the single credential of webhook.auth and the
// whole of api.auth.
type Credential struct {
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

// SenderConfig is a named sender of alerts: exactly one credential, and the
// namespaces it may send alerts about.
type SenderConfig struct {
	// Name names the sender in Notification.Sender, logs and metrics.
	Name            string          `json:"name" mapstructure:"name"`
	BearerTokenFile string          `json:"bearerTokenFile,omitempty" mapstructure:"bearerTokenFile"`
	BasicAuth       BasicAuthConfig `json:"basicAuth,omitzero" mapstructure:"basicAuth"`
	// ClientCertSubject matches a client certificate verified against
	// server.tls.clientCAFile by its subject's common name or any of its
	// DNS or URI subject alternative names.
	ClientCertSubject string `json:"clientCertSubject,omitempty" mapstructure:"clientCertSubject"`
	// Namespaces are the namespaces the sender may send alerts about; ["*"]
	// is any namespace.
	Namespaces []string `json:"namespaces" mapstructure:"namespaces"`
}

// Reserved sender names: Notification.Sender.Name of the single credential
// of webhook.auth, and with authentication off.
const (
	SenderDefault   = "default"
	SenderAnonymous = "anonymous"
)

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
		Auth:         AuthConfig{Credential: Credential{BearerTokenFile: DefaultBearerTokenFile}, Senders: []SenderConfig{}},
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
// client certificates need a client CA, or no request could ever pass.
func (c Config) ValidateTLS(t TLSConfig) error {
	if c.Auth.InsecureDisableAuth || t.ClientCAFile != "" {
		return nil
	}
	errs := c.Auth.Credential.validateTLS(t)
	for i, s := range c.Auth.Senders {
		if s.ClientCertSubject != "" {
			errs = append(errs, &KeyError{Key: fmt.Sprintf("auth.senders[%d].clientCertSubject", i), Err: errors.New("requires server.tls.clientCAFile")})
		}
	}
	return sortedJoin(errs)
}

// ValidateTLS checks the credential against the server's TLS section.
func (c Credential) ValidateTLS(t TLSConfig) error {
	return sortedJoin(c.validateTLS(t))
}

func (c Credential) validateTLS(t TLSConfig) []error {
	if c.RequireClientCert && !c.InsecureDisableAuth && t.ClientCAFile == "" {
		return []error{&KeyError{Key: "auth.requireClientCert", Err: errors.New("requires server.tls.clientCAFile")}}
	}
	return nil
}

// Validate checks every key of the credential, named as under `auth`, and
// returns all problems at once, joined, each a *KeyError. It does not read
// the files it names.
func (c Credential) Validate() error {
	errs := c.validate()
	if !c.InsecureDisableAuth && c.empty() {
		errs = append(errs, &KeyError{Key: "auth", Err: errors.New("no authentication configured: set bearerTokenFile, basicAuth or requireClientCert, or insecureDisableAuth: true")})
	}
	return sortedJoin(errs)
}

// empty reports whether no method is configured.
func (c Credential) empty() bool {
	return c.BearerTokenFile == "" && c.BasicAuth == (BasicAuthConfig{}) && !c.RequireClientCert
}

func (c Credential) validate() []error {
	if c.InsecureDisableAuth {
		return nil
	}
	return c.BasicAuth.validate("auth.basicAuth")
}

func (b BasicAuthConfig) validate(key string) []error {
	var errs []error
	bad := func(k, msg string) {
		errs = append(errs, &KeyError{Key: key + "." + k, Err: errors.New(msg)})
	}
	switch {
	case b.Username != "" && b.PasswordFile == "":
		bad("passwordFile", "required with "+key+".username")
	case b.Username == "" && b.PasswordFile != "":
		bad("username", "required with "+key+".passwordFile")
	}
	// RFC 7617: the user-id cannot contain a colon.
	if strings.Contains(b.Username, ":") {
		bad("username", `must not contain ":"`)
	}
	return errs
}

// senderName is what a sender may be called: a DNS label, so that it is
// short and safe as a metric label value.
var senderName = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$`)

func (c AuthConfig) validate() []error {
	if c.InsecureDisableAuth {
		return nil
	}
	errs := c.Credential.validate()
	if c.Credential.empty() && len(c.Senders) == 0 {
		errs = append(errs, &KeyError{Key: "auth", Err: errors.New("no authentication configured: set bearerTokenFile, basicAuth, requireClientCert or senders, or insecureDisableAuth: true")})
	}
	// Who already uses a name, a file, a user name or a subject, so that
	// every credential identifies one sender.
	names := map[string]string{}
	files := map[string]string{}
	users := map[string]string{}
	subjects := map[string]string{}
	if c.BearerTokenFile != "" {
		files[c.BearerTokenFile] = "auth.bearerTokenFile"
	}
	if c.BasicAuth.Username != "" {
		users[c.BasicAuth.Username] = "auth.basicAuth"
	}
	for i, s := range c.Senders {
		key := fmt.Sprintf("auth.senders[%d]", i)
		bad := func(k, format string, args ...any) {
			errs = append(errs, &KeyError{Key: key + k, Err: fmt.Errorf(format, args...)})
		}
		switch {
		case s.Name == "":
			bad(".name", "required")
		case s.Name == SenderDefault:
			bad(".name", "%q is reserved (the single credential of webhook.auth)", s.Name)
		case s.Name == SenderAnonymous:
			bad(".name", "%q is reserved (authentication off)", s.Name)
		case !senderName.MatchString(s.Name):
			bad(".name", "must be a lower-case DNS label of at most 63 characters, got %q", s.Name)
		case names[s.Name] != "":
			bad(".name", "%q is also the name of %s", s.Name, names[s.Name])
		default:
			names[s.Name] = key
		}

		var set []string
		if s.BearerTokenFile != "" {
			set = append(set, "bearerTokenFile")
		}
		if s.BasicAuth != (BasicAuthConfig{}) {
			set = append(set, "basicAuth")
		}
		if s.ClientCertSubject != "" {
			set = append(set, "clientCertSubject")
		}
		switch len(set) {
		case 0:
			bad("", "no credential: set one of bearerTokenFile, basicAuth, clientCertSubject")
		case 1:
		default:
			bad("", "%s are both set; a sender has one credential", strings.Join(set, " and "))
		}
		if f := s.BearerTokenFile; f != "" {
			if other := files[f]; other != "" {
				bad(".bearerTokenFile", "also the file of %s", other)
			} else {
				files[f] = key + ".bearerTokenFile"
			}
		}
		if s.BasicAuth != (BasicAuthConfig{}) {
			errs = append(errs, s.BasicAuth.validate(key+".basicAuth")...)
			if f := s.BasicAuth.PasswordFile; f != "" {
				if other := files[f]; other != "" {
					bad(".basicAuth.passwordFile", "also the file of %s", other)
				} else {
					files[f] = key + ".basicAuth.passwordFile"
				}
			}
			if u := s.BasicAuth.Username; u != "" {
				if other := users[u]; other != "" {
					bad(".basicAuth.username", "%q is also the user name of %s", u, other)
				} else {
					users[u] = key
				}
			}
		}
		if sub := s.ClientCertSubject; sub != "" {
			if other := subjects[sub]; other != "" {
				bad(".clientCertSubject", "%q is also the subject of %s", sub, other)
			} else {
				subjects[sub] = key
			}
		}

		switch {
		case len(s.Namespaces) == 0:
			bad(".namespaces", `required: the namespaces the sender may send alerts about, or ["*"] for any`)
		case slices.Contains(s.Namespaces, "*") && len(s.Namespaces) > 1:
			bad(".namespaces", `"*" must be alone`)
		}
		for j, ns := range s.Namespaces {
			if ns != "*" && len(validation.IsDNS1123Label(ns)) > 0 {
				bad(fmt.Sprintf(".namespaces[%d]", j), `must be a namespace name or "*", got %q`, ns)
			}
		}
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
