package engine

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/autorollbackd/autorollbackd/internal/policy"
	"github.com/autorollbackd/autorollbackd/internal/webhook"
)

// TestRuleRecentRolloutWindow runs the engine with a global
// recentRolloutWindow so short that every fixture's rollout is already old,
// and a 1h window of its own on the data-corruption rule: under the same
// policy, a data_corruption alert rolls the workload back while a
// service_down alert escalates with no_recent_rollout.
func TestRuleRecentRolloutWindow(t *testing.T) {
	cfg := policy.DefaultConfig()
	cfg.RecentRolloutWindow = metav1.Duration{Duration: time.Millisecond}
	found := false
	for i := range cfg.Rules {
		if cfg.Rules[i].Criterion == "data_corruption" {
			cfg.Rules[i].RecentRolloutWindow = &metav1.Duration{Duration: time.Hour}
			found = true
		}
	}
	if !found {
		t.Fatal("the default policy has no data_corruption rule")
	}
	ctx := context.Background()
	accept := func(t *testing.T, e *running, n *webhook.Notification) policy.Decision {
		t.Helper()
		if r, err := e.Accept(ctx, n); err != nil || r != (webhook.Receipt{Accepted: 1}) {
			t.Fatalf("receipt = %+v, %v; want one accepted", r, err)
		}
		return e.waitDecision(t, n)
	}

	t.Run("data_corruption rolls back within its rule's window", func(t *testing.T) {
		f := newFixture(t, optedIn, nil)
		e := f.startEngine(t, cfg, 1)
		n := firing(f.ns, "rw-corruption", time.Now(), map[string]string{"impact": "data_corruption"})
		d := accept(t, e, n)
		if d.Outcome != policy.OutcomeRollback || d.Reason != policy.ReasonCriterionMet || d.Rule != "data-corruption" {
			t.Fatalf("decision = %s/%s by %q, want rollback/criterion_met by data-corruption\n%s", d.Outcome, d.Reason, d.Rule, d)
		}
		if want := "within the 1h0m0s window of rule data-corruption"; !strings.HasSuffix(d.Message, want) {
			t.Errorf("message = %q, want it to end with %q", d.Message, want)
		}
		f.waitRevision(t, "3")
		if image, _ := f.image(t); image != "event-service:v1" {
			t.Errorf("image = %s, want the last good event-service:v1", image)
		}
		if got := testutil.ToFloat64(e.m.decisions.WithLabelValues("rollback", "criterion_met")); got != 1 {
			t.Errorf("decisions_total{rollback,criterion_met} = %v, want 1", got)
		}
	})

	t.Run("service_down escalates outside the global window", func(t *testing.T) {
		f := newFixture(t, optedIn, nil)
		e := f.startEngine(t, cfg, 1)
		n := firing(f.ns, "rw-down", time.Now(), map[string]string{"impact": "service_down"})
		d := accept(t, e, n)
		if d.Outcome != policy.OutcomeEscalate || d.Reason != policy.ReasonNoRecentRollout || d.Rule != "service-down" {
			t.Fatalf("decision = %s/%s by %q, want escalate/no_recent_rollout by service-down\n%s", d.Outcome, d.Reason, d.Rule, d)
		}
		if want := "outside the 1ms window"; !strings.HasSuffix(d.Message, want) {
			t.Errorf("message = %q, want it to end with %q", d.Message, want)
		}
		if got := testutil.ToFloat64(e.m.decisions.WithLabelValues("escalate", "no_recent_rollout")); got != 1 {
			t.Errorf("decisions_total{escalate,no_recent_rollout} = %v, want 1", got)
		}
		if image, _ := f.image(t); image != "event-service:v2-bad" {
			t.Errorf("image = %s, want event-service:v2-bad untouched", image)
		}
	})
}
