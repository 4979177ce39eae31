package escalate_test

import (
	"context"
	"net/http"
	"strings"
	"testing"

	promconfig "github.com/prometheus/common/config"

	"github.com/autorollbackd/autorollbackd/internal/escalate"
)

const bearerToken = "wh-t0ken-very-secret"

func webhookConfig(t *testing.T, url, tokenFile string) escalate.Config {
	t.Helper()
	cfg := escalate.DefaultConfig()
	cfg.DashboardURL = dashboard
	cfg.Notifiers = []escalate.NotifierConfig{{
		Name: "ticketing", Type: "webhook",
		Webhook: &escalate.WebhookConfig{URL: url, BearerTokenFile: tokenFile},
	}}
	cfg.Ladder[1].Notifiers = []string{"ticketing"}
	cfg.Announce = []string{"ticketing"}
	return cfg
}

func TestWebhookExactBodyAndBearer(t *testing.T) {
	srv := newFakeServer(t, reply{status: http.StatusNoContent})
	h := newHarness(t, webhookConfig(t, srv.URL+"/hooks/autorollbackd", secretFile(t, bearerToken)))
	if _, err := h.Page(context.Background(), h.Ladder()[1], pageMessage()); err != nil {
		t.Fatalf("Page: %v", err)
	}
	got := srv.got()
	if len(got) != 1 {
		t.Fatalf("got %d requests, want 1", len(got))
	}
	r := got[0]
	if r.method != http.MethodPost || r.path != "/hooks/autorollbackd" {
		t.Errorf("request %s %s, want POST /hooks/autorollbackd", r.method, r.path)
	}
	for k, want := range map[string]string{
		"Authorization": "Bearer " + bearerToken,
		"Content-Type":  "application/json",
		"User-Agent":    "autorollbackd",
	} {
		if v := r.header.Get(k); v != want {
			t.Errorf("%s: %q, want %q", k, v, want)
		}
	}
	assertJSON(t, r.body, `{
	  "version": "1",
	  "kind": "page",
	  "level": "lead",
	  "incident": {
	    "id": "inc-7f3a",
	    "target": {"kind": "Deployment", "namespace": "production", "name": "event-service"},
	    "startedAt": "2026-03-14T09:26:00Z",
	    "alertname": "EventServiceHighErrorRate",
	    "rule": "service-down",
	    "criterion": "service_down",
	    "generatorURL": "http://prometheus.example/graph?g0.expr=rate%28x%29",
	    "dashboardURL": "https://grafana.example/d/event-service"
	  },
	  "summary": "Deployment production/event-service still failing 5m after rollback",
	  "details": [
	    "alert EventServiceHighErrorRate matched rule service-down (service_down)",
	    "rolled back from revision 7 to revision 6",
	    "verification: error rate 12% > 1%"
	  ]
	}`)
}

func TestWebhookAnnounceWithoutTokenOrDetails(t *testing.T) {
	srv := newFakeServer(t, reply{status: http.StatusOK})
	h := newHarness(t, webhookConfig(t, srv.URL, ""))
	in := incident()
	in.Rule, in.Criterion = "", ""
	if err := h.Announce(context.Background(), escalate.Message{Incident: in, Summary: "Rollback of Deployment production/event-service refused: frozen"}); err != nil {
		t.Fatalf("Announce: %v", err)
	}
	r := srv.got()[0]
	if a, ok := r.header["Authorization"]; ok {
		t.Errorf("Authorization %q sent without a bearerTokenFile", a)
	}
	assertJSON(t, r.body, `{
	  "version": "1",
	  "kind": "announce",
	  "level": "",
	  "incident": {
	    "id": "inc-7f3a",
	    "target": {"kind": "Deployment", "namespace": "production", "name": "event-service"},
	    "startedAt": "2026-03-14T09:26:00Z",
	    "alertname": "EventServiceHighErrorRate",
	    "rule": "",
	    "criterion": "",
	    "generatorURL": "http://prometheus.example/graph?g0.expr=rate%28x%29",
	    "dashboardURL": "https://grafana.example/d/event-service"
	  },
	  "summary": "Rollback of Deployment production/event-service refused: frozen",
	  "details": []
	}`)
}

func TestWebhookClientErrorNotRetried(t *testing.T) {
	srv := newFakeServer(t, reply{status: http.StatusUnauthorized, body: "bad token " + bearerToken})
	h := newHarness(t, webhookConfig(t, srv.URL, secretFile(t, bearerToken)))
	_, err := h.Page(context.Background(), h.Ladder()[1], pageMessage())
	// A receiver that echoes the token does not get it into our error.
	want := `page lead for incident inc-7f3a: notifier "ticketing" (webhook): HTTP 401 Unauthorized: bad token <secret> (not retried)`
	if err == nil || err.Error() != want {
		t.Fatalf("Page error\ngot:  %v\nwant: %s", err, want)
	}
	if n := len(srv.got()); n != 1 {
		t.Errorf("got %d requests, want 1", n)
	}
	mustNotContain(t, "logs", h.logs.String(), bearerToken)
}

// A webhook notifier takes Prometheus' http_config: here basic auth with an
// inline password, which stays out of the error a refusal makes.
func TestWebhookHTTPConfig(t *testing.T) {
	const password = "s3cret-inline-pw"
	srv := newFakeServer(t, reply{status: http.StatusForbidden, body: "denied for password " + password})
	cfg := webhookConfig(t, srv.URL+"/hooks/autorollbackd", "")
	cfg.Notifiers[0].HTTPConfig = &promconfig.HTTPClientConfig{
		BasicAuth:   &promconfig.BasicAuth{Username: "autorollbackd", Password: password},
		HTTPHeaders: &promconfig.Headers{Headers: map[string]promconfig.Header{"X-Scope-OrgID": {Values: []string{"tenant-1"}}}},
	}
	h := newHarness(t, cfg)
	_, err := h.Page(context.Background(), h.Ladder()[1], pageMessage())
	if err == nil {
		t.Fatal("Page succeeded against a 403")
	}
	if strings.Contains(err.Error(), password) || !strings.Contains(err.Error(), "<secret>") {
		t.Errorf("error %q: want the password replaced by <secret>", err)
	}
	got := srv.got()
	if len(got) != 1 {
		t.Fatalf("got %d requests, want 1", len(got))
	}
	user, pass, ok := (&http.Request{Header: got[0].header}).BasicAuth()
	if !ok || user != "autorollbackd" || pass != password || got[0].header.Get("X-Scope-OrgID") != "tenant-1" {
		t.Errorf("request headers %v: want basic auth autorollbackd and X-Scope-OrgID tenant-1", got[0].header)
	}
}
