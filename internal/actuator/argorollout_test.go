package actuator

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/yaml"

	"github.com/autorollbackd/autorollbackd/internal/kinds"
	"github.com/autorollbackd/autorollbackd/internal/policy"
	"github.com/autorollbackd/autorollbackd/internal/testenv"
	"github.com/autorollbackd/autorollbackd/internal/workload"
)

// rolloutFixture runs the Argo Rollouts controller and an Actuator that
// reaches Rollouts through a dynamic client.
type rolloutFixture struct {
	*rollbackFixture
	clients workload.Clients
}

func newRolloutFixture(t *testing.T) *rolloutFixture {
	t.Helper()
	c := testenv.Require(t)
	c.StartArgoRollouts(t)
	f := &rolloutFixture{rollbackFixture: &rollbackFixture{c: c, ns: c.Namespace(t)}}
	f.clients = workload.Clients{Interface: c.Client, Dynamic: c.Dynamic}
	f.act, f.reg = newRollbackActuator(t, f.clients)
	return f
}

// rollout creates a canary Rollout of three pods running image and waits
// until it is Healthy.
func (f *rolloutFixture) rollout(t *testing.T, name, image, steps string) rolloutView {
	t.Helper()
	manifest := fmt.Sprintf(`
apiVersion: argoproj.io/v1alpha1
kind: Rollout
metadata: {name: %[1]s}
spec:
  replicas: 3
  selector: {matchLabels: {app: %[1]s}}
  template:
    metadata: {labels: {app: %[1]s}}
    spec:
      containers: [{name: app, image: %[2]q}]
  strategy:
    canary:
      steps: %[3]s
`, name, image, steps)
	body, err := yaml.YAMLToJSON([]byte(manifest))
	if err != nil {
		t.Fatal(err)
	}
	u := &unstructured.Unstructured{}
	if err := u.UnmarshalJSON(body); err != nil {
		t.Fatal(err)
	}
	if _, err := f.c.Dynamic.Resource(workload.RolloutResource).Namespace(f.ns).Create(t.Context(), u, metav1.CreateOptions{}); err != nil {
		t.Fatalf("create Rollout: %v", err)
	}
	return f.waitRollout(t, name, "Healthy with 3 available pods of one ReplicaSet", func(v rolloutView) bool {
		return v.phase == "Healthy" && v.available == 3 && v.stable != "" && v.stable == v.current &&
			len(v.replicas) == 1 && v.replicas[v.stable] == 3
	})
}

func (f *rolloutFixture) setImage(t *testing.T, name, image string) {
	t.Helper()
	patch := fmt.Sprintf(`{"spec":{"template":{"spec":{"containers":[{"name":"app","image":%q}]}}}}`, image)
	if _, err := f.c.Dynamic.Resource(workload.RolloutResource).Namespace(f.ns).Patch(t.Context(), name, types.MergePatchType, []byte(patch), metav1.PatchOptions{}); err != nil {
		t.Fatalf("set image of Rollout %s: %v", name, err)
	}
}

// rolloutView is what the tests read of a Rollout and its ReplicaSets.
type rolloutView struct {
	u                      *unstructured.Unstructured
	phase, stable, current string
	abort                  bool
	available, generation  int64
	revision, image        string
	replicas, ready        map[string]int32  // by pod hash, ReplicaSets with replicas only
	revisions              map[string]string // pod hash to revision
	rolloutStatus          string
	rolloutState           workload.RolloutState
}

func (v rolloutView) String() string {
	return fmt.Sprintf("phase %q abort %v stable %q current %q revision %s image %s replicas %v ready %v status %s (%s)",
		v.phase, v.abort, v.stable, v.current, v.revision, v.image, v.replicas, v.ready, v.rolloutState, v.rolloutStatus)
}

func (f *rolloutFixture) read(ctx context.Context, name string) (rolloutView, error) {
	ad, err := workload.For(kinds.KindRollout)
	if err != nil {
		return rolloutView{}, err
	}
	o, err := ad.Get(ctx, f.clients, f.ns, name)
	if err != nil {
		return rolloutView{}, err
	}
	u := o.Runtime().(*unstructured.Unstructured)
	v := rolloutView{u: u, generation: u.GetGeneration(), revision: u.GetAnnotations()[kinds.AnnotationRolloutRevision]}
	v.phase, _, _ = unstructured.NestedString(u.Object, "status", "phase")
	v.stable, _, _ = unstructured.NestedString(u.Object, "status", "stableRS")
	v.current, _, _ = unstructured.NestedString(u.Object, "status", "currentPodHash")
	v.abort, _, _ = unstructured.NestedBool(u.Object, "status", "abort")
	v.available, _, _ = unstructured.NestedInt64(u.Object, "status", "availableReplicas")
	if c := o.Template().Spec.Containers; len(c) > 0 {
		v.image = c[0].Image
	}
	v.rolloutStatus, v.rolloutState = o.RolloutStatus()
	history, err := ad.History(ctx, f.clients, o)
	if err != nil {
		return v, err
	}
	// The adapter's history: every ReplicaSet the Rollout controls.
	v.replicas, v.ready = map[string]int32{}, map[string]int32{}
	for _, rev := range history {
		rs := rev.Object.(*appsv1.ReplicaSet)
		if rs.Spec.Replicas == nil || *rs.Spec.Replicas == 0 {
			continue
		}
		hash := rs.Labels[kinds.LabelRolloutPodTemplateHash]
		v.replicas[hash], v.ready[hash] = *rs.Spec.Replicas, rs.Status.ReadyReplicas
	}
	return v, nil
}

func (f *rolloutFixture) waitRollout(t *testing.T, name, what string, ok func(rolloutView) bool) rolloutView {
	t.Helper()
	var last rolloutView
	testenv.Eventually(t, 2*time.Minute, "Rollout "+name+" "+what, func(ctx context.Context) (bool, string) {
		v, err := f.read(ctx, name)
		if err != nil {
			return false, err.Error()
		}
		last = v
		return ok(v), v.String()
	})
	return last
}

func (f *rolloutFixture) request(name, incident string) Request {
	return f.rollbackFixture.request(policy.KindRollout, name, incident)
}

// An alert on a canary paused midway aborts it, as `kubectl argo rollouts
// abort` does: the controller scales the canary away and the stable
// ReplicaSet serves every pod; the template stays the new one. Once.
func TestRolloutMidwayIsAborted(t *testing.T) {
	f := newRolloutFixture(t)
	ctx := t.Context()
	first := f.rollout(t, "web", "web:v1", "[{setWeight: 50}, {pause: {}}]")
	f.setImage(t, "web", "web:v2")
	paused := f.waitRollout(t, "web", "paused at step 1 with a ready canary", func(v rolloutView) bool {
		return v.phase == "Paused" && v.stable == first.stable && v.current != first.stable &&
			v.replicas[v.current] > 0 && v.ready[v.current] == v.replicas[v.current] && v.revision == "2"
	})

	res, err := f.act.Rollback(ctx, f.request("web", "inc-abort"), 2, 1)
	if err != nil {
		t.Fatalf("Rollback: %v", err)
	}
	if res.Outcome != OutcomeApplied || !strings.Contains(res.Message, "aborted") {
		t.Fatalf("Rollback = %+v, want an applied abort", res)
	}
	aborted := f.waitRollout(t, "web", "aborted, the canary scaled away, the stable ReplicaSet serving 3 pods", func(v rolloutView) bool {
		return v.abort && v.phase == "Degraded" && v.stable == first.stable && len(v.replicas) == 1 &&
			v.replicas[first.stable] == 3 && v.ready[first.stable] == 3 && v.rolloutState == workload.RolloutDone
	})
	if aborted.image != "web:v2" || aborted.generation != paused.generation {
		t.Errorf("abort changed the spec: image %s generation %d, was generation %d", aborted.image, aborted.generation, paused.generation)
	}
	ann := aborted.u.GetAnnotations()
	if ann[kinds.AnnotationRolledBackFor] != "inc-abort" || ann[kinds.AnnotationRolledBackFrom] != "2" || ann[kinds.AnnotationRolledBackTo] != "1" {
		t.Errorf("record annotations = %v", ann)
	}

	again, err := f.act.Rollback(ctx, f.request("web", "inc-abort"), 2, 1)
	if err != nil || again.Outcome != OutcomeNoop || !again.Resumed {
		t.Errorf("second Rollback = %+v, %v; want a resumed no-op", again, err)
	}
	// Aborted, the Rollout is at its stable revision.
	if _, err := f.act.Rollback(ctx, f.request("web", "inc-other"), 2, 1); !errors.Is(err, ErrChanged) {
		t.Errorf("Rollback of another incident after the abort = %v, want %v", err, ErrChanged)
	}
}

// After promotion the Rollout is undone as `kubectl argo rollouts undo`
// does: the earlier ReplicaSet's template, without its hash label, and the
// controller rolls it out. Once; the Rollout has moved on afterwards.
func TestRolloutPromotedIsUndone(t *testing.T) {
	f := newRolloutFixture(t)
	ctx := t.Context()
	first := f.rollout(t, "api", "api:v1", "[{setWeight: 50}]")
	f.setImage(t, "api", "api:v2")
	promoted := f.waitRollout(t, "api", "Healthy at revision 2", func(v rolloutView) bool {
		return v.phase == "Healthy" && v.revision == "2" && v.stable == v.current && v.stable != first.stable &&
			len(v.replicas) == 1 && v.ready[v.stable] == 3
	})

	res, err := f.act.Rollback(ctx, f.request("api", "inc-undo"), 2, 1)
	if err != nil {
		t.Fatalf("Rollback: %v", err)
	}
	if res.Outcome != OutcomeApplied || strings.Contains(res.Message, "aborted") {
		t.Fatalf("Rollback = %+v, want an applied undo", res)
	}
	undone := f.waitRollout(t, "api", "Healthy at the first template, as revision 3", func(v rolloutView) bool {
		return v.phase == "Healthy" && v.revision == "3" && v.stable == first.stable && v.current == first.stable &&
			len(v.replicas) == 1 && v.ready[first.stable] == 3 && v.rolloutState == workload.RolloutDone
	})
	if undone.image != "api:v1" {
		t.Errorf("image after undo = %s, want api:v1", undone.image)
	}
	ad, _ := workload.For(kinds.KindRollout)
	o, err := ad.Get(ctx, f.clients, f.ns, "api")
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := o.Template().Labels[kinds.LabelRolloutPodTemplateHash]; ok {
		t.Errorf("undo wrote the ReplicaSet's hash label into the template: %v", o.Template().Labels)
	}
	if ann := o.Meta().Annotations; ann[kinds.AnnotationRolledBackFor] != "inc-undo" || ann[kinds.AnnotationRolledBackFrom] != "2" {
		t.Errorf("record annotations = %v", ann)
	}
	if undone.generation != promoted.generation+1 {
		t.Errorf("generation %d after undo, want one write after %d", undone.generation, promoted.generation)
	}

	again, err := f.act.Rollback(ctx, f.request("api", "inc-undo"), 2, 1)
	if err != nil || again.Outcome != OutcomeNoop || !again.Resumed {
		t.Errorf("second Rollback = %+v, %v; want a resumed no-op", again, err)
	}
	if _, err := f.act.Rollback(ctx, f.request("api", "inc-other"), 2, 1); !errors.Is(err, ErrChanged) || FailureReason(err) != ReasonChanged {
		t.Errorf("Rollback of another incident at revision 3 = %v, want %v", err, ErrChanged)
	}
}

// A Rollout is reached through a dynamic client; a plain clientset gets a
// precise error, not a panic.
func TestRolloutNeedsDynamicClient(t *testing.T) {
	f := newRollbackFixture(t)
	_, err := f.act.Rollback(t.Context(), f.request(policy.KindRollout, "web", "inc"), 2, 1)
	if !errors.Is(err, workload.ErrNoDynamicClient) {
		t.Fatalf("Rollback with a clientset = %v, want %v", err, workload.ErrNoDynamicClient)
	}
}
