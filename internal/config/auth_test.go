package config

import (
	"slices"
	"strings"
	"testing"

	"github.com/autorollbackd/autorollbackd/internal/webhook"
)

func TestLoadSenders(t *testing.T) {
	cfg, err := loadYAML(t, `
server:
  tls: {certFile: /tls/tls.crt, keyFile: /tls/tls.key, clientCAFile: /tls/ca.crt}
webhook:
  auth:
    senders:
      - name: team-a
        bearerTokenFile: /etc/autorollbackd/senders/team-a/token
        namespaces: [team-a, team-a-canary]
      - name: platform
        basicAuth: {username: platform, passwordFile: /etc/autorollbackd/senders/platform/password}
        namespaces: ["*"]
      - name: am-mtls
        clientCertSubject: alertmanager-team-b
        namespaces: [team-b]
`)
	if err != nil {
		t.Fatal(err)
	}
	want := []webhook.SenderConfig{
		{Name: "team-a", BearerTokenFile: "/etc/autorollbackd/senders/team-a/token", Namespaces: []string{"team-a", "team-a-canary"}},
		{Name: "platform", BasicAuth: webhook.BasicAuthConfig{Username: "platform", PasswordFile: "/etc/autorollbackd/senders/platform/password"}, Namespaces: []string{"*"}},
		{Name: "am-mtls", ClientCertSubject: "alertmanager-team-b", Namespaces: []string{"team-b"}},
	}
	got := cfg.Webhook.Auth.Senders
	if !slices.EqualFunc(got, want, func(a, b webhook.SenderConfig) bool {
		return a.Name == b.Name && a.BearerTokenFile == b.BearerTokenFile && a.BasicAuth == b.BasicAuth &&
			a.ClientCertSubject == b.ClientCertSubject && slices.Equal(a.Namespaces, b.Namespaces)
	}) {
		t.Errorf("senders = %+v\nwant %+v", got, want)
	}
	// The single credential keeps its default next to the senders.
	if cfg.Webhook.Auth.BearerTokenFile != webhook.DefaultBearerTokenFile {
		t.Errorf("webhook.auth.bearerTokenFile = %q", cfg.Webhook.Auth.BearerTokenFile)
	}
}

func TestLoadAuthErrors(t *testing.T) {
	tests := []struct {
		name    string
		yaml    string
		environ []string
		want    string
	}{
		{"unknown key in a sender", "webhook:\n  auth:\n    senders:\n      - {name: team-a, bearerTokenFile: /a, namespace: [team-a]}\n",
			nil, "webhook.auth.senders[0].namespace: unknown key"},
		{"sender without namespaces", "webhook:\n  auth:\n    senders:\n      - {name: team-a, bearerTokenFile: /a}\n",
			nil, `webhook.auth.senders[0].namespaces: required: the namespaces the sender may send alerts about, or ["*"] for any`},
		{"api.auth without a method", "api:\n  auth: {bearerTokenFile: ''}\n",
			nil, "api.auth: no authentication configured: set bearerTokenFile, basicAuth or requireClientCert, or insecureDisableAuth: true"},
		{"api.auth basic auth without password", "api:\n  auth: {basicAuth: {username: reader}}\n",
			nil, "api.auth.basicAuth.passwordFile: required with auth.basicAuth.username"},
		{"api.auth client certificate without a CA", "api:\n  auth: {requireClientCert: true}\n",
			nil, "api.auth.requireClientCert: requires server.tls.clientCAFile"},
		{"api.auth reads the webhook token", "webhook:\n  auth: {bearerTokenFile: /t}\napi:\n  auth: {bearerTokenFile: /t}\n",
			nil, "api.auth.bearerTokenFile: also the file of webhook.auth.bearerTokenFile; a credential that sends alerts must not read incidents"},
		{"api.auth reads a sender's token", "api:\n  auth: {bearerTokenFile: /a}\nwebhook:\n  auth:\n    senders:\n      - {name: team-a, bearerTokenFile: /a, namespaces: [team-a]}\n",
			nil, "api.auth.bearerTokenFile: also the file of webhook.auth.senders[0].bearerTokenFile; a credential that sends alerts must not read incidents"},
		{"api.auth reads the webhook token, from the environment", "", []string{"AUTOROLLBACKD_API_AUTH_BEARERTOKENFILE=" + webhook.DefaultBearerTokenFile},
			"api.auth.bearerTokenFile: also the file of webhook.auth.bearerTokenFile; a credential that sends alerts must not read incidents"},
		{"client certificates on both sides",
			"server:\n  tls: {certFile: /c, keyFile: /k, clientCAFile: /ca}\napi:\n  auth: {requireClientCert: true}\nwebhook:\n  auth:\n    senders:\n      - {name: am, clientCertSubject: am, namespaces: [team-b]}\n",
			nil, "api.auth.requireClientCert: accepts every certificate of server.tls.clientCAFile, which webhook.auth.senders[0].clientCertSubject takes too; a credential that sends alerts must not read incidents"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := loadYAML(t, tc.yaml, tc.environ...)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v\nwant an error with %s", err, tc.want)
			}
		})
	}
}

func TestLoadAPIAuth(t *testing.T) {
	cfg, err := loadYAML(t, "", "AUTOROLLBACKD_API_AUTH_BEARERTOKENFILE=/run/read-token")
	if err != nil {
		t.Fatal(err)
	}
	if got := cfg.API.Auth; got != (webhook.Credential{BearerTokenFile: "/run/read-token"}) {
		t.Errorf("api.auth = %+v", got)
	}
	cfg, err = loadYAML(t, "")
	if err != nil {
		t.Fatal(err)
	}
	if got := cfg.API.Auth.BearerTokenFile; got != "/etc/autorollbackd/api/token" {
		t.Errorf("default api.auth.bearerTokenFile = %q", got)
	}
}
