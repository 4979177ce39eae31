package engine

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"k8s.io/utils/clock"

	"github.com/autorollbackd/autorollbackd/internal/escalate"
	"github.com/autorollbackd/autorollbackd/internal/incident"
	"github.com/autorollbackd/autorollbackd/internal/policy"
)

// pageGroups folds the pages of escalations for the same reason into one,
// as Alertmanager groups alerts: the first page of a group waits for the
// group's wait, then goes out once with every workload that joined
// meanwhile; later pages of the same level and reason join it, without
// paging again, until the group's interval has passed. A storm of a
// thousand budget-exhausted escalations pages on-call once.
//
// Only escalations the policy decided (a guard refused the rollback) are
// grouped: each of those says the same thing about many workloads. A
// rollback that failed is paged on its own.
type pageGroups struct {
	clock    clock.WithTicker
	wait     time.Duration
	interval time.Duration

	mu     sync.Mutex
	groups map[groupKey]*pageGroup
}

type groupKey struct {
	level  string
	reason policy.Reason
}

type pageGroup struct {
	leader  string
	opened  time.Time
	members []policy.Ref
	// sent is closed once the leader's page went out; page then holds
	// its outcome.
	sent chan struct{}
	page incident.Page
}

// grouped reports whether an incident's pages are grouped.
func grouped(inc *incident.Incident) bool {
	return inc.Decision.Outcome == policy.OutcomeEscalate && len(inc.Actions) == 0
}

// join adds inc to the group of its level and reason, opening one when
// none is open, and reports whether inc leads it (and so sends its page).
func (g *pageGroups) join(inc *incident.Incident, level string) (*pageGroup, bool) {
	key := groupKey{level: level, reason: inc.Decision.Reason}
	now := g.clock.Now()
	g.mu.Lock()
	defer g.mu.Unlock()
	if cur, ok := g.groups[key]; ok && now.Sub(cur.opened) < g.wait+g.interval {
		if !slices.Contains(cur.members, inc.Target) {
			cur.members = append(cur.members, inc.Target)
		}
		return cur, false
	}
	if g.groups == nil {
		g.groups = map[groupKey]*pageGroup{}
	}
	// Forget groups whose interval has passed, so that the map holds at
	// most one group per level and reason.
	for k, cur := range g.groups {
		if now.Sub(cur.opened) >= g.wait+g.interval {
			delete(g.groups, k)
		}
	}
	pg := &pageGroup{leader: inc.ID, opened: now, members: []policy.Ref{inc.Target}, sent: make(chan struct{})}
	g.groups[key] = pg
	return pg, true
}

// members returns the group's workloads so far.
func (g *pageGroups) members(pg *pageGroup) []policy.Ref {
	g.mu.Lock()
	defer g.mu.Unlock()
	return slices.Clone(pg.members)
}

// maxListed bounds the workloads a grouped page names.
const maxListed = 20

// groupedPage sends, or joins, the grouped page of an escalation.
func (e *Engine) groupedPage(ctx context.Context, inc *incident.Incident, f incident.Effect) incident.Event {
	pg, leader := e.groups.join(inc, f.Level)
	if !leader {
		select {
		case <-pg.sent:
		case <-ctx.Done():
			return incident.Event{Kind: incident.EventPaged, At: e.opts.Clock.Now(),
				Page: &incident.Page{Level: f.Level, Error: "stopped before the grouped page was sent"}}
		}
		p := pg.page
		p.Group = pg.leader
		return incident.Event{Kind: incident.EventPaged, At: e.opts.Clock.Now(), Page: &p, Why: f.Summary}
	}
	select {
	case <-e.opts.Clock.After(e.groups.wait):
	case <-ctx.Done():
	}
	members := e.groups.members(pg)
	summary := fmt.Sprintf("%s: %s", inc.Target, f.Summary)
	if len(members) > 1 {
		names := make([]string, 0, min(len(members), maxListed))
		for _, m := range members[:min(len(members), maxListed)] {
			names = append(names, m.Namespace+"/"+m.Name)
		}
		if len(members) > maxListed {
			names = append(names, fmt.Sprintf("and %d more", len(members)-maxListed))
		}
		summary = fmt.Sprintf("%d workloads escalated (%s): %s", len(members), inc.Decision.Reason, strings.Join(names, ", "))
	}
	ev := e.sendPage(ctx, inc, f.Level, summary)
	pg.page = *ev.Page
	close(pg.sent)
	return ev
}

// page sends the page of a ladder level and returns who received it.
func (e *Engine) page(ctx context.Context, inc *incident.Incident, f incident.Effect) incident.Event {
	if grouped(inc) {
		return e.groupedPage(ctx, inc, f)
	}
	return e.sendPage(ctx, inc, f.Level, fmt.Sprintf("%s: %s", inc.Target, f.Summary))
}

func (e *Engine) sendPage(ctx context.Context, inc *incident.Incident, level, summary string) incident.Event {
	step, _ := e.opts.Escalator.Ladder().Step(level)
	m := e.message(inc, escalate.Page, summary)
	m.Level = level
	p := incident.Page{Level: level}
	d, err := e.opts.Escalator.Page(ctx, step, m)
	p.Receivers, p.NoReceiver = d.Receivers, d.NoReceiver
	if err != nil {
		p.Error = err.Error()
	}
	return incident.Event{Kind: incident.EventPaged, At: e.opts.Clock.Now(), Page: &p, Why: summary}
}
