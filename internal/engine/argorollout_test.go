package engine

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/yaml"

	"github.com/autorollbackd/autorollbackd/internal/actuator"
	"github.com/autorollbackd/autorollbackd/internal/incident"
	"github.com/autorollbackd/autorollbackd/internal/policy"
	"github.com/autorollbackd/autorollbackd/internal/testenv"
	"github.com/autorollbackd/autorollbackd/internal/webhook"
	"github.com/autorollbackd/autorollbackd/internal/workload"
)

// rolloutStatus is what these tests read of a Rollout.
type rolloutStatus struct {
	phase, stable, current, revision, image string
	abort                                   bool
	available, generation                   int64
}

func (f *fixture) readRollout(ctx context.Context, name string) (rolloutStatus, error) {
	u, err := f.c.Dynamic.Resource(workload.RolloutResource).Namespace(f.ns).Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		return rolloutStatus{}, err
	}
	s := rolloutStatus{revision: u.GetAnnotations()["rollout.argoproj.io/revision"], generation: u.GetGeneration()}
	s.phase, _, _ = unstructured.NestedString(u.Object, "status", "phase")
	s.stable, _, _ = unstructured.NestedString(u.Object, "status", "stableRS")
	s.current, _, _ = unstructured.NestedString(u.Object, "status", "currentPodHash")
	s.abort, _, _ = unstructured.NestedBool(u.Object, "status", "abort")
	s.available, _, _ = unstructured.NestedInt64(u.Object, "status", "availableReplicas")
	if cs, _, _ := unstructured.NestedSlice(u.Object, "spec", "template", "spec", "containers"); len(cs) > 0 {
		s.image, _, _ = unstructured.NestedString(cs[0].(map[string]any), "image")
	}
	return s, nil
}

func (f *fixture) waitRollout(t *testing.T, name, what string, ok func(rolloutStatus) bool) rolloutStatus {
	t.Helper()
	var last rolloutStatus
	testenv.Eventually(t, 2*time.Minute, "Rollout "+name+" "+what, func(ctx context.Context) (bool, string) {
		s, err := f.readRollout(ctx, name)
		if err != nil {
			return false, err.Error()
		}
		last = s
		return ok(s), fmt.Sprintf("%+v", s)
	})
	return last
}

// newRolloutFixture runs the Argo Rollouts controller and creates an
// opted-in canary Rollout "checkout" of three pods with the canary steps
// given, at revision 1.
func newRolloutFixture(t *testing.T, steps string) *fixture {
	t.Helper()
	c := testenv.Require(t)
	c.StartArgoRollouts(t)
	f := &fixture{c: c, ns: c.Namespace(t), clients: &workload.Clients{Interface: c.Client, Dynamic: c.Dynamic}}
	body, err := yaml.YAMLToJSON([]byte(fmt.Sprintf(`
apiVersion: argoproj.io/v1alpha1
kind: Rollout
metadata: {name: checkout, labels: {%q: "true"}}
spec:
  replicas: 3
  selector: {matchLabels: {app: checkout}}
  template:
    metadata: {labels: {app: checkout}}
    spec:
      containers: [{name: app, image: "checkout:v1"}]
  strategy:
    canary:
      steps: %s
`, policy.DefaultOptInLabel, steps)))
	if err != nil {
		t.Fatal(err)
	}
	u := &unstructured.Unstructured{}
	if err := u.UnmarshalJSON(body); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Dynamic.Resource(workload.RolloutResource).Namespace(f.ns).Create(t.Context(), u, metav1.CreateOptions{}); err != nil {
		t.Fatalf("create Rollout: %v", err)
	}
	f.waitRollout(t, "checkout", "Healthy at revision 1", func(s rolloutStatus) bool {
		return s.phase == "Healthy" && s.revision == "1" && s.available == 3 && s.stable != "" && s.stable == s.current
	})
	return f
}

// rolloutAlert is a firing alert naming the Rollout by its rollout label.
func rolloutAlert(ns, name string) *webhook.Notification {
	n := firing(ns, name, time.Now(), map[string]string{"impact": "service_down", "rollout": "checkout"})
	delete(n.Alerts[0].Labels, "deployment")
	return n
}

// An alert on a canary Rollout paused midway, posted as Alertmanager would:
// the engine decides a rollback from revision 2 to 1, the actuator aborts
// the rollout (the canary scaled away, the stable ReplicaSet serving every
// pod), verification passes on the Rollout's own status, once.
func TestRolloutPausedMidwayIsAbortedOnce(t *testing.T) {
	f := newRolloutFixture(t, "[{setWeight: 50}, {pause: {}}]")
	stable := f.waitRollout(t, "checkout", "stable", func(rolloutStatus) bool { return true }).stable
	patch := []byte(`{"spec":{"template":{"spec":{"containers":[{"name":"app","image":"checkout:v2-bad"}]}}}}`)
	if _, err := f.c.Dynamic.Resource(workload.RolloutResource).Namespace(f.ns).Patch(t.Context(), "checkout", types.MergePatchType, patch, metav1.PatchOptions{}); err != nil {
		t.Fatal(err)
	}
	paused := f.waitRollout(t, "checkout", "paused midway at revision 2", func(s rolloutStatus) bool {
		return s.phase == "Paused" && s.revision == "2" && s.stable == stable && s.current != stable
	})

	e := f.startEngine(t, policy.DefaultConfig(), 1)
	ctx := context.Background()
	n := rolloutAlert(f.ns, "checkout-1")
	if _, err := e.Accept(ctx, n); err != nil {
		t.Fatal(err)
	}
	inc := e.waitIncident(t, n, incident.StateResolved)
	if len(inc.Actions) != 1 || inc.Actions[0].Result == nil || inc.Actions[0].Result.Outcome != actuator.OutcomeApplied ||
		!strings.Contains(inc.Actions[0].Result.Message, "aborted") {
		t.Fatalf("actions = %+v; want one applied abort\n%s", inc.Actions, inc.Render())
	}
	if inc.From != 2 || len(inc.Targets) != 1 || inc.Targets[0] != 1 {
		t.Errorf("plan from %d to %v, want from 2 to [1]", inc.From, inc.Targets)
	}
	if len(inc.Verifications) != 1 || inc.Verifications[0].Overall != "pass" {
		t.Errorf("verifications = %+v, want one pass\n%s", inc.Verifications, inc.Render())
	}
	aborted := f.waitRollout(t, "checkout", "aborted back to the stable ReplicaSet", func(s rolloutStatus) bool {
		return s.abort && s.phase == "Degraded" && s.stable == stable && s.available == 3
	})
	if aborted.generation != paused.generation || aborted.image != "checkout:v2-bad" {
		t.Errorf("the abort changed the spec: %+v, was %+v", aborted, paused)
	}

	// Another alert about the same rollout decides no second action.
	other := rolloutAlert(f.ns, "checkout-2")
	if r, err := e.Accept(ctx, other); err != nil || r.Accepted != 1 {
		t.Fatalf("second alert: %+v, %v", r, err)
	}
	if d := e.waitDecision(t, other); d.Outcome == policy.OutcomeRollback {
		t.Fatalf("second alert decided a second rollback:\n%s", d)
	}
}

// An alert on a canary Rollout after it was promoted, posted as
// Alertmanager would: the engine decides a rollback from revision 2 to 1,
// the actuator undoes it as `kubectl argo rollouts undo` does (revision 3
// runs the first template on its ReplicaSet), verification passes on the
// Rollout's own status, once.
func TestRolloutPromotedIsUndoneOnce(t *testing.T) {
	f := newRolloutFixture(t, "[{setWeight: 50}]")
	first := f.waitRollout(t, "checkout", "stable", func(rolloutStatus) bool { return true }).stable
	patch := []byte(`{"spec":{"template":{"spec":{"containers":[{"name":"app","image":"checkout:v2-bad"}]}}}}`)
	if _, err := f.c.Dynamic.Resource(workload.RolloutResource).Namespace(f.ns).Patch(t.Context(), "checkout", types.MergePatchType, patch, metav1.PatchOptions{}); err != nil {
		t.Fatal(err)
	}
	f.waitRollout(t, "checkout", "promoted to revision 2", func(s rolloutStatus) bool {
		return s.phase == "Healthy" && s.revision == "2" && s.stable != first && s.stable == s.current && s.available == 3
	})

	e := f.startEngine(t, policy.DefaultConfig(), 1)
	ctx := context.Background()
	n := rolloutAlert(f.ns, "checkout-1")
	if _, err := e.Accept(ctx, n); err != nil {
		t.Fatal(err)
	}
	inc := e.waitIncident(t, n, incident.StateResolved)
	if len(inc.Actions) != 1 || inc.Actions[0].Result == nil || inc.Actions[0].Result.Outcome != actuator.OutcomeApplied ||
		strings.Contains(inc.Actions[0].Result.Message, "aborted") {
		t.Fatalf("actions = %+v; want one applied undo\n%s", inc.Actions, inc.Render())
	}
	if inc.From != 2 || len(inc.Targets) != 1 || inc.Targets[0] != 1 {
		t.Errorf("plan from %d to %v, want from 2 to [1]", inc.From, inc.Targets)
	}
	if len(inc.Verifications) != 1 || inc.Verifications[0].Overall != "pass" {
		t.Errorf("verifications = %+v, want one pass\n%s", inc.Verifications, inc.Render())
	}
	undone := f.waitRollout(t, "checkout", "Healthy at the first template, as revision 3", func(s rolloutStatus) bool {
		return s.phase == "Healthy" && s.revision == "3" && s.stable == first && s.current == first && s.available == 3
	})
	if undone.image != "checkout:v1" {
		t.Errorf("image after undo = %s, want checkout:v1", undone.image)
	}

	// Another alert about the same rollout decides no second action.
	other := rolloutAlert(f.ns, "checkout-2")
	if r, err := e.Accept(ctx, other); err != nil || r.Accepted != 1 {
		t.Fatalf("second alert: %+v, %v", r, err)
	}
	if d := e.waitDecision(t, other); d.Outcome == policy.OutcomeRollback {
		t.Fatalf("second alert decided a second rollback:\n%s", d)
	}
	if s, err := f.readRollout(ctx, "checkout"); err != nil || s.revision != "3" || s.image != "checkout:v1" {
		t.Errorf("after the second alert: %+v, %v; want revision 3 at checkout:v1", s, err)
	}
}
