package engine

import (
	"sync"
	"testing"
	"time"

	"github.com/autorollbackd/autorollbackd/internal/actuator"
	"github.com/autorollbackd/autorollbackd/internal/incident"
	"github.com/autorollbackd/autorollbackd/internal/policy"
)

// rollbackWithin decides a rollback while fewer than limit are counted.
func rollbackWithin(limit int) func(policy.Usage) policy.Decision {
	return func(u policy.Usage) policy.Decision {
		if u.Global >= limit {
			return policy.Decision{Outcome: policy.OutcomeEscalate, Reason: policy.ReasonBudgetExhausted}
		}
		return policy.Decision{Outcome: policy.OutcomeRollback}
	}
}

// A burst decided at once gets no more rollbacks than the budget, though
// none of them has been applied yet.
func TestBudgetCountsRollbacksWhenDecided(t *testing.T) {
	var b budget
	now := time.Now()
	var (
		mu        sync.Mutex
		rollbacks int
		wg        sync.WaitGroup
	)
	for i := range 50 {
		wg.Go(func() {
			target := policy.Ref{Kind: policy.KindDeployment, Namespace: "ns", Name: string(rune('a' + i%26))}
			d, place := b.decide(target, now, rollbackWithin(10))
			if d.Outcome == policy.OutcomeRollback {
				place.keep("incident-" + target.Name)
				mu.Lock()
				rollbacks++
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	if rollbacks != 10 {
		t.Fatalf("%d rollbacks decided in a burst, want the budget's 10", rollbacks)
	}
	if u := b.usage(policy.Ref{}, now); u.Global != 10 {
		t.Fatalf("usage = %+v, want 10", u)
	}
	// An hour later the places are free again.
	if u := b.usage(policy.Ref{}, now.Add(budgetWindow+time.Second)); u.Global != 0 {
		t.Fatalf("usage an hour later = %+v, want 0", u)
	}
}

func TestBudgetGivesBackUnusedPlaces(t *testing.T) {
	var b budget
	now := time.Now()
	target := policy.Ref{Kind: policy.KindDeployment, Namespace: "ns", Name: "svc"}

	// A decision that joins an open incident gives its place back.
	_, joined := b.decide(target, now, rollbackWithin(1))
	joined.release()
	if u := b.usage(target, now); u.Global != 0 {
		t.Fatalf("after a released place: %+v", u)
	}
	// A kept place counts until its incident's first action rolls nothing
	// back.
	_, kept := b.decide(target, now, rollbackWithin(1))
	kept.keep("inc-1")
	if d, _ := b.decide(target, now, rollbackWithin(1)); d.Outcome != policy.OutcomeEscalate {
		t.Fatalf("second decision = %s, want escalate: the first holds the only place", d.Outcome)
	}
	b.unused("inc-1")
	if d, place := b.decide(target, now, rollbackWithin(1)); d.Outcome != policy.OutcomeRollback {
		t.Fatalf("after the first gave its place back: %s, want rollback", d.Outcome)
	} else {
		place.release()
	}
	// Dry runs take no place.
	dry := func(policy.Usage) policy.Decision {
		return policy.Decision{Outcome: policy.OutcomeRollback, DryRun: true}
	}
	if _, place := b.decide(target, now, dry); place.token != 0 {
		t.Fatal("a dry run took a place")
	}
}

func TestBudgetResetFromIncidents(t *testing.T) {
	var b budget
	now := time.Now()
	a := policy.Ref{Kind: policy.KindDeployment, Namespace: "ns", Name: "a"}
	applied := &actuator.Result{Outcome: actuator.OutcomeApplied}
	b.reset([]*incident.Versioned{
		// Two rungs applied.
		{Incident: &incident.Incident{ID: "1", Target: a, State: incident.StateResolved,
			Actions: []incident.Action{{At: now.Add(-time.Minute), Result: applied}, {At: now, Result: applied}}}},
		// Decided, not yet acted on.
		{Incident: &incident.Incident{ID: "2", Target: a, State: incident.StateActing}},
		// Failed.
		{Incident: &incident.Incident{ID: "3", Target: a, State: incident.StateEscalated,
			Actions: []incident.Action{{At: now, Error: "boom"}}}},
		// Applied more than an hour ago.
		{Incident: &incident.Incident{ID: "4", Target: a, State: incident.StateResolved,
			Actions: []incident.Action{{At: now.Add(-2 * time.Hour), Result: applied}}}},
	}, now)
	if u := b.usage(a, now); u.Global != 3 || u.Workload != 3 {
		t.Fatalf("usage = %+v, want 3 (two applied, one decided)", u)
	}
}
