package actuator

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	appsv1 "k8s.io/api/apps/v1"
	apiequality "k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/fake"
	"k8s.io/client-go/metadata"
	"k8s.io/client-go/rest"
	toolscache "k8s.io/client-go/tools/cache"

	"github.com/autorollbackd/autorollbackd/internal/kinds"
	"github.com/autorollbackd/autorollbackd/internal/policy"
	"github.com/autorollbackd/autorollbackd/internal/testenv"
	"github.com/autorollbackd/autorollbackd/internal/workload"
)

// informerCache returns an InformerCache over informers of the fixture's
// namespace, trimmed as the daemon's are, started and synced; they stop when
// t ends.
func (f *rollbackFixture) informerCache(t *testing.T) InformerCache {
	t.Helper()
	return NewInformerCache(map[string]*workload.Informers{f.ns: f.informers(t)})
}

// informers returns the daemon's informers of the fixture's namespace,
// started and synced; they stop when t ends.
func (f *rollbackFixture) informers(t *testing.T) *workload.Informers {
	t.Helper()
	inf, err := workload.NewInformers(f.c.Client, metadata.NewForConfigOrDie(f.c.REST), f.ns)
	if err != nil {
		t.Fatal(err)
	}
	runCtx, stop := context.WithCancel(context.Background())
	inf.Run(runCtx)
	t.Cleanup(func() {
		stop()
		inf.Shutdown()
	})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if unsynced := inf.WaitForCacheSync(ctx); len(unsynced) > 0 {
		t.Fatalf("informer cache of %v not synced within 30s", unsynced)
	}
	return inf
}

// waitSettled waits until the Deployment has rolled out revision completely,
// after which its controller has nothing left to write to it, and returns it.
func (f *rollbackFixture) waitSettled(t *testing.T, name string, revision int64) *appsv1.Deployment {
	t.Helper()
	var d *appsv1.Deployment
	testenv.Eventually(t, 30*time.Second, fmt.Sprintf("deployment %s rolled out at revision %d", name, revision), func(ctx context.Context) (bool, string) {
		var err error
		d, err = f.c.Client.AppsV1().Deployments(f.ns).Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return false, err.Error()
		}
		want, st := *d.Spec.Replicas, d.Status
		return st.ObservedGeneration >= d.Generation && d.Annotations[kinds.AnnotationDeploymentRevision] == fmt.Sprint(revision) &&
				st.Replicas == want && st.UpdatedReplicas == want && st.AvailableReplicas == want,
			fmt.Sprintf("revision %s, observed %d of generation %d, status %+v", d.Annotations[kinds.AnnotationDeploymentRevision], st.ObservedGeneration, d.Generation, st)
	})
	return d
}

// waitCached waits until the Deployment has settled at revision and cache
// holds it as the API server does, with its current ReplicaSet.
func (f *rollbackFixture) waitCached(t *testing.T, cache Cache, name string, revision int64) {
	t.Helper()
	f.waitSettled(t, name, revision)
	testenv.Eventually(t, 30*time.Second, fmt.Sprintf("deployment %s in the cache", name), func(ctx context.Context) (bool, string) {
		live, err := f.c.Client.AppsV1().Deployments(f.ns).Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return false, err.Error()
		}
		cached, err := cache.Deployment(f.ns, name)
		if err != nil {
			return false, err.Error()
		}
		if cached.ResourceVersion != live.ResourceVersion {
			return false, fmt.Sprintf("cached resourceVersion %s, live %s", cached.ResourceVersion, live.ResourceVersion)
		}
		rss, err := cache.ReplicaSets(live, labels.SelectorFromSet(live.Spec.Selector.MatchLabels))
		if err != nil {
			return false, err.Error()
		}
		for _, rs := range rss {
			if rs.Annotations[kinds.AnnotationDeploymentRevision] == fmt.Sprint(revision) {
				return true, ""
			}
		}
		return false, fmt.Sprintf("no cached ReplicaSet of revision %d among %d", revision, len(rss))
	})
}

// callLog records the requests of a client: method, path below the
// namespace, and status code.
type callLog struct {
	mu    sync.Mutex
	ns    string
	calls []string
}

type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

func (l *callLog) wrap(rt http.RoundTripper) http.RoundTripper {
	return roundTripFunc(func(r *http.Request) (*http.Response, error) {
		resp, err := rt.RoundTrip(r)
		code := 0
		if resp != nil {
			code = resp.StatusCode
		}
		path := strings.TrimPrefix(r.URL.Path, "/apis/apps/v1/namespaces/"+l.ns+"/")
		if r.Method == http.MethodGet && r.URL.Query().Get("resourceVersion") == "0" {
			path += "?resourceVersion=0" // from the API server's watch cache
		}
		l.mu.Lock()
		l.calls = append(l.calls, fmt.Sprintf("%s %s %d", r.Method, path, code))
		l.mu.Unlock()
		return resp, err
	})
}

func (l *callLog) get() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.calls)
}

// countingClient returns an admin client that logs every request it makes.
func (f *rollbackFixture) countingClient(t *testing.T) (kubernetes.Interface, *callLog) {
	t.Helper()
	log := &callLog{ns: f.ns}
	rc := rest.CopyConfig(f.c.REST)
	rc.Wrap(log.wrap)
	cs, err := kubernetes.NewForConfig(rc)
	if err != nil {
		t.Fatal(err)
	}
	return cs, log
}

// fakeCache serves one Deployment and its ReplicaSets' metadata as they
// were when snapshot read them, whatever has happened since, and counts its
// reads.
type fakeCache struct {
	d     *appsv1.Deployment
	rss   []*appsv1.ReplicaSet
	reads atomic.Int32
}

func (c *fakeCache) Deployment(namespace, name string) (*appsv1.Deployment, error) {
	c.reads.Add(1)
	if c.d == nil || c.d.Namespace != namespace || c.d.Name != name {
		return nil, apierrors.NewNotFound(appsv1.Resource("deployments"), name)
	}
	return c.d, nil
}

func (c *fakeCache) ReplicaSets(owner metav1.Object, selector labels.Selector) ([]*metav1.PartialObjectMetadata, error) {
	var out []*metav1.PartialObjectMetadata
	for _, rs := range c.rss {
		if rs.Namespace == owner.GetNamespace() && selector.Matches(labels.Set(rs.Labels)) {
			out = append(out, &metav1.PartialObjectMetadata{TypeMeta: rs.TypeMeta, ObjectMeta: rs.ObjectMeta})
		}
	}
	return out, nil
}

// snapshot reads the Deployment and its ReplicaSets into a fakeCache.
func (f *rollbackFixture) snapshot(t *testing.T, name string) *fakeCache {
	t.Helper()
	ctx := context.Background()
	d, err := f.c.Client.AppsV1().Deployments(f.ns).Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	list, err := f.c.Client.AppsV1().ReplicaSets(f.ns).List(ctx, metav1.ListOptions{LabelSelector: "app=" + name})
	if err != nil {
		t.Fatal(err)
	}
	c := &fakeCache{d: d}
	for i := range list.Items {
		c.rss = append(c.rss, &list.Items[i])
	}
	return c
}

func (c *fakeCache) replicaSet(t *testing.T, revision int64) *appsv1.ReplicaSet {
	t.Helper()
	for _, rs := range c.rss {
		if rs.Annotations[kinds.AnnotationDeploymentRevision] == fmt.Sprint(revision) {
			return rs
		}
	}
	t.Fatalf("no ReplicaSet of revision %d in the snapshot", revision)
	return nil
}

// named returns requests with each "{revision N}" replaced by the name of
// the ReplicaSet of revision N of the named Deployment.
func (f *rollbackFixture) named(t *testing.T, deployment string, requests []string) []string {
	t.Helper()
	list, err := f.c.Client.AppsV1().ReplicaSets(f.ns).List(context.Background(), metav1.ListOptions{LabelSelector: "app=" + deployment})
	if err != nil {
		t.Fatal(err)
	}
	out := slices.Clone(requests)
	for _, rs := range list.Items {
		placeholder := fmt.Sprintf("{revision %s}", rs.Annotations[kinds.AnnotationDeploymentRevision])
		for i := range out {
			out[i] = strings.ReplaceAll(out[i], placeholder, rs.Name)
		}
	}
	for _, r := range out {
		if strings.Contains(r, "{revision") {
			t.Fatalf("no ReplicaSet of Deployment %s for %q", deployment, r)
		}
	}
	return out
}

// rolledBackOnce checks that the Deployment was rolled back from 2 to 1 by
// one write: it is at revision 3, on the template of revision 1.
func (f *rollbackFixture) rolledBackOnce(t *testing.T, name, incident string) *appsv1.Deployment {
	t.Helper()
	d := f.waitDeployment(t, name, 3)
	if img := d.Spec.Template.Spec.Containers[0].Image; img != "event-service:v1" {
		t.Errorf("image = %s, want event-service:v1", img)
	}
	if d.Annotations[kinds.AnnotationRolledBackFrom] != "2" || d.Annotations[kinds.AnnotationRolledBackTo] != "1" || d.Annotations[kinds.AnnotationRolledBackFor] != incident {
		t.Errorf("record annotations = %v", d.Annotations)
	}
	return d
}

// TestCachedRollbackSkipsTheReads: from a fresh cache the rollback is two
// requests, the GET of the one ReplicaSet whose template it writes (the
// cache holds ReplicaSets' metadata only) and the PATCH, where live reads
// cost a GET and a LIST before it.
// The informers keep each Deployment and ReplicaSet packed, and every read
// decodes a copy of its own that equals what the API server returns,
// managed fields aside; the workloads rolled back before their records are
// found without decoding the others.
func TestInformersKeepWorkloadsPacked(t *testing.T) {
	f := newRollbackFixture(t)
	f.deployment(t, "packed", "registry.example/packed:v1", "registry.example/packed:v2")
	f.deployment(t, "other", "registry.example/other:v1")
	inf := f.informers(t)
	cache := NewInformerCache(map[string]*workload.Informers{f.ns: inf})
	f.waitCached(t, cache, "packed", 2)

	for kind, store := range map[string]toolscache.Indexer{"Deployments": inf.Deployments.GetIndexer(), "ReplicaSets": inf.ReplicaSets.GetIndexer()} {
		objs := store.List()
		for _, obj := range objs {
			if m, ok := obj.(metav1.Object); ok {
				t.Errorf("the informer of %s holds %s decoded", kind, m.GetName())
			}
		}
		if len(objs) < 2 {
			t.Errorf("the informer of %s holds %d objects, want at least 2", kind, len(objs))
		}
	}
	api := f.c.Client.AppsV1().Deployments(f.ns)
	testenv.Eventually(t, 30*time.Second, "the cached Deployment equal to the live one", func(ctx context.Context) (bool, string) {
		live, err := api.Get(ctx, "packed", metav1.GetOptions{})
		if err != nil {
			return false, err.Error()
		}
		cached, err := cache.Deployment(f.ns, "packed")
		if err != nil {
			return false, err.Error()
		}
		live.ManagedFields = nil
		return apiequality.Semantic.DeepEqual(cached, live), fmt.Sprintf("cached %+v\nlive %+v", cached, live)
	})
	first, err := cache.Deployment(f.ns, "packed")
	if err != nil {
		t.Fatal(err)
	}
	first.Spec.Template.Spec.Containers[0].Image = "written"
	first.Annotations["written"] = "yes"
	second, err := cache.Deployment(f.ns, "packed")
	if err != nil {
		t.Fatal(err)
	}
	if second.Spec.Template.Spec.Containers[0].Image != "registry.example/packed:v2" || second.Annotations["written"] != "" {
		t.Errorf("a write into one read reached the next: image %s, annotations %v", second.Spec.Template.Spec.Containers[0].Image, second.Annotations)
	}

	patch := fmt.Appendf(nil, `{"metadata":{"annotations":{%q:%q}}}`, kinds.AnnotationActed, `{"incident":"inc-packed"}`)
	if _, err := api.Patch(context.Background(), "packed", types.MergePatchType, patch, metav1.PatchOptions{}); err != nil {
		t.Fatal(err)
	}
	cached := workload.NewCached(inf)
	testenv.Eventually(t, 30*time.Second, "the acted Deployment listed", func(context.Context) (bool, string) {
		acted, err := cached.Acted()
		if err != nil {
			return false, err.Error()
		}
		var names []string
		for _, a := range acted {
			names = append(names, string(a.Kind)+"/"+a.Meta.GetName()+" "+a.Meta.GetAnnotations()[kinds.AnnotationActed])
		}
		return slices.Equal(names, []string{"Deployment/packed {\"incident\":\"inc-packed\"}"}), fmt.Sprint(names)
	})
}

func TestCachedRollbackSkipsTheReads(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name   string
		cached bool
		want   []string
	}{
		{"no cache", false, []string{"GET deployments/reads 200", "GET replicasets 200", "PATCH deployments/reads 200"}},
		{"informer cache", true, []string{"GET replicasets/{revision 1}?resourceVersion=0 200", "PATCH deployments/reads 200"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			f := newRollbackFixture(t)
			var cache Cache
			if tc.cached {
				cache = f.informerCache(t)
			}
			f.deployment(t, "reads", "event-service:v1", "event-service:v2-bad")
			if tc.cached {
				f.waitCached(t, cache, "reads", 2)
			} else {
				f.waitSettled(t, "reads", 2)
			}
			// Named before the rollback renumbers revision 1.
			want := f.named(t, "reads", tc.want)
			client, log := f.countingClient(t)
			act, _ := newCachedActuator(t, client, cache)
			res, err := act.Rollback(context.Background(), f.request(policy.KindDeployment, "reads", "inc-reads"), 2, 1)
			if err != nil || res.Outcome != OutcomeApplied {
				t.Fatalf("Rollback = %+v, %v", res, err)
			}
			if got := log.get(); !slices.Equal(got, want) {
				t.Errorf("requests = %q, want %q", got, want)
			}
			f.rolledBackOnce(t, "reads", "inc-reads")
		})
	}
}

// TestStaleCache: a cache behind the API server never decides a write. A
// cached Deployment whose spec, annotations or revision are behind fails the
// PATCH's tests (the API server raises a Deployment's generation for
// annotations too), the refusal reads as a Conflict, and the retry reads
// live and does what the live Deployment calls for: the rollback, once, or
// a refusal. A label the cache missed does not fail the PATCH, and stays.
func TestStaleCache(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	for _, tc := range []struct {
		name   string
		change func(t *testing.T, f *rollbackFixture)
		// wantErr is the refusal the live Deployment calls for; nil means
		// the rollback.
		wantErr error
		want    []string
		image   string
	}{
		{
			name: "label changed",
			change: func(t *testing.T, f *rollbackFixture) {
				_, err := f.c.Client.AppsV1().Deployments(f.ns).Patch(ctx, "stale", types.MergePatchType, []byte(`{"metadata":{"labels":{"touched":"yes"}}}`), metav1.PatchOptions{})
				if err != nil {
					t.Fatal(err)
				}
			},
			want:  []string{"GET replicasets/{revision 1}?resourceVersion=0 200", "PATCH deployments/stale 200"},
			image: "event-service:v1",
		},
		{
			name: "annotation changed",
			change: func(t *testing.T, f *rollbackFixture) {
				_, err := f.c.Client.AppsV1().Deployments(f.ns).Patch(ctx, "stale", types.MergePatchType, []byte(`{"metadata":{"labels":{"touched":"yes"},"annotations":{"other-team/note":"new"}}}`), metav1.PatchOptions{})
				if err != nil {
					t.Fatal(err)
				}
				f.waitSettled(t, "stale", 2)
			},
			// The refused PATCH, the read that finds the tests no longer
			// hold, and the live retry.
			want: []string{"GET replicasets/{revision 1}?resourceVersion=0 200", "PATCH deployments/stale 422", "GET deployments/stale 200",
				"GET deployments/stale 200", "GET replicasets 200", "PATCH deployments/stale 200"},
			image: "event-service:v1",
		},
		{
			name: "paused since",
			change: func(t *testing.T, f *rollbackFixture) {
				_, err := f.c.Client.AppsV1().Deployments(f.ns).Patch(ctx, "stale", types.MergePatchType, []byte(`{"spec":{"paused":true}}`), metav1.PatchOptions{})
				if err != nil {
					t.Fatal(err)
				}
			},
			wantErr: ErrPaused,
			want:    []string{"GET replicasets/{revision 1}?resourceVersion=0 200", "PATCH deployments/stale 422", "GET deployments/stale 200", "GET deployments/stale 200"},
			image:   "event-service:v2-bad",
		},
		{
			name: "rolled out since",
			change: func(t *testing.T, f *rollbackFixture) {
				f.setDeploymentImage(t, "stale", "event-service:v3-fix")
				f.waitSettled(t, "stale", 3)
			},
			wantErr: ErrChanged,
			want:    []string{"GET replicasets/{revision 1}?resourceVersion=0 200", "PATCH deployments/stale 422", "GET deployments/stale 200", "GET deployments/stale 200"},
			image:   "event-service:v3-fix",
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			f := newRollbackFixture(t)
			f.deployment(t, "stale", "event-service:v1", "event-service:v2-bad")
			f.waitSettled(t, "stale", 2)
			cache := f.snapshot(t, "stale")
			want := f.named(t, "stale", tc.want)
			tc.change(t, f)

			client, log := f.countingClient(t)
			act, _ := newCachedActuator(t, client, cache)
			res, err := act.Rollback(ctx, f.request(policy.KindDeployment, "stale", "inc-stale"), 2, 1)
			if tc.wantErr == nil {
				if err != nil || res.Outcome != OutcomeApplied {
					t.Fatalf("Rollback = %+v, %v; want it applied", res, err)
				}
				d := f.rolledBackOnce(t, "stale", "inc-stale")
				if d.Labels["touched"] != "yes" {
					t.Errorf("labels = %v: the rollback lost the change the cache missed", d.Labels)
				}
			} else if !errors.Is(err, tc.wantErr) {
				t.Fatalf("Rollback = %+v, %v; want %v", res, err, tc.wantErr)
			}
			if got := log.get(); !slices.Equal(got, want) {
				t.Errorf("requests = %q, want %q", got, want)
			}
			if n := cache.reads.Load(); n != 1 {
				t.Errorf("cache read %d times, want once: only the first attempt may use it", n)
			}
			d, err := f.c.Client.AppsV1().Deployments(f.ns).Get(ctx, "stale", metav1.GetOptions{})
			if err != nil {
				t.Fatal(err)
			}
			if img := d.Spec.Template.Spec.Containers[0].Image; img != tc.image {
				t.Errorf("image = %s, want %s", img, tc.image)
			}
		})
	}
}

// TestCachedRefusalIsConfirmedLive: whatever the cache says that would end
// the rollback without a write, the live Deployment is asked again; here it
// is fine, so the rollback happens.
func TestCachedRefusalIsConfirmedLive(t *testing.T) {
	t.Parallel()
	f := newRollbackFixture(t)
	for _, tc := range []struct {
		name  string
		stale func(t *testing.T, c *fakeCache, req Request)
		// why is in the log line of the cached outcome the live read undid.
		why string
		// read is the revision whose ReplicaSet the cached attempt read by
		// name, if it got that far; 0 if not.
		read int64
		// readAgain: the watch cache's copy did not show the revision
		// the cache did, so it was read again from etcd.
		readAgain bool
	}{
		{"paused", func(_ *testing.T, c *fakeCache, _ Request) { c.d.Spec.Paused = true }, ErrPaused.Error(), 0, false},
		{"other revision", func(_ *testing.T, c *fakeCache, _ Request) { c.d.Annotations[kinds.AnnotationDeploymentRevision] = "7" }, "now at revision 7", 0, false},
		{"settling", func(_ *testing.T, c *fakeCache, _ Request) { c.d.Generation = c.d.Status.ObservedGeneration + 1 }, ErrSettling.Error(), 0, false},
		{"already done", func(_ *testing.T, c *fakeCache, req Request) {
			c.d.Annotations[kinds.AnnotationRolledBackFor], c.d.Annotations[kinds.AnnotationRolledBackFrom], c.d.Annotations[kinds.AnnotationRolledBackTo] = req.Incident, "2", "1"
		}, "outcome=noop", 0, false},
		{"no history", func(t *testing.T, c *fakeCache, _ Request) {
			target := c.replicaSet(t, 1)
			c.rss = slices.DeleteFunc(c.rss, func(rs *appsv1.ReplicaSet) bool { return rs == target })
		}, "no ReplicaSet of revision 1", 0, false},
		{"template already restored", func(t *testing.T, c *fakeCache, _ Request) {
			// The live ReplicaSet of revision 1 has the template the cached
			// Deployment shows.
			c.d.Spec.Template = *c.replicaSet(t, 1).Spec.Template.DeepCopy()
		}, "outcome=noop", 1, false},
		{"target ReplicaSet renumbered", func(t *testing.T, c *fakeCache, _ Request) {
			// The cache shows revision 2's ReplicaSet as revision 1, and not
			// the live one: the read by name finds it is revision 2.
			target := c.replicaSet(t, 1)
			c.rss = slices.DeleteFunc(c.rss, func(rs *appsv1.ReplicaSet) bool { return rs == target })
			c.replicaSet(t, 2).Annotations[kinds.AnnotationDeploymentRevision] = "1"
		}, workload.ErrRevisionMoved.Error(), 2, true},
		{"not cached", func(_ *testing.T, c *fakeCache, _ Request) { c.d = nil }, "not found", 0, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			name := strings.ToLower("refused-" + strings.ReplaceAll(tc.name, " ", "-"))
			f.deployment(t, name, "event-service:v1", "event-service:v2-bad")
			f.waitSettled(t, name, 2)
			cache := f.snapshot(t, name)
			req := f.request(policy.KindDeployment, name, "inc-refused")
			tc.stale(t, cache, req)
			// Named before the rollback renumbers revision 1.
			want := []string{"GET deployments/" + name + " 200", "GET replicasets 200", "PATCH deployments/" + name + " 200"}
			if tc.read != 0 {
				read := []string{fmt.Sprintf("GET replicasets/{revision %d}?resourceVersion=0 200", tc.read)}
				if tc.readAgain {
					read = append(read, fmt.Sprintf("GET replicasets/{revision %d} 200", tc.read))
				}
				want = f.named(t, name, append(read, want...))
			}

			client, log := f.countingClient(t)
			act, _ := newCachedActuator(t, client, cache)
			var logs bytes.Buffer
			act.logger = slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
			res, err := act.Rollback(context.Background(), req, 2, 1)
			if err != nil || res.Outcome != OutcomeApplied {
				t.Fatalf("Rollback = %+v, %v; want it applied after a live read", res, err)
			}
			if !strings.Contains(logs.String(), tc.why) {
				t.Errorf("log does not say the cache found %q:\n%s", tc.why, logs.String())
			}
			if got := log.get(); !slices.Equal(got, want) {
				t.Errorf("requests = %q, want %q", got, want)
			}
			if v := testutil.ToFloat64(act.actions.WithLabelValues("rollback", "applied", "false")); v != 1 {
				t.Errorf("actions_total{rollback,applied} = %v, want 1", v)
			}
			f.rolledBackOnce(t, name, "inc-refused")
		})
	}
}

func TestInformerCacheCoversItsNamespaces(t *testing.T) {
	d := &appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Namespace: "a", Name: "web", UID: "d-1", Labels: map[string]string{"app": "web"}}}
	rs := &metav1.PartialObjectMetadata{ObjectMeta: metav1.ObjectMeta{Namespace: "a", Name: "web-1", Labels: map[string]string{"app": "web"},
		OwnerReferences: []metav1.OwnerReference{{APIVersion: "apps/v1", Kind: "Deployment", Name: "web", UID: "d-1", Controller: new(true)}}}}
	other := &metav1.PartialObjectMetadata{ObjectMeta: metav1.ObjectMeta{Namespace: "a", Name: "web-0", Labels: map[string]string{"app": "web"}}}
	informers := func(ns string) map[string]*workload.Informers {
		inf, err := workload.NewInformers(fake.NewClientset(), nil, ns)
		if err != nil {
			t.Fatal(err)
		}
		// Filled by hand: these informers are never started.
		if err := inf.Deployments.GetIndexer().Add(d); err != nil {
			t.Fatal(err)
		}
		for _, r := range []*metav1.PartialObjectMetadata{rs, other} {
			if err := inf.ReplicaSets.GetIndexer().Add(r); err != nil {
				t.Fatal(err)
			}
		}
		return map[string]*workload.Informers{ns: inf}
	}
	sel := labels.SelectorFromSet(labels.Set{"app": "web"})
	for _, tc := range []struct {
		name      string
		informers map[string]*workload.Informers
		ns        string
		found     bool
	}{
		{"namespaced, its namespace", informers("a"), "a", true},
		{"namespaced, another namespace", informers("b"), "a", false},
		{"cluster-wide", informers(""), "a", true},
		{"no informers", nil, "a", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := NewInformerCache(tc.informers)
			got, err := c.Deployment(tc.ns, "web")
			if tc.found != (err == nil) || (err != nil && !apierrors.IsNotFound(err)) {
				t.Fatalf("Deployment = %v, %v; found %v", got, err, tc.found)
			}
			// Only the one the Deployment controls, found by the index.
			owner := &metav1.ObjectMeta{Namespace: tc.ns, Name: "web", UID: "d-1"}
			rss, err := c.ReplicaSets(owner, sel)
			if tc.found && (err != nil || len(rss) != 1 || rss[0].Name != "web-1") || !tc.found && !apierrors.IsNotFound(err) {
				t.Fatalf("ReplicaSets = %v, %v; found %v", rss, err, tc.found)
			}
		})
	}
}
