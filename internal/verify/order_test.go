package verify

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/common/model"
	"k8s.io/client-go/kubernetes/fake"

	"github.com/autorollbackd/autorollbackd/internal/policy"
)

// These tests drive the order of the stages and the early stop with real
// HTTP servers and a fake Prometheus; the rollout and pods stages, which
// need a cluster, are in kube_test.go.

var web = policy.Ref{Kind: policy.KindDeployment, Namespace: "shop", Name: "web"}

// countingProm is a PromAPI that answers every query with value() and
// counts the queries, noting how many requests srv had seen at the first.
type countingProm struct {
	value         func() float64
	calls         atomic.Int32
	httpAtFirst   atomic.Int32
	beforeFirstFn func() int
	once          sync.Once
}

func (p *countingProm) query(ctx context.Context, q string) (model.Value, error) {
	p.once.Do(func() {
		if p.beforeFirstFn != nil {
			p.httpAtFirst.Store(int32(p.beforeFirstFn()))
		}
	})
	p.calls.Add(1)
	return &model.Scalar{Value: model.SampleValue(p.value())}, nil
}

func summary(results []Result) string {
	var out []string
	for _, r := range results {
		out = append(out, r.Check+"="+string(r.Status))
	}
	return strings.Join(out, " ")
}

// TestVerifyStagesRunInOrder: the http checks run one after another in
// config order, and the promql checks start only when they all passed.
func TestVerifyStagesRunInOrder(t *testing.T) {
	rec := &recorder{handlers: []http.HandlerFunc{status(503, ""), status(503, ""), status(200, "")}}
	srv := httptest.NewServer(rec)
	t.Cleanup(srv.Close)
	cfg := httpOnly(
		HTTPCheck{Name: "live", URL: srv.URL + "/health/live", Retries: ptr(3), Interval: dur(20 * time.Millisecond)},
		HTTPCheck{Name: "ready", URL: srv.URL + "/health/ready", Retries: ptr(3), Interval: dur(20 * time.Millisecond)},
	)
	cfg.PromQL = []PromQLCheck{{Name: "errors", Query: "q", Op: "<", Threshold: 1, Consecutive: 1}}
	prom := &countingProm{value: func() float64 { return 0 }, beforeFirstFn: func() int { return len(rec.requests()) }}
	v, err := New(Options{Config: cfg, Prometheus: queryFunc(prom.query)})
	if err != nil {
		t.Fatal(err)
	}
	results := v.Verify(t.Context(), web)
	if got, want := summary(results), "http:live=pass http:ready=pass promql:errors=pass"; got != want {
		t.Errorf("results %s, want %s", got, want)
	}
	// live needs three attempts; ready is asked only after live passed.
	want := "GET /health/live, GET /health/live, GET /health/live, GET /health/ready"
	if got := strings.Join(rec.requests(), ", "); got != want {
		t.Errorf("server saw %s\nwant %s", got, want)
	}
	if n := prom.httpAtFirst.Load(); n != 4 {
		t.Errorf("the first PromQL query came after %d HTTP requests, want after all 4", n)
	}
}

func TestVerifyStopsAtTheFirstFailure(t *testing.T) {
	rec := &recorder{handlers: []http.HandlerFunc{func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/health/live" {
			w.WriteHeader(503)
		}
	}}}
	srv := httptest.NewServer(rec)
	t.Cleanup(srv.Close)
	cfg := httpOnly(
		HTTPCheck{Name: "live", URL: srv.URL + "/health/live", Retries: ptr(0)},
		HTTPCheck{Name: "ready", URL: srv.URL + "/health/ready", Retries: ptr(0)},
	)
	cfg.PromQL = []PromQLCheck{{Name: "errors", Query: "q", Op: "<", Threshold: 0.01, Consecutive: 1}}
	prom := &countingProm{value: func() float64 { return 0.5 }}
	v, err := New(Options{Config: cfg, Prometheus: queryFunc(prom.query)})
	if err != nil {
		t.Fatal(err)
	}
	results := v.Verify(t.Context(), web)
	byName := byCheck(t, results, "http:live", "http:ready", "promql:errors")
	if r := byName["http:live"]; r.Status != StatusFail {
		t.Errorf("http:live = %s %q, want fail", r.Status, r.Message)
	}
	for _, name := range []string{"http:ready", "promql:errors"} {
		expect(t, byName[name], StatusInconclusive, "Not run: http:live failed first.")
		if byName[name].At.IsZero() {
			t.Errorf("%s has no time", name)
		}
	}
	if got := strings.Join(rec.requests(), ", "); got != "GET /health/live" {
		t.Errorf("server saw %s, want only GET /health/live", got)
	}
	if n := prom.calls.Load(); n != 0 {
		t.Errorf("Prometheus was queried %d times after a failed check, want never", n)
	}
	if got := Overall(results); got != StatusFail {
		t.Errorf("Overall = %s, want fail", got)
	}
}

// TestVerifyStopsAtInconclusive: with the default configuration an
// inconclusive check means verification can no longer pass, so it stops
// there too.
func TestVerifyStopsAtInconclusive(t *testing.T) {
	rec := &recorder{handlers: []http.HandlerFunc{status(200, "")}}
	srv := httptest.NewServer(rec)
	t.Cleanup(srv.Close)
	cfg := httpOnly(
		// The Secret does not exist: the request is not sent, inconclusive.
		HTTPCheck{Name: "api", URL: srv.URL + "/api", Retries: ptr(0), BearerTokenSecret: SecretKeyRef{Name: "absent", Key: "token"}, Scope: Scope{Namespaces: []string{web.Namespace}}},
		HTTPCheck{Name: "live", URL: srv.URL + "/health/live", Retries: ptr(0)},
	)
	v, err := New(Options{Config: cfg, Client: fake.NewClientset()})
	if err != nil {
		t.Fatal(err)
	}
	results := v.Verify(t.Context(), web)
	byName := byCheck(t, results, "http:api", "http:live")
	if r := byName["http:api"]; r.Status != StatusInconclusive {
		t.Errorf("http:api = %s %q, want inconclusive", r.Status, r.Message)
	}
	expect(t, byName["http:live"], StatusInconclusive, "Not run: http:api was inconclusive first.")
	if got := rec.requests(); len(got) != 0 {
		t.Errorf("server saw %s, want nothing", got)
	}
}

// TestVerifyPromQLStageStopsAtTheFirstFailure: the promql checks run
// together, and the first to fail stops the others.
func TestVerifyPromQLStageStopsAtTheFirstFailure(t *testing.T) {
	cfg := httpOnly()
	cfg.PromQL = []PromQLCheck{
		{Name: "slow", Query: "slow", Op: "<", Threshold: 1, Consecutive: 100, Interval: dur(20 * time.Millisecond), Timeout: dur(time.Minute)},
		{Name: "errors", Query: "errors", Op: "<", Threshold: 0.01, Consecutive: 1, Interval: dur(20 * time.Millisecond), Timeout: dur(100 * time.Millisecond)},
	}
	prom := queryFunc(func(ctx context.Context, q string) (model.Value, error) {
		if q == "errors" {
			return &model.Scalar{Value: 0.5}, nil
		}
		return &model.Scalar{Value: 0}, nil
	})
	v, err := New(Options{Config: cfg, Prometheus: prom})
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	results := v.Verify(t.Context(), web)
	took := time.Since(start)
	byName := byCheck(t, results, "promql:slow", "promql:errors")
	if r := byName["promql:errors"]; r.Status != StatusFail {
		t.Errorf("promql:errors = %s %q, want fail", r.Status, r.Message)
	}
	r := byName["promql:slow"]
	if r.Status != StatusInconclusive || !strings.HasPrefix(r.Message, "Stopped because promql:errors failed: Verification was cancelled after ") {
		t.Errorf("promql:slow = %s %q, want inconclusive: stopped because promql:errors failed", r.Status, r.Message)
	}
	if took > time.Second {
		t.Errorf("Verify took %s; want it to end soon after promql:errors failed at 100ms, not after promql:slow's 2s streak", took)
	}
}

// TestVerifyRolloutTimeoutIsAFloor: with the rollout check off, the later
// checks keep trying until rollout.timeout has passed since verification
// began, however short their own timeouts.
func TestVerifyRolloutTimeoutIsAFloor(t *testing.T) {
	const floor = time.Second
	floorCfg := func(checks ...HTTPCheck) Config {
		c := httpOnly(checks...)
		c.Rollout.Timeout = dur(floor)
		return c
	}

	t.Run("http passes once the service answers", func(t *testing.T) {
		start := time.Now()
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if time.Since(start) < floor/2 {
				w.WriteHeader(503)
			}
		}))
		t.Cleanup(srv.Close)
		v, err := New(Options{Config: floorCfg(HTTPCheck{Name: "live", URL: srv.URL, Retries: ptr(0), Interval: dur(50 * time.Millisecond)})})
		if err != nil {
			t.Fatal(err)
		}
		r := v.Verify(t.Context(), web)[0]
		if r.Status != StatusPass || !strings.Contains(r.Message, "returned 200 (attempt ") || !strings.HasSuffix(r.Message, ", after the 1 configured: rollout.timeout 1s had not yet passed).") {
			t.Errorf("http:live = %s %q, want pass after more attempts than configured", r.Status, r.Message)
		}
	})

	t.Run("http fails no earlier than the floor", func(t *testing.T) {
		srv := httptest.NewServer(status(503, ""))
		t.Cleanup(srv.Close)
		v, err := New(Options{Config: floorCfg(HTTPCheck{Name: "live", URL: srv.URL, Retries: ptr(1), Interval: dur(100 * time.Millisecond)})})
		if err != nil {
			t.Fatal(err)
		}
		start := time.Now()
		r := v.Verify(t.Context(), web)[0]
		if took := time.Since(start); took < floor {
			t.Errorf("http:live gave up after %s, before rollout.timeout %s", took, floor)
		}
		if r.Status != StatusFail || !strings.Contains(r.Message, "returned 503, want 200 (attempt ") || !strings.HasSuffix(r.Message, ", after the 2 configured: kept trying until rollout.timeout 1s had passed).") {
			t.Errorf("http:live = %s %q, want fail after retrying until the rollout timeout", r.Status, r.Message)
		}
	})

	t.Run("promql passes once the condition holds", func(t *testing.T) {
		cfg := floorCfg()
		cfg.PromQL = []PromQLCheck{{Name: "errors", Query: "q", Op: "<", Threshold: 0.01, Consecutive: 1, Interval: dur(20 * time.Millisecond), Timeout: dur(100 * time.Millisecond)}}
		start := time.Now()
		prom := &countingProm{value: func() float64 {
			if time.Since(start) < floor/2 {
				return 0.5
			}
			return 0
		}}
		v, err := New(Options{Config: cfg, Prometheus: queryFunc(prom.query)})
		if err != nil {
			t.Fatal(err)
		}
		if r := v.Verify(t.Context(), web)[0]; r.Status != StatusPass {
			t.Errorf("promql:errors = %s %q, want pass", r.Status, r.Message)
		}
	})

	t.Run("rollout.timeout 0s sets no floor", func(t *testing.T) {
		srv := httptest.NewServer(status(503, ""))
		t.Cleanup(srv.Close)
		cfg := httpOnly(HTTPCheck{Name: "live", URL: srv.URL, Retries: ptr(0)})
		cfg.Rollout.Timeout = dur(0)
		v, err := New(Options{Config: cfg})
		if err != nil {
			t.Fatal(err)
		}
		start := time.Now()
		r := v.Verify(t.Context(), web)[0]
		if took := time.Since(start); r.Status != StatusFail || took > floor/2 {
			t.Errorf("http:live = %s %q after %s, want a fail after one attempt", r.Status, r.Message, took)
		}
	})
}
