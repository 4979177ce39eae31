package webhook

import (
	"crypto/sha256"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

const readToken = "read-token"

// apiCode runs one GET through a.Wrap with the Authorization header.
func apiCode(a *Authenticator, authorization string) (int, string) {
	r := httptest.NewRequest(http.MethodGet, "/api/v1/incidents", nil)
	if authorization != "" {
		r.Header.Set("Authorization", authorization)
	}
	w := httptest.NewRecorder()
	a.Wrap(okHandler).ServeHTTP(w, r)
	return w.Code, strings.TrimSpace(w.Body.String())
}

// webhookAuth is the authenticator of webhook.auth with the single
// credential's token and a sender's, in dir.
func webhookAuth(t *testing.T, dir string) *Authenticator {
	t.Helper()
	writeFile(t, filepath.Join(dir, "webhook-token"), []byte(sharedToken))
	writeFile(t, filepath.Join(dir, "team-a-token"), []byte(teamAToken))
	a, err := NewAuthenticator(AuthConfig{
		Credential: Credential{BearerTokenFile: filepath.Join(dir, "webhook-token")},
		Senders:    []SenderConfig{{Name: "team-a", BearerTokenFile: filepath.Join(dir, "team-a-token"), Namespaces: []string{"team-a"}}},
	}, discard())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = a.Close() })
	return a
}

// TestAPIAuthenticatorApartFromWebhook: the read token reads, and no
// credential of the webhook does; the read token sends no alerts.
func TestAPIAuthenticatorApartFromWebhook(t *testing.T) {
	dir := t.TempDir()
	hook := webhookAuth(t, dir)
	writeFile(t, filepath.Join(dir, "read-token"), []byte(readToken+"\n"))
	api, err := NewAPIAuthenticator(Credential{BearerTokenFile: filepath.Join(dir, "read-token")}, hook, discard())
	if err != nil {
		t.Fatal(err)
	}
	defer api.Close()
	for _, tc := range []struct {
		authz string
		code  int
	}{
		{bearer(readToken), 204},
		{bearer(sharedToken), 401},
		{bearer(teamAToken), 401},
		{"", 401},
	} {
		if code, body := apiCode(api, tc.authz); code != tc.code {
			t.Errorf("API with %q: got %d %s, want %d", tc.authz, code, body, tc.code)
		}
	}
	if code := authCode(hook, bearer(readToken)); code != 401 {
		t.Errorf("webhook with the read token: got %d, want 401", code)
	}
}

// TestAPIAuthenticatorRefusesWebhookCredential: a read credential that is
// also a webhook credential is refused, at the start as a configuration
// error, after a rotation request by request.
func TestAPIAuthenticatorRefusesWebhookCredential(t *testing.T) {
	dir := t.TempDir()
	hook := webhookAuth(t, dir)
	writeFile(t, filepath.Join(dir, "read-token"), []byte(teamAToken))
	_, err := NewAPIAuthenticator(Credential{BearerTokenFile: filepath.Join(dir, "read-token")}, hook, discard())
	want := "new API authenticator: api.auth.bearerTokenFile: holds the same token as webhook.auth.senders[0].bearerTokenFile; a credential that sends alerts must not read incidents"
	if err == nil || err.Error() != want {
		t.Fatalf("got %v\nwant %s", err, want)
	}

	writeFile(t, filepath.Join(dir, "read-token"), []byte(readToken))
	var logs syncBuffer
	api, err := newAPIAuthenticator(Credential{BearerTokenFile: filepath.Join(dir, "read-token")}, hook, DefaultAPIBearerTokenFile, slogTo(&logs), authOptions{interval: 20 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer api.Close()
	writeFile(t, filepath.Join(dir, "read-token"), []byte(sharedToken))
	eventually(t, 10*time.Second, "the rotated read token to be read", func() bool {
		return api.creds[0].token.matches(sha256Of(sharedToken)) == 1
	})
	if code, body := apiCode(api, bearer(sharedToken)); code != 401 || body != `{"error":"invalid credentials"}` {
		t.Errorf("a webhook token as read token: got %d %s, want 401", code, body)
	}
	if !strings.Contains(logs.String(), `"msg":"a credential of webhook.auth was sent to read; refused"`) {
		t.Errorf("no error logged:\n%s", logs.String())
	}
}

// TestAPIAuthenticatorOffByDefault: api.auth left at its default, with no
// file where the default says, turns the API off (404, naming the key)
// rather than the daemon; anything configured must be there.
func TestAPIAuthenticatorOffByDefault(t *testing.T) {
	dir := t.TempDir()
	hook := webhookAuth(t, dir)
	missing := filepath.Join(dir, "api", "token")
	var logs syncBuffer
	api, err := newAPIAuthenticator(Credential{BearerTokenFile: missing}, hook, missing, slogTo(&logs), authOptions{interval: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	defer api.Close()
	want := `{"error":"the incidents API is off: api.auth is not configured, and its default api.auth.bearerTokenFile ` + missing + ` does not exist"}`
	for _, authz := range []string{"", bearer(sharedToken), bearer(readToken)} {
		if code, body := apiCode(api, authz); code != 404 || body != want {
			t.Errorf("with %q: got %d %s\nwant 404 %s", authz, code, body, want)
		}
	}
	if !strings.Contains(logs.String(), `"level":"WARN","msg":"the incidents API is off`) {
		t.Errorf("no warning logged:\n%s", logs.String())
	}

	// The default file present: the API is on.
	writeFile(t, filepath.Join(dir, "token"), []byte(readToken))
	api2, err := newAPIAuthenticator(Credential{BearerTokenFile: filepath.Join(dir, "token")}, hook, filepath.Join(dir, "token"), discard(), authOptions{interval: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	defer api2.Close()
	if code, body := apiCode(api2, bearer(readToken)); code != 204 {
		t.Errorf("default file present: got %d %s, want 204", code, body)
	}

	// Configured elsewhere and missing: an error, as for the webhook.
	_, err = NewAPIAuthenticator(Credential{BearerTokenFile: missing}, hook, discard())
	wantErr := "new API authenticator: api.auth.bearerTokenFile: read secret: open " + missing + ": no such file or directory"
	if err == nil || err.Error() != wantErr {
		t.Errorf("got %v\nwant %s", err, wantErr)
	}
}

func TestNewAPIAuthenticatorErrors(t *testing.T) {
	dir := t.TempDir()
	hook := webhookAuth(t, dir)
	for _, tc := range []struct {
		name string
		cfg  Credential
		hook *Authenticator
		want string
	}{
		{"nothing configured", Credential{}, hook,
			"new API authenticator: api.auth: no authentication configured: set bearerTokenFile, basicAuth or requireClientCert, or insecureDisableAuth: true"},
		{"basic auth without password", Credential{BasicAuth: BasicAuthConfig{Username: "reader"}}, hook,
			"new API authenticator: api.auth.basicAuth.passwordFile: required with auth.basicAuth.username"},
		{"no webhook authenticator", Credential{InsecureDisableAuth: true}, nil,
			"new API authenticator: nil webhook authenticator"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a, err := NewAPIAuthenticator(tc.cfg, tc.hook, discard())
			if err == nil {
				a.Close()
				t.Fatal("no error")
			}
			if err.Error() != tc.want {
				t.Errorf("got  %s\nwant %s", err, tc.want)
			}
		})
	}
}

func sha256Of(s string) [32]byte { return sha256.Sum256([]byte(s)) }

func TestAPIMetrics(t *testing.T) {
	dir := t.TempDir()
	hook := webhookAuth(t, dir)
	writeFile(t, filepath.Join(dir, "read-token"), []byte(readToken))
	api, err := newAPIAuthenticator(Credential{BearerTokenFile: filepath.Join(dir, "read-token")}, hook, DefaultAPIBearerTokenFile, discard(), authOptions{interval: 20 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer api.Close()
	reg := prometheus.NewPedanticRegistry()
	if err := RegisterAPIMetrics(reg, api); err != nil {
		t.Fatal(err)
	}
	apiCode(api, bearer("wrong"))
	apiCode(api, bearer(sharedToken))
	apiCode(api, bearer(readToken))
	writeFile(t, filepath.Join(dir, "read-token"), []byte("read-token-2"))
	eventually(t, 10*time.Second, "the reload to be counted", func() bool { return reloads(t, reg, "success") == 1 })
	want := `
# HELP autorollbackd_api_auth_failures_total Incidents API requests refused for missing or invalid credentials, or for a webhook credential.
# TYPE autorollbackd_api_auth_failures_total counter
autorollbackd_api_auth_failures_total 2
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), "autorollbackd_api_auth_failures_total"); err != nil {
		t.Error(err)
	}
}
