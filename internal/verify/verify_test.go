package verify

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/prometheus/common/model"

	"github.com/autorollbackd/autorollbackd/internal/policy"
)

func TestOverall(t *testing.T) {
	r := func(statuses ...Status) []Result {
		var out []Result
		for _, s := range statuses {
			out = append(out, Result{Kind: KindHTTP, Status: s})
		}
		return out
	}
	// signal is a result of a kind no check has, such as the engine's
	// alert_resolved.
	signal := func(s Status) Result { return Result{Check: "alert_resolved", Kind: "alert_resolved", Status: s} }
	tests := []struct {
		name    string
		results []Result
		want    Status
	}{
		{"no results", nil, StatusInconclusive},
		{"one pass", r(StatusPass), StatusPass},
		{"all pass", r(StatusPass, StatusPass, StatusPass), StatusPass},
		{"pass and inconclusive is inconclusive", r(StatusInconclusive, StatusPass), StatusInconclusive},
		{"one fail", r(StatusFail), StatusFail},
		{"fail wins over pass", r(StatusPass, StatusFail, StatusPass), StatusFail},
		{"fail wins over inconclusive", r(StatusInconclusive, StatusFail), StatusFail},
		{"all inconclusive", r(StatusInconclusive, StatusInconclusive), StatusInconclusive},
		{"an inconclusive signal does not decide", append(r(StatusPass), signal(StatusInconclusive)), StatusPass},
		{"a passing signal does not decide", append(r(StatusInconclusive), signal(StatusPass)), StatusInconclusive},
		{"a signal alone does not decide", []Result{signal(StatusPass)}, StatusInconclusive},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := Overall(tc.results); got != tc.want {
				t.Errorf("Overall() = %s, want %s", got, tc.want)
			}
		})
	}
}

// httpOnly returns a config with the rollout and pods checks off, so that
// no cluster is needed, and rollout.timeout 0s, so that the other checks
// keep their own timeouts (see TestVerifyRolloutTimeoutIsAFloor).
func httpOnly(checks ...HTTPCheck) Config {
	c := DefaultConfig()
	c.Rollout.Enabled, c.Pods.Enabled = false, false
	c.Rollout.Timeout = dur(0)
	c.HTTP = checks
	return c
}

func TestVerifyOrderAndMetrics(t *testing.T) {
	ok := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	t.Cleanup(ok.Close)
	cfg := httpOnly(
		HTTPCheck{Name: "first", URL: ok.URL + "/a"},
		HTTPCheck{Name: "second", URL: ok.URL + "/b"},
	)
	cfg.PromQL = []PromQLCheck{
		{Name: "no-data", Query: "missing", Op: "<", Threshold: 1, Consecutive: 1, Interval: dur(10 * time.Millisecond), Timeout: dur(200 * time.Millisecond)},
		{Name: "fine", Query: "fine", Op: "<", Threshold: 1, Consecutive: 1},
	}
	reg := prometheus.NewRegistry()
	prom := queryFunc(func(ctx context.Context, q string) (model.Value, error) {
		if q == "fine" {
			return &model.Scalar{Value: 0.5}, nil
		}
		return model.Vector{}, nil
	})
	v, err := New(Options{Config: cfg, Registry: reg, Prometheus: prom})
	if err != nil {
		t.Fatal(err)
	}

	// A second Verifier on the same registry (a config reload) shares the
	// metrics instead of failing to register them.
	if _, err := New(Options{Config: cfg, Registry: reg, Prometheus: prom}); err != nil {
		t.Fatalf("second New on the same registry: %v", err)
	}

	results := v.Verify(t.Context(), policy.Ref{Kind: policy.KindDeployment, Namespace: "shop", Name: "web"})
	var got []string
	for _, r := range results {
		got = append(got, r.Check+"="+string(r.Status)+"/"+r.Kind)
	}
	want := "http:first=pass/http http:second=pass/http promql:no-data=inconclusive/promql promql:fine=pass/promql"
	if strings.Join(got, " ") != want {
		t.Errorf("Verify() results = %s\nwant %s", strings.Join(got, " "), want)
	}
	for _, r := range results {
		if r.At.IsZero() || r.Message == "" {
			t.Errorf("result %s has no time or message: %+v", r.Check, r)
		}
	}

	expected := `
# HELP autorollbackd_verifications_total Verification checks run, by kind of check and result.
# TYPE autorollbackd_verifications_total counter
autorollbackd_verifications_total{kind="alert",result="fail"} 0
autorollbackd_verifications_total{kind="alert",result="inconclusive"} 0
autorollbackd_verifications_total{kind="alert",result="pass"} 0
autorollbackd_verifications_total{kind="http",result="fail"} 0
autorollbackd_verifications_total{kind="http",result="inconclusive"} 0
autorollbackd_verifications_total{kind="http",result="pass"} 2
autorollbackd_verifications_total{kind="pods",result="fail"} 0
autorollbackd_verifications_total{kind="pods",result="inconclusive"} 0
autorollbackd_verifications_total{kind="pods",result="pass"} 0
autorollbackd_verifications_total{kind="promql",result="fail"} 0
autorollbackd_verifications_total{kind="promql",result="inconclusive"} 1
autorollbackd_verifications_total{kind="promql",result="pass"} 1
autorollbackd_verifications_total{kind="rollout",result="fail"} 0
autorollbackd_verifications_total{kind="rollout",result="inconclusive"} 0
autorollbackd_verifications_total{kind="rollout",result="pass"} 0
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(expected), "autorollbackd_verifications_total"); err != nil {
		t.Error(err)
	}
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	counts := map[string]uint64{}
	for _, f := range families {
		if f.GetName() != "autorollbackd_verification_duration_seconds" {
			continue
		}
		for _, m := range f.GetMetric() {
			counts[m.GetLabel()[0].GetValue()] = m.GetHistogram().GetSampleCount()
		}
	}
	if want := map[string]uint64{"rollout": 0, "pods": 0, "http": 2, "promql": 2, "alert": 0}; !equalMaps(counts, want) {
		t.Errorf("autorollbackd_verification_duration_seconds sample counts = %v, want %v", counts, want)
	}
}

func equalMaps[K comparable, V comparable](a, b map[K]V) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if w, ok := b[k]; !ok || w != v {
			return false
		}
	}
	return true
}

func TestVerifyNoChecks(t *testing.T) {
	v, err := New(Options{Config: httpOnly()})
	if err != nil {
		t.Fatal(err)
	}
	results := v.Verify(t.Context(), policy.Ref{Kind: policy.KindDeployment, Namespace: "shop", Name: "web"})
	if len(results) != 0 || Overall(results) != StatusInconclusive {
		t.Errorf("Verify() with no checks = %v (overall %s), want none and inconclusive", results, Overall(results))
	}
}
