package engine

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"

	"github.com/autorollbackd/autorollbackd/internal/actuator"
	"github.com/autorollbackd/autorollbackd/internal/escalate"
	"github.com/autorollbackd/autorollbackd/internal/incident"
	"github.com/autorollbackd/autorollbackd/internal/kinds"
	"github.com/autorollbackd/autorollbackd/internal/policy"
	"github.com/autorollbackd/autorollbackd/internal/testenv"
	"github.com/autorollbackd/autorollbackd/internal/verify"
	"github.com/autorollbackd/autorollbackd/internal/webhook"
	"github.com/autorollbackd/autorollbackd/internal/workload"
)

// writesAtRollback is an Actor that counts, when a rollback is asked for,
// the records the namespace holds, so that a test can tell which write
// came first.
type writesAtRollback struct {
	Actor
	f *fixture

	mu        sync.Mutex
	rollbacks int
	// recordsBefore is how many alert records and incidents the namespace
	// held when each rollback was asked for.
	recordsBefore []int
}

func (w *writesAtRollback) Rollback(ctx context.Context, req actuator.Request, from, to int64) (actuator.Result, error) {
	cms, err := w.f.c.Client.CoreV1().ConfigMaps(w.f.ns).List(ctx, metav1.ListOptions{LabelSelector: kinds.LabelRecord})
	if err != nil {
		return actuator.Result{}, fmt.Errorf("count records: %w", err)
	}
	w.mu.Lock()
	w.rollbacks++
	w.recordsBefore = append(w.recordsBefore, len(cms.Items))
	w.mu.Unlock()
	return w.Actor.Rollback(ctx, req, from, to)
}

func (w *writesAtRollback) seen() (int, []int) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.rollbacks, slices.Clone(w.recordsBefore)
}

func spyRollbacks(f *fixture, spy **writesAtRollback) setup {
	return func(_ *verify.Config, _ *escalate.Config, o *Options) {
		*spy = &writesAtRollback{Actor: o.Actor, f: f}
		o.Actor = *spy
	}
}

// An alert the policy rolls back from the cache is rolled back before any
// record is written, within the webhook's request; the record and the
// incident follow before the answer, and the incident goes on to verify
// the rollback without acting again.
func TestRollbackIsTheFirstWrite(t *testing.T) {
	f := newFixture(t, optedIn, nil)
	var spy *writesAtRollback
	e := f.startEngine(t, policy.DefaultConfig(), 1, spyRollbacks(f, &spy))
	e.waitResumed(t)
	ctx := context.Background()
	n := firing(f.ns, "first-write", time.Now(), map[string]string{"impact": "service_down"})
	r, err := e.Accept(ctx, n)
	if err != nil || r.Accepted != 1 {
		t.Fatalf("Accept = %+v, %v; want the alert accepted", r, err)
	}
	calls, before := spy.seen()
	if calls != 1 || before[0] != 0 {
		t.Fatalf("when Accept returned: %d rollbacks, records before each %v; want one rollback, before any record", calls, before)
	}
	// Answered: the record and the incident are in the cluster.
	a := n.Alerts[0]
	key := AlertKey(policy.Alert{Fingerprint: a.Fingerprint, StartsAt: a.StartsAt})
	rec, err := e.Record(ctx, key)
	if err != nil {
		t.Fatalf("no record when the webhook answered: %v", err)
	}
	if rec.state() != stateDone || rec.Incident == "" {
		t.Fatalf("record %s, incident %q; want it handed to its incident", rec.state(), rec.Incident)
	}
	if _, err := e.opts.Incidents.Get(ctx, rec.Incident); err != nil {
		t.Fatalf("no incident when the webhook answered: %v", err)
	}
	d, err := f.c.Client.AppsV1().Deployments(f.ns).Get(ctx, "event-service", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	got, ok := parseActed(d.Annotations, RolloutID(rec.Target, 2))
	if !ok || got.Alert != key || got.Incident != rec.Incident || got.From != 2 || got.To != 1 || got.Rung != 0 {
		t.Fatalf("%s = %q; want the alert key, the incident, from 2 to 1, rung 0", kinds.AnnotationActed, d.Annotations[kinds.AnnotationActed])
	}
	// Every update of the workload carries the note, and every watcher of
	// it, the daemon's informers included, keeps it: the decision's checks,
	// most of its size, are for the alert record written right after.
	if got.Decision.Checks != nil || got.Decision.Rule == "" || got.Decision.Message == "" {
		t.Errorf("the note's decision = %+v; want its outcome, rule and message without the checks", got.Decision)
	}
	if n := len(d.Annotations[kinds.AnnotationActed]); n > 1024 {
		t.Errorf("%s holds %d bytes; want at most 1 KiB for this alert", kinds.AnnotationActed, n)
	}
	generation := d.Generation

	inc := e.waitResolved(t, rec.Incident)
	if len(inc.Actions) != 1 || inc.Actions[0].Result == nil || inc.Actions[0].Result.Outcome != actuator.OutcomeApplied || inc.Actions[0].Result.Resumed {
		t.Fatalf("actions = %+v; want the one rollback, applied\n%s", inc.Actions, inc.Render())
	}
	if len(inc.Verifications) != 1 || inc.Verifications[0].Overall != verify.StatusPass {
		t.Errorf("verifications = %+v, want one pass", inc.Verifications)
	}
	if calls, _ := spy.seen(); calls != 1 {
		t.Errorf("%d rollbacks asked for; want 1", calls)
	}
	if _, g := f.image(t); g != generation {
		t.Errorf("the workload was written again: generation %d -> %d", generation, g)
	}
	if v := testutilCount(t, e, "autorollbackd_alert_to_action_seconds"); v != 1 {
		t.Errorf("alert_to_action_seconds observations = %v, want 1", v)
	}
	if u := e.budget.usage(rec.Target, time.Now()); u.Workload != 1 {
		t.Errorf("budget usage = %+v, want the rollback counted once", u)
	}
	// Re-sent, it is a duplicate, answered without acting.
	r, err = e.Accept(ctx, n)
	if err != nil || r.Duplicates != 1 {
		t.Errorf("re-sent: Accept = %+v, %v; want a duplicate", r, err)
	}
}

// Alerts about one workload sent at once, by an HA pair and by several
// rules, roll it back once: the first acts, the others find its incident
// and join it.
func TestConcurrentAlertsRollBackOnce(t *testing.T) {
	f := newFixture(t, optedIn, nil)
	e := f.startEngine(t, policy.DefaultConfig(), 2)
	e.waitResumed(t)
	ctx := context.Background()
	now := time.Now()
	var ns []*webhook.Notification
	for i := range 3 {
		n := firing(f.ns, fmt.Sprintf("concurrent-%d", i), now, map[string]string{"impact": "service_down"})
		// Each is sent twice, as by the two halves of an HA pair.
		ns = append(ns, n, n)
	}
	var wg sync.WaitGroup
	errs := make(chan error, len(ns))
	for _, n := range ns {
		wg.Go(func() {
			if _, err := e.Accept(ctx, n); err != nil {
				errs <- err
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	inc := e.waitIncident(t, ns[0], incident.StateResolved)
	for _, n := range ns[1:] {
		testenv.Eventually(t, 30*time.Second, "alert "+n.Alerts[0].Fingerprint+" joins "+inc.ID, func(ctx context.Context) (bool, string) {
			got, err := e.incidentOf(ctx, n)
			if err != nil {
				return false, err.Error()
			}
			return got.ID == inc.ID, got.ID
		})
	}
	applied := 0
	for _, a := range inc.Actions {
		if a.Result != nil && a.Result.Outcome == actuator.OutcomeApplied {
			applied++
		}
	}
	if applied != 1 {
		t.Fatalf("actions = %+v; want one applied rollback\n%s", inc.Actions, inc.Render())
	}
	if n := appliedRollbacks(t, e); n != 1 {
		t.Errorf("the actuator applied %v rollbacks; want 1", n)
	}
}

// appliedRollbacks is how many rollbacks the engine's actuator applied.
func appliedRollbacks(t *testing.T, r *running) float64 {
	t.Helper()
	families, err := r.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range families {
		if mf.GetName() != "autorollbackd_actions_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			l := map[string]string{}
			for _, p := range m.GetLabel() {
				l[p.GetName()] = p.GetValue()
			}
			if l["kind"] == "rollback" && l["result"] == "applied" && l["dry_run"] == "false" {
				return m.GetCounter().GetValue()
			}
		}
	}
	t.Fatal("metric autorollbackd_actions_total not found")
	return 0
}

// waitResumed waits until the engine has resumed what the cluster holds,
// and acts on alerts before recording them.
func (r *running) waitResumed(t *testing.T) {
	t.Helper()
	testenv.Eventually(t, 30*time.Second, "engine resumed", func(context.Context) (bool, string) {
		return r.resumed.Load(), "resuming"
	})
}

// stoppedAfterRollback does what a daemon that stopped right after its
// rollback, before writing anything else, did: the rollback of n's alert
// as actFirst takes it. It returns the incident the rollback was for and
// the workload's generation after it.
func stoppedAfterRollback(t *testing.T, f *fixture, n *webhook.Notification, opts ...setup) (*incident.Incident, *Record, int64) {
	t.Helper()
	ctx := context.Background()
	stopped := f.startEngine(t, policy.DefaultConfig(), 0, opts...)
	target := policy.Ref{Kind: policy.KindDeployment, Namespace: f.ns, Name: "event-service"}
	a := n.Alerts[0]
	rec := &Record{Key: AlertKey(policy.Alert{Fingerprint: a.Fingerprint, StartsAt: a.StartsAt}), Target: target, ReceivedAt: time.Now(),
		Alert:    policy.Alert{Fingerprint: a.Fingerprint, Status: "firing", Labels: a.Labels, StartsAt: a.StartsAt},
		Decision: &policy.Decision{Outcome: policy.OutcomeRollback, Reason: "rule_matched"}, DecidedAt: time.Now()}
	facts, err := stopped.opts.Cache.Facts(ctx, target)
	if err != nil {
		t.Fatal(err)
	}
	rec.Plan = stopped.planFor(rec, facts)
	inc := stopped.newIncident(rec, facts, time.Now())
	note, err := json.Marshal(actedOf(rec, inc, stopped.opts.Namespace))
	if err != nil {
		t.Fatal(err)
	}
	req := actuator.Request{Target: target, Incident: inc.Rollout, Why: "the stopped attempt", Acted: string(note)}
	if res, err := stopped.opts.Actor.Rollback(ctx, req, 2, 1); err != nil || res.Outcome != actuator.OutcomeApplied {
		t.Fatalf("the stopped attempt's rollback = %+v, %v", res, err)
	}
	f.waitRevision(t, "3")
	_, generation := f.image(t)
	return inc, rec, generation
}

// checkRebuilt checks what the next daemon made of the rollback of inc:
// the incident resolved with the rollback as its one applied action, the
// workload not written again, the alert's record handed to the incident,
// the budget counting the rollback once.
func checkRebuilt(t *testing.T, f *fixture, e *running, inc *incident.Incident, rec *Record, generation int64) {
	t.Helper()
	ctx := context.Background()
	got := e.waitResolved(t, inc.ID)
	if len(got.Actions) != 1 || got.Actions[0].Result == nil || got.Actions[0].Result.Outcome != actuator.OutcomeApplied || !got.Actions[0].Result.Resumed {
		t.Fatalf("actions = %+v; want the one rollback, applied before the crash\n%s", got.Actions, got.Render())
	}
	if _, g := f.image(t); g != generation {
		t.Fatalf("the workload was written again: generation %d -> %d", generation, g)
	}
	saved, err := e.Record(ctx, rec.Key)
	if err != nil || saved.Incident != inc.ID {
		t.Fatalf("record = %+v, %v; want it rebuilt, handed to %s", saved, err, inc.ID)
	}
	if u := e.budget.usage(rec.Target, time.Now()); u.Workload != 1 {
		t.Errorf("budget usage = %+v, want the rollback counted once", u)
	}
	list, err := e.opts.Incidents.List(ctx, false)
	if err != nil {
		t.Fatal(err)
	}
	if len(list) != 1 {
		t.Errorf("%d incidents; want the one rebuilt", len(list))
	}
}

// A daemon that stopped right after its rollback, before writing anything
// else, left only the rollback's record on the workload. The next one
// rebuilds the incident and the alert record from it, when Alertmanager
// sends the alert again or, with the cache's list of such workloads, as it
// resumes, and records the rollback as the one applied action, without
// writing the workload again.
func TestRollbackBeforeAnyRecordIsRebuilt(t *testing.T) {
	t.Run("when the alert is sent again", func(t *testing.T) {
		f := newFixture(t, optedIn, nil)
		n := firing(f.ns, "rebuilt", time.Now(), map[string]string{"impact": "service_down"})
		inc, rec, generation := stoppedAfterRollback(t, f, n)
		e := f.startEngine(t, policy.DefaultConfig(), 1)
		e.waitResumed(t)
		r, err := e.Accept(context.Background(), n)
		if err != nil || r.Accepted+r.Duplicates != 1 {
			t.Fatalf("re-sent: Accept = %+v, %v; want the alert taken", r, err)
		}
		checkRebuilt(t, f, e, inc, rec, generation)
	})
	t.Run("as the next daemon resumes", func(t *testing.T) {
		f := newFixture(t, optedIn, nil)
		n := firing(f.ns, "rebuilt-on-resume", time.Now(), map[string]string{"impact": "service_down"})
		inc, rec, generation := stoppedAfterRollback(t, f, n)
		e := f.startEngine(t, policy.DefaultConfig(), 1, func(_ *verify.Config, _ *escalate.Config, o *Options) {
			o.Acted = actedDeployments(o.Cache.(workload.Cached))
		})
		// No alert: Alertmanager has not sent it again yet.
		checkRebuilt(t, f, e, inc, rec, generation)
	})
	t.Run("only by the daemon that acted", func(t *testing.T) {
		// Another install in the cluster, keeping its records elsewhere,
		// rolled the workload back: its incident is not this daemon's.
		f := newFixture(t, optedIn, nil)
		n := firing(f.ns, "acted-by-another", time.Now(), map[string]string{"impact": "service_down"})
		stoppedAfterRollback(t, f, n, func(_ *verify.Config, _ *escalate.Config, o *Options) {
			o.Namespace = f.ns + "-another"
		})
		e := f.startEngine(t, policy.DefaultConfig(), 1, func(_ *verify.Config, _ *escalate.Config, o *Options) {
			o.Acted = actedDeployments(o.Cache.(workload.Cached))
		})
		e.waitResumed(t)
		list, err := e.opts.Incidents.List(context.Background(), false)
		if err != nil {
			t.Fatal(err)
		}
		if len(list) != 0 {
			t.Fatalf("%d incidents rebuilt from another daemon's rollback; want none: %+v", len(list), list)
		}
	})
}

// actedDeployments lists the cached Deployments that carry
// kinds.AnnotationActed, as the daemon's Options.Acted does.
func actedDeployments(cache workload.Cached) func() ([]ActedWorkload, error) {
	return func() ([]ActedWorkload, error) {
		ds, err := cache.Deployments.List(labels.Everything())
		if err != nil {
			return nil, err
		}
		var out []ActedWorkload
		for _, d := range ds {
			if _, ok := d.Annotations[kinds.AnnotationActed]; ok {
				out = append(out, ActedWorkload{Ref: policy.Ref{Kind: policy.KindDeployment, Namespace: d.Namespace, Name: d.Name},
					Annotations: d.Annotations})
			}
		}
		return out, nil
	}
}
