package engine

import (
	"context"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"k8s.io/client-go/rest"

	"github.com/autorollbackd/autorollbackd/internal/escalate"
	"github.com/autorollbackd/autorollbackd/internal/kube"
	"github.com/autorollbackd/autorollbackd/internal/kubeclient"
	"github.com/autorollbackd/autorollbackd/internal/policy"
	"github.com/autorollbackd/autorollbackd/internal/testenv"
	"github.com/autorollbackd/autorollbackd/internal/verify"
)

// TestIntakeRequestsAreForeground checks which of the engine's requests the
// daemon's kube.Priority puts first: those Accept sends before answering
// (the alert record), not the decision worker's after it.
func TestIntakeRequestsAreForeground(t *testing.T) {
	f := newFixture(t, optedIn, nil)
	type request struct {
		verb, path string
		foreground bool
	}
	var (
		mu   sync.Mutex
		sent []request
	)
	cfg := rest.CopyConfig(f.c.REST)
	cfg.Wrap(func(rt http.RoundTripper) http.RoundTripper {
		return roundTripper(func(r *http.Request) (*http.Response, error) {
			mu.Lock()
			sent = append(sent, request{r.Method, r.URL.Path, kube.IsForeground(r.Context())})
			mu.Unlock()
			return rt.RoundTrip(r)
		})
	})
	client, err := kubeclient.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	e := f.startEngine(t, policy.DefaultConfig(), 1, func(_ *verify.Config, _ *escalate.Config, o *Options) { o.Client = client })
	e.waitResumed(t)
	// No rule matches: recorded at intake, decided "ignore" by a worker.
	n := firing(f.ns, "foreground", time.Now(), map[string]string{"impact": "nothing_known"})
	if r, err := e.Accept(context.Background(), n); err != nil || r.Accepted != 1 {
		t.Fatalf("Accept = %+v, %v; want the alert accepted", r, err)
	}
	if d := e.waitDecision(t, n); d.Outcome != policy.OutcomeIgnore {
		t.Fatalf("decision %s, want ignore", d.Outcome)
	}
	records := "/api/v1/namespaces/" + f.ns + "/configmaps"
	testenv.Eventually(t, 30*time.Second, "the record written at intake, then decided", func(context.Context) (bool, string) {
		mu.Lock()
		defer mu.Unlock()
		create := slices.IndexFunc(sent, func(r request) bool { return r.verb == http.MethodPost && r.path == records })
		update := slices.IndexFunc(sent, func(r request) bool { return r.verb == http.MethodPut && strings.HasPrefix(r.path, records+"/") })
		if create < 0 || update < 0 {
			return false, fmt.Sprintf("requests so far: %+v", sent)
		}
		if !sent[create].foreground {
			t.Errorf("the record's create at intake was sent as background")
		}
		if sent[update].foreground {
			t.Errorf("the decision worker's update of the record was sent as foreground")
		}
		return true, ""
	})
}
