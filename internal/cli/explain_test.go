package cli

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/alertmanager/template"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/autorollbackd/autorollbackd/internal/policy"
	"github.com/autorollbackd/autorollbackd/internal/webhook"
)

// TestExplainShowsTheRuleWindow explains two alerts whose assumed rollouts
// are 3h old: the rule with a 24h window of its own rolls back, the one on
// the global 1h window escalates, and each trace names the window that
// applied.
func TestExplainShowsTheRuleWindow(t *testing.T) {
	cfg := policy.DefaultConfig()
	for i := range cfg.Rules {
		if cfg.Rules[i].Name == "data-corruption" {
			cfg.Rules[i].RecentRolloutWindow = &metav1.Duration{Duration: 24 * time.Hour}
		}
	}
	p, err := policy.Compile(cfg)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)
	alert := func(fp, impact string) template.Alert {
		return template.Alert{
			Status: "firing", Fingerprint: fp, StartsAt: now.Add(-3 * time.Hour),
			Labels: template.KV{"alertname": "EventService", "impact": impact, "namespace": "production", "deployment": "event-service"},
		}
	}
	n := &webhook.Notification{Version: "4", Data: template.Data{Status: "firing", Alerts: template.Alerts{
		alert("a1", "data_corruption"), alert("a2", "service_down"),
	}}}
	var out bytes.Buffer
	if err := explain(context.Background(), &out, n, p, nil, "no kubeconfig", now); err != nil {
		t.Fatal(err)
	}
	corruption, down, ok := strings.Cut(out.String(), "alert 2:")
	if !ok {
		t.Fatalf("no second alert in:\n%s", &out)
	}
	for _, c := range []struct{ trace, want string }{
		{corruption, "✓ recent rollout: revision 2 started rolling out 3h0m0s ago, within the 24h0m0s window of rule data-corruption\n"},
		{corruption, "decision: rollback (reason criterion_met)\n"},
		{corruption, "message:  roll back Deployment production/event-service: rule data-corruption (data_corruption) matched and " +
			"revision 2 started rolling out 3h0m0s ago, within the 24h0m0s window of rule data-corruption\n"},
		{down, "✗ recent rollout: revision 2 started rolling out 3h0m0s ago, outside the 1h0m0s window [no_recent_rollout]\n"},
		{down, "decision: escalate (reason no_recent_rollout)\n"},
	} {
		if !strings.Contains(c.trace, c.want) {
			t.Errorf("explain output lacks %q:\n%s", c.want, c.trace)
		}
	}
}

// TestExplainAsASender: with --sender, the explanation holds the alert to
// the sender's namespaces, as the webhook would.
func TestExplainAsASender(t *testing.T) {
	p, err := policy.Compile(policy.DefaultConfig())
	if err != nil {
		t.Fatal(err)
	}
	auth := webhook.AuthConfig{Senders: []webhook.SenderConfig{
		{Name: "payments", Namespaces: []string{"payments"}},
		{Name: "platform", Namespaces: []string{"*"}},
	}}
	now := time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)
	n := &webhook.Notification{Version: "4", Data: template.Data{Status: "firing", Alerts: template.Alerts{{
		Status: "firing", Fingerprint: "0123456789abcdef", StartsAt: now.Add(-time.Minute),
		Labels: template.KV{"alertname": "EventService", "impact": "service_down", "namespace": "production", "deployment": "event-service"},
	}}}}
	for _, tc := range []struct{ sender, want string }{
		{"payments", `✗ sender allowed: sender "payments" may not target namespace production, only payments [origin_mismatch]`},
		{"platform", "decision: rollback (reason criterion_met)"},
	} {
		s, err := senderNamed(auth, tc.sender)
		if err != nil {
			t.Fatal(err)
		}
		n.Sender = s
		var out bytes.Buffer
		if err := explain(context.Background(), &out, n, p, nil, "no kubeconfig", now); err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(out.String(), tc.want) {
			t.Errorf("--sender %s: output lacks %q:\n%s", tc.sender, tc.want, &out)
		}
	}
	if _, err := senderNamed(auth, "nobody"); err == nil || !strings.Contains(err.Error(), "payments, platform") {
		t.Errorf("unknown sender: %v; want an error listing the senders", err)
	}
}
