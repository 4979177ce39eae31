package engine

import (
	"context"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	apierrors "k8s.io/apimachinery/pkg/api/errors"

	"github.com/autorollbackd/autorollbackd/internal/actuator"
	"github.com/autorollbackd/autorollbackd/internal/incident"
	"github.com/autorollbackd/autorollbackd/internal/policy"
	"github.com/autorollbackd/autorollbackd/internal/webhook"
)

// TestSenderActsOnlyInItsNamespaces: an alert naming a workload outside
// the namespaces of its sender's credential is refused and never recorded,
// and its resolution of another sender's alert is refused too; the owner's
// credential acts, and its record keeps who sent it.
func TestSenderActsOnlyInItsNamespaces(t *testing.T) {
	f := newFixture(t, optedIn, nil)
	e := f.startEngine(t, policy.DefaultConfig(), 1)
	ctx := context.Background()
	tenant := webhook.Sender{Name: "tenant", Namespaces: []string{"tenant-a"}}
	owner := webhook.Sender{Name: "owner", Namespaces: []string{f.ns}}

	n := firing(f.ns, "from-tenant", time.Now(), map[string]string{"impact": "service_down"})
	n.Sender = tenant
	if r, err := e.Accept(ctx, n); err != nil || r.Refused != 1 || r.Accepted != 0 {
		t.Fatalf("Accept from the tenant = %+v, %v; want refused", r, err)
	}
	a := n.Alerts[0]
	if _, err := e.Record(ctx, AlertKey(policy.Alert{Fingerprint: a.Fingerprint, StartsAt: a.StartsAt})); !apierrors.IsNotFound(err) {
		t.Fatalf("the refused alert has a record (err %v)", err)
	}
	if got := testutil.ToFloat64(e.m.decisions.WithLabelValues(string(policy.OutcomeRefuse), string(policy.ReasonOriginMismatch))); got != 1 {
		t.Errorf("decisions_total{refuse,origin_mismatch} = %v, want 1", got)
	}
	f.untouched(t)

	n = firing(f.ns, "from-owner", time.Now(), map[string]string{"impact": "service_down"})
	n.Sender = owner
	if r, err := e.Accept(ctx, n); err != nil || r.Accepted != 1 {
		t.Fatalf("Accept from the owner = %+v, %v; want accepted", r, err)
	}
	inc := e.waitIncident(t, n, incident.StateVerifying, incident.StateResolved)
	if len(inc.Actions) == 0 || inc.Actions[0].Result == nil || inc.Actions[0].Result.Outcome != actuator.OutcomeApplied {
		t.Fatalf("actions %+v; want an applied rollback\n%s", inc.Actions, inc.Render())
	}
	if got := inc.Alerts[0].Origin; got.Sender != "owner" {
		t.Errorf("the incident's alert came from %+v, want sender owner", got)
	}

	// The tenant can compute the owner's alert's fingerprint; it still
	// may not resolve it.
	a = n.Alerts[0]
	res := firing(f.ns, "from-owner", a.StartsAt, map[string]string{"impact": "service_down"})
	res.Status, res.Alerts[0].Status, res.Alerts[0].EndsAt = "resolved", "resolved", time.Now()
	res.Sender = tenant
	if r, err := e.Accept(ctx, res); err != nil || r.Refused != 1 || r.Resolved != 0 {
		t.Fatalf("resolution from the tenant = %+v, %v; want refused", r, err)
	}
	rec, err := e.Record(ctx, AlertKey(policy.Alert{Fingerprint: a.Fingerprint, StartsAt: a.StartsAt}))
	if err != nil {
		t.Fatal(err)
	}
	if !rec.ResolvedAt.IsZero() {
		t.Errorf("the tenant resolved the owner's alert at %s", rec.ResolvedAt)
	}
	if rec.Origin.Sender != "owner" || len(rec.Origin.Namespaces) != 1 || rec.Origin.Namespaces[0] != f.ns {
		t.Errorf("record origin %+v, want the owner's", rec.Origin)
	}
}

// TestOriginLabelRuleStillActs: with policy.origin.label set, an alert
// from the workload's own namespace is decided and acted on; the checks
// asked again before the action see the alert's labels.
func TestOriginLabelRuleStillActs(t *testing.T) {
	f := newFixture(t, optedIn, nil)
	cfg := policy.DefaultConfig()
	cfg.Origin.Label = "namespace"
	e := f.startEngine(t, cfg, 1)
	n := firing(f.ns, "origin-label", time.Now(), map[string]string{"impact": "service_down"})
	if r, err := e.Accept(context.Background(), n); err != nil || r.Accepted != 1 {
		t.Fatalf("Accept = %+v, %v", r, err)
	}
	inc := e.waitIncident(t, n, incident.StateVerifying, incident.StateResolved, incident.StateEscalated)
	if len(inc.Actions) == 0 || inc.Actions[0].Result == nil || inc.Actions[0].Result.Outcome != actuator.OutcomeApplied {
		t.Fatalf("actions %+v; want an applied rollback\n%s", inc.Actions, inc.Render())
	}
}
