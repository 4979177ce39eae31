package workload

import (
	appsv1 "k8s.io/api/apps/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/tools/cache"
)

// Transform trims what the informers keep to what the daemon reads from
// them, which matters cluster-wide, where every workload's objects are
// cached, opted in or not: managed fields (about half of an object) go
// everywhere, and a ControllerRevision keeps no data, since its revision
// number, owner and age are all the facts need (a rollback reads the
// revision's data from the API server). Pass it to the informer factory
// with informers.WithTransform.
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
