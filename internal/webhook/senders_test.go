package webhook

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/autorollbackd/autorollbackd/internal/secretfile/secretfiletest"
)

const (
	sharedToken      = "shared-token"
	teamAToken       = "team-a-token"
	platformUser     = "platform"
	platformPassword = "platform-password"
)

// sendersEnv serves the webhook over TLS with a client CA, the single
// credential of webhook.auth (a bearer token) and a sender of each kind.
type sendersEnv struct {
	srv  *httptest.Server
	ca   *testCA
	reg  *prometheus.Registry
	auth *Authenticator
	vol  *secretfiletest.Volume
	got  chan *Notification
	logs *syncBuffer
}

func newSendersEnv(t *testing.T, edit func(*AuthConfig)) *sendersEnv {
	t.Helper()
	e := &sendersEnv{ca: newTestCA(t, "webhook-ca"), reg: prometheus.NewPedanticRegistry(), got: make(chan *Notification, 100), logs: &syncBuffer{}}
	crt, key, _ := e.ca.issue(t, "autorollbackd", true)
	e.vol = secretfiletest.NewVolume(t, map[string][]byte{
		"tls.crt": crt, "tls.key": key, "ca.crt": e.ca.pem,
		"shared-token": []byte(sharedToken), "team-a-token": []byte(teamAToken + "\n"), "platform-password": []byte(platformPassword),
	})
	tlsConf, err := ServerTLS(TLSConfig{CertFile: e.vol.Path("tls.crt"), KeyFile: e.vol.Path("tls.key"), ClientCAFile: e.vol.Path("ca.crt")}, discard())
	if err != nil {
		t.Fatal(err)
	}
	auth := AuthConfig{
		Credential: Credential{BearerTokenFile: e.vol.Path("shared-token")},
		Senders: []SenderConfig{
			{Name: "team-a", BearerTokenFile: e.vol.Path("team-a-token"), Namespaces: []string{"team-a", "team-a-canary"}},
			{Name: "platform", BasicAuth: BasicAuthConfig{Username: platformUser, PasswordFile: e.vol.Path("platform-password")}, Namespaces: []string{"*"}},
			{Name: "am-mtls", ClientCertSubject: "alertmanager-team-b", Namespaces: []string{"team-b"}},
			{Name: "am-dns", ClientCertSubject: "alertmanager.team-d.svc", Namespaces: []string{"team-d"}},
			{Name: "am-spiffe", ClientCertSubject: "spiffe://cluster.local/ns/team-c/sa/alertmanager", Namespaces: []string{"team-c"}},
		},
	}
	if edit != nil {
		edit(&auth)
	}
	e.auth, err = newAuthenticator(auth, slogTo(e.logs), authOptions{interval: 20 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = e.auth.Close() })
	h, err := NewHandler(Config{MaxBodyBytes: 1 << 20, Auth: auth}, e.auth, IntakeFunc(func(_ context.Context, n *Notification) (Receipt, error) {
		e.got <- n
		return Receipt{Accepted: len(n.Alerts)}, nil
	}), discard(), e.reg)
	if err != nil {
		t.Fatal(err)
	}
	e.srv = httptest.NewUnstartedServer(h)
	e.srv.TLS = tlsConf
	e.srv.StartTLS()
	t.Cleanup(e.srv.Close)
	return e
}

// post sends body with the Authorization header authz (none if empty) and
// the client certificate cert (none if nil), and returns the status, the
// response body and the notification the intake got, if any.
func (e *sendersEnv) post(t *testing.T, body []byte, authz string, cert *tls.Certificate) (int, string, *Notification) {
	t.Helper()
	roots := x509.NewCertPool()
	roots.AddCert(e.ca.cert)
	tc := &tls.Config{RootCAs: roots}
	if cert != nil {
		tc.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return cert, nil }
	}
	client := &http.Client{Transport: &http.Transport{TLSClientConfig: tc, DisableKeepAlives: true}, Timeout: 10 * time.Second}
	req, err := http.NewRequest(http.MethodPost, e.srv.URL+"/webhook", bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	if authz != "" {
		req.Header.Set("Authorization", authz)
	}
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	rb := readAll(t, resp.Body)
	select {
	case n := <-e.got:
		return resp.StatusCode, rb, n
	default:
		return resp.StatusCode, rb, nil
	}
}

// certWith issues a client certificate named cn with the given DNS and URI
// subject alternative names.
func (e *sendersEnv) certWith(t *testing.T, cn string, dns []string, uris ...string) *tls.Certificate {
	t.Helper()
	c, k, _ := e.ca.issueWith(t, cn, false, func(tmpl *x509.Certificate) {
		tmpl.DNSNames = dns
		for _, s := range uris {
			u, err := url.Parse(s)
			if err != nil {
				t.Fatal(err)
			}
			tmpl.URIs = append(tmpl.URIs, u)
		}
	})
	cert, err := tls.X509KeyPair(c, k)
	if err != nil {
		t.Fatal(err)
	}
	return &cert
}

// TestSenderIdentified: each kind of credential identifies its sender, and
// the sender with its namespaces reaches the intake on the notification.
func TestSenderIdentified(t *testing.T) {
	e := newSendersEnv(t, nil)
	firing := fixture(t, "firing.json")
	teamB := e.certWith(t, "alertmanager-team-b", nil)
	teamD := e.certWith(t, "alertmanager", []string{"alertmanager.team-d.svc"})
	teamC := e.certWith(t, "alertmanager", nil, "spiffe://cluster.local/ns/team-c/sa/alertmanager")
	stranger := e.certWith(t, "alertmanager-team-z", []string{"alertmanager.team-z.svc"})
	// Two senders' subjects in one certificate: which one is meant?
	both := e.certWith(t, "alertmanager-team-b", []string{"alertmanager.team-d.svc"})

	tests := []struct {
		name  string
		authz string
		cert  *tls.Certificate
		code  int
		body  string
		want  Sender
	}{
		{name: "single credential: any namespace", authz: bearer(sharedToken), code: 200, want: Sender{Name: "default"}},
		{name: "bearer token of a sender", authz: bearer(teamAToken), code: 200,
			want: Sender{Name: "team-a", Namespaces: []string{"team-a", "team-a-canary"}}},
		{name: "basic auth of a sender, any namespace", authz: basic(platformUser, platformPassword), code: 200, want: Sender{Name: "platform"}},
		{name: "client certificate by common name", cert: teamB, code: 200, want: Sender{Name: "am-mtls", Namespaces: []string{"team-b"}}},
		{name: "client certificate by DNS name", cert: teamD, code: 200, want: Sender{Name: "am-dns", Namespaces: []string{"team-d"}}},
		{name: "client certificate by URI", cert: teamC, code: 200, want: Sender{Name: "am-spiffe", Namespaces: []string{"team-c"}}},
		{name: "the certificate decides over the Authorization header", cert: teamB, authz: bearer(teamAToken), code: 200,
			want: Sender{Name: "am-mtls", Namespaces: []string{"team-b"}}},
		{name: "a certificate of no sender leaves it to the header", cert: stranger, authz: bearer(teamAToken), code: 200,
			want: Sender{Name: "team-a", Namespaces: []string{"team-a", "team-a-canary"}}},

		{name: "unknown token", authz: bearer("team-z-token"), code: 401, body: `{"error":"invalid credentials"}`},
		{name: "sender's token as a basic password", authz: basic(platformUser, teamAToken), code: 401, body: `{"error":"invalid credentials"}`},
		{name: "sender's password as a token", authz: bearer(platformPassword), code: 401, body: `{"error":"invalid credentials"}`},
		{name: "sender's user with another's password", authz: basic("team-a", platformPassword), code: 401, body: `{"error":"invalid credentials"}`},
		{name: "certificate of no sender", cert: stranger, code: 401, body: `{"error":"client certificate matches no sender"}`},
		{name: "certificate of two senders", cert: both, code: 401, body: `{"error":"client certificate matches several senders"}`},
		{name: "nothing", code: 401, body: `{"error":"authentication required"}`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			code, body, n := e.post(t, firing, tc.authz, tc.cert)
			if code != tc.code {
				t.Fatalf("got %d %s, want %d", code, body, tc.code)
			}
			if tc.code != 200 {
				if n != nil {
					t.Error("the intake got a refused request")
				}
				if strings.TrimSpace(body) != tc.body {
					t.Errorf("body %s, want %s", body, tc.body)
				}
				return
			}
			if n == nil {
				t.Fatal("the intake got nothing")
			}
			if n.Sender.Name != tc.want.Name || !slices.Equal(n.Sender.Namespaces, tc.want.Namespaces) {
				t.Errorf("Sender = %+v, want %+v", n.Sender, tc.want)
			}
		})
	}
}

// TestSenderNotFromTheBody: a body cannot say who sent it.
func TestSenderNotFromTheBody(t *testing.T) {
	e := newSendersEnv(t, nil)
	body := mutated(t, func(m map[string]any) {
		m["Sender"] = map[string]any{"Name": "platform", "Namespaces": nil}
		m["sender"] = map[string]any{"name": "platform"}
	})
	code, rb, n := e.post(t, body, bearer(teamAToken), nil)
	if code != 200 || n == nil {
		t.Fatalf("got %d %s", code, rb)
	}
	if n.Sender.Name != "team-a" || !slices.Equal(n.Sender.Namespaces, []string{"team-a", "team-a-canary"}) {
		t.Errorf("Sender = %+v, want team-a's", n.Sender)
	}
	if d, err := Decode(bytes.NewReader(body)); err != nil || d.Sender.Name != "" || d.Sender.Namespaces != nil {
		t.Errorf("Decode: Sender = %+v, %v; want none", d.Sender, err)
	}
}

func TestSenderAnonymousWithoutAuthentication(t *testing.T) {
	e := newTestEnv(t, func(c *Config) { c.Auth = AuthConfig{Credential: Credential{InsecureDisableAuth: true}} })
	readAll(t, e.do(t, req{body: fixture(t, "firing.json"), auth: "-"}).Body)
	n := <-e.got
	if n.Sender.Name != "anonymous" || n.Sender.Namespaces != nil {
		t.Errorf("Sender = %+v, want anonymous for any namespace", n.Sender)
	}
}

func TestSenderAllows(t *testing.T) {
	teamA := Sender{Name: "team-a", Namespaces: []string{"team-a", "team-a-canary"}}
	for _, tc := range []struct {
		s    Sender
		ns   string
		want bool
	}{
		{teamA, "team-a", true},
		{teamA, "team-a-canary", true},
		{teamA, "team-b", false},
		{teamA, "", false},
		{teamA, "team-a-canary-2", false},
		{Sender{Name: "default"}, "kube-system", true},
		{Sender{Name: "anonymous", Namespaces: []string{}}, "team-b", true},
	} {
		if got := tc.s.Allows(tc.ns); got != tc.want {
			t.Errorf("%+v.Allows(%q) = %v, want %v", tc.s, tc.ns, got, tc.want)
		}
	}
}

func TestSenderMetrics(t *testing.T) {
	e := newSendersEnv(t, nil)
	firing := fixture(t, "firing.json")
	teamB := e.certWith(t, "alertmanager-team-b", nil)
	e.post(t, firing, bearer(teamAToken), nil)
	e.post(t, firing, bearer(teamAToken), nil)
	e.post(t, []byte(`{"version":"3"}`), bearer(teamAToken), nil)
	e.post(t, firing, bearer(sharedToken), nil)
	e.post(t, firing, "", teamB)
	e.post(t, firing, bearer("nobody"), nil)

	var want strings.Builder
	want.WriteString("# HELP autorollbackd_webhook_sender_requests_total Authenticated webhook requests by sender (webhook.auth.senders; default is the single credential of webhook.auth) and status code.\n")
	want.WriteString("# TYPE autorollbackd_webhook_sender_requests_total counter\n")
	counts := map[string]map[string]int{"team-a": {"200": 2, "400": 1}, "default": {"200": 1}, "am-mtls": {"200": 1}}
	for _, s := range []string{"am-dns", "am-mtls", "am-spiffe", "default", "platform", "team-a"} {
		for _, c := range []string{"200", "400", "405", "413", "415", "500", "503"} {
			want.WriteString(`autorollbackd_webhook_sender_requests_total{code="` + c + `",sender="` + s + `"} ` + strconv.Itoa(counts[s][c]) + "\n")
		}
	}
	if err := testutil.GatherAndCompare(e.reg, strings.NewReader(want.String()), "autorollbackd_webhook_sender_requests_total"); err != nil {
		t.Error(err)
	}
}

// TestSenderTokenRotation: a sender's token is re-read like the single
// credential's, and still identifies the sender.
func TestSenderTokenRotation(t *testing.T) {
	e := newSendersEnv(t, nil)
	firing := fixture(t, "firing.json")
	e.vol.Update(map[string][]byte{
		"tls.crt": mustRead(t, e.vol.Path("tls.crt")), "tls.key": mustRead(t, e.vol.Path("tls.key")), "ca.crt": e.ca.pem,
		"shared-token": []byte(sharedToken), "team-a-token": []byte("team-a-token-2"), "platform-password": []byte(platformPassword),
	})
	eventually(t, 10*time.Second, "the new token of team-a", func() bool {
		code, _, n := e.post(t, firing, bearer("team-a-token-2"), nil)
		return code == 200 && n.Sender.Name == "team-a"
	})
	if code, _, _ := e.post(t, firing, bearer(teamAToken), nil); code != 401 {
		t.Errorf("old token of team-a: got %d, want 401", code)
	}
}

// TestSenderSharedTokenRefused: a token that two credentials hold cannot
// say who sent it. At the start that is a configuration error; after a
// rotation, a refusal logged as an error.
func TestSenderSharedTokenRefused(t *testing.T) {
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "a"), []byte("same"))
	writeFile(t, filepath.Join(dir, "b"), []byte("same\n"))
	_, err := NewAuthenticator(AuthConfig{
		Credential: Credential{BearerTokenFile: filepath.Join(dir, "a")},
		Senders:    []SenderConfig{{Name: "team-a", BearerTokenFile: filepath.Join(dir, "b"), Namespaces: []string{"team-a"}}},
	}, discard())
	want := "new webhook authenticator: webhook.auth.senders[0].bearerTokenFile: holds the same token as webhook.auth.bearerTokenFile"
	if err == nil || err.Error() != want {
		t.Errorf("got %v\nwant %s", err, want)
	}

	e := newSendersEnv(t, nil)
	firing := fixture(t, "firing.json")
	writeFile(t, filepath.Join(e.vol.Dir(), "..data", "team-a-token"), []byte(sharedToken))
	eventually(t, 10*time.Second, "the shared token to be refused", func() bool {
		code, _, _ := e.post(t, firing, bearer(sharedToken), nil)
		return code == 401
	})
	if !strings.Contains(e.logs.String(), `"msg":"a credential matches several senders; refused"`) ||
		!strings.Contains(e.logs.String(), `"senders":"default, team-a"`) {
		t.Errorf("no error logged naming the senders:\n%s", e.logs.String())
	}
}

func mustRead(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
