package workload

import (
	appsv1 "k8s.io/api/apps/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/tools/cache"

	"github.com/autorollbackd/autorollbackd/internal/kinds"
)

// Transform trims what the informers keep to what the daemon reads from
// them, which matters cluster-wide, where every workload's objects are
// cached, opted in or not: managed fields (about half of an object) go
// everywhere, and a ControllerRevision keeps no data, since its revision
// number, owner and age are all the facts need (a rollback reads the
// revision's data from the API server). The objects are the cache's, never
// written to.
func Transform(obj any) (any, error) {
	if _, ok := obj.(cache.DeletedFinalStateUnknown); ok {
		return obj, nil
	}
	if m, err := meta.Accessor(obj); err == nil {
		m.SetManagedFields(nil)
	}
	if cr, ok := obj.(*appsv1.ControllerRevision); ok {
		cr.Data = runtime.RawExtension{}
	}
	return obj, nil
}

// trimReplicaSet keeps of a ReplicaSet's annotations those the daemon
// reads from its cache: its revision number, the Deployment controller's
// or Argo Rollouts'. A rollback takes the others (those kubectl copies
// onto the Deployment) from the ReplicaSet it reads by name.
func trimReplicaSet(m *metav1.PartialObjectMetadata) {
	var kept map[string]string
	for _, k := range []string{kinds.AnnotationDeploymentRevision, kinds.AnnotationRolloutRevision} {
		if v, ok := m.Annotations[k]; ok {
			if kept == nil {
				kept = map[string]string{}
			}
			kept[k] = v
		}
	}
	m.Annotations = kept
}
