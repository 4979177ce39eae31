package escalate_test

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/autorollbackd/autorollbackd/internal/escalate"
)

// slackPath is the secret part of an incoming webhook URL.
const slackPath = "/services/T0001/B0001/s3cr3tT0k3nXYZ"

// slackConfig sends the war room page and announcements to Slack at url.
func slackConfig(t *testing.T, url string, retries *int) escalate.Config {
	t.Helper()
	cfg := escalate.DefaultConfig()
	cfg.DashboardURL = dashboard
	cfg.Notifiers = []escalate.NotifierConfig{{
		Name: "slack-warroom", Type: "slack", Retries: retries,
		Slack: &escalate.SlackConfig{WebhookURLFile: secretFile(t, url), Channel: "#event-service-alerts"},
	}}
	cfg.Ladder[2].Notifiers = []string{"slack-warroom"}
	cfg.Announce = []string{"slack-warroom"}
	return cfg
}

var slackOK = reply{status: 200, body: "ok"}

func TestSlackPageExactBody(t *testing.T) {
	srv := newFakeServer(t, slackOK)
	h := newHarness(t, slackConfig(t, srv.URL+slackPath, nil))
	if _, err := h.Page(context.Background(), h.Ladder()[2], pageMessage()); err != nil {
		t.Fatalf("Page: %v", err)
	}
	got := srv.got()
	if len(got) != 1 {
		t.Fatalf("got %d requests, want 1", len(got))
	}
	if got[0].method != http.MethodPost || got[0].path != slackPath {
		t.Errorf("request %s %s, want POST %s", got[0].method, got[0].path, slackPath)
	}
	if ct := got[0].header.Get("Content-Type"); ct != "application/json" {
		t.Errorf("Content-Type %q, want application/json", ct)
	}
	assertJSON(t, got[0].body, `{
	  "channel": "#event-service-alerts",
	  "text": "Escalation to war_room: Deployment production/event-service: Deployment production/event-service still failing 5m after rollback",
	  "blocks": [
	    {"type": "section", "text": {"type": "mrkdwn", "text": ":rotating_light: *Escalation to war_room: Deployment production/event-service*\nDeployment production/event-service still failing 5m after rollback"}},
	    {"type": "section", "fields": [
	      {"type": "mrkdwn", "text": "*Target*\nDeployment production/event-service"},
	      {"type": "mrkdwn", "text": "*Alert*\nEventServiceHighErrorRate"},
	      {"type": "mrkdwn", "text": "*Rule*\nservice-down (service_down)"},
	      {"type": "mrkdwn", "text": "*Level*\nwar_room"},
	      {"type": "mrkdwn", "text": "*Started*\n2026-03-14T09:26:00Z"},
	      {"type": "mrkdwn", "text": "*Incident*\ninc-7f3a"}
	    ]},
	    {"type": "section", "text": {"type": "mrkdwn", "text": "• alert EventServiceHighErrorRate matched rule service-down (service_down)\n• rolled back from revision 7 to revision 6\n• verification: error rate 12% &gt; 1%"}},
	    {"type": "context", "elements": [
	      {"type": "mrkdwn", "text": "<http://prometheus.example/graph?g0.expr=rate%28x%29|Alert source> · <https://grafana.example/d/event-service|Dashboard>"}
	    ]}
	  ],
	  "replace_original": false,
	  "delete_original": false
	}`)
}

func TestSlackAnnounceAndResolve(t *testing.T) {
	srv := newFakeServer(t, slackOK)
	cfg := slackConfig(t, srv.URL+slackPath, nil)
	cfg.Notifiers[0].Slack.Channel = "" // the webhook's own channel
	cfg.DashboardURL = ""
	h := newHarness(t, cfg)
	in := incident()
	in.GeneratorURL = ""
	if err := h.Announce(context.Background(), escalate.Message{Incident: in, Summary: "Rolled back Deployment production/event-service from revision 7 to 6"}); err != nil {
		t.Fatalf("Announce: %v", err)
	}
	if err := h.Resolve(context.Background(), in, []string{"war_room"}); err != nil {
		t.Fatalf("Resolve: %v", err)
	}
	got := srv.got()
	if len(got) != 2 {
		t.Fatalf("got %d requests, want 2", len(got))
	}
	facts := func(level string) string {
		f := `{"type": "mrkdwn", "text": "*Target*\nDeployment production/event-service"},
		      {"type": "mrkdwn", "text": "*Alert*\nEventServiceHighErrorRate"},
		      {"type": "mrkdwn", "text": "*Rule*\nservice-down (service_down)"},`
		if level != "" {
			f += `{"type": "mrkdwn", "text": "*Level*\n` + level + `"},`
		}
		return f + `{"type": "mrkdwn", "text": "*Started*\n2026-03-14T09:26:00Z"},
		      {"type": "mrkdwn", "text": "*Incident*\ninc-7f3a"}`
	}
	assertJSON(t, got[0].body, `{
	  "text": "autorollbackd: Deployment production/event-service: Rolled back Deployment production/event-service from revision 7 to 6",
	  "blocks": [
	    {"type": "section", "text": {"type": "mrkdwn", "text": ":information_source: *autorollbackd: Deployment production/event-service*\nRolled back Deployment production/event-service from revision 7 to 6"}},
	    {"type": "section", "fields": [`+facts("")+`]}
	  ],
	  "replace_original": false,
	  "delete_original": false
	}`)
	assertJSON(t, got[1].body, `{
	  "text": "Resolved (war_room): Deployment production/event-service: Resolved: EventServiceHighErrorRate on Deployment production/event-service",
	  "blocks": [
	    {"type": "section", "text": {"type": "mrkdwn", "text": ":white_check_mark: *Resolved (war_room): Deployment production/event-service*\nResolved: EventServiceHighErrorRate on Deployment production/event-service"}},
	    {"type": "section", "fields": [`+facts("war_room")+`]},
	    {"type": "section", "text": {"type": "mrkdwn", "text": "• The war_room page is closed: the incident is over."}}
	  ],
	  "replace_original": false,
	  "delete_original": false
	}`)
}

func TestSlackErrorStatusRetriedThenSucceeds(t *testing.T) {
	srv := newFakeServer(t, slackOK, reply{status: 500, body: "internal_error"})
	h := newHarness(t, slackConfig(t, srv.URL+slackPath, nil))
	if _, err := h.Page(context.Background(), h.Ladder()[2], pageMessage()); err != nil {
		t.Fatalf("Page: %v", err)
	}
	got := srv.got()
	if len(got) != 2 || string(got[0].body) != string(got[1].body) {
		t.Fatalf("got %d requests, want the same body twice", len(got))
	}
	if w := h.waits.get(); !slices.Equal(w, []time.Duration{time.Second}) {
		t.Errorf("waits %v, want [1s]", w)
	}
	if v := sample(t, h.reg, "autorollbackd_notifications_total", map[string]string{"notifier": "slack-warroom", "kind": "page", "result": "success"}); v != 1 {
		t.Errorf("success count %v, want 1", v)
	}
}

func TestSlackFailures(t *testing.T) {
	for _, tc := range []struct {
		name     string
		replies  []reply
		retries  int
		wantErr  string
		wantReqs int
		wantWait []time.Duration
	}{
		{
			name:    "error status retried then failure",
			replies: []reply{{status: 500, body: "internal_error"}}, retries: 2,
			wantErr:  `page war_room for incident inc-7f3a: notifier "slack-warroom" (slack): HTTP 500 Internal Server Error: internal_error (gave up after 3 attempts)`,
			wantReqs: 3, wantWait: []time.Duration{time.Second, 2 * time.Second},
		},
		{
			name:    "rate limited with Retry-After",
			replies: []reply{{status: 429, header: map[string]string{"Retry-After": "3"}, body: "rate_limited"}}, retries: 1,
			wantErr:  `page war_room for incident inc-7f3a: notifier "slack-warroom" (slack): HTTP 429 Too Many Requests: rate_limited (gave up after 2 attempts)`,
			wantReqs: 2, wantWait: []time.Duration{3 * time.Second},
		},
		{
			name:    "unknown webhook not retried",
			replies: []reply{{status: 404, body: "no_service"}}, retries: 3,
			wantErr:  `page war_room for incident inc-7f3a: notifier "slack-warroom" (slack): HTTP 404 Not Found: no_service (not retried)`,
			wantReqs: 1,
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := newFakeServer(t, tc.replies[len(tc.replies)-1], tc.replies...)
			h := newHarness(t, slackConfig(t, srv.URL+slackPath, intp(tc.retries)))
			_, err := h.Page(context.Background(), h.Ladder()[2], pageMessage())
			if err == nil || err.Error() != tc.wantErr {
				t.Fatalf("Page error\ngot:  %v\nwant: %s", err, tc.wantErr)
			}
			if n := len(srv.got()); n != tc.wantReqs {
				t.Errorf("got %d requests, want %d", n, tc.wantReqs)
			}
			if w := h.waits.get(); !slices.Equal(w, tc.wantWait) {
				t.Errorf("waits %v, want %v", w, tc.wantWait)
			}
			if v := sample(t, h.reg, "autorollbackd_notifications_total", map[string]string{"notifier": "slack-warroom", "kind": "page", "result": "failure"}); v != 1 {
				t.Errorf("failure count %v, want 1", v)
			}
			if v := sample(t, h.reg, "autorollbackd_escalations_total", map[string]string{"level": "war_room", "result": "failure"}); v != 1 {
				t.Errorf("escalation failure count %v, want 1", v)
			}
			mustNotContain(t, "error", err.Error(), srv.URL+slackPath, slackPath, "s3cr3tT0k3nXYZ")
			mustNotContain(t, "logs", h.logs.String(), slackPath, "s3cr3tT0k3nXYZ")
		})
	}
}

// TestSlackURLNeverInErrors: net/http quotes the request URL in its
// errors; for Slack the URL is the secret.
func TestSlackURLNeverInErrors(t *testing.T) {
	srv := httptest.NewServer(http.NotFoundHandler())
	dead := srv.URL + slackPath
	srv.Close() // connection refused from now on

	release := make(chan struct{})
	hung := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		select { // never answers; the attempt times out
		case <-r.Context().Done():
		case <-release:
		}
	}))
	t.Cleanup(hung.Close)
	t.Cleanup(func() { close(release) }) // runs first

	for _, tc := range []struct {
		name, url, want string
	}{
		{"connection refused", dead, `notifier "slack-warroom" (slack): request failed: dial tcp `},
		{"attempt timeout", hung.URL + slackPath, `notifier "slack-warroom" (slack): attempt timed out after 50ms (gave up after 2 attempts)`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			url := tc.url
			cfg := slackConfig(t, url, intp(1))
			cfg.Notifiers[0].Timeout = d(50 * time.Millisecond)
			h := newHarness(t, cfg)
			_, err := h.Page(context.Background(), h.Ladder()[2], pageMessage())
			if err == nil {
				t.Fatal("Page succeeded against a dead URL")
			}
			t.Logf("error: %v", err)
			if !strings.Contains(err.Error(), tc.want) || !strings.HasSuffix(err.Error(), "(gave up after 2 attempts)") {
				t.Errorf("error %q does not say what failed (want %q)", err, tc.want)
			}
			mustNotContain(t, "error", err.Error(), url, slackPath, "s3cr3tT0k3nXYZ")
			mustNotContain(t, "logs", h.logs.String(), url, slackPath, "s3cr3tT0k3nXYZ")
			if !strings.Contains(h.logs.String(), "notification attempt failed; retrying") {
				t.Errorf("the failed attempt was not logged:\n%s", h.logs)
			}
		})
	}
}

// TestSlackEscapesMarkup: alert text and URLs come from the alert's sender.
// Their &, < and > are escaped, so that they cannot mention a channel or
// forge a link, and a | in a URL is percent-encoded, so that it cannot end
// the URL and make the rest the link's text. A link that is not http(s), or
// that would not fit whole, is left out.
func TestSlackEscapesMarkup(t *testing.T) {
	srv := newFakeServer(t, slackOK)
	h := newHarness(t, slackConfig(t, srv.URL+slackPath, nil))
	for _, tc := range []struct {
		name, generatorURL, wantLinks string
	}{
		{
			"pipe and markup in the URL",
			`http://prometheus.example/graph?g0.expr=rate(x{code=~"5..|4.."}[5m])>0&g0.tab=1|<https://evil.example|Click here>`,
			`<http://prometheus.example/graph?g0.expr=rate(x{code=~"5..%7C4.."}[5m])&gt;0&amp;g0.tab=1%7C&lt;https://evil.example%7CClick here&gt;|Alert source> · <https://grafana.example/d/event-service|Dashboard>`,
		},
		{"not http", `javascript:alert(1)//|x`, `<https://grafana.example/d/event-service|Dashboard>`},
		{"too long to fit whole", "https://prometheus.example/graph?g0.expr=" + strings.Repeat("x", 3000), `<https://grafana.example/d/event-service|Dashboard>`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := pageMessage()
			m.Incident.GeneratorURL = tc.generatorURL
			m.Incident.Alertname = "<!channel> & <https://evil.example|Click>"
			m.Incident.Rule = strings.Repeat("r", 2500)
			m.Summary = "down <@U0123> <!here>"
			m.Details = []string{strings.Repeat("&", 1000)}
			if _, err := h.Page(context.Background(), h.Ladder()[2], m); err != nil {
				t.Fatalf("Page: %v", err)
			}
			got := srv.got()
			var body struct {
				Text   string `json:"text"`
				Blocks []struct {
					Type string `json:"type"`
					Text struct {
						Text string `json:"text"`
					} `json:"text"`
					Fields []struct {
						Text string `json:"text"`
					} `json:"fields"`
					Elements []struct {
						Text string `json:"text"`
					} `json:"elements"`
				} `json:"blocks"`
			}
			if err := json.Unmarshal(got[len(got)-1].body, &body); err != nil {
				t.Fatal(err)
			}
			if n := len(body.Blocks); n != 4 {
				t.Fatalf("%d blocks, want 4", n)
			}
			if want := ":rotating_light: *Escalation to war_room: Deployment production/event-service*\ndown &lt;@U0123&gt; &lt;!here&gt;"; body.Blocks[0].Text.Text != want {
				t.Errorf("headline %q, want %q", body.Blocks[0].Text.Text, want)
			}
			if want := "*Alert*\n&lt;!channel&gt; &amp; &lt;https://evil.example|Click&gt;"; body.Blocks[1].Fields[1].Text != want {
				t.Errorf("alert field %q, want %q", body.Blocks[1].Fields[1].Text, want)
			}
			if f := body.Blocks[1].Fields[2].Text; len(f) > 2000 || !strings.HasPrefix(f, "*Rule*\nrrr") {
				t.Errorf("rule field of %d bytes starts %.10q, want at most 2000 bytes, Slack's limit of a field", len(f), f)
			}
			if d := body.Blocks[2].Text.Text; len(d) > 3000 || !strings.HasSuffix(d, "&amp;…") {
				t.Errorf("details of %d bytes end in %q, want at most 3000 bytes, cut after a whole &amp;", len(d), d[max(len(d)-12, 0):])
			}
			if l := body.Blocks[3].Elements[0].Text; l != tc.wantLinks {
				t.Errorf("links\ngot:  %.300s\nwant: %s", l, tc.wantLinks)
			}
		})
	}
}
