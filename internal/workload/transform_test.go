package workload

import (
	"testing"

	"github.com/autorollbackd/autorollbackd/internal/kinds"
	appsv1 "k8s.io/api/apps/v1"
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
