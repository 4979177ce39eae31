package webhook

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

const (
	testToken    = "s3cr3t-token"
	testUser     = "alertmanager"
	testPassword = "hunter2-password"
)

// testEnv is a webhook server with bearer and basic auth, and an intake
// whose behaviour each test sets.
type testEnv struct {
	srv    *httptest.Server
	reg    *prometheus.Registry
	auth   *Authenticator
	intake atomic.Pointer[IntakeFunc]
	got    chan *Notification
}

func newTestEnv(t *testing.T, edit func(*Config)) *testEnv {
	t.Helper()
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "token"), []byte(testToken+"\n"))
	writeFile(t, filepath.Join(dir, "password"), []byte(testPassword))
	cfg := DefaultConfig()
	cfg.Auth.BearerTokenFile = filepath.Join(dir, "token")
	cfg.Auth.BasicAuth = BasicAuthConfig{Username: testUser, PasswordFile: filepath.Join(dir, "password")}
	if edit != nil {
		edit(&cfg)
	}
	e := &testEnv{reg: prometheus.NewPedanticRegistry(), got: make(chan *Notification, 1000)}
	var err error
	e.auth, err = NewAuthenticator(cfg.Auth, discard())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = e.auth.Close() })
	e.setIntake(func(_ context.Context, n *Notification) (Receipt, error) {
		return Receipt{Accepted: len(n.Alerts.Firing()), Resolved: len(n.Alerts.Resolved())}, nil
	})
	h, err := NewHandler(cfg, e.auth, IntakeFunc(func(ctx context.Context, n *Notification) (Receipt, error) {
		e.got <- n
		return (*e.intake.Load())(ctx, n)
	}), discard(), e.reg)
	if err != nil {
		t.Fatal(err)
	}
	e.srv = httptest.NewServer(h)
	t.Cleanup(e.srv.Close)
	return e
}

func (e *testEnv) setIntake(f IntakeFunc) { e.intake.Store(&f) }

type req struct {
	method      string
	contentType string // "-" sends none
	auth        string // Authorization header; "-" sends none
	body        []byte
	chunked     bool // hide the length, so that only MaxBytesReader can stop the body
}

func bearer(tok string) string { return "Bearer " + tok }
func basic(user, pass string) string {
	return "Basic " + base64.StdEncoding.EncodeToString([]byte(user+":"+pass))
}

func (e *testEnv) do(t *testing.T, r req) *http.Response {
	t.Helper()
	resp, err := e.send(r)
	if err != nil {
		t.Fatal(err)
	}
	return resp
}

func (e *testEnv) send(r req) (*http.Response, error) {
	if r.method == "" {
		r.method = http.MethodPost
	}
	var body io.Reader = bytes.NewReader(r.body)
	if r.chunked {
		body = io.MultiReader(body)
	}
	hr, err := http.NewRequest(r.method, e.srv.URL+"/webhook", body)
	if err != nil {
		return nil, err
	}
	switch r.contentType {
	case "":
		hr.Header.Set("Content-Type", "application/json")
	case "-":
	default:
		hr.Header.Set("Content-Type", r.contentType)
	}
	switch r.auth {
	case "":
		hr.Header.Set("Authorization", bearer(testToken))
	case "-":
	default:
		hr.Header.Set("Authorization", r.auth)
	}
	return e.srv.Client().Do(hr)
}

func TestHandlerStatusCodes(t *testing.T) {
	firing := fixture(t, "firing.json")
	resolved := fixture(t, "resolved.json")
	unavailable := func(context.Context, *Notification) (Receipt, error) {
		return Receipt{}, fmt.Errorf("queue full: %w", ErrUnavailable)
	}
	broken := func(context.Context, *Notification) (Receipt, error) {
		return Receipt{}, errors.New("etcdserver: request timed out")
	}
	bothChallenges := []string{`Bearer realm="autorollbackd"`, `Basic realm="autorollbackd", charset="UTF-8"`}

	tests := []struct {
		name    string
		req     req
		intake  IntakeFunc
		code    int
		body    string // exact response body
		header  map[string]string
		wwwAuth []string
		intaken bool // whether the intake saw the notification
	}{
		{name: "firing accepted", req: req{body: firing}, code: 200, intaken: true,
			body: `{"status":"accepted","accepted":2,"duplicates":0,"resolved":0,"refused":0}`},
		{name: "resolved accepted with basic auth", req: req{body: resolved, auth: basic(testUser, testPassword)}, code: 200, intaken: true,
			body: `{"status":"accepted","accepted":0,"duplicates":0,"resolved":2,"refused":0}`},
		{name: "receipt passed through", req: req{body: firing}, code: 200, intaken: true,
			intake: func(context.Context, *Notification) (Receipt, error) {
				return Receipt{Accepted: 1, Duplicates: 2, Resolved: 3, Refused: 4}, nil
			},
			body: `{"status":"accepted","accepted":1,"duplicates":2,"resolved":3,"refused":4}`},
		{name: "content type with charset", req: req{body: firing, contentType: "application/json; charset=utf-8"}, code: 200, intaken: true,
			body: `{"status":"accepted","accepted":2,"duplicates":0,"resolved":0,"refused":0}`},
		{name: "bearer scheme is case-insensitive", req: req{body: firing, auth: "bearer " + testToken}, code: 200, intaken: true,
			body: `{"status":"accepted","accepted":2,"duplicates":0,"resolved":0,"refused":0}`},

		{name: "GET", req: req{method: http.MethodGet}, code: 405,
			body: `{"error":"method GET not allowed, want POST"}`, header: map[string]string{"Allow": "POST"}},
		{name: "PUT", req: req{method: http.MethodPut, body: firing}, code: 405,
			body: `{"error":"method PUT not allowed, want POST"}`, header: map[string]string{"Allow": "POST"}},
		{name: "text/plain", req: req{body: firing, contentType: "text/plain"}, code: 415,
			body: `{"error":"content type: got \"text/plain\", want application/json"}`},
		{name: "no content type", req: req{body: firing, contentType: "-"}, code: 415,
			body: `{"error":"content type: missing, want application/json"}`},
		{name: "malformed content type", req: req{body: firing, contentType: "application/json; charset"}, code: 415,
			body: `{"error":"content type: got \"application/json; charset\", want application/json"}`},

		{name: "no credentials", req: req{body: firing, auth: "-"}, code: 401,
			body: `{"error":"authentication required"}`, wwwAuth: bothChallenges},
		{name: "wrong bearer token", req: req{body: firing, auth: bearer("s3cr3t-tokem")}, code: 401,
			body: `{"error":"invalid credentials"}`, wwwAuth: bothChallenges},
		{name: "token of another length", req: req{body: firing, auth: bearer(testToken + "-and-more")}, code: 401,
			body: `{"error":"invalid credentials"}`, wwwAuth: bothChallenges},
		{name: "token prefix", req: req{body: firing, auth: bearer(testToken[:4])}, code: 401,
			body: `{"error":"invalid credentials"}`, wwwAuth: bothChallenges},
		{name: "empty bearer", req: req{body: firing, auth: "Bearer"}, code: 401,
			body: `{"error":"invalid credentials"}`, wwwAuth: bothChallenges},
		{name: "wrong basic password", req: req{body: firing, auth: basic(testUser, "hunter3-password")}, code: 401,
			body: `{"error":"invalid credentials"}`, wwwAuth: bothChallenges},
		{name: "wrong basic user", req: req{body: firing, auth: basic("prometheus", testPassword)}, code: 401,
			body: `{"error":"invalid credentials"}`, wwwAuth: bothChallenges},
		{name: "malformed basic", req: req{body: firing, auth: "Basic !!!"}, code: 401,
			body: `{"error":"invalid credentials"}`, wwwAuth: bothChallenges},
		{name: "token sent as basic password", req: req{body: firing, auth: basic(testUser, testToken)}, code: 401,
			body: `{"error":"invalid credentials"}`, wwwAuth: bothChallenges},
		{name: "wrong scheme", req: req{body: firing, auth: "Digest username=\"am\""}, code: 401,
			body: `{"error":"unsupported authorization scheme \"Digest\""}`, wwwAuth: bothChallenges},
		{name: "GET without credentials is refused before the method check", req: req{method: http.MethodGet, auth: "-"}, code: 401,
			body: `{"error":"authentication required"}`, wwwAuth: bothChallenges},

		{name: "malformed JSON", req: req{body: []byte(`{"version":"4",}`)}, code: 400,
			body: `{"error":"invalid JSON at offset 16: invalid character '}' looking for beginning of object key string"}`},
		{name: "wrong version", req: req{body: bytes.Replace(firing, []byte(`"version":"4"`), []byte(`"version":"3"`), 1)}, code: 400,
			body: `{"error":"version: got \"3\", want \"4\""}`},
		{name: "missing startsAt", req: req{body: mutated(t, func(m map[string]any) { delete(alertOf(m, 1), "startsAt") })}, code: 400,
			body: `{"error":"alerts[1].startsAt: missing"}`},
		{name: "invalid status", req: req{body: mutated(t, func(m map[string]any) { m["status"] = "pending" })}, code: 400,
			body: `{"error":"status: got \"pending\", want firing or resolved"}`},
		{name: "no alerts", req: req{body: mutated(t, func(m map[string]any) { m["alerts"] = []any{} })}, code: 400,
			body: `{"error":"alerts: must not be empty"}`},
		{name: "empty body", req: req{}, code: 400, body: `{"error":"empty body"}`},

		{name: "intake unavailable", req: req{body: firing}, intake: unavailable, code: 503, intaken: true,
			body:   `{"error":"cannot take alerts now, retry"}`,
			header: map[string]string{"Retry-After": "10"}},
		{name: "intake failure", req: req{body: firing}, intake: broken, code: 500, intaken: true,
			body: `{"error":"internal error"}`},
	}
	e := newTestEnv(t, nil)
	defaultIntake := *e.intake.Load()
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e.setIntake(defaultIntake)
			if tc.intake != nil {
				e.setIntake(tc.intake)
			}
			resp := e.do(t, tc.req)
			body := readAll(t, resp.Body)
			if resp.StatusCode != tc.code || body != tc.body+"\n" {
				t.Errorf("got %d %s\nwant %d %s", resp.StatusCode, body, tc.code, tc.body)
			}
			if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
				t.Errorf("Content-Type = %q, want application/json", ct)
			}
			for k, v := range tc.header {
				if got := resp.Header.Get(k); got != v {
					t.Errorf("%s = %q, want %q", k, got, v)
				}
			}
			if got := resp.Header.Values("WWW-Authenticate"); !slices.Equal(got, tc.wwwAuth) {
				t.Errorf("WWW-Authenticate = %q, want %q", got, tc.wwwAuth)
			}
			var intaken bool
			select {
			case <-e.got:
				intaken = true
			default:
			}
			if intaken != tc.intaken {
				t.Errorf("intake called: %v, want %v", intaken, tc.intaken)
			}
		})
	}
}

func TestHandlerBodyLimit(t *testing.T) {
	firing := fixture(t, "firing.json")
	const limit = 4096
	e := newTestEnv(t, func(c *Config) { c.MaxBodyBytes = limit })
	// Whitespace after the JSON value is valid JSON, so padding sets the size
	// exactly.
	pad := func(n int) []byte { return append(bytes.Clone(firing), bytes.Repeat([]byte(" "), n-len(firing))...) }
	tests := []struct {
		name string
		req  req
		code int
		body string
	}{
		{"exactly the limit", req{body: pad(limit)}, 200, `{"status":"accepted","accepted":2,"duplicates":0,"resolved":0,"refused":0}`},
		{"exactly the limit, chunked", req{body: pad(limit), chunked: true}, 200, `{"status":"accepted","accepted":2,"duplicates":0,"resolved":0,"refused":0}`},
		{"one byte over", req{body: pad(limit + 1)}, 413, `{"error":"body larger than 4096 bytes"}`},
		{"one byte over, chunked", req{body: pad(limit + 1), chunked: true}, 413, `{"error":"body larger than 4096 bytes"}`},
		{"far over, chunked", req{body: pad(10 * limit), chunked: true}, 413, `{"error":"body larger than 4096 bytes"}`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			resp := e.do(t, tc.req)
			body := readAll(t, resp.Body)
			if resp.StatusCode != tc.code || body != tc.body+"\n" {
				t.Errorf("got %d %s\nwant %d %s", resp.StatusCode, body, tc.code, tc.body)
			}
		})
	}
}

// spyBody records whether anything read it.
type spyBody struct {
	io.Reader
	read atomic.Bool
}

func (b *spyBody) Read(p []byte) (int, error) { b.read.Store(true); return b.Reader.Read(p) }
func (b *spyBody) Close() error               { return nil }

func TestHandlerAuthenticatesBeforeReadingBody(t *testing.T) {
	e := newTestEnv(t, nil)
	h := e.srv.Config.Handler
	for _, auth := range []string{"", bearer("wrong")} {
		body := &spyBody{Reader: bytes.NewReader(fixture(t, "firing.json"))}
		r := httptest.NewRequest(http.MethodPost, "/webhook", body)
		r.Header.Set("Content-Type", "application/json")
		if auth != "" {
			r.Header.Set("Authorization", auth)
		}
		w := httptest.NewRecorder()
		h.ServeHTTP(w, r)
		if w.Code != 401 || body.read.Load() {
			t.Errorf("Authorization %q: got %d, body read %v; want 401 without reading", auth, w.Code, body.read.Load())
		}
	}
}

func TestHandlerMetrics(t *testing.T) {
	e := newTestEnv(t, nil)
	firing, resolved := fixture(t, "firing.json"), fixture(t, "resolved.json")
	for _, r := range []req{
		{body: firing},
		{body: firing},
		{body: resolved},
		{body: firing, auth: "-"},
		{body: firing, auth: bearer("nope")},
		{body: []byte("{")},
		{body: bytes.Replace(firing, []byte(`"version":"4"`), []byte(`"version":"3"`), 1)},
		{body: firing, contentType: "text/plain"},
		{method: http.MethodGet},
	} {
		readAll(t, e.do(t, r).Body)
	}
	e.setIntake(func(context.Context, *Notification) (Receipt, error) { return Receipt{}, ErrUnavailable })
	readAll(t, e.do(t, req{body: firing}).Body)
	e.setIntake(func(context.Context, *Notification) (Receipt, error) { return Receipt{}, errors.New("boom") })
	readAll(t, e.do(t, req{body: resolved}).Body)

	want := `
# HELP autorollbackd_alerts_received_total Alerts in valid Alertmanager notifications, by status.
# TYPE autorollbackd_alerts_received_total counter
autorollbackd_alerts_received_total{status="firing"} 6
autorollbackd_alerts_received_total{status="resolved"} 4
# HELP autorollbackd_notifications_received_total Valid Alertmanager notifications received, by status.
# TYPE autorollbackd_notifications_received_total counter
autorollbackd_notifications_received_total{status="firing"} 3
autorollbackd_notifications_received_total{status="resolved"} 2
# HELP autorollbackd_webhook_auth_failures_total Webhook requests refused for missing or invalid credentials.
# TYPE autorollbackd_webhook_auth_failures_total counter
autorollbackd_webhook_auth_failures_total 2
# HELP autorollbackd_webhook_rejected_total Webhook requests refused, by reason.
# TYPE autorollbackd_webhook_rejected_total counter
autorollbackd_webhook_rejected_total{reason="bad_json"} 1
autorollbackd_webhook_rejected_total{reason="bad_version"} 1
autorollbackd_webhook_rejected_total{reason="internal"} 1
autorollbackd_webhook_rejected_total{reason="invalid_field"} 0
autorollbackd_webhook_rejected_total{reason="method_not_allowed"} 1
autorollbackd_webhook_rejected_total{reason="missing_field"} 0
autorollbackd_webhook_rejected_total{reason="too_large"} 0
autorollbackd_webhook_rejected_total{reason="unauthorized"} 2
autorollbackd_webhook_rejected_total{reason="unavailable"} 1
autorollbackd_webhook_rejected_total{reason="unsupported_media_type"} 1
# HELP autorollbackd_webhook_requests_total Webhook requests by HTTP status code.
# TYPE autorollbackd_webhook_requests_total counter
autorollbackd_webhook_requests_total{code="200"} 3
autorollbackd_webhook_requests_total{code="400"} 2
autorollbackd_webhook_requests_total{code="401"} 2
autorollbackd_webhook_requests_total{code="405"} 1
autorollbackd_webhook_requests_total{code="413"} 0
autorollbackd_webhook_requests_total{code="415"} 1
autorollbackd_webhook_requests_total{code="500"} 1
autorollbackd_webhook_requests_total{code="503"} 1
# HELP autorollbackd_secret_reloads_total Re-reads of secret files (webhook and API credentials, TLS certificates, notifier secrets) after the start: success when a changed secret was loaded, failure when a read failed and the last good secret was kept.
# TYPE autorollbackd_secret_reloads_total counter
autorollbackd_secret_reloads_total{result="failure"} 0
autorollbackd_secret_reloads_total{result="success"} 0
`
	if err := testutil.GatherAndCompare(e.reg, strings.NewReader(want),
		"autorollbackd_alerts_received_total", "autorollbackd_notifications_received_total",
		"autorollbackd_webhook_auth_failures_total", "autorollbackd_webhook_rejected_total",
		"autorollbackd_webhook_requests_total", "autorollbackd_secret_reloads_total"); err != nil {
		t.Error(err)
	}
	if got := histogramCount(t, e.reg, "autorollbackd_webhook_request_duration_seconds"); got != 11 {
		t.Errorf("request duration observations = %d, want 11", got)
	}
}

func histogramCount(t *testing.T, g prometheus.Gatherer, name string) uint64 {
	t.Helper()
	mfs, err := g.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name {
			return mf.GetMetric()[0].GetHistogram().GetSampleCount()
		}
	}
	t.Fatalf("metric %s not found", name)
	return 0
}

func TestHandlerLogsRejections(t *testing.T) {
	var buf syncBuffer
	logger := slog.New(slog.NewJSONHandler(&buf, nil))
	h := bearerHandler(t, logger, func(context.Context, *Notification) (Receipt, error) {
		return Receipt{}, errors.New("write incident: connection refused")
	})
	for _, auth := range []string{"", bearer(testToken)} {
		r := httptest.NewRequest(http.MethodPost, "/webhook", bytes.NewReader(fixture(t, "firing.json")))
		r.Header.Set("Content-Type", "application/json")
		r.Header.Set("Authorization", auth)
		r.RemoteAddr = "10.0.0.7:41234"
		h.ServeHTTP(httptest.NewRecorder(), r)
	}
	var lines []map[string]any
	for l := range strings.SplitSeq(strings.TrimSpace(buf.String()), "\n") {
		var m map[string]any
		if err := json.Unmarshal([]byte(l), &m); err != nil {
			t.Fatalf("log line %q: %v", l, err)
		}
		if m["msg"] == "webhook request refused" {
			lines = append(lines, m)
		}
	}
	want := []map[string]any{
		{"level": "WARN", "err": "authentication required", "reason": "unauthorized", "remote": "10.0.0.7:41234", "code": 401.0},
		// The cause is logged, not the generic message the sender got.
		{"level": "ERROR", "err": "write incident: connection refused", "reason": "internal", "remote": "10.0.0.7:41234", "code": 500.0},
	}
	if len(lines) != len(want) {
		t.Fatalf("got %d rejection log lines, want %d: %v", len(lines), len(want), lines)
	}
	for i, w := range want {
		for k, v := range w {
			if lines[i][k] != v {
				t.Errorf("line %d: %s = %v, want %v", i, k, lines[i][k], v)
			}
		}
	}
}

type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

func TestNewHandlerErrors(t *testing.T) {
	e := newTestEnv(t, nil)
	intake := IntakeFunc(func(context.Context, *Notification) (Receipt, error) { return Receipt{}, nil })
	bad := DefaultConfig()
	bad.MaxBodyBytes = 0
	tests := []struct {
		name   string
		cfg    Config
		auth   *Authenticator
		intake Intake
		logger *slog.Logger
		reg    prometheus.Registerer
		want   string
	}{
		{"invalid config", bad, e.auth, intake, discard(), prometheus.NewRegistry(), "new webhook handler: maxBodyBytes: must be positive"},
		{"nil authenticator", DefaultConfig(), nil, intake, discard(), prometheus.NewRegistry(), "new webhook handler: nil authenticator"},
		{"nil intake", DefaultConfig(), e.auth, nil, discard(), prometheus.NewRegistry(), "new webhook handler: nil intake"},
		{"nil logger", DefaultConfig(), e.auth, intake, nil, prometheus.NewRegistry(), "new webhook handler: nil logger"},
		{"nil registerer", DefaultConfig(), e.auth, intake, discard(), nil, "new webhook handler: nil registerer"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := NewHandler(tc.cfg, tc.auth, tc.intake, tc.logger, tc.reg)
			if err == nil || err.Error() != tc.want {
				t.Errorf("got %v, want %s", err, tc.want)
			}
		})
	}
}

// TestHandlerConcurrent is for -race: many clients at once, each kind of
// answer, and the counts add up.
func TestHandlerConcurrent(t *testing.T) {
	e := newTestEnv(t, nil)
	var accepted atomic.Int64
	e.setIntake(func(_ context.Context, n *Notification) (Receipt, error) {
		accepted.Add(1)
		return Receipt{Accepted: len(n.Alerts)}, nil
	})
	go func() {
		for range e.got {
		}
	}()
	firing := fixture(t, "firing.json")
	kinds := []struct {
		req  req
		code int
	}{
		{req{body: firing}, 200},
		{req{body: firing, auth: basic(testUser, testPassword)}, 200},
		{req{body: firing, auth: bearer("wrong")}, 401},
		{req{body: []byte(`{"version":"3"}`)}, 400},
	}
	const workers, perWorker = 16, 25
	var wg sync.WaitGroup
	errs := make(chan error, workers*perWorker)
	for w := range workers {
		wg.Go(func() {
			for i := range perWorker {
				k := kinds[(w+i)%len(kinds)]
				resp, err := e.send(k.req)
				if err != nil {
					errs <- err
					continue
				}
				_, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode != k.code {
					errs <- fmt.Errorf("worker %d request %d: got %d, want %d", w, i, resp.StatusCode, k.code)
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	const total = workers * perWorker
	if got := accepted.Load(); got != total/2 {
		t.Errorf("intake accepted %d, want %d", got, total/2)
	}
	want := fmt.Sprintf(`
# HELP autorollbackd_webhook_auth_failures_total Webhook requests refused for missing or invalid credentials.
# TYPE autorollbackd_webhook_auth_failures_total counter
autorollbackd_webhook_auth_failures_total %d
# HELP autorollbackd_webhook_requests_total Webhook requests by HTTP status code.
# TYPE autorollbackd_webhook_requests_total counter
autorollbackd_webhook_requests_total{code="200"} %d
autorollbackd_webhook_requests_total{code="400"} %d
autorollbackd_webhook_requests_total{code="401"} %d
autorollbackd_webhook_requests_total{code="405"} 0
autorollbackd_webhook_requests_total{code="413"} 0
autorollbackd_webhook_requests_total{code="415"} 0
autorollbackd_webhook_requests_total{code="500"} 0
autorollbackd_webhook_requests_total{code="503"} 0
`, total/4, total/2, total/4, total/4)
	if err := testutil.GatherAndCompare(e.reg, strings.NewReader(want),
		"autorollbackd_webhook_requests_total", "autorollbackd_webhook_auth_failures_total"); err != nil {
		t.Error(err)
	}
}

// TestHandlerUnavailableSaysOnlyAFixedReason: a 503 body names the reason
// from a fixed list and never the error text, which can carry the Kubernetes
// API server's messages; the log keeps the whole error.
func TestHandlerUnavailableSaysOnlyAFixedReason(t *testing.T) {
	const apiText = `configmaps "ar-53bad9c6" is forbidden: User "system:serviceaccount:autorollbackd:autorollbackd" cannot create resource`
	tests := []struct {
		name string
		err  error
		body string
	}{
		{"not ready", fmt.Errorf("informer caches not synced yet: %w", ErrNotReady),
			`{"error":"cannot take alerts now (not ready), retry"}`},
		{"not the leader", fmt.Errorf("replica autorollbackd-1 is not the leader: %w", ErrNotLeader),
			`{"error":"cannot take alerts now (not the leader), retry"}`},
		{"queue full", fmt.Errorf("1000 alerts are waiting for a decision: %w", ErrQueueFull),
			`{"error":"cannot take alerts now (queue full), retry"}`},
		{"records full", fmt.Errorf("5000 alert records are kept: %w", ErrRecordsFull),
			`{"error":"cannot take alerts now (alert records full), retry"}`},
		{"cluster unavailable", fmt.Errorf("record alert: %s: %w", apiText, ErrClusterUnavailable),
			`{"error":"cannot take alerts now (Kubernetes API unavailable), retry"}`},
		{"unavailable, no reason", fmt.Errorf("record alert: %s: %w", apiText, ErrUnavailable),
			`{"error":"cannot take alerts now, retry"}`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var buf syncBuffer
			dir := t.TempDir()
			writeFile(t, filepath.Join(dir, "token"), []byte(testToken))
			cfg := DefaultConfig()
			cfg.Auth.BearerTokenFile = filepath.Join(dir, "token")
			auth, err := NewAuthenticator(cfg.Auth, discard())
			if err != nil {
				t.Fatal(err)
			}
			defer auth.Close()
			h, err := NewHandler(cfg, auth, IntakeFunc(func(context.Context, *Notification) (Receipt, error) {
				return Receipt{}, tc.err
			}), slogTo(&buf), prometheus.NewRegistry())
			if err != nil {
				t.Fatal(err)
			}
			r := httptest.NewRequest(http.MethodPost, "/webhook", bytes.NewReader(fixture(t, "firing.json")))
			r.Header.Set("Content-Type", "application/json")
			r.Header.Set("Authorization", bearer(testToken))
			w := httptest.NewRecorder()
			h.ServeHTTP(w, r)
			if w.Code != 503 || w.Body.String() != tc.body+"\n" {
				t.Errorf("got %d %s, want 503 %s", w.Code, w.Body, tc.body)
			}
			if w.Header().Get("Retry-After") != retryAfter {
				t.Errorf("Retry-After = %q", w.Header().Get("Retry-After"))
			}
			logged, err := json.Marshal(tc.err.Error())
			if err != nil {
				t.Fatal(err)
			}
			if !strings.Contains(buf.String(), `"err":`+string(logged)) {
				t.Errorf("the log lacks the whole error %s:\n%s", logged, buf.String())
			}
		})
	}
}
