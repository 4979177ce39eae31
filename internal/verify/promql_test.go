package verify

import (
	"context"
	"errors"
	"fmt"
	"math"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	v1 "github.com/prometheus/client_golang/api/prometheus/v1"
	"github.com/prometheus/common/model"

	"github.com/autorollbackd/autorollbackd/internal/policy"
)

// queryFunc adapts a function to PromAPI.
type queryFunc func(ctx context.Context, query string) (model.Value, error)

func (f queryFunc) Query(ctx context.Context, query string, _ time.Time, _ ...v1.Option) (model.Value, v1.Warnings, v1.Infos, error) {
	v, err := f(ctx, query)
	return v, nil, nil, err
}

// fakeAnswer is one scripted answer of fakeProm.
type fakeAnswer struct {
	value model.Value
	err   error
}

// fakeProm answers queries from a script; once the script is used up, it
// repeats its last answer.
type fakeProm struct {
	mu        sync.Mutex
	answers   []fakeAnswer
	calls     int
	lastQuery string
	lastTS    time.Time
}

func (f *fakeProm) Query(_ context.Context, query string, ts time.Time, _ ...v1.Option) (model.Value, v1.Warnings, v1.Infos, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.lastQuery, f.lastTS = query, ts
	if len(f.answers) == 0 {
		return nil, nil, nil, errors.New("fakeProm: no answers scripted")
	}
	a := f.answers[min(f.calls, len(f.answers)-1)]
	f.calls++
	return a.value, nil, nil, a.err
}

func scalar(f float64) fakeAnswer {
	return fakeAnswer{value: &model.Scalar{Value: model.SampleValue(f)}}
}

func sample(value float64, labels ...string) *model.Sample {
	m := model.Metric{}
	for i := 0; i+1 < len(labels); i += 2 {
		m[model.LabelName(labels[i])] = model.LabelValue(labels[i+1])
	}
	return &model.Sample{Metric: m, Value: model.SampleValue(value)}
}

func TestEvaluate(t *testing.T) {
	tests := []struct {
		name      string
		value     model.Value
		op        string
		threshold float64
		kind      evalKind
		detail    string
	}{
		{"scalar passes", &model.Scalar{Value: 0.001}, "<", 0.01, evalPass, "0.001 < 0.01"},
		{"scalar fails", &model.Scalar{Value: 0.5}, "<", 0.01, evalFail, "0.5 is not < 0.01"},
		{"scalar on the threshold fails <", &model.Scalar{Value: 0.01}, "<", 0.01, evalFail, "0.01 is not < 0.01"},
		{"scalar on the threshold passes <=", &model.Scalar{Value: 0.01}, "<=", 0.01, evalPass, "0.01 <= 0.01"},
		{"> passes", &model.Scalar{Value: 2}, ">", 1, evalPass, "2 > 1"},
		{">= fails", &model.Scalar{Value: 0}, ">=", 1, evalFail, "0 is not >= 1"},
		{"== passes", &model.Scalar{Value: 0}, "==", 0, evalPass, "0 == 0"},
		{"!= fails", &model.Scalar{Value: 0}, "!=", 0, evalFail, "0 is not != 0"},
		{"scalar NaN is no data", &model.Scalar{Value: model.SampleValue(math.NaN())}, "<", 0.01, evalNoData, "the query returned NaN"},
		{"empty vector is no data", model.Vector{}, "<", 0.01, evalNoData, "the query returned no data"},
		{"nil is no data", nil, "<", 0.01, evalNoData, "the query returned no data"},
		{
			"vector of NaN only is no data", model.Vector{sample(math.NaN(), "pod", "a")}, "<", 0.01,
			evalNoData, "the query returned only NaN",
		},
		{
			"a sample without labels", model.Vector{sample(0.001)}, "<", 0.01,
			evalPass, "0.001 < 0.01",
		},
		{
			"the metric name is shown", model.Vector{sample(0.5, "__name__", "ratio", "pod", "a")}, "<", 0.01,
			evalFail, `ratio{pod="a"}: 0.5 is not < 0.01`,
		},
		{
			"one sample passes with its labels", model.Vector{sample(0.001, "deployment", "web")}, "<", 0.01,
			evalPass, `{deployment="web"}: 0.001 < 0.01`,
		},
		{
			"every sample must pass", model.Vector{sample(0.001, "pod", "a"), sample(0.002, "pod", "b")}, "<", 0.01,
			evalPass, "all 2 series < 0.01",
		},
		{
			"one failing sample fails", model.Vector{sample(0.001, "pod", "a"), sample(0.2, "pod", "b")}, "<", 0.01,
			evalFail, `{pod="b"}: 0.2 is not < 0.01`,
		},
		{
			"NaN samples are left out", model.Vector{sample(math.NaN(), "pod", "a"), sample(0.002, "pod", "b")}, "<", 0.01,
			evalPass, `{pod="b"}: 0.002 < 0.01`,
		},
		{"a range vector is an error", model.Matrix{}, "<", 0.01, evalError, "the query returned a matrix; want a scalar or an instant vector"},
		{"a string is an error", &model.String{Value: "x"}, "<", 0.01, evalError, "the query returned a string; want a scalar or an instant vector"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			kind, detail := evaluate(tc.value, tc.op, tc.threshold)
			if kind != tc.kind || detail != tc.detail {
				t.Errorf("evaluate() = %d, %q; want %d, %q", kind, detail, tc.kind, tc.detail)
			}
		})
	}
}

// TestPromQLStreak drives the evaluation loop with scripted answers in a
// synctest bubble, where the 1s interval and the timeouts take no real
// time. With interval 1s and timeout 4.5s there are evaluations at 0s, 1s,
// 2s, 3s and 4s: five at most.
func TestPromQLStreak(t *testing.T) {
	pass, fail := scalar(0.001), scalar(0.5)
	empty := fakeAnswer{value: model.Vector{}}
	queryErr := fakeAnswer{err: errors.New(`bad_data: 1:5: parse error: unclosed left parenthesis`)}
	tests := []struct {
		name        string
		answers     []fakeAnswer
		consecutive int
		timeout     time.Duration
		noData      NoData
		cancelAfter time.Duration // cancel the caller's context after this long; 0: never
		status      Status
		message     string
		evals       int
	}{
		{
			name: "three passing evaluations in a row pass", answers: []fakeAnswer{pass}, consecutive: 3,
			status: StatusPass, message: "Condition < 0.01 held in 3 consecutive evaluations: 0.001 < 0.01.", evals: 3,
		},
		{
			name: "a failing evaluation resets the streak", answers: []fakeAnswer{pass, pass, fail, pass, pass, pass}, consecutive: 3, timeout: 10500 * time.Millisecond,
			status: StatusPass, message: "Condition < 0.01 held in 3 consecutive evaluations: 0.001 < 0.01.", evals: 6,
		},
		{
			name: "last evaluation failed at the timeout fails", answers: []fakeAnswer{pass, pass, fail, pass, fail}, consecutive: 3,
			status: StatusFail, message: "Condition < 0.01 not met within 4.5s (5 evaluations): 0.5 is not < 0.01.", evals: 5,
		},
		{
			name: "a streak too short at the timeout is inconclusive", answers: []fakeAnswer{fail, pass}, consecutive: 5,
			status: StatusInconclusive, message: "Condition < 0.01 held in only 4 of the 5 consecutive evaluations required within 4.5s: 0.001 < 0.01.", evals: 5,
		},
		{
			name: "never any data is inconclusive", answers: []fakeAnswer{empty}, consecutive: 3,
			status: StatusInconclusive, message: "No data within 4.5s (5 evaluations): the query returned no data.", evals: 5,
		},
		{
			name: "no data resets the streak", answers: []fakeAnswer{pass, pass, empty, pass, pass}, consecutive: 3,
			status: StatusInconclusive, message: "Condition < 0.01 held in only 2 of the 3 consecutive evaluations required within 4.5s: 0.001 < 0.01.", evals: 5,
		},
		{
			name: "noData pass counts as passing", answers: []fakeAnswer{empty}, consecutive: 3, noData: NoDataPass,
			status: StatusPass, message: "Condition < 0.01 held in 3 consecutive evaluations: the query returned no data (noData: pass).", evals: 3,
		},
		{
			name: "noData fail counts as failing", answers: []fakeAnswer{empty}, consecutive: 3, noData: NoDataFail,
			status: StatusFail, message: "Condition < 0.01 not met within 4.5s (5 evaluations): the query returned no data (noData: fail).", evals: 5,
		},
		{
			name: "query errors until the timeout are inconclusive with the error", answers: []fakeAnswer{queryErr}, consecutive: 3,
			status:  StatusInconclusive,
			message: "No data within 4.5s (5 evaluations): the query failed: bad_data: 1:5: parse error: unclosed left parenthesis.", evals: 5,
		},
		{
			name: "query errors are retried", answers: []fakeAnswer{queryErr, pass, pass}, consecutive: 2,
			status: StatusPass, message: "Condition < 0.01 held in 2 consecutive evaluations: 0.001 < 0.01.", evals: 3,
		},
		{
			name: "data that failed, then none, fails", answers: []fakeAnswer{fail, fail, empty}, consecutive: 3,
			status:  StatusFail,
			message: "Condition < 0.01 not met within 4.5s (5 evaluations): last data: 0.5 is not < 0.01; then the query returned no data.", evals: 5,
		},
		{
			name: "data that passed, then only errors, is inconclusive", answers: []fakeAnswer{pass, queryErr}, consecutive: 3,
			status:  StatusInconclusive,
			message: "Condition < 0.01 not proven within 4.5s (5 evaluations): last: the query failed: bad_data: 1:5: parse error: unclosed left parenthesis.", evals: 5,
		},
		{
			name: "every sample of a vector must pass", answers: []fakeAnswer{{value: model.Vector{sample(0.001, "pod", "a"), sample(0.3, "pod", "b")}}}, consecutive: 1,
			status: StatusFail, message: `Condition < 0.01 not met within 4.5s (5 evaluations): {pod="b"}: 0.3 is not < 0.01.`, evals: 5,
		},
		{
			name: "a range query result is inconclusive", answers: []fakeAnswer{{value: model.Matrix{}}}, consecutive: 1,
			status: StatusInconclusive, message: "No data within 4.5s (5 evaluations): the query returned a matrix; want a scalar or an instant vector.", evals: 5,
		},
		{
			name: "the caller cancelling is inconclusive", answers: []fakeAnswer{fail}, consecutive: 3, cancelAfter: 2500 * time.Millisecond,
			status: StatusInconclusive, message: "Verification was cancelled after 3 evaluations; last: 0.5 is not < 0.01.", evals: 3,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				timeout := tc.timeout
				if timeout == 0 {
					timeout = 4500 * time.Millisecond
				}
				cfg := httpOnly()
				cfg.PromQL = []PromQLCheck{{
					Name: "error-ratio", Query: `ratio{namespace="{{.Namespace}}",deployment="{{.Name}}"}`,
					Op: "<", Threshold: 0.01, Consecutive: tc.consecutive,
					Interval: dur(time.Second), Timeout: dur(timeout), NoData: tc.noData,
				}}
				prom := &fakeProm{answers: tc.answers}
				v, err := New(Options{Config: cfg, Prometheus: prom})
				if err != nil {
					t.Fatal(err)
				}
				ctx := t.Context()
				if tc.cancelAfter > 0 {
					var cancel context.CancelFunc
					ctx, cancel = context.WithTimeout(ctx, tc.cancelAfter)
					defer cancel()
				}
				start := time.Now()
				results := v.Verify(ctx, policy.Ref{Kind: policy.KindDeployment, Namespace: "shop", Name: "web"})
				if len(results) != 1 {
					t.Fatalf("Verify() returned %d results, want 1", len(results))
				}
				r := results[0]
				if r.Check != "promql:error-ratio" || r.Kind != "promql" || r.Status != tc.status || r.Message != tc.message {
					t.Errorf("result = %s %s %s %q\nwant     promql:error-ratio promql %s %q", r.Check, r.Kind, r.Status, r.Message, tc.status, tc.message)
				}
				if prom.calls != tc.evals {
					t.Errorf("%d evaluations, want %d", prom.calls, tc.evals)
				}
				if want := `ratio{namespace="shop",deployment="web"}`; prom.lastQuery != want {
					t.Errorf("query sent = %s, want %s", prom.lastQuery, want)
				}
				if prom.lastTS.IsZero() {
					t.Error("query sent without an evaluation time")
				}
				if !r.At.Equal(time.Now()) || r.At.Sub(start) > timeout {
					t.Errorf("result at %s, %s after the start; want now and within the timeout %s", r.At, r.At.Sub(start), timeout)
				}
			})
		})
	}
}

// TestPromQLQueryTimeout shows that one hanging query does not use up the
// check: it is abandoned and the next evaluation runs.
func TestPromQLQueryTimeout(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		cfg := httpOnly()
		cfg.PromQL = []PromQLCheck{{Name: "e", Query: "q", Op: "<", Threshold: 1, Consecutive: 2, Interval: dur(time.Second), Timeout: dur(time.Minute)}}
		var calls int
		v, err := New(Options{Config: cfg, Prometheus: queryFunc(func(ctx context.Context, q string) (model.Value, error) {
			calls++
			if calls == 1 {
				<-ctx.Done() // hangs until abandoned
				return nil, ctx.Err()
			}
			return &model.Scalar{Value: 0}, nil
		})})
		if err != nil {
			t.Fatal(err)
		}
		start := time.Now()
		r := v.Verify(t.Context(), policy.Ref{Kind: policy.KindDeployment, Namespace: "shop", Name: "web"})[0]
		if r.Status != StatusPass || calls != 3 {
			t.Errorf("result %s %q after %d queries, want pass after 3", r.Status, r.Message, calls)
		}
		if took := time.Since(start); took != minQueryTimeout+time.Second {
			t.Errorf("took %s, want %s (one abandoned query, then two evaluations a tick apart)", took, minQueryTimeout+time.Second)
		}
	})
}

func ExampleOverall() {
	rollout := Result{Check: "rollout", Kind: KindRollout, Status: StatusPass}
	live := Result{Check: "http:live", Kind: KindHTTP, Status: StatusPass}
	fmt.Println(Overall([]Result{rollout, live}))
	live.Status = StatusInconclusive
	fmt.Println(Overall([]Result{rollout, live}))
	live.Status = StatusFail
	fmt.Println(Overall([]Result{rollout, live}))
	fmt.Println(Overall(nil))
	// Output:
	// pass
	// inconclusive
	// fail
	// inconclusive
}
