package engine

import (
	"context"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"k8s.io/client-go/rest"

	"github.com/autorollbackd/autorollbackd/internal/escalate"
	"github.com/autorollbackd/autorollbackd/internal/kubeclient"
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

// TestPlainRollbackReadsTheInformers: once a plain rollback is done, what
// its incident reads of the workload to take the evidence (the target
// checks, the suspect revision's ReplicaSet) and to find the post-rollback
// tasks it names, none of them due, comes from the informers: the API
// server is not asked for the workload or its ReplicaSets.
func TestPlainRollbackReadsTheInformers(t *testing.T) {
	f := newFixture(t, optedIn, nil)
	live := &liveReads{}
	var (
		mu   sync.Mutex
		gets []string // paths
	)
	cfg := rest.CopyConfig(f.c.REST)
	cfg.Wrap(func(rt http.RoundTripper) http.RoundTripper {
		return roundTripper(func(r *http.Request) (*http.Response, error) {
			if r.Method == http.MethodGet {
				mu.Lock()
				gets = append(gets, r.URL.Path)
				mu.Unlock()
			}
			return rt.RoundTrip(r)
		})
	})
	client, err := kubeclient.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	e := f.startEngine(t, policy.DefaultConfig(), 1, func(_ *verify.Config, _ *escalate.Config, o *Options) {
		live.FactSource = o.Live
		o.Live = live
		o.Client = client
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
	mu.Lock()
	defer mu.Unlock()
	for _, path := range gets {
		if strings.HasSuffix(path, "/deployments/event-service") || strings.Contains(path, "/replicasets") {
			t.Errorf("GET %s; want no read of the workload or its ReplicaSets", path)
		}
	}
}
