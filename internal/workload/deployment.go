package workload

import (
	"context"
	"errors"
	"fmt"
	"strconv"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apiequality "k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"

	"github.com/autorollbackd/autorollbackd/internal/kinds"
	"github.com/autorollbackd/autorollbackd/internal/kubeclient"
	"github.com/autorollbackd/autorollbackd/internal/policy"
)

// deploymentAdapter: a Deployment's revisions are its ReplicaSets, numbered
// by the revision annotation the Deployment controller keeps on both.
type deploymentAdapter struct{}

func (deploymentAdapter) Kind() kinds.Kind               { return kinds.KindDeployment }
func (deploymentAdapter) Resource() schema.GroupResource { return appsv1.Resource("deployments") }
func (deploymentAdapter) HistoryKind() string            { return "ReplicaSet" }
func (deploymentAdapter) RevisionLabel() string          { return kinds.LabelPodTemplateHash }
func (deploymentAdapter) RevisionNeedsHistory() bool     { return false }
func (deploymentAdapter) ScaleRefusal() string           { return "" }

func (deploymentAdapter) Get(ctx context.Context, c kubeclient.Interface, namespace, name string) (Object, error) {
	d, err := c.AppsV1().Deployments(namespace).Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		return nil, err
	}
	return deployment{d}, nil
}

func (deploymentAdapter) History(ctx context.Context, c kubeclient.Interface, obj Object) ([]Revision, error) {
	sel, err := metav1.LabelSelectorAsSelector(obj.Selector())
	if err != nil {
		return nil, fmt.Errorf("read selector: %w", err)
	}
	list, err := c.AppsV1().ReplicaSets(obj.Meta().Namespace).List(ctx, metav1.ListOptions{LabelSelector: sel.String()})
	if err != nil {
		return nil, fmt.Errorf("list ReplicaSets: %w", err)
	}
	return replicaSetRevisions(obj.Meta(), pointers(list.Items)), nil
}

func (deploymentAdapter) Patch(ctx context.Context, c kubeclient.Interface, namespace, name string, pt types.PatchType, body []byte, opts metav1.PatchOptions) (Object, error) {
	w, err := c.AppsV1().Deployments(namespace).Patch(ctx, name, pt, body, opts)
	if err != nil {
		return nil, err
	}
	return deployment{w}, nil
}

func (deploymentAdapter) WithTemplate(ctx context.Context, c kubeclient.Interface, obj Object, rev Revision) (Revision, error) {
	return replicaSetWithTemplate(ctx, c, obj.Meta(), rev, kinds.AnnotationDeploymentRevision)
}

func (deploymentAdapter) Lookup(c Cached, namespace, name string) (Object, error) {
	d, err := c.Deployments.Deployments(namespace).Get(name)
	if err != nil {
		return nil, err
	}
	return deployment{d}, nil
}

func (deploymentAdapter) CachedHistory(c Cached, obj Object) ([]Revision, error) {
	d := obj.(deployment).Deployment
	rss, err := c.replicaSets(policy.Ref{Kind: kinds.KindDeployment, Namespace: d.Namespace, Name: d.Name}, d)
	if err != nil {
		return nil, err
	}
	return replicaSetRevisions(&d.ObjectMeta, rss), nil
}

func (deploymentAdapter) FromCache(c DeploymentCache, namespace, name string) (Object, error) {
	d, err := c.Deployment(namespace, name)
	if err != nil {
		return nil, fmt.Errorf("read Deployment from cache: %w", err)
	}
	if d == nil {
		return nil, apierrors.NewNotFound(appsv1.Resource("deployments"), name)
	}
	// Nothing the caller does may write into the shared cache.
	return deployment{d.DeepCopy()}, nil
}

func (deploymentAdapter) CacheHistory(c DeploymentCache, obj Object) ([]Revision, error) {
	sel, err := metav1.LabelSelectorAsSelector(obj.Selector())
	if err != nil {
		return nil, fmt.Errorf("read selector: %w", err)
	}
	rss, err := c.ReplicaSets(obj.Meta(), sel)
	if err != nil {
		return nil, fmt.Errorf("list ReplicaSets from cache: %w", err)
	}
	copied := make([]*metav1.PartialObjectMetadata, 0, len(rss))
	for _, rs := range rss {
		if rs != nil {
			copied = append(copied, rs.DeepCopy())
		}
	}
	return replicaSetRevisions(obj.Meta(), copied), nil
}

// replicaSetRevisions returns the ReplicaSets of rss, whole or their
// metadata, that owner controls and that carry a revision number.
func replicaSetRevisions[RS metav1.Object](owner metav1.Object, rss []RS) []Revision {
	return numberedReplicaSets(owner, rss, kinds.AnnotationDeploymentRevision)
}

// numberedReplicaSets returns the ReplicaSets of rss that owner controls
// and that carry a revision number in the annotation revisionKey.
func numberedReplicaSets[RS metav1.Object](owner metav1.Object, rss []RS, revisionKey string) []Revision {
	revs := make([]Revision, 0, len(rss))
	for _, rs := range rss {
		if !metav1.IsControlledBy(rs, owner) {
			continue
		}
		n, ok := replicaSetNumber(rs, revisionKey)
		if !ok {
			continue
		}
		revs = append(revs, Revision{Number: n, Name: rs.GetName(), Created: rs.GetCreationTimestamp().Time, Object: rs})
	}
	return revs
}

func replicaSetNumber(rs metav1.Object, revisionKey string) (int64, bool) {
	n, err := strconv.ParseInt(rs.GetAnnotations()[revisionKey], 10, 64)
	return n, err == nil
}

// errMetadataOnly: a revision read from the metadata cache has no pod
// template; WithTemplate reads it.
var errMetadataOnly = errors.New("revision holds its metadata only, not its pod template")

// wholeReplicaSet is the ReplicaSet of rev, with its pod template.
func wholeReplicaSet(rev Revision) (*appsv1.ReplicaSet, error) {
	rs, ok := rev.Object.(*appsv1.ReplicaSet)
	if !ok {
		return nil, fmt.Errorf("ReplicaSet %s: %w", rev.Name, errMetadataOnly)
	}
	return rs, nil
}

// replicaSetWithTemplate is rev with its ReplicaSet whole: as it is, or
// read by name from the API server and checked to be still owner's
// revision rev.Number.
func replicaSetWithTemplate(ctx context.Context, c kubeclient.Interface, owner metav1.Object, rev Revision, revisionKey string) (Revision, error) {
	if _, ok := rev.Object.(*appsv1.ReplicaSet); ok {
		return rev, nil
	}
	isRev := func(rs *appsv1.ReplicaSet) bool {
		n, ok := replicaSetNumber(rs, revisionKey)
		return metav1.IsControlledBy(rs, owner) && ok && n == rev.Number
	}
	rss := c.AppsV1().ReplicaSets(owner.GetNamespace())
	// First from the API server's watch cache (resourceVersion "0"), which
	// spares the action an etcd read: what a rollback takes from the
	// ReplicaSet, its template and annotations, was written when it became
	// that revision, and the patch's precondition on the workload refuses
	// a rollback decided on a workload that has moved since. A cache that
	// does not show it as revision rev.Number yet is read past, from etcd.
	rs, err := rss.Get(ctx, rev.Name, metav1.GetOptions{ResourceVersion: "0"})
	if err != nil || !isRev(rs) {
		rs, err = rss.Get(ctx, rev.Name, metav1.GetOptions{})
	}
	if err != nil {
		return rev, fmt.Errorf("read ReplicaSet %s of revision %d: %w", rev.Name, rev.Number, err)
	}
	if !isRev(rs) {
		return rev, fmt.Errorf("%w: ReplicaSet %s is no longer revision %d of %s", ErrRevisionMoved, rev.Name, rev.Number, owner.GetName())
	}
	rev.Object, rev.Created = rs, rs.CreationTimestamp.Time
	return rev, nil
}

type deployment struct{ *appsv1.Deployment }

func (d deployment) Runtime() runtime.Object               { return d.Deployment }
func (d deployment) Meta() *metav1.ObjectMeta              { return &d.ObjectMeta }
func (d deployment) Template() *corev1.PodTemplateSpec     { return &d.Spec.Template }
func (d deployment) Selector() *metav1.LabelSelector       { return d.Spec.Selector }
func (d deployment) Observed() bool                        { return d.Generation <= d.Status.ObservedGeneration }
func (d deployment) Paused() bool                          { return d.Spec.Paused }
func (d deployment) Replicas() *int32                      { return d.Spec.Replicas }
func (d deployment) PodsWanted() int32                     { return ptrOr(d.Spec.Replicas, 1) }
func (d deployment) RolloutStatus() (string, RolloutState) { return JudgeDeployment(d.Deployment) }
func (d deployment) RevisionAnnotation() string            { return kinds.AnnotationDeploymentRevision }

func (d deployment) terminating() int32 {
	if d.Status.TerminatingReplicas != nil {
		return *d.Status.TerminatingReplicas
	}
	return 0
}

func (d deployment) ScaledDown() bool {
	return d.Status.ObservedGeneration >= d.Generation && d.Status.Replicas == 0 && d.terminating() == 0
}

func (d deployment) Progress() string {
	return fmt.Sprintf("generation %d, observed %d, %d pods, %d terminating", d.Generation, d.Status.ObservedGeneration,
		d.Status.Replicas, d.terminating())
}

// CurrentRevision: the Deployment controller writes the current revision's
// number on the Deployment.
func (d deployment) CurrentRevision([]Revision) int64 {
	n, _ := strconv.ParseInt(d.Annotations[kinds.AnnotationDeploymentRevision], 10, 64)
	return n
}

func (d deployment) Facts(history []Revision) *policy.Workload {
	w := facts(kinds.KindDeployment, &d.ObjectMeta, &d.Spec.Template, d.CurrentRevision(history), history)
	w.Paused = d.Spec.Paused
	return w
}

func (d deployment) Pods(rev Revision) (PodSet, error) {
	return ReplicaSetPods(d.Deployment, rev.Object)
}

// UndoTemplate is the ReplicaSet's pod template without its
// pod-template-hash label, as kubectl writes it.
func (d deployment) UndoTemplate(rev Revision) (any, bool, error) {
	rs, err := wholeReplicaSet(rev)
	if err != nil {
		return nil, false, err
	}
	template := rs.Spec.Template.DeepCopy()
	delete(template.Labels, kinds.LabelPodTemplateHash)
	return template, equalIgnoreHash(&rs.Spec.Template, &d.Spec.Template), nil
}

// deploymentAnnotationsToSkip are the annotations kubectl keeps from the
// Deployment rather than taking from the ReplicaSet it restores
// (polymorphichelpers' annotationsToSkip).
var deploymentAnnotationsToSkip = map[string]bool{
	corev1.LastAppliedConfigAnnotation:        true,
	kinds.AnnotationDeploymentRevision:        true,
	kinds.AnnotationDeploymentRevisionHistory: true,
	kinds.AnnotationDeploymentDesiredReplicas: true,
	kinds.AnnotationDeploymentMaxReplicas:     true,
	appsv1.DeprecatedRollbackTo:               true,
}

// UndoAnnotations are the ReplicaSet's annotations, except those kubectl
// keeps from the Deployment.
func (d deployment) UndoAnnotations(rev Revision) map[string]string {
	annotations := map[string]string{}
	for k := range deploymentAnnotationsToSkip {
		if v, ok := d.Annotations[k]; ok {
			annotations[k] = v
		}
	}
	for k, v := range rev.Object.GetAnnotations() {
		if !deploymentAnnotationsToSkip[k] {
			annotations[k] = v
		}
	}
	return annotations
}

func equalIgnoreHash(a, b *corev1.PodTemplateSpec) bool {
	a, b = a.DeepCopy(), b.DeepCopy()
	delete(a.Labels, kinds.LabelPodTemplateHash)
	delete(b.Labels, kinds.LabelPodTemplateHash)
	return apiequality.Semantic.DeepEqual(a, b)
}

func ptrOr(p *int32, def int32) int32 {
	if p == nil {
		return def
	}
	return *p
}
