package engine

import (
	"context"
	"errors"
	"net/http"
	"sync/atomic"
	"testing"
	"time"

	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/autorollbackd/autorollbackd/internal/escalate"
	"github.com/autorollbackd/autorollbackd/internal/policy"
	"github.com/autorollbackd/autorollbackd/internal/verify"
	"github.com/autorollbackd/autorollbackd/internal/webhook"
)

// An API server that takes requests and never answers turns into a 503
// Alertmanager retries, not a notification that hangs: what intake sends
// carries the intake's deadline, though intake arms it only when it first
// needs the API server.
func TestIntakeGivesUpOnAStalledAPIServer(t *testing.T) {
	f := newFixture(t, optedIn, nil)
	var stalled, noDeadline atomic.Bool
	deadlines := make(chan time.Time, 16)
	cfg := rest.CopyConfig(f.c.REST)
	cfg.Wrap(func(rt http.RoundTripper) http.RoundTripper {
		return roundTripper(func(r *http.Request) (*http.Response, error) {
			if !stalled.Load() {
				return rt.RoundTrip(r)
			}
			dl, ok := r.Context().Deadline()
			if !ok {
				// It would hang for ever: fail it, and the test.
				noDeadline.Store(true)
				return nil, errors.New("stalled API server, and a request without a deadline")
			}
			deadlines <- dl
			<-r.Context().Done()
			return nil, r.Context().Err()
		})
	})
	records, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	// No workers: the alert is recorded before it is decided, by the
	// stalled client.
	e := f.startEngine(t, policy.DefaultConfig(), 0, func(_ *verify.Config, _ *escalate.Config, o *Options) { o.Client = records })
	stalled.Store(true)
	_, err = e.Accept(context.Background(), firing(f.ns, "stalled", time.Now(), nil))
	returned := time.Now()
	if noDeadline.Load() {
		t.Fatal("intake sent the stalled API server a request without a deadline")
	}
	if !errors.Is(err, webhook.ErrClusterUnavailable) || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Accept = %v, want webhook.ErrClusterUnavailable after the intake's deadline (context.DeadlineExceeded)", err)
	}
	select {
	case dl := <-deadlines:
		if dl.After(returned) {
			t.Errorf("Accept returned %s before the stalled request's deadline", dl.Sub(returned))
		}
	default:
		t.Fatal("no request of intake reached the stalled API server")
	}
}
