package actuator

import (
	"context"
	"fmt"

	appsv1 "k8s.io/api/apps/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	appslisters "k8s.io/client-go/listers/apps/v1"
)

// Cache is a possibly stale view of Deployments and their ReplicaSets, such
// as the daemon's informers. An error, NotFound for an object or a namespace
// it does not hold in particular, makes the actuator read the API server
// instead. The actuator does not modify the objects it returns. It builds
// the rollback patch from their annotations and pod templates, so a
// transform of the informers must keep those whole (dropping managed fields
// is fine).
type Cache interface {
	Deployment(namespace, name string) (*appsv1.Deployment, error)
	ReplicaSets(namespace string, selector labels.Selector) ([]*appsv1.ReplicaSet, error)
}

// Listers is a Cache over one Deployment lister and one ReplicaSet lister.
type Listers struct {
	DeploymentLister appslisters.DeploymentLister
	ReplicaSetLister appslisters.ReplicaSetLister
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

// ReplicaSets returns the ReplicaSets of namespace that selector matches.
func (l Listers) ReplicaSets(namespace string, selector labels.Selector) ([]*appsv1.ReplicaSet, error) {
	if l.ReplicaSetLister == nil {
		return nil, apierrors.NewNotFound(replicaSetsResource, "")
	}
	return l.ReplicaSetLister.ReplicaSets(namespace).List(selector)
}

// InformerCache is a Cache over the informers of several namespaces, or of
// the whole cluster under the key "". It holds nothing of a namespace it
// does not watch.
type InformerCache map[string]Listers

// NewInformerCache returns an InformerCache over the Deployment and
// ReplicaSet listers of factories, keyed by the namespace each watches (""
// for cluster-wide). It registers those informers with their factories, so
// call it before starting them.
func NewInformerCache(factories map[string]informers.SharedInformerFactory) InformerCache {
	c := make(InformerCache, len(factories))
	for ns, f := range factories {
		apps := f.Apps().V1()
		c[ns] = Listers{DeploymentLister: apps.Deployments().Lister(), ReplicaSetLister: apps.ReplicaSets().Lister()}
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

// ReplicaSets returns the ReplicaSets of namespace that selector matches.
func (c InformerCache) ReplicaSets(namespace string, selector labels.Selector) ([]*appsv1.ReplicaSet, error) {
	l, ok := c.covering(namespace)
	if !ok {
		return nil, apierrors.NewNotFound(replicaSetsResource, "")
	}
	return l.ReplicaSets(namespace, selector)
}

// deploymentReads is where a Deployment rollback reads the Deployment and its
// ReplicaSets: the API server or a Cache.
type deploymentReads interface {
	deployment(ctx context.Context, namespace, name string) (*appsv1.Deployment, error)
	replicaSets(ctx context.Context, namespace string, selector labels.Selector) ([]*appsv1.ReplicaSet, error)
}

type liveReads struct{ client kubernetes.Interface }

func (r liveReads) deployment(ctx context.Context, namespace, name string) (*appsv1.Deployment, error) {
	return r.client.AppsV1().Deployments(namespace).Get(ctx, name, metav1.GetOptions{})
}

func (r liveReads) replicaSets(ctx context.Context, namespace string, selector labels.Selector) ([]*appsv1.ReplicaSet, error) {
	list, err := r.client.AppsV1().ReplicaSets(namespace).List(ctx, metav1.ListOptions{LabelSelector: selector.String()})
	if err != nil {
		return nil, fmt.Errorf("list ReplicaSets: %w", err)
	}
	rss := make([]*appsv1.ReplicaSet, len(list.Items))
	for i := range list.Items {
		rss[i] = &list.Items[i]
	}
	return rss, nil
}

// cachedReads copies what it reads, so that nothing the rollback does can
// write into the shared cache.
type cachedReads struct{ cache Cache }

func (r cachedReads) deployment(_ context.Context, namespace, name string) (*appsv1.Deployment, error) {
	d, err := r.cache.Deployment(namespace, name)
	if err != nil {
		return nil, fmt.Errorf("read Deployment from cache: %w", err)
	}
	if d == nil {
		return nil, apierrors.NewNotFound(deploymentsResource, name)
	}
	return d.DeepCopy(), nil
}

func (r cachedReads) replicaSets(_ context.Context, namespace string, selector labels.Selector) ([]*appsv1.ReplicaSet, error) {
	rss, err := r.cache.ReplicaSets(namespace, selector)
	if err != nil {
		return nil, fmt.Errorf("list ReplicaSets from cache: %w", err)
	}
	out := make([]*appsv1.ReplicaSet, 0, len(rss))
	for _, rs := range rss {
		if rs != nil {
			out = append(out, rs.DeepCopy())
		}
	}
	return out, nil
}
