package engine

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/runtime/schema"

	"github.com/autorollbackd/autorollbackd/internal/actuator"
	"github.com/autorollbackd/autorollbackd/internal/escalate"
	"github.com/autorollbackd/autorollbackd/internal/incident"
	"github.com/autorollbackd/autorollbackd/internal/policy"
	"github.com/autorollbackd/autorollbackd/internal/verify"
)

// AnnotationAllowScaleBounce on a workload lets the last automatic rung
// scale it to zero and back (the runbook's "nuclear option"), when
// engine.allowScaleBounce is also set.
const AnnotationAllowScaleBounce = "autorollback.io/allow-scale-bounce"

// maxActionRetries bounds the retries of an action that failed for a reason
// that may pass (a conflict that did not clear, a controller still settling,
// a network error).
const maxActionRetries = 5

func transient(reason string) bool {
	return reason == "error" || reason == "conflict" || reason == "settling"
}

// openIncident hands a decision to the workload's open incident (open, as
// read under the workload's lock), or opens one. An alert about a workload
// that already has an open incident joins it: there is one incident, and so
// one rollback, per workload and episode. It returns the incident's id, and
// whether this call opened it.
func (e *Engine) openIncident(ctx context.Context, rec *Record, w *policy.Workload, open *incident.Versioned) (string, bool, error) {
	now := e.opts.Clock.Now()
	d := rec.Decision
	for {
		if open != nil {
			if !open.HasAlert(rec.Key) {
				open.Alerts = append(open.Alerts, alertOf(rec))
				open.Log(now, "alert %s joined: %s (%s)", rec.Alert.Labels["alertname"], d.Outcome, d.Reason)
				err := e.opts.Incidents.Update(ctx, open)
				if apierrors.IsConflict(errors.Unwrap(err)) {
					// Its worker wrote it meanwhile; join the current one.
					if open, err = e.openFor(ctx, rec.Target); err != nil {
						return "", false, err
					}
					continue
				}
				if err != nil {
					return "", false, err
				}
			}
			return open.ID, false, nil
		}
		inc := e.newIncident(rec, w, now)
		v, err := e.opts.Incidents.Create(ctx, inc)
		if errors.Is(err, incident.ErrExists) {
			if open, err = e.opts.Incidents.Get(ctx, inc.ID); err != nil {
				return "", false, err
			}
			continue
		}
		if err != nil {
			return "", false, err
		}
		e.m.openIncidents.Inc()
		e.open.set(inc.Target, inc.ID)
		e.handoff.Store(incident.ObjectName(inc.ID), v)
		e.logger.Info("incident opened", "incident", inc.ID, "namespace", inc.Target.Namespace, "workload", inc.Target.Name,
			"decision", d.Outcome, "reason", d.Reason)
		// An incident that acts announces its action, with the decision,
		// moments later; the others announce themselves now.
		if inc.State != incident.StateActing {
			e.announce(ctx, v, fmt.Sprintf("incident opened: %s", d.Message))
		}
		return inc.ID, true, nil
	}
}

func alertOf(rec *Record) incident.Alert {
	return incident.Alert{Key: rec.Key, Fingerprint: rec.Alert.Fingerprint, Name: rec.Alert.Labels["alertname"],
		StartsAt: rec.Alert.StartsAt, ReceivedAt: rec.ReceivedAt}
}

// newIncident pins the plan of a decision: the suspect revision, the
// revisions to go back to (newest first, up to MaxRollbackDepth, never
// wrapping around), a feature flag instead when the workload and alert name
// one, and whether the scale bounce may follow.
func (e *Engine) newIncident(rec *Record, w *policy.Workload, now time.Time) *incident.Incident {
	d := rec.Decision
	var revision int64
	if w != nil {
		revision = w.Revision
	}
	rollout := RolloutID(rec.Target, revision)
	inc := &incident.Incident{
		ID:           incident.NewID(rec.Target, revision, rec.Alert.StartsAt),
		Rollout:      rollout,
		Target:       rec.Target,
		StartedAt:    rec.Alert.StartsAt,
		Decision:     *d,
		DryRun:       d.DryRun,
		Alerts:       []incident.Alert{alertOf(rec)},
		GeneratorURL: rec.Alert.GeneratorURL,
		State:        incident.StateEscalated,
	}
	inc.Log(rec.Alert.StartsAt, "alert %s started firing", rec.Alert.Labels["alertname"])
	inc.Log(rec.ReceivedAt, "webhook received the alert")
	inc.Log(now, "decision: %s (%s): %s", d.Outcome, d.Reason, d.Message)
	if d.Outcome != policy.OutcomeRollback || w == nil {
		return inc
	}
	inc.State = incident.StateActing
	inc.From = w.Revision
	inc.Targets = w.Older[:min(len(w.Older), e.opts.MaxRollbackDepth)]
	inc.ScaleBounce = e.opts.AllowScaleBounce && w.Annotations[AnnotationAllowScaleBounce] == "true"
	if cm, flag := w.Annotations[AnnotationFeatureFlagConfigMap], rec.Alert.Labels[LabelFeatureFlag]; cm != "" && flag != "" {
		inc.FeatureFlag = &actuator.FlagChange{ConfigMap: cm, Key: flag, Value: FeatureFlagOff}
	}
	return inc
}

// alertResolved records that Alertmanager resolved an alert, on the alert's
// own record, and wakes its incident. Only the incident's worker writes the
// incident; it reads resolutions from the alert records. Resolution feeds
// verification and never acts by itself.
func (e *Engine) alertResolved(ctx context.Context, key string, endsAt time.Time) error {
	for {
		rec, cm, err := e.store.get(ctx, recordName(key))
		if apierrors.IsNotFound(errors.Unwrap(err)) {
			return nil
		}
		if err != nil {
			return err
		}
		if !rec.ResolvedAt.IsZero() {
			return nil
		}
		rec.ResolvedAt = endsAt
		_, err = e.store.update(ctx, rec, cm)
		if apierrors.IsConflict(errors.Unwrap(err)) {
			continue
		}
		if err != nil {
			return err
		}
		if rec.Incident != "" {
			e.incidents().Add(rec.Incident)
		}
		return nil
	}
}

// refreshResolutions copies alert resolutions from the alert records into
// the incident, logging each new one.
func (e *Engine) refreshResolutions(ctx context.Context, inc *incident.Versioned) error {
	for i := range inc.Alerts {
		if !inc.Alerts[i].ResolvedAt.IsZero() {
			continue
		}
		rec, _, err := e.store.get(ctx, recordName(inc.Alerts[i].Key))
		if apierrors.IsNotFound(errors.Unwrap(err)) {
			continue
		}
		if err != nil {
			return err
		}
		if !rec.ResolvedAt.IsZero() {
			inc.Alerts[i].ResolvedAt = rec.ResolvedAt
			inc.Log(e.opts.Clock.Now(), "alert %s resolved", inc.Alerts[i].Name)
		}
	}
	return nil
}

func (e *Engine) processNextIncident(ctx context.Context, q *queues) bool {
	id, shutdown := q.incidents.Get()
	if shutdown {
		return false
	}
	defer q.incidents.Done(id)
	next, err := e.work(ctx, id)
	switch {
	case err != nil && ctx.Err() == nil:
		e.logger.Error("work on incident", "incident", id, "err", err)
		q.incidents.AddRateLimited(id)
	case err == nil:
		q.incidents.Forget(id)
		if !next.IsZero() {
			q.incidents.AddAfter(id, next.Sub(e.opts.Clock.Now()))
		}
	}
	return true
}

// work moves an incident forward as far as it can now, writing each step
// before taking the next, and returns when it wants to be looked at again
// (zero: only when something happens). The people ladder runs beside the
// automatic rungs, on the clock of the incident's start, until it resolves.
func (e *Engine) work(ctx context.Context, id string) (time.Time, error) {
	inc, err := e.takeIncident(ctx, id)
	if errors.Is(err, incident.ErrNotFound) {
		return time.Time{}, nil
	}
	if err != nil {
		return time.Time{}, err
	}
	if err := e.settleInterruptedPages(ctx, inc); err != nil {
		return time.Time{}, err
	}
	for inc.Open() {
		if err := e.pageDue(ctx, inc); err != nil {
			return time.Time{}, err
		}
		progressed, err := e.step(ctx, inc)
		if err != nil {
			return time.Time{}, err
		}
		if !progressed {
			break
		}
	}
	if !inc.Open() {
		return time.Time{}, nil
	}
	next, ok := e.opts.Escalator.Ladder().Next(inc.StartedAt, inc.AttemptedLevels())
	if !ok {
		return time.Time{}, nil
	}
	return next, nil
}

// step takes the incident's next automatic step and reports whether it
// took one.
func (e *Engine) step(ctx context.Context, inc *incident.Versioned) (bool, error) {
	switch inc.State {
	case incident.StateActing:
		return true, e.act(ctx, inc)
	case incident.StateVerifying:
		return true, e.verify(ctx, inc)
	case incident.StateEscalated:
		if err := e.refreshResolutions(ctx, inc); err != nil {
			return false, err
		}
		if inc.AllAlertsResolved() {
			return true, e.resolve(ctx, inc, "every alert resolved")
		}
		// The policy escalated instead of acting: tell people now, not
		// when the clock would have.
		if inc.Decision.Outcome == policy.OutcomeEscalate && len(inc.Pages) == 0 {
			e.escalateNow(ctx, inc, fmt.Sprintf("no automatic rollback: %s", inc.Decision.Message))
			return len(inc.Pages) > 0, nil
		}
	}
	return false, nil
}

// save writes the incident; the caller's in-memory copy stays current.
func (e *Engine) save(ctx context.Context, inc *incident.Versioned) error {
	// A step is done once it is carried out; recording it must not be lost
	// to a cancelled context, or a restart would redo it (as a no-op, but
	// with a second announcement).
	writeCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	return e.opts.Incidents.Update(writeCtx, inc)
}

// rungs is the number of automatic rungs of an incident: one per target
// revision (or the feature flag), then the scale bounce when allowed.
func rungs(inc *incident.Incident) int {
	n := len(inc.Targets)
	if inc.FeatureFlag != nil {
		n = 1
	}
	if inc.ScaleBounce {
		n++
	}
	return n
}

// act carries out the current rung.
func (e *Engine) act(ctx context.Context, inc *incident.Versioned) error {
	now := e.opts.Clock.Now()
	if inc.Rung >= rungs(inc.Incident) {
		if inc.Rung == 0 {
			e.budget.unused(inc.ID)
		}
		inc.State = incident.StateEscalated
		inc.Log(now, "no automatic rung left: people take over on the runbook's clock")
		e.escalateNow(ctx, inc, "no automatic rollback rung left")
		return e.save(ctx, inc)
	}
	d := inc.Decision
	req := actuator.Request{
		Target:      inc.Target,
		Incident:    inc.Rollout,
		Fingerprint: inc.Alerts[0].Fingerprint,
		Why:         fmt.Sprintf("alert %s, rule %s (%s)", inc.Alerts[0].Name, d.Rule, d.Criterion),
		DryRun:      inc.DryRun,
	}
	var (
		kind actuator.Kind
		res  actuator.Result
		err  error
	)
	switch {
	case inc.FeatureFlag != nil && inc.Rung == 0:
		kind = actuator.KindFeatureFlag
		res, err = e.opts.Actor.RollbackFeatureFlag(ctx, req, *inc.FeatureFlag)
	case inc.Rung < len(inc.Targets) && inc.FeatureFlag == nil:
		kind = actuator.KindRollback
		var from int64
		if from, err = e.fromForRung(ctx, inc); err == nil {
			res, err = e.opts.Actor.Rollback(ctx, req, from, inc.Targets[inc.Rung])
		}
	default:
		kind = actuator.KindScaleBounce
		res, err = e.opts.Actor.ScaleBounce(ctx, req)
	}
	now = e.opts.Clock.Now()
	rec := incident.Action{At: now, Rung: inc.Rung, Kind: kind}
	if err != nil {
		reason := actuator.FailureReason(err)
		if transient(reason) && e.incidents().NumRequeues(inc.ID) < maxActionRetries && ctx.Err() == nil {
			return err
		}
		rec.Error, rec.Reason = err.Error(), reason
		inc.Actions = append(inc.Actions, rec)
		if inc.Rung == 0 {
			e.budget.unused(inc.ID)
		}
		inc.State = incident.StateEscalated
		inc.Log(now, "%s failed (%s): %v; escalating", kind, reason, err)
		if err := e.save(ctx, inc); err != nil {
			return err
		}
		e.escalateNow(ctx, inc, fmt.Sprintf("%s failed: %s", kind, reason))
		return nil
	}
	if res.Resumed {
		// This incident's action is on the workload but not in the record:
		// the daemon stopped between the two writes. It was applied, once.
		res.Outcome = actuator.OutcomeApplied
		res.Message = fmt.Sprintf("%s (carried out by an earlier attempt that stopped before recording it)", res.Message)
	}
	rec.Result = &res
	inc.Actions = append(inc.Actions, rec)
	inc.Log(now, "%s", res.Message)
	switch res.Outcome {
	case actuator.OutcomeDryRun:
		inc.State = incident.StateEscalated
		inc.Log(now, "dry run: nothing changed; people take over")
	default:
		if res.Outcome == actuator.OutcomeApplied && inc.Rung == 0 && !res.Resumed {
			e.m.alertToAction.Observe(now.Sub(inc.Alerts[0].ReceivedAt).Seconds())
		}
		inc.State = incident.StateVerifying
	}
	if err := e.save(ctx, inc); err != nil {
		return err
	}
	switch {
	case res.Outcome == actuator.OutcomeApplied && inc.Rung > 0:
		e.budget.add(inc.Target, now, inc.ID)
	case res.Outcome != actuator.OutcomeApplied && inc.Rung == 0:
		e.budget.unused(inc.ID)
	}
	e.announce(ctx, inc, res.Message)
	if inc.State == incident.StateEscalated {
		e.escalateNow(ctx, inc, "dry run: nothing was rolled back")
	}
	return nil
}

// fromForRung returns the revision the current rung rolls back from: the
// suspect revision for the first, and for later ones the revision the
// previous rung produced, provided nothing but that rung changed the
// workload since.
func (e *Engine) fromForRung(ctx context.Context, inc *incident.Versioned) (int64, error) {
	if inc.Rung == 0 {
		return inc.From, nil
	}
	w, err := e.opts.Live.Facts(ctx, inc.Target)
	if err != nil {
		return 0, err
	}
	if w == nil {
		return 0, fmt.Errorf("read %s: %w", inc.Target, apierrors.NewNotFound(appsResource(inc.Target.Kind), inc.Target.Name))
	}
	prev := inc.Targets[inc.Rung-1]
	if w.Annotations[actuator.AnnotationIncident] != inc.Rollout || w.Annotations[actuator.AnnotationRolledBackTo] != fmt.Sprint(prev) {
		return 0, fmt.Errorf("%w: the last change to %s is not this incident's rollback to revision %d", actuator.ErrChanged, inc.Target, prev)
	}
	return w.Revision, nil
}

// verify checks the workload after an action, with the alert's resolution
// as one more, never decisive, signal.
func (e *Engine) verify(ctx context.Context, inc *incident.Versioned) error {
	results, err := e.verifyPaging(ctx, inc)
	if err != nil {
		return err
	}
	if err := e.refreshResolutions(ctx, inc); err != nil {
		return err
	}
	now := e.opts.Clock.Now()
	resolved := verify.Result{Check: "alert_resolved", Kind: "alert_resolved", Status: verify.StatusInconclusive, At: now,
		Message: "Alertmanager has not reported every alert resolved (it may never: this check alone never decides)"}
	if inc.AllAlertsResolved() {
		resolved.Status, resolved.Message = verify.StatusPass, "Alertmanager reported every alert resolved"
	}
	results = append(results, resolved)
	overall := verify.Overall(results)
	inc.Verifications = append(inc.Verifications, incident.Verification{At: now, Rung: inc.Rung, Overall: overall, Results: results})
	var failed []string
	for _, r := range results {
		if r.Status != verify.StatusPass {
			failed = append(failed, r.Check+": "+r.Message)
		}
	}
	if len(failed) > 0 && overall != verify.StatusPass {
		inc.Log(now, "verification of rung %d: %s: %s", inc.Rung, overall, strings.Join(failed, "; "))
	} else {
		inc.Log(now, "verification of rung %d: %s", inc.Rung, overall)
	}
	if overall == verify.StatusPass {
		if err := e.save(ctx, inc); err != nil {
			return err
		}
		if ok, err := e.runTasks(ctx, inc); err != nil || !ok {
			return err
		}
		return e.resolve(ctx, inc, "verified recovered")
	}
	inc.Rung++
	inc.State = incident.StateActing
	if err := e.save(ctx, inc); err != nil {
		return err
	}
	e.announce(ctx, inc, fmt.Sprintf("verification %s: %s", overall, strings.Join(failed, "; ")))
	return nil
}

// AnnotationPostRollbackTasks on a workload names, comma-separated, the
// post-rollback tasks (from the tasks configuration) to run after its
// rollback is verified.
const AnnotationPostRollbackTasks = "autorollback.io/post-rollback-tasks"

// runTasks runs the post-rollback tasks the workload names, each once per
// incident, and reports whether all succeeded. A failure escalates: the
// service is back, but what the task was to clean up is not.
func (e *Engine) runTasks(ctx context.Context, inc *incident.Versioned) (bool, error) {
	w, err := e.opts.Live.Facts(ctx, inc.Target)
	if err != nil || w == nil {
		return w == nil && err == nil, err
	}
	done := map[string]bool{}
	for _, t := range inc.Tasks {
		done[t.Name] = true
	}
	for _, name := range strings.Split(w.Annotations[AnnotationPostRollbackTasks], ",") {
		name = strings.TrimSpace(name)
		if name == "" || done[name] {
			continue
		}
		now := e.opts.Clock.Now()
		task, ok := e.opts.Tasks[name]
		if !ok {
			inc.Tasks = append(inc.Tasks, incident.Task{Name: name, Started: now, Ended: now, Result: "failed",
				Message: "no task of that name in the tasks configuration"})
			return false, e.taskFailed(ctx, inc, name, "not configured")
		}
		req := actuator.Request{Target: inc.Target, Incident: inc.Rollout, DryRun: inc.DryRun}
		job, err := e.opts.Actor.RunTask(ctx, req, task)
		if ctx.Err() != nil {
			return false, ctx.Err()
		}
		t := incident.Task{Name: name, Job: job, Started: now, Ended: e.opts.Clock.Now(), Result: "succeeded"}
		if err != nil {
			t.Result, t.Message = "failed", err.Error()
			inc.Tasks = append(inc.Tasks, t)
			return false, e.taskFailed(ctx, inc, name, err.Error())
		}
		inc.Tasks = append(inc.Tasks, t)
		inc.Log(t.Ended, "post-rollback task %s succeeded (job %s)", name, job)
		if err := e.save(ctx, inc); err != nil {
			return false, err
		}
	}
	return true, nil
}

func (e *Engine) taskFailed(ctx context.Context, inc *incident.Versioned, name, why string) error {
	now := e.opts.Clock.Now()
	inc.State = incident.StateEscalated
	inc.Log(now, "post-rollback task %s failed: %s; escalating", name, why)
	if err := e.save(ctx, inc); err != nil {
		return err
	}
	e.escalateNow(ctx, inc, fmt.Sprintf("post-rollback task %s failed", name))
	return nil
}

// verifyPaging runs the verification while keeping the people ladder on
// its clock: a verification can take minutes, and a page must not wait for
// it.
func (e *Engine) verifyPaging(ctx context.Context, inc *incident.Versioned) ([]verify.Result, error) {
	done := make(chan []verify.Result, 1)
	vctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() { done <- e.opts.Verifier.Verify(vctx, inc.Target) }()
	for {
		var due <-chan time.Time
		if next, ok := e.opts.Escalator.Ladder().Next(inc.StartedAt, inc.AttemptedLevels()); ok {
			due = e.opts.Clock.After(max(next.Sub(e.opts.Clock.Now()), 0))
		}
		select {
		case results := <-done:
			if ctx.Err() != nil {
				return nil, ctx.Err()
			}
			return results, nil
		case <-due:
			if err := e.pageDue(ctx, inc); err != nil {
				return nil, err
			}
		}
	}
}

// resolve closes the incident, stops the clock and resolves open pages.
func (e *Engine) resolve(ctx context.Context, inc *incident.Versioned, why string) error {
	now := e.opts.Clock.Now()
	inc.State, inc.ResolvedAt = incident.StateResolved, now
	inc.Log(now, "resolved: %s", why)
	if err := e.save(ctx, inc); err != nil {
		return err
	}
	e.m.openIncidents.Dec()
	e.open.remove(inc.Target, inc.ID)
	for _, a := range inc.Actions {
		if a.Result != nil && a.Result.Outcome == actuator.OutcomeApplied {
			e.m.actionToRecovery.Observe(now.Sub(a.At).Seconds())
			break
		}
	}
	var levels []string
	for level := range inc.PagedLevels() {
		levels = append(levels, level)
	}
	if err := e.opts.Escalator.Resolve(ctx, e.escalateIncident(inc), levels); err != nil {
		e.logger.Warn("resolve pages", "incident", inc.ID, "err", err)
	}
	e.announce(ctx, inc, fmt.Sprintf("resolved after %s: %s", now.Sub(inc.StartedAt).Round(time.Second), why))
	e.logger.Info("incident resolved", "incident", inc.ID, "why", why)
	return nil
}

// pageDue sends the ladder's pages whose time has come.
func (e *Engine) pageDue(ctx context.Context, inc *incident.Versioned) error {
	for _, step := range e.opts.Escalator.Ladder().Due(inc.StartedAt, e.opts.Clock.Now(), inc.AttemptedLevels()) {
		if err := e.page(ctx, inc, step, fmt.Sprintf("still open after %s", step.After.Duration)); err != nil {
			return err
		}
	}
	return nil
}

// escalateNow pages the ladder's first level at once, when the automatic
// part is over (or was never allowed) and its time has not come yet.
func (e *Engine) escalateNow(ctx context.Context, inc *incident.Versioned, why string) {
	ladder := e.opts.Escalator.Ladder()
	if len(ladder) == 0 || inc.AttemptedLevels()[ladder[0].Level] {
		return
	}
	if err := e.page(ctx, inc, ladder[0], why); err != nil {
		e.logger.Error("page", "incident", inc.ID, "level", ladder[0].Level, "err", err)
	}
}

// page sends the page of a ladder step. The page is recorded as sending
// before it goes out, so that a daemon stopping halfway leaves a trace, and
// the next attempt does not page that level twice (settleInterruptedPages).
func (e *Engine) page(ctx context.Context, inc *incident.Versioned, step escalate.Step, why string) error {
	now := e.opts.Clock.Now()
	inc.Pages = append(inc.Pages, incident.Page{At: now, Level: step.Level, Sending: true})
	if err := e.save(ctx, inc); err != nil {
		inc.Pages = inc.Pages[:len(inc.Pages)-1]
		return err
	}
	m := e.message(inc, escalate.Page, fmt.Sprintf("%s: %s", inc.Target, why))
	m.Level = step.Level
	p := &inc.Pages[len(inc.Pages)-1]
	p.Sending = false
	d, err := e.opts.Escalator.Page(ctx, step, m)
	p.Receivers, p.NoReceiver = d.Receivers, d.NoReceiver
	switch {
	case err != nil:
		p.Error = err.Error()
		inc.Log(now, "page %s failed: %v", step.Level, err)
	case d.NoReceiver:
		inc.Log(now, "no receiver for %s: nobody was paged", step.Level)
	default:
		inc.Log(now, "paged %s: %s (to %s)", step.Level, why, strings.Join(d.Receivers, ", "))
	}
	return e.save(ctx, inc)
}

// settleInterruptedPages finishes the pages an earlier attempt left sending:
// they may or may not have reached anybody. Each goes out again only to the
// notifiers that fold a repeat into the first (PagerDuty); the others are
// not paged again, since a second page is what must not happen, and the
// ladder's next level follows on its clock. An announcement says so.
func (e *Engine) settleInterruptedPages(ctx context.Context, inc *incident.Versioned) error {
	var interrupted []string
	for i := range inc.Pages {
		if p := &inc.Pages[i]; p.Sending {
			p.Sending, p.DeliveryUnknown = false, true
			interrupted = append(interrupted, p.Level)
		}
	}
	if len(interrupted) == 0 {
		return nil
	}
	now := e.opts.Clock.Now()
	for _, level := range interrupted {
		var safe, skipped []string
		var step escalate.Step
		for _, s := range e.opts.Escalator.Ladder() {
			if s.Level == level {
				step = s
			}
		}
		for _, n := range step.Notifiers {
			if e.opts.Escalator.Deduplicates(n) {
				safe = append(safe, n)
			} else {
				skipped = append(skipped, n)
			}
		}
		inc.Log(now, "the page of %s was interrupted: delivery unknown", level)
		if len(safe) > 0 {
			step.Notifiers = safe
			m := e.message(inc, escalate.Page, fmt.Sprintf("%s: page of %s sent again after an interruption", inc.Target, level))
			m.Level = level
			if d, err := e.opts.Escalator.Page(ctx, step, m); err != nil {
				inc.Log(now, "page %s sent again to %s failed: %v", level, strings.Join(safe, ", "), err)
			} else {
				inc.Log(now, "page %s sent again to %s, which deduplicate it", level, strings.Join(d.Receivers, ", "))
			}
		}
		if len(skipped) > 0 {
			inc.Log(now, "page %s not sent again to %s, which would page twice", level, strings.Join(skipped, ", "))
			e.announce(ctx, inc, fmt.Sprintf("the page of %s was interrupted by a restart and may not have reached %s; it is not sent again, to page nobody twice",
				level, strings.Join(skipped, ", ")))
		}
	}
	return e.save(ctx, inc)
}

func (e *Engine) announce(ctx context.Context, inc *incident.Versioned, summary string) {
	if err := e.opts.Escalator.Announce(ctx, e.message(inc, escalate.Announce, fmt.Sprintf("%s: %s", inc.Target, summary))); err != nil {
		e.logger.Warn("announce", "incident", inc.ID, "err", err)
	}
}

func (e *Engine) escalateIncident(inc *incident.Versioned) escalate.Incident {
	return escalate.Incident{
		ID: inc.ID, Target: inc.Target, StartedAt: inc.StartedAt,
		Alertname: inc.Alerts[0].Name, Rule: inc.Decision.Rule, Criterion: inc.Decision.Criterion,
		GeneratorURL: inc.GeneratorURL,
	}
}

// message builds a notification with the why, the revisions and the latest
// verification.
func (e *Engine) message(inc *incident.Versioned, kind escalate.MessageKind, summary string) escalate.Message {
	d := inc.Decision
	details := []string{
		fmt.Sprintf("decision: %s (%s), rule %s (%s): %s", d.Outcome, d.Reason, d.Rule, d.Criterion, d.Message),
	}
	for _, a := range inc.Actions {
		switch {
		case a.Result != nil && a.Result.From != 0:
			details = append(details, fmt.Sprintf("action %d: %s, revision %d to %d: %s", a.Rung, a.Kind, a.Result.From, a.Result.To, a.Result.Outcome))
		case a.Result != nil:
			details = append(details, fmt.Sprintf("action %d: %s: %s", a.Rung, a.Kind, a.Result.Outcome))
		default:
			details = append(details, fmt.Sprintf("action %d: %s failed (%s)", a.Rung, a.Kind, a.Reason))
		}
	}
	if n := len(inc.Verifications); n > 0 {
		v := inc.Verifications[n-1]
		for _, r := range v.Results {
			details = append(details, fmt.Sprintf("verification %s: %s: %s", r.Check, r.Status, r.Message))
		}
	}
	return escalate.Message{Kind: kind, Incident: e.escalateIncident(inc), Summary: summary, Details: details}
}

func appsResource(kind policy.Kind) schema.GroupResource {
	return schema.GroupResource{Group: "apps", Resource: strings.ToLower(string(kind)) + "s"}
}

// openFor returns the open incident of target, or nil.
func (e *Engine) openFor(ctx context.Context, target policy.Ref) (*incident.Versioned, error) {
	id := e.open.get(target)
	if id == "" {
		return nil, nil
	}
	inc, err := e.opts.Incidents.Get(ctx, id)
	if errors.Is(err, incident.ErrNotFound) {
		e.open.remove(target, id)
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	if !inc.Open() {
		e.open.remove(target, id)
		return nil, nil
	}
	return inc, nil
}

// takeIncident returns the incident handed off by its opening, or reads it.
func (e *Engine) takeIncident(ctx context.Context, id string) (*incident.Versioned, error) {
	if v, ok := e.handoff.LoadAndDelete(incident.ObjectName(id)); ok {
		if v, ok := v.(*incident.Versioned); ok {
			return v, nil
		}
	}
	return e.opts.Incidents.Get(ctx, id)
}
