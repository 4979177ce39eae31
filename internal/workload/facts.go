// Package workload reads what the policy needs to know about a workload from
// the cluster: its labels and annotations, whether it is paused, its current
// and previous revision, when the current revision began rolling out, and
// who else manages it.
package workload

import (
	"cmp"
	"context"
	"fmt"
	"slices"
	"strconv"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	appslisters "k8s.io/client-go/listers/apps/v1"

	"github.com/autorollbackd/autorollbackd/internal/policy"
)

// Annotations and labels the facts are read from.
const (
	// RevisionAnnotation is set by the Deployment controller on a Deployment
	// and its ReplicaSets.
	RevisionAnnotation = "deployment.kubernetes.io/revision"
	// RolledBackAtAnnotation records when autorollbackd last rolled the
	// workload back (RFC 3339).
	RolledBackAtAnnotation = "autorollback.io/rolled-back-at"

	argoTrackingAnnotation = "argocd.argoproj.io/tracking-id"
	argoInstanceLabel      = "argocd.argoproj.io/instance"
	fluxKustomizeLabel     = "kustomize.toolkit.fluxcd.io/name"
	fluxHelmLabel          = "helm.toolkit.fluxcd.io/name"
)

// Revision is one recorded revision of a workload: a ReplicaSet of a
// Deployment or a ControllerRevision of a StatefulSet or DaemonSet.
type Revision struct {
	Number  int64
	Name    string
	Created time.Time
}

// DeploymentFacts derives the facts of d from its ReplicaSets (those it
// owns; others are ignored).
func DeploymentFacts(d *appsv1.Deployment, rss []*appsv1.ReplicaSet) *policy.Workload {
	var revs []Revision
	for _, rs := range rss {
		if !metav1.IsControlledBy(rs, d) {
			continue
		}
		n, err := strconv.ParseInt(rs.Annotations[RevisionAnnotation], 10, 64)
		if err != nil {
			continue
		}
		revs = append(revs, Revision{Number: n, Name: rs.Name, Created: rs.CreationTimestamp.Time})
	}
	current, _ := strconv.ParseInt(d.Annotations[RevisionAnnotation], 10, 64)
	w := facts(policy.KindDeployment, &d.ObjectMeta, current, revs)
	w.Paused = d.Spec.Paused
	return w
}

// StatefulSetFacts derives the facts of s from its ControllerRevisions.
func StatefulSetFacts(s *appsv1.StatefulSet, crs []*appsv1.ControllerRevision) *policy.Workload {
	return facts(policy.KindStatefulSet, &s.ObjectMeta, currentRevision(s.Status.UpdateRevision, s, crs), controllerRevisions(s, crs))
}

// DaemonSetFacts derives the facts of ds from its ControllerRevisions. A
// DaemonSet's status does not name its current revision; it is the newest.
func DaemonSetFacts(ds *appsv1.DaemonSet, crs []*appsv1.ControllerRevision) *policy.Workload {
	revs := controllerRevisions(ds, crs)
	var current int64
	for _, r := range revs {
		current = max(current, r.Number)
	}
	return facts(policy.KindDaemonSet, &ds.ObjectMeta, current, revs)
}

func controllerRevisions(owner metav1.Object, crs []*appsv1.ControllerRevision) []Revision {
	var revs []Revision
	for _, cr := range crs {
		if metav1.IsControlledBy(cr, owner) {
			revs = append(revs, Revision{Number: cr.Revision, Name: cr.Name, Created: cr.CreationTimestamp.Time})
		}
	}
	return revs
}

func currentRevision(name string, owner metav1.Object, crs []*appsv1.ControllerRevision) int64 {
	for _, r := range controllerRevisions(owner, crs) {
		if r.Name == name {
			return r.Number
		}
	}
	return 0
}

// facts fills in what every kind shares. The current revision's creation
// time stands for when its rollout began: Kubernetes records no other
// timestamp for it. A rollback to an old revision therefore looks like an
// old rollout, which makes the recent-rollout guard escalate rather than act.
func facts(kind policy.Kind, meta *metav1.ObjectMeta, current int64, revs []Revision) *policy.Workload {
	w := &policy.Workload{
		Ref:         policy.Ref{Kind: kind, Namespace: meta.Namespace, Name: meta.Name},
		Labels:      meta.Labels,
		Annotations: meta.Annotations,
		Revision:    current,
	}
	slices.SortFunc(revs, func(a, b Revision) int { return cmp.Compare(b.Number, a.Number) })
	for _, r := range revs {
		switch {
		case r.Number == current && w.RolloutStartedAt.IsZero():
			w.RolloutStartedAt = r.Created
		case r.Number < current:
			if w.PreviousRevision == 0 {
				w.PreviousRevision = r.Number
			}
			w.Older = append(w.Older, r.Number)
		}
	}
	if at, err := time.Parse(time.RFC3339, meta.Annotations[RolledBackAtAnnotation]); err == nil {
		w.LastAutoRollbackAt = at
	}
	w.GitOpsManager = GitOpsManager(meta)
	return w
}

// GitOpsManager names the GitOps controller that manages the object, if
// any. Such a controller would re-apply the bad version after a rollback.
// Argo CD is recognised by its tracking annotation or instance label, Flux
// by the labels its kustomize and helm controllers set. Argo CD's legacy
// app.kubernetes.io/instance label is not used: Helm sets it too.
func GitOpsManager(meta *metav1.ObjectMeta) string {
	switch {
	case meta.Annotations[argoTrackingAnnotation] != "", meta.Labels[argoInstanceLabel] != "":
		return "argocd"
	case meta.Labels[fluxKustomizeLabel] != "", meta.Labels[fluxHelmLabel] != "":
		return "flux"
	}
	return ""
}

// Live reads facts straight from the API server.
type Live struct {
	Client kubernetes.Interface
}

// Facts returns the facts of ref, or nil with no error when it does not
// exist.
func (l Live) Facts(ctx context.Context, ref policy.Ref) (*policy.Workload, error) {
	apps := l.Client.AppsV1()
	switch ref.Kind {
	case policy.KindDeployment:
		d, err := apps.Deployments(ref.Namespace).Get(ctx, ref.Name, metav1.GetOptions{})
		if err != nil {
			return notFoundIsNil(ref, err)
		}
		sel, err := metav1.LabelSelectorAsSelector(d.Spec.Selector)
		if err != nil {
			return nil, fmt.Errorf("read selector of %s: %w", ref, err)
		}
		list, err := apps.ReplicaSets(ref.Namespace).List(ctx, metav1.ListOptions{LabelSelector: sel.String()})
		if err != nil {
			return nil, fmt.Errorf("list ReplicaSets of %s: %w", ref, err)
		}
		return DeploymentFacts(d, pointers(list.Items)), nil
	case policy.KindStatefulSet:
		s, err := apps.StatefulSets(ref.Namespace).Get(ctx, ref.Name, metav1.GetOptions{})
		if err != nil {
			return notFoundIsNil(ref, err)
		}
		crs, err := l.controllerRevisions(ctx, ref, s.Spec.Selector)
		if err != nil {
			return nil, err
		}
		return StatefulSetFacts(s, crs), nil
	case policy.KindDaemonSet:
		ds, err := apps.DaemonSets(ref.Namespace).Get(ctx, ref.Name, metav1.GetOptions{})
		if err != nil {
			return notFoundIsNil(ref, err)
		}
		crs, err := l.controllerRevisions(ctx, ref, ds.Spec.Selector)
		if err != nil {
			return nil, err
		}
		return DaemonSetFacts(ds, crs), nil
	}
	return nil, fmt.Errorf("read %s: unsupported kind %q", ref, ref.Kind)
}

func (l Live) controllerRevisions(ctx context.Context, ref policy.Ref, selector *metav1.LabelSelector) ([]*appsv1.ControllerRevision, error) {
	sel, err := metav1.LabelSelectorAsSelector(selector)
	if err != nil {
		return nil, fmt.Errorf("read selector of %s: %w", ref, err)
	}
	list, err := l.Client.AppsV1().ControllerRevisions(ref.Namespace).List(ctx, metav1.ListOptions{LabelSelector: sel.String()})
	if err != nil {
		return nil, fmt.Errorf("list ControllerRevisions of %s: %w", ref, err)
	}
	return pointers(list.Items), nil
}

func notFoundIsNil(ref policy.Ref, err error) (*policy.Workload, error) {
	if apierrors.IsNotFound(err) {
		return nil, nil
	}
	return nil, fmt.Errorf("read %s: %w", ref, err)
}

func pointers[T any](items []T) []*T {
	out := make([]*T, len(items))
	for i := range items {
		out[i] = &items[i]
	}
	return out
}

// Cached reads facts from informer listers: fast, and as fresh as the watch.
type Cached struct {
	Deployments         appslisters.DeploymentLister
	ReplicaSets         appslisters.ReplicaSetLister
	StatefulSets        appslisters.StatefulSetLister
	DaemonSets          appslisters.DaemonSetLister
	ControllerRevisions appslisters.ControllerRevisionLister
}

// NewCached returns a Cached over the informers of factory. Start the
// factory afterwards.
func NewCached(factory informers.SharedInformerFactory) Cached {
	apps := factory.Apps().V1()
	return Cached{
		Deployments:         apps.Deployments().Lister(),
		ReplicaSets:         apps.ReplicaSets().Lister(),
		StatefulSets:        apps.StatefulSets().Lister(),
		DaemonSets:          apps.DaemonSets().Lister(),
		ControllerRevisions: apps.ControllerRevisions().Lister(),
	}
}

// Facts returns the facts of ref, or nil with no error when it does not
// exist.
func (c Cached) Facts(_ context.Context, ref policy.Ref) (*policy.Workload, error) {
	switch ref.Kind {
	case policy.KindDeployment:
		d, err := c.Deployments.Deployments(ref.Namespace).Get(ref.Name)
		if err != nil {
			return notFoundIsNil(ref, err)
		}
		sel, err := metav1.LabelSelectorAsSelector(d.Spec.Selector)
		if err != nil {
			return nil, fmt.Errorf("read selector of %s: %w", ref, err)
		}
		rss, err := c.ReplicaSets.ReplicaSets(ref.Namespace).List(sel)
		if err != nil {
			return nil, fmt.Errorf("list ReplicaSets of %s: %w", ref, err)
		}
		return DeploymentFacts(d, rss), nil
	case policy.KindStatefulSet:
		s, err := c.StatefulSets.StatefulSets(ref.Namespace).Get(ref.Name)
		if err != nil {
			return notFoundIsNil(ref, err)
		}
		crs, err := c.revisions(ref, s.Spec.Selector)
		if err != nil {
			return nil, err
		}
		return StatefulSetFacts(s, crs), nil
	case policy.KindDaemonSet:
		ds, err := c.DaemonSets.DaemonSets(ref.Namespace).Get(ref.Name)
		if err != nil {
			return notFoundIsNil(ref, err)
		}
		crs, err := c.revisions(ref, ds.Spec.Selector)
		if err != nil {
			return nil, err
		}
		return DaemonSetFacts(ds, crs), nil
	}
	return nil, fmt.Errorf("read %s: unsupported kind %q", ref, ref.Kind)
}

func (c Cached) revisions(ref policy.Ref, selector *metav1.LabelSelector) ([]*appsv1.ControllerRevision, error) {
	sel, err := metav1.LabelSelectorAsSelector(selector)
	if err != nil {
		return nil, fmt.Errorf("read selector of %s: %w", ref, err)
	}
	crs, err := c.ControllerRevisions.ControllerRevisions(ref.Namespace).List(sel)
	if err != nil {
		return nil, fmt.Errorf("list ControllerRevisions of %s: %w", ref, err)
	}
	return crs, nil
}

// Caches reads facts from the informers of several namespaces, or of the
// whole cluster under the key "". A namespace it does not watch has no
// workloads, as far as it can tell.
type Caches map[string]Cached

// Facts returns the facts of ref from the cache that covers its namespace.
func (c Caches) Facts(ctx context.Context, ref policy.Ref) (*policy.Workload, error) {
	cache, ok := c[""]
	if !ok {
		if cache, ok = c[ref.Namespace]; !ok {
			return nil, nil
		}
	}
	return cache.Facts(ctx, ref)
}
