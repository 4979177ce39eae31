package actuator

import (
	"context"

	"github.com/autorollbackd/autorollbackd/internal/kubeclient"
	"github.com/autorollbackd/autorollbackd/internal/workload"
	appsv1 "k8s.io/api/apps/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	appslisters "k8s.io/client-go/listers/apps/v1"
	"k8s.io/client-go/metadata/metadatalister"
)

// Cache is a possibly stale view of Deployments and their ReplicaSets, such
// as the daemon's informers. An error, NotFound for an object or a namespace
// it does not hold in particular, makes the actuator read the API server
// instead. The actuator does not modify the objects it returns. It builds
// the rollback patch from the Deployment's annotations and pod template, so
// a transform of the informers must keep those whole (dropping managed
// fields is fine); ReplicaSets are their metadata, and the one whose
// template the rollback writes is read by name.
type Cache = workload.DeploymentCache

// Listers is a Cache over one Deployment lister and one lister of
// ReplicaSets' metadata, and the ReplicaSets' index by controller when
// there is one.
type Listers struct {
	DeploymentLister appslisters.DeploymentLister
	ReplicaSetLister metadatalister.Lister
	ReplicaSetIndex  workload.ReplicaSetIndex
}

var (
	deploymentsResource = appsv1.Resource("deployments")
	replicaSetsResource = appsv1.Resource("replicasets")
)

// Deployment returns the named Deployment.
func (l Listers) Deployment(namespace, name string) (*appsv1.Deployment, error) {
	if l.DeploymentLister == nil {
		return nil, apierrors.NewNotFound(deploymentsResource, name)
	}
	return l.DeploymentLister.Deployments(namespace).Get(name)
}

// ReplicaSets returns the metadata of the ReplicaSets of owner's namespace
// that selector matches: with the index, only those owner controls, so
// that a namespace's others are not decoded.
func (l Listers) ReplicaSets(owner metav1.Object, selector labels.Selector) ([]*metav1.PartialObjectMetadata, error) {
	if l.ReplicaSetLister == nil {
		return nil, apierrors.NewNotFound(replicaSetsResource, "")
	}
	controlled, indexed, err := l.ReplicaSetIndex.Controlled(owner.GetUID())
	if err != nil || !indexed {
		return l.ReplicaSetLister.Namespace(owner.GetNamespace()).List(selector)
	}
	out := controlled[:0]
	for _, rs := range controlled {
		if rs.Namespace == owner.GetNamespace() && selector.Matches(labels.Set(rs.Labels)) {
			out = append(out, rs)
		}
	}
	return out, nil
}

// InformerCache is a Cache over the informers of several namespaces, or of
// the whole cluster under the key "". It holds nothing of a namespace it
// does not watch.
type InformerCache map[string]Listers

// NewInformerCache returns an InformerCache over the Deployment and
// ReplicaSet informers of each namespace's informers ("" for
// cluster-wide).
func NewInformerCache(informers map[string]*workload.Informers) InformerCache {
	c := make(InformerCache, len(informers))
	for ns, inf := range informers {
		c[ns] = Listers{
			DeploymentLister: inf.DeploymentLister(),
			ReplicaSetLister: inf.ReplicaSetLister(),
			ReplicaSetIndex:  inf.ReplicaSetIndex(),
		}
	}
	return c
}

func (c InformerCache) covering(namespace string) (Listers, bool) {
	if l, ok := c[""]; ok {
		return l, true
	}
	l, ok := c[namespace]
	return l, ok
}

// Deployment returns the named Deployment.
func (c InformerCache) Deployment(namespace, name string) (*appsv1.Deployment, error) {
	l, ok := c.covering(namespace)
	if !ok {
		return nil, apierrors.NewNotFound(deploymentsResource, name)
	}
	return l.Deployment(namespace, name)
}

// ReplicaSets is Listers.ReplicaSets from the informers that cover owner's
// namespace.
func (c InformerCache) ReplicaSets(owner metav1.Object, selector labels.Selector) ([]*metav1.PartialObjectMetadata, error) {
	l, ok := c.covering(owner.GetNamespace())
	if !ok {
		return nil, apierrors.NewNotFound(replicaSetsResource, "")
	}
	return l.ReplicaSets(owner, selector)
}

// rollbackReads is where a rollback reads the workload and its history:
// the API server or a Cache. The revision whose template the rollback
// writes comes whole from the API server either way (withTemplate).
type rollbackReads interface {
	get(ctx context.Context, ad workload.Adapter, namespace, name string) (workload.Object, error)
	history(ctx context.Context, ad workload.Adapter, o workload.Object) ([]workload.Revision, error)
	withTemplate(ctx context.Context, ad workload.Adapter, o workload.Object, rev workload.Revision) (workload.Revision, error)
}

type liveReads struct{ client kubeclient.Interface }

func (r liveReads) get(ctx context.Context, ad workload.Adapter, namespace, name string) (workload.Object, error) {
	return ad.Get(ctx, r.client, namespace, name)
}

func (r liveReads) history(ctx context.Context, ad workload.Adapter, o workload.Object) ([]workload.Revision, error) {
	return ad.History(ctx, r.client, o)
}

func (r liveReads) withTemplate(ctx context.Context, ad workload.Adapter, o workload.Object, rev workload.Revision) (workload.Revision, error) {
	return ad.WithTemplate(ctx, r.client, o, rev)
}

// cachedReads copies what it reads, so that nothing the rollback does can
// write into the shared cache. Its revisions are metadata: the one the
// rollback writes is read by name from the API server.
type cachedReads struct {
	cache  Cache
	client kubeclient.Interface
}

func (r cachedReads) withTemplate(ctx context.Context, ad workload.Adapter, o workload.Object, rev workload.Revision) (workload.Revision, error) {
	return ad.WithTemplate(ctx, r.client, o, rev)
}

func (r cachedReads) get(_ context.Context, ad workload.Adapter, namespace, name string) (workload.Object, error) {
	return ad.FromCache(r.cache, namespace, name)
}

func (r cachedReads) history(_ context.Context, ad workload.Adapter, o workload.Object) ([]workload.Revision, error) {
	return ad.CacheHistory(r.cache, o)
}
