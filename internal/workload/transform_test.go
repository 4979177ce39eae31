package workload

import (
	"maps"
	"slices"
	"testing"

	"github.com/autorollbackd/autorollbackd/internal/kinds"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apiequality "k8s.io/apimachinery/pkg/api/equality"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	appslisters "k8s.io/client-go/listers/apps/v1"
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

func TestWorkloadsArePackedAndReadBackWhole(t *testing.T) {
	managed := []metav1.ManagedFieldsEntry{{Manager: "kubectl", Operation: metav1.ManagedFieldsOperationUpdate}}
	replicas := int32(3)
	d := &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: "shop", UID: "u1", ResourceVersion: "42", Generation: 4, ManagedFields: managed,
			Labels:      map[string]string{"app": "web"},
			Annotations: map[string]string{kinds.AnnotationDeploymentRevision: "4", kinds.AnnotationActed: `{"incident":"inc-1"}`}},
		Spec: appsv1.DeploymentSpec{
			Replicas: &replicas,
			Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "web"}},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{"app": "web"}, Annotations: map[string]string{kinds.AnnotationTemplateRestartedAt: "now"}},
				Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "app", Image: "shop/web:v4"}}},
			},
		},
		Status: appsv1.DeploymentStatus{ObservedGeneration: 4, Replicas: 3, Conditions: []appsv1.DeploymentCondition{
			{Type: appsv1.DeploymentProgressing, Status: corev1.ConditionTrue, Reason: "NewReplicaSetAvailable", Message: "progressed"}}},
	}
	want := d.DeepCopy()
	want.ManagedFields = nil

	out, err := deploymentTransform(d)
	if err != nil {
		t.Fatal(err)
	}
	p, ok := out.(*packed)
	if !ok {
		t.Fatalf("transformed into %T, want it packed", out)
	}
	// The FIFO may transform what the watch-list's store already did.
	if again, err := deploymentTransform(p); err != nil || again != any(p) {
		t.Errorf("a packed workload transformed again: %v, %v", again, err)
	}
	tomb := cache.DeletedFinalStateUnknown{Key: "shop/web", Obj: p}
	if out, err := deploymentTransform(tomb); err != nil || out != any(tomb) {
		t.Errorf("a deletion tombstone changed: %v, %v", out, err)
	}

	indexer := cache.NewIndexer(cache.MetaNamespaceKeyFunc, workloadIndexers())
	if err := indexer.Add(p); err != nil {
		t.Fatal(err)
	}
	other, err := deploymentTransform(&appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Name: "api", Namespace: "shop"}})
	if err != nil {
		t.Fatal(err)
	}
	if err := indexer.Add(other); err != nil {
		t.Fatal(err)
	}
	u := unpacking{Indexer: indexer, unpack: unpack[appsv1.Deployment]}
	lister := appslisters.NewDeploymentLister(u)
	got, err := lister.Deployments("shop").Get("web")
	if err != nil {
		t.Fatal(err)
	}
	if !apiequality.Semantic.DeepEqual(got, want) {
		t.Errorf("read back %+v\nwant %+v", got, want)
	}
	// Each read is a copy of its own.
	got.Spec.Template.Spec.Containers[0].Image = "written"
	again, err := lister.Deployments("shop").Get("web")
	if err != nil || again.Spec.Template.Spec.Containers[0].Image != "shop/web:v4" {
		t.Errorf("a write into one read reached the next: %v, %v", again, err)
	}
	if all, err := lister.List(labels.Everything()); err != nil || len(all) != 2 {
		t.Errorf("List = %d Deployments, %v; want 2", len(all), err)
	}
	if sel, err := lister.Deployments("shop").List(labels.SelectorFromSet(labels.Set{"app": "web"})); err != nil || len(sel) != 1 || sel[0].Name != "web" {
		t.Errorf("List by label = %v, %v; want web alone", sel, err)
	}
	acted, err := u.ByIndex(actedIndex, actedValue)
	if err != nil || len(acted) != 1 || acted[0].(*appsv1.Deployment).Name != "web" {
		t.Errorf("acted index = %v, %v; want web alone", acted, err)
	}

	for _, w := range []struct {
		obj       metav1.Object
		transform cache.TransformFunc
		unpack    func(any) (any, error)
	}{
		{&appsv1.StatefulSet{ObjectMeta: metav1.ObjectMeta{Name: "db", Namespace: "shop", ManagedFields: managed}, Spec: appsv1.StatefulSetSpec{ServiceName: "db"}},
			statefulSetTransform, unpack[appsv1.StatefulSet]},
		{&appsv1.DaemonSet{ObjectMeta: metav1.ObjectMeta{Name: "agent", Namespace: "shop", ManagedFields: managed}, Spec: appsv1.DaemonSetSpec{MinReadySeconds: 5}},
			daemonSetTransform, unpack[appsv1.DaemonSet]},
	} {
		want := w.obj.(runtime.Object).DeepCopyObject().(metav1.Object)
		want.SetManagedFields(nil)
		out, err := w.transform(w.obj)
		if err != nil {
			t.Fatal(err)
		}
		back, err := w.unpack(out)
		if err != nil {
			t.Fatal(err)
		}
		if _, ok := out.(*packed); !ok || !apiequality.Semantic.DeepEqual(back, want) {
			t.Errorf("%T: packed %T, read back %+v, want %+v", w.obj, out, back, want)
		}
	}
}

func TestReplicaSetTransformKeepsTheRevision(t *testing.T) {
	controller := []metav1.OwnerReference{{APIVersion: "apps/v1", Kind: "Deployment", Name: "web", UID: "d1", Controller: new(true)}}
	rs := func(name string, annotations map[string]string) *metav1.PartialObjectMetadata {
		return &metav1.PartialObjectMetadata{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "shop", Annotations: annotations,
			Labels: map[string]string{kinds.LabelPodTemplateHash: name}, OwnerReferences: controller}}
	}
	trimmed := func(m *metav1.PartialObjectMetadata) *metav1.PartialObjectMetadata {
		t.Helper()
		out, err := replicaSetTransform(m)
		if err != nil {
			t.Fatal(err)
		}
		if p, ok := out.(*packed); !ok || p.controller != "d1" {
			t.Fatalf("transformed into %#v, want it packed with its controller", out)
		}
		back, err := unpack[metav1.PartialObjectMetadata](out)
		if err != nil {
			t.Fatal(err)
		}
		return back.(*metav1.PartialObjectMetadata)
	}
	a := trimmed(rs("a", map[string]string{kinds.AnnotationDeploymentRevision: "2", kinds.AnnotationDeploymentDesiredReplicas: "3", kinds.AnnotationChangeCause: "deploy v2"}))
	r := trimmed(rs("r", map[string]string{kinds.AnnotationRolloutRevision: "5", "rollout.argoproj.io/desired-replicas": "1"}))
	none := trimmed(rs("none", map[string]string{kinds.AnnotationChangeCause: "x"}))

	if want := map[string]string{kinds.AnnotationDeploymentRevision: "2"}; !maps.Equal(a.Annotations, want) {
		t.Errorf("annotations = %v, want %v", a.Annotations, want)
	}
	if !maps.Equal(r.Annotations, map[string]string{kinds.AnnotationRolloutRevision: "5"}) {
		t.Errorf("an Argo Rollouts ReplicaSet's annotations = %v", r.Annotations)
	}
	if none.Annotations != nil {
		t.Errorf("annotations = %v, want none", none.Annotations)
	}
	if a.Labels[kinds.LabelPodTemplateHash] != "a" || a.Namespace != "shop" || !metav1.IsControlledBy(a, &metav1.ObjectMeta{UID: "d1"}) {
		t.Errorf("read back %+v, want labels, namespace and owner kept", a.ObjectMeta)
	}
	if n, ok := replicaSetNumber(a, kinds.AnnotationDeploymentRevision); !ok || n != 2 {
		t.Errorf("revision read after the transform = %d, %v", n, ok)
	}
	b, err := replicaSetTransform(rs("b", nil))
	if err != nil {
		t.Fatal(err)
	}
	if idx, err := controllerUID(b); err != nil || !slices.Equal(idx, []string{"d1"}) {
		t.Errorf("controller index of a packed ReplicaSet = %v, %v", idx, err)
	}
}
