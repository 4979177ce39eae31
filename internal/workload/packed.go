package workload

import (
	"fmt"

	appsv1 "k8s.io/api/apps/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	"k8s.io/client-go/tools/cache"

	"github.com/autorollbackd/autorollbackd/internal/kinds"
)

// packed is an object as its informer keeps it: its protobuf encoding, as
// the API server sent it less what Transform and the kind's trim drop. A
// Deployment decoded takes about four times the memory of its encoding,
// and a cluster-wide cache holds every workload of the cluster and its
// revisions, opted in or not, while an alert reads one of them. Each read
// decodes a fresh copy (unpacking).
type packed struct {
	namespace, name, resourceVersion string
	// acted says whether the workload carries kinds.AnnotationActed, which
	// actedIndex indexes without decoding every workload.
	acted bool
	// controller is the UID of its controller, which controllerIndex
	// indexes.
	controller types.UID
	data       []byte
}

// GetObjectMeta gives the store its key and the namespace index its value.
func (p *packed) GetObjectMeta() metav1.Object {
	return &metav1.ObjectMeta{Namespace: p.namespace, Name: p.name}
}

// message is an API type that encodes itself as protobuf.
type message[T any] interface {
	*T
	metav1.Object
	Marshal() ([]byte, error)
	Unmarshal([]byte) error
}

// pack returns Transform followed by trim (nil for none) and packing, for
// the informer of the objects of type T. It leaves what it already packed,
// and deletion tombstones, as they are.
func pack[T any, P message[T]](trim func(P)) cache.TransformFunc {
	return func(obj any) (any, error) {
		w, ok := obj.(P)
		if !ok {
			return obj, nil
		}
		if _, err := Transform(obj); err != nil {
			return nil, err
		}
		if trim != nil {
			trim(w)
		}
		data, err := w.Marshal()
		if err != nil {
			return nil, fmt.Errorf("pack %s/%s for the cache: %w", w.GetNamespace(), w.GetName(), err)
		}
		p := &packed{namespace: w.GetNamespace(), name: w.GetName(), resourceVersion: w.GetResourceVersion(), data: data}
		_, p.acted = w.GetAnnotations()[kinds.AnnotationActed]
		if ref := metav1.GetControllerOfNoCopy(w); ref != nil {
			p.controller = ref.UID
		}
		return p, nil
	}
}

// The transforms of the informers.
var (
	deploymentTransform         = pack[appsv1.Deployment](nil)
	statefulSetTransform        = pack[appsv1.StatefulSet](nil)
	daemonSetTransform          = pack[appsv1.DaemonSet](nil)
	replicaSetTransform         = pack[metav1.PartialObjectMetadata](trimReplicaSet)
	controllerRevisionTransform = pack[appsv1.ControllerRevision](nil)
)

// unpack decodes what pack packed; anything else is returned as it
// is (objects put into an informer's store by hand, as tests do).
func unpack[T any, P message[T]](obj any) (any, error) {
	p, ok := obj.(*packed)
	if !ok {
		return obj, nil
	}
	w := P(new(T))
	if err := w.Unmarshal(p.data); err != nil {
		return nil, fmt.Errorf("unpack %s/%s from the cache: %w", p.namespace, p.name, err)
	}
	return w, nil
}

// unpacking is an informer's indexer whose reads decode the packed
// objects, so that client-go's listers work over it unchanged. Each read
// returns a copy of its own: writing into it cannot reach the cache.
type unpacking struct {
	cache.Indexer
	unpack func(any) (any, error)
}

func unpackingIndexer[T any, P message[T]](inf cache.SharedIndexInformer) cache.Indexer {
	return unpacking{Indexer: inf.GetIndexer(), unpack: unpack[T, P]}
}

func (u unpacking) all(objs []any, err error) ([]any, error) {
	if err != nil {
		return nil, err
	}
	out := make([]any, 0, len(objs))
	for _, o := range objs {
		w, err := u.unpack(o)
		if err != nil {
			return nil, err
		}
		out = append(out, w)
	}
	return out, nil
}

func (u unpacking) one(obj any, exists bool, err error) (any, bool, error) {
	if err != nil || !exists {
		return nil, exists, err
	}
	w, err := u.unpack(obj)
	return w, err == nil, err
}

func (u unpacking) Get(obj any) (any, bool, error) { return u.one(u.Indexer.Get(obj)) }

func (u unpacking) GetByKey(key string) (any, bool, error) { return u.one(u.Indexer.GetByKey(key)) }

func (u unpacking) Index(name string, obj any) ([]any, error) {
	return u.all(u.Indexer.Index(name, obj))
}

func (u unpacking) ByIndex(name, value string) ([]any, error) {
	return u.all(u.Indexer.ByIndex(name, value))
}

// List has no error to return: a workload that does not decode, which
// only a defect can cause, is reported to client-go's error handlers and
// left out.
func (u unpacking) List() []any {
	objs := u.Indexer.List()
	out := make([]any, 0, len(objs))
	for _, o := range objs {
		w, err := u.unpack(o)
		if err != nil {
			utilruntime.HandleError(err)
			continue
		}
		out = append(out, w)
	}
	return out
}

// actedIndex indexes the workloads that carry kinds.AnnotationActed under
// actedValue.
const (
	actedIndex = "autorollbackd.acted"
	actedValue = "acted"
)

func actedIndexFunc(obj any) ([]string, error) {
	switch o := obj.(type) {
	case *packed:
		if o.acted {
			return []string{actedValue}, nil
		}
	case metav1.Object:
		if _, ok := o.GetAnnotations()[kinds.AnnotationActed]; ok {
			return []string{actedValue}, nil
		}
	}
	return nil, nil
}
