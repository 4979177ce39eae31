package verify

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/common/model"
	"k8s.io/apimachinery/pkg/labels"

	"github.com/autorollbackd/autorollbackd/internal/policy"
)

// hits records the paths an httptest server was asked for, and answers
// 200 only for paths in ok.
type hits struct {
	mu    sync.Mutex
	paths []string
	ok    []string
}

func (h *hits) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	h.mu.Lock()
	h.paths = append(h.paths, r.URL.Path)
	h.mu.Unlock()
	if !slices.Contains(h.ok, r.URL.Path) {
		http.NotFound(w, r)
	}
}

func (h *hits) take() []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	p := h.paths
	h.paths = nil
	return p
}

// checkNames lists the checks of results, in order.
func checkNames(results []Result) string {
	var names []string
	for _, r := range results {
		names = append(names, r.Check+"="+string(r.Status))
	}
	return strings.Join(names, ",")
}

// TestScopeNamespaces: a check that names namespaces runs only for the
// workloads in them; for the others it sends no request, has no result
// and so cannot fail their verification. A check without a scope runs for
// every workload.
func TestScopeNamespaces(t *testing.T) {
	h := &hits{ok: []string{"/team-a/web/api", "/team-a/web/health", "/team-b/web/health"}}
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	var mu sync.Mutex
	var queries []string
	prom := queryFunc(func(_ context.Context, q string) (model.Value, error) {
		mu.Lock()
		defer mu.Unlock()
		queries = append(queries, q)
		return &model.Scalar{Value: 0}, nil
	})
	cfg := httpOnly(
		HTTPCheck{Name: "a-api", URL: srv.URL + "/{{.Namespace}}/{{.Name}}/api", Retries: ptr(0), Scope: Scope{Namespaces: []string{"team-a", "team-c"}}},
		HTTPCheck{Name: "health", URL: srv.URL + "/{{.Namespace}}/{{.Name}}/health", Retries: ptr(0)},
	)
	cfg.PromQL = []PromQLCheck{
		{Name: "a-errors", Query: `errors{namespace="{{.Namespace}}"}`, Op: "==", Consecutive: 1, Scope: Scope{Namespaces: []string{"team-a"}}},
		{Name: "b-errors", Query: `errors{namespace="{{.Namespace}}"}`, Op: "==", Consecutive: 1, Scope: Scope{Namespaces: []string{"team-b"}}},
	}
	v, err := New(Options{Config: cfg, Prometheus: prom})
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		ns      string
		results string
		paths   []string
		queries []string
	}{
		{"team-a", "http:a-api=pass,http:health=pass,promql:a-errors=pass", []string{"/team-a/web/api", "/team-a/web/health"}, []string{`errors{namespace="team-a"}`}},
		{"team-b", "http:health=pass,promql:b-errors=pass", []string{"/team-b/web/health"}, []string{`errors{namespace="team-b"}`}},
	}
	for _, tc := range tests {
		t.Run(tc.ns, func(t *testing.T) {
			mu.Lock()
			queries = nil
			mu.Unlock()
			ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
			defer cancel()
			results := v.Verify(ctx, policy.Ref{Kind: policy.KindDeployment, Namespace: tc.ns, Name: "web"})
			if got := checkNames(results); got != tc.results {
				t.Errorf("results %s\nwant    %s", got, tc.results)
			}
			if got := v.Overall(results); got != StatusPass {
				t.Errorf("overall %s, want pass", got)
			}
			if got := h.take(); !slices.Equal(got, tc.paths) {
				t.Errorf("server saw %q, want %q", got, tc.paths)
			}
			mu.Lock()
			defer mu.Unlock()
			if !slices.Equal(queries, tc.queries) {
				t.Errorf("queries %q, want %q", queries, tc.queries)
			}
		})
	}
}

// TestScopeSelects: the namespaces are looked at first, and the workload's
// labels are read only for a check in its namespace that selects on them,
// at most once.
func TestScopeSelects(t *testing.T) {
	target := policy.Ref{Kind: policy.KindDeployment, Namespace: "team-a", Name: "web"}
	tests := []struct {
		name  string
		scope Scope
		read  error // the error reading the labels returns
		want  selection
		reads int
	}{
		{"no scope selects every workload", Scope{}, nil, selected, 0},
		{"its namespace", Scope{Namespaces: []string{"team-b", "team-a"}}, nil, selected, 0},
		{"another namespace", Scope{Namespaces: []string{"team-b"}}, nil, unselected, 0},
		{"another namespace: labels not read", Scope{Namespaces: []string{"team-b"}, Selector: "tier=frontend"}, errors.New("must not be read"), unselected, 0},
		{"matching labels", Scope{Selector: "tier=frontend,app.kubernetes.io/part-of in (shop)"}, nil, selected, 1},
		{"labels that do not match", Scope{Namespaces: []string{"team-a"}, Selector: "tier!=frontend"}, nil, unselected, 1},
		{"a label that must be absent", Scope{Selector: "!canary"}, nil, selected, 1},
		{"labels that cannot be read", Scope{Selector: "tier=frontend"}, errors.New("boom"), unknown, 1},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s, err := tc.scope.compile()
			if err != nil {
				t.Fatal(err)
			}
			reads := 0
			wl := &workloadLabels{read: func(context.Context) (labels.Set, error) {
				reads++
				return labels.Set{"tier": "frontend", "app.kubernetes.io/part-of": "shop"}, tc.read
			}}
			for range 2 {
				got, err := s.selects(t.Context(), target, wl)
				if got != tc.want || (got == unknown) != (err != nil) {
					t.Errorf("selects = %d, %v; want %d", got, err, tc.want)
				}
			}
			if reads != tc.reads {
				t.Errorf("labels read %d times, want %d", reads, tc.reads)
			}
		})
	}
}

func TestScopeSelectorNeedsClient(t *testing.T) {
	for _, cfg := range []Config{
		httpOnly(HTTPCheck{Name: "live", URL: "http://x/", Scope: Scope{Selector: "tier=frontend"}}),
		func() Config {
			c := httpOnly()
			c.PromQL = []PromQLCheck{{Name: "e", Query: "up", Op: "==", Scope: Scope{Selector: "tier=frontend"}}}
			return c
		}(),
	} {
		_, err := New(Options{Config: cfg, Prometheus: &fakeProm{}})
		if want := "new verifier: Options.Client is required for the rollout and pods checks, for bearer tokens from Secrets and for checks with a selector"; err == nil || err.Error() != want {
			t.Errorf("New = %v, want %q", err, want)
		}
	}
	// Namespaces alone are read from the target: no client needed.
	if _, err := New(Options{Config: httpOnly(HTTPCheck{Name: "live", URL: "http://x/", Scope: Scope{Namespaces: []string{"team-a"}}})}); err != nil {
		t.Errorf("New with namespaces and no client: %v", err)
	}
}
