package engine

import (
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/autorollbackd/autorollbackd/internal/escalate"
	"github.com/autorollbackd/autorollbackd/internal/policy"
	"github.com/autorollbackd/autorollbackd/internal/testenv"
	"github.com/autorollbackd/autorollbackd/internal/verify"
)

// gatedVerifier holds the first verification until the test opens it.
type gatedVerifier struct {
	Verifier
	entered, open chan struct{}
	once          sync.Once
}

func gate(v Verifier) *gatedVerifier {
	return &gatedVerifier{Verifier: v, entered: make(chan struct{}), open: make(chan struct{})}
}

func (g *gatedVerifier) Verify(ctx context.Context, target policy.Ref) []verify.Result {
	first := false
	g.once.Do(func() { first = true })
	if first {
		close(g.entered)
		select {
		case <-g.open:
		case <-ctx.Done():
		}
	}
	return g.Verifier.Verify(ctx, target)
}

// An alert decided while its workload's incident is open joins that
// incident, even when the incident's verification passes a moment later:
// the resolution weighs the alert that joined, instead of absorbing it
// afterwards into an incident already over. The second alert still fires
// in Alertmanager, so the incident is not resolved, and the alert is
// acted on: its verification finds the service still down.
func TestAlertJoiningAsItsIncidentResolvesIsNotAbsorbed(t *testing.T) {
	base := alertmanager(t)
	f := newFixture(t, optedIn, nil)
	g := gate(nil)
	f.verifier = func(v Verifier) Verifier { g.Verifier = v; return g }
	e := f.startEngine(t, policy.DefaultConfig(), 1, func(_ *verify.Config, _ *escalate.Config, o *Options) {
		o.AlertGrace = 2 * time.Second
	})
	ctx := context.Background()

	startsAt := time.Now()
	first, firstLabels := heldNotification(f, base, "EventServiceDown", startsAt)
	holdAlert(t, base, firstLabels, startsAt, false)
	if _, err := e.Accept(ctx, first); err != nil {
		t.Fatal(err)
	}
	select {
	case <-g.entered:
	case <-time.After(60 * time.Second):
		t.Fatal("the rollback was never verified")
	}
	inc, err := e.incidentOf(ctx, first)
	if err != nil {
		t.Fatal(err)
	}

	// While the rollback is verified, the first alert resolves and a
	// second one fires and is decided: it joins the open incident.
	holdAlert(t, base, firstLabels, startsAt, true)
	second, secondLabels := heldNotification(f, base, "EventServiceErrors", startsAt.Add(time.Second))
	holdAlert(t, base, secondLabels, second.Alerts[0].StartsAt, false)
	if _, err := e.Accept(ctx, second); err != nil {
		t.Fatal(err)
	}
	e.waitDecision(t, second)
	if rec, err := e.Record(ctx, AlertKey(policy.Alert{Fingerprint: second.Alerts[0].Fingerprint, StartsAt: second.Alerts[0].StartsAt})); err != nil || rec.Incident != inc.ID {
		t.Fatalf("the second alert's record names incident %q (%v), want the open %s", rec.Incident, err, inc.ID)
	}

	close(g.open)
	testenv.Eventually(t, 60*time.Second, "the second alert weighed by the incident", func(ctx context.Context) (bool, string) {
		v, err := e.opts.Incidents.Get(ctx, inc.ID)
		if err != nil {
			return false, err.Error()
		}
		in := v.Incident
		if !in.ResolvedAt.IsZero() {
			t.Fatalf("the incident resolved while an alert that joined it fires\n%s", in.Render())
		}
		if !in.HasAlert(AlertKey(policy.Alert{Fingerprint: second.Alerts[0].Fingerprint, StartsAt: second.Alerts[0].StartsAt})) {
			return false, "the second alert has not joined yet\n" + in.Render()
		}
		for _, l := range in.Timeline {
			if strings.Contains(l.What, "still down") {
				return true, ""
			}
		}
		return false, "not yet found still down\n" + in.Render()
	})
}
