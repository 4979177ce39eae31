package actuator

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apiequality "k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/scheme"
	typedcorev1 "k8s.io/client-go/kubernetes/typed/core/v1"
	"k8s.io/client-go/tools/record"
	"k8s.io/client-go/util/retry"

	"github.com/autorollbackd/autorollbackd/internal/kinds"
	"github.com/autorollbackd/autorollbackd/internal/kubeclient"
	"github.com/autorollbackd/autorollbackd/internal/policy"
	"github.com/autorollbackd/autorollbackd/internal/testenv"
	"github.com/autorollbackd/autorollbackd/internal/workload"
)

type rollbackFixture struct {
	c   *testenv.Cluster
	ns  string
	reg *prometheus.Registry
	act *Actuator
}

func newRollbackFixture(t *testing.T) *rollbackFixture {
	t.Helper()
	c := testenv.Require(t)
	f := &rollbackFixture{c: c, ns: c.Namespace(t)}
	f.act, f.reg = newRollbackActuator(t, c.Client)
	return f
}

// newRollbackActuator returns an Actuator whose Events reach the API server
// through the admin client, whatever client it acts with.
func newRollbackActuator(t *testing.T, client kubeclient.Interface) (*Actuator, *prometheus.Registry) {
	t.Helper()
	return newCachedActuator(t, client, nil)
}

// newCachedActuator is newRollbackActuator with a Cache; nil means none.
func newCachedActuator(t *testing.T, client kubeclient.Interface, cache Cache) (*Actuator, *prometheus.Registry) {
	t.Helper()
	c := testenv.Require(t)
	b := record.NewBroadcaster()
	b.StartRecordingToSink(&typedcorev1.EventSinkImpl{Interface: c.Client.CoreV1().Events("")})
	t.Cleanup(b.Shutdown)
	reg := prometheus.NewRegistry()
	a, err := New(Options{
		Client:   client,
		Recorder: b.NewRecorder(scheme.Scheme, corev1.EventSource{Component: "autorollbackd"}),
		Logger:   slog.New(slog.NewTextHandler(io.Discard, nil)),
		Registry: reg,
		Cache:    cache,
	})
	if err != nil {
		t.Fatal(err)
	}
	return a, reg
}

func podTemplate(app, image string) corev1.PodTemplateSpec {
	return corev1.PodTemplateSpec{
		ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{"app": app}, Annotations: map[string]string{"team": "events"}},
		Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "app", Image: image, Env: []corev1.EnvVar{{Name: "MODE", Value: image}}}}},
	}
}

// deployment creates a Deployment and rolls it out to each image in turn,
// waiting for every revision.
func (f *rollbackFixture) deployment(t *testing.T, name string, images ...string) {
	t.Helper()
	ctx := context.Background()
	replicas := int32(2)
	d := &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: f.ns, Annotations: map[string]string{"owner": "events-team"}},
		Spec: appsv1.DeploymentSpec{
			Replicas: &replicas,
			Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": name}},
			Template: podTemplate(name, images[0]),
		},
	}
	d.Annotations[kinds.AnnotationChangeCause] = "deploy " + images[0]
	api := f.c.Client.AppsV1().Deployments(f.ns)
	if _, err := api.Create(ctx, d, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	f.waitDeployment(t, name, 1)
	for i, image := range images[1:] {
		f.setDeploymentImage(t, name, image)
		f.waitDeployment(t, name, int64(i+2))
	}
}

func (f *rollbackFixture) setDeploymentImage(t *testing.T, name, image string) {
	t.Helper()
	ctx := context.Background()
	api := f.c.Client.AppsV1().Deployments(f.ns)
	err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
		live, err := api.Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return err
		}
		live.Spec.Template = podTemplate(name, image)
		live.Annotations[kinds.AnnotationChangeCause] = "deploy " + image
		_, err = api.Update(ctx, live, metav1.UpdateOptions{})
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
}

// waitDeployment waits until the controller has observed the spec and
// numbered it.
func (f *rollbackFixture) waitDeployment(t *testing.T, name string, revision int64) *appsv1.Deployment {
	t.Helper()
	var d *appsv1.Deployment
	testenv.Eventually(t, 30*time.Second, fmt.Sprintf("deployment %s at revision %d", name, revision), func(ctx context.Context) (bool, string) {
		var err error
		d, err = f.c.Client.AppsV1().Deployments(f.ns).Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return false, err.Error()
		}
		return d.Status.ObservedGeneration >= d.Generation && d.Annotations[kinds.AnnotationDeploymentRevision] == fmt.Sprint(revision),
			fmt.Sprintf("generation %d observed %d revision %s", d.Generation, d.Status.ObservedGeneration, d.Annotations[kinds.AnnotationDeploymentRevision])
	})
	return d
}

func (f *rollbackFixture) request(kind policy.Kind, name, incident string) Request {
	return Request{
		Target:      policy.Ref{Kind: kind, Namespace: f.ns, Name: name},
		Incident:    incident,
		Fingerprint: "fp-" + incident,
		Why:         "alert EventServiceDown (service_down)",
	}
}

// ours are the annotations autorollbackd adds on purpose; everything else
// must equal what kubectl produces.
var ours = []string{kinds.AnnotationRolledBackFrom, kinds.AnnotationRolledBackTo, kinds.AnnotationRolledBackAt, kinds.AnnotationFingerprint, kinds.AnnotationRolledBackFor, kinds.AnnotationChangeCause}

func withoutOurs(m map[string]string) map[string]string {
	out := maps.Clone(m)
	for _, k := range ours {
		delete(out, k)
	}
	return out
}

func (f *rollbackFixture) kubectl(t *testing.T, args ...string) {
	t.Helper()
	if out, err := f.c.Kubectl(context.Background(), append(args, "-n", f.ns)...); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
}

func (f *rollbackFixture) waitEvent(t *testing.T, object, reason string) corev1.Event {
	t.Helper()
	var found corev1.Event
	testenv.Eventually(t, 30*time.Second, fmt.Sprintf("event %s on %s", reason, object), func(ctx context.Context) (bool, string) {
		list, err := f.c.Client.CoreV1().Events(f.ns).List(ctx, metav1.ListOptions{})
		if err != nil {
			return false, err.Error()
		}
		var seen []string
		for _, e := range list.Items {
			seen = append(seen, e.InvolvedObject.Name+"/"+e.Reason)
			if e.InvolvedObject.Name == object && e.Reason == reason {
				found = e
				return true, ""
			}
		}
		return false, strings.Join(seen, ", ")
	})
	return found
}

func TestDeploymentUndoEqualsKubectl(t *testing.T) {
	t.Run("live", func(t *testing.T) { testDeploymentUndoEqualsKubectl(t, false) })
	// From a fresh informer cache the rollback skips its reads; the result
	// must not change.
	t.Run("informer cache", func(t *testing.T) { testDeploymentUndoEqualsKubectl(t, true) })
}

func testDeploymentUndoEqualsKubectl(t *testing.T, cached bool) {
	f := newRollbackFixture(t)
	var cache InformerCache
	if cached {
		cache = f.informerCache(t)
		f.act, f.reg = newCachedActuator(t, f.c.Client, cache)
	}
	f.deployment(t, "twin-kubectl", "event-service:v1", "event-service:v2-bad")
	f.deployment(t, "twin-ard", "event-service:v1", "event-service:v2-bad")
	if cached {
		f.waitCached(t, cache, "twin-ard", 2)
	}

	f.kubectl(t, "rollout", "undo", "deployment/twin-kubectl")
	res, err := f.act.Rollback(context.Background(), f.request(policy.KindDeployment, "twin-ard", "inc-1"), 2, 1)
	if err != nil {
		t.Fatal(err)
	}
	if res.Outcome != OutcomeApplied || res.From != 2 || res.To != 1 {
		t.Fatalf("result = %+v", res)
	}
	want := f.waitDeployment(t, "twin-kubectl", 3)
	got := f.waitDeployment(t, "twin-ard", 3)

	wantTemplate, gotTemplate := want.Spec.Template.DeepCopy(), got.Spec.Template.DeepCopy()
	gotTemplate.Labels["app"], gotTemplate.Spec.Containers[0].Env = wantTemplate.Labels["app"], wantTemplate.Spec.Containers[0].Env
	if !apiequality.Semantic.DeepEqual(wantTemplate, gotTemplate) {
		t.Errorf("pod template differs from kubectl's:\nkubectl: %+v\nours:    %+v", wantTemplate, gotTemplate)
	}
	if got.Spec.Template.Spec.Containers[0].Image != "event-service:v1" {
		t.Errorf("image = %s, want event-service:v1", got.Spec.Template.Spec.Containers[0].Image)
	}
	if w, g := withoutOurs(want.Annotations), withoutOurs(got.Annotations); !maps.Equal(w, g) {
		t.Errorf("annotations differ from kubectl's:\nkubectl: %v\nours:    %v", w, g)
	}
	for k, v := range map[string]string{
		kinds.AnnotationRolledBackFrom: "2", kinds.AnnotationRolledBackTo: "1", kinds.AnnotationRolledBackFor: "inc-1", kinds.AnnotationFingerprint: "fp-inc-1",
		kinds.AnnotationChangeCause: "autorollbackd: rolled back from revision 2 to 1: alert EventServiceDown (service_down)",
	} {
		if got.Annotations[k] != v {
			t.Errorf("annotation %s = %q, want %q", k, got.Annotations[k], v)
		}
	}
	if _, err := time.Parse(time.RFC3339, got.Annotations[kinds.AnnotationRolledBackAt]); err != nil {
		t.Errorf("annotation %s: %v", kinds.AnnotationRolledBackAt, err)
	}
	e := f.waitEvent(t, "twin-ard", EventRollback)
	if e.Type != corev1.EventTypeNormal || !strings.Contains(e.Message, "rolled back from revision 2 to 1") {
		t.Errorf("event = %s %q", e.Type, e.Message)
	}
	if v := testutil.ToFloat64(f.act.actions.WithLabelValues("rollback", "applied", "false")); v != 1 {
		t.Errorf("actions_total{rollback,applied} = %v, want 1", v)
	}
}

// historied creates a StatefulSet or DaemonSet and rolls it to each image.
func (f *rollbackFixture) historied(t *testing.T, kind policy.Kind, name string, images ...string) {
	t.Helper()
	ctx := context.Background()
	sel := &metav1.LabelSelector{MatchLabels: map[string]string{"app": name}}
	var err error
	switch kind {
	case policy.KindStatefulSet:
		replicas := int32(1)
		_, err = f.c.Client.AppsV1().StatefulSets(f.ns).Create(ctx, &appsv1.StatefulSet{
			ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: f.ns},
			Spec:       appsv1.StatefulSetSpec{Replicas: &replicas, Selector: sel, Template: podTemplate(name, images[0])},
		}, metav1.CreateOptions{})
	case policy.KindDaemonSet:
		_, err = f.c.Client.AppsV1().DaemonSets(f.ns).Create(ctx, &appsv1.DaemonSet{
			ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: f.ns},
			Spec:       appsv1.DaemonSetSpec{Selector: sel, Template: podTemplate(name, images[0])},
		}, metav1.CreateOptions{})
	}
	if err != nil {
		t.Fatal(err)
	}
	f.waitHistory(t, kind, name, 1)
	for i, image := range images[1:] {
		patch := fmt.Sprintf(`{"spec":{"template":{"spec":{"containers":[{"name":"app","image":%q}]}}}}`, image)
		if kind == policy.KindStatefulSet {
			_, err = f.c.Client.AppsV1().StatefulSets(f.ns).Patch(ctx, name, types.StrategicMergePatchType, []byte(patch), metav1.PatchOptions{})
		} else {
			_, err = f.c.Client.AppsV1().DaemonSets(f.ns).Patch(ctx, name, types.StrategicMergePatchType, []byte(patch), metav1.PatchOptions{})
		}
		if err != nil {
			t.Fatal(err)
		}
		f.waitHistory(t, kind, name, int64(i+2))
	}
}

// waitHistory waits until the workload's newest ControllerRevision is
// `revision` and the controller has observed the spec, and returns the
// workload's pod template.
func (f *rollbackFixture) waitHistory(t *testing.T, kind policy.Kind, name string, revision int64) corev1.PodTemplateSpec {
	t.Helper()
	var template corev1.PodTemplateSpec
	testenv.Eventually(t, 30*time.Second, fmt.Sprintf("%s %s at revision %d", kind, name, revision), func(ctx context.Context) (bool, string) {
		var (
			obj      metav1.Object
			observed bool
		)
		if kind == policy.KindStatefulSet {
			s, err := f.c.Client.AppsV1().StatefulSets(f.ns).Get(ctx, name, metav1.GetOptions{})
			if err != nil {
				return false, err.Error()
			}
			obj, template, observed = s, s.Spec.Template, s.Status.ObservedGeneration >= s.Generation
		} else {
			ds, err := f.c.Client.AppsV1().DaemonSets(f.ns).Get(ctx, name, metav1.GetOptions{})
			if err != nil {
				return false, err.Error()
			}
			obj, template, observed = ds, ds.Spec.Template, ds.Status.ObservedGeneration >= ds.Generation
		}
		crs, err := f.c.Client.AppsV1().ControllerRevisions(f.ns).List(ctx, metav1.ListOptions{LabelSelector: "app=" + name})
		if err != nil {
			return false, err.Error()
		}
		var newest int64
		for _, cr := range crs.Items {
			if metav1.IsControlledBy(&cr, obj) {
				newest = max(newest, cr.Revision)
			}
		}
		return observed && newest == revision, fmt.Sprintf("observed %v, newest revision %d", observed, newest)
	})
	return template
}

func TestHistoriedUndoEqualsKubectl(t *testing.T) {
	for _, kind := range []policy.Kind{policy.KindStatefulSet, policy.KindDaemonSet} {
		t.Run(string(kind), func(t *testing.T) {
			f := newRollbackFixture(t)
			resource := strings.ToLower(string(kind))
			f.historied(t, kind, "twin-kubectl", "agent:v1", "agent:v2-bad")
			f.historied(t, kind, "twin-ard", "agent:v1", "agent:v2-bad")

			f.kubectl(t, "rollout", "undo", resource+"/twin-kubectl")
			res, err := f.act.Rollback(context.Background(), f.request(kind, "twin-ard", "inc-h"), 2, 1)
			if err != nil {
				t.Fatal(err)
			}
			if res.Outcome != OutcomeApplied {
				t.Fatalf("result = %+v", res)
			}
			want := f.waitHistory(t, kind, "twin-kubectl", 3)
			got := f.waitHistory(t, kind, "twin-ard", 3)
			got.Labels["app"], got.Spec.Containers[0].Env = want.Labels["app"], want.Spec.Containers[0].Env
			if !apiequality.Semantic.DeepEqual(want, got) {
				t.Errorf("pod template differs from kubectl's:\nkubectl: %+v\nours:    %+v", want, got)
			}
			if got.Spec.Containers[0].Image != "agent:v1" {
				t.Errorf("image = %s, want agent:v1", got.Spec.Containers[0].Image)
			}
			// A repeat for the same incident is recognised from the workload.
			again, err := f.act.Rollback(context.Background(), f.request(kind, "twin-ard", "inc-h"), 2, 1)
			if err != nil || again.Outcome != OutcomeNoop || !again.Resumed {
				t.Fatalf("repeat = %+v, %v; want a resumed no-op", again, err)
			}
			f.waitEvent(t, "twin-ard", EventRollback)
		})
	}
}

func TestPinnedTargetNeverReturnsToBadRevision(t *testing.T) {
	f := newRollbackFixture(t)
	f.deployment(t, "pinned", "event-service:v1", "event-service:v2-bad")
	ctx := context.Background()
	if _, err := f.act.Rollback(ctx, f.request(policy.KindDeployment, "pinned", "inc-p"), 2, 1); err != nil {
		t.Fatal(err)
	}
	f.waitDeployment(t, "pinned", 3)

	// The same action again, from a restarted daemon: a no-op recognised
	// from the workload's own record.
	restarted, _ := newRollbackActuator(t, f.c.Client)
	res, err := restarted.Rollback(ctx, f.request(policy.KindDeployment, "pinned", "inc-p"), 2, 1)
	if err != nil || res.Outcome != OutcomeNoop || !res.Resumed {
		t.Fatalf("repeat after restart = %+v, %v; want a resumed no-op", res, err)
	}
	// A duplicate alert treated as a new incident with the same pinned
	// revisions: the workload is no longer at revision 2, so nothing moves.
	// A plain second `kubectl rollout undo` would have gone back to v2-bad.
	_, err = f.act.Rollback(ctx, f.request(policy.KindDeployment, "pinned", "inc-other"), 2, 1)
	if !errors.Is(err, ErrChanged) {
		t.Fatalf("second incident = %v, want ErrChanged", err)
	}
	d := f.waitDeployment(t, "pinned", 3)
	if img := d.Spec.Template.Spec.Containers[0].Image; img != "event-service:v1" {
		t.Fatalf("image = %s, want the last good event-service:v1", img)
	}
}

func TestConcurrentHumanRolloutIsNotOverwritten(t *testing.T) {
	f := newRollbackFixture(t)
	f.deployment(t, "raced", "event-service:v1", "event-service:v2-bad")
	// Between the decision (about revision 2) and the write, a person rolls
	// out a fix.
	f.setDeploymentImage(t, "raced", "event-service:v3-fix")
	f.waitDeployment(t, "raced", 3)
	_, err := f.act.Rollback(context.Background(), f.request(policy.KindDeployment, "raced", "inc-r"), 2, 1)
	if !errors.Is(err, ErrChanged) {
		t.Fatalf("Rollback = %v, want ErrChanged", err)
	}
	d := f.waitDeployment(t, "raced", 3)
	if img := d.Spec.Template.Spec.Containers[0].Image; img != "event-service:v3-fix" {
		t.Fatalf("image = %s: the person's rollout was overwritten", img)
	}
	f.waitEvent(t, "raced", EventRollbackFailed)
}

// TestRollbackPatchTestsWhatItWasPlannedOn writes rollback patches planned
// on a read of the workload after others wrote it. A label write neither
// fails the patch nor is lost to it; a new rollout fails it whole, and the
// failure reads as a Conflict; a refusal of the patch itself, with the
// workload as it was read, stays what it is.
func TestRollbackPatchTestsWhatItWasPlannedOn(t *testing.T) {
	f := newRollbackFixture(t)
	ctx := context.Background()
	api := f.c.Client.AppsV1().Deployments(f.ns)
	liveMeta := func(name string) func(context.Context) (*metav1.ObjectMeta, error) {
		return func(ctx context.Context) (*metav1.ObjectMeta, error) {
			d, err := api.Get(ctx, name, metav1.GetOptions{})
			if err != nil {
				return nil, err
			}
			return &d.ObjectMeta, nil
		}
	}
	// plan reads the Deployment at revision 2 and plans its rollback to 1;
	// edit, if set, changes the template of revision 1 first.
	plan := func(t *testing.T, name string, edit func(*corev1.PodTemplateSpec)) (*appsv1.Deployment, []byte) {
		t.Helper()
		f.waitDeployment(t, name, 2)
		o, patch := f.planUndo(t, policy.KindDeployment, name, func(rev workload.Revision) {
			if edit != nil {
				edit(&rev.Object.(*appsv1.ReplicaSet).Spec.Template)
			}
		})
		return o.Runtime().(*appsv1.Deployment), patch
	}

	t.Run("a label written after the read", func(t *testing.T) {
		f.deployment(t, "unrelated", "event-service:v1", "event-service:v2-bad")
		_, patch := plan(t, "unrelated", nil)
		if _, err := api.Patch(ctx, "unrelated", types.MergePatchType, []byte(`{"metadata":{"labels":{"touched":"yes"}}}`), metav1.PatchOptions{}); err != nil {
			t.Fatal(err)
		}
		if _, err := api.Patch(ctx, "unrelated", types.JSONPatchType, patch, metav1.PatchOptions{}); err != nil {
			t.Fatalf("rollback patch after a label write = %v, want it applied", err)
		}
		d := f.waitDeployment(t, "unrelated", 3)
		if img := d.Spec.Template.Spec.Containers[0].Image; img != "event-service:v1" {
			t.Errorf("image = %s, want event-service:v1", img)
		}
		if d.Labels["touched"] != "yes" || d.Annotations[kinds.AnnotationRolledBackFrom] != "2" {
			t.Errorf("labels %v annotations %v: want the other writer's label kept beside the rollback's record", d.Labels, d.Annotations)
		}
	})

	t.Run("a new rollout after the read", func(t *testing.T) {
		f.deployment(t, "rollout", "event-service:v1", "event-service:v2-bad")
		read, patch := plan(t, "rollout", nil)
		f.setDeploymentImage(t, "rollout", "event-service:v3-person")
		_, err := api.Patch(ctx, "rollout", types.JSONPatchType, patch, metav1.PatchOptions{})
		if !apierrors.IsInvalid(err) {
			t.Fatalf("rollback patch after a new rollout = %v, want the API server to refuse its tests", err)
		}
		err = preconditionOf(&read.ObjectMeta, kinds.AnnotationDeploymentRevision).rejected(ctx, err, deploymentsResource, "rollout", kinds.AnnotationDeploymentRevision, liveMeta("rollout"))
		if !apierrors.IsConflict(err) {
			t.Errorf("refusal = %v, want a Conflict", err)
		}
		d := f.waitDeployment(t, "rollout", 3)
		if img := d.Spec.Template.Spec.Containers[0].Image; img != "event-service:v3-person" || d.Annotations[kinds.AnnotationRolledBackFrom] != "" {
			t.Errorf("image %s, annotations %v: want the person's rollout untouched", img, d.Annotations)
		}
	})

	t.Run("a refused patch of an unchanged workload", func(t *testing.T) {
		f.deployment(t, "invalid", "event-service:v1", "event-service:v2-bad")
		read, patch := plan(t, "invalid", func(tpl *corev1.PodTemplateSpec) { tpl.Spec.Containers[0].Name = "" })
		_, err := api.Patch(ctx, "invalid", types.JSONPatchType, patch, metav1.PatchOptions{})
		if !apierrors.IsInvalid(err) {
			t.Fatalf("patch with a nameless container = %v, want Invalid", err)
		}
		err = preconditionOf(&read.ObjectMeta, kinds.AnnotationDeploymentRevision).rejected(ctx, err, deploymentsResource, "invalid", kinds.AnnotationDeploymentRevision, liveMeta("invalid"))
		if !apierrors.IsInvalid(err) || apierrors.IsConflict(err) {
			t.Errorf("refusal = %v, want it returned as Invalid", err)
		}
	})

	for _, kind := range []policy.Kind{policy.KindStatefulSet, policy.KindDaemonSet} {
		t.Run(string(kind), func(t *testing.T) {
			name := strings.ToLower(string(kind))
			f.historied(t, kind, name, "agent:v1", "agent:v2-bad")
			ad, err := workload.For(kind)
			if err != nil {
				t.Fatal(err)
			}
			gr, live := ad.Resource(), liveMetaOf(f.c.Client, ad, f.ns, name)
			patch := func(ctx context.Context, body []byte, opts metav1.PatchOptions) error {
				_, err := ad.Patch(ctx, f.c.Client, f.ns, name, types.JSONPatchType, body, opts)
				return err
			}
			planned := func() ([]byte, *metav1.ObjectMeta) {
				o, body := f.planUndo(t, kind, name, nil)
				return body, o.Meta()
			}
			// A label written after the read does not fail the patch.
			body, read := planned()
			label := types.MergePatchType
			meta := []byte(`{"metadata":{"labels":{"touched":"yes"}}}`)
			if kind == policy.KindStatefulSet {
				_, err = f.c.Client.AppsV1().StatefulSets(f.ns).Patch(ctx, name, label, meta, metav1.PatchOptions{})
			} else {
				_, err = f.c.Client.AppsV1().DaemonSets(f.ns).Patch(ctx, name, label, meta, metav1.PatchOptions{})
			}
			if err != nil {
				t.Fatal(err)
			}
			if err := patch(ctx, body, metav1.PatchOptions{}); err != nil {
				t.Fatalf("rollback patch after a label write = %v, want it applied", err)
			}
			if got := f.waitHistory(t, kind, name, 3); got.Spec.Containers[0].Image != "agent:v1" {
				t.Errorf("image = %s, want agent:v1", got.Spec.Containers[0].Image)
			}
			// The same patch again, as from a twin that planned on the
			// same read, fails whole: the first one changed the spec.
			err = patch(ctx, body, metav1.PatchOptions{})
			if !apierrors.IsInvalid(err) {
				t.Fatalf("stale rollback patch = %v, want the API server to refuse its tests", err)
			}
			if err := preconditionOf(read, "").rejected(ctx, err, gr, name, "", live); !apierrors.IsConflict(err) {
				t.Errorf("refusal = %v, want a Conflict", err)
			}
		})
	}
}

func TestDryRunChangesNothing(t *testing.T) {
	f := newRollbackFixture(t)
	f.deployment(t, "dry", "event-service:v1", "event-service:v2-bad")
	before := f.waitDeployment(t, "dry", 2)
	req := f.request(policy.KindDeployment, "dry", "inc-d")
	req.DryRun = true
	res, err := f.act.Rollback(context.Background(), req, 2, 1)
	if err != nil || res.Outcome != OutcomeDryRun {
		t.Fatalf("dry run = %+v, %v", res, err)
	}
	after, err := f.c.Client.AppsV1().Deployments(f.ns).Get(context.Background(), "dry", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	// The controller keeps writing status, so compare what a rollback would
	// change: the spec (its generation) and the annotations.
	if after.Generation != before.Generation || !maps.Equal(after.Annotations, before.Annotations) ||
		after.Spec.Template.Spec.Containers[0].Image != "event-service:v2-bad" {
		t.Fatalf("dry run changed the deployment: generation %d -> %d, annotations %v -> %v, image %s",
			before.Generation, after.Generation, before.Annotations, after.Annotations, after.Spec.Template.Spec.Containers[0].Image)
	}
	if v := testutil.ToFloat64(f.act.actions.WithLabelValues("rollback", "applied", "true")); v != 1 {
		t.Errorf("actions_total{rollback,applied,dry_run=true} = %v, want 1", v)
	}
}

// restricted returns a client acting as a service account that may only read
// deployments and replicasets in the fixture's namespace.
func (f *rollbackFixture) restricted(t *testing.T) kubernetes.Interface {
	t.Helper()
	ctx := context.Background()
	rbac := f.c.Client.RbacV1()
	if _, err := rbac.Roles(f.ns).Create(ctx, &rbacv1.Role{
		ObjectMeta: metav1.ObjectMeta{Name: "read-only"},
		Rules:      []rbacv1.PolicyRule{{APIGroups: []string{"apps"}, Resources: []string{"deployments", "replicasets"}, Verbs: []string{"get", "list"}}},
	}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := rbac.RoleBindings(f.ns).Create(ctx, &rbacv1.RoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: "read-only"},
		RoleRef:    rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "Role", Name: "read-only"},
		Subjects:   []rbacv1.Subject{{Kind: "ServiceAccount", Name: "reader", Namespace: f.ns}},
	}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	rc := *f.c.REST
	rc.Impersonate.UserName = "system:serviceaccount:" + f.ns + ":reader"
	cs, err := kubernetes.NewForConfig(&rc)
	if err != nil {
		t.Fatal(err)
	}
	return cs
}

func TestFailurePaths(t *testing.T) {
	f := newRollbackFixture(t)
	f.deployment(t, "fails", "event-service:v1", "event-service:v2-bad")
	ctx := context.Background()
	paused := func(t *testing.T) {
		_, err := f.c.Client.AppsV1().Deployments(f.ns).Patch(ctx, "fails", types.MergePatchType, []byte(`{"spec":{"paused":true}}`), metav1.PatchOptions{})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			_, _ = f.c.Client.AppsV1().Deployments(f.ns).Patch(ctx, "fails", types.MergePatchType, []byte(`{"spec":{"paused":false}}`), metav1.PatchOptions{})
		})
	}
	for _, tc := range []struct {
		name     string
		target   string
		to       int64
		setup    func(t *testing.T)
		client   func(t *testing.T) kubernetes.Interface
		reason   Reason
		match    func(error) bool
		hasEvent bool
	}{
		{name: "not found", target: "missing", to: 1, reason: "not_found", match: apierrors.IsNotFound},
		{name: "no history", target: "fails", to: 7, reason: "no_history", match: func(err error) bool { return errors.Is(err, ErrNoHistory) }, hasEvent: true},
		{name: "paused", target: "fails", to: 1, setup: paused, reason: "paused", match: func(err error) bool { return errors.Is(err, ErrPaused) }, hasEvent: true},
		{name: "forbidden", target: "fails", to: 1, client: f.restricted, reason: "forbidden", match: apierrors.IsForbidden, hasEvent: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.setup != nil {
				tc.setup(t)
			}
			act, _ := f.act, f.reg
			if tc.client != nil {
				act, _ = newRollbackActuator(t, tc.client(t))
			}
			before := testutil.ToFloat64(act.actions.WithLabelValues("rollback", "failed", "false"))
			_, err := act.Rollback(ctx, f.request(policy.KindDeployment, tc.target, "inc-"+tc.name), 2, tc.to)
			if err == nil || !tc.match(err) {
				t.Fatalf("Rollback = %v, want a %s error", err, tc.reason)
			}
			if got := FailureReason(err); got != tc.reason {
				t.Errorf("FailureReason = %s, want %s (%v)", got, tc.reason, err)
			}
			if got := testutil.ToFloat64(act.actions.WithLabelValues("rollback", "failed", "false")); got != before+1 {
				t.Errorf("actions_total{rollback,failed} = %v, want %v", got, before+1)
			}
			if tc.hasEvent {
				e := f.waitEvent(t, tc.target, EventRollbackFailed)
				if e.Type != corev1.EventTypeWarning {
					t.Errorf("event type = %s", e.Type)
				}
			}
			d, err := f.c.Client.AppsV1().Deployments(f.ns).Get(ctx, "fails", metav1.GetOptions{})
			if err != nil {
				t.Fatal(err)
			}
			if img := d.Spec.Template.Spec.Containers[0].Image; img != "event-service:v2-bad" {
				t.Fatalf("a failed rollback changed the image to %s", img)
			}
		})
	}
}

var _ runtime.Object = (*appsv1.Deployment)(nil)

// TestOlderRevision is the runbook's "If Still Down": after the rollback to
// the last known good (2) did not help, go back to the one before it (1),
// pinned at decision time, from the revision the first rollback produced.
func TestOlderRevision(t *testing.T) {
	f := newRollbackFixture(t)
	f.deployment(t, "older", "event-service:v1", "event-service:v2", "event-service:v3-bad")
	ctx := context.Background()
	if _, err := f.act.Rollback(ctx, f.request(policy.KindDeployment, "older", "inc-o"), 3, 2); err != nil {
		t.Fatal(err)
	}
	f.waitDeployment(t, "older", 4)
	res, err := f.act.Rollback(ctx, f.request(policy.KindDeployment, "older", "inc-o"), 4, 1)
	if err != nil || res.Outcome != OutcomeApplied {
		t.Fatalf("N-2 rollback = %+v, %v", res, err)
	}
	d := f.waitDeployment(t, "older", 5)
	if img := d.Spec.Template.Spec.Containers[0].Image; img != "event-service:v1" {
		t.Fatalf("image = %s, want event-service:v1", img)
	}
	if d.Annotations[kinds.AnnotationRolledBackFrom] != "4" || d.Annotations[kinds.AnnotationRolledBackTo] != "1" {
		t.Errorf("recorded from %s to %s, want 4 to 1", d.Annotations[kinds.AnnotationRolledBackFrom], d.Annotations[kinds.AnnotationRolledBackTo])
	}
	// Nothing older is left: asking for it fails, it never wraps around.
	_, err = f.act.Rollback(ctx, f.request(policy.KindDeployment, "older", "inc-o2"), 5, 0)
	if !errors.Is(err, ErrNoHistory) {
		t.Fatalf("rollback past the oldest revision = %v, want ErrNoHistory", err)
	}
}

// planUndo reads the named workload live and plans its rollback from
// revision 2 to 1 as Rollback does; edit, if set, changes revision 1 first.
func (f *rollbackFixture) planUndo(t *testing.T, kind policy.Kind, name string, edit func(workload.Revision)) (workload.Object, []byte) {
	t.Helper()
	ctx := t.Context()
	ad, err := workload.For(kind)
	if err != nil {
		t.Fatal(err)
	}
	o, err := ad.Get(ctx, f.c.Client, f.ns, name)
	if err != nil {
		t.Fatal(err)
	}
	history, err := ad.History(ctx, f.c.Client, o)
	if err != nil {
		t.Fatal(err)
	}
	target, ok := workload.Numbered(history, 1)
	if !ok {
		t.Fatalf("no %s of revision 1", ad.HistoryKind())
	}
	if edit != nil {
		edit(target)
	}
	template, _, err := o.UndoTemplate(target)
	if err != nil {
		t.Fatal(err)
	}
	patch, err := undoPatch(o, target, template, f.act.recordAnnotations(f.request(kind, name, "inc-"+name), 2, 1))
	if err != nil {
		t.Fatal(err)
	}
	return o, patch
}
