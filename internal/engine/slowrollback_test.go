package engine

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/autorollbackd/autorollbackd/internal/escalate"
	"github.com/autorollbackd/autorollbackd/internal/incident"
	"github.com/autorollbackd/autorollbackd/internal/policy"
	"github.com/autorollbackd/autorollbackd/internal/testenv"
	"github.com/autorollbackd/autorollbackd/internal/verify"
)

// A slow but good rollback: the last known good's pods cannot be scheduled
// for 9 seconds, then come up; the service answers 200 once the rollout is
// done. The HTTP check, which gives up after about 6 seconds of retries,
// must wait for the rollout, and the incident must not go back to N-2.
func TestSlowButGoodRollbackIsNotTakenFurther(t *testing.T) {
	const slow = 9 * time.Second
	f := newFixture(t, optedIn, nil)
	ctx := context.Background()
	// The gate: a node label the last known good's pods select, set only
	// once they have waited long enough.
	gate := "gate.autorollback.io/" + f.ns
	label := func(value *string) {
		patch, err := json.Marshal(map[string]any{"metadata": map[string]any{"labels": map[string]*string{gate: value}}})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := f.c.Client.CoreV1().Nodes().Patch(ctx, "kwok-node-0", types.MergePatchType, patch, metav1.PatchOptions{}); err != nil {
			t.Fatalf("label the node: %v", err)
		}
	}
	t.Cleanup(func() { label(nil) })
	f.rollout(t, "event-service:v1.1", "3", func(s *corev1.PodSpec) { s.NodeSelector = map[string]string{gate: "open"} })
	f.rollout(t, "event-service:v3-bad", "4", func(s *corev1.PodSpec) { s.NodeSelector = nil })

	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		d, err := f.c.Client.AppsV1().Deployments(f.ns).Get(r.Context(), "event-service", metav1.GetOptions{})
		switch {
		case err != nil:
			http.Error(w, err.Error(), http.StatusInternalServerError)
		case d.Status.ObservedGeneration < d.Generation || d.Status.UpdatedReplicas != *d.Spec.Replicas ||
			d.Status.AvailableReplicas != *d.Spec.Replicas || d.Status.Replicas != *d.Spec.Replicas:
			w.WriteHeader(http.StatusServiceUnavailable)
		}
	}))
	t.Cleanup(srv.Close)
	e := f.startEngine(t, policy.DefaultConfig(), 1, func(v *verify.Config, _ *escalate.Config, _ *Options) {
		v.Rollout.Timeout, v.Pods.Timeout = metav1.Duration{Duration: time.Minute}, metav1.Duration{Duration: time.Minute}
		v.HTTP = []verify.HTTPCheck{{Name: "live", URL: srv.URL + "/health/live"}} // the defaults: 4 attempts, 2s apart
	})
	n := firing(f.ns, "slow-but-good", time.Now(), map[string]string{"impact": "service_down"})
	if _, err := e.Accept(ctx, n); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, time.Minute, fmt.Sprintf("the rollback's pods unschedulable for %s", slow), func(ctx context.Context) (bool, string) {
		pods, err := f.c.Client.CoreV1().Pods(f.ns).List(ctx, metav1.ListOptions{})
		if err != nil {
			return false, err.Error()
		}
		waited := 0
		var seen []string
		for _, p := range pods.Items {
			if p.DeletionTimestamp != nil || p.Spec.NodeSelector[gate] == "" {
				continue
			}
			for _, c := range p.Status.Conditions {
				if c.Type == corev1.PodScheduled && c.Reason == corev1.PodReasonUnschedulable && time.Since(c.LastTransitionTime.Time) >= slow {
					waited++
				}
			}
			seen = append(seen, p.Name)
		}
		// The rollout surges one pod at a time: the first waits.
		return waited > 0 && waited == len(seen), strings.Join(seen, ", ")
	})
	label(new("open"))
	inc := e.waitIncident(t, n, incident.StateResolved, incident.StateEscalated)
	if inc.State != incident.StateResolved || len(inc.Actions) != 1 || inc.Actions[0].Result == nil || inc.Actions[0].Result.To != 3 {
		t.Fatalf("%s with actions %+v; want resolved after the one rollback to 3, never N-2\n%s", inc.State, inc.Actions, inc.Render())
	}
	if v := inc.Verifications; len(v) != 1 || v[0].Overall != verify.StatusPass {
		t.Fatalf("verifications %+v, want one pass", v)
	}
}
