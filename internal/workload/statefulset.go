package workload

import (
	"context"
	"fmt"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"

	"github.com/autorollbackd/autorollbackd/internal/kinds"
	"github.com/autorollbackd/autorollbackd/internal/kubeclient"
	"github.com/autorollbackd/autorollbackd/internal/policy"
)

// statefulSetAdapter: a StatefulSet's status names its update revision, a
// ControllerRevision whose name labels the pods of that revision.
type statefulSetAdapter struct{ controllerRevisionHistory }

var statefulSetsResource = appsv1.Resource("statefulsets")

func (statefulSetAdapter) Kind() kinds.Kind               { return kinds.KindStatefulSet }
func (statefulSetAdapter) Resource() schema.GroupResource { return statefulSetsResource }
func (statefulSetAdapter) ScaleRefusal() string           { return "" }

func (statefulSetAdapter) Get(ctx context.Context, c kubeclient.Interface, namespace, name string) (Object, error) {
	s, err := c.AppsV1().StatefulSets(namespace).Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		return nil, err
	}
	return statefulSet{s}, nil
}

func (statefulSetAdapter) Patch(ctx context.Context, c kubeclient.Interface, namespace, name string, pt types.PatchType, body []byte, opts metav1.PatchOptions) (Object, error) {
	w, err := c.AppsV1().StatefulSets(namespace).Patch(ctx, name, pt, body, opts)
	if err != nil {
		return nil, err
	}
	return statefulSet{w}, nil
}

func (statefulSetAdapter) Lookup(c Cached, namespace, name string) (Object, error) {
	s, err := c.StatefulSets.StatefulSets(namespace).Get(name)
	if err != nil {
		return nil, err
	}
	return statefulSet{s}, nil
}

func (statefulSetAdapter) FromCache(_ DeploymentCache, _, name string) (Object, error) {
	return nil, apierrors.NewNotFound(statefulSetsResource, name)
}

type statefulSet struct{ *appsv1.StatefulSet }

func (s statefulSet) Runtime() runtime.Object               { return s.StatefulSet }
func (s statefulSet) Meta() *metav1.ObjectMeta              { return &s.ObjectMeta }
func (s statefulSet) Template() *corev1.PodTemplateSpec     { return &s.Spec.Template }
func (s statefulSet) Selector() *metav1.LabelSelector       { return s.Spec.Selector }
func (s statefulSet) Observed() bool                        { return s.Generation <= s.Status.ObservedGeneration }
func (s statefulSet) Paused() bool                          { return false }
func (s statefulSet) Replicas() *int32                      { return s.Spec.Replicas }
func (s statefulSet) RolloutStatus() (string, RolloutState) { return JudgeStatefulSet(s.StatefulSet) }
func (s statefulSet) RevisionAnnotation() string            { return "" }

func (s statefulSet) ScaledDown() bool {
	return s.Status.ObservedGeneration >= s.Generation && s.Status.Replicas == 0
}

func (s statefulSet) Progress() string {
	return fmt.Sprintf("generation %d, observed %d, %d pods", s.Generation, s.Status.ObservedGeneration, s.Status.Replicas)
}

// PodsWanted: with a partition, only ordinals at or above it move to the
// update revision.
func (s statefulSet) PodsWanted() int32 {
	replicas := ptrOr(s.Spec.Replicas, 1)
	if ru := s.Spec.UpdateStrategy.RollingUpdate; s.Spec.UpdateStrategy.Type == appsv1.RollingUpdateStatefulSetStrategyType &&
		ru != nil && ru.Partition != nil && *ru.Partition > 0 {
		return max(replicas-*ru.Partition, 0)
	}
	return replicas
}

// CurrentRevision is the update revision: the revision the spec asks for,
// the same as status.currentRevision once a rollout completes.
func (s statefulSet) CurrentRevision(history []Revision) int64 {
	name := s.Status.UpdateRevision
	if name == "" {
		name = s.Status.CurrentRevision
	}
	for _, r := range history {
		if name != "" && r.Name == name {
			return r.Number
		}
	}
	return 0
}

func (s statefulSet) Facts(history []Revision) *policy.Workload {
	return facts(kinds.KindStatefulSet, &s.ObjectMeta, &s.Spec.Template, s.CurrentRevision(history), history)
}

func (s statefulSet) Pods(rev Revision) (PodSet, error) {
	return StatefulSetPods(s.StatefulSet, rev.Name)
}

func (s statefulSet) UndoTemplate(rev Revision) (any, bool, error) {
	return historyUndo(rev, &s.Spec.Template)
}

func (s statefulSet) UndoAnnotations(Revision) map[string]string {
	return historyAnnotations(&s.ObjectMeta)
}
