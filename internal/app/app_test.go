package app

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"maps"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/rest"

	"github.com/autorollbackd/autorollbackd/internal/config"
	"github.com/autorollbackd/autorollbackd/internal/kubeclient"
	"github.com/autorollbackd/autorollbackd/internal/testenv"
	"github.com/autorollbackd/autorollbackd/internal/webhook"
)

func TestMain(m *testing.M) { os.Exit(testenv.Run(m)) }

const (
	webhookToken = "webhook-token"
	teamAToken   = "team-a-token"
	readToken    = "read-token"
)

// logBuffer collects the daemon's JSON log lines.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *logBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *logBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// listening returns the address the daemon logged it listens on, if it has.
func (b *logBuffer) listening() string {
	for line := range strings.Lines(b.String()) {
		var rec struct{ Msg, Address string }
		if json.Unmarshal([]byte(line), &rec) == nil && rec.Msg == "HTTP server listening" {
			return rec.Address
		}
	}
	return ""
}

// daemon runs Run with cfg against the local control plane until the test
// ends, and returns its base URL once it is ready.
func daemon(t *testing.T, cfg *config.Config, mutate ...func(*Options)) (string, *logBuffer) {
	t.Helper()
	c := testenv.Require(t)
	cfg.Kubernetes.Kubeconfig = c.Kubeconfig
	cfg.Engine.Namespace = c.Namespace(t)
	cfg.Server.ListenAddress = "127.0.0.1:0"
	cfg.LeaderElection.LeaseDuration = metav1.Duration{Duration: 4 * time.Second}
	cfg.LeaderElection.RenewDeadline = metav1.Duration{Duration: 3 * time.Second}
	cfg.LeaderElection.RetryPeriod = metav1.Duration{Duration: 500 * time.Millisecond}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	logs := &logBuffer{}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		o := Options{
			Config: cfg, Logger: slog.New(slog.NewJSONHandler(logs, nil)),
			Reload: func() (*config.Config, error) { return cfg, nil },
		}
		for _, m := range mutate {
			m(&o)
		}
		done <- Run(ctx, o)
	}()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Run: %v", err)
			}
		case <-time.After(30 * time.Second):
			t.Error("Run did not return within 30s of the cancel")
		}
		if t.Failed() {
			t.Logf("daemon log:\n%s", logs.String())
		}
	})
	var base string
	testenv.Eventually(t, 60*time.Second, "the daemon to be ready", func(ctx context.Context) (bool, string) {
		select {
		case err := <-done:
			t.Fatalf("Run returned early: %v\n%s", err, logs.String())
		default:
		}
		if base == "" {
			addr := logs.listening()
			if addr == "" {
				return false, "not listening yet"
			}
			base = "http://" + addr
		}
		code, body := call(t, ctx, http.MethodGet, base+"/readyz", "", nil)
		return code == http.StatusOK, body
	})
	return base, logs
}

// call sends one request with the bearer token (none if empty) and returns
// the status and body; a transport error is status 0.
func call(t *testing.T, ctx context.Context, method, url, token string, body []byte) (int, string) {
	t.Helper()
	req, err := http.NewRequestWithContext(ctx, method, url, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, strings.TrimSpace(string(b))
}

// writeTokens writes each token into a file of dir named after it.
func writeTokens(t *testing.T, dir string, tokens ...string) {
	t.Helper()
	for _, tok := range tokens {
		if err := os.WriteFile(filepath.Join(dir, tok), []byte(tok+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
}

func resolvedNotification(t *testing.T) []byte {
	t.Helper()
	b, err := os.ReadFile("../webhook/testdata/resolved.json")
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestIncidentsAPIHasItsOwnCredential: the read token reads incidents and
// sends no alerts; no credential that sends alerts reads incidents.
func TestIncidentsAPIHasItsOwnCredential(t *testing.T) {
	dir := t.TempDir()
	writeTokens(t, dir, webhookToken, teamAToken, readToken)
	cfg := config.Default()
	cfg.Webhook.Auth.BearerTokenFile = filepath.Join(dir, webhookToken)
	cfg.Webhook.Auth.Senders = []webhook.SenderConfig{{Name: "team-a", BearerTokenFile: filepath.Join(dir, teamAToken), Namespaces: []string{"team-a"}}}
	cfg.API.Auth.BearerTokenFile = filepath.Join(dir, readToken)
	base, _ := daemon(t, &cfg)
	ctx := context.Background()
	notification := resolvedNotification(t)

	for _, tc := range []struct {
		name, method, path, token string
		body                      []byte
		code                      int
	}{
		{"read token reads incidents", http.MethodGet, "/api/v1/incidents", readToken, nil, 200},
		{"read token reads one incident", http.MethodGet, "/api/v1/incidents/none", readToken, nil, 404},
		{"webhook token does not read incidents", http.MethodGet, "/api/v1/incidents", webhookToken, nil, 401},
		{"webhook token does not read one incident", http.MethodGet, "/api/v1/incidents/none", webhookToken, nil, 401},
		{"sender token does not read incidents", http.MethodGet, "/api/v1/incidents", teamAToken, nil, 401},
		{"no token reads nothing", http.MethodGet, "/api/v1/incidents", "", nil, 401},
		{"read token does not send alerts", http.MethodPost, "/webhook", readToken, notification, 401},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if code, body := call(t, ctx, tc.method, base+tc.path, tc.token, tc.body); code != tc.code {
				t.Errorf("got %d %s, want %d", code, body, tc.code)
			}
		})
	}
	// The webhook token sends alerts, once this replica leads.
	testenv.Eventually(t, 30*time.Second, "the webhook token's notification to be accepted", func(ctx context.Context) (bool, string) {
		code, body := call(t, ctx, http.MethodPost, base+"/webhook", webhookToken, notification)
		return code == 200, body
	})
}

// TestIncidentsAPIOffWithoutItsToken: an install that predates api.auth
// has no read token where the default expects it: the daemon takes alerts,
// and the incidents API answers 404 naming the key, to any credential.
func TestIncidentsAPIOffWithoutItsToken(t *testing.T) {
	dir := t.TempDir()
	writeTokens(t, dir, webhookToken)
	// The default file, at a path of the test's own where nothing is.
	missing := filepath.Join(dir, "api", "token")
	cfg := config.Default()
	cfg.Webhook.Auth.BearerTokenFile = filepath.Join(dir, webhookToken)
	cfg.API.Auth = webhook.Credential{BearerTokenFile: missing}
	base, logs := daemon(t, &cfg, func(o *Options) { o.apiDefaultTokenFile = missing })
	ctx := context.Background()

	want := `{"error":"the incidents API is off: api.auth is not configured, and its default api.auth.bearerTokenFile ` + missing + ` does not exist"}`
	for _, token := range []string{webhookToken, ""} {
		if code, body := call(t, ctx, http.MethodGet, base+"/api/v1/incidents", token, nil); code != 404 || body != want {
			t.Errorf("token %q: got %d %s\nwant 404 %s", token, code, body, want)
		}
	}
	if !strings.Contains(logs.String(), `"msg":"the incidents API is off`) {
		t.Error("no warning logged at start")
	}
	testenv.Eventually(t, 30*time.Second, "the webhook token's notification to be accepted", func(ctx context.Context) (bool, string) {
		code, body := call(t, ctx, http.MethodPost, base+"/webhook", webhookToken, resolvedNotification(t))
		return code == 200, body
	})
}

// TestActingClientNotThrottledByRecords saturates the client-side rate
// limit of the records client, as a storm of record writes would, and
// shows that the acting client still sends at once: it has a limiter of
// its own, sized by kubernetes.actQPS and kubernetes.actBurst.
func TestActingClientNotThrottledByRecords(t *testing.T) {
	c := testenv.Require(t)
	cl, err := newClients(c.REST, config.Kubernetes{QPS: 1, Burst: 1, ActQPS: 500, ActBurst: 100})
	if err != nil {
		t.Fatal(err)
	}
	records := cl.records.CoreV1().RESTClient().GetRateLimiter()
	for records.TryAccept() {
	}
	// Meanwhile the records client queues behind its limiter.
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var wg sync.WaitGroup
	defer wg.Wait()
	defer cancel()
	for range 4 {
		wg.Go(func() {
			for ctx.Err() == nil {
				_, _ = cl.records.CoreV1().Namespaces().Get(ctx, "default", metav1.GetOptions{})
			}
		})
	}
	// At the records' one request a second, these would take 50s; a
	// client-side wait that cannot finish before the deadline fails at once.
	actCtx, actCancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer actCancel()
	start := time.Now()
	for i := range 50 {
		if _, err := cl.acting.AppsV1().Deployments("default").List(actCtx, metav1.ListOptions{Limit: 1}); err != nil {
			t.Fatalf("acting request %d after %s: %v", i, time.Since(start), err)
		}
	}
	t.Logf("50 acting requests in %s with the records client saturated", time.Since(start))
	if l := cl.acting.AppsV1().RESTClient().GetRateLimiter(); l == records {
		t.Fatal("the acting client shares the records client's rate limiter")
	}
	if got := cl.acting.AppsV1().RESTClient().GetRateLimiter().QPS(); got != 500 {
		t.Errorf("acting client's QPS = %v, want kubernetes.actQPS (500)", got)
	}
}

// TestBackgroundClientsYieldToActing checks which of the daemon's clients
// kube.Priority holds back while an action is in flight: the records and
// verifying clients, at most kubernetes.backgroundInFlight of their
// requests at once; never the acting client nor the lease's.
func TestBackgroundClientsYieldToActing(t *testing.T) {
	actIn, actGo := make(chan struct{}, 1), make(chan struct{})
	var (
		mu         sync.Mutex
		background int // records and verifying requests at the server
		lease      bool
	)
	bgIn := make(chan struct{}, 8)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch agent := r.UserAgent(); {
		case strings.HasSuffix(agent, "/autorollbackd-act"):
			actIn <- struct{}{}
			<-actGo
		case strings.HasSuffix(agent, "/autorollbackd-leader-election"):
			mu.Lock()
			lease = true
			mu.Unlock()
		default:
			mu.Lock()
			background++
			mu.Unlock()
			bgIn <- struct{}{}
			<-actGo
		}
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(`{"kind":"Status","apiVersion":"v1","status":"Failure","reason":"NotFound","code":404}`))
	}))
	defer srv.Close()
	cl, err := newClients(&rest.Config{Host: srv.URL}, config.Kubernetes{QPS: 100, Burst: 100, ActQPS: 100, ActBurst: 100, BackgroundInFlight: 1})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	var wg sync.WaitGroup
	defer wg.Wait()
	defer close(actGo)
	wg.Go(func() { _, _ = cl.acting.AppsV1().Deployments("a").Get(ctx, "x", metav1.GetOptions{}) })
	select {
	case <-actIn:
	case <-time.After(10 * time.Second):
		t.Fatal("the acting request did not reach the server")
	}
	for _, c := range []kubeclient.Interface{cl.records, cl.verifying, cl.records} {
		wg.Go(func() { _, _ = c.CoreV1().ConfigMaps("a").Get(ctx, "x", metav1.GetOptions{}) })
	}
	select {
	case <-bgIn:
	case <-time.After(10 * time.Second):
		t.Fatal("no background request reached the server while the acting one was in flight")
	}
	if _, err := cl.electing.CoordinationV1().Leases("a").Get(ctx, "x", metav1.GetOptions{}); err == nil {
		t.Fatal("lease GET: want the server's NotFound")
	}
	mu.Lock()
	gotBackground, gotLease := background, lease
	mu.Unlock()
	if !gotLease {
		t.Error("the lease's request did not reach the server while an action was in flight")
	}
	if gotBackground != 1 {
		t.Errorf("records and verifying requests at the server while an action was in flight: %d, want kubernetes.backgroundInFlight (1)", gotBackground)
	}
}

// TestClientsTimeTheirRequests sends requests through each of the daemon's
// clients to a real API server and reads autorollbackd_kube_request_duration_seconds:
// one observation per request, under the client and verb that sent it,
// and none for a watch, which lasts as long as it is open.
func TestClientsTimeTheirRequests(t *testing.T) {
	c := testenv.Require(t)
	cl, err := newClients(c.REST, config.Kubernetes{QPS: 100, Burst: 100, ActQPS: 100, ActBurst: 100, BackgroundInFlight: 2})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	ns := c.Namespace(t)
	if _, err := cl.acting.AppsV1().Deployments(ns).List(ctx, metav1.ListOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := cl.acting.AppsV1().Deployments(ns).Get(ctx, "none", metav1.GetOptions{}); err == nil {
		t.Fatal("GET of a missing Deployment succeeded")
	}
	cm := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "timed", Namespace: ns}}
	if _, err := cl.records.CoreV1().ConfigMaps(ns).Create(ctx, cm, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := cl.records.CoreV1().ConfigMaps(ns).Patch(ctx, "timed", types.MergePatchType, []byte(`{"data":{"a":"b"}}`), metav1.PatchOptions{}); err != nil {
		t.Fatal(err)
	}
	w, err := cl.verifying.CoreV1().ConfigMaps(ns).Watch(ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	<-w.ResultChan() // the ConfigMap, as the watch opens
	w.Stop()

	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(cl.requests)
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]uint64{}
	for _, f := range families {
		for _, m := range f.GetMetric() {
			labels := map[string]string{}
			for _, l := range m.GetLabel() {
				labels[l.GetName()] = l.GetValue()
			}
			got[labels["client"]+" "+labels["verb"]] = m.GetHistogram().GetSampleCount()
		}
	}
	want := map[string]uint64{"act GET": 2, "records POST": 1, "records PATCH": 1}
	if !maps.Equal(got, want) {
		t.Errorf("observations by client and verb = %v; want %v (no watch)", got, want)
	}
}
