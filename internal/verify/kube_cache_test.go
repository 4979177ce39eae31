package verify

import (
	"context"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/metadata"
	"k8s.io/client-go/rest"

	"github.com/autorollbackd/autorollbackd/internal/policy"
	"github.com/autorollbackd/autorollbackd/internal/workload"
)

// requestCounter counts a client's requests by method and path.
type requestCounter struct {
	mu sync.Mutex
	n  map[string]int
}

func (c *requestCounter) count(method, pathPart string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	total := 0
	for k, n := range c.n {
		m, path, _ := strings.Cut(k, " ")
		if m == method && strings.Contains(path, pathPart) {
			total += n
		}
	}
	return total
}

type countingTransport struct {
	c    *requestCounter
	next http.RoundTripper
}

func (t countingTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	t.c.mu.Lock()
	t.c.n[r.Method+" "+r.URL.Path]++
	t.c.mu.Unlock()
	return t.next.RoundTrip(r)
}

// countedClient is a client of the cluster whose requests are counted.
func (e *kubeEnv) countedClient() (kubernetes.Interface, *requestCounter) {
	e.t.Helper()
	counter := &requestCounter{n: map[string]int{}}
	cfg := rest.CopyConfig(e.c.REST)
	cfg.WrapTransport = func(rt http.RoundTripper) http.RoundTripper { return countingTransport{c: counter, next: rt} }
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		e.t.Fatal(err)
	}
	return cs, counter
}

// informers starts the daemon's informers on the test's namespace and
// returns their caches and a function that stops them, which leaves the
// caches as they were then.
func (e *kubeEnv) informers() (workload.Caches, func()) {
	e.t.Helper()
	inf, err := workload.NewInformers(e.c.Client, metadata.NewForConfigOrDie(e.c.REST), e.ns)
	if err != nil {
		e.t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	inf.Run(ctx)
	e.t.Cleanup(func() { cancel(); inf.Shutdown() })
	sctx, scancel := context.WithTimeout(ctx, 30*time.Second)
	defer scancel()
	if unsynced := inf.WaitForCacheSync(sctx); len(unsynced) > 0 {
		e.t.Fatalf("informers not synced: %v", unsynced)
	}
	return workload.Caches{e.ns: workload.NewCached(inf)}, func() { cancel(); inf.Shutdown() }
}

// cachedVerifier is verifier with a client whose requests are counted and
// the given cache.
func (e *kubeEnv) cachedVerifier(rollout, pods time.Duration, cache Cache) (*Verifier, *requestCounter) {
	e.t.Helper()
	cs, counter := e.countedClient()
	cfg := DefaultConfig()
	cfg.PollInterval = dur(200 * time.Millisecond)
	cfg.Rollout = WaitCheck{Enabled: rollout > 0, Timeout: dur(rollout)}
	cfg.Pods = WaitCheck{Enabled: pods > 0, Timeout: dur(pods)}
	v, err := New(Options{Config: cfg, Client: cs, Cache: cache})
	if err != nil {
		e.t.Fatal(err)
	}
	return v, counter
}

// waitCached waits until the cache holds ref at generation or later.
func waitCached(t *testing.T, caches workload.Caches, ref policy.Ref, generation int64) {
	t.Helper()
	err := wait.PollUntilContextTimeout(t.Context(), 20*time.Millisecond, 30*time.Second, true, func(context.Context) (bool, error) {
		obj, err := caches.Lookup(ref)
		return err == nil && obj.Meta().Generation >= generation, nil
	})
	if err != nil {
		t.Fatalf("the cache never held %s at generation %d: %v", ref, generation, err)
	}
}

// TestKubeVerifyReadsTheCacheAfterTheFirstRead: the rollout check's first
// read goes to the API server, and every later read of the rollout and
// pods checks, the ReplicaSets included, comes from the informers once
// they hold the Deployment at that generation.
func TestKubeVerifyReadsTheCacheAfterTheFirstRead(t *testing.T) {
	e := newKubeEnv(t)
	caches, _ := e.informers()
	d := e.createDeployment("web", 2)
	ref := e.ref(policy.KindDeployment, "web")
	waitCached(t, caches, ref, d.Generation)

	v, counter := e.cachedVerifier(60*time.Second, 60*time.Second, caches)
	res := byCheck(t, v.Verify(t.Context(), ref), "rollout", "pods")
	expect(t, res["rollout"], StatusPass, `deployment "web" successfully rolled out`)
	if res["pods"].Status != StatusPass {
		t.Errorf("pods = %s %q, want pass", res["pods"].Status, res["pods"].Message)
	}
	if n := counter.count(http.MethodGet, "/deployments/web"); n != 1 {
		t.Errorf("GET deployments/web: %d requests, want the first read only", n)
	}
	if n := counter.count(http.MethodGet, "/replicasets"); n != 0 {
		t.Errorf("ReplicaSets read %d times from the API server, want 0: the cache holds them", n)
	}
	if n := counter.count(http.MethodGet, "/pods"); n == 0 {
		t.Error("the pods were never listed: the pods check judged nothing")
	}
}

// TestKubeVerifyNeverJudgesAnOlderCachedSpec: informers stopped before a
// bad rollout hold the Deployment as it was, its old rollout complete.
// The rollout check must not judge that: it reads the API server, and
// fails the rollout that never finishes. The same holds for a cache that
// holds another object of the same name (deleted and created again), at a
// later generation than the new one.
func TestKubeVerifyNeverJudgesAnOlderCachedSpec(t *testing.T) {
	e := newKubeEnv(t)
	mutate := neverReady(t, e.c)
	caches, stop := e.informers()
	d := e.createDeployment("svc", 1)
	ref := e.ref(policy.KindDeployment, "svc")
	waitCached(t, caches, ref, d.Generation)
	// The cache holds revision 1, rolled out.
	err := wait.PollUntilContextTimeout(t.Context(), 50*time.Millisecond, 60*time.Second, true, func(context.Context) (bool, error) {
		obj, err := caches.Lookup(ref)
		if err != nil {
			return false, nil
		}
		_, state := obj.RolloutStatus()
		return state == workload.RolloutDone, nil
	})
	if err != nil {
		t.Fatalf("the cache never held svc rolled out: %v", err)
	}
	stop()

	e.updateDeployment("svc", func(p *corev1.PodTemplateSpec) { mutate(p) })
	const timeout = 2 * time.Second
	v, counter := e.cachedVerifier(timeout, 0, caches)
	res := byCheck(t, v.Verify(t.Context(), ref), "rollout")
	if res["rollout"].Status != StatusFail || !strings.HasPrefix(res["rollout"].Message, "Rollout not finished within 2s") {
		t.Errorf("rollout = %s %q, want fail: the rollout of revision 2 never finishes", res["rollout"].Status, res["rollout"].Message)
	}
	if n := counter.count(http.MethodGet, "/deployments/svc"); n < 2 {
		t.Errorf("GET deployments/svc: %d requests, want one per poll: the cache is older", n)
	}

	// Deleted and created again, never ready: the stopped cache holds the
	// old object, rolled out, at the generation of the new one.
	if err := e.c.Client.AppsV1().Deployments(e.ns).Delete(t.Context(), "svc", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	err = wait.PollUntilContextTimeout(t.Context(), 50*time.Millisecond, 30*time.Second, true, func(ctx context.Context) (bool, error) {
		_, err := e.c.Client.AppsV1().Deployments(e.ns).Get(ctx, "svc", metav1.GetOptions{})
		return err != nil, nil
	})
	if err != nil {
		t.Fatalf("svc never went away: %v", err)
	}
	again := e.createDeployment("svc", 1, func(d *appsv1.Deployment) { mutate(&d.Spec.Template) })
	if obj, err := caches.Lookup(ref); err != nil || obj.Meta().UID != d.UID || obj.Meta().Generation < again.Generation {
		t.Fatalf("the stopped cache should still hold the first svc at generation %d or later: %v", again.Generation, err)
	}
	res = byCheck(t, v.Verify(t.Context(), ref), "rollout")
	if res["rollout"].Status != StatusFail || !strings.HasPrefix(res["rollout"].Message, "Rollout not finished within 2s") {
		t.Errorf("rollout of the new svc = %s %q, want fail: the cached svc is another object", res["rollout"].Status, res["rollout"].Message)
	}
}
