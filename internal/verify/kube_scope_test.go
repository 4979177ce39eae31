package verify

import (
	"bytes"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/autorollbackd/autorollbackd/internal/policy"
	"github.com/autorollbackd/autorollbackd/internal/testenv"
)

// authLog is an httptest handler that records the Authorization header of
// every request by path, and answers 200 to the paths in ok, 404 to the
// others.
type authLog struct {
	mu   sync.Mutex
	seen []string // "path Authorization"
	ok   map[string]bool
}

func (a *authLog) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	a.mu.Lock()
	a.seen = append(a.seen, r.URL.Path+" "+r.Header.Get("Authorization"))
	a.mu.Unlock()
	if !a.ok[r.URL.Path] {
		http.NotFound(w, r)
	}
}

func (a *authLog) take() []string {
	a.mu.Lock()
	defer a.mu.Unlock()
	s := a.seen
	a.seen = nil
	return s
}

// TestKubeScopedCheckCredentials has two teams' workloads in the real
// cluster. Team a's smoke test carries team a's token and names team a's
// namespace; team b's service does not have team a's API (404). The token
// never reaches a URL of team b's workload, and team a's check does not
// fail team b's verification. A check that selects by label reads the
// workload's labels from the cluster.
func TestKubeScopedCheckCredentials(t *testing.T) {
	c := testenv.Require(t)
	t.Parallel()
	nsA, nsB, daemon := c.Namespace(t), c.Namespace(t), c.Namespace(t)
	const token = "team-a-s3cr3t"
	_, err := c.Client.CoreV1().Secrets(daemon).Create(t.Context(), &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: "team-a-smoke-test"},
		Data:       map[string][]byte{"token": []byte(token)},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for ns, tier := range map[string]string{nsA: "frontend", nsB: "backend"} {
		one := int32(1)
		_, err := c.Client.AppsV1().Deployments(ns).Create(t.Context(), &appsv1.Deployment{
			ObjectMeta: metav1.ObjectMeta{Name: "web", Labels: map[string]string{"tier": tier}},
			Spec: appsv1.DeploymentSpec{
				Replicas: &one,
				Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "web"}},
				Template: podTemplate("web", "web:v1"),
			},
		}, metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
	}
	srv := &authLog{ok: map[string]bool{
		"/" + nsA + "/web/api/v1/events": true,
		"/" + nsA + "/web/health/live":   true,
		"/" + nsB + "/web/health/live":   true,
		"/" + nsA + "/web/frontend":      true,
	}}
	hs := httptest.NewServer(srv)
	t.Cleanup(hs.Close)
	url := func(path string) string { return hs.URL + "/{{.Namespace}}/{{.Name}}" + path }

	var logs bytes.Buffer
	v, err := New(Options{
		Config: httpOnly(
			HTTPCheck{Name: "live", URL: url("/health/live"), Retries: ptr(0)},
			HTTPCheck{
				Name: "a-events", URL: url("/api/v1/events"), Retries: ptr(0),
				Scope:             Scope{Namespaces: []string{nsA}},
				BearerTokenSecret: SecretKeyRef{Name: "team-a-smoke-test", Key: "token"},
			},
			HTTPCheck{Name: "frontend", URL: url("/frontend"), Retries: ptr(0), Scope: Scope{Selector: "tier=frontend"}},
		),
		Client:          c.Client,
		SecretNamespace: daemon,
		Logger:          slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
	})
	if err != nil {
		t.Fatal(err)
	}

	tests := []struct {
		name    string
		target  policy.Ref
		results string
		seen    []string
	}{
		{
			name:    "team a's workload gets team a's checks and token",
			target:  policy.Ref{Kind: policy.KindDeployment, Namespace: nsA, Name: "web"},
			results: "http:live=pass,http:a-events=pass,http:frontend=pass",
			seen: []string{
				"/" + nsA + "/web/health/live ",
				"/" + nsA + "/web/api/v1/events Bearer " + token,
				"/" + nsA + "/web/frontend ",
			},
		},
		{
			name:    "team b's workload gets neither team a's check nor its token",
			target:  policy.Ref{Kind: policy.KindDeployment, Namespace: nsB, Name: "web"},
			results: "http:live=pass",
			seen:    []string{"/" + nsB + "/web/health/live "},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			results := v.Verify(t.Context(), tc.target)
			for _, r := range results {
				t.Logf("%s: %s: %s", r.Check, r.Status, r.Message)
			}
			if got := checkNames(results); got != tc.results {
				t.Errorf("results %s\nwant    %s", got, tc.results)
			}
			if got := v.Overall(results); got != StatusPass {
				t.Errorf("overall %s, want pass", got)
			}
			if got := srv.take(); strings.Join(got, "\n") != strings.Join(tc.seen, "\n") {
				t.Errorf("server saw (path, Authorization):\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(tc.seen, "\n"))
			}
		})
	}
	if strings.Contains(logs.String(), token) {
		t.Errorf("the token is in the logs:\n%s", logs.String())
	}

	// A check that selects by label cannot tell whether it applies to a
	// workload whose labels cannot be read: it is not run, and says why.
	t.Run("labels that cannot be read", func(t *testing.T) {
		v, err := New(Options{
			Config: httpOnly(HTTPCheck{Name: "frontend", URL: url("/frontend"), Retries: ptr(0), Scope: Scope{Selector: "tier=frontend"}}),
			Client: c.Client,
		})
		if err != nil {
			t.Fatal(err)
		}
		ref := policy.Ref{Kind: policy.KindDeployment, Namespace: nsB, Name: "absent"}
		results := v.Verify(t.Context(), ref)
		want := fmt.Sprintf(`Not run: could not read the labels of %s to tell whether the check selects it: get deployment %s/absent: deployments.apps "absent" not found.`, ref, nsB)
		if len(results) != 1 || results[0].Check != "http:frontend" || results[0].Status != StatusInconclusive || results[0].Message != want {
			t.Errorf("results %+v\nwant one, http:frontend inconclusive %q", results, want)
		}
		if got := srv.take(); len(got) > 0 {
			t.Errorf("server saw %q, want nothing", got)
		}

		// With the rollout check on, its failure is the reason given.
		cfg := httpOnly(HTTPCheck{Name: "frontend", URL: url("/frontend"), Retries: ptr(0), Scope: Scope{Selector: "tier=frontend"}})
		cfg.Rollout = WaitCheck{Enabled: true, Timeout: dur(time.Minute)}
		cfg.PollInterval = dur(200 * time.Millisecond)
		if v, err = New(Options{Config: cfg, Client: c.Client}); err != nil {
			t.Fatal(err)
		}
		results = v.Verify(t.Context(), ref)
		if got := checkNames(results); got != "rollout=fail,http:frontend=inconclusive" || results[1].Message != "Not run: rollout failed first." {
			t.Errorf("results %s, http:frontend %q; want the rollout failed, http:frontend not run", got, results[len(results)-1].Message)
		}
	})
}
