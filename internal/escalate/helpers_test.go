package escalate_test

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	clocktesting "k8s.io/utils/clock/testing"

	"github.com/autorollbackd/autorollbackd/internal/escalate"
	"github.com/autorollbackd/autorollbackd/internal/policy"
)

// start is when the test incident began; now is when messages are sent.
var (
	start = time.Date(2026, 3, 14, 9, 26, 0, 0, time.UTC)
	now   = start.Add(5 * time.Minute)
)

const dashboard = "https://grafana.example/d/event-service"

func incident() escalate.Incident {
	return escalate.Incident{
		ID:           "inc-7f3a",
		Target:       policy.Ref{Kind: policy.KindDeployment, Namespace: "production", Name: "event-service"},
		StartedAt:    start,
		Alertname:    "EventServiceHighErrorRate",
		Rule:         "service-down",
		Criterion:    "service_down",
		GeneratorURL: "http://prometheus.example/graph?g0.expr=rate%28x%29",
	}
}

func pageMessage() escalate.Message {
	return escalate.Message{
		Incident: incident(),
		Summary:  "Deployment production/event-service still failing 5m after rollback",
		Details: []string{
			"alert EventServiceHighErrorRate matched rule service-down (service_down)",
			"rolled back from revision 7 to revision 6",
			"verification: error rate 12% > 1%",
		},
	}
}

func d(x time.Duration) metav1.Duration { return metav1.Duration{Duration: x} }

func intp(i int) *int { return &i }

// secretFile writes content to a file in a temporary directory.
func secretFile(t *testing.T, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "secret")
	if err := os.WriteFile(p, []byte(content+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// waits records the waits between retries instead of waiting.
type waits struct {
	mu sync.Mutex
	d  []time.Duration
}

func (w *waits) sleep(ctx context.Context, d time.Duration) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.d = append(w.d, d)
	return ctx.Err()
}

func (w *waits) get() []time.Duration {
	w.mu.Lock()
	defer w.mu.Unlock()
	return append([]time.Duration(nil), w.d...)
}

// harness is an Escalator with recorded waits, a registry and captured logs.
type harness struct {
	*escalate.Escalator
	waits *waits
	reg   *prometheus.Registry
	logs  *syncBuffer
}

func newHarness(t *testing.T, cfg escalate.Config, mutate ...func(*escalate.Options)) *harness {
	t.Helper()
	h := &harness{waits: &waits{}, reg: prometheus.NewRegistry(), logs: &syncBuffer{}}
	o := escalate.Options{
		Config:   cfg,
		Logger:   slog.New(slog.NewTextHandler(h.logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
		Registry: h.reg,
		Clock:    clocktesting.NewFakePassiveClock(now),
	}
	for _, m := range mutate {
		m(&o)
	}
	e, err := escalate.New(escalate.WithSleep(o, h.waits.sleep))
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	h.Escalator = e
	return h
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// reply is one scripted answer of a fake server.
type reply struct {
	status int
	header map[string]string
	body   string
}

// request is what a fake server received.
type request struct {
	method, path string
	header       http.Header
	body         []byte
}

// fakeServer answers with the scripted replies in order, then with last.
type fakeServer struct {
	*httptest.Server
	mu       sync.Mutex
	script   []reply
	last     reply
	requests []request
}

func newFakeServer(t *testing.T, last reply, script ...reply) *fakeServer {
	t.Helper()
	f := &fakeServer{script: script, last: last}
	f.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		f.mu.Lock()
		f.requests = append(f.requests, request{r.Method, r.URL.Path, r.Header.Clone(), body})
		rep := f.last
		if len(f.script) > 0 {
			rep, f.script = f.script[0], f.script[1:]
		}
		f.mu.Unlock()
		for k, v := range rep.header {
			w.Header().Set(k, v)
		}
		w.WriteHeader(rep.status)
		_, _ = io.WriteString(w, rep.body)
	}))
	t.Cleanup(f.Close)
	return f
}

// answer scripts the next answers, before last.
func (f *fakeServer) answer(script ...reply) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.script = append(f.script, script...)
}

func (f *fakeServer) got() []request {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]request(nil), f.requests...)
}

// assertJSON compares a JSON body with the expected JSON text, ignoring
// only whitespace and key order.
func assertJSON(t *testing.T, got []byte, want string) {
	t.Helper()
	var g, w any
	if err := json.Unmarshal(got, &g); err != nil {
		t.Fatalf("body is not JSON: %v\n%s", err, got)
	}
	if err := json.Unmarshal([]byte(want), &w); err != nil {
		t.Fatalf("bad expected JSON: %v", err)
	}
	if !reflect.DeepEqual(g, w) {
		pretty := func(v any) string { b, _ := json.MarshalIndent(v, "", "  "); return string(b) }
		t.Errorf("body mismatch\ngot:\n%s\nwant:\n%s", pretty(g), pretty(w))
	}
}

// mustNotContain fails when s contains any of the secrets.
func mustNotContain(t *testing.T, what, s string, secrets ...string) {
	t.Helper()
	for _, sec := range secrets {
		if sec != "" && strings.Contains(s, sec) {
			t.Errorf("%s contains the secret %q:\n%s", what, sec, s)
		}
	}
}

// sample returns the value of the counter series of name whose labels
// include labels; it fails when there is not exactly one.
func sample(t *testing.T, reg *prometheus.Registry, name string, labels map[string]string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var found []float64
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	metric:
		for _, m := range mf.GetMetric() {
			have := map[string]string{}
			for _, lp := range m.GetLabel() {
				have[lp.GetName()] = lp.GetValue()
			}
			for k, v := range labels {
				if have[k] != v {
					continue metric
				}
			}
			found = append(found, m.GetCounter().GetValue())
		}
	}
	if len(found) != 1 {
		t.Fatalf("%s%v: %d series, want 1", name, labels, len(found))
	}
	return found[0]
}
