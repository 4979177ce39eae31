package workload

import (
	"context"

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

// daemonSetAdapter: a DaemonSet's status does not name its current
// revision; it is the newest ControllerRevision, whose hash labels its pods.
type daemonSetAdapter struct{ controllerRevisionHistory }

var daemonSetsResource = appsv1.Resource("daemonsets")

func (daemonSetAdapter) Kind() kinds.Kind               { return kinds.KindDaemonSet }
func (daemonSetAdapter) Resource() schema.GroupResource { return daemonSetsResource }
func (daemonSetAdapter) ScaleRefusal() string           { return "a DaemonSet runs one pod per node" }

func (daemonSetAdapter) Get(ctx context.Context, c kubeclient.Interface, namespace, name string) (Object, error) {
	ds, err := c.AppsV1().DaemonSets(namespace).Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		return nil, err
	}
	return daemonSet{ds}, nil
}

func (daemonSetAdapter) Patch(ctx context.Context, c kubeclient.Interface, namespace, name string, pt types.PatchType, body []byte, opts metav1.PatchOptions) (Object, error) {
	w, err := c.AppsV1().DaemonSets(namespace).Patch(ctx, name, pt, body, opts)
	if err != nil {
		return nil, err
	}
	return daemonSet{w}, nil
}

func (daemonSetAdapter) Lookup(c Cached, namespace, name string) (Object, error) {
	ds, err := c.DaemonSets.DaemonSets(namespace).Get(name)
	if err != nil {
		return nil, err
	}
	return daemonSet{ds}, nil
}

func (daemonSetAdapter) FromCache(_ DeploymentCache, _, name string) (Object, error) {
	return nil, apierrors.NewNotFound(daemonSetsResource, name)
}

type daemonSet struct{ *appsv1.DaemonSet }

func (d daemonSet) Runtime() runtime.Object                  { return d.DaemonSet }
func (d daemonSet) Meta() *metav1.ObjectMeta                 { return &d.ObjectMeta }
func (d daemonSet) Template() *corev1.PodTemplateSpec        { return &d.Spec.Template }
func (d daemonSet) Selector() *metav1.LabelSelector          { return d.Spec.Selector }
func (d daemonSet) Observed() bool                           { return d.Generation <= d.Status.ObservedGeneration }
func (d daemonSet) Paused() bool                             { return false }
func (d daemonSet) Replicas() *int32                         { return nil }
func (d daemonSet) ScaledDown() bool                         { return false }
func (d daemonSet) Progress() string                         { return "" }
func (d daemonSet) PodsWanted() int32                        { return d.Status.DesiredNumberScheduled }
func (d daemonSet) RolloutStatus() (string, RolloutState)    { return JudgeDaemonSet(d.DaemonSet) }
func (d daemonSet) RevisionAnnotation() string               { return "" }
func (d daemonSet) CurrentRevision(history []Revision) int64 { return newest(history) }

func (d daemonSet) Facts(history []Revision) *policy.Workload {
	return facts(kinds.KindDaemonSet, &d.ObjectMeta, &d.Spec.Template, d.CurrentRevision(history), history)
}

func (d daemonSet) Pods(rev Revision) (PodSet, error) {
	return DaemonSetPods(d.DaemonSet, rev.Object.(*appsv1.ControllerRevision))
}

func (d daemonSet) UndoTemplate(rev Revision) (any, bool, error) {
	return historyUndo(rev, &d.Spec.Template)
}

func (d daemonSet) UndoAnnotations(Revision) map[string]string {
	return historyAnnotations(&d.ObjectMeta)
}
