// Package workload reads what the policy needs to know about a workload from
// the cluster: its labels and annotations, whether it is paused, its current
// and previous revision, when the current revision began rolling out, and
// who else manages it (a GitOps tool, a Flagger Canary).
package workload

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	appslisters "k8s.io/client-go/listers/apps/v1"
	"k8s.io/client-go/metadata/metadatalister"
	"k8s.io/client-go/tools/cache"
	"k8s.io/utils/lru"

	"github.com/autorollbackd/autorollbackd/internal/kinds"
	"github.com/autorollbackd/autorollbackd/internal/kubeclient"
	"github.com/autorollbackd/autorollbackd/internal/policy"
)

// DeploymentFacts derives the facts of d from its ReplicaSets, whole or
// their metadata (those it owns; others are ignored).
func DeploymentFacts[RS metav1.Object](d *appsv1.Deployment, rss []RS) *policy.Workload {
	return deployment{d}.Facts(replicaSetRevisions(d, rss))
}

// StatefulSetFacts derives the facts of s from its ControllerRevisions.
func StatefulSetFacts(s *appsv1.StatefulSet, crs []*appsv1.ControllerRevision) *policy.Workload {
	return statefulSet{s}.Facts(controllerRevisionHistory{}.revisions(s, crs))
}

// DaemonSetFacts derives the facts of ds from its ControllerRevisions.
func DaemonSetFacts(ds *appsv1.DaemonSet, crs []*appsv1.ControllerRevision) *policy.Workload {
	return daemonSet{ds}.Facts(controllerRevisionHistory{}.revisions(ds, crs))
}

// facts fills in what every kind shares. The current revision's creation
// time stands for when its rollout began: Kubernetes records no other
// timestamp for it. A rollback to an old revision therefore looks like an
// old rollout, which makes the recent-rollout guard escalate rather than act.
//
// A current revision that is autorollbackd's own restart (after a feature
// flag rollback) is no rollout: the suspect is still the revision it
// restarted, which is then neither the rollout's start nor a revision to go
// back to, since it runs the same template.
func facts(kind policy.Kind, meta *metav1.ObjectMeta, tmpl *corev1.PodTemplateSpec, current int64, revs []Revision) *policy.Workload {
	w := &policy.Workload{
		Ref:         policy.Ref{Kind: kind, Namespace: meta.Namespace, Name: meta.Name},
		Labels:      meta.Labels,
		Annotations: meta.Annotations,
		Revision:    current,
	}
	slices.SortFunc(revs, func(a, b Revision) int { return cmp.Compare(b.Number, a.Number) })
	ourRestart := meta.Annotations[kinds.AnnotationOwnRestartAt] != "" && tmpl.Annotations[kinds.AnnotationTemplateRestartedAt] == meta.Annotations[kinds.AnnotationOwnRestartAt]
	for i, r := range revs {
		if ourRestart && r.Number < current && (i == 0 || revs[i-1].Number >= current) {
			// The revision the restart restarted.
			w.RolloutStartedAt = r.Created
			continue
		}
		switch {
		case r.Number == current && w.RolloutStartedAt.IsZero() && !ourRestart:
			w.RolloutStartedAt = r.Created
		case r.Number < current:
			if w.PreviousRevision == 0 {
				w.PreviousRevision = r.Number
			}
			w.Older = append(w.Older, r.Number)
		}
	}
	if v := meta.Annotations[kinds.AnnotationRolledBackAt]; v != "" {
		if at, err := time.Parse(time.RFC3339, v); err == nil {
			w.LastAutoRollbackAt = at
		}
	}
	w.GitOpsManager = GitOpsManager(meta)
	w.FlaggerCanary = FlaggerCanary(meta)
	return w
}

// FlaggerCanary names the Flagger Canary that owns the object, if any.
// Flagger creates a Canary's primary (its target's name and "-primary")
// with an owner reference to the Canary, and copies the target's template
// onto it at every promotion: a rollback of the primary would fight
// Flagger, which holds the bad version promoted. The owner reference is the
// sign, in any version of Flagger's API group; the name alone is not, as
// "-primary" names many objects Flagger has nothing to do with (a
// database's primary).
func FlaggerCanary(meta *metav1.ObjectMeta) string {
	for _, ref := range meta.OwnerReferences {
		gv, err := schema.ParseGroupVersion(ref.APIVersion)
		if err == nil && gv.Group == flaggerGroup && ref.Kind == flaggerCanaryKind {
			return ref.Name
		}
	}
	return ""
}

// Flagger's API group and the kind of its Canary.
const (
	flaggerGroup      = "flagger.app"
	flaggerCanaryKind = "Canary"
)

// GitOpsManager names the GitOps controller that manages the object, if
// any. Such a controller would re-apply the bad version after a rollback.
// Argo CD is recognised by its tracking annotation or instance label, Flux
// by the labels its kustomize and helm controllers set. Argo CD's legacy
// app.kubernetes.io/instance label is not used: Helm sets it too.
func GitOpsManager(meta *metav1.ObjectMeta) string {
	switch {
	case meta.Annotations[kinds.AnnotationArgoTrackingID] != "", meta.Labels[kinds.LabelArgoInstance] != "":
		return "argocd"
	case meta.Labels[kinds.LabelFluxKustomization] != "", meta.Labels[kinds.LabelFluxHelm] != "":
		return "flux"
	}
	return ""
}

// Live reads facts straight from the API server.
type Live struct {
	Client kubeclient.Interface
}

// Facts returns the facts of ref, or nil with no error when it does not
// exist.
func (l Live) Facts(ctx context.Context, ref policy.Ref) (*policy.Workload, error) {
	a, err := For(ref.Kind)
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", ref, err)
	}
	obj, err := a.Get(ctx, l.Client, ref.Namespace, ref.Name)
	if err != nil {
		return notFoundIsNil(ref, err)
	}
	history, err := a.History(ctx, l.Client, obj)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", ref, err)
	}
	return obj.Facts(history), nil
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
	Deployments appslisters.DeploymentLister
	// ReplicaSets lists the ReplicaSets' metadata.
	ReplicaSets         metadatalister.Lister
	StatefulSets        appslisters.StatefulSetLister
	DaemonSets          appslisters.DaemonSetLister
	ControllerRevisions appslisters.ControllerRevisionLister
	// Rollouts lists Argo Rollouts' Rollouts (a dynamic informer's lister);
	// nil when the daemon does not watch them, and then a Rollout's facts
	// are an error.
	Rollouts cache.GenericLister

	// replicaSetsByController and revisionsByController, when set, are the
	// indexers behind ReplicaSets and ControllerRevisions with
	// controllerIndex. Without them a workload's revisions are found by
	// matching its selector against every ReplicaSet or ControllerRevision
	// in its namespace.
	replicaSetsByController, revisionsByController cache.Indexer

	// stores, when set, are the informers' stores of the workloads, by
	// kind, which hold them packed and index actedIndex; without them
	// Acted is an error, and TargetFacts remembers nothing.
	stores map[policy.Kind]unpacking
	// targets remembers TargetFacts's answers (targetFacts).
	targets *lru.Cache
}

// targetMemo is how many workloads' target facts a Cached remembers: the
// workloads that alerts name again and again, as Alertmanager re-sends a
// firing group, are answered without decoding them each time.
const targetMemo = 512

// targetFacts are the target facts of the workload at resourceVersion.
type targetFacts struct {
	resourceVersion string
	facts           *policy.Workload
}

// NewCached returns a Cached over inf, and indexes its ReplicaSets and
// ControllerRevisions by controller. Run the informers afterwards.
func NewCached(inf *Informers) Cached {
	return Cached{
		Deployments:             inf.DeploymentLister(),
		ReplicaSets:             inf.ReplicaSetLister(),
		StatefulSets:            inf.StatefulSetLister(),
		DaemonSets:              inf.DaemonSetLister(),
		ControllerRevisions:     inf.ControllerRevisionLister(),
		replicaSetsByController: inf.ReplicaSetIndex().indexer,
		revisionsByController:   indexByController[appsv1.ControllerRevision](inf.ControllerRevisions),
		stores: map[policy.Kind]unpacking{
			policy.KindDeployment:  {inf.Deployments.GetIndexer(), unpack[appsv1.Deployment]},
			policy.KindStatefulSet: {inf.StatefulSets.GetIndexer(), unpack[appsv1.StatefulSet]},
			policy.KindDaemonSet:   {inf.DaemonSets.GetIndexer(), unpack[appsv1.DaemonSet]},
		},
		targets: lru.New(targetMemo),
	}
}

// ActedObject is a cached workload that carries kinds.AnnotationActed.
type ActedObject struct {
	Kind policy.Kind
	Meta metav1.Object
}

// Acted returns the cached Deployments, StatefulSets and DaemonSets that
// carry kinds.AnnotationActed: rollbacks taken before any record of them.
// Only those are decoded, found by actedIndex; a Cached not made by
// NewCached has no index, and answers an error.
func (c Cached) Acted() ([]ActedObject, error) {
	if c.stores == nil {
		return nil, errors.New("list the workloads rolled back before their records: no informers' index (the cache was not made by NewCached)")
	}
	var out []ActedObject
	for _, kind := range []policy.Kind{policy.KindDeployment, policy.KindStatefulSet, policy.KindDaemonSet} {
		objs, err := c.stores[kind].ByIndex(actedIndex, actedValue)
		if err != nil {
			return nil, fmt.Errorf("list cached %ss rolled back before their records: %w", kind, err)
		}
		for _, o := range objs {
			if m, ok := o.(metav1.Object); ok {
				out = append(out, ActedObject{Kind: kind, Meta: m})
			}
		}
	}
	return out, nil
}

// controllerIndex indexes objects by the UID of their controller.
const controllerIndex = "autorollbackd.controller-uid"

// indexByController adds controllerIndex to inf and returns its indexer,
// decoding what inf packed, or nil when the index cannot be added (the
// informer has stopped).
func indexByController[T any, P message[T]](inf cache.SharedIndexInformer) cache.Indexer {
	err := inf.AddIndexers(cache.Indexers{controllerIndex: controllerUID})
	if _, ok := inf.GetIndexer().GetIndexers()[controllerIndex]; err != nil && !ok {
		return nil
	}
	// Either added now or by an earlier NewCached over the same informers.
	return unpackingIndexer[T, P](inf)
}

func controllerUID(obj any) ([]string, error) {
	if p, ok := obj.(*packed); ok {
		if p.controller == "" {
			return nil, nil
		}
		return []string{string(p.controller)}, nil
	}
	o, ok := obj.(metav1.Object)
	if !ok {
		return nil, fmt.Errorf("index by controller: %T has no object metadata", obj)
	}
	if ref := metav1.GetControllerOfNoCopy(o); ref != nil {
		return []string{string(ref.UID)}, nil
	}
	return nil, nil
}

// byController returns the objects of indexer whose controller has the
// UID uid.
func byController[T any](indexer cache.Indexer, uid types.UID) ([]T, error) {
	objs, err := indexer.ByIndex(controllerIndex, string(uid))
	if err != nil {
		return nil, fmt.Errorf("look up by controller: %w", err)
	}
	out := make([]T, 0, len(objs))
	for _, obj := range objs {
		if o, ok := obj.(T); ok {
			out = append(out, o)
		}
	}
	return out, nil
}

// selected keeps the objects of namespace that sel selects, reusing objs.
func selected[T metav1.Object](objs []T, namespace string, sel labelSelector) []T {
	out := objs[:0]
	for _, o := range objs {
		if o.GetNamespace() == namespace && sel.matches(o.GetLabels()) {
			out = append(out, o)
		}
	}
	return out
}

// labelSelector matches labels as metav1.LabelSelectorAsSelector(sel) does.
type labelSelector struct {
	matchLabels map[string]string // the selector when it is nothing but these
	parsed      labels.Selector   // the selector otherwise
}

// newLabelSelector returns sel as a labelSelector. Most workloads select by
// labels alone; matching those needs no labels.Selector, whose building
// validates every key and value again, allocating as it goes (the API
// server validated them when it stored the workload).
func newLabelSelector(sel *metav1.LabelSelector) (labelSelector, error) {
	if sel != nil && len(sel.MatchExpressions) == 0 && len(sel.MatchLabels) > 0 {
		return labelSelector{matchLabels: sel.MatchLabels}, nil
	}
	parsed, err := metav1.LabelSelectorAsSelector(sel)
	return labelSelector{parsed: parsed}, err
}

func (s labelSelector) matches(set map[string]string) bool {
	if s.parsed != nil {
		return s.parsed.Matches(labels.Set(set))
	}
	for k, v := range s.matchLabels {
		if got, ok := set[k]; !ok || got != v {
			return false
		}
	}
	return true
}

// Facts returns the facts of ref, or nil with no error when it does not
// exist.
func (c Cached) Facts(_ context.Context, ref policy.Ref) (*policy.Workload, error) {
	a, err := For(ref.Kind)
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", ref, err)
	}
	obj, err := a.Lookup(c, ref.Namespace, ref.Name)
	if err != nil {
		return notFoundIsNil(ref, err)
	}
	history, err := a.CachedHistory(c, obj)
	if err != nil {
		return nil, err
	}
	return obj.Facts(history), nil
}

// Lookup returns ref's object, decoded afresh from the informer; one that
// was put into the informer's store by hand is the store's own and must
// not be changed. NotFound when the cache does not hold it.
func (c Cached) Lookup(ref policy.Ref) (Object, error) {
	a, err := For(ref.Kind)
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", ref, err)
	}
	return a.Lookup(c, ref.Namespace, ref.Name)
}

// History returns the revisions of obj, ref's object, as
// Adapter.CachedHistory does.
func (c Cached) History(ref policy.Ref, obj Object) ([]Revision, error) {
	a, err := For(ref.Kind)
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", ref, err)
	}
	return a.CachedHistory(c, obj)
}

// RevisionPods is Live.RevisionPods from the cache: NotFound when it does
// not hold ref.
func (c Cached) RevisionPods(_ context.Context, ref policy.Ref, revision int64) (PodSet, error) {
	obj, err := c.Lookup(ref)
	if err != nil {
		return PodSet{}, fmt.Errorf("read %s: %w", ref, err)
	}
	history, err := c.History(ref, obj)
	if err != nil {
		return PodSet{}, fmt.Errorf("%s: %w", ref, err)
	}
	return revisionPods(ref, obj, history, revision)
}

// replicaSets returns the metadata of the ReplicaSets of d's namespace that
// d's selector selects; with the index, only those d controls, which are
// the only ones DeploymentFacts keeps.
func (c Cached) replicaSets(ref policy.Ref, d *appsv1.Deployment) ([]*metav1.PartialObjectMetadata, error) {
	sel, err := newLabelSelector(d.Spec.Selector)
	if err != nil {
		return nil, fmt.Errorf("read selector of %s: %w", ref, err)
	}
	var rss []*metav1.PartialObjectMetadata
	if c.replicaSetsByController != nil {
		rss, err = byController[*metav1.PartialObjectMetadata](c.replicaSetsByController, d.UID)
	} else {
		rss, err = c.ReplicaSets.Namespace(ref.Namespace).List(labels.Everything())
	}
	if err != nil {
		return nil, fmt.Errorf("list ReplicaSets of %s: %w", ref, err)
	}
	return selected(rss, ref.Namespace, sel), nil
}

// revisions is replicaSets for the ControllerRevisions of a StatefulSet or
// DaemonSet.
func (c Cached) revisions(ref policy.Ref, owner metav1.Object, selector *metav1.LabelSelector) ([]*appsv1.ControllerRevision, error) {
	sel, err := newLabelSelector(selector)
	if err != nil {
		return nil, fmt.Errorf("read selector of %s: %w", ref, err)
	}
	var crs []*appsv1.ControllerRevision
	if c.revisionsByController != nil {
		crs, err = byController[*appsv1.ControllerRevision](c.revisionsByController, owner.GetUID())
	} else {
		crs, err = c.ControllerRevisions.ControllerRevisions(ref.Namespace).List(labels.Everything())
	}
	if err != nil {
		return nil, fmt.Errorf("list ControllerRevisions of %s: %w", ref, err)
	}
	return selected(crs, ref.Namespace, sel), nil
}

// Caches reads facts from the informers of several namespaces, or of the
// whole cluster under the key "". A namespace it does not watch has no
// workloads, as far as it can tell.
type Caches map[string]Cached

// Facts returns the facts of ref from the cache that covers its namespace.
func (c Caches) Facts(ctx context.Context, ref policy.Ref) (*policy.Workload, error) {
	cache, ok := c.covering(ref.Namespace)
	if !ok {
		return nil, nil
	}
	return cache.Facts(ctx, ref)
}

// Lookup is Cached.Lookup from the cache that covers ref's namespace.
// NotFound when no cache covers the namespace or the object is not there.
func (c Caches) Lookup(ref policy.Ref) (Object, error) {
	cache, err := c.cover(ref)
	if err != nil {
		return nil, err
	}
	return cache.Lookup(ref)
}

// History is Cached.History from the cache that covers ref's namespace.
func (c Caches) History(ref policy.Ref, obj Object) ([]Revision, error) {
	cache, err := c.cover(ref)
	if err != nil {
		return nil, err
	}
	return cache.History(ref, obj)
}

// RevisionPods is Cached.RevisionPods from the cache that covers ref's
// namespace.
func (c Caches) RevisionPods(ctx context.Context, ref policy.Ref, revision int64) (PodSet, error) {
	cache, err := c.cover(ref)
	if err != nil {
		return PodSet{}, err
	}
	return cache.RevisionPods(ctx, ref, revision)
}

// cover is covering, with NotFound for a namespace no cache covers.
func (c Caches) cover(ref policy.Ref) (Cached, error) {
	a, err := For(ref.Kind)
	if err != nil {
		return Cached{}, fmt.Errorf("read %s: %w", ref, err)
	}
	cache, ok := c.covering(ref.Namespace)
	if !ok {
		return Cached{}, apierrors.NewNotFound(a.Resource(), ref.Name)
	}
	return cache, nil
}

func (c Caches) covering(namespace string) (Cached, bool) {
	if cache, ok := c[""]; ok {
		return cache, true
	}
	cache, ok := c[namespace]
	return cache, ok
}

// TargetFacts returns what the policy's target checks (policy.Policy.Screen)
// need to know about ref: whether it exists, its revision and its labels.
// From the informer caches (a Cached or Caches) a Deployment's facts leave
// out its revision history (RolloutStartedAt, PreviousRevision, Older),
// which would mean looking up its ReplicaSets on every alert at intake; so
// these facts are for Screen and not for Evaluate. A StatefulSet or
// DaemonSet gets all its facts, as its revision number comes from its
// ControllerRevisions anyway, and so does every ref from any other source.
func TargetFacts(ctx context.Context, src interface {
	Facts(context.Context, policy.Ref) (*policy.Workload, error)
}, ref policy.Ref) (*policy.Workload, error) {
	var cache Cached
	switch s := src.(type) {
	case Cached:
		cache = s
	case Caches:
		var ok bool
		if cache, ok = s.covering(ref.Namespace); !ok {
			return nil, nil
		}
	default:
		return src.Facts(ctx, ref)
	}
	a, err := For(ref.Kind)
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", ref, err)
	}
	if a.RevisionNeedsHistory() {
		return cache.Facts(ctx, ref)
	}
	return cache.targetFacts(a, ref)
}

// FromCache reports whether TargetFacts reads src's facts from the
// informer caches alone, without a request to the API server.
func FromCache(src any) bool {
	switch src.(type) {
	case Cached, Caches:
		return true
	}
	return false
}

// targetFacts is TargetFacts from c, remembered by the resourceVersion of
// the workload in the informer's store. Each answer is a copy of its own;
// its maps are shared, as the informers' objects' were.
func (c Cached) targetFacts(a Adapter, ref policy.Ref) (*policy.Workload, error) {
	var rv string
	if store, ok := c.stores[ref.Kind]; ok && c.targets != nil {
		// The informer's own store, which holds the workload packed.
		obj, exists, err := store.Indexer.GetByKey(ref.Namespace + "/" + ref.Name)
		if err != nil {
			return nil, fmt.Errorf("read %s: %w", ref, err)
		}
		if !exists {
			return nil, nil
		}
		if p, ok := obj.(*packed); ok {
			rv = p.resourceVersion
			if t, ok := c.targets.Get(ref); ok && t.(targetFacts).resourceVersion == rv {
				w := *t.(targetFacts).facts
				return &w, nil
			}
		}
	}
	obj, err := a.Lookup(c, ref.Namespace, ref.Name)
	if err != nil {
		return notFoundIsNil(ref, err)
	}
	w := obj.Facts(nil)
	if rv != "" && obj.Meta().ResourceVersion == rv {
		remembered := *w
		c.targets.Add(ref, targetFacts{resourceVersion: rv, facts: &remembered})
	}
	return w, nil
}
