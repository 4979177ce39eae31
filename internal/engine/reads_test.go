package engine

import (
	"context"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/autorollbackd/autorollbackd/internal/escalate"
	"github.com/autorollbackd/autorollbackd/internal/policy"
	"github.com/autorollbackd/autorollbackd/internal/verify"
)

// liveReads counts the reads of a FactSource.
type liveReads struct {
	FactSource
	n atomic.Int32
}

func (l *liveReads) Facts(ctx context.Context, ref policy.Ref) (*policy.Workload, error) {
	l.n.Add(1)
	return l.FactSource.Facts(ctx, ref)
}

// getCounter counts a client's GET requests by path.
type getCounter struct {
	mu   sync.Mutex
	gets map[string]int
	next http.RoundTripper
}

func (c *getCounter) RoundTrip(r *http.Request) (*http.Response, error) {
	if r.Method == http.MethodGet {
		c.mu.Lock()
		c.gets[r.URL.Path]++
		c.mu.Unlock()
	}
	return c.next.RoundTrip(r)
}

func (c *getCounter) count(suffix string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := 0
	for path, k := range c.gets {
		if strings.HasSuffix(path, suffix) {
			n += k
		}
	}
	return n
}

// TestPlainRollbackReadsTheInformers: once a plain rollback is done, what
// its incident reads of the workload to take the evidence (the target
// checks, the suspect revision's ReplicaSet) and to find the post-rollback
// tasks it names, none of them due, comes from the informers: the API
// server is not asked for the workload or its ReplicaSets.
func TestPlainRollbackReadsTheInformers(t *testing.T) {
	f := newFixture(t, optedIn, nil)
	live := &liveReads{}
	gets := &getCounter{gets: map[string]int{}}
	e := f.startEngine(t, policy.DefaultConfig(), 1, func(_ *verify.Config, _ *escalate.Config, o *Options) {
		live.FactSource = o.Live
		o.Live = live
		cfg := rest.CopyConfig(f.c.REST)
		cfg.WrapTransport = func(rt http.RoundTripper) http.RoundTripper { gets.next = rt; return gets }
		cs, err := kubernetes.NewForConfig(cfg)
		if err != nil {
			t.Fatal(err)
		}
		o.Client = cs
	})
	e.waitResumed(t)
	ctx := context.Background()
	n := firing(f.ns, "informers", time.Now(), map[string]string{"impact": "service_down"})
	r, err := e.Accept(ctx, n)
	if err != nil || r.Accepted != 1 {
		t.Fatalf("Accept = %+v, %v; want the alert accepted", r, err)
	}
	a := n.Alerts[0]
	rec, err := e.Record(ctx, AlertKey(policy.Alert{Fingerprint: a.Fingerprint, StartsAt: a.StartsAt}))
	if err != nil || rec.Incident == "" {
		t.Fatalf("record %+v, %v; want it handed to its incident", rec, err)
	}
	inc := e.waitResolved(t, rec.Incident)
	// The rollback came first: revision 2's pods may be gone already, but
	// its ReplicaSet is there to take the evidence of.
	if inc.Evidence == nil || inc.Evidence.Revision != 2 {
		t.Fatalf("evidence = %+v; want a snapshot of revision 2\n%s", inc.Evidence, inc.Render())
	}
	if got := live.n.Load(); got != 0 {
		t.Errorf("the workload was read from the API server %d times; want 0: the informers hold it", got)
	}
	if got := gets.count("/deployments/event-service"); got != 0 {
		t.Errorf("GET deployments/event-service: %d; want 0", got)
	}
	if got := gets.count("/replicasets"); got != 0 {
		t.Errorf("ReplicaSets read from the API server %d times; want 0", got)
	}
}
