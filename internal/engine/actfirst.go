package engine

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/autorollbackd/autorollbackd/internal/actuator"
	"github.com/autorollbackd/autorollbackd/internal/failpoint"
	"github.com/autorollbackd/autorollbackd/internal/incident"
	"github.com/autorollbackd/autorollbackd/internal/kinds"
	"github.com/autorollbackd/autorollbackd/internal/policy"
)

// The action is the record. An alert the policy decides, on the informer
// cache, to answer with the first rung's rollback is rolled back before
// anything else is written: the rollback patch is the first write, and it
// carries in the workload's annotations (kinds.AnnotationActed) what
// rebuilds the alert record and the incident after a crash. The incident
// and the record follow, and only then does the webhook answer. So the
// promise to Alertmanager still holds: before a 2xx, the action, or a
// record of the accepted alert, is in the cluster.
//
// The rollback is idempotent per rollout (kinds.AnnotationRolledBackFor
// under the patch's precondition): a re-sent alert, the other half of an
// HA pair, or a replacement daemon finds it done and does not act again.

// acted is what a rollback taken before any record writes on the workload
// under kinds.AnnotationActed.
type acted struct {
	Alert    string `json:"alert"`
	Incident string `json:"incident"`
	From     int64  `json:"from"`
	To       int64  `json:"to"`
	Rung     int    `json:"rung"`
	// Records is the namespace of the records of the daemon that acted:
	// another install in the cluster (its own scope, its own records)
	// sees the same workloads and must not rebuild this daemon's incident.
	Records string `json:"records"`
	// The rest rebuilds the alert record as intake would have written it,
	// its annotations (prose for people) aside.
	Fingerprint  string            `json:"fingerprint"`
	Labels       map[string]string `json:"labels,omitempty"`
	StartsAt     time.Time         `json:"startsAt"`
	GeneratorURL string            `json:"generatorURL,omitempty"`
	ReceivedAt   time.Time         `json:"receivedAt"`
	Origin       policy.Origin     `json:"origin,omitzero"`
	Receiver     string            `json:"receiver,omitempty"`
	ExternalURL  string            `json:"externalURL,omitempty"`
	// Decision is without its checks, which make up most of its size:
	// every later update of the workload carries the note, and every
	// watcher keeps it. The alert record written right after the action
	// holds them; one rebuilt from the note does not.
	Decision  policy.Decision `json:"decision"`
	DecidedAt time.Time       `json:"decidedAt"`
	Plan      incident.Plan   `json:"plan"`
	// Started is when the incident's clock started.
	Started time.Time `json:"started"`
}

func actedOf(rec *Record, inc *incident.Incident, records string) acted {
	d := *rec.Decision
	d.Checks = nil
	return acted{
		Alert: rec.Key, Incident: inc.ID, From: inc.From, To: inc.Targets[0], Rung: 0, Records: records,
		Fingerprint: rec.Alert.Fingerprint, Labels: rec.Alert.Labels, StartsAt: rec.Alert.StartsAt,
		GeneratorURL: clip(rec.Alert.GeneratorURL, maxFieldBytes), ReceivedAt: rec.ReceivedAt, Origin: rec.Origin,
		Receiver: rec.Receiver, ExternalURL: rec.ExternalURL, Decision: d, DecidedAt: rec.DecidedAt, Plan: *rec.Plan,
		Started: inc.StartedAt,
	}
}

// record is the alert record the action stands for, decided and handed to
// its incident.
func (a acted) record(target policy.Ref) *Record {
	d, plan := a.Decision, a.Plan
	return &Record{
		Key: a.Alert, Target: target, Origin: a.Origin, ReceivedAt: a.ReceivedAt,
		Receiver: a.Receiver, ExternalURL: a.ExternalURL,
		Alert: policy.Alert{Fingerprint: a.Fingerprint, Status: "firing", Labels: a.Labels, StartsAt: a.StartsAt,
			GeneratorURL: a.GeneratorURL},
		Decision: &d, DecidedAt: a.DecidedAt, Plan: &plan, Incident: a.Incident,
	}
}

// parseActed reads the kinds.AnnotationActed of a workload, when it
// describes the workload's last rollback (the record annotations agree);
// a copy brought back from an old revision's history describes another.
func parseActed(ann map[string]string, rollout string) (acted, bool) {
	v, ok := ann[kinds.AnnotationActed]
	if !ok {
		return acted{}, false
	}
	var a acted
	if err := json.Unmarshal([]byte(v), &a); err != nil {
		return acted{}, false
	}
	ok = kinds.RolledBackFor(ann) == rollout &&
		ann[kinds.AnnotationRolledBackFrom] == fmt.Sprint(a.From) && ann[kinds.AnnotationRolledBackTo] == fmt.Sprint(a.To)
	return a, ok
}

// actFirst takes the fast path for rec, whose target checks passed on the
// cached facts: when the policy decides a plain first-rung rollback, it
// rolls back, then opens the incident (which learns of its action from
// the mailbox) and writes the record. It reports false, with rec as it
// was, when the alert takes today's path: recorded first, decided after.
// An error is one of writing the records after the action; the alert is
// then answered 503 and its re-send finds the action done.
func (e *Engine) actFirst(ctx context.Context, p *policy.Policy, rec *Record, facts *policy.Workload, log alertLog) (bool, error) {
	if !e.resumed.Load() || facts == nil || rec.Target.IsZero() || e.records.Load() >= int64(e.opts.MaxRecords) || e.open.get(rec.Target) != "" {
		return false, nil
	}
	if dl, ok := ctx.Deadline(); ok && time.Until(dl) < intakeTimeout/2 {
		// A large notification's first alerts took half the intake's
		// time: the others are recorded, which is quicker, and acted on
		// by the workers, so that the notification is answered in time.
		return false, nil
	}
	lock := rec.Target.String()
	e.targets.LockKey(lock)
	defer func() { _ = e.targets.UnlockKey(lock) }()
	if e.open.get(rec.Target) != "" || !e.plainRollback(p, facts) {
		return false, nil
	}
	// Intake read only what the target checks need; the decision reads
	// the history too, from the cache as the decision worker would.
	facts, err := e.opts.Cache.Facts(ctx, rec.Target)
	if err != nil || facts == nil {
		// The decision worker reads them again, and reports the error.
		log.Debug("no cached facts to act on before recording; recording the alert first", "err", err)
		return false, nil
	}
	start := time.Now()
	now := e.opts.Clock.Now()
	d, place := e.budget.decide(rec.Target, now, func(u policy.Usage) policy.Decision {
		return p.Evaluate(policy.Input{Alert: rec.Alert, Target: rec.Target, Workload: facts, Origin: rec.Origin, Usage: u, Now: now})
	})
	if d.Outcome != policy.OutcomeRollback || d.DryRun {
		place.release()
		return false, nil
	}
	took := time.Since(start)
	rec.Decision, rec.DecidedAt = &d, now
	rec.Plan = e.planFor(rec, facts)
	undo := func() (bool, error) {
		place.release()
		rec.Decision, rec.DecidedAt, rec.Plan, rec.Incident = nil, time.Time{}, nil, ""
		return false, nil
	}
	if rec.Plan == nil || rec.Plan.FeatureFlag != nil || len(rec.Plan.Targets) == 0 {
		return undo()
	}
	inc := e.newIncident(rec, facts, now)
	note, err := json.Marshal(actedOf(rec, inc, e.opts.Namespace))
	if err != nil {
		return false, fmt.Errorf("encode the record of the rollback of %s: %w", rec.Target, err)
	}
	first := inc.FirstAlert()
	req := actuator.Request{Target: inc.Target, Incident: inc.Rollout, Fingerprint: first.Fingerprint,
		Why: fmt.Sprintf("alert %s, rule %s (%s)", first.Name, d.Rule, d.Criterion), Acted: string(note)}
	res, err := e.rollback(ctx, req, facts, inc.From, inc.Targets[0])
	if err != nil || !(res.Outcome == actuator.OutcomeApplied || res.Resumed) {
		// Today's path decides again and acts with its retries, or records
		// why not; an action that did land is found done then.
		log.Debug("rollback before recording did not apply; recording the alert first", "outcome", res.Outcome, "err", err)
		return undo()
	}
	failpoint.Hit(failpoint.AfterRollbackPatch)
	actedAt := e.opts.Clock.Now()
	if res.Outcome == actuator.OutcomeApplied {
		e.m.alertToAction.Observe(actedAt.Sub(rec.ReceivedAt).Seconds())
	}
	// The incident is the workload's one writer's: the action reaches it
	// by the mailbox, posted before the incident exists, so that no worker
	// can take the incident up without it and act a second time.
	q := e.q.Load()
	rec.Incident = inc.ID
	e.mail.post(inc.ID, incident.Event{Kind: incident.EventActed, At: actedAt,
		Action: &incident.Action{At: actedAt, Rung: 0, Kind: actuator.KindRollback, Result: &res}})
	v, err := e.opts.Incidents.Create(ctx, inc)
	if err != nil {
		e.mail.take(inc.ID)
		place.release()
		if errors.Is(err, incident.ErrExists) {
			// Opened by an earlier attempt: the alert takes today's path
			// and joins it; its worker finds the action done.
			rec.Decision, rec.DecidedAt, rec.Plan, rec.Incident = nil, time.Time{}, nil, ""
			return false, nil
		}
		return false, fmt.Errorf("open the incident of the rollback of %s: %w", rec.Target, err)
	}
	q.known.Store(inc.ID, struct{}{})
	e.m.openIncidents.Inc()
	e.open.set(inc.Target, inc.ID)
	place.keep(inc.ID)
	e.handoff.Store(incident.ObjectName(inc.ID), v)
	q.incidents.Add(inc.ID)
	_, err = e.store.create(ctx, rec)
	switch {
	case errors.Is(err, errExists):
		// Written by an earlier attempt; its incident is this one.
		e.m.duplicates.Inc()
	case err != nil:
		return false, fmt.Errorf("record alert %s after its rollback: %w", rec.Key, err)
	default:
		e.records.Add(1)
		e.m.records.Inc()
	}
	e.seen.Add(rec.Key, seenDone)
	e.m.decisionDuration.Observe(took.Seconds())
	e.m.decisions.WithLabelValues(string(d.Outcome), string(d.Reason)).Inc()
	e.logger.Info("decided, and rolled back before recording", "key", rec.Key, "namespace", rec.Target.Namespace,
		"workload", rec.Target.Name, "decision", d.Outcome, "reason", d.Reason, "rule", d.Rule, "message", d.Message,
		"took", took, "incident", inc.ID, "outcome", res.Outcome)
	return true, nil
}

// plainRollback reports whether a rollback of the cached workload w is the
// plain undo the fast path takes: no GitOps owner to pause, no Helm
// release to roll back instead, no Flagger Canary, rollbacks not frozen.
func (e *Engine) plainRollback(p *policy.Policy, w *policy.Workload) bool {
	if p.GitOpsManager(w) != "" || w.FlaggerCanary != "" {
		return false
	}
	if _, _, ok := kinds.HelmRelease(w.Namespace, w.Labels, w.Annotations); ok && p.RollbackHelmRelease() {
		return false
	}
	c := p.Config()
	return !c.Freeze && !c.DryRun
}

// rebuild writes again, from the kinds.AnnotationActed of the workload w
// (as the cache or the API server shows it), the incident and the alert
// record of a rollback taken before any record of it, when a crash lost
// them: the incident opens acting on its first rung, whose action its
// worker then finds done on the workload and records as applied, once.
// It reports whether it opened the incident; nothing is done when the
// annotation describes no rollback of the last Options.Retention, or its
// incident is known.
func (e *Engine) rebuild(ctx context.Context, target policy.Ref, w *policy.Workload) (bool, error) {
	if w == nil || w.Annotations[kinds.AnnotationActed] == "" {
		return false, nil
	}
	var a acted
	if err := json.Unmarshal([]byte(w.Annotations[kinds.AnnotationActed]), &a); err != nil {
		// Not ours to trust: the record annotations still make the
		// rollback idempotent.
		e.logger.Debug("unreadable record of a rollback on the workload", "namespace", target.Namespace, "workload", target.Name, "err", err)
		return false, nil
	}
	if a.Records != e.opts.Namespace {
		return false, nil
	}
	rollout := RolloutID(target, a.From)
	if _, ok := parseActed(w.Annotations, rollout); !ok || e.open.get(target) == a.Incident {
		return false, nil
	}
	at, err := time.Parse(time.RFC3339, w.Annotations[kinds.AnnotationRolledBackAt])
	now := e.opts.Clock.Now()
	if err != nil || now.Sub(at) > e.opts.Retention {
		return false, nil
	}
	if v, ok := e.seen.Get(actedSeenKey(a.Incident)); ok && v == seenDone {
		return false, nil
	}
	rec := a.record(target)
	inc := e.newIncident(rec, &policy.Workload{Revision: a.From}, a.DecidedAt)
	inc.StartedAt = a.Started
	if inc.ID != a.Incident || inc.Rollout != rollout || len(inc.Targets) == 0 || inc.Targets[0] != a.To {
		e.logger.Warn("the record of a rollback on the workload does not rebuild its incident; left alone",
			"namespace", target.Namespace, "workload", target.Name, "incident", a.Incident)
		return false, nil
	}
	inc.Log(now, "rebuilt from the workload's %s annotation: the daemon stopped after rolling back, before recording", kinds.AnnotationActed)
	v, err := e.opts.Incidents.Create(ctx, inc)
	switch {
	case errors.Is(err, incident.ErrExists):
		e.seen.Add(actedSeenKey(a.Incident), seenDone)
		return false, nil
	case err != nil:
		return false, fmt.Errorf("rebuild incident %s from its rollback: %w", a.Incident, err)
	}
	e.m.openIncidents.Inc()
	e.open.set(target, inc.ID)
	e.budget.add(target, at, inc.ID)
	e.handoff.Store(incident.ObjectName(inc.ID), v)
	q := e.q.Load()
	q.known.Store(inc.ID, struct{}{})
	q.incidents.Add(inc.ID)
	e.logger.Info("incident rebuilt from the record of its rollback on the workload", "incident", inc.ID,
		"namespace", target.Namespace, "workload", target.Name, "key", a.Alert)
	switch _, err := e.store.create(ctx, rec); {
	case errors.Is(err, errExists):
	case err != nil:
		return true, fmt.Errorf("rebuild the record of alert %s from its rollback: %w", a.Alert, err)
	default:
		e.records.Add(1)
		e.m.records.Inc()
	}
	e.seen.Add(rec.Key, seenDone)
	e.seen.Add(actedSeenKey(a.Incident), seenDone)
	return true, nil
}

// actedSeenKey is the key of seen that remembers an incident found, or
// rebuilt, from the record of its rollback on the workload.
func actedSeenKey(id string) string { return "acted/" + id }

// ActedWorkload is a workload that carries kinds.AnnotationActed, as the
// informer cache holds it.
type ActedWorkload struct {
	Ref         policy.Ref
	Annotations map[string]string
}

// rebuildActed rebuilds the incidents and records of the rollbacks taken
// before any record of them that Options.Acted lists, and a crash lost.
func (e *Engine) rebuildActed(ctx context.Context) error {
	if e.opts.Acted == nil {
		return nil
	}
	acted, err := e.opts.Acted()
	if err != nil {
		return fmt.Errorf("list the workloads rolled back before their records: %w", err)
	}
	var errs []error
	for _, w := range acted {
		lock := w.Ref.String()
		e.targets.LockKey(lock)
		_, err := e.rebuild(ctx, w.Ref, &policy.Workload{Annotations: w.Annotations})
		_ = e.targets.UnlockKey(lock)
		if err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}
