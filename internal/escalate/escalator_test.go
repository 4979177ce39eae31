package escalate_test

import (
	"context"
	"errors"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"k8s.io/client-go/tools/record"

	"github.com/autorollbackd/autorollbackd/internal/escalate"
)

func TestNewSecretFiles(t *testing.T) {
	dir := t.TempDir()
	missing := filepath.Join(dir, "missing")
	empty := secretFile(t, "  ")
	garbage := secretFile(t, "not-a-url s3cr3t-garbage")
	for _, tc := range []struct {
		name   string
		n      escalate.NotifierConfig
		want   string
		secret string // must not appear in the error
	}{
		{"missing routing key file",
			escalate.NotifierConfig{Name: "pd", Type: "pagerduty", PagerDuty: &escalate.PagerDutyConfig{RoutingKeyFile: missing}},
			`build escalation notifiers: notifiers[0].pagerduty.routingKeyFile: read secret file: open ` + missing + `: no such file or directory`, ""},
		{"empty routing key file",
			escalate.NotifierConfig{Name: "pd", Type: "pagerduty", PagerDuty: &escalate.PagerDutyConfig{RoutingKeyFile: empty}},
			`build escalation notifiers: notifiers[0].pagerduty.routingKeyFile: secret file ` + empty + ` is empty`, ""},
		{"missing slack url file",
			escalate.NotifierConfig{Name: "chat", Type: "slack", Slack: &escalate.SlackConfig{WebhookURLFile: missing}},
			`build escalation notifiers: notifiers[0].slack.webhookURLFile: read secret file: open ` + missing + `: no such file or directory`, ""},
		{"slack url file without a URL",
			escalate.NotifierConfig{Name: "chat", Type: "slack", Slack: &escalate.SlackConfig{WebhookURLFile: garbage}},
			`build escalation notifiers: notifiers[0].slack.webhookURLFile: file ` + garbage + ` does not hold an http or https URL`, "s3cr3t-garbage"},
		{"missing bearer token file",
			escalate.NotifierConfig{Name: "hook", Type: "webhook", Webhook: &escalate.WebhookConfig{URL: "https://hooks.example/x", BearerTokenFile: missing}},
			`build escalation notifiers: notifiers[0].webhook.bearerTokenFile: read secret file: open ` + missing + `: no such file or directory`, ""},
		{"events without a recorder",
			escalate.NotifierConfig{Name: "k8s", Type: "events"},
			`build escalation notifiers: notifiers[0].type: type events needs an event recorder, and the daemon has none`, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := escalate.DefaultConfig()
			cfg.Notifiers = []escalate.NotifierConfig{tc.n}
			_, err := escalate.New(escalate.Options{Config: cfg})
			if err == nil || err.Error() != tc.want {
				t.Fatalf("New error\ngot:  %v\nwant: %s", err, tc.want)
			}
			var ke *escalate.KeyError
			if !errors.As(err, &ke) {
				t.Errorf("error is not a *KeyError")
			}
			mustNotContain(t, "error", err.Error(), tc.secret)
		})
	}
}

func TestNewReportsEveryProblem(t *testing.T) {
	missing := filepath.Join(t.TempDir(), "missing")
	cfg := escalate.DefaultConfig()
	cfg.Notifiers = []escalate.NotifierConfig{
		{Name: "pd", Type: "pagerduty", PagerDuty: &escalate.PagerDutyConfig{RoutingKeyFile: missing}},
		{Name: "k8s", Type: "events"},
	}
	_, err := escalate.New(escalate.Options{Config: cfg})
	want := `build escalation notifiers: notifiers[0].pagerduty.routingKeyFile: read secret file: open ` + missing + `: no such file or directory
notifiers[1].type: type events needs an event recorder, and the daemon has none`
	if err == nil || err.Error() != want {
		t.Fatalf("New error\ngot:  %v\nwant: %s", err, want)
	}
}

func TestNewRejectsInvalidConfig(t *testing.T) {
	cfg := escalate.DefaultConfig()
	cfg.Notifiers = []escalate.NotifierConfig{{Name: "mail", Type: "email"}}
	_, err := escalate.New(escalate.Options{Config: cfg})
	want := `invalid escalation configuration: notifiers[0].type: unknown notifier type "email" (want alertmanager, pagerduty, slack, webhook or events)`
	if err == nil || err.Error() != want {
		t.Fatalf("New error\ngot:  %v\nwant: %s", err, want)
	}
}

func twoNotifiers(t *testing.T, pdURL, slackURL string) escalate.Config {
	cfg := escalate.DefaultConfig()
	cfg.Notifiers = []escalate.NotifierConfig{
		{Name: "pd", Type: "pagerduty", Retries: intp(0), PagerDuty: &escalate.PagerDutyConfig{RoutingKeyFile: secretFile(t, routingKey), URL: pdURL}},
		{Name: "chat", Type: "slack", Retries: intp(0), Slack: &escalate.SlackConfig{WebhookURLFile: secretFile(t, slackURL)}},
	}
	cfg.Ladder[0].Notifiers = []string{"pd"}
	cfg.Ladder[1].Notifiers = []string{"pd", "chat"}
	cfg.Announce = []string{"chat"}
	return cfg
}

func TestMetricsStartAtZero(t *testing.T) {
	h := newHarness(t, twoNotifiers(t, "https://pd.example", "https://hooks.example"+slackPath))
	want := `
# HELP autorollbackd_escalations_total Pages of a ladder level: success when every notifier of the step delivered, failure when one did not, no_receiver when the level has no notifiers and nobody was paged.
# TYPE autorollbackd_escalations_total counter
autorollbackd_escalations_total{level="lead",result="failure"} 0
autorollbackd_escalations_total{level="lead",result="no_receiver"} 0
autorollbackd_escalations_total{level="lead",result="success"} 0
autorollbackd_escalations_total{level="oncall",result="failure"} 0
autorollbackd_escalations_total{level="oncall",result="no_receiver"} 0
autorollbackd_escalations_total{level="oncall",result="success"} 0
autorollbackd_escalations_total{level="war_room",result="failure"} 0
autorollbackd_escalations_total{level="war_room",result="no_receiver"} 0
autorollbackd_escalations_total{level="war_room",result="success"} 0
# HELP autorollbackd_notification_attempts_total Delivery attempts, retries included, by notifier and notifier type.
# TYPE autorollbackd_notification_attempts_total counter
autorollbackd_notification_attempts_total{notifier="chat",type="slack"} 0
autorollbackd_notification_attempts_total{notifier="pd",type="pagerduty"} 0
# HELP autorollbackd_notifications_total Notifications delivered (success) or given up on after retries (failure), by notifier, notifier type, message kind (announce, page, resolve) and result.
# TYPE autorollbackd_notifications_total counter
autorollbackd_notifications_total{kind="announce",notifier="chat",result="failure",type="slack"} 0
autorollbackd_notifications_total{kind="announce",notifier="chat",result="success",type="slack"} 0
autorollbackd_notifications_total{kind="announce",notifier="pd",result="failure",type="pagerduty"} 0
autorollbackd_notifications_total{kind="announce",notifier="pd",result="success",type="pagerduty"} 0
autorollbackd_notifications_total{kind="page",notifier="chat",result="failure",type="slack"} 0
autorollbackd_notifications_total{kind="page",notifier="chat",result="success",type="slack"} 0
autorollbackd_notifications_total{kind="page",notifier="pd",result="failure",type="pagerduty"} 0
autorollbackd_notifications_total{kind="page",notifier="pd",result="success",type="pagerduty"} 0
autorollbackd_notifications_total{kind="resolve",notifier="chat",result="failure",type="slack"} 0
autorollbackd_notifications_total{kind="resolve",notifier="chat",result="success",type="slack"} 0
autorollbackd_notifications_total{kind="resolve",notifier="pd",result="failure",type="pagerduty"} 0
autorollbackd_notifications_total{kind="resolve",notifier="pd",result="success",type="pagerduty"} 0
`
	if err := testutil.GatherAndCompare(h.reg, strings.NewReader(want),
		"autorollbackd_escalations_total", "autorollbackd_notification_attempts_total", "autorollbackd_notifications_total"); err != nil {
		t.Error(err)
	}
	if n, err := testutil.GatherAndCount(h.reg, "autorollbackd_notification_duration_seconds"); err != nil || n != 2 {
		t.Errorf("duration series: %d, %v; want one per type (2)", n, err)
	}
}

func TestNewTwiceOnOneRegistry(t *testing.T) {
	reg := prometheus.NewRegistry()
	cfg := eventsConfig()
	for range 2 { // a configuration reload builds a new Escalator
		if _, err := escalate.New(escalate.Options{Config: cfg, Events: record.NewFakeRecorder(1), Registry: reg}); err != nil {
			t.Fatalf("New: %v", err)
		}
	}
}

func TestPagePartialFailure(t *testing.T) {
	pd := newFakeServer(t, accepted)
	chat := newFakeServer(t, reply{status: 500, body: "internal_error"})
	h := newHarness(t, twoNotifiers(t, pd.URL, chat.URL+slackPath))
	_, err := h.Page(context.Background(), h.Ladder()[1], pageMessage())
	want := `page lead for incident inc-7f3a: notifier "chat" (slack): HTTP 500 Internal Server Error: internal_error (gave up after 1 attempt)`
	if err == nil || err.Error() != want {
		t.Fatalf("Page error\ngot:  %v\nwant: %s", err, want)
	}
	if len(pd.got()) != 1 {
		t.Errorf("PagerDuty got %d requests, want 1: one failing notifier must not stop the others", len(pd.got()))
	}
	for _, c := range []struct {
		name   string
		labels map[string]string
		want   float64
	}{
		{"autorollbackd_notifications_total", map[string]string{"notifier": "pd", "kind": "page", "result": "success"}, 1},
		{"autorollbackd_notifications_total", map[string]string{"notifier": "chat", "kind": "page", "result": "failure"}, 1},
		{"autorollbackd_escalations_total", map[string]string{"level": "lead", "result": "failure"}, 1},
		{"autorollbackd_escalations_total", map[string]string{"level": "lead", "result": "success"}, 0},
	} {
		if v := sample(t, h.reg, c.name, c.labels); v != c.want {
			t.Errorf("%s%v = %v, want %v", c.name, c.labels, v, c.want)
		}
	}
	log := h.logs.String()
	if !strings.Contains(log, `msg="notification failed"`) || !strings.Contains(log, `msg="notification delivered"`) {
		t.Errorf("logs lack the delivery outcomes:\n%s", log)
	}
	mustNotContain(t, "logs", log, routingKey, slackPath, chat.URL+slackPath)
}

func TestPageLevelWithoutNotifiers(t *testing.T) {
	h := newHarness(t, escalate.DefaultConfig())
	if _, err := h.Page(context.Background(), h.Ladder()[0], pageMessage()); err != nil {
		t.Fatalf("Page: %v", err)
	}
	if v := sample(t, h.reg, "autorollbackd_escalations_total", map[string]string{"level": "oncall", "result": "no_receiver"}); v != 1 {
		t.Errorf("no_receiver = %v, want 1", v)
	}
	if !strings.Contains(h.logs.String(), "nobody was paged") {
		t.Errorf("no warning logged:\n%s", h.logs)
	}
	// Nothing to announce to is not an error either.
	if err := h.Announce(context.Background(), pageMessage()); err != nil {
		t.Errorf("Announce: %v", err)
	}
}

func TestPageUnknownNotifier(t *testing.T) {
	h := newHarness(t, escalate.DefaultConfig())
	step := escalate.Step{Level: "oncall", Notifiers: []string{"ghost"}}
	_, err := h.Page(context.Background(), step, pageMessage())
	if want := `page oncall for incident inc-7f3a: no notifier named "ghost"`; err == nil || err.Error() != want {
		t.Errorf("Page error\ngot:  %v\nwant: %s", err, want)
	}
}

func TestResolveUnknownLevelStillResolvesTheOthers(t *testing.T) {
	rec := record.NewFakeRecorder(10)
	h := newHarness(t, eventsConfig(), func(o *escalate.Options) { o.Events = rec })
	err := h.Resolve(context.Background(), incident(), []string{"sev1", "lead"})
	if want := `resolve incident inc-7f3a: resolve level "sev1": not in the ladder`; err == nil || err.Error() != want {
		t.Errorf("Resolve error\ngot:  %v\nwant: %s", err, want)
	}
	if n := len(rec.Events); n != 1 {
		t.Errorf("%d Events, want the lead resolution", n)
	}
	if err := h.Resolve(context.Background(), incident(), nil); err != nil {
		t.Errorf("Resolve of nothing: %v", err)
	}
}

func TestCancelledWhileWaitingToRetry(t *testing.T) {
	srv := newFakeServer(t, reply{status: 503})
	ctx, cancel := context.WithCancel(context.Background())
	cfg := pdConfig(t, srv.URL, nil)
	// A wait during which the engine shuts down.
	e, err := escalate.New(escalate.WithSleep(escalate.Options{Config: cfg}, func(ctx context.Context, _ time.Duration) error {
		cancel()
		<-ctx.Done()
		return ctx.Err()
	}))
	if err != nil {
		t.Fatal(err)
	}
	_, err = e.Page(ctx, e.Ladder()[0], pageMessage())
	want := `page oncall for incident inc-7f3a: notifier "pd-oncall" (pagerduty): HTTP 503 Service Unavailable (context canceled while waiting to retry after 1 attempt)`
	if err == nil || err.Error() != want {
		t.Fatalf("Page error\ngot:  %v\nwant: %s", err, want)
	}
	if !errors.Is(err, context.Canceled) {
		t.Errorf("error does not unwrap to context.Canceled")
	}
	if n := len(srv.got()); n != 1 {
		t.Errorf("got %d requests, want 1", n)
	}
}

func TestNotifierLookup(t *testing.T) {
	rec := record.NewFakeRecorder(1)
	h := newHarness(t, eventsConfig(), func(o *escalate.Options) { o.Events = rec })
	n, ok := h.Notifier("k8s")
	if !ok {
		t.Fatal("notifier k8s not found")
	}
	if err := n.Notify(context.Background(), escalate.Message{Kind: escalate.Announce, Incident: incident(), Summary: "test message"}); err != nil {
		t.Fatal(err)
	}
	if ev := <-rec.Events; ev != "Normal AutoRollbackAnnounced Incident inc-7f3a was updated; the details are in the incident record map[autorollback.io/incident:inc-7f3a]" {
		t.Errorf("Event %q", ev)
	}
	if _, ok := h.Notifier("ghost"); ok {
		t.Error("found a notifier that is not configured")
	}
}

func TestDeduplicates(t *testing.T) {
	cfg := escalate.DefaultConfig()
	cfg.Notifiers = []escalate.NotifierConfig{
		{Name: "pd", Type: "pagerduty", PagerDuty: &escalate.PagerDutyConfig{RoutingKeyFile: secretFile(t, "routing-key")}},
		{Name: "chat", Type: "slack", Slack: &escalate.SlackConfig{WebhookURLFile: secretFile(t, "https://hooks.slack.example/x")}},
		{Name: "hook", Type: "webhook", Webhook: &escalate.WebhookConfig{URL: "https://hooks.example/x"}},
		{Name: "k8s", Type: "events"},
	}
	e, err := escalate.New(escalate.Options{Config: cfg, Events: record.NewFakeRecorder(1)})
	if err != nil {
		t.Fatal(err)
	}
	for name, want := range map[string]bool{"pd": true, "k8s": true, "chat": false, "hook": false, "ghost": false} {
		if got := e.Deduplicates(name); got != want {
			t.Errorf("Deduplicates(%q) = %v, want %v", name, got, want)
		}
	}
}
