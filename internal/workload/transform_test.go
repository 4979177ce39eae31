package workload

import (
	"maps"
	"reflect"
	"strconv"
	"testing"

	"github.com/autorollbackd/autorollbackd/internal/kinds"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/tools/cache"
)

func TestTransformKeepsWhatFactsRead(t *testing.T) {
	managed := []metav1.ManagedFieldsEntry{{Manager: "kubectl", Operation: metav1.ManagedFieldsOperationUpdate}}
	owner := []metav1.OwnerReference{{Kind: "StatefulSet", Name: "db", UID: "u1", Controller: new(true)}}
	cr := &appsv1.ControllerRevision{
		ObjectMeta: metav1.ObjectMeta{Name: "db-1", Namespace: "ns", ManagedFields: managed, OwnerReferences: owner, Labels: map[string]string{"app": "db"}},
		Revision:   3,
		Data:       runtime.RawExtension{Raw: []byte(`{"spec":{"template":{}}}`)},
	}
	out, err := Transform(cr)
	if err != nil {
		t.Fatal(err)
	}
	got := out.(*appsv1.ControllerRevision)
	if got.ManagedFields != nil || got.Data.Raw != nil {
		t.Errorf("managed fields %v, data %q: want both dropped", got.ManagedFields, got.Data.Raw)
	}
	if got.Revision != 3 || got.Name != "db-1" || !metav1.IsControlledBy(got, &metav1.ObjectMeta{UID: "u1"}) || got.Labels["app"] != "db" {
		t.Errorf("kept %+v: want revision, name, owner and labels intact", got.ObjectMeta)
	}

	rs := &appsv1.ReplicaSet{ObjectMeta: metav1.ObjectMeta{Name: "web-1", ManagedFields: managed,
		Annotations: map[string]string{kinds.AnnotationDeploymentRevision: "2"}}}
	out, err = Transform(rs)
	if err != nil {
		t.Fatal(err)
	}
	if got := out.(*appsv1.ReplicaSet); got.ManagedFields != nil || got.Annotations[kinds.AnnotationDeploymentRevision] != "2" {
		t.Errorf("ReplicaSet after Transform: %+v", got.ObjectMeta)
	}

	tomb := cache.DeletedFinalStateUnknown{Key: "ns/web-1", Obj: rs}
	if out, err := Transform(tomb); err != nil || out != any(tomb) {
		t.Errorf("a deletion tombstone changed: %v, %v", out, err)
	}
}

// sameMap reports whether a and b are one map, not only equal ones.
func sameMap(a, b map[string]string) bool {
	return a != nil && reflect.ValueOf(a).UnsafePointer() == reflect.ValueOf(b).UnsafePointer()
}

func TestTransformSharesAWorkloadsEqualLabels(t *testing.T) {
	labels := func() map[string]string { return map[string]string{"app": "web", "team": "a"} }
	d := &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: "web", Labels: labels()},
		Spec: appsv1.DeploymentSpec{
			Selector: &metav1.LabelSelector{MatchLabels: labels()},
			Template: corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: labels()}},
		},
	}
	if _, err := deploymentTransform(d); err != nil {
		t.Fatal(err)
	}
	if !sameMap(d.Spec.Template.Labels, d.Spec.Selector.MatchLabels) || !sameMap(d.Labels, d.Spec.Template.Labels) {
		t.Error("equal labels of selector, template and workload are still three maps")
	}
	if !maps.Equal(d.Labels, labels()) {
		t.Errorf("labels = %v, want %v", d.Labels, labels())
	}
	// A copy owns its maps again: writing into it leaves the cache alone.
	c := d.DeepCopy()
	c.Spec.Template.Labels["pod-template-hash"] = "abc"
	if len(d.Spec.Selector.MatchLabels) != 2 || len(c.Labels) != 2 {
		t.Errorf("a write into a copy's template labels reached %v and %v", d.Spec.Selector.MatchLabels, c.Labels)
	}

	s := &appsv1.StatefulSet{
		ObjectMeta: metav1.ObjectMeta{Name: "db", Labels: map[string]string{"app": "db", "tier": "data"}},
		Spec: appsv1.StatefulSetSpec{
			Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "db"}},
			Template: corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{"app": "db"}}},
		},
	}
	if _, err := statefulSetTransform(s); err != nil {
		t.Fatal(err)
	}
	if !sameMap(s.Spec.Template.Labels, s.Spec.Selector.MatchLabels) {
		t.Error("a StatefulSet's equal selector and template labels are still two maps")
	}
	if sameMap(s.Labels, s.Spec.Template.Labels) || s.Labels["tier"] != "data" || len(s.Spec.Template.Labels) != 1 {
		t.Errorf("labels that differ were changed: own %v, template %v", s.Labels, s.Spec.Template.Labels)
	}

	// An empty selector is not made the template's.
	ds := &appsv1.DaemonSet{Spec: appsv1.DaemonSetSpec{
		Selector: &metav1.LabelSelector{MatchLabels: map[string]string{}},
		Template: corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: nil}},
	}}
	if _, err := daemonSetTransform(ds); err != nil {
		t.Fatal(err)
	}
	if ds.Spec.Template.Labels != nil {
		t.Errorf("template labels = %#v, want nil as they were", ds.Spec.Template.Labels)
	}
}

func TestReplicaSetTransformKeepsTheRevision(t *testing.T) {
	transform := ReplicaSetTransform()
	rs := func(name string, annotations map[string]string) *metav1.PartialObjectMetadata {
		return &metav1.PartialObjectMetadata{ObjectMeta: metav1.ObjectMeta{Name: name, Annotations: annotations,
			Labels: map[string]string{kinds.LabelPodTemplateHash: name}}}
	}
	trimmed := func(m *metav1.PartialObjectMetadata) *metav1.PartialObjectMetadata {
		t.Helper()
		out, err := transform(m)
		if err != nil {
			t.Fatal(err)
		}
		return out.(*metav1.PartialObjectMetadata)
	}
	a := trimmed(rs("a", map[string]string{kinds.AnnotationDeploymentRevision: "2", kinds.AnnotationDeploymentDesiredReplicas: "3", kinds.AnnotationChangeCause: "deploy v2"}))
	b := trimmed(rs("b", map[string]string{kinds.AnnotationDeploymentRevision: "2", kinds.AnnotationDeploymentMaxReplicas: "4"}))
	c := trimmed(rs("c", map[string]string{kinds.AnnotationDeploymentRevision: "3"}))
	r := trimmed(rs("r", map[string]string{kinds.AnnotationRolloutRevision: "5", "rollout.argoproj.io/desired-replicas": "1"}))
	none := trimmed(rs("none", map[string]string{kinds.AnnotationChangeCause: "x"}))

	want := map[string]string{kinds.AnnotationDeploymentRevision: "2"}
	if !maps.Equal(a.Annotations, want) || !maps.Equal(b.Annotations, want) {
		t.Errorf("annotations = %v and %v, want %v", a.Annotations, b.Annotations, want)
	}
	if !sameMap(a.Annotations, b.Annotations) {
		t.Error("two ReplicaSets of revision 2 hold two maps of it")
	}
	if !maps.Equal(c.Annotations, map[string]string{kinds.AnnotationDeploymentRevision: "3"}) || sameMap(a.Annotations, c.Annotations) {
		t.Errorf("revision 3's annotations = %v", c.Annotations)
	}
	if !maps.Equal(r.Annotations, map[string]string{kinds.AnnotationRolloutRevision: "5"}) {
		t.Errorf("an Argo Rollouts ReplicaSet's annotations = %v", r.Annotations)
	}
	if none.Annotations != nil {
		t.Errorf("annotations = %v, want none", none.Annotations)
	}
	if a.Labels[kinds.LabelPodTemplateHash] != "a" {
		t.Errorf("labels = %v, want them kept", a.Labels)
	}
	if n, ok := replicaSetNumber(b, kinds.AnnotationDeploymentRevision); !ok || n != 2 {
		t.Errorf("revision read after the transform = %d, %v", n, ok)
	}

	// Past maxSharedMaps distinct revisions, maps are still right, and
	// no longer remembered.
	for i := range maxSharedMaps + 10 {
		rev := strconv.Itoa(100 + i)
		got := trimmed(rs("x", map[string]string{kinds.AnnotationDeploymentRevision: rev}))
		if got.Annotations[kinds.AnnotationDeploymentRevision] != rev {
			t.Fatalf("revision %s: annotations %v", rev, got.Annotations)
		}
	}
	last := func() map[string]string {
		return trimmed(rs("y", map[string]string{kinds.AnnotationDeploymentRevision: strconv.Itoa(100 + maxSharedMaps + 5)})).Annotations
	}
	if sameMap(last(), last()) {
		t.Errorf("more than %d distinct maps remembered", maxSharedMaps)
	}
}
