package engine

import (
	"sync"
	"time"

	"github.com/autorollbackd/autorollbackd/internal/actuator"
	"github.com/autorollbackd/autorollbackd/internal/incident"
	"github.com/autorollbackd/autorollbackd/internal/policy"
)

// budgetWindow is the period the policy's rollback budget counts over.
const budgetWindow = time.Hour

// budget remembers the automatic rollbacks applied in the last hour, for the
// policy's budget. Only the leader acts, and it reads every incident record
// when it starts leading, so its memory is complete without listing the
// incidents again for every decision.
type budget struct {
	mu      sync.Mutex
	applied []appliedAt // oldest first
}

type appliedAt struct {
	target policy.Ref
	at     time.Time
}

// reset counts the applied actions recorded in incs.
func (b *budget) reset(incs []*incident.Versioned) {
	var applied []appliedAt
	for _, inc := range incs {
		for _, a := range inc.Actions {
			if a.Result != nil && a.Result.Outcome == actuator.OutcomeApplied {
				applied = append(applied, appliedAt{target: inc.Target, at: a.At})
			}
		}
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	b.applied = applied
}

// add counts one applied action.
func (b *budget) add(target policy.Ref, at time.Time) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.applied = append(b.applied, appliedAt{target: target, at: at})
}

// usage returns the rollbacks applied in the hour before now, of all
// workloads and of target, and forgets older ones.
func (b *budget) usage(target policy.Ref, now time.Time) policy.Usage {
	b.mu.Lock()
	defer b.mu.Unlock()
	kept := b.applied[:0]
	var u policy.Usage
	for _, a := range b.applied {
		if now.Sub(a.at) > budgetWindow {
			continue
		}
		kept = append(kept, a)
		u.Global++
		if a.target == target {
			u.Workload++
		}
	}
	b.applied = kept
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
