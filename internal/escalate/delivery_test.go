package escalate_test

import (
	"context"
	"slices"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/autorollbackd/autorollbackd/internal/escalate"
)

// twoWebhooks wires two webhook receivers, first and second, into the lead
// step, in that order, and leaves on-call and the war room without any.
func twoWebhooks(first, second string) escalate.Config {
	cfg := escalate.DefaultConfig()
	cfg.Notifiers = []escalate.NotifierConfig{
		{Name: "first", Type: "webhook", Retries: intp(0), Webhook: &escalate.WebhookConfig{URL: first}},
		{Name: "second", Type: "webhook", Retries: intp(0), Webhook: &escalate.WebhookConfig{URL: second}},
	}
	cfg.Ladder[1].Notifiers = []string{"first", "second"}
	return cfg
}

func TestPageReportsItsReceivers(t *testing.T) {
	for _, tc := range []struct {
		name          string
		first, second reply
		receivers     []string
		err           string
		result        string
	}{
		{"both accept", reply{status: 204}, reply{status: 200}, []string{"first", "second"}, "", "success"},
		{"the first fails", reply{status: 400, body: "bad"}, reply{status: 202}, []string{"second"},
			`page lead for incident inc-7f3a: notifier "first" (webhook): HTTP 400 Bad Request: bad (not retried)`, "failure"},
		{"both fail", reply{status: 500}, reply{status: 500}, nil,
			`page lead for incident inc-7f3a: notifier "first" (webhook): HTTP 500 Internal Server Error (gave up after 1 attempt)
notifier "second" (webhook): HTTP 500 Internal Server Error (gave up after 1 attempt)`, "failure"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			first, second := newFakeServer(t, tc.first), newFakeServer(t, tc.second)
			h := newHarness(t, twoWebhooks(first.URL, second.URL))
			d, err := h.Page(context.Background(), h.Ladder()[1], pageMessage())
			if got := errString(err); got != tc.err {
				t.Errorf("Page error\ngot:  %s\nwant: %s", got, tc.err)
			}
			if !slices.Equal(d.Receivers, tc.receivers) || d.NoReceiver {
				t.Errorf("delivery = %+v, want receivers %q and a receiver configured", d, tc.receivers)
			}
			if len(first.got()) != 1 || len(second.got()) != 1 {
				t.Errorf("requests: first %d, second %d; want one each", len(first.got()), len(second.got()))
			}
			if v := sample(t, h.reg, "autorollbackd_escalations_total", map[string]string{"level": "lead", "result": tc.result}); v != 1 {
				t.Errorf("escalations_total{lead,%s} = %v, want 1", tc.result, v)
			}
			if v := sample(t, h.reg, "autorollbackd_escalations_total", map[string]string{"level": "lead", "result": "no_receiver"}); v != 0 {
				t.Errorf("escalations_total{lead,no_receiver} = %v, want 0", v)
			}
		})
	}
}

// With the shipped defaults every level has no notifiers: a page reaches
// nobody, and says so, instead of passing for a delivered one.
func TestPageWithoutNotifiersHasNoReceiver(t *testing.T) {
	for _, tc := range []struct {
		name string
		cfg  escalate.Config
		step func(escalate.Ladder) escalate.Step
	}{
		{"default configuration", escalate.DefaultConfig(), func(l escalate.Ladder) escalate.Step { return l[0] }},
		{"a step without notifiers next to one with", twoWebhooks("http://127.0.0.1:1/never", "http://127.0.0.1:1/never"),
			func(l escalate.Ladder) escalate.Step { return l[0] }},
		{"an empty ladder", escalate.Config{}, func(escalate.Ladder) escalate.Step { return escalate.Step{Level: "oncall"} }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t, tc.cfg)
			d, err := h.Page(context.Background(), tc.step(h.Ladder()), pageMessage())
			if err != nil {
				t.Fatalf("Page: %v", err)
			}
			if !d.NoReceiver || len(d.Receivers) != 0 {
				t.Errorf("delivery = %+v, want no receiver", d)
			}
			if v := sample(t, h.reg, "autorollbackd_escalations_total", map[string]string{"level": "oncall", "result": "no_receiver"}); v != 1 {
				t.Errorf("escalations_total{oncall,no_receiver} = %v, want 1", v)
			}
			if len(h.Ladder()) > 0 {
				if v := sample(t, h.reg, "autorollbackd_escalations_total", map[string]string{"level": "oncall", "result": "success"}); v != 0 {
					t.Errorf("escalations_total{oncall,success} = %v, want 0: nobody was paged", v)
				}
			}
			if !strings.Contains(h.logs.String(), "nobody was paged") {
				t.Errorf("no warning logged:\n%s", h.logs)
			}
		})
	}
}

// The no_receiver series exist from the start, so that an alert on them
// works before the first incident.
func TestNoReceiverStartsAtZero(t *testing.T) {
	h := newHarness(t, escalate.DefaultConfig())
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
`
	if err := testutil.GatherAndCompare(h.reg, strings.NewReader(want), "autorollbackd_escalations_total"); err != nil {
		t.Error(err)
	}
}

func errString(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}
