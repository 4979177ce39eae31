package workload

import (
	"maps"
	"strings"
	"sync"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
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

// The transforms of the workloads' informers: Transform, and one map of a
// workload's equal labels (shareLabels).
var (
	deploymentTransform  = workloadTransform(func(d *appsv1.Deployment) Object { return deployment{d} })
	statefulSetTransform = workloadTransform(func(s *appsv1.StatefulSet) Object { return statefulSet{s} })
	daemonSetTransform   = workloadTransform(func(d *appsv1.DaemonSet) Object { return daemonSet{d} })
)

// workloadTransform is Transform followed by shareLabels, for the informer
// of the workloads that wrap makes Objects of.
func workloadTransform[T any](wrap func(T) Object) cache.TransformFunc {
	return func(obj any) (any, error) {
		obj, err := Transform(obj)
		if w, ok := obj.(T); ok && err == nil {
			o := wrap(w)
			shareLabels(o.Meta(), o.Selector(), o.Template())
		}
		return obj, err
	}
}

// shareLabels makes equal label maps of one workload (its selector's
// matchLabels, its pod template's labels, its own labels: often the same
// few labels three times) one map. Each map costs a few hundred bytes
// however few its entries, and a cluster-wide cache holds every workload.
func shareLabels(m *metav1.ObjectMeta, sel *metav1.LabelSelector, tmpl *corev1.PodTemplateSpec) {
	if sel != nil && len(sel.MatchLabels) > 0 && maps.Equal(tmpl.Labels, sel.MatchLabels) {
		tmpl.Labels = sel.MatchLabels
	}
	if len(tmpl.Labels) > 0 && maps.Equal(m.Labels, tmpl.Labels) {
		m.Labels = tmpl.Labels
	}
}

// replicaSetAnnotations are the annotations of a ReplicaSet the daemon
// reads from its cache: its revision number, the Deployment controller's
// or Argo Rollouts'. A rollback takes the others (those kubectl copies
// onto the Deployment) from the ReplicaSet it reads by name.
var replicaSetAnnotations = []string{kinds.AnnotationDeploymentRevision, kinds.AnnotationRolloutRevision}

// ReplicaSetTransform is Transform for the ReplicaSets' metadata: their
// annotations are trimmed to replicaSetAnnotations, and ReplicaSets with
// the same revision number share one map of them.
func ReplicaSetTransform() cache.TransformFunc {
	shared := &sharedMaps{m: map[string]map[string]string{}}
	return func(obj any) (any, error) {
		obj, err := Transform(obj)
		if m, ok := obj.(*metav1.PartialObjectMetadata); ok && err == nil {
			m.Annotations = shared.of(m.Annotations, replicaSetAnnotations)
		}
		return obj, err
	}
}

// maxSharedMaps bounds a sharedMaps: revision numbers only grow, and past
// this many distinct ones a map is kept apart rather than shared.
const maxSharedMaps = 4096

// sharedMaps hands out one map for equal contents. Nothing may write into
// the maps it returns.
type sharedMaps struct {
	mu sync.Mutex
	m  map[string]map[string]string
}

// of returns the entries of in under keys, as a map shared with every
// other equal one; nil when there are none.
func (s *sharedMaps) of(in map[string]string, keys []string) map[string]string {
	var id strings.Builder
	for _, k := range keys {
		if v, ok := in[k]; ok {
			id.WriteString(k)
			id.WriteByte(0)
			id.WriteString(v)
			id.WriteByte(0)
		}
	}
	if id.Len() == 0 {
		return nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if out, ok := s.m[id.String()]; ok {
		return out
	}
	out := make(map[string]string, len(keys))
	for _, k := range keys {
		if v, ok := in[k]; ok {
			out[k] = v
		}
	}
	if len(s.m) < maxSharedMaps {
		s.m[id.String()] = out
	}
	return out
}
