package verify

import (
	"context"
	"sync"

	"k8s.io/apimachinery/pkg/types"

	"github.com/autorollbackd/autorollbackd/internal/policy"
	"github.com/autorollbackd/autorollbackd/internal/workload"
)

// Cache is a view of the workloads from the daemon's informers
// (workload.Caches). Its objects are shared and must not be changed; an
// error, NotFound included, means: read the API server instead.
type Cache interface {
	Lookup(ref policy.Ref) (workload.Object, error)
	History(ref policy.Ref, obj workload.Object) ([]workload.Revision, error)
}

// reads reads the workload of one verification. The first read goes to
// the API server. Later ones are answered from the cache once it holds the
// same object (UID) at the generation that read saw or a later one: a poll
// never judges a spec older than one already read, and a cache that lags
// only delays a verdict, as a watch that lags delays `kubectl rollout
// status`. Anything else, a cache error included, reads the API server.
type reads struct {
	v      *Verifier
	target policy.Ref

	mu         sync.Mutex // scoped checks read the labels concurrently
	uid        types.UID
	generation int64
}

// object returns the workload, and whether it came from the cache.
func (r *reads) object(ctx context.Context) (workload.Object, bool, error) {
	a, err := workload.For(r.target.Kind)
	if err != nil {
		return nil, false, err
	}
	if obj, ok := r.cached(); ok {
		return obj, true, nil
	}
	obj, err := a.Get(ctx, r.v.client, r.target.Namespace, r.target.Name)
	if err != nil {
		return nil, false, err
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if m := obj.Meta(); m.UID != r.uid || m.Generation > r.generation {
		r.uid, r.generation = m.UID, m.Generation
	}
	return obj, false, nil
}

func (r *reads) cached() (workload.Object, bool) {
	if r.v.cache == nil {
		return nil, false
	}
	r.mu.Lock()
	uid, generation := r.uid, r.generation
	r.mu.Unlock()
	if uid == "" {
		return nil, false
	}
	obj, err := r.v.cache.Lookup(r.target)
	if err != nil {
		return nil, false
	}
	if m := obj.Meta(); m.UID != uid || m.Generation < generation {
		return nil, false
	}
	return obj, true
}

// history returns the revisions of obj: from the cache when obj came from
// it, so that both are of the same moment or the revisions are newer.
func (r *reads) history(ctx context.Context, obj workload.Object, cached bool) ([]workload.Revision, error) {
	if cached {
		if h, err := r.v.cache.History(r.target, obj); err == nil {
			return h, nil
		}
	}
	a, err := workload.For(r.target.Kind)
	if err != nil {
		return nil, err
	}
	return a.History(ctx, r.v.client, obj)
}
