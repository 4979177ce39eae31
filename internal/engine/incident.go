package engine

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/runtime/schema"

	"github.com/autorollbackd/autorollbackd/internal/actuator"
	"github.com/autorollbackd/autorollbackd/internal/escalate"
	"github.com/autorollbackd/autorollbackd/internal/evidence"
	"github.com/autorollbackd/autorollbackd/internal/gitops"
	"github.com/autorollbackd/autorollbackd/internal/incident"
	"github.com/autorollbackd/autorollbackd/internal/kinds"
	"github.com/autorollbackd/autorollbackd/internal/policy"
	"github.com/autorollbackd/autorollbackd/internal/verify"
	"github.com/autorollbackd/autorollbackd/internal/webhook"
	"github.com/autorollbackd/autorollbackd/internal/workload"
)

// maxActionAttempts bounds the attempts at an action that failed for a
// reason that may pass (a conflict that did not clear, a controller still
// settling, a network error).
const maxActionAttempts = 6

// redecideInterval is how often the policy is asked again about the firing
// alerts of an incident that fixes forward under the owners' annotation.
const redecideInterval = 15 * time.Second

// redecide asks the policy again about the incident's first firing alert,
// on the cached facts, and returns the event of a rollback decision, or nil
// when the decision still fixes forward (or the alert's labels were not
// kept, so that its rule cannot be matched again).
func (e *Engine) redecide(ctx context.Context, inc *incident.Incident) (*incident.Event, error) {
	var a *incident.Alert
	for k := range inc.Alerts {
		if inc.Alerts[k].ResolvedAt.IsZero() && inc.Alerts[k].Labels != nil {
			a = &inc.Alerts[k]
			break
		}
	}
	if a == nil {
		return nil, nil
	}
	facts, err := e.opts.Cache.Facts(ctx, inc.Target)
	if err != nil || facts == nil {
		return nil, err
	}
	rec := &Record{Key: a.Key, Target: inc.Target, Origin: a.Origin, ReceivedAt: a.ReceivedAt, ExternalURL: a.ExternalURL,
		Alert: policy.Alert{Fingerprint: a.Fingerprint, Status: "firing", Labels: a.Labels, StartsAt: a.StartsAt}}
	now := e.opts.Clock.Now()
	d, place := e.budget.decide(inc.Target, now, func(u policy.Usage) policy.Decision {
		return e.opts.Policy().Evaluate(policy.Input{Alert: rec.Alert, Target: inc.Target, Workload: facts, Origin: rec.Origin, Usage: u, Now: now})
	})
	if d.Outcome != policy.OutcomeRollback {
		place.release()
		return nil, nil
	}
	place.keep(inc.ID)
	rec.Decision = &d
	e.m.decisions.WithLabelValues(string(d.Outcome), string(d.Reason)).Inc()
	e.logger.Info("decided again", "incident", inc.ID, "namespace", inc.Target.Namespace, "workload", inc.Target.Name,
		"decision", d.Outcome, "reason", d.Reason, "message", d.Message)
	return &incident.Event{Kind: incident.EventRedecided, At: now, Decision: &d, Plan: e.planFor(rec, facts)}, nil
}

// alertPoll is how often Alertmanager is asked whether an incident's alerts
// still fire while the alert's grace runs.
const alertPoll = 15 * time.Second

// errRetry asks for the incident to be worked on again after a back-off.
var errRetry = errors.New("action failed for a reason that may pass; retrying")

// errJoinedWhileResolving: the incident was about to resolve when an alert
// decided while it was open reached its mailbox. The resolution is not
// written; the next pass takes the alert in first, and verifies again.
var errJoinedWhileResolving = errors.New("an alert joined the incident as it resolved; working on it again")

// rules returns what the lifecycle needs of the configuration.
func (e *Engine) rules() incident.Rules {
	ladder := e.opts.Escalator.Ladder()
	r := incident.Rules{
		MaxAttempts: maxActionAttempts,
		AlertGrace:  e.opts.AlertGrace,
		Ladders: map[incident.LadderKind]escalate.Ladder{
			incident.LadderRollback: ladder,
			incident.LadderEscalate: ladder,
			// Fixing forward, the owners hear of it at once; on-call is
			// paged only if the alert still fires after the first step.
			incident.LadderFixForward: ladder[:min(len(ladder), 1)],
			// A dry run announces what it would have done; nobody is paged.
			incident.LadderDryRun: nil,
		},
	}
	return r
}

// mailbox carries the alerts decided for an open incident to the
// incident's worker, which is the incident's only writer. The alert's
// record names the incident, so a join lost to a restart is found again
// when the next leader resumes the incident.
type mailbox struct {
	mu    sync.Mutex
	joins map[string][]incident.Event
}

func (m *mailbox) post(id string, ev incident.Event) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.joins == nil {
		m.joins = map[string][]incident.Event{}
	}
	m.joins[id] = append(m.joins[id], ev)
}

// requeue puts events taken but not saved back before any posted since,
// in their order: a resolution must not come before its alert's join.
func (m *mailbox) requeue(id string, evs []incident.Event) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.joins == nil {
		m.joins = map[string][]incident.Event{}
	}
	m.joins[id] = append(slices.Clip(evs), m.joins[id]...)
}

// postResolution posts the resolution ev unless the same alert's is
// already waiting. It reports false, posting nothing, when limit events are
// waiting for the incident.
func (m *mailbox) postResolution(id string, ev incident.Event, limit int) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	evs := m.joins[id]
	for _, p := range evs {
		if p.Kind == incident.EventAlertResolved && p.Key == ev.Key {
			return true
		}
	}
	if len(evs) >= limit {
		return false
	}
	if m.joins == nil {
		m.joins = map[string][]incident.Event{}
	}
	m.joins[id] = append(evs, ev)
	return true
}

// joining reports whether an alert waits to join the incident.
func (m *mailbox) joining(id string) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	return slices.ContainsFunc(m.joins[id], func(ev incident.Event) bool { return ev.Kind == incident.EventAlertJoined })
}

func (m *mailbox) take(id string) []incident.Event {
	m.mu.Lock()
	defer m.mu.Unlock()
	evs := m.joins[id]
	delete(m.joins, id)
	return evs
}

func (m *mailbox) clear() {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.joins = nil
}

// openIncident hands a decision to the workload's open incident (open, as
// read under the workload's lock), or opens one. An alert about a workload
// that already has an open incident joins it, through the incident's
// worker: there is one incident, and so one rollback, per workload and
// episode, and one writer of it. It returns the incident's id, and whether
// this call opened it.
func (e *Engine) openIncident(ctx context.Context, rec *Record, w *policy.Workload, open *incident.Versioned) (string, bool, error) {
	now := e.opts.Clock.Now()
	if open != nil {
		ev := incident.Event{Kind: incident.EventAlertJoined, At: now, Alert: alertOf(rec), Decision: rec.Decision, Plan: rec.Plan}
		e.mail.post(open.ID, ev)
		return open.ID, false, nil
	}
	inc := e.newIncident(rec, w, now)
	own := ownID(inc.ID, rec.Key)
	for {
		v, err := e.opts.Incidents.Create(ctx, inc)
		if errors.Is(err, incident.ErrExists) {
			// Opened by an earlier attempt that stopped before its record
			// said so, or an episode of the same rollout and start: the
			// alert belongs to it while it is open.
			old, err := e.opts.Incidents.Get(ctx, inc.ID)
			if err != nil {
				return "", false, err
			}
			if !old.Over() {
				e.open.set(inc.Target, inc.ID)
			}
			if old.HasAlert(rec.Key) {
				if !rec.ResolvedAt.IsZero() {
					// Resolved after this alert opened the incident and
					// before its record said so.
					e.mail.post(inc.ID, incident.Event{Kind: incident.EventAlertResolved, At: rec.ResolvedAt, Key: rec.Key})
				}
				return inc.ID, false, nil
			}
			if old.Over() && inc.ID != own {
				// Another alert of the same start, after that incident
				// was over: joined to it, it would never be weighed. It
				// opens its own, named after it as well, so that a
				// restart finds it again. It was decided as any new alert
				// about the workload is, on live facts and the budget.
				inc.ID = own
				continue
			}
			return e.openIncident(ctx, rec, w, old)
		}
		if err != nil {
			return "", false, err
		}
		e.m.openIncidents.Inc()
		e.open.set(inc.Target, inc.ID)
		// The worker may take v the moment it is handed off and replace
		// its Incident; transitions copy, so the one written stays whole.
		opened := v.Incident
		e.handoff.Store(incident.ObjectName(inc.ID), v)
		e.logger.Info("incident opened", "incident", inc.ID, "namespace", inc.Target.Namespace, "workload", inc.Target.Name,
			"decision", rec.Decision.Outcome, "reason", rec.Decision.Reason)
		// An incident that acts announces its action, with the decision,
		// moments later; the others announce themselves now.
		if opened.State != incident.StateActing {
			e.announce(ctx, opened, fmt.Sprintf("incident opened: %s", rec.Decision.Message))
		}
		return inc.ID, true, nil
	}
}

// ownID names the incident of an alert whose workload, revision and start
// name an incident already over.
func ownID(id, key string) string {
	sum := sha256.Sum256([]byte(key))
	return id + "-" + hex.EncodeToString(sum[:4])
}

func alertOf(rec *Record) incident.Alert {
	a := incident.Alert{Key: rec.Key, Fingerprint: rec.Alert.Fingerprint, Name: rec.Alert.Labels["alertname"],
		StartsAt: rec.Alert.StartsAt, ReceivedAt: rec.ReceivedAt, ResolvedAt: rec.ResolvedAt, ExternalURL: rec.ExternalURL,
		// The labels are bounded at intake (maxLabelBytes), and an
		// incident keeps few alerts whole; the policy's alert checks are
		// asked again on them before every action.
		Labels: rec.Alert.Labels, Origin: rec.Origin}
	return a
}

// planFor pins the plan of a rollback decision: the suspect revision, the
// revisions to go back to (newest first, up to MaxRollbackDepth, never
// wrapping around), a feature flag instead when flags are on
// (Options.AllowFeatureFlags) and the alert names one the workload allows,
// and whether the scale bounce may follow. Nil for other
// decisions.
func (e *Engine) planFor(rec *Record, w *policy.Workload) *incident.Plan {
	if rec.Decision == nil || rec.Decision.Outcome != policy.OutcomeRollback || w == nil {
		return nil
	}
	p := &incident.Plan{
		From:        w.Revision,
		Targets:     w.Older[:min(len(w.Older), e.opts.MaxRollbackDepth)],
		ScaleBounce: e.opts.AllowScaleBounce && w.Annotations[kinds.AnnotationAllowScaleBounce] == "true",
	}
	if key := rec.Alert.Labels[LabelFeatureFlag]; key != "" {
		f := actuator.FlagChange{ConfigMap: w.Annotations[kinds.AnnotationFeatureFlagConfigMap], Key: key, Value: FeatureFlagOff}
		if why := e.flagRefusal(w, f); why != "" {
			p.FeatureFlagSkipped = fmt.Sprintf("the alert names feature flag %q, but %s; rolling back revisions instead", key, why)
		} else {
			p.FeatureFlag = &f
		}
	}
	return p
}

// flagRefusal says why the flag change f may not be made on the workload
// w, or returns "" when it may: flags must be on (Options.AllowFeatureFlags),
// and f must name the ConfigMap w names, a key w lists in
// kinds.AnnotationFeatureFlags, and the value that turns a flag off.
func (e *Engine) flagRefusal(w *policy.Workload, f actuator.FlagChange) string {
	cm := w.Annotations[kinds.AnnotationFeatureFlagConfigMap]
	switch {
	case cm == "":
		return fmt.Sprintf("%s has no %s annotation", w.Ref, kinds.AnnotationFeatureFlagConfigMap)
	case !e.opts.AllowFeatureFlags:
		return "feature flags are off (engine.allowFeatureFlags)"
	case f.ConfigMap != cm:
		return fmt.Sprintf("%s names its flag ConfigMap %q, not %q", w.Ref, cm, f.ConfigMap)
	case f.Value != FeatureFlagOff:
		return fmt.Sprintf("the value %q is not %q, which turns a flag off", f.Value, FeatureFlagOff)
	case !slices.Contains(flagKeys(w.Annotations[kinds.AnnotationFeatureFlags]), f.Key):
		return fmt.Sprintf("%s does not list it in its %s annotation", w.Ref, kinds.AnnotationFeatureFlags)
	}
	if err := f.Validate(); err != nil {
		return err.Error()
	}
	return ""
}

// flagKeys returns the keys a workload's kinds.AnnotationFeatureFlags lists.
func flagKeys(list string) []string {
	var keys []string
	for k := range strings.SplitSeq(list, ",") {
		if k = strings.TrimSpace(k); k != "" {
			keys = append(keys, k)
		}
	}
	return keys
}

// newIncident opens an incident for a decision. The runbook's clock starts
// at the first alert's start, but never before the suspect rollout began:
// an alert back-dated by hours must not page the war room at once.
func (e *Engine) newIncident(rec *Record, w *policy.Workload, now time.Time) *incident.Incident {
	d := rec.Decision
	var revision int64
	start := rec.Alert.StartsAt
	if w != nil {
		revision = w.Revision
		if w.RolloutStartedAt.After(start) {
			start = w.RolloutStartedAt
		}
	}
	if rec.Plan == nil {
		rec.Plan = e.planFor(rec, w)
	}
	inc := &incident.Incident{
		SchemaVersion: incident.SchemaVersion,
		ID:            incident.NewID(rec.Target, revision, rec.Alert.StartsAt),
		Cluster:       e.opts.Cluster,
		Rollout:       RolloutID(rec.Target, revision),
		Target:        rec.Target,
		Revision:      revision,
		StartedAt:     start,
		Decision:      *d,
		DryRun:        d.DryRun,
		GeneratorURL:  rec.Alert.GeneratorURL,
		State:         incident.StateEscalated,
	}
	inc.AddAlert(alertOf(rec))
	inc.Log(rec.Alert.StartsAt, "alert %s started firing", rec.Alert.Labels["alertname"])
	inc.Log(rec.ReceivedAt, "webhook received the alert")
	inc.Log(now, "decision: %s (%s): %s", d.Outcome, d.Reason, d.Message)
	if rec.Plan == nil {
		return inc
	}
	inc.State = incident.StateActing
	inc.Plan = *rec.Plan
	inc.LogPlan(now)
	return inc
}

// alertResolved records that Alertmanager resolved an alert, on the alert's
// own record, and hands the resolution to its incident. Only the
// incident's worker writes the incident; a resolution lost to a restart is
// found on the record when the next leader resumes the incident.
// Resolution feeds verification and never acts by itself.
func (e *Engine) alertResolved(ctx context.Context, p *policy.Policy, a policy.Alert, key string, from policy.Origin) error {
	endsAt := a.EndsAt
	for {
		rec, cm, err := e.store.get(ctx, recordName(key))
		if apierrors.IsNotFound(errors.Unwrap(err)) {
			return e.resolveUnrecorded(p, a, key, from)
		}
		if err != nil {
			return err
		}
		// A fingerprint is a hash of labels anyone can compute: a sender
		// resolves only alerts about the namespaces it may send about.
		if !from.Allows(rec.Target.Namespace) {
			return fmt.Errorf("%w: sender %q may not send alerts about namespace %s", errOriginMismatch, from.Sender, rec.Target.Namespace)
		}
		if !rec.ResolvedAt.IsZero() {
			// Perhaps by an attempt whose answer was lost: handed over
			// again, the incident counts it once.
			e.handOverResolution(rec)
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
		e.handOverResolution(rec)
		return nil
	}
}

// resolveUnrecorded hands the resolution of an alert without a record to
// the open incident of the alert's workload. Most such alerts were never
// recorded (refused, ignored); but a record is collected engine.retention
// after its decision, and an incident waiting on people can outlive it.
// Without its resolution that incident would stay open for ever, and every
// later alert about the workload would join it. The incident counts the
// resolution only if the alert is in its ledger.
func (e *Engine) resolveUnrecorded(p *policy.Policy, a policy.Alert, key string, from policy.Origin) error {
	if e.opts.Clock.Now().Sub(a.StartsAt) < e.opts.Retention {
		// Decided after it started, its record would still be kept: it
		// was never recorded.
		return nil
	}
	target, _ := p.Resolve(a)
	if target.IsZero() || !from.Allows(target.Namespace) {
		return nil
	}
	id := e.open.get(target)
	if id == "" {
		return nil
	}
	// Any sender allowed the namespace can send these, with keys of its
	// own making: the mailbox is bounded, and a full one is a 503.
	if !e.mail.postResolution(id, incident.Event{Kind: incident.EventAlertResolved, At: a.EndsAt, Key: key}, maxUnrecordedMail) {
		return fmt.Errorf("hand the resolution to incident %s: %d events are waiting for it: %w", id, maxUnrecordedMail, webhook.ErrQueueFull)
	}
	e.incidents().Add(id)
	return nil
}

// maxUnrecordedMail bounds the events waiting for one incident that a
// resolution without a record may add to.
const maxUnrecordedMail = 1024

// errOriginMismatch: the sender of a resolution may not send alerts about
// the resolved alert's workload.
var errOriginMismatch = errors.New("origin mismatch")

// handOverResolution hands the resolution on rec to its incident, and
// wakes it. A record not handed over yet carries its resolution to the
// incident when it is.
func (e *Engine) handOverResolution(rec *Record) {
	if rec.Incident == "" {
		return
	}
	e.mail.post(rec.Incident, incident.Event{Kind: incident.EventAlertResolved, At: rec.ResolvedAt, Key: rec.Key})
	e.incidents().Add(rec.Incident)
}

func (e *Engine) processNextIncident(ctx context.Context, q *queues) bool {
	id, shutdown := q.incidents.Get()
	if shutdown {
		return false
	}
	defer q.incidents.Done(id)
	next, err := e.work(ctx, id)
	switch {
	case errors.Is(err, errRetry) && ctx.Err() == nil:
		q.incidents.AddRateLimited(id)
	case errors.Is(err, errJoinedWhileResolving) && ctx.Err() == nil:
		q.incidents.Add(id)
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

// worker carries out the effects of one incident's transitions. It is the
// incident's only writer.
type worker struct {
	e     *Engine
	inc   *incident.Versioned
	rules incident.Rules
	// dirty: an EffectSaveSoon is not written yet.
	dirty bool
}

// work moves an incident forward as far as it can now and returns when it
// wants to be looked at again (zero: only when something happens).
func (e *Engine) work(ctx context.Context, id string) (time.Time, error) {
	inc, err := e.takeIncident(ctx, id)
	if errors.Is(err, incident.ErrNotFound) {
		e.mail.take(id)
		return time.Time{}, nil
	}
	if err != nil {
		return time.Time{}, err
	}
	joins := e.mail.take(id)
	w := &worker{e: e, inc: inc, rules: e.rules()}
	var first *incident.Event
	if i := slices.IndexFunc(joins, func(ev incident.Event) bool { return ev.Kind == incident.EventActed }); i >= 0 {
		// A rollback taken before its incident was written (actFirst).
		if len(inc.Actions) == 0 {
			ev := joins[i]
			first = &ev
		}
		joins = slices.Delete(slices.Clone(joins), i, i+1)
	}
	if first != nil {
		if err := w.actedFirst(ctx, *first); err != nil {
			e.mail.requeue(id, append([]incident.Event{*first}, joins...))
			return time.Time{}, err
		}
	}
	if err := w.run(ctx, joins); err != nil {
		// The joins and resolutions may not all be saved: they come back
		// with the next pass, which reads the incident again and counts
		// each once.
		e.mail.requeue(id, joins)
		return time.Time{}, err
	}
	var evs []incident.Event
	if w.inc.Redecides() {
		ev, err := e.redecide(ctx, w.inc.Incident)
		if err != nil {
			return time.Time{}, err
		}
		if ev != nil {
			evs = append(evs, *ev)
		}
	}
	if first == nil {
		evs = append(evs, incident.Event{Kind: incident.EventStart, At: e.opts.Clock.Now()})
	}
	if err := w.run(ctx, evs); err != nil {
		return time.Time{}, err
	}
	wake := w.rules.Wake(w.inc.Incident)
	if w.inc.Redecides() {
		if soon := e.opts.Clock.Now().Add(redecideInterval); wake.IsZero() || soon.Before(wake) {
			wake = soon
		}
	}
	if w.inc.State == incident.StateVerifying && !w.inc.AlertsFiringSince.IsZero() {
		// Alertmanager is asked again well within the grace, so that a
		// recovery is seen without waiting for its resolved notification.
		if soon := e.opts.Clock.Now().Add(min(alertPoll, w.rules.AlertGrace/4)); wake.IsZero() || soon.Before(wake) {
			wake = soon
		}
	}
	return wake, nil
}

// actedFirst starts an incident with the rollback taken before it was
// written (actFirst): the action is saved in it at once, then the evidence
// of the bad revision's pods is taken while they terminate, and then what
// follows an action (its announcement, the post-rollback tasks, the
// verification) is done.
func (w *worker) actedFirst(ctx context.Context, ev incident.Event) error {
	next, fx := incident.Next(w.inc.Incident, ev, w.rules)
	w.inc.Incident = next
	if err := w.e.save(ctx, w.inc); err != nil {
		return err
	}
	var evs []incident.Event
	if w.inc.Evidence == nil {
		evs = append(evs, w.e.keepEvidence(ctx, w.inc.Incident))
	}
	for _, f := range fx {
		if f.Kind == incident.EffectSave {
			continue
		}
		more, err := w.do(ctx, f)
		if err != nil {
			return err
		}
		evs = append(evs, more...)
	}
	return w.run(ctx, evs)
}

// run applies events and carries out their effects, feeding each effect's
// result back in, until nothing is left to do. The results of an event's
// effects are applied before the next event given: each event's
// consequences are complete before the next one looks at the incident.
func (w *worker) run(ctx context.Context, evs []incident.Event) error {
	for len(evs) > 0 {
		ev := evs[0]
		more, err := w.apply(ctx, ev)
		if err != nil {
			return err
		}
		evs = append(more, evs[1:]...)
	}
	if w.dirty {
		if err := w.e.save(ctx, w.inc); err != nil {
			return err
		}
		w.dirty = false
	}
	return nil
}

// apply applies one event and carries out its effects in order.
func (w *worker) apply(ctx context.Context, ev incident.Event) ([]incident.Event, error) {
	was := w.inc.State
	next, fx := incident.Next(w.inc.Incident, ev, w.rules)
	release := func() {}
	if !w.inc.Over() && next.Over() {
		var ok bool
		if release, ok = w.e.holdForResolution(w.inc.ID, w.inc.Target); !ok {
			return nil, errJoinedWhileResolving
		}
		defer release()
	}
	w.inc.Incident = next
	var evs []incident.Event
	for _, f := range fx {
		more, err := w.do(ctx, f)
		if err != nil {
			return nil, err
		}
		if f.Kind == incident.EffectSave {
			// The resolution is written: an alert decided from now on
			// finds the incident over and opens another.
			release()
		}
		evs = append(evs, more...)
	}
	if was != incident.StateResolved && w.inc.State == incident.StateResolved {
		w.e.resolved(w.inc.Incident)
	}
	return evs, nil
}

// do carries out one effect and returns the events it produced.
func (w *worker) do(ctx context.Context, f incident.Effect) ([]incident.Event, error) {
	e, inc := w.e, w.inc
	switch f.Kind {
	case incident.EffectSave:
		w.dirty = false
		return nil, e.save(ctx, inc)
	case incident.EffectSaveSoon:
		w.dirty = true
	case incident.EffectRetry:
		return nil, errRetry
	case incident.EffectReleaseBudget:
		e.budget.unused(inc.ID)
	case incident.EffectAnnounce:
		e.announce(ctx, inc.Incident, f.Summary)
	case incident.EffectKeepEvidence:
		return []incident.Event{e.keepEvidence(ctx, inc.Incident)}, nil
	case incident.EffectAct:
		return []incident.Event{e.act(ctx, inc.Incident, f)}, nil
	case incident.EffectVerify:
		ev, err := w.verify(ctx, f.AlertOnly)
		if err != nil {
			return nil, err
		}
		return []incident.Event{ev}, nil
	case incident.EffectRunTasks:
		ev, err := e.runTasks(ctx, inc.Incident, f.Phase)
		if err != nil {
			return nil, err
		}
		return []incident.Event{ev}, nil
	case incident.EffectPage:
		return []incident.Event{e.page(ctx, inc.Incident, f)}, nil
	case incident.EffectResendPage:
		e.resendPage(ctx, inc.Incident, f.Level)
	case incident.EffectResolvePages:
		if err := e.opts.Escalator.Resolve(ctx, e.escalateIncident(inc.Incident), f.Levels); err != nil {
			e.logger.Warn("resolve pages", "incident", inc.ID, "err", err)
		}
		return []incident.Event{{Kind: incident.EventPagesResolved, At: e.opts.Clock.Now()}}, nil
	default:
		return nil, fmt.Errorf("incident %s: unknown effect %q", inc.ID, f.Kind)
	}
	return nil, nil
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

// act carries out the rung f names and returns what came of it. The
// incident is only a record, which anyone who may write ConfigMaps in the
// daemon's namespace could have written: before anything changes, the live
// workload is checked against the policy in force (see recheck).
func (e *Engine) act(ctx context.Context, inc *incident.Incident, f incident.Effect) incident.Event {
	d, first := inc.Decision, inc.FirstAlert()
	req := actuator.Request{
		Target:      inc.Target,
		Incident:    inc.Rollout,
		Fingerprint: first.Fingerprint,
		Why:         fmt.Sprintf("alert %s, rule %s (%s)", first.Name, d.Rule, d.Criterion),
	}
	var (
		res actuator.Result
		err error
	)
	w, no, err := e.recheck(ctx, inc, f.Action)
	switch {
	case err != nil:
	case no != nil:
		now := e.opts.Clock.Now()
		e.logger.Warn("action refused: the policy in force would not take it", "incident", inc.ID, "namespace", inc.Target.Namespace,
			"workload", inc.Target.Name, "action", f.Action, "reason", no.reason, "message", no.message)
		return incident.Event{Kind: incident.EventActed, At: now, Action: &incident.Action{At: now, Rung: f.Rung, Kind: f.Action,
			Reason: incident.RefusedPrefix + no.reason, Error: no.message}}
	default:
		req.DryRun = dryRun(inc, e.opts.Policy())
		var pause *gitops.Pause
		if pause, no, err = e.pauseGitOps(ctx, inc, w, req.DryRun); no != nil {
			now := e.opts.Clock.Now()
			e.logger.Warn("action refused: GitOps-managed workload", "incident", inc.ID, "namespace", inc.Target.Namespace,
				"workload", inc.Target.Name, "action", f.Action, "reason", no.reason, "message", no.message)
			return incident.Event{Kind: incident.EventActed, At: now, Action: &incident.Action{At: now, Rung: f.Rung, Kind: f.Action,
				Reason: incident.RefusedPrefix + no.reason, Error: no.message}}
		}
		if err != nil {
			break
		}
		switch f.Action {
		case actuator.KindFeatureFlag:
			res, err = e.opts.Actor.RollbackFeatureFlag(ctx, req, *inc.FeatureFlag)
		case actuator.KindRollback:
			var from int64
			if from, err = e.fromForRung(inc, w); err == nil {
				res, err = e.rollback(ctx, req, w, from, inc.Targets[f.Rung])
			}
		default:
			res, err = e.opts.Actor.ScaleBounce(ctx, req)
		}
		switch {
		case pause == nil:
		case err == nil:
			// Said in the incident's timeline and the announcement.
			res.Message += "; " + pause.Message()
		default:
			err = fmt.Errorf("%w; %s", err, pause.Message())
		}
	}
	now := e.opts.Clock.Now()
	a := incident.Action{At: now, Rung: f.Rung, Kind: f.Action}
	if err != nil {
		reason := actuator.FailureReason(err)
		a.Error, a.Reason = err.Error(), string(reason)
		return incident.Event{Kind: incident.EventActed, At: now, Action: &a, Retryable: reason.Retryable() && ctx.Err() == nil}
	}
	a.Result = &res
	switch {
	case res.Outcome == actuator.OutcomeApplied && f.Rung == 0 && !res.Resumed && !first.ReceivedAt.IsZero():
		e.m.alertToAction.Observe(now.Sub(first.ReceivedAt).Seconds())
	case (res.Outcome == actuator.OutcomeApplied || res.Resumed) && f.Rung > 0:
		e.budget.add(inc.Target, now, inc.ID)
	}
	return incident.Event{Kind: incident.EventActed, At: now, Action: &a}
}

// rollback restores revision `to` of the live workload w, at `from`: by
// rolling back its Helm release when it is part of one and the policy in
// force says rollback-release, else by undoing the workload, which for a
// workload of a release is announced as drift from Helm's history.
func (e *Engine) rollback(ctx context.Context, req actuator.Request, w *policy.Workload, from, to int64) (actuator.Result, error) {
	relNS, rel, ok := kinds.HelmRelease(w.Namespace, w.Labels, w.Annotations)
	if ok && e.opts.Policy().RollbackHelmRelease() {
		return e.opts.Actor.RollbackRelease(ctx, req, from, to)
	}
	res, err := e.opts.Actor.Rollback(ctx, req, from, to)
	if ok && err == nil && (res.Outcome == actuator.OutcomeApplied || res.Outcome == actuator.OutcomeDryRun) {
		// Said in the incident's timeline and the announcement.
		res.Message += fmt.Sprintf("; the workload is part of Helm release %s/%s, whose history still records the rolled-back "+
			"version as deployed: the next helm upgrade applies the chart's template again (policy.helm.mode rollback-release "+
			"rolls the release back instead)", relNS, rel)
	}
	return res, err
}

// Refusal reasons of GitOps-managed workloads.
const (
	// reasonGitOpsOwnerMissing: gitops.mode is pause-and-undo, but the
	// owner to pause cannot be found.
	reasonGitOpsOwnerMissing = "gitops_owner_missing"
)

// pauseGitOps pauses the GitOps owner of the live workload w before an
// action on it, when the policy in force says pause-and-undo; it refuses
// the action when the policy says escalate (the mode may have changed since
// the decision) or the owner cannot be found. It returns nil, nil, nil for
// a workload no GitOps tool manages.
func (e *Engine) pauseGitOps(ctx context.Context, inc *incident.Incident, w *policy.Workload, dryRun bool) (*gitops.Pause, *refusal, error) {
	p := e.opts.Policy()
	m := p.GitOpsManager(w)
	switch {
	case m == "":
		return nil, nil, nil
	case !p.PauseGitOps():
		return nil, &refusal{reason: string(policy.ReasonGitOpsManaged),
			message: fmt.Sprintf("managed by %s, which would undo a rollback; revert in Git instead", m)}, nil
	case e.opts.GitOps == nil:
		return nil, &refusal{reason: string(policy.ReasonGitOpsManaged),
			message: fmt.Sprintf("managed by %s, and this daemon cannot pause it", m)}, nil
	}
	pause, err := e.opts.GitOps.Pause(ctx, w, inc.Rollout, dryRun)
	if errors.Is(err, gitops.ErrNoOwner) {
		return nil, &refusal{reason: reasonGitOpsOwnerMissing, message: err.Error() + "; a rollback would be undone, revert in Git instead"}, nil
	}
	if err != nil {
		return nil, nil, err
	}
	return &pause, nil, nil
}

// refusal is why the policy in force would not take an action now.
type refusal struct {
	// reason is bounded: a policy.Reason, or reasonFlagNotAllowed.
	reason  string
	message string
}

// reasonFlagNotAllowed: the flag change an incident holds is not one the
// live workload allows.
const reasonFlagNotAllowed = "flag_not_allowed"

// dryRun says whether an action goes out as a dry run: when the incident
// was decided as one (its people were told so, and its ladder pages
// nobody), or when the policy in force says so.
func dryRun(inc *incident.Incident, p *policy.Policy) bool {
	return inc.DryRun || p.Config().DryRun
}

// recheck reads the incident's workload from the API server and asks the
// policy in force whether an action of the given kind (empty for a
// post-rollback task) may be taken on it now: the target checks
// (policy.Policy.Screen: namespace allowed, workload exists, opted in),
// rollbacks not frozen, the workload not a Flagger Canary's primary, and
// for a feature flag, flags are on and the change is one the live workload
// allows (flagRefusal). It returns the live workload, and the refusal, or
// nil when the action may go ahead; an error only when the workload could
// not be read.
func (e *Engine) recheck(ctx context.Context, inc *incident.Incident, kind actuator.Kind) (*policy.Workload, *refusal, error) {
	w, err := e.opts.Live.Facts(ctx, inc.Target)
	if err != nil {
		return nil, nil, err
	}
	p := e.opts.Policy()
	if no := screen(p, inc, w, e.opts.Clock.Now()); no != nil {
		return w, no, nil
	}
	if p.Config().Freeze {
		return w, &refusal{reason: string(policy.ReasonFrozen), message: "rollbacks are frozen (policy.freeze)"}, nil
	}
	if c := w.FlaggerCanary; c != "" {
		// No policy lets the daemon act on a Canary's primary; the live
		// workload may have become one since the decision.
		return w, &refusal{reason: string(policy.ReasonFlaggerManaged), message: fmt.Sprintf(
			"the primary of Flagger Canary %s, which promotes its target onto it and would fight a rollback; roll back the Canary's target instead", c)}, nil
	}
	if kind == actuator.KindFeatureFlag {
		if inc.FeatureFlag == nil {
			return w, &refusal{reason: reasonFlagNotAllowed, message: "the incident names no feature flag"}, nil
		}
		if why := e.flagRefusal(w, *inc.FeatureFlag); why != "" {
			return w, &refusal{reason: reasonFlagNotAllowed, message: fmt.Sprintf("key %q of ConfigMap %q: %s",
				inc.FeatureFlag.Key, inc.FeatureFlag.ConfigMap, why)}, nil
		}
	}
	return w, nil, nil
}

// screen runs the policy's target checks on the live workload w of the
// incident's target, for each alert the incident keeps whole: the checks of
// the alert (its sender, its origin label, the workload's alert matchers)
// are asked again too, and one alert that passes them all is enough. An
// incident that keeps no alert's labels cannot pass the alert checks.
func screen(p *policy.Policy, inc *incident.Incident, w *policy.Workload, now time.Time) *refusal {
	var first *refusal
	for _, a := range inc.Alerts {
		in := policy.Input{Target: inc.Target, Workload: w, Origin: a.Origin, Now: now,
			Alert: policy.Alert{Fingerprint: a.Fingerprint, Status: "firing", Labels: a.Labels, StartsAt: a.StartsAt}}
		d := p.Screen(in)
		if d.Outcome == "" {
			return nil
		}
		if first == nil {
			first = &refusal{reason: string(d.Reason), message: d.Message}
		}
	}
	if first != nil {
		return first
	}
	// No alert: the workload's own checks still give the first reason.
	if d := p.Screen(policy.Input{Target: inc.Target, Workload: w, Now: now}); d.Outcome != "" {
		return &refusal{reason: string(d.Reason), message: d.Message}
	}
	return &refusal{reason: string(policy.ReasonNoTarget), message: "the incident holds no alert"}
}

// evidenceTimeout bounds the snapshot taken before the first action, which
// must never hold the action up for long.
const evidenceTimeout = 5 * time.Second

// keepEvidence snapshots the suspect revision's pods. A failure is
// recorded and never stops the action.
//
// The snapshot copies pods' logs into the daemon's namespace: it is taken
// only of a workload that passes the policy's target checks now, or an
// incident written by someone else could read any workload's logs.
func (e *Engine) keepEvidence(ctx context.Context, inc *incident.Incident) incident.Event {
	ectx, cancel := context.WithTimeout(ctx, evidenceTimeout)
	defer cancel()
	ev := incident.Event{Kind: incident.EventEvidenceKept}
	// The target checks read the informer cache, as the intake's did; the
	// API server only when the cache does not hold the workload.
	w, err := workload.TargetFacts(ectx, e.opts.Cache, inc.Target)
	if err != nil || w == nil {
		w, err = e.opts.Live.Facts(ectx, inc.Target)
	}
	var snap evidence.Snapshot
	if err == nil {
		if no := screen(e.opts.Policy(), inc, w, e.opts.Clock.Now()); no != nil {
			err = fmt.Errorf("not taken: %s%s: %s", incident.RefusedPrefix, no.reason, no.message)
		} else {
			cached, _ := e.opts.Cache.(evidence.PodFinder)
			snap, err = evidence.CollectFrom(ectx, e.opts.Client, cached, inc.Target, inc.From, evidence.Limits{})
		}
	}
	ev.At = e.opts.Clock.Now()
	if err != nil {
		ev.Error = err.Error()
	} else {
		ev.Evidence = &snap
	}
	return ev
}

// fromForRung returns the revision the current rung rolls back from: the
// suspect revision for the first, and for later ones the revision the
// previous rung produced, provided nothing but that rung changed the live
// workload w since.
func (e *Engine) fromForRung(inc *incident.Incident, w *policy.Workload) (int64, error) {
	if inc.Rung == 0 {
		return inc.From, nil
	}
	if w == nil {
		return 0, fmt.Errorf("read %s: %w", inc.Target, apierrors.NewNotFound(appsResource(inc.Target.Kind), inc.Target.Name))
	}
	prev := inc.Targets[inc.Rung-1]
	if kinds.RolledBackFor(w.Annotations) == inc.Rollout && w.Annotations[kinds.AnnotationRolledBackTo] == fmt.Sprint(inc.Targets[inc.Rung]) {
		// This rung's own rollback, applied by an attempt that stopped
		// before recording it: the actuator recognises it from here.
		if from, err := strconv.ParseInt(w.Annotations[kinds.AnnotationRolledBackFrom], 10, 64); err == nil {
			return from, nil
		}
	}
	if kinds.RolledBackFor(w.Annotations) != inc.Rollout || w.Annotations[kinds.AnnotationRolledBackTo] != fmt.Sprint(prev) {
		return 0, fmt.Errorf("%w: the last change to %s is not this incident's rollback to revision %d", actuator.ErrChanged, inc.Target, prev)
	}
	return w.Revision, nil
}

// verify runs the checks of the current rung while keeping the people
// ladder on its clock (a verification can take minutes, and a page must not
// wait for it), then asks whether the incident's alerts still fire.
func (w *worker) verify(ctx context.Context, alertOnly bool) (incident.Event, error) {
	e := w.e
	if alertOnly {
		now := e.opts.Clock.Now()
		results := []verify.Result{e.alertCheck(ctx, w.inc.Incident, verify.StatusPass)}
		return incident.Event{Kind: incident.EventVerified, At: now, Verification: &incident.Verification{
			At: now, Rung: w.inc.Rung, Overall: verify.StatusPass, Results: results}}, nil
	}
	done := make(chan []verify.Result, 1)
	vctx, cancel := context.WithCancel(ctx)
	defer cancel()
	// The worker goes on applying ticks to w.inc meanwhile: the goroutine
	// gets its own copy of the target.
	target := w.inc.Target
	go func() { done <- e.opts.Verifier.Verify(vctx, target) }()
	var results []verify.Result
	for results == nil {
		var due <-chan time.Time
		if next, ok := w.rules.NextPage(w.inc.Incident); ok {
			due = e.opts.Clock.After(max(next.Sub(e.opts.Clock.Now()), 0))
		}
		select {
		case r := <-done:
			if ctx.Err() != nil {
				return incident.Event{}, ctx.Err()
			}
			results = append(r, e.alertCheck(ctx, w.inc.Incident, e.opts.Verifier.Overall(r)))
		case <-due:
			if err := w.run(ctx, []incident.Event{{Kind: incident.EventTick, At: e.opts.Clock.Now()}}); err != nil {
				return incident.Event{}, err
			}
		}
	}
	now := e.opts.Clock.Now()
	return incident.Event{Kind: incident.EventVerified, At: now, Verification: &incident.Verification{
		At: now, Rung: w.inc.Rung, Overall: e.opts.Verifier.Overall(results), Results: results}}, nil
}

// alertCheck says whether the incident's alerts still fire: resolved when
// Alertmanager's notifications said so; otherwise as Alertmanager's API
// answers, when the checks passed and an AlertState is configured.
func (e *Engine) alertCheck(ctx context.Context, inc *incident.Incident, checks verify.Status) verify.Result {
	now := e.opts.Clock.Now()
	r := verify.Result{Check: "alert", Kind: verify.KindAlert, At: now}
	if inc.AllAlertsResolved() {
		r.Status, r.Message = verify.StatusPass, "Alertmanager reported every alert resolved"
		return r
	}
	if e.opts.AlertState == nil || checks != verify.StatusPass {
		r.Status, r.Message = verify.StatusInconclusive, "Alertmanager has not reported every alert resolved"
		return r
	}
	// Each Alertmanager that sent an alert is asked about it; one still
	// firing anywhere is still down. Only the alerts kept whole can be
	// asked about.
	var urls []string
	queries := map[string]*verify.AlertQuery{}
	for _, a := range inc.Alerts {
		if !a.ResolvedAt.IsZero() {
			continue
		}
		q, ok := queries[a.ExternalURL]
		if !ok {
			q = &verify.AlertQuery{ExternalURL: a.ExternalURL}
			queries[a.ExternalURL] = q
			urls = append(urls, a.ExternalURL)
		}
		q.Alerts = append(q.Alerts, verify.AlertRef{Fingerprint: a.Fingerprint, Labels: a.Labels})
	}
	var results []verify.Result
	for _, u := range urls {
		res := e.opts.AlertState.AlertState(ctx, *queries[u])
		if res.Status == verify.StatusFail {
			return res
		}
		results = append(results, res)
	}
	for _, res := range results {
		if res.Status == verify.StatusInconclusive {
			return res
		}
	}
	switch n := inc.FiringNotKept(); {
	case n < 0:
		r.Status, r.Message = verify.StatusInconclusive, fmt.Sprintf(
			"Alertmanager reports none of the alerts kept active; more than %d alerts joined, and the others cannot be asked about", incident.MaxAlertsTracked)
	case n > 0:
		r.Status, r.Message = verify.StatusInconclusive, fmt.Sprintf(
			"Alertmanager reports none of the alerts kept active; %d more not kept whole cannot be asked about", n)
	default:
		r.Status, r.Message = verify.StatusPass, "Alertmanager reports none of the incident's alerts active"
	}
	return r
}

// runTasks runs the post-rollback tasks of a phase that the workload names,
// each once per incident.
func (e *Engine) runTasks(ctx context.Context, inc *incident.Incident, phase incident.TaskPhase) (incident.Event, error) {
	ev := incident.Event{Kind: incident.EventTasksRan, Phase: phase}
	done := map[string]bool{}
	for _, t := range inc.Tasks {
		done[t.Name] = true
	}
	// Which tasks the workload names is read from the informer cache; the
	// API server is asked, as before an action, only when one is due.
	w, err := workload.TargetFacts(ctx, e.opts.Cache, inc.Target)
	if err != nil || w == nil || e.taskDue(taskNames(w), done, phase) {
		if w, err = e.opts.Live.Facts(ctx, inc.Target); err != nil {
			return ev, err
		}
	}
	names := taskNames(w)
	// Checked once a task is due, as an action is: a task is a Job in the
	// workload's namespace.
	var (
		checked  bool
		no       *refusal
		asDryRun bool
	)
	for _, name := range names {
		if done[name] {
			continue
		}
		now := e.opts.Clock.Now()
		task, ok := e.opts.Tasks[name]
		if !ok {
			if phase == incident.PhaseAfterAction {
				ev.Tasks = append(ev.Tasks, incident.Task{Name: name, Started: now, Ended: now, Result: "failed",
					Message: "no task of that name in the tasks configuration"})
			}
			continue
		}
		if taskPhase(task) != phase {
			continue
		}
		if !checked {
			checked = true
			p := e.opts.Policy()
			if no = screen(p, inc, w, now); no == nil && p.Config().Freeze {
				no = &refusal{reason: string(policy.ReasonFrozen), message: "rollbacks are frozen (policy.freeze)"}
			}
			asDryRun = dryRun(inc, p)
		}
		if no != nil {
			e.logger.Warn("post-rollback task refused: the policy in force would not run it", "incident", inc.ID,
				"namespace", inc.Target.Namespace, "workload", inc.Target.Name, "task", name, "reason", no.reason)
			ev.Tasks = append(ev.Tasks, incident.Task{Name: name, Started: now, Ended: now, Result: incident.TaskRefused,
				Message: incident.RefusedPrefix + no.reason + ": " + no.message})
			continue
		}
		req := actuator.Request{Target: inc.Target, Incident: inc.Rollout, DryRun: asDryRun}
		job, err := e.opts.Actor.RunTask(ctx, req, task)
		if ctx.Err() != nil {
			return ev, ctx.Err()
		}
		t := incident.Task{Name: name, Job: job, Started: now, Ended: e.opts.Clock.Now(), Result: "succeeded"}
		if err != nil {
			t.Result, t.Message = "failed", err.Error()
		}
		ev.Tasks = append(ev.Tasks, t)
	}
	ev.At = e.opts.Clock.Now()
	return ev, nil
}

// taskNames are the post-rollback tasks the workload w names.
func taskNames(w *policy.Workload) []string {
	if w == nil {
		return nil
	}
	var names []string
	for name := range strings.SplitSeq(w.Annotations[kinds.AnnotationPostRollbackTasks], ",") {
		if name = strings.TrimSpace(name); name != "" {
			names = append(names, name)
		}
	}
	return names
}

// taskDue reports whether one of names is a configured task of phase not
// done yet.
func (e *Engine) taskDue(names []string, done map[string]bool, phase incident.TaskPhase) bool {
	for _, name := range names {
		if task, ok := e.opts.Tasks[name]; ok && !done[name] && taskPhase(task) == phase {
			return true
		}
	}
	return false
}

// taskPhase is when a task runs; afterAction unless it says otherwise.
func taskPhase(t actuator.Task) incident.TaskPhase {
	if t.Phase == string(incident.PhaseAfterRecovery) {
		return incident.PhaseAfterRecovery
	}
	return incident.PhaseAfterAction
}

// resolved does the bookkeeping of an incident that just resolved.
func (e *Engine) resolved(inc *incident.Incident) {
	e.m.openIncidents.Dec()
	e.open.remove(inc.Target, inc.ID)
	for _, a := range inc.Actions {
		if a.Result != nil && a.Result.Outcome == actuator.OutcomeApplied {
			e.m.actionToRecovery.Observe(inc.ResolvedAt.Sub(a.At).Seconds())
			break
		}
	}
	e.logger.Info("incident resolved", "incident", inc.ID)
}

// resendPage finishes a page an earlier attempt left sending: it may or may
// not have reached anybody. It goes out again only to the notifiers that
// fold a repeat into the first (PagerDuty); the others are not paged again,
// since a second page is what must not happen, and the ladder's next level
// follows on its clock. An announcement says so.
func (e *Engine) resendPage(ctx context.Context, inc *incident.Incident, level string) {
	step, _ := e.opts.Escalator.Ladder().Step(level)
	var safe, skipped []string
	for _, n := range step.Notifiers {
		if e.opts.Escalator.Deduplicates(n) {
			safe = append(safe, n)
		} else {
			skipped = append(skipped, n)
		}
	}
	if len(safe) > 0 {
		step.Notifiers = safe
		m := e.message(inc, escalate.Page, fmt.Sprintf("%s: page of %s sent again after an interruption", inc.Target, level))
		m.Level = level
		if _, err := e.opts.Escalator.Page(ctx, step, m); err != nil {
			e.logger.Warn("page sent again after an interruption", "incident", inc.ID, "level", level, "err", err)
		}
	}
	if len(skipped) > 0 {
		e.announce(ctx, inc, fmt.Sprintf("the page of %s was interrupted by a restart and may not have reached %s; it is not sent again, to page nobody twice",
			level, strings.Join(skipped, ", ")))
	}
}

func (e *Engine) announce(ctx context.Context, inc *incident.Incident, summary string) {
	if err := e.opts.Escalator.Announce(ctx, e.message(inc, escalate.Announce, fmt.Sprintf("%s: %s", inc.Target, summary))); err != nil {
		e.logger.Warn("announce", "incident", inc.ID, "err", err)
	}
}

func (e *Engine) escalateIncident(inc *incident.Incident) escalate.Incident {
	return escalate.Incident{
		ID: inc.ID, Cluster: inc.Cluster, Target: inc.Target, StartedAt: inc.StartedAt,
		Alertname: inc.FirstAlert().Name, Rule: inc.Decision.Rule, Criterion: inc.Decision.Criterion,
		GeneratorURL: inc.GeneratorURL,
	}
}

// message builds a notification with the why, the revisions and the latest
// verification.
func (e *Engine) message(inc *incident.Incident, kind escalate.MessageKind, summary string) escalate.Message {
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
		case a.Refused():
			details = append(details, fmt.Sprintf("action %d: %s refused (%s): %s", a.Rung, a.Kind, a.Reason, a.Error))
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
	if inc.Over() {
		// Resolving its pages, perhaps, but an alert that joined it now
		// would not be weighed: the alert is decided on its own.
		e.open.remove(target, id)
		return nil, nil
	}
	return inc, nil
}

// holdForResolution is called before an incident's resolution is written.
// It holds the workload's lock, under which decisions read whether the
// workload has an open incident and post their alerts to it, until release
// is called once the resolution is written. It reports false, holding
// nothing, when an alert reached the incident since its worker took its
// mail: an alert posted while the incident was open must be weighed before
// it resolves, not absorbed after. A waiting resolution changes nothing.
func (e *Engine) holdForResolution(id string, target policy.Ref) (release func(), ok bool) {
	key := target.String()
	e.targets.LockKey(key)
	if e.mail.joining(id) {
		_ = e.targets.UnlockKey(key)
		return nil, false
	}
	var once sync.Once
	return func() { once.Do(func() { _ = e.targets.UnlockKey(key) }) }, true
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
