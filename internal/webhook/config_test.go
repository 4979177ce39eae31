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
	want := `{"maxBodyBytes":4194304,"auth":{"insecureDisableAuth":false,"bearerTokenFile":"/etc/autorollbackd/webhook/token","basicAuth":{"username":"","passwordFile":""},"requireClientCert":false,"senders":[]}}`
	if string(b) != want {
		t.Errorf("JSON keys:\n got %s\nwant %s", b, want)
	}
}

func TestConfigValidate(t *testing.T) {
	noAuth := "auth: no authentication configured: set bearerTokenFile, basicAuth, requireClientCert or senders, or insecureDisableAuth: true"
	tests := []struct {
		name string
		edit func(c *Config)
		want string
	}{
		{"default", func(*Config) {}, ""},
		{"zero body limit", func(c *Config) { c.MaxBodyBytes = 0 }, "maxBodyBytes: must be positive"},
		{"negative body limit", func(c *Config) { c.MaxBodyBytes = -1 }, "maxBodyBytes: must be positive"},
		{"no authentication", func(c *Config) { c.Auth.BearerTokenFile = "" }, noAuth},
		{"insecure opt-out", func(c *Config) { c.Auth = AuthConfig{Credential: Credential{InsecureDisableAuth: true}} }, ""},
		{"opt-out wins over the default token", func(c *Config) { c.Auth.InsecureDisableAuth = true }, ""},
		{"basic auth only", func(c *Config) {
			c.Auth = AuthConfig{Credential: Credential{BasicAuth: BasicAuthConfig{Username: "am", PasswordFile: "/p"}}}
		}, ""},
		{"client certificate only", func(c *Config) { c.Auth = AuthConfig{Credential: Credential{RequireClientCert: true}} }, ""},
		{"username without password file", func(c *Config) { c.Auth.BasicAuth.Username = "am" },
			"auth.basicAuth.passwordFile: required with auth.basicAuth.username"},
		{"password file without username", func(c *Config) { c.Auth.BasicAuth.PasswordFile = "/p" },
			"auth.basicAuth.username: required with auth.basicAuth.passwordFile"},
		{"colon in username", func(c *Config) { c.Auth.BasicAuth = BasicAuthConfig{Username: "a:b", PasswordFile: "/p"} },
			`auth.basicAuth.username: must not contain ":"`},
		{"senders only", withSenders(true, SenderConfig{Name: "team-a", BearerTokenFile: "/a", Namespaces: []string{"team-a"}}), ""},
		{"senders of every kind", withSenders(false,
			SenderConfig{Name: "team-a", BearerTokenFile: "/a", Namespaces: []string{"team-a", "team-a-canary"}},
			SenderConfig{Name: "platform", BasicAuth: BasicAuthConfig{Username: "platform", PasswordFile: "/p"}, Namespaces: []string{"*"}},
			SenderConfig{Name: "am-mtls", ClientCertSubject: "alertmanager-team-b", Namespaces: []string{"team-b"}},
		), ""},
		{"opt-out ignores senders", func(c *Config) {
			c.Auth.InsecureDisableAuth = true
			c.Auth.Senders = []SenderConfig{{}}
		}, ""},
		{"sender without credential", withSenders(false, SenderConfig{Name: "team-a", Namespaces: []string{"team-a"}}),
			"auth.senders[0]: no credential: set one of bearerTokenFile, basicAuth, clientCertSubject"},
		{"sender with two credentials", withSenders(false, SenderConfig{Name: "team-a", BearerTokenFile: "/a", ClientCertSubject: "am", Namespaces: []string{"team-a"}}),
			"auth.senders[0]: bearerTokenFile and clientCertSubject are both set; a sender has one credential"},
		{"sender without name", withSenders(false, SenderConfig{BearerTokenFile: "/a", Namespaces: []string{"team-a"}}),
			"auth.senders[0].name: required"},
		{"sender name not a DNS label", withSenders(false, SenderConfig{Name: "Team_A", BearerTokenFile: "/a", Namespaces: []string{"team-a"}}),
			`auth.senders[0].name: must be a lower-case DNS label of at most 63 characters, got "Team_A"`},
		{"reserved sender name", withSenders(false, SenderConfig{Name: "default", BearerTokenFile: "/a", Namespaces: []string{"team-a"}}),
			`auth.senders[0].name: "default" is reserved (the single credential of webhook.auth)`},
		{"duplicate sender name", withSenders(false,
			SenderConfig{Name: "team-a", BearerTokenFile: "/a", Namespaces: []string{"team-a"}},
			SenderConfig{Name: "team-a", BearerTokenFile: "/b", Namespaces: []string{"team-b"}}),
			`auth.senders[1].name: "team-a" is also the name of auth.senders[0]`},
		{"sender without namespaces", withSenders(false, SenderConfig{Name: "team-a", BearerTokenFile: "/a"}),
			`auth.senders[0].namespaces: required: the namespaces the sender may send alerts about, or ["*"] for any`},
		{"bad namespace", withSenders(false, SenderConfig{Name: "team-a", BearerTokenFile: "/a", Namespaces: []string{"team-a", "Team A"}}),
			`auth.senders[0].namespaces[1]: must be a namespace name or "*", got "Team A"`},
		{"star with others", withSenders(false, SenderConfig{Name: "team-a", BearerTokenFile: "/a", Namespaces: []string{"team-a", "*"}}),
			`auth.senders[0].namespaces: "*" must be alone`},
		{"token file of the single credential", withSenders(false, SenderConfig{Name: "team-a", BearerTokenFile: DefaultBearerTokenFile, Namespaces: []string{"team-a"}}),
			"auth.senders[0].bearerTokenFile: also the file of auth.bearerTokenFile"},
		{"token file of another sender", withSenders(true,
			SenderConfig{Name: "team-a", BearerTokenFile: "/a", Namespaces: []string{"team-a"}},
			SenderConfig{Name: "team-b", BearerTokenFile: "/a", Namespaces: []string{"team-b"}}),
			"auth.senders[1].bearerTokenFile: also the file of auth.senders[0].bearerTokenFile"},
		{"sender basic auth without password", withSenders(false, SenderConfig{Name: "team-a", BasicAuth: BasicAuthConfig{Username: "a"}, Namespaces: []string{"team-a"}}),
			"auth.senders[0].basicAuth.passwordFile: required with auth.senders[0].basicAuth.username"},
		{"sender basic auth with colon", withSenders(false, SenderConfig{Name: "team-a", BasicAuth: BasicAuthConfig{Username: "a:b", PasswordFile: "/p"}, Namespaces: []string{"team-a"}}),
			`auth.senders[0].basicAuth.username: must not contain ":"`},
		{"user name of the single credential", func(c *Config) {
			c.Auth.BasicAuth = BasicAuthConfig{Username: "am", PasswordFile: "/p"}
			c.Auth.Senders = []SenderConfig{{Name: "team-a", BasicAuth: BasicAuthConfig{Username: "am", PasswordFile: "/q"}, Namespaces: []string{"team-a"}}}
		}, `auth.senders[0].basicAuth.username: "am" is also the user name of auth.basicAuth`},
		{"user name of another sender", withSenders(false,
			SenderConfig{Name: "team-a", BasicAuth: BasicAuthConfig{Username: "am", PasswordFile: "/p"}, Namespaces: []string{"team-a"}},
			SenderConfig{Name: "team-b", BasicAuth: BasicAuthConfig{Username: "am", PasswordFile: "/q"}, Namespaces: []string{"team-b"}}),
			`auth.senders[1].basicAuth.username: "am" is also the user name of auth.senders[0]`},
		{"subject of another sender", withSenders(false,
			SenderConfig{Name: "team-a", ClientCertSubject: "am", Namespaces: []string{"team-a"}},
			SenderConfig{Name: "team-b", ClientCertSubject: "am", Namespaces: []string{"team-b"}}),
			`auth.senders[1].clientCertSubject: "am" is also the subject of auth.senders[0]`},
		{"several problems, sorted", func(c *Config) {
			c.MaxBodyBytes = 0
			c.Auth = AuthConfig{Credential: Credential{BasicAuth: BasicAuthConfig{Username: "am"}}}
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

// withSenders sets the senders, and with alone removes the single
// credential.
func withSenders(alone bool, senders ...SenderConfig) func(*Config) {
	return func(c *Config) {
		if alone {
			c.Auth.Credential = Credential{}
		}
		c.Auth.Senders = senders
	}
}

func TestConfigValidateTLS(t *testing.T) {
	c := DefaultConfig()
	c.Auth.RequireClientCert = true
	err := c.ValidateTLS(TLSConfig{CertFile: "c", KeyFile: "k"})
	assertKeyErrors(t, err, "auth.requireClientCert: requires server.tls.clientCAFile")
	assertKeyErrors(t, c.ValidateTLS(TLSConfig{CertFile: "c", KeyFile: "k", ClientCAFile: "ca"}), "")
	assertKeyErrors(t, DefaultConfig().ValidateTLS(TLSConfig{}), "")

	c = DefaultConfig()
	c.Auth.Senders = []SenderConfig{
		{Name: "team-a", BearerTokenFile: "/a", Namespaces: []string{"team-a"}},
		{Name: "team-b", ClientCertSubject: "am-b", Namespaces: []string{"team-b"}},
	}
	assertKeyErrors(t, c.ValidateTLS(TLSConfig{CertFile: "c", KeyFile: "k"}), "auth.senders[1].clientCertSubject: requires server.tls.clientCAFile")
	assertKeyErrors(t, c.ValidateTLS(TLSConfig{CertFile: "c", KeyFile: "k", ClientCAFile: "ca"}), "")
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
