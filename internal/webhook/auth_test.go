package webhook

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/autorollbackd/autorollbackd/internal/secretfile/secretfiletest"
)

var okHandler = http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusNoContent) })

// authCode runs one request with the Authorization header through a.Wrap.
func authCode(a *Authenticator, authorization string) int {
	r := httptest.NewRequest(http.MethodPost, "/webhook", nil)
	if authorization != "" {
		r.Header.Set("Authorization", authorization)
	}
	w := httptest.NewRecorder()
	a.Wrap(okHandler).ServeHTTP(w, r)
	return w.Code
}

// waitForRotation waits until the new credential passes, then checks that
// the old one no longer does.
func waitForRotation(t *testing.T, a *Authenticator, oldCred, newCred string) {
	t.Helper()
	eventually(t, 10*time.Second, "the new secret to be accepted", func() bool { return authCode(a, newCred) == http.StatusNoContent })
	if code := authCode(a, oldCred); code != http.StatusUnauthorized {
		t.Errorf("old secret: got %d, want 401", code)
	}
}

// reloads reads autorollbackd_secret_reloads_total as registered by
// NewHandler.
func reloads(t *testing.T, reg *prometheus.Registry, result string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != "autorollbackd_secret_reloads_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			if m.GetLabel()[0].GetValue() == result {
				return m.GetCounter().GetValue()
			}
		}
	}
	t.Fatalf("autorollbackd_secret_reloads_total{result=%q} not found", result)
	return 0
}

// withMetrics registers a's metrics through NewHandler, as the daemon does.
func withMetrics(t *testing.T, a *Authenticator) *prometheus.Registry {
	t.Helper()
	reg := prometheus.NewRegistry()
	cfg := DefaultConfig()
	nop := IntakeFunc(func(context.Context, *Notification) (Receipt, error) { return Receipt{}, nil })
	if _, err := NewHandler(cfg, a, nop, discard(), reg); err != nil {
		t.Fatal(err)
	}
	return reg
}

func TestAuthenticatorRotationKubernetesSecret(t *testing.T) {
	vol := secretfiletest.NewVolume(t, map[string][]byte{"token": []byte("token-one\n"), "password": []byte("password-one")})
	a, err := NewAuthenticator(AuthConfig{Credential: Credential{
		BearerTokenFile: vol.Path("token"),
		BasicAuth:       BasicAuthConfig{Username: "am", PasswordFile: vol.Path("password")},
	}}, discard())
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	reg := withMetrics(t, a)
	if code := authCode(a, bearer("token-one")); code != http.StatusNoContent {
		t.Fatalf("initial token: got %d", code)
	}
	if code := authCode(a, basic("am", "password-one")); code != http.StatusNoContent {
		t.Fatalf("initial password: got %d", code)
	}

	vol.Update(map[string][]byte{"token": []byte("token-two\n"), "password": []byte("password-two")})
	waitForRotation(t, a, bearer("token-one"), bearer("token-two"))
	waitForRotation(t, a, basic("am", "password-one"), basic("am", "password-two"))
	if got := reloads(t, reg, "success"); got != 2 {
		t.Errorf("reloads{success} = %v, want 2 (token and password)", got)
	}
	if got := reloads(t, reg, "failure"); got != 0 {
		t.Errorf("reloads{failure} = %v, want 0: the swap is atomic", got)
	}

	vol.Update(map[string][]byte{"token": []byte("token-three"), "password": []byte("password-two")})
	waitForRotation(t, a, bearer("token-two"), bearer("token-three"))
}

func TestAuthenticatorRotationOverwrite(t *testing.T) {
	path := filepath.Join(t.TempDir(), "token")
	writeFile(t, path, []byte("token-one"))
	a, err := NewAuthenticator(AuthConfig{Credential: Credential{BearerTokenFile: path}}, discard())
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	if code := authCode(a, bearer("token-one")); code != http.StatusNoContent {
		t.Fatalf("initial token: got %d", code)
	}
	writeFile(t, path, []byte("token-two\n"))
	waitForRotation(t, a, bearer("token-one"), bearer("token-two"))
}

// TestAuthenticatorTimerFallback has no file system events to go by.
func TestAuthenticatorTimerFallback(t *testing.T) {
	path := filepath.Join(t.TempDir(), "token")
	writeFile(t, path, []byte("token-one"))
	a, err := newAuthenticator(AuthConfig{Credential: Credential{BearerTokenFile: path}}, discard(), authOptions{interval: 20 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	if a.watcher.fsw != nil {
		t.Fatal("fsnotify is on; this test is about the timer")
	}
	writeFile(t, path, []byte("token-two"))
	waitForRotation(t, a, bearer("token-one"), bearer("token-two"))
}

func TestAuthenticatorKeepsLastGoodSecret(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "token")
	writeFile(t, path, []byte("token-one"))
	a, err := NewAuthenticator(AuthConfig{Credential: Credential{BearerTokenFile: path}}, discard())
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	reg := withMetrics(t, a)

	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, "a failed reload", func() bool { return reloads(t, reg, "failure") >= 1 })
	if code := authCode(a, bearer("token-one")); code != http.StatusNoContent {
		t.Errorf("after the file vanished: got %d, want the last good token to pass", code)
	}

	writeFile(t, path, nil)
	eventually(t, 10*time.Second, "a failed reload of the empty file", func() bool { return reloads(t, reg, "failure") >= 2 })
	if code := authCode(a, bearer("token-one")); code != http.StatusNoContent {
		t.Errorf("after the file was emptied: got %d, want the last good token to pass", code)
	}
	if code := authCode(a, "Bearer "); code != http.StatusUnauthorized {
		t.Errorf("empty token: got %d, want 401", code)
	}

	writeFile(t, path, []byte("token-two"))
	waitForRotation(t, a, bearer("token-one"), bearer("token-two"))
	if got := reloads(t, reg, "success"); got != 1 {
		t.Errorf("reloads{success} = %v, want 1", got)
	}
}

func TestNewAuthenticatorErrors(t *testing.T) {
	dir := t.TempDir()
	token := filepath.Join(dir, "token")
	writeFile(t, token, []byte("t"))
	empty := filepath.Join(dir, "empty")
	writeFile(t, empty, []byte(" \n"))
	missing := filepath.Join(dir, "missing")
	tests := []struct {
		name string
		cfg  AuthConfig
		want string
	}{
		{"missing token file", AuthConfig{Credential: Credential{BearerTokenFile: missing}},
			"new webhook authenticator: webhook.auth.bearerTokenFile: read secret: open " + missing + ": no such file or directory"},
		{"empty token file", AuthConfig{Credential: Credential{BearerTokenFile: empty}},
			"new webhook authenticator: webhook.auth.bearerTokenFile: read secret: " + empty + " is empty"},
		{"missing password file", AuthConfig{Credential: Credential{BearerTokenFile: token, BasicAuth: BasicAuthConfig{Username: "am", PasswordFile: missing}}},
			"new webhook authenticator: webhook.auth.basicAuth.passwordFile: read secret: open " + missing + ": no such file or directory"},
		{"invalid config", AuthConfig{Credential: Credential{BasicAuth: BasicAuthConfig{Username: "am"}}},
			"new webhook authenticator: auth.basicAuth.passwordFile: required with auth.basicAuth.username"},
		{"nothing configured", AuthConfig{},
			"new webhook authenticator: auth: no authentication configured: set bearerTokenFile, basicAuth, requireClientCert or senders, or insecureDisableAuth: true"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			a, err := NewAuthenticator(tc.cfg, discard())
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

func TestAuthenticatorDisabled(t *testing.T) {
	var buf syncBuffer
	a, err := NewAuthenticator(AuthConfig{Credential: Credential{InsecureDisableAuth: true, BearerTokenFile: "/does/not/exist"}}, slogTo(&buf))
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	if code := authCode(a, ""); code != http.StatusNoContent {
		t.Errorf("got %d, want the request through", code)
	}
	if !strings.Contains(buf.String(), `"level":"WARN","msg":"webhook authentication is disabled`) {
		t.Errorf("no warning logged: %s", buf.String())
	}
}

func TestAuthenticatorClientCertOnly(t *testing.T) {
	a, err := NewAuthenticator(AuthConfig{Credential: Credential{RequireClientCert: true}}, discard())
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	tests := []struct {
		name  string
		state *tls.ConnectionState
		code  int
		body  string
	}{
		{"plain HTTP", nil, 401, `{"error":"client certificate required"}`},
		{"TLS without certificate", &tls.ConnectionState{}, 401, `{"error":"client certificate required"}`},
		// Only a verified chain counts, not a certificate merely presented.
		{"unverified certificate", &tls.ConnectionState{PeerCertificates: []*x509.Certificate{{}}}, 401, `{"error":"client certificate required"}`},
		{"verified certificate", &tls.ConnectionState{VerifiedChains: [][]*x509.Certificate{{{}}}}, 204, ``},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := httptest.NewRequest(http.MethodPost, "/webhook", nil)
			r.TLS = tc.state
			w := httptest.NewRecorder()
			a.Wrap(okHandler).ServeHTTP(w, r)
			if w.Code != tc.code || strings.TrimSpace(w.Body.String()) != tc.body {
				t.Errorf("got %d %s, want %d %s", w.Code, w.Body, tc.code, tc.body)
			}
			if tc.code == 401 && w.Header().Get("WWW-Authenticate") != `ClientCertificate realm="autorollbackd"` {
				t.Errorf("WWW-Authenticate = %q", w.Header().Get("WWW-Authenticate"))
			}
		})
	}
}

func TestAuthenticatorCloseStopsWatching(t *testing.T) {
	path := filepath.Join(t.TempDir(), "token")
	writeFile(t, path, []byte("token-one"))
	a, err := NewAuthenticator(AuthConfig{Credential: Credential{BearerTokenFile: path}}, discard())
	if err != nil {
		t.Fatal(err)
	}
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}
	if err := a.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	select {
	case <-a.watcher.done:
	default:
		t.Fatal("the watch goroutine is still running after Close")
	}
	if code := authCode(a, bearer("token-one")); code != http.StatusNoContent {
		t.Errorf("after Close: got %d, want the last secret still to work", code)
	}
}
