package verify

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"regexp"
	"sync/atomic"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/autorollbackd/autorollbackd/internal/policy"
	"github.com/autorollbackd/autorollbackd/internal/workload"
)

// gatedNode is the fake node the gated pods wait for.
const gatedNode = "kwok-node-0"

// gate keeps the pods of a template unschedulable until opened: they
// select a node label, unique to the test's namespace, that no node has
// until open puts it on the fake node.
type gate struct {
	e   *kubeEnv
	key string
}

func newGate(e *kubeEnv) *gate {
	g := &gate{e: e, key: "gate.autorollback.io/" + e.ns}
	e.t.Cleanup(func() { g.label(context.Background(), nil) })
	return g
}

func (g *gate) apply(p *corev1.PodTemplateSpec) {
	p.Spec.NodeSelector = map[string]string{g.key: "open"}
}

func (g *gate) open(ctx context.Context) { g.label(ctx, ptr("open")) }

// label sets (nil: removes) the gate's label on the node.
func (g *gate) label(ctx context.Context, value *string) {
	patch, err := json.Marshal(map[string]any{"metadata": map[string]any{"labels": map[string]*string{g.key: value}}})
	if err != nil {
		g.e.t.Fatal(err)
	}
	if _, err := g.e.c.Client.CoreV1().Nodes().Patch(ctx, gatedNode, types.MergePatchType, patch, metav1.PatchOptions{}); err != nil {
		g.e.t.Errorf("label node %s with %s=%v: %v", gatedNode, g.key, value, err)
	}
}

// openAfterUnschedulable opens the gate once every pod of app has been
// unschedulable for at least d by the scheduler's PodScheduled condition,
// so that the rollout is slow for a reason the cluster shows. It returns
// the time just before it opened the gate: no pod of app was scheduled
// before.
func (g *gate) openAfterUnschedulable(app string, n int, d time.Duration) time.Time {
	e := g.e
	e.waitPods("app="+app, n, fmt.Sprintf("unschedulable for %s", d), func(p *corev1.Pod) bool {
		for _, c := range p.Status.Conditions {
			if c.Type == corev1.PodScheduled && c.Status == corev1.ConditionFalse && c.Reason == corev1.PodReasonUnschedulable {
				return time.Since(c.LastTransitionTime.Time) >= d
			}
		}
		return false
	})
	closed := time.Now()
	g.open(e.t.Context())
	return closed
}

// rolloutServer answers 200 on every path once the Deployment has rolled
// out (as kubectl rollout status judges it), 503 before: a service that
// is healthy only when its good pods serve. It counts its answers.
type rolloutServer struct {
	*httptest.Server
	early, ok atomic.Int32
}

func (e *kubeEnv) rolloutServer(name string) *rolloutServer {
	s := &rolloutServer{}
	s.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		d, err := e.c.Client.AppsV1().Deployments(e.ns).Get(r.Context(), name, metav1.GetOptions{})
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		if _, state := workload.JudgeDeployment(d); state != rolloutDone {
			s.early.Add(1)
			w.WriteHeader(http.StatusServiceUnavailable)
			return
		}
		s.ok.Add(1)
	}))
	e.t.Cleanup(s.Close)
	return s
}

// TestKubeSlowRolloutPasses is a rollout that is slow but good: its pods
// are unschedulable for 9s, then become Ready. An HTTP check with the
// default retries (4 attempts, 2s apart: it gives up after about 6s) on a
// service that answers 200 only once the rollout is done passes, because
// it starts after the rollout (and pods) stage, or, with those checks off,
// keeps trying until rollout.timeout has passed.
func TestKubeSlowRolloutPasses(t *testing.T) {
	const slow = 9 * time.Second
	tests := []struct {
		name          string
		rollout, pods WaitCheck
		want          []string
		http          string // the http check's message, after "returned 200 ", a regular expression
		// early is how many times the server may answer 503, before the
		// rollout is done: [min, max].
		early [2]int32
	}{
		{
			name:    "after the rollout and pods checks",
			rollout: WaitCheck{Enabled: true, Timeout: dur(time.Minute)},
			pods:    WaitCheck{Enabled: true, Timeout: dur(time.Minute)},
			want:    []string{"rollout", "pods", "http:live"},
			http:    `\(attempt 1 of 4\)\.`,
		},
		{
			name:    "rollout check off: the pods check waits for rollout.timeout",
			rollout: WaitCheck{Enabled: false, Timeout: dur(time.Minute)},
			pods:    WaitCheck{Enabled: true, Timeout: dur(3 * time.Second)},
			want:    []string{"pods", "http:live"},
			// The pods may be Ready a moment before the Deployment's
			// status says so.
			http:  `\(attempt [12] of 4\)\.`,
			early: [2]int32{0, 1},
		},
		{
			name:    "rollout and pods checks off: the http check retries until rollout.timeout",
			rollout: WaitCheck{Enabled: false, Timeout: dur(time.Minute)},
			want:    []string{"http:live"},
			http:    `\(attempt \d+, after the 4 configured: rollout\.timeout 1m0s had not yet passed\)\.`,
			early:   [2]int32{4, 1000},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e := newKubeEnv(t)
			g := newGate(e)
			e.createDeployment("slow", 2, func(d *appsv1.Deployment) { g.apply(&d.Spec.Template) })
			srv := e.rolloutServer("slow")

			cfg := DefaultConfig()
			cfg.PollInterval = dur(200 * time.Millisecond)
			cfg.Rollout, cfg.Pods = tc.rollout, tc.pods
			cfg.HTTP = []HTTPCheck{{Name: "live", URL: srv.URL + "/health/live"}} // the defaults: 5s, 3 retries, 2s apart
			v, err := New(Options{Config: cfg, Client: e.c.Client})
			if err != nil {
				t.Fatal(err)
			}
			type verified struct {
				results []Result
				at      time.Time
			}
			done := make(chan verified, 1)
			go func() {
				r := v.Verify(t.Context(), e.ref(policy.KindDeployment, "slow"))
				done <- verified{r, time.Now()}
			}()
			opened := g.openAfterUnschedulable("slow", 2, slow)
			var got verified
			select {
			case got = <-done:
			case <-time.After(2 * time.Minute):
				t.Fatal("Verify did not return within 2m")
			}
			results := got.results

			res := byCheck(t, results, tc.want...)
			for _, r := range res {
				if r.Status != StatusPass {
					t.Errorf("%s = %s %q, want pass", r.Check, r.Status, r.Message)
				}
			}
			if got := Overall(results); got != StatusPass {
				t.Errorf("Overall = %s, want pass", got)
			}
			wantHTTP := "^" + regexp.QuoteMeta(fmt.Sprintf("GET %s/health/live returned 200 ", srv.URL)) + tc.http + "$"
			if r := res["http:live"]; !regexp.MustCompile(wantHTTP).MatchString(r.Message) {
				t.Errorf("http:live message %q\nwant /%s/", r.Message, wantHTTP)
			}
			// Passing before the pods could be scheduled would be a pass on
			// a rollout that had not happened.
			if got.at.Before(opened) {
				t.Errorf("Verify passed at %s, before the pods could be scheduled (%s)", got.at.Format(time.StampMilli), opened.Format(time.StampMilli))
			}
			// Without the rollout and pods checks, the http check's 4
			// attempts alone would have failed; with them, the service is
			// asked only once the rollout is done.
			early, ok := srv.early.Load(), srv.ok.Load()
			if early < tc.early[0] || early > tc.early[1] || ok != 1 {
				t.Errorf("the server answered %d requests with 503 before the rollout was done and %d with 200 after; want %d to %d, and one", early, ok, tc.early[0], tc.early[1])
			}
		})
	}
}

// TestKubeFailedRolloutStopsVerification: once the rollout has failed
// (its progress deadline exceeded), the pods, http and promql checks are
// not run: the service is not asked and Prometheus is not queried.
func TestKubeFailedRolloutStopsVerification(t *testing.T) {
	e := newKubeEnv(t)
	mutate := neverReady(t, e.c)
	e.createDeployment("failed", 1, func(d *appsv1.Deployment) {
		d.Spec.ProgressDeadlineSeconds = ptr[int32](1)
		mutate(&d.Spec.Template)
	})
	srv := e.rolloutServer("failed")
	prom := &countingProm{value: func() float64 { return 0.5 }} // an error ratio of 50%: failing

	cfg := DefaultConfig()
	cfg.PollInterval = dur(200 * time.Millisecond)
	cfg.Rollout.Timeout, cfg.Pods.Timeout = dur(90*time.Second), dur(20*time.Second)
	cfg.HTTP = []HTTPCheck{{Name: "live", URL: srv.URL + "/health/live"}}
	cfg.PromQL = []PromQLCheck{{Name: "error-ratio", Query: "ratio", Op: "<", Threshold: 0.01, Consecutive: 3, Interval: dur(time.Second), Timeout: dur(20 * time.Second)}}
	v, err := New(Options{Config: cfg, Client: e.c.Client, Prometheus: queryFunc(prom.query)})
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	results := v.Verify(t.Context(), e.ref(policy.KindDeployment, "failed"))
	took := time.Since(start)
	res := byCheck(t, results, "rollout", "pods", "http:live", "promql:error-ratio")
	expect(t, res["rollout"], StatusFail, `deployment "failed" exceeded its progress deadline`)
	for _, name := range []string{"pods", "http:live", "promql:error-ratio"} {
		expect(t, res[name], StatusInconclusive, "Not run: rollout failed first.")
	}
	if n := prom.calls.Load(); n != 0 {
		t.Errorf("Prometheus was queried %d times after the rollout failed, want never", n)
	}
	if n := srv.early.Load() + srv.ok.Load(); n != 0 {
		t.Errorf("the service was asked %d times after the rollout failed, want never", n)
	}
	if got := Overall(results); got != StatusFail {
		t.Errorf("Overall = %s, want fail", got)
	}
	if took > 15*time.Second {
		t.Errorf("Verify took %s; want it to end when the rollout failed, not after the other checks' timeouts", took)
	}
}
