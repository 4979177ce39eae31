package verify

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"k8s.io/client-go/kubernetes/fake"
)

// TestInconclusiveIsPass: with the key set, an inconclusive check lets the
// next stage run and does not stop an overall pass; without it, it does.
func TestInconclusiveIsPass(t *testing.T) {
	rec := &recorder{handlers: []http.HandlerFunc{status(200, "")}}
	srv := httptest.NewServer(rec)
	t.Cleanup(srv.Close)
	cfg := httpOnly(
		HTTPCheck{Name: "api", URL: srv.URL + "/api", Retries: ptr(0), BearerTokenSecret: SecretKeyRef{Name: "absent", Key: "token"}, Scope: Scope{Namespaces: []string{web.Namespace}}},
		HTTPCheck{Name: "live", URL: srv.URL + "/health/live", Retries: ptr(0)},
	)
	cfg.InconclusiveIsPass = true
	v, err := New(Options{Config: cfg, Client: fake.NewClientset()})
	if err != nil {
		t.Fatal(err)
	}
	results := v.Verify(t.Context(), web)
	if got, want := summary(results), "http:api=inconclusive http:live=pass"; got != want {
		t.Errorf("results %s, want %s", got, want)
	}
	if got := strings.Join(rec.requests(), ", "); got != "GET /health/live" {
		t.Errorf("server saw %s, want GET /health/live", got)
	}
	if got := v.Overall(results); got != StatusPass {
		t.Errorf("Verifier.Overall with inconclusiveIsPass = %s, want pass", got)
	}
	if got := Overall(results); got != StatusInconclusive {
		t.Errorf("Overall (the default) = %s, want inconclusive", got)
	}
	allInconclusive := []Result{{Kind: KindHTTP, Status: StatusInconclusive}}
	if got := v.Overall(allInconclusive); got != StatusInconclusive {
		t.Errorf("Verifier.Overall of only inconclusive results = %s, want inconclusive: one check must pass", got)
	}
	failed := append(results, Result{Kind: KindPromQL, Status: StatusFail})
	if got := v.Overall(failed); got != StatusFail {
		t.Errorf("Verifier.Overall with a fail = %s, want fail", got)
	}
}
