package incident

import (
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/autorollbackd/autorollbackd/internal/actuator"
	"github.com/autorollbackd/autorollbackd/internal/escalate"
	"github.com/autorollbackd/autorollbackd/internal/evidence"
	"github.com/autorollbackd/autorollbackd/internal/policy"
	"github.com/autorollbackd/autorollbackd/internal/verify"
)

// The lifecycle of an incident is one pure function, Next: the engine's
// worker loads an incident, feeds it an Event, carries out the Effects that
// come back (acting, verifying, paging), feeds their results back in as
// Events, and saves where an Effect says so. Next does no I/O and reads no
// clock, so every transition is a row of a table test.

// EventKind names what happened to an incident.
type EventKind string

// The events of an incident.
const (
	// EventStart: a worker takes the incident up (after it was opened, woken
	// or resumed after a restart) and does what its state calls for.
	EventStart EventKind = "start"
	// EventTick: the clock moved while the worker waits on a verification:
	// only pages fall due.
	EventTick EventKind = "tick"
	// EventAlertJoined: another alert about the workload was decided and
	// handed to this incident (Alert, Decision, and Plan for a rollback).
	// An alert handed over again is counted once; a resolution it carries
	// (Alert.ResolvedAt) is counted, once.
	EventAlertJoined EventKind = "alert_joined"
	// EventAlertResolved: Alertmanager reported an alert resolved (Key),
	// counted once however often it is handed over.
	EventAlertResolved EventKind = "alert_resolved"
	// EventActed: the current rung's action ended (Action; Retryable when
	// its error may pass).
	EventActed EventKind = "acted"
	// EventVerified: the checks of the current rung ended (Verification).
	EventVerified EventKind = "verified"
	// EventPaged: a page ended (Page, with its receivers or error).
	EventPaged EventKind = "paged"
	// EventPagesResolved: the open pages were resolved at the notifiers.
	EventPagesResolved EventKind = "pages_resolved"
	// EventTasksRan: the post-rollback tasks of a phase ended (Tasks).
	EventTasksRan EventKind = "tasks_ran"
	// EventRedecided: the policy, asked again about a firing alert of an
	// incident that fixes forward, decided Decision (with Plan for a
	// rollback): the owners' fix-forward annotation expired or went.
	EventRedecided EventKind = "redecided"
	// EventEvidenceKept: the bad revision's pods were snapshot (Evidence),
	// or could not be (Error).
	EventEvidenceKept EventKind = "evidence_kept"
)

// Event is one input to Next. At is the current time.
type Event struct {
	Kind EventKind
	At   time.Time

	Alert    Alert
	Decision *policy.Decision
	Plan     *Plan
	Key      string

	Action    *Action
	Retryable bool

	Verification *Verification
	Page         *Page
	// Why is what a page said.
	Why   string
	Phase TaskPhase
	Tasks []Task

	Evidence *evidence.Snapshot
	Error    string
}

// EffectKind names what the worker must do.
type EffectKind string

// The effects of a transition, carried out in order.
const (
	// EffectSave: write the incident now, before the effects after it.
	EffectSave EffectKind = "save"
	// EffectSaveSoon: the incident changed in a way that may wait: the
	// worker writes it before it stops, if no EffectSave does first. For
	// alerts joining and resolving, which their records in the cluster
	// hand to the incident again after a restart, so that a storm of them
	// is one write and not one each.
	EffectSaveSoon EffectKind = "save_soon"
	// EffectAct: carry out the rung Rung (Action says of which kind).
	EffectAct EffectKind = "act"
	// EffectVerify: run the checks of the rung just acted on.
	EffectVerify EffectKind = "verify"
	// EffectPage: page the ladder's level Level, saying Summary.
	EffectPage EffectKind = "page"
	// EffectResendPage: a page of Level was interrupted; send it again to
	// the notifiers that fold a repeat into the first, and only to them.
	EffectResendPage EffectKind = "resend_page"
	// EffectResolvePages: resolve the pages of Levels.
	EffectResolvePages EffectKind = "resolve_pages"
	// EffectAnnounce: tell the announcement notifiers Summary.
	EffectAnnounce EffectKind = "announce"
	// EffectKeepEvidence: snapshot the pods of the suspect revision, before
	// the first action replaces them.
	EffectKeepEvidence EffectKind = "keep_evidence"
	// EffectRunTasks: run the post-rollback tasks of Phase.
	EffectRunTasks EffectKind = "run_tasks"
	// EffectRetry: the action failed for a reason that may pass; the
	// worker tries the incident again after a back-off.
	EffectRetry EffectKind = "retry"
	// EffectReleaseBudget: the incident will not roll back after all; its
	// place in the rollback budget is given back.
	EffectReleaseBudget EffectKind = "release_budget"
)

// Effect is one thing the worker must do.
type Effect struct {
	Kind    EffectKind
	Rung    int
	Action  actuator.Kind
	Level   string
	Levels  []string
	Summary string
	Phase   TaskPhase
	// AlertOnly: with EffectVerify, the other checks passed already; ask
	// only whether the alerts still fire.
	AlertOnly bool
}

// TaskPhase is when a post-rollback task runs.
type TaskPhase string

// The phases of post-rollback tasks.
const (
	// PhaseAfterAction: right after an action was applied, before the
	// verification, for the state a rollback leaves behind whether or not
	// the service recovers (stale caches, stuck jobs).
	PhaseAfterAction TaskPhase = "afterAction"
	// PhaseAfterRecovery: once the verification passed.
	PhaseAfterRecovery TaskPhase = "afterRecovery"
)

// Rules are what Next needs beyond the incident itself.
type Rules struct {
	// Ladders are the people ladders by the outcome the incident has; see
	// LadderOf. A missing outcome has no ladder: nobody is paged on a clock.
	Ladders map[LadderKind]escalate.Ladder
	// MaxAttempts bounds the attempts at one rung whose failures may pass.
	MaxAttempts int
	// AlertGrace is how long after an action the triggering alerts may keep
	// firing before the service counts as still down.
	AlertGrace time.Duration
}

// LadderKind selects the ladder of an incident by its outcome.
type LadderKind string

// The ladders. Each outcome has its own clock: the runbook's 5/10/15
// minutes are for a service that is down.
const (
	LadderRollback   LadderKind = "rollback"
	LadderEscalate   LadderKind = "escalate"
	LadderFixForward LadderKind = "fixForward"
	LadderDryRun     LadderKind = "dryRun"
)

// LadderOf returns the kind of ladder that runs for the incident.
func (i *Incident) LadderOf() LadderKind {
	switch {
	case i.Decision.Outcome == policy.OutcomeRollback && i.DryRun:
		return LadderDryRun
	case i.Decision.Outcome == policy.OutcomeRollback:
		return LadderRollback
	case i.Decision.Outcome == policy.OutcomeFixForward:
		return LadderFixForward
	}
	return LadderEscalate
}

// Ladder returns the steps that run for the incident.
func (r Rules) Ladder(i *Incident) escalate.Ladder { return r.Ladders[i.LadderOf()] }

// NextPage returns when the incident's next page falls due, and false when
// none is left.
func (r Rules) NextPage(i *Incident) (time.Time, bool) {
	return r.Ladder(i).Next(i.StartedAt, i.AttemptedLevels())
}

// Wake returns when the worker should next take the incident up on its own:
// the next page, or the end of the alert's grace. Zero means only when
// something happens.
func (r Rules) Wake(i *Incident) time.Time {
	if !i.Open() {
		return time.Time{}
	}
	var wake time.Time
	if at, ok := r.NextPage(i); ok {
		wake = at
	}
	if i.State == StateVerifying && !i.AlertsFiringSince.IsZero() {
		if at := i.AlertsFiringSince.Add(r.AlertGrace); wake.IsZero() || at.Before(wake) {
			wake = at
		}
	}
	return wake
}

// Next returns the incident after ev and what the worker must do about it.
// It changes a copy; inc is left as it was.
func Next(inc *Incident, ev Event, r Rules) (*Incident, []Effect) {
	n := inc.clone()
	var fx []Effect
	switch ev.Kind {
	case EventStart:
		fx = n.start(ev, r)
	case EventTick:
		fx = n.pagesDue(ev.At, r)
	case EventAlertJoined:
		fx = n.join(ev, r)
	case EventAlertResolved:
		fx = n.alertResolved(ev, r)
	case EventRedecided:
		fx = n.redecided(ev, r)
	case EventActed:
		fx = n.acted(ev, r)
	case EventVerified:
		fx = n.verified(ev, r)
	case EventPaged:
		fx = n.paged(ev)
	case EventPagesResolved:
		fx = n.pagesResolved(ev)
	case EventTasksRan:
		fx = n.tasksRan(ev, r)
	case EventEvidenceKept:
		if ev.Evidence != nil {
			n.Evidence = ev.Evidence
			n.Log(ev.At, "kept evidence of revision %d: %d of %d pods", ev.Evidence.Revision, len(ev.Evidence.Pods), ev.Evidence.PodsFound)
		} else {
			n.Log(ev.At, "evidence of revision %d not kept: %s", n.From, ev.Error)
		}
	default:
		panic(fmt.Sprintf("incident: unknown event %q", ev.Kind))
	}
	return n, fx
}

func (i *Incident) clone() *Incident {
	n := *i
	n.Alerts = slices.Clone(i.Alerts)
	n.Actions = slices.Clone(i.Actions)
	n.Verifications = slices.Clone(i.Verifications)
	n.Pages = slices.Clone(i.Pages)
	n.Tasks = slices.Clone(i.Tasks)
	n.Timeline = slices.Clone(i.Timeline)
	n.Targets = slices.Clone(i.Targets)
	n.Ledger = slices.Clone(i.Ledger)
	n.countAlerts()
	return &n
}

// start settles pages an earlier attempt left sending, then does what the
// state calls for.
func (i *Incident) start(ev Event, r Rules) []Effect {
	var fx []Effect
	for k := range i.Pages {
		if p := &i.Pages[k]; p.Sending {
			// It may or may not have reached anybody: the engine sends it
			// again only to notifiers that fold a repeat into the first,
			// and announces it to the rest.
			p.Sending, p.DeliveryUnknown = false, true
			i.Log(ev.At, "the page of %s was interrupted: delivery unknown", p.Level)
			fx = append(fx, Effect{Kind: EffectResendPage, Level: p.Level})
		}
	}
	if len(fx) > 0 {
		fx = append([]Effect{{Kind: EffectSave}}, fx...)
	}
	switch i.State {
	case StateResolving:
		return append(fx, Effect{Kind: EffectResolvePages, Levels: i.pagedLevels()})
	case StateResolved:
		return fx
	}
	fx = append(fx, i.pagesDue(ev.At, r)...)
	switch i.State {
	case StateActing:
		fx = append(fx, i.act(ev.At, r)...)
	case StateVerifying:
		// Once the checks passed and only the alert was waited on, only the
		// alert is asked again.
		fx = append(fx, Effect{Kind: EffectVerify, Rung: i.Rung, AlertOnly: !i.AlertsFiringSince.IsZero()})
	case StateEscalated:
		if i.AllAlertsResolved() {
			fx = append(fx, i.resolve(ev.At, "every alert resolved")...)
		} else if i.Decision.Outcome == policy.OutcomeEscalate && len(i.Pages) == 0 {
			// The policy escalated instead of acting: tell people now, not
			// when the clock would have.
			fx = append(fx, i.escalateNow(ev.At, r, "no automatic rollback: "+i.Decision.Message)...)
		}
	}
	return fx
}

// act is the current rung's action, or the end of the automatic part.
func (i *Incident) act(now time.Time, r Rules) []Effect {
	kind, ok := i.RungAction(i.Rung)
	if !ok {
		var fx []Effect
		if len(i.Actions) == 0 {
			fx = append(fx, Effect{Kind: EffectReleaseBudget})
		}
		i.State = StateEscalated
		i.Log(now, "no automatic rung left: people take over on the runbook's clock")
		return append(append(fx, Effect{Kind: EffectSave}), i.escalateNow(now, r, "no automatic rollback rung left")...)
	}
	act := Effect{Kind: EffectAct, Rung: i.Rung, Action: kind}
	if len(i.Actions) == 0 && i.Evidence == nil {
		// The runbook asks to review the failed deployment's logs, which
		// the first action erases within seconds.
		return []Effect{{Kind: EffectKeepEvidence}, act}
	}
	return []Effect{act}
}

// RungAction returns the action of rung n: the feature flag, or one
// rollback per target revision, then the scale bounce when allowed; false
// when no rung n exists.
func (i *Incident) RungAction(n int) (actuator.Kind, bool) {
	first := len(i.Targets)
	if i.FeatureFlag != nil {
		first = 1
	}
	switch {
	case n < first && i.FeatureFlag != nil:
		return actuator.KindFeatureFlag, true
	case n < first:
		return actuator.KindRollback, true
	case n == first && i.ScaleBounce:
		return actuator.KindScaleBounce, true
	}
	return "", false
}

func (i *Incident) acted(ev Event, r Rules) []Effect {
	a := *ev.Action
	now := ev.At
	if a.Result == nil {
		i.Attempts++
		if ev.Retryable && i.Attempts < r.MaxAttempts {
			i.Log(now, "%s failed (%s), attempt %d of %d; retrying: %s", a.Kind, a.Reason, i.Attempts, r.MaxAttempts, a.Error)
			return []Effect{{Kind: EffectSave}, {Kind: EffectRetry}}
		}
		i.Actions = append(i.Actions, a)
		i.Attempts = 0
		var fx []Effect
		if i.Rung == 0 {
			fx = append(fx, Effect{Kind: EffectReleaseBudget})
		}
		i.State = StateEscalated
		if a.Refused() {
			// Doubt escalates: people decide what the daemon may not.
			i.Log(now, "%s refused (%s): %s; escalating", a.Kind, a.Reason, a.Error)
			fx = append(fx, Effect{Kind: EffectSave}, Effect{Kind: EffectAnnounce, Summary: fmt.Sprintf("%s refused: %s", a.Kind, a.Error)})
			return append(fx, i.escalateNow(now, r, fmt.Sprintf("%s refused: %s", a.Kind, a.Reason))...)
		}
		i.Log(now, "%s failed (%s): %s; escalating", a.Kind, a.Reason, a.Error)
		fx = append(fx, Effect{Kind: EffectSave})
		return append(fx, i.escalateNow(now, r, fmt.Sprintf("%s failed: %s", a.Kind, a.Reason))...)
	}
	res := *a.Result
	if res.Resumed {
		// The action is on the workload but was not in the record: the
		// daemon stopped between the two writes. It was applied, once.
		res.Outcome = actuator.OutcomeApplied
		res.Message += " (carried out by an earlier attempt that stopped before recording it)"
		a.Result = &res
	}
	i.Actions = append(i.Actions, a)
	i.Attempts = 0
	i.AlertsFiringSince = time.Time{}
	i.Log(now, "%s", res.Message)
	var fx []Effect
	if res.Outcome != actuator.OutcomeApplied && i.Rung == 0 {
		fx = append(fx, Effect{Kind: EffectReleaseBudget})
	}
	if res.Outcome == actuator.OutcomeDryRun {
		i.State = StateEscalated
		i.Log(now, "dry run: nothing changed; people take over")
		fx = append(fx, Effect{Kind: EffectSave}, Effect{Kind: EffectAnnounce, Summary: "dry run: would have " + res.Message})
		return append(fx, i.escalateNow(now, r, "dry run: nothing was rolled back")...)
	}
	i.State = StateVerifying
	fx = append(fx, Effect{Kind: EffectSave}, Effect{Kind: EffectAnnounce, Summary: res.Message})
	if res.Outcome == actuator.OutcomeApplied {
		fx = append(fx, Effect{Kind: EffectRunTasks, Phase: PhaseAfterAction})
	}
	return append(fx, Effect{Kind: EffectVerify, Rung: i.Rung})
}

func (i *Incident) verified(ev Event, r Rules) []Effect {
	v := *ev.Verification
	now := ev.At
	if i.State != StateVerifying {
		return nil
	}
	overall := v.Overall
	var failed []string
	for _, res := range v.Results {
		if res.Status != verify.StatusPass && !(res.Kind == verify.KindAlert && res.Status == verify.StatusInconclusive) {
			failed = append(failed, res.Check+": "+res.Message)
		}
	}
	// The alert is the runbook's truth: a workload whose checks pass while
	// its alert still fires is still down, once the alert has had its grace.
	if alert, ok := alertResult(v.Results); ok && alert.Status == verify.StatusFail && overall == verify.StatusPass {
		since := i.lastActionAt()
		if now.Before(since.Add(r.AlertGrace)) {
			if i.AlertsFiringSince.IsZero() {
				i.AlertsFiringSince = since
				i.Log(now, "checks of rung %d pass, but %s; waiting up to %s after the action", i.Rung, alert.Message, r.AlertGrace)
				return []Effect{{Kind: EffectSave}}
			}
			return nil
		}
		overall = verify.StatusFail
		i.Log(now, "%s %s after the action: still down", alert.Message, r.AlertGrace)
	}
	v.Overall = overall
	v.Rung = i.Rung
	i.Verifications = append(i.Verifications, v)
	i.AlertsFiringSince = time.Time{}
	if overall == verify.StatusPass {
		i.Log(now, "verification of rung %d: pass", i.Rung)
		return []Effect{{Kind: EffectSave}, {Kind: EffectRunTasks, Phase: PhaseAfterRecovery}}
	}
	i.Log(now, "verification of rung %d: %s: %s", i.Rung, overall, strings.Join(failed, "; "))
	i.Rung++
	i.State = StateActing
	return append([]Effect{{Kind: EffectSave}, {Kind: EffectAnnounce, Summary: fmt.Sprintf("verification %s: %s", overall, strings.Join(failed, "; "))}},
		i.act(now, r)...)
}

func alertResult(results []verify.Result) (verify.Result, bool) {
	for _, r := range results {
		if r.Kind == verify.KindAlert {
			return r, true
		}
	}
	return verify.Result{}, false
}

func (i *Incident) lastActionAt() time.Time {
	if n := len(i.Actions); n > 0 {
		return i.Actions[n-1].At
	}
	return i.StartedAt
}

func (i *Incident) tasksRan(ev Event, r Rules) []Effect {
	i.Tasks = append(i.Tasks, ev.Tasks...)
	var failed []string
	for _, t := range ev.Tasks {
		if t.Result != "succeeded" {
			failed = append(failed, t.Name)
			i.Log(ev.At, "post-rollback task %s failed: %s", t.Name, t.Message)
		} else {
			i.Log(ev.At, "post-rollback task %s succeeded (job %s)", t.Name, t.Job)
		}
	}
	if ev.Phase == PhaseAfterAction {
		if len(ev.Tasks) == 0 {
			// No task was due: nothing changed, nothing to write.
			return nil
		}
		// The service may still recover; the verification goes on, and
		// people hear of the failed clean-up now.
		fx := []Effect{{Kind: EffectSave}}
		if len(failed) > 0 {
			fx = append(fx, i.escalateNow(ev.At, r, fmt.Sprintf("post-rollback task %s failed", strings.Join(failed, ", ")))...)
		}
		return fx
	}
	if len(failed) > 0 {
		i.State = StateEscalated
		i.Log(ev.At, "escalating: the service recovered, but what the task was to clean up is not")
		return append([]Effect{{Kind: EffectSave}}, i.escalateNow(ev.At, r, fmt.Sprintf("post-rollback task %s failed", strings.Join(failed, ", ")))...)
	}
	// resolve's write records the tasks too.
	return i.resolve(ev.At, "verified recovered")
}

// resolve stops the clock. The incident is resolving until its pages are
// resolved at the notifiers, so that a restart in between resolves them
// still, and only then is it resolved.
func (i *Incident) resolve(now time.Time, why string) []Effect {
	i.ResolvedAt = now
	i.Log(now, "resolved: %s", why)
	levels := i.pagedLevels()
	if len(levels) == 0 {
		// No page to resolve: resolved at once, in one write.
		return i.resolved()
	}
	i.State = StateResolving
	return []Effect{{Kind: EffectSave}, {Kind: EffectResolvePages, Levels: levels}}
}

func (i *Incident) pagesResolved(ev Event) []Effect {
	if i.State != StateResolving {
		return nil
	}
	return i.resolved()
}

func (i *Incident) resolved() []Effect {
	i.State = StateResolved
	return []Effect{{Kind: EffectSave}, {Kind: EffectAnnounce,
		Summary: fmt.Sprintf("resolved after %s: %s", i.ResolvedAt.Sub(i.StartedAt).Round(time.Second), i.resolution())}}
}

func (i *Incident) resolution() string {
	for k := len(i.Timeline) - 1; k >= 0; k-- {
		if why, ok := strings.CutPrefix(i.Timeline[k].What, "resolved: "); ok {
			return why
		}
	}
	return "resolved"
}

func (i *Incident) pagedLevels() []string {
	var levels []string
	for l := range i.PagedLevels() {
		levels = append(levels, l)
	}
	slices.Sort(levels)
	return levels
}

// pagesDue records the pages whose time has come as sending, and asks for
// them to be sent.
func (i *Incident) pagesDue(now time.Time, r Rules) []Effect {
	if !i.Open() || i.State == StateResolving {
		return nil
	}
	var fx []Effect
	for _, s := range r.Ladder(i).Due(i.StartedAt, now, i.AttemptedLevels()) {
		fx = append(fx, i.sendPage(now, s.Level, fmt.Sprintf("still open after %s", s.After.Duration))...)
	}
	return fx
}

// escalateNow pages the first level of the incident's ladder at once, when
// the automatic part is over (or was never allowed) and its time has not
// come yet.
func (i *Incident) escalateNow(now time.Time, r Rules, why string) []Effect {
	ladder := r.Ladder(i)
	if len(ladder) == 0 || i.AttemptedLevels()[ladder[0].Level] {
		return nil
	}
	return i.sendPage(now, ladder[0].Level, why)
}

// sendPage records a page as sending before it goes out, so that a daemon
// stopping halfway leaves a trace and the next attempt does not page twice.
func (i *Incident) sendPage(now time.Time, level, why string) []Effect {
	i.Pages = append(i.Pages, Page{At: now, Level: level, Sending: true})
	return []Effect{{Kind: EffectSave}, {Kind: EffectPage, Level: level, Summary: why}}
}

func (i *Incident) paged(ev Event) []Effect {
	p := ev.Page
	for k := len(i.Pages) - 1; k >= 0; k-- {
		cur := &i.Pages[k]
		if cur.Level != p.Level || !cur.Sending {
			continue
		}
		cur.Sending, cur.Error, cur.Receivers, cur.NoReceiver, cur.Group = false, p.Error, p.Receivers, p.NoReceiver, p.Group
		switch {
		case p.Error != "" && p.Group != "":
			i.Log(ev.At, "the group page of %s for %s failed: %s", p.Group, p.Level, p.Error)
		case p.Error != "":
			i.Log(ev.At, "page %s failed: %s", p.Level, p.Error)
		case p.NoReceiver:
			i.Log(ev.At, "no receiver for %s: nobody was paged", p.Level)
		case p.Group != "":
			i.Log(ev.At, "paged %s in one page with incident %s and others of the same reason (%s)", p.Level, p.Group, strings.Join(p.Receivers, ", "))
		default:
			i.Log(ev.At, "paged %s: %s (to %s)", p.Level, ev.Why, strings.Join(p.Receivers, ", "))
		}
		return []Effect{{Kind: EffectSave}}
	}
	return nil
}

// join counts an alert and adds its decision to the incident. A rollback
// decision on an incident that has not acted yet (it was fixing forward or
// escalated) takes its plan: the incident escalates its outcome and acts.
func (i *Incident) join(ev Event, r Rules) []Effect {
	d := *ev.Decision
	wasResolved := i.AlertsResolved
	added, kept := i.AddAlert(ev.Alert)
	if !added {
		// Handed over again, perhaps now resolved.
		if ev.Alert.ResolvedAt.IsZero() {
			return nil
		}
		if counted, name := i.resolveAlert(ev.Alert.Key, ev.Alert.ResolvedAt); counted {
			return i.alertsResolved(ev.Alert.ResolvedAt, name, name != "", r)
		}
		return nil
	}
	switch {
	case kept:
		i.Log(ev.At, "alert %s joined: %s (%s)", ev.Alert.Name, d.Outcome, d.Reason)
	case alertMilestone(i.AlertsJoined):
		i.Log(ev.At, "%d alerts have joined; the incident keeps %d of them whole", i.AlertsJoined, len(i.Alerts))
	}
	if d.Outcome != policy.OutcomeRollback || ev.Plan == nil || !i.TakesOver(d) {
		// Already rolling back, or past the automatic part: the alert joins
		// and the rollback it asks for is the one under way.
		if i.AlertsResolved != wasResolved {
			return i.alertsResolved(ev.Alert.ResolvedAt, ev.Alert.Name, kept, r)
		}
		return []Effect{{Kind: EffectSaveSoon}}
	}
	was := i.Decision
	i.Decision, i.DryRun = d, d.DryRun
	i.Plan = *ev.Plan
	i.Rung, i.Attempts = 0, 0
	i.State = StateActing
	if i.ResolvedAt.IsZero() {
		i.Log(ev.At, "outcome escalated from %s (%s) to %s: %s", was.Outcome, was.Reason, d.Outcome, d.Message)
	}
	i.LogPlan(ev.At)
	return append([]Effect{{Kind: EffectSave}}, i.act(ev.At, r)...)
}

// redecided takes a new rollback decision about the incident's own alerts,
// as join does for a new alert's.
func (i *Incident) redecided(ev Event, r Rules) []Effect {
	d := *ev.Decision
	if d.Outcome != policy.OutcomeRollback || ev.Plan == nil || !i.TakesOver(d) {
		return []Effect{{Kind: EffectReleaseBudget}}
	}
	was := i.Decision
	i.Decision, i.DryRun = d, d.DryRun
	i.Plan = *ev.Plan
	i.Rung, i.Attempts = 0, 0
	i.State = StateActing
	i.Log(ev.At, "decided again while the alert fires: outcome escalated from %s (%s) to %s: %s", was.Outcome, was.Reason, d.Outcome, d.Message)
	i.LogPlan(ev.At)
	return append([]Effect{{Kind: EffectSave}}, i.act(ev.At, r)...)
}

// Redecides reports whether the incident fixes forward for a reason the
// owners set on the workload, which may pass while its alerts fire: the
// policy is asked again then.
func (i *Incident) Redecides() bool {
	return i.State == StateEscalated && len(i.Actions) == 0 && i.Decision.Outcome == policy.OutcomeFixForward &&
		(i.Decision.Reason == policy.ReasonFixForwardAnnotation || i.Decision.Reason == policy.ReasonRollbackUnsafe) &&
		!i.AllAlertsResolved()
}

// TakesOver reports whether a rollback decision replaces the incident's
// own: only while nothing was done yet.
func (i *Incident) TakesOver(d policy.Decision) bool {
	if d.Outcome != policy.OutcomeRollback || len(i.Actions) > 0 || i.State != StateEscalated {
		return false
	}
	return i.Decision.Outcome != policy.OutcomeRollback || (i.DryRun && !d.DryRun)
}

// alertResolved counts an alert's resolution; once every alert is
// resolved, an incident that has nothing automatic in flight resolves.
func (i *Incident) alertResolved(ev Event, r Rules) []Effect {
	counted, name := i.resolveAlert(ev.Key, ev.At)
	if !counted {
		return nil
	}
	return i.alertsResolved(ev.At, name, name != "", r)
}

// alertsResolved follows a resolution just counted.
func (i *Incident) alertsResolved(at time.Time, name string, kept bool, r Rules) []Effect {
	if kept {
		i.Log(at, "alert %s resolved", name)
	}
	if i.State == StateEscalated && i.AllAlertsResolved() {
		return i.resolve(at, "every alert resolved")
	}
	return []Effect{{Kind: EffectSaveSoon}}
}
