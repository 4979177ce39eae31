package workload

import (
	"context"
	"fmt"
	"sync"

	appsv1 "k8s.io/api/apps/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/watch"
	appsv1client "k8s.io/client-go/kubernetes/typed/apps/v1"
	appslisters "k8s.io/client-go/listers/apps/v1"
	"k8s.io/client-go/metadata"
	"k8s.io/client-go/metadata/metadatainformer"
	"k8s.io/client-go/metadata/metadatalister"
	"k8s.io/client-go/tools/cache"
)

// ReplicaSetsResource is the ReplicaSets' API resource, which the informers
// watch as metadata.
var ReplicaSetsResource = appsv1.SchemeGroupVersion.WithResource("replicasets")

// Informers are the informers the daemon reads workloads and their
// revisions from, over one namespace or the whole cluster. Deployments,
// StatefulSets and DaemonSets are cached whole: a rollback reads their
// templates. ReplicaSets are cached as metadata only: their revision
// numbers, owners, hashes and ages are all a decision needs, and the one
// ReplicaSet whose template a rollback writes is read by name when acting.
// ControllerRevisions keep their revision number, which no metadata
// carries, and drop their data (see Transform). Every object is kept as
// its protobuf encoding (packed); read them through the listers and
// indexes of Informers, which decode them.
type Informers struct {
	Deployments, StatefulSets, DaemonSets, ReplicaSets, ControllerRevisions cache.SharedIndexInformer

	mu       sync.Mutex
	shutDown bool
	running  sync.WaitGroup
}

// NewInformers returns the informers of namespace ("" for every
// namespace), each trimmed by Transform and what its kind adds to it.
// Start them with Run.
func NewInformers(c AppsClient, meta metadata.Interface, namespace string) (*Informers, error) {
	apps := c.AppsV1()
	d, ss, ds, cr := apps.Deployments(namespace), apps.StatefulSets(namespace), apps.DaemonSets(namespace), apps.ControllerRevisions(namespace)
	i := &Informers{
		Deployments:         newInformer(c, &appsv1.Deployment{}, d.List, d.Watch, workloadIndexers()),
		StatefulSets:        newInformer(c, &appsv1.StatefulSet{}, ss.List, ss.Watch, workloadIndexers()),
		DaemonSets:          newInformer(c, &appsv1.DaemonSet{}, ds.List, ds.Watch, workloadIndexers()),
		ControllerRevisions: newInformer(c, &appsv1.ControllerRevision{}, cr.List, cr.Watch, indexers()),
		ReplicaSets:         metadatainformer.NewFilteredMetadataInformer(meta, ReplicaSetsResource, namespace, 0, indexers(), nil).Informer(),
	}
	for inf, t := range map[cache.SharedIndexInformer]cache.TransformFunc{
		i.Deployments: deploymentTransform, i.StatefulSets: statefulSetTransform, i.DaemonSets: daemonSetTransform,
		i.ReplicaSets: replicaSetTransform, i.ControllerRevisions: controllerRevisionTransform,
	} {
		if err := inf.SetTransform(t); err != nil {
			return nil, fmt.Errorf("trim the cached workloads: %w", err)
		}
	}
	return i, nil
}

// AppsClient is a client of the apps API group.
type AppsClient interface {
	AppsV1() appsv1client.AppsV1Interface
}

// indexers are an informer's own: AddIndexers writes into the map given at
// construction, so informers sharing one would share each other's indexes.
func indexers() cache.Indexers {
	return cache.Indexers{cache.NamespaceIndex: cache.MetaNamespaceIndexFunc}
}

// workloadIndexers are indexers and actedIndex.
func workloadIndexers() cache.Indexers {
	i := indexers()
	i[actedIndex] = actedIndexFunc
	return i
}

// newInformer is an informer of obj's kind over a typed client's List and
// Watch; client says whether it can stream a list (fake clients cannot).
// client-go's informers/apps/v1 would do the same, but its constructors
// take the all-groups clientset, which the daemon does not build
// (docs/architecture.md#binary-size).
func newInformer[L runtime.Object](client any, obj runtime.Object, list func(context.Context, metav1.ListOptions) (L, error), watchFn func(context.Context, metav1.ListOptions) (watch.Interface, error), idx cache.Indexers) cache.SharedIndexInformer {
	lw := &cache.ListWatch{
		ListWithContextFunc:  func(ctx context.Context, o metav1.ListOptions) (runtime.Object, error) { return list(ctx, o) },
		WatchFuncWithContext: watchFn,
	}
	return cache.NewSharedIndexInformer(cache.ToListWatcherWithWatchListSemantics(lw, client), obj, 0, idx)
}

func (i *Informers) all() []cache.SharedIndexInformer {
	return []cache.SharedIndexInformer{i.Deployments, i.StatefulSets, i.DaemonSets, i.ReplicaSets, i.ControllerRevisions}
}

// Run starts the informers, to run until ctx ends; after Shutdown it starts
// nothing.
func (i *Informers) Run(ctx context.Context) {
	i.mu.Lock()
	defer i.mu.Unlock()
	if i.shutDown {
		return
	}
	for _, inf := range i.all() {
		i.running.Go(func() { inf.RunWithContext(ctx) })
	}
}

// Shutdown waits until the informers Run started have stopped, once the
// context given to Run has ended.
func (i *Informers) Shutdown() {
	i.mu.Lock()
	i.shutDown = true
	i.mu.Unlock()
	i.running.Wait()
}

// WaitForCacheSync waits until every informer has synced, or ctx ends; it
// returns the kinds of those that have not synced.
func (i *Informers) WaitForCacheSync(ctx context.Context) []string {
	var unsynced []string
	for n, inf := range i.all() {
		if !cache.WaitForCacheSync(ctx.Done(), inf.HasSynced) {
			unsynced = append(unsynced, informerKinds[n])
		}
	}
	return unsynced
}

// informerKinds name the informers of all, in its order.
var informerKinds = []string{"Deployments", "StatefulSets", "DaemonSets", "ReplicaSets", "ControllerRevisions"}

// DeploymentLister lists the Deployments of the informers, each decoded
// afresh.
func (i *Informers) DeploymentLister() appslisters.DeploymentLister {
	return appslisters.NewDeploymentLister(unpackingIndexer[appsv1.Deployment](i.Deployments))
}

// StatefulSetLister lists the StatefulSets of the informers, each decoded
// afresh.
func (i *Informers) StatefulSetLister() appslisters.StatefulSetLister {
	return appslisters.NewStatefulSetLister(unpackingIndexer[appsv1.StatefulSet](i.StatefulSets))
}

// DaemonSetLister lists the DaemonSets of the informers, each decoded
// afresh.
func (i *Informers) DaemonSetLister() appslisters.DaemonSetLister {
	return appslisters.NewDaemonSetLister(unpackingIndexer[appsv1.DaemonSet](i.DaemonSets))
}

// ReplicaSetLister lists the ReplicaSets' metadata of the informers, each
// decoded afresh.
func (i *Informers) ReplicaSetLister() metadatalister.Lister {
	return metadatalister.New(unpackingIndexer[metav1.PartialObjectMetadata](i.ReplicaSets), ReplicaSetsResource)
}

// ReplicaSetIndex finds the ReplicaSets' metadata by the UID of their
// controller, decoding only those.
type ReplicaSetIndex struct{ indexer cache.Indexer }

// ReplicaSetIndex returns the index of the informers' ReplicaSets by
// controller, adding it; call it before Run.
func (i *Informers) ReplicaSetIndex() ReplicaSetIndex {
	return ReplicaSetIndex{indexByController[metav1.PartialObjectMetadata](i.ReplicaSets)}
}

// Controlled returns the metadata of the ReplicaSets whose controller has
// the UID uid; false when there is no index (the informers stopped before
// it could be added).
func (x ReplicaSetIndex) Controlled(uid types.UID) ([]*metav1.PartialObjectMetadata, bool, error) {
	if x.indexer == nil {
		return nil, false, nil
	}
	rss, err := byController[*metav1.PartialObjectMetadata](x.indexer, uid)
	return rss, true, err
}

// ControllerRevisionLister lists the ControllerRevisions of the informers,
// without their data, each decoded afresh.
func (i *Informers) ControllerRevisionLister() appslisters.ControllerRevisionLister {
	return appslisters.NewControllerRevisionLister(unpackingIndexer[appsv1.ControllerRevision](i.ControllerRevisions))
}
