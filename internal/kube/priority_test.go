package kube

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"k8s.io/client-go/rest"
)

// waited returns how many waits p's histogram observed.
func waited(t *testing.T, p *Priority) uint64 {
	t.Helper()
	var m dto.Metric
	if err := p.waited.Write(&m); err != nil {
		t.Fatal(err)
	}
	return m.GetHistogram().GetSampleCount()
}

// server answers /fg and /bg requests once the test lets each kind go, and
// counts the /bg requests it holds.
type server struct {
	*httptest.Server
	fgIn, bgIn           chan struct{} // a request arrived
	fgGo, bgGo           chan struct{} // closed: answer
	releaseFG, releaseBG func()        // close fgGo, bgGo
	bgHeld, bgMost       atomic.Int32
}

func newServer(t *testing.T) *server {
	s := &server{fgIn: make(chan struct{}, 16), bgIn: make(chan struct{}, 16), fgGo: make(chan struct{}), bgGo: make(chan struct{})}
	s.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/fg":
			s.fgIn <- struct{}{}
			<-s.fgGo
		case "/bg":
			n := s.bgHeld.Add(1)
			for m := s.bgMost.Load(); n > m && !s.bgMost.CompareAndSwap(m, n); m = s.bgMost.Load() {
			}
			s.bgIn <- struct{}{}
			<-s.bgGo
			s.bgHeld.Add(-1)
		}
	}))
	s.releaseFG = sync.OnceFunc(func() { close(s.fgGo) })
	s.releaseBG = sync.OnceFunc(func() { close(s.bgGo) })
	t.Cleanup(func() {
		s.releaseFG()
		s.releaseBG()
		s.Close()
	})
	return s
}

// inFlight starts a foreground request that the server holds, and returns
// a background client of the same Priority.
func inFlight(t *testing.T, background int) (*server, *Priority, *http.Client) {
	s := newServer(t)
	p := NewPriority(background)
	fg := client(t, s.URL, p.Foreground)
	go func() { _ = get(context.Background(), fg, s.URL+"/fg") }()
	wait(t, s.fgIn, "the foreground request")
	return s, p, client(t, s.URL, p.Background)
}

// client returns an HTTP client built as the daemon builds its Kubernetes
// clients' (rest.HTTPClientFor), its transport wrapped by wrap.
func client(t *testing.T, host string, wrap func(*rest.Config)) *http.Client {
	t.Helper()
	cfg := &rest.Config{Host: host}
	wrap(cfg)
	c, err := rest.HTTPClientFor(cfg)
	if err != nil {
		t.Fatalf("HTTPClientFor: %v", err)
	}
	return c
}

func get(ctx context.Context, c *http.Client, url string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	resp, err := c.Do(req)
	if err != nil {
		return err
	}
	return resp.Body.Close()
}

func wait(t *testing.T, ch <-chan struct{}, what string) {
	t.Helper()
	select {
	case <-ch:
	case <-time.After(10 * time.Second):
		t.Fatalf("timed out waiting for %s", what)
	}
}

func TestPriorityHoldsBackgroundWhileForegroundIsInFlight(t *testing.T) {
	for _, tc := range []struct {
		name       string
		foreground func(p *Priority, host string) (*http.Client, context.Context)
	}{
		{"acting client", func(p *Priority, host string) (*http.Client, context.Context) {
			return client(t, host, p.Foreground), context.Background()
		}},
		{"foreground context", func(p *Priority, host string) (*http.Client, context.Context) {
			return client(t, host, p.Background), Foreground(context.Background())
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := newServer(t)
			p := NewPriority(2)
			fg, fgCtx := tc.foreground(p, s.URL)
			bg := client(t, s.URL, p.Background)

			fgDone := make(chan error, 1)
			go func() { fgDone <- get(fgCtx, fg, s.URL+"/fg") }()
			wait(t, s.fgIn, "the foreground request")

			const n = 5
			var wg sync.WaitGroup
			errs := make(chan error, n)
			for range n {
				wg.Go(func() { errs <- get(context.Background(), bg, s.URL+"/bg") })
			}
			// Two background requests get through; the other three wait.
			wait(t, s.bgIn, "the first background request")
			wait(t, s.bgIn, "the second background request")
			if got := s.bgHeld.Load(); got != 2 {
				t.Fatalf("background requests at the server while a foreground one is in flight: %d, want 2", got)
			}
			// Those two went through a free slot, and the others that
			// came while the foreground request was in flight waited.
			if w := waited(t, p); w < 2 || w > n {
				t.Errorf("waits observed: %d, want 2 to %d", w, n)
			}
			// With the foreground request answered, the waiting ones go
			// without a slot.
			s.releaseFG()
			if err := <-fgDone; err != nil {
				t.Fatalf("foreground request: %v", err)
			}
			for i := 3; i <= n; i++ {
				wait(t, s.bgIn, "a background request after the foreground one ended")
			}
			if got := s.bgMost.Load(); got != n {
				t.Errorf("background requests at the server at once after the foreground one ended: %d, want %d", got, n)
			}
			s.releaseBG()
			wg.Wait()
			close(errs)
			for err := range errs {
				if err != nil {
					t.Errorf("background request: %v", err)
				}
			}
		})
	}
}

func TestPriorityBackgroundWaitEndsWithItsContext(t *testing.T) {
	s, p, bg := inFlight(t, 1)
	go func() { _ = get(context.Background(), bg, s.URL+"/bg") }()
	wait(t, s.bgIn, "the background request holding the slot")

	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- get(ctx, bg, s.URL+"/bg") }()
	cancel()
	select {
	case err := <-done:
		if !errors.Is(err, context.Canceled) {
			t.Errorf("waiting background request after its context ended: %v, want context.Canceled", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("a waiting background request did not end with its context")
	}
	if got := s.bgMost.Load(); got != 1 {
		t.Errorf("background requests that reached the server: %d, want 1", got)
	}
	// The first took the free slot; the second waited until cancelled.
	if n := waited(t, p); n != 2 {
		t.Errorf("waits observed: %d, want 2", n)
	}
}

func TestPriorityOff(t *testing.T) {
	s, p, bg := inFlight(t, 0)
	for range 3 {
		go func() { _ = get(context.Background(), bg, s.URL+"/bg") }()
	}
	for range 3 {
		wait(t, s.bgIn, "a background request")
	}
	if got := s.bgHeld.Load(); got != 3 {
		t.Errorf("background requests at the server with the priority off: %d, want 3", got)
	}
	if n := waited(t, p); n != 0 {
		t.Errorf("waits observed with the priority off: %d, want none", n)
	}
}
