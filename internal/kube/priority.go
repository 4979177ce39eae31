package kube

import (
	"context"
	"net/http"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"k8s.io/client-go/rest"
)

// Priority lets the requests that answer Alertmanager or act reach the API
// server ahead of the daemon's other requests. Client-side rate limiters
// cannot do this: in a burst of alerts, the API server's time runs short,
// not a client's tokens, and each write the workers send while an alert is
// being recorded makes its answer later.
//
// A request is foreground when an acting client sends it, or its context
// comes from Foreground. While any foreground request is in flight, at most
// the given number of background requests are: the others wait for one of
// them to be answered, or for no foreground request to be left. Background
// work slows while alerts arrive, and never stops.
//
// A Priority is a prometheus.Collector of how long background requests
// waited.
type Priority struct {
	mu     sync.Mutex
	n      int           // foreground requests in flight
	idle   chan struct{} // closed when n falls to 0
	slots  chan struct{} // nil: no priority
	waited prometheus.Histogram
}

// NewPriority returns a Priority that lets background requests through,
// background at a time, while a foreground request is in flight; with
// background 0, it lets every request through at once.
func NewPriority(background int) *Priority {
	p := &Priority{waited: prometheus.NewHistogram(prometheus.HistogramOpts{
		Name: "autorollbackd_kube_background_wait_seconds",
		Help: "Time the daemon's background API requests waited for a free slot (kubernetes.backgroundInFlight), observed for those sent while an alert's or an action's request was in flight.",
		// From an immediate free slot to the longest a write takes on a
		// busy API server.
		Buckets: []float64{0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5},
	})}
	if background > 0 {
		p.slots = make(chan struct{}, background)
	}
	return p
}

// Describe implements prometheus.Collector.
func (p *Priority) Describe(ch chan<- *prometheus.Desc) { p.waited.Describe(ch) }

// Collect implements prometheus.Collector.
func (p *Priority) Collect(ch chan<- prometheus.Metric) { p.waited.Collect(ch) }

type foregroundKey struct{}

// Foreground marks the requests sent with ctx as foreground.
func Foreground(ctx context.Context) context.Context {
	return context.WithValue(ctx, foregroundKey{}, true)
}

// IsForeground reports whether ctx is Foreground's.
func IsForeground(ctx context.Context) bool {
	v, _ := ctx.Value(foregroundKey{}).(bool)
	return v
}

// Background wraps the transport of a client whose requests are foreground
// when their context is (Foreground), and background otherwise.
func (p *Priority) Background(cfg *rest.Config) {
	if p.slots == nil {
		return
	}
	cfg.Wrap(func(rt http.RoundTripper) http.RoundTripper {
		return roundTripper(func(r *http.Request) (*http.Response, error) {
			if IsForeground(r.Context()) {
				return p.foreground(rt, r)
			}
			release, err := p.yield(r.Context())
			if err != nil {
				return nil, err
			}
			defer release()
			return rt.RoundTrip(r)
		})
	})
}

// Foreground wraps the transport of a client whose every request is
// foreground: the acting client's.
func (p *Priority) Foreground(cfg *rest.Config) {
	if p.slots == nil {
		return
	}
	cfg.Wrap(func(rt http.RoundTripper) http.RoundTripper {
		return roundTripper(func(r *http.Request) (*http.Response, error) { return p.foreground(rt, r) })
	})
}

// foreground sends r, counted as in flight until its response's header
// arrives; the body of an answer to a write is small.
func (p *Priority) foreground(rt http.RoundTripper, r *http.Request) (*http.Response, error) {
	p.mu.Lock()
	if p.n == 0 {
		p.idle = make(chan struct{})
	}
	p.n++
	p.mu.Unlock()
	defer func() {
		p.mu.Lock()
		p.n--
		if p.n == 0 {
			close(p.idle)
		}
		p.mu.Unlock()
	}()
	return rt.RoundTrip(r)
}

// yield returns at once when no foreground request is in flight; else once
// a background slot is free, which release frees again, or no foreground
// request is left; or with ctx's error.
func (p *Priority) yield(ctx context.Context) (release func(), err error) {
	p.mu.Lock()
	if p.n == 0 {
		p.mu.Unlock()
		return func() {}, nil
	}
	idle := p.idle
	p.mu.Unlock()
	start := time.Now()
	defer func() { p.waited.Observe(time.Since(start).Seconds()) }()
	select {
	case p.slots <- struct{}{}:
		return func() { <-p.slots }, nil
	case <-idle:
		return func() {}, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

type roundTripper func(*http.Request) (*http.Response, error)

func (f roundTripper) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }
