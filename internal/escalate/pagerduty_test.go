package escalate_test

import (
	"context"
	"errors"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	clocktesting "k8s.io/utils/clock/testing"

	"github.com/autorollbackd/autorollbackd/internal/escalate"
)

const routingKey = "R0UT1NGKEY5ecret0000000000000000"

var accepted = reply{status: http.StatusAccepted, header: map[string]string{"Content-Type": "application/json"},
	body: `{"status":"success","message":"Event processed","dedup_key":"autorollbackd/inc-7f3a/oncall"}`}

// pdConfig pages the on-call level through PagerDuty at srv.
func pdConfig(t *testing.T, url string, retries *int) escalate.Config {
	t.Helper()
	cfg := escalate.DefaultConfig()
	cfg.DashboardURL = dashboard
	cfg.Notifiers = []escalate.NotifierConfig{{
		Name: "pd-oncall", Type: "pagerduty", Retries: retries,
		PagerDuty: &escalate.PagerDutyConfig{RoutingKeyFile: secretFile(t, routingKey), URL: url},
	}}
	cfg.Ladder[0].Notifiers = []string{"pd-oncall"}
	cfg.Ladder[1].Notifiers = []string{"pd-oncall"}
	cfg.Announce = []string{"pd-oncall"}
	return cfg
}

const wantTrigger = `{
  "routing_key": "R0UT1NGKEY5ecret0000000000000000",
  "event_action": "trigger",
  "dedup_key": "autorollbackd/inc-7f3a/oncall",
  "client": "autorollbackd",
  "client_url": "https://grafana.example/d/event-service",
  "links": [
    {"href": "http://prometheus.example/graph?g0.expr=rate%28x%29", "text": "Alert source"},
    {"href": "https://grafana.example/d/event-service", "text": "Dashboard"}
  ],
  "payload": {
    "summary": "[oncall] Deployment production/event-service still failing 5m after rollback",
    "source": "Deployment production/event-service",
    "severity": "critical",
    "timestamp": "2026-03-14T09:31:00Z",
    "component": "event-service",
    "group": "production",
    "class": "EventServiceHighErrorRate",
    "custom_details": {
      "incident": "inc-7f3a",
      "level": "oncall",
      "target": "Deployment production/event-service",
      "alertname": "EventServiceHighErrorRate",
      "rule": "service-down",
      "criterion": "service_down",
      "started_at": "2026-03-14T09:26:00Z",
      "details": [
        "alert EventServiceHighErrorRate matched rule service-down (service_down)",
        "rolled back from revision 7 to revision 6",
        "verification: error rate 12% > 1%"
      ]
    }
  }
}`

func TestPagerDutyPageExactEvent(t *testing.T) {
	srv := newFakeServer(t, accepted)
	h := newHarness(t, pdConfig(t, srv.URL, nil))
	step := h.Ladder()[0]
	if _, err := h.Page(context.Background(), step, pageMessage()); err != nil {
		t.Fatalf("Page: %v", err)
	}
	got := srv.got()
	if len(got) != 1 {
		t.Fatalf("got %d requests, want 1", len(got))
	}
	r := got[0]
	if r.method != http.MethodPost || r.path != "/v2/enqueue" {
		t.Errorf("request %s %s, want POST /v2/enqueue", r.method, r.path)
	}
	if ct := r.header.Get("Content-Type"); ct != "application/json" {
		t.Errorf("Content-Type %q, want application/json", ct)
	}
	if a := r.header.Get("Authorization"); a != "" {
		t.Errorf("Events API needs no Authorization header, got %q", a)
	}
	assertJSON(t, r.body, wantTrigger)
	if len(h.waits.get()) != 0 {
		t.Errorf("waited %v, want no retry", h.waits.get())
	}
}

func TestPagerDutySamePageTwiceSameDedupKey(t *testing.T) {
	srv := newFakeServer(t, accepted)
	h := newHarness(t, pdConfig(t, srv.URL, nil))
	step := h.Ladder()[0]
	for range 2 {
		if _, err := h.Page(context.Background(), step, pageMessage()); err != nil {
			t.Fatalf("Page: %v", err)
		}
	}
	got := srv.got()
	if len(got) != 2 {
		t.Fatalf("got %d requests, want 2", len(got))
	}
	assertJSON(t, got[0].body, wantTrigger)
	assertJSON(t, got[1].body, wantTrigger) // same dedup_key: PagerDuty keeps one incident

	// The next level is a separate PagerDuty incident with its own key.
	if _, err := h.Page(context.Background(), h.Ladder()[1], pageMessage()); err != nil {
		t.Fatalf("Page lead: %v", err)
	}
	if b := string(srv.got()[2].body); !strings.Contains(b, `"dedup_key":"autorollbackd/inc-7f3a/lead"`) {
		t.Errorf("lead page body %s lacks dedup_key autorollbackd/inc-7f3a/lead", b)
	}
}

func TestPagerDutyRetriesServerErrors(t *testing.T) {
	fail := reply{status: http.StatusInternalServerError, body: "upstream broke"}
	srv := newFakeServer(t, accepted, fail, fail)
	h := newHarness(t, pdConfig(t, srv.URL, nil))
	if _, err := h.Page(context.Background(), h.Ladder()[0], pageMessage()); err != nil {
		t.Fatalf("Page: %v", err)
	}
	got := srv.got()
	if len(got) != 3 {
		t.Fatalf("got %d requests, want 3", len(got))
	}
	for _, r := range got {
		assertJSON(t, r.body, wantTrigger)
	}
	if w, want := h.waits.get(), []time.Duration{time.Second, 2 * time.Second}; !slices.Equal(w, want) {
		t.Errorf("waits %v, want exponential backoff %v", w, want)
	}
	if v := sample(t, h.reg, "autorollbackd_notification_attempts_total", map[string]string{"notifier": "pd-oncall"}); v != 3 {
		t.Errorf("attempts %v, want 3", v)
	}
}

func TestPagerDutyGivesUpAfterRetries(t *testing.T) {
	srv := newFakeServer(t, reply{status: http.StatusBadGateway, body: "<html>bad gateway</html>"})
	h := newHarness(t, pdConfig(t, srv.URL, intp(2)))
	_, err := h.Page(context.Background(), h.Ladder()[0], pageMessage())
	want := `page oncall for incident inc-7f3a: notifier "pd-oncall" (pagerduty): HTTP 502 Bad Gateway: <html>bad gateway</html> (gave up after 3 attempts)`
	if err == nil || err.Error() != want {
		t.Fatalf("Page error\ngot:  %v\nwant: %s", err, want)
	}
	if n := len(srv.got()); n != 3 {
		t.Errorf("got %d requests, want 3 (1 + 2 retries)", n)
	}
	if w, want := h.waits.get(), []time.Duration{time.Second, 2 * time.Second}; !slices.Equal(w, want) {
		t.Errorf("waits %v, want %v", w, want)
	}
}

func TestPagerDutyHonoursRetryAfter(t *testing.T) {
	for _, tc := range []struct {
		name  string
		first reply
		want  time.Duration
	}{
		{"429 delay-seconds", reply{status: 429, header: map[string]string{"Retry-After": "7"}}, 7 * time.Second},
		{"503 HTTP date", reply{status: 503, header: map[string]string{"Retry-After": now.Add(30 * time.Second).Format(http.TimeFormat)}}, 30 * time.Second},
		{"429 capped at 2m", reply{status: 429, header: map[string]string{"Retry-After": "3600"}}, 2 * time.Minute},
		{"429 without Retry-After backs off", reply{status: 429}, time.Second},
		{"500 ignores Retry-After", reply{status: 500, header: map[string]string{"Retry-After": "9"}}, time.Second},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := newFakeServer(t, accepted, tc.first)
			h := newHarness(t, pdConfig(t, srv.URL, nil))
			if _, err := h.Page(context.Background(), h.Ladder()[0], pageMessage()); err != nil {
				t.Fatalf("Page: %v", err)
			}
			if n := len(srv.got()); n != 2 {
				t.Errorf("got %d requests, want 2", n)
			}
			if w := h.waits.get(); !slices.Equal(w, []time.Duration{tc.want}) {
				t.Errorf("waits %v, want [%s]", w, tc.want)
			}
		})
	}
}

// TestPagerDutyRetryAfterOnFakeClock runs the real wait between retries on
// an injected fake clock: the retry goes out once the clock has moved by
// the Retry-After, and not before.
func TestPagerDutyRetryAfterOnFakeClock(t *testing.T) {
	srv := newFakeServer(t, accepted, reply{status: 429, header: map[string]string{"Retry-After": "20"}})
	fc := clocktesting.NewFakeClock(now)
	e, err := escalate.New(escalate.Options{Config: pdConfig(t, srv.URL, nil), Clock: fc})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() {
		_, err := e.Page(context.Background(), e.Ladder()[0], pageMessage())
		done <- err
	}()

	// Wait for the notifier to start waiting on the fake clock; this polls
	// the state of the fake clock, it does not sleep for a fixed time.
	deadline := time.Now().Add(10 * time.Second)
	for !fc.HasWaiters() {
		if time.Now().After(deadline) {
			t.Fatal("the notifier never waited to retry")
		}
		time.Sleep(time.Millisecond)
	}
	fc.Step(20*time.Second - time.Nanosecond)
	if !fc.HasWaiters() {
		t.Fatal("retried before the Retry-After had passed")
	}
	if n := len(srv.got()); n != 1 {
		t.Fatalf("got %d requests before Retry-After, want 1", n)
	}
	fc.Step(time.Nanosecond)
	if err := <-done; err != nil {
		t.Fatalf("Page: %v", err)
	}
	if n := len(srv.got()); n != 2 {
		t.Errorf("got %d requests, want 2", n)
	}
}

func TestPagerDutyBadRequestNotRetried(t *testing.T) {
	srv := newFakeServer(t, reply{status: 400, header: map[string]string{"Content-Type": "application/json"},
		body: `{"status":"invalid event","message":"Event object is invalid","errors":["Length of 'routing_key' is incorrect (should be 32 characters)"]}`})
	h := newHarness(t, pdConfig(t, srv.URL, nil))
	_, err := h.Page(context.Background(), h.Ladder()[0], pageMessage())
	want := `page oncall for incident inc-7f3a: notifier "pd-oncall" (pagerduty): HTTP 400 Bad Request: {"status":"invalid event","message":"Event object is invalid","errors":["Length of 'routing_key' is incorrect (should be 32 characters)"]} (not retried)`
	if err == nil || err.Error() != want {
		t.Fatalf("Page error\ngot:  %v\nwant: %s", err, want)
	}
	var de *escalate.DeliveryError
	if !errors.As(err, &de) || de.Status != 400 || de.Attempts != 1 || de.Notifier != "pd-oncall" || de.Kind != escalate.Page {
		t.Errorf("DeliveryError = %+v, want status 400 after 1 attempt of a page to pd-oncall", de)
	}
	if n := len(srv.got()); n != 1 {
		t.Errorf("got %d requests, want 1", n)
	}
	if len(h.waits.get()) != 0 {
		t.Errorf("waited %v before a retry that must not happen", h.waits.get())
	}
	mustNotContain(t, "error", err.Error(), routingKey)
	mustNotContain(t, "logs", h.logs.String(), routingKey)
}

func TestPagerDutyResolveSameDedupKey(t *testing.T) {
	srv := newFakeServer(t, accepted)
	h := newHarness(t, pdConfig(t, srv.URL, nil))
	if _, err := h.Page(context.Background(), h.Ladder()[0], pageMessage()); err != nil {
		t.Fatalf("Page: %v", err)
	}
	if err := h.Resolve(context.Background(), incident(), []string{"oncall"}); err != nil {
		t.Fatalf("Resolve: %v", err)
	}
	got := srv.got()
	if len(got) != 2 {
		t.Fatalf("got %d requests, want 2", len(got))
	}
	if got[1].path != "/v2/enqueue" {
		t.Errorf("resolve went to %s, want /v2/enqueue", got[1].path)
	}
	assertJSON(t, got[1].body, `{
	  "routing_key": "R0UT1NGKEY5ecret0000000000000000",
	  "event_action": "resolve",
	  "dedup_key": "autorollbackd/inc-7f3a/oncall"
	}`)
}

func TestPagerDutyResolveEachLevel(t *testing.T) {
	srv := newFakeServer(t, accepted)
	h := newHarness(t, pdConfig(t, srv.URL, nil))
	if err := h.Resolve(context.Background(), incident(), []string{"oncall", "lead", "oncall"}); err != nil {
		t.Fatalf("Resolve: %v", err)
	}
	var keys []string
	for _, r := range srv.got() {
		for _, k := range []string{"autorollbackd/inc-7f3a/oncall", "autorollbackd/inc-7f3a/lead"} {
			if strings.Contains(string(r.body), `"event_action":"resolve","dedup_key":"`+k+`"`) {
				keys = append(keys, k)
			}
		}
	}
	if want := []string{"autorollbackd/inc-7f3a/oncall", "autorollbackd/inc-7f3a/lead"}; !slices.Equal(keys, want) {
		t.Errorf("resolved %v, want %v once each", keys, want)
	}
}

func TestPagerDutyAnnounceIsAChangeEvent(t *testing.T) {
	srv := newFakeServer(t, accepted)
	h := newHarness(t, pdConfig(t, srv.URL+"/v2/enqueue", nil)) // a full enqueue URL works too
	m := pageMessage()
	m.Summary = "Rolled back Deployment production/event-service from revision 7 to 6"
	m.Details = []string{"verification passed: error rate 0.2% < 1%"}
	if err := h.Announce(context.Background(), m); err != nil {
		t.Fatalf("Announce: %v", err)
	}
	got := srv.got()
	if len(got) != 1 || got[0].path != "/v2/change/enqueue" {
		t.Fatalf("requests %+v, want one to /v2/change/enqueue", got)
	}
	assertJSON(t, got[0].body, `{
	  "routing_key": "R0UT1NGKEY5ecret0000000000000000",
	  "payload": {
	    "summary": "Rolled back Deployment production/event-service from revision 7 to 6",
	    "source": "Deployment production/event-service",
	    "timestamp": "2026-03-14T09:31:00Z",
	    "custom_details": {
	      "incident": "inc-7f3a",
	      "target": "Deployment production/event-service",
	      "alertname": "EventServiceHighErrorRate",
	      "rule": "service-down",
	      "criterion": "service_down",
	      "started_at": "2026-03-14T09:26:00Z",
	      "details": ["verification passed: error rate 0.2% < 1%"]
	    }
	  },
	  "links": [
	    {"href": "http://prometheus.example/graph?g0.expr=rate%28x%29", "text": "Alert source"},
	    {"href": "https://grafana.example/d/event-service", "text": "Dashboard"}
	  ]
	}`)
}

func TestPagerDutySeverityAndIncidentDashboard(t *testing.T) {
	srv := newFakeServer(t, accepted)
	cfg := pdConfig(t, srv.URL, nil)
	cfg.Notifiers[0].PagerDuty.Severity = "warning"
	h := newHarness(t, cfg)
	m := pageMessage()
	m.Incident.DashboardURL = "https://grafana.example/d/other" // wins over the configured one
	if _, err := h.Page(context.Background(), h.Ladder()[0], m); err != nil {
		t.Fatalf("Page: %v", err)
	}
	b := string(srv.got()[0].body)
	for _, want := range []string{`"severity":"warning"`, `"client_url":"https://grafana.example/d/other"`} {
		if !strings.Contains(b, want) {
			t.Errorf("body %s lacks %s", b, want)
		}
	}
}
