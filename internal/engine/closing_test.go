package engine

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"

	"github.com/autorollbackd/autorollbackd/internal/escalate"
	"github.com/autorollbackd/autorollbackd/internal/incident"
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

// An incident can outlive its alerts' records, which are collected
// engine.retention after their decision: an alert that fires for days
// while people work on it. Its resolution still reaches the incident, which
// finds the alert in its ledger and resolves; without it the incident
// would stay open for ever, and every later alert about the workload would
// join it and never be acted on.
func TestResolutionReachesItsIncidentAfterItsRecordIsCollected(t *testing.T) {
	f := newFixture(t, optedIn, nil)
	e := f.startEngine(t, policy.DefaultConfig(), 1, func(_ *verify.Config, _ *escalate.Config, o *Options) {
		o.Retention = time.Millisecond
	})
	ctx := context.Background()
	n := firing(f.ns, "outlives-its-record", time.Now(), map[string]string{"impact": "non_critical"})
	if _, err := e.Accept(ctx, n); err != nil {
		t.Fatal(err)
	}
	inc := e.waitIncident(t, n, incident.StateEscalated)
	key := AlertKey(policy.Alert{Fingerprint: n.Alerts[0].Fingerprint, StartsAt: n.Alerts[0].StartsAt})
	testenv.Eventually(t, 30*time.Second, "the alert's record collected", func(ctx context.Context) (bool, string) {
		e.collectGarbage(ctx)
		_, err := e.Record(ctx, key)
		return apierrors.IsNotFound(errors.Unwrap(err)), fmt.Sprint(err)
	})

	// A resolution of an alert the incident never had changes nothing;
	// had it been counted, the incident would resolve at its end.
	other := firing(f.ns, "never-joined", time.Now(), map[string]string{"impact": "non_critical"})
	other.Alerts[0].Status, other.Alerts[0].EndsAt = "resolved", time.Now().Add(-time.Minute)
	if _, err := e.Accept(ctx, other); err != nil {
		t.Fatal(err)
	}
	resolved := firing(f.ns, "outlives-its-record", n.Alerts[0].StartsAt, map[string]string{"impact": "non_critical"})
	resolved.Alerts[0].Status, resolved.Alerts[0].EndsAt = "resolved", time.Now()
	if _, err := e.Accept(ctx, resolved); err != nil {
		t.Fatal(err)
	}
	got := e.waitResolved(t, inc.ID)
	if got.AlertsResolved != 1 || !got.ResolvedAt.Equal(resolved.Alerts[0].EndsAt) {
		t.Errorf("%d alerts resolved, the incident at %s; want 1, at the end of its own alert (%s)\n%s",
			got.AlertsResolved, got.ResolvedAt, resolved.Alerts[0].EndsAt, got.Render())
	}
}

// Resolutions without a record can carry any key a sender makes up: the
// mailbox holds one of each key, and a bounded number in all.
func TestMailboxBoundsResolutions(t *testing.T) {
	var m mailbox
	resolution := func(key string) incident.Event {
		return incident.Event{Kind: incident.EventAlertResolved, Key: key}
	}
	for _, key := range []string{"a", "b", "c"} {
		if !m.postResolution("inc", resolution(key), 3) {
			t.Fatalf("resolution %s refused below the limit", key)
		}
	}
	if !m.postResolution("inc", resolution("b"), 3) {
		t.Error("a resolution already waiting was refused; it is there once")
	}
	if m.postResolution("inc", resolution("d"), 3) {
		t.Error("a fourth resolution was posted past the limit of 3")
	}
	if !m.postResolution("other", resolution("d"), 3) {
		t.Error("another incident's mailbox is full too; the limit is per incident")
	}
	var keys []string
	for _, ev := range m.take("inc") {
		keys = append(keys, ev.Key)
	}
	if !slices.Equal(keys, []string{"a", "b", "c"}) {
		t.Errorf("mail taken %v, want [a b c] in order, each once", keys)
	}
	if !m.postResolution("inc", resolution("d"), 3) {
		t.Error("refused once the mail was taken")
	}
}

// Two alerts of one rule group that start in the same evaluation share
// their start. When the second's first notification comes after the
// first's incident is over (another route, a delivery that failed), the
// incident the second would open has the same name: it must open one of
// its own, not be absorbed into the one that is over.
func TestAlertOfTheSameStartAfterItsIncidentIsOverOpensItsOwn(t *testing.T) {
	f := newFixture(t, optedIn, nil)
	e := f.startEngine(t, policy.DefaultConfig(), 1)
	ctx := context.Background()
	startsAt := time.Now().Truncate(time.Second)
	first := firing(f.ns, "same-start-1", startsAt, map[string]string{"impact": "non_critical"})
	if _, err := e.Accept(ctx, first); err != nil {
		t.Fatal(err)
	}
	over := e.waitIncident(t, first, incident.StateEscalated)
	resolved := firing(f.ns, "same-start-1", startsAt, map[string]string{"impact": "non_critical"})
	resolved.Alerts[0].Status, resolved.Alerts[0].EndsAt = "resolved", time.Now()
	if _, err := e.Accept(ctx, resolved); err != nil {
		t.Fatal(err)
	}
	e.waitResolved(t, over.ID)

	second := firing(f.ns, "same-start-2", startsAt, map[string]string{"impact": "non_critical", "alertname": "EventServiceSlow"})
	if _, err := e.Accept(ctx, second); err != nil {
		t.Fatal(err)
	}
	inc := e.waitIncident(t, second, incident.StateEscalated, incident.StateResolving, incident.StateResolved)
	if inc.ID == over.ID || inc.Over() {
		t.Fatalf("the second alert went to incident %s (%s), want an open one of its own beside %s\n%s", inc.ID, inc.State, over.ID, inc.Render())
	}
	again, err := e.opts.Incidents.Get(ctx, over.ID)
	if err != nil {
		t.Fatal(err)
	}
	if again.AlertsJoined != 1 {
		t.Errorf("the incident that was over holds %d alerts, want its own 1\n%s", again.AlertsJoined, again.Render())
	}
}
