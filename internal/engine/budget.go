package engine

import (
	"slices"
	"sync"
	"time"

	"github.com/autorollbackd/autorollbackd/internal/actuator"
	"github.com/autorollbackd/autorollbackd/internal/incident"
	"github.com/autorollbackd/autorollbackd/internal/policy"
)

// budgetWindow is the period the policy's rollback budget counts over.
const budgetWindow = time.Hour

// budget counts the automatic rollbacks of the last hour for the policy's
// budget. A rollback counts from the moment it is decided, not only once it
// is applied: otherwise every alert of a burst would be decided against the
// same count while the first rollbacks wait for a worker, and the budget
// would be overshot many times. A decided rollback whose action then fails,
// or changes nothing, gives its place back.
//
// Only the leader decides and acts, and it reads every incident record when
// it starts leading, so its memory is complete without listing the
// incidents again for every decision.
type budget struct {
	mu      sync.Mutex
	entries []budgetEntry // oldest first
	next    uint64
}

type budgetEntry struct {
	target   policy.Ref
	at       time.Time
	token    uint64
	incident string // "" while the decision has no incident yet
}

// reservation is a decided rollback's place in the budget, held until its
// incident is known (keep) or the decision opens none (release).
type reservation struct {
	b     *budget
	token uint64 // 0: nothing reserved
}

// decide evaluates under the budget's lock and, when the decision is an
// automatic rollback, takes a place for it before the lock is released.
func (b *budget) decide(target policy.Ref, now time.Time, evaluate func(policy.Usage) policy.Decision) (policy.Decision, reservation) {
	b.mu.Lock()
	defer b.mu.Unlock()
	d := evaluate(b.usageLocked(target, now))
	if d.Outcome != policy.OutcomeRollback || d.DryRun {
		return d, reservation{}
	}
	b.next++
	b.entries = append(b.entries, budgetEntry{target: target, at: now, token: b.next})
	return d, reservation{b: b, token: b.next}
}

// keep binds the place to the incident that will act on it.
func (r reservation) keep(incidentID string) {
	if r.token == 0 {
		return
	}
	r.b.mu.Lock()
	defer r.b.mu.Unlock()
	for i := range r.b.entries {
		if r.b.entries[i].token == r.token {
			r.b.entries[i].incident = incidentID
		}
	}
}

// release gives the place back: the decision joined an incident that
// already holds one, or was never recorded.
func (r reservation) release() {
	if r.token == 0 {
		return
	}
	r.b.remove(func(e budgetEntry) bool { return e.token == r.token })
}

// unused gives back the place of an incident whose first action did not
// roll anything back.
func (b *budget) unused(incidentID string) {
	b.remove(func(e budgetEntry) bool { return e.incident == incidentID })
}

func (b *budget) remove(match func(budgetEntry) bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.entries = slices.DeleteFunc(b.entries, match)
}

// add counts one more applied rollback of an incident (a later rung).
func (b *budget) add(target policy.Ref, at time.Time, incidentID string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.entries = append(b.entries, budgetEntry{target: target, at: at, incident: incidentID})
}

// reset counts from incs: the applied rollbacks, and the decided ones not
// yet acted on.
func (b *budget) reset(incs []*incident.Versioned, now time.Time) {
	var entries []budgetEntry
	for _, inc := range incs {
		for _, a := range inc.Actions {
			if a.Result != nil && a.Result.Outcome == actuator.OutcomeApplied {
				entries = append(entries, budgetEntry{target: inc.Target, at: a.At, incident: inc.ID})
			}
		}
		if inc.State == incident.StateActing && len(inc.Actions) == 0 && !inc.DryRun {
			entries = append(entries, budgetEntry{target: inc.Target, at: now, incident: inc.ID})
		}
	}
	slices.SortFunc(entries, func(a, b budgetEntry) int { return a.at.Compare(b.at) })
	b.mu.Lock()
	defer b.mu.Unlock()
	b.entries = entries
}

// usage returns the rollbacks of the hour before now, of all workloads and
// of target, and forgets older ones.
func (b *budget) usage(target policy.Ref, now time.Time) policy.Usage {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.usageLocked(target, now)
}

func (b *budget) usageLocked(target policy.Ref, now time.Time) policy.Usage {
	kept := b.entries[:0]
	var u policy.Usage
	for _, e := range b.entries {
		if now.Sub(e.at) > budgetWindow {
			continue
		}
		kept = append(kept, e)
		u.Global++
		if e.target == target {
			u.Workload++
		}
	}
	b.entries = kept
	return u
}

// openIncidents maps each workload to its open incident. Only the leader
// opens and resolves incidents, and it reads every incident record when it
// starts leading, so its memory answers without listing them per alert.
type openIncidents struct {
	mu       sync.Mutex
	byTarget map[policy.Ref]string
}

func (o *openIncidents) reset(incs []*incident.Versioned) {
	m := map[policy.Ref]string{}
	for _, inc := range incs {
		if inc.Open() {
			m[inc.Target] = inc.ID
		}
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	o.byTarget = m
}

func (o *openIncidents) get(target policy.Ref) string {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.byTarget[target]
}

func (o *openIncidents) set(target policy.Ref, id string) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.byTarget == nil {
		o.byTarget = map[policy.Ref]string{}
	}
	o.byTarget[target] = id
}

// remove forgets target's open incident if it is id.
func (o *openIncidents) remove(target policy.Ref, id string) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.byTarget[target] == id {
		delete(o.byTarget, target)
	}
}
