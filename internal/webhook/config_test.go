package webhook

import (
	"encoding/json"
	"errors"
	"testing"
)

func TestDefaultConfig(t *testing.T) {
	c := DefaultConfig()
	if c.MaxBodyBytes != 4194304 {
		t.Errorf("maxBodyBytes = %d, want 4194304", c.MaxBodyBytes)
	}
	if c.Auth.BearerTokenFile != "/etc/autorollbackd/webhook/token" {
		t.Errorf("bearerTokenFile = %q", c.Auth.BearerTokenFile)
	}
	if c.Auth.InsecureDisableAuth || c.Auth.RequireClientCert || c.Auth.BasicAuth != (BasicAuthConfig{}) {
		t.Errorf("only bearer authentication should be on by default: %+v", c.Auth)
	}
	if err := c.Validate(); err != nil {
		t.Errorf("default config invalid: %v", err)
	}
	// The keys are the documented camelCase ones.
	b, err := json.Marshal(c)
	if err != nil {
		t.Fatal(err)
	}
	want := `{"maxBodyBytes":4194304,"auth":{"insecureDisableAuth":false,"bearerTokenFile":"/etc/autorollbackd/webhook/token","basicAuth":{"username":"","passwordFile":""},"requireClientCert":false}}`
	if string(b) != want {
		t.Errorf("JSON keys:\n got %s\nwant %s", b, want)
	}
}

func TestConfigValidate(t *testing.T) {
	noAuth := "auth: no authentication configured: set bearerTokenFile, basicAuth or requireClientCert, or insecureDisableAuth: true"
	tests := []struct {
		name string
		edit func(c *Config)
		want string
	}{
		{"default", func(*Config) {}, ""},
		{"zero body limit", func(c *Config) { c.MaxBodyBytes = 0 }, "maxBodyBytes: must be positive"},
		{"negative body limit", func(c *Config) { c.MaxBodyBytes = -1 }, "maxBodyBytes: must be positive"},
		{"no authentication", func(c *Config) { c.Auth.BearerTokenFile = "" }, noAuth},
		{"insecure opt-out", func(c *Config) { c.Auth = AuthConfig{InsecureDisableAuth: true} }, ""},
		{"opt-out wins over the default token", func(c *Config) { c.Auth.InsecureDisableAuth = true }, ""},
		{"basic auth only", func(c *Config) {
			c.Auth = AuthConfig{BasicAuth: BasicAuthConfig{Username: "am", PasswordFile: "/p"}}
		}, ""},
		{"client certificate only", func(c *Config) { c.Auth = AuthConfig{RequireClientCert: true} }, ""},
		{"username without password file", func(c *Config) { c.Auth.BasicAuth.Username = "am" },
			"auth.basicAuth.passwordFile: required with auth.basicAuth.username"},
		{"password file without username", func(c *Config) { c.Auth.BasicAuth.PasswordFile = "/p" },
			"auth.basicAuth.username: required with auth.basicAuth.passwordFile"},
		{"colon in username", func(c *Config) { c.Auth.BasicAuth = BasicAuthConfig{Username: "a:b", PasswordFile: "/p"} },
			`auth.basicAuth.username: must not contain ":"`},
		{"several problems, sorted", func(c *Config) {
			c.MaxBodyBytes = 0
			c.Auth = AuthConfig{BasicAuth: BasicAuthConfig{Username: "am"}}
		}, "auth.basicAuth.passwordFile: required with auth.basicAuth.username\nmaxBodyBytes: must be positive"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := DefaultConfig()
			tc.edit(&c)
			err := c.Validate()
			assertKeyErrors(t, err, tc.want)
		})
	}
}

func TestConfigValidateTLS(t *testing.T) {
	c := DefaultConfig()
	c.Auth.RequireClientCert = true
	err := c.ValidateTLS(TLSConfig{CertFile: "c", KeyFile: "k"})
	assertKeyErrors(t, err, "auth.requireClientCert: requires server.tls.clientCAFile")
	assertKeyErrors(t, c.ValidateTLS(TLSConfig{CertFile: "c", KeyFile: "k", ClientCAFile: "ca"}), "")
	assertKeyErrors(t, DefaultConfig().ValidateTLS(TLSConfig{}), "")
}

func TestTLSConfigValidate(t *testing.T) {
	tests := []struct {
		name string
		cfg  TLSConfig
		want string
	}{
		{"plain HTTP", TLSConfig{}, ""},
		{"cert and key", TLSConfig{CertFile: "c", KeyFile: "k"}, ""},
		{"with client CA", TLSConfig{CertFile: "c", KeyFile: "k", ClientCAFile: "ca"}, ""},
		{"cert only", TLSConfig{CertFile: "c"}, "keyFile: required with certFile"},
		{"key only", TLSConfig{KeyFile: "k"}, "certFile: required with keyFile"},
		{"client CA only", TLSConfig{ClientCAFile: "ca"}, "clientCAFile: requires certFile and keyFile"},
		{"client CA and cert only", TLSConfig{CertFile: "c", ClientCAFile: "ca"},
			"clientCAFile: requires certFile and keyFile\nkeyFile: required with certFile"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			assertKeyErrors(t, tc.cfg.Validate(), tc.want)
		})
	}
}

// assertKeyErrors checks err's text and that every joined error is a
// *KeyError.
func assertKeyErrors(t *testing.T, err error, want string) {
	t.Helper()
	if want == "" {
		if err != nil {
			t.Fatalf("got error %q, want none", err)
		}
		return
	}
	if err == nil || err.Error() != want {
		t.Fatalf("got error %v\nwant %s", err, want)
	}
	errs := []error{err}
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		errs = j.Unwrap()
	}
	for _, e := range errs {
		if _, ok := errors.AsType[*KeyError](e); !ok {
			t.Errorf("%T %q is not a *KeyError", e, e)
		}
	}
}
