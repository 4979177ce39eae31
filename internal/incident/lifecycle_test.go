package incident

import (
	"encoding/json"
	"fmt"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/autorollbackd/autorollbackd/internal/actuator"
	"github.com/autorollbackd/autorollbackd/internal/escalate"
	"github.com/autorollbackd/autorollbackd/internal/evidence"
	"github.com/autorollbackd/autorollbackd/internal/policy"
	"github.com/autorollbackd/autorollbackd/internal/verify"
)

var t0 = time.Date(2026, 12, 2, 3, 0, 0, 0, time.UTC)

func at(d time.Duration) time.Time { return t0.Add(d) }

var runbookLadder = escalate.Ladder{
	{After: metav1.Duration{Duration: 5 * time.Minute}, Level: "oncall"},
	{After: metav1.Duration{Duration: 10 * time.Minute}, Level: "lead"},
	{After: metav1.Duration{Duration: 15 * time.Minute}, Level: "war_room"},
}

var rules = Rules{
	MaxAttempts: 3,
	AlertGrace:  5 * time.Minute,
	Ladders: map[LadderKind]escalate.Ladder{
		LadderRollback:   runbookLadder,
		LadderEscalate:   runbookLadder,
		LadderFixForward: runbookLadder[:1],
	},
}

func decision(o policy.Outcome, r policy.Reason) policy.Decision {
	return policy.Decision{Outcome: o, Reason: r, Message: string(o) + " because " + string(r)}
}

var rollbackPlan = Plan{From: 5, Targets: []int64{4, 3}}

// rollingBack is an incident that decided to roll back and has not acted.
func rollingBack() *Incident {
	return &Incident{ID: "i", State: StateActing, StartedAt: t0, Revision: 5,
		Decision: decision(policy.OutcomeRollback, policy.ReasonCriterionMet), Plan: rollbackPlan,
		Alerts: []Alert{{Key: "a@1", Name: "Down"}}}
}

func fixingForward() *Incident {
	return &Incident{ID: "i", State: StateEscalated, StartedAt: t0, Revision: 5,
		Decision: decision(policy.OutcomeFixForward, policy.ReasonCriterionMet),
		Alerts:   []Alert{{Key: "a@1", Name: "Slow"}}}
}

func with(inc *Incident, f func(*Incident)) *Incident { f(inc); return inc }

func applied(rung int, kind actuator.Kind, d time.Duration) Action {
	return Action{At: at(d), Rung: rung, Kind: kind, Result: &actuator.Result{Outcome: actuator.OutcomeApplied, Message: string(kind) + " applied"}}
}

func verifying(rung int, d time.Duration) *Incident {
	return with(rollingBack(), func(i *Incident) {
		i.State, i.Rung = StateVerifying, rung
		for r := 0; r <= rung; r++ {
			i.Actions = append(i.Actions, applied(r, actuator.KindRollback, d))
		}
	})
}

func checks(alert verify.Status, others ...verify.Status) *Verification {
	v := &Verification{}
	for _, s := range others {
		v.Results = append(v.Results, verify.Result{Check: "rollout", Kind: "rollout", Status: s, Message: "rollout " + string(s)})
	}
	var rest []verify.Result
	rest = append(rest, v.Results...)
	v.Overall = verify.Overall(rest)
	v.Results = append(v.Results, verify.Result{Check: "alert", Kind: verify.KindAlert, Status: alert, Message: "alert Down " + string(alert)})
	return v
}

func effectKinds(fx []Effect) []string {
	var out []string
	for _, f := range fx {
		s := string(f.Kind)
		switch f.Kind {
		case EffectAct:
			s += ":" + string(f.Action)
		case EffectPage, EffectResendPage:
			s += ":" + f.Level
		case EffectRunTasks:
			s += ":" + string(f.Phase)
		}
		out = append(out, s)
	}
	return out
}

// TestNext names every transition of the lifecycle: the state before, the
// event, the state after and the effects, in order.
func TestNext(t *testing.T) {
	for _, tc := range []struct {
		name    string
		inc     *Incident
		ev      Event
		state   State
		rung    int
		effects []string
		check   func(t *testing.T, before, after *Incident, fx []Effect)
	}{
		{
			name: "item 10: start acting: evidence is kept, then the first rung rolls back",
			inc:  rollingBack(), ev: Event{Kind: EventStart, At: at(time.Minute)},
			state: StateActing, effects: []string{"keep_evidence", "act:rollback"},
		},
		{
			name: "item 10: evidence is kept once: a retried first rung acts at once",
			inc:  with(rollingBack(), func(i *Incident) { i.Evidence = &evidence.Snapshot{Revision: 5} }),
			ev:   Event{Kind: EventStart, At: at(time.Minute)}, state: StateActing, effects: []string{"act:rollback"},
		},
		{
			name:  "item 10: the evidence joins the incident, saved with the action",
			inc:   rollingBack(),
			ev:    Event{Kind: EventEvidenceKept, At: at(time.Minute), Evidence: &evidence.Snapshot{Revision: 5, PodsFound: 2, Pods: []evidence.Pod{{Name: "a"}, {Name: "b"}}}},
			state: StateActing,
			check: func(t *testing.T, _, after *Incident, _ []Effect) {
				if after.Evidence == nil || after.Timeline[len(after.Timeline)-1].What != "kept evidence of revision 5: 2 of 2 pods" {
					t.Errorf("evidence %v, timeline %v", after.Evidence, after.Timeline)
				}
			},
		},
		{
			name:  "item 10: evidence that could not be kept is said, and the action goes on",
			inc:   rollingBack(),
			ev:    Event{Kind: EventEvidenceKept, At: at(time.Minute), Error: "no such revision"},
			state: StateActing,
			check: func(t *testing.T, _, after *Incident, _ []Effect) {
				if after.Evidence != nil || after.Timeline[len(after.Timeline)-1].What != "evidence of revision 5 not kept: no such revision" {
					t.Errorf("evidence %v, timeline %v", after.Evidence, after.Timeline)
				}
			},
		},
		{
			name: "start with a feature flag: the flag is the first rung",
			inc:  with(rollingBack(), func(i *Incident) { i.FeatureFlag = &actuator.FlagChange{ConfigMap: "c", Key: "k"} }),
			ev:   Event{Kind: EventStart, At: at(time.Minute)}, state: StateActing, effects: []string{"keep_evidence", "act:feature_flag"},
		},
		{
			name: "start acting with no rung: people take over at once and the budget place goes back",
			inc:  with(rollingBack(), func(i *Incident) { i.Targets = nil }),
			ev:   Event{Kind: EventStart, At: at(time.Minute)}, state: StateEscalated,
			effects: []string{"release_budget", "save", "save", "page:oncall"},
		},
		{
			name: "start verifying after a restart: verify again",
			inc:  verifying(0, time.Minute), ev: Event{Kind: EventStart, At: at(2 * time.Minute)},
			state: StateVerifying, effects: []string{"verify"},
		},
		{
			name: "start with the policy's escalation: page on-call now",
			inc: with(fixingForward(), func(i *Incident) {
				i.Decision = decision(policy.OutcomeEscalate, policy.ReasonPaused)
			}),
			ev: Event{Kind: EventStart, At: at(time.Second)}, state: StateEscalated, effects: []string{"save", "page:oncall"},
		},
		{
			name: "start fixing forward: nobody is paged before the first step",
			inc:  fixingForward(), ev: Event{Kind: EventStart, At: at(time.Minute)}, state: StateEscalated,
		},
		{
			name: "item 5: fix forward pages on-call once the alert still fires after the first step, and only on-call",
			inc:  fixingForward(), ev: Event{Kind: EventStart, At: at(20 * time.Minute)}, state: StateEscalated,
			effects: []string{"save", "page:oncall"},
		},
		{
			name: "item 5: a dry run pages nobody on the clock",
			inc:  with(rollingBack(), func(i *Incident) { i.DryRun, i.State = true, StateEscalated }),
			ev:   Event{Kind: EventStart, At: at(20 * time.Minute)}, state: StateEscalated,
		},
		{
			name: "the runbook's clock: every overdue level is paged, in order",
			inc:  verifying(0, time.Minute), ev: Event{Kind: EventTick, At: at(11 * time.Minute)},
			state: StateVerifying, effects: []string{"save", "page:oncall", "save", "page:lead"},
			check: func(t *testing.T, _, after *Incident, _ []Effect) {
				if len(after.Pages) != 2 || !after.Pages[0].Sending || !after.Pages[1].Sending {
					t.Errorf("pages = %+v, want two recorded as sending before they go out", after.Pages)
				}
			},
		},
		{
			name: "an interrupted page is settled: delivery unknown, resent only where it deduplicates",
			inc: with(fixingForward(), func(i *Incident) {
				i.Pages = []Page{{At: at(5 * time.Minute), Level: "oncall", Sending: true}}
			}),
			ev: Event{Kind: EventStart, At: at(6 * time.Minute)}, state: StateEscalated,
			effects: []string{"save", "resend_page:oncall"},
			check: func(t *testing.T, _, after *Incident, _ []Effect) {
				if p := after.Pages[0]; p.Sending || !p.DeliveryUnknown {
					t.Errorf("page = %+v, want delivery unknown", p)
				}
			},
		},
		{
			name: "item 4: a page nobody received is recorded no_receiver, not paged",
			inc: with(fixingForward(), func(i *Incident) {
				i.Pages = []Page{{At: at(5 * time.Minute), Level: "oncall", Sending: true}}
			}),
			ev:    Event{Kind: EventPaged, At: at(5 * time.Minute), Page: &Page{Level: "oncall", NoReceiver: true}},
			state: StateEscalated, effects: []string{"save"},
			check: func(t *testing.T, _, after *Incident, _ []Effect) {
				last := after.Timeline[len(after.Timeline)-1].What
				if !after.Pages[0].NoReceiver || strings.Contains(last, "paged oncall") || !strings.Contains(last, "no receiver") {
					t.Errorf("page %+v, timeline %q: want no_receiver and no 'paged'", after.Pages[0], last)
				}
				if after.PagedLevels()["oncall"] {
					t.Error("a level nobody received counts as paged")
				}
			},
		},
		{
			name: "item 4: a delivered page names its receivers",
			inc: with(fixingForward(), func(i *Incident) {
				i.Pages = []Page{{At: at(5 * time.Minute), Level: "oncall", Sending: true}}
			}),
			ev:    Event{Kind: EventPaged, At: at(5 * time.Minute), Page: &Page{Level: "oncall", Receivers: []string{"pagerduty"}}, Why: "still open after 5m"},
			state: StateEscalated, effects: []string{"save"},
			check: func(t *testing.T, _, after *Incident, _ []Effect) {
				if last := after.Timeline[len(after.Timeline)-1].What; last != "paged oncall: still open after 5m (to pagerduty)" {
					t.Errorf("timeline %q", last)
				}
			},
		},
		{
			name:  "an applied rollback is verified, after the afterAction tasks (item 9)",
			inc:   rollingBack(),
			ev:    Event{Kind: EventActed, At: at(time.Minute), Action: ptr(applied(0, actuator.KindRollback, time.Minute))},
			state: StateVerifying, effects: []string{"save", "announce", "run_tasks:afterAction", "verify"},
		},
		{
			name: "item 8: an action found already on the workload was applied, once, and is never reported failed",
			inc:  rollingBack(),
			ev: Event{Kind: EventActed, At: at(time.Minute), Action: &Action{At: at(time.Minute), Kind: actuator.KindRollback,
				Result: &actuator.Result{Outcome: actuator.OutcomeNoop, Resumed: true, Message: "rolled back"}}},
			state: StateVerifying, effects: []string{"save", "announce", "run_tasks:afterAction", "verify"},
			check: func(t *testing.T, _, after *Incident, _ []Effect) {
				if after.Actions[0].Result.Outcome != actuator.OutcomeApplied {
					t.Errorf("outcome = %s, want applied", after.Actions[0].Result.Outcome)
				}
			},
		},
		{
			name: "a dry run announces what it would have done and escalates without a page on the clock",
			inc:  with(rollingBack(), func(i *Incident) { i.DryRun = true }),
			ev: Event{Kind: EventActed, At: at(time.Minute), Action: &Action{At: at(time.Minute), Kind: actuator.KindRollback,
				Result: &actuator.Result{Outcome: actuator.OutcomeDryRun, Message: "rolled back 5 to 4"}}},
			state: StateEscalated, effects: []string{"release_budget", "save", "announce"},
		},
		{
			name: "a failure that may pass is retried, counted in the incident",
			inc:  with(rollingBack(), func(i *Incident) { i.Attempts = 1 }),
			ev: Event{Kind: EventActed, At: at(time.Minute), Retryable: true,
				Action: &Action{At: at(time.Minute), Kind: actuator.KindRollback, Error: "conflict", Reason: "conflict"}},
			state: StateActing, effects: []string{"save", "retry"},
			check: func(t *testing.T, _, after *Incident, _ []Effect) {
				if after.Attempts != 2 || len(after.Actions) != 0 {
					t.Errorf("attempts %d, actions %d; want 2 and none recorded", after.Attempts, len(after.Actions))
				}
			},
		},
		{
			name: "the last attempt's failure escalates",
			inc:  with(rollingBack(), func(i *Incident) { i.Attempts = 2 }),
			ev: Event{Kind: EventActed, At: at(time.Minute), Retryable: true,
				Action: &Action{At: at(time.Minute), Kind: actuator.KindRollback, Error: "conflict", Reason: "conflict"}},
			state: StateEscalated, effects: []string{"release_budget", "save", "save", "page:oncall"},
		},
		{
			name: "a failure that cannot pass escalates at once",
			inc:  rollingBack(),
			ev: Event{Kind: EventActed, At: at(time.Minute),
				Action: &Action{At: at(time.Minute), Kind: actuator.KindRollback, Error: "changed", Reason: "changed"}},
			state: StateEscalated, effects: []string{"release_budget", "save", "save", "page:oncall"},
		},
		{
			name: "a passing verification with the alert resolved runs the afterRecovery tasks",
			inc:  verifying(0, time.Minute), ev: Event{Kind: EventVerified, At: at(2 * time.Minute), Verification: checks(verify.StatusPass, verify.StatusPass)},
			state: StateVerifying, effects: []string{"save", "run_tasks:afterRecovery"},
		},
		{
			name: "item 2: checks pass but the alert still fires: wait within the grace",
			inc:  verifying(0, time.Minute), ev: Event{Kind: EventVerified, At: at(2 * time.Minute), Verification: checks(verify.StatusFail, verify.StatusPass)},
			state: StateVerifying, effects: []string{"save"},
			check: func(t *testing.T, _, after *Incident, _ []Effect) {
				if got := (Rules{AlertGrace: rules.AlertGrace}).Wake(after); !got.Equal(at(6 * time.Minute)) {
					t.Errorf("wake at %s, want the grace's end %s", got, at(6*time.Minute))
				}
			},
		},
		{
			name:  "item 2: the alert still fires after the grace: still down, the next rung (N-2)",
			inc:   with(verifying(0, time.Minute), func(i *Incident) { i.AlertsFiringSince = at(time.Minute) }),
			ev:    Event{Kind: EventVerified, At: at(7 * time.Minute), Verification: checks(verify.StatusFail, verify.StatusPass)},
			state: StateActing, rung: 1, effects: []string{"save", "announce", "act:rollback"},
		},
		{
			name: "item 2: Alertmanager cannot tell: the verdict rests on the other checks",
			inc:  verifying(0, time.Minute), ev: Event{Kind: EventVerified, At: at(2 * time.Minute), Verification: checks(verify.StatusInconclusive, verify.StatusPass)},
			state: StateVerifying, effects: []string{"save", "run_tasks:afterRecovery"},
		},
		{
			name: "item 3: an inconclusive check is no pass: the next rung",
			inc:  verifying(0, time.Minute), ev: Event{Kind: EventVerified, At: at(2 * time.Minute), Verification: checks(verify.StatusInconclusive, verify.StatusInconclusive)},
			state: StateActing, rung: 1, effects: []string{"save", "announce", "act:rollback"},
		},
		{
			name:  "a failed verification of the last revision takes the scale bounce when allowed",
			inc:   with(verifying(1, time.Minute), func(i *Incident) { i.ScaleBounce = true }),
			ev:    Event{Kind: EventVerified, At: at(2 * time.Minute), Verification: checks(verify.StatusInconclusive, verify.StatusFail)},
			state: StateActing, rung: 2, effects: []string{"save", "announce", "act:scale_bounce"},
		},
		{
			name:  "a failed verification of the last rung: people take over",
			inc:   verifying(1, time.Minute),
			ev:    Event{Kind: EventVerified, At: at(2 * time.Minute), Verification: checks(verify.StatusInconclusive, verify.StatusFail)},
			state: StateEscalated, rung: 2, effects: []string{"save", "announce", "save", "save", "page:oncall"},
		},
		{
			name:  "item 9: a failed afterAction task pages now, and verification goes on",
			inc:   verifying(0, time.Minute),
			ev:    Event{Kind: EventTasksRan, At: at(2 * time.Minute), Phase: PhaseAfterAction, Tasks: []Task{{Name: "flush", Result: "failed"}}},
			state: StateVerifying, effects: []string{"save", "save", "page:oncall"},
		},
		{
			name: "afterRecovery tasks succeeded: resolving, pages resolved before the incident is resolved (item 11)",
			inc: with(verifying(0, time.Minute), func(i *Incident) {
				i.Pages = []Page{{Level: "oncall", Receivers: []string{"p"}}}
			}),
			ev:    Event{Kind: EventTasksRan, At: at(2 * time.Minute), Phase: PhaseAfterRecovery},
			state: StateResolving, effects: []string{"save", "resolve_pages"},
			check: func(t *testing.T, _, _ *Incident, fx []Effect) {
				if !slices.Equal(fx[1].Levels, []string{"oncall"}) {
					t.Errorf("resolve levels %v", fx[1].Levels)
				}
			},
		},
		{
			name:  "no afterAction task was due: nothing changed, nothing is written",
			inc:   verifying(0, time.Minute),
			ev:    Event{Kind: EventTasksRan, At: at(2 * time.Minute), Phase: PhaseAfterAction},
			state: StateVerifying, effects: nil,
			check: func(t *testing.T, before, after *Incident, _ []Effect) {
				if !reflect.DeepEqual(before, after) {
					t.Errorf("the incident changed:\n%+v\nwant\n%+v", after, before)
				}
			},
		},
		{
			name:  "a failed afterRecovery task escalates",
			inc:   verifying(0, time.Minute),
			ev:    Event{Kind: EventTasksRan, At: at(2 * time.Minute), Phase: PhaseAfterRecovery, Tasks: []Task{{Name: "flush", Result: "failed"}}},
			state: StateEscalated, effects: []string{"save", "save", "page:oncall"},
		},
		{
			name: "item 11: pages resolved: only now resolved",
			inc:  with(verifying(0, time.Minute), func(i *Incident) { i.State, i.ResolvedAt = StateResolving, at(2*time.Minute) }),
			ev:   Event{Kind: EventPagesResolved, At: at(2 * time.Minute)}, state: StateResolved, effects: []string{"save", "announce"},
		},
		{
			name: "item 11: a restart while resolving resolves the pages again",
			inc:  with(verifying(0, time.Minute), func(i *Incident) { i.State = StateResolving }),
			ev:   Event{Kind: EventStart, At: at(3 * time.Minute)}, state: StateResolving, effects: []string{"resolve_pages"},
		},
		{
			name: "resolving: no page falls due",
			inc:  with(verifying(0, time.Minute), func(i *Incident) { i.State = StateResolving }),
			ev:   Event{Kind: EventTick, At: at(30 * time.Minute)}, state: StateResolving,
		},
		{
			name: "a resolved alert of an escalated incident resolves it when it was the last; its pages are resolved first",
			inc: with(fixingForward(), func(i *Incident) {
				i.Pages = []Page{{Level: "oncall", Receivers: []string{"p"}}}
			}),
			ev:    Event{Kind: EventAlertResolved, At: at(3 * time.Minute), Key: "a@1"},
			state: StateResolving, effects: []string{"save", "resolve_pages"},
		},
		{
			name: "an incident that paged nobody is resolved at once, in one write",
			inc:  fixingForward(), ev: Event{Kind: EventAlertResolved, At: at(3 * time.Minute), Key: "a@1"},
			state: StateResolved, effects: []string{"save", "announce"},
		},
		{
			name: "a resolved alert while verifying is one more signal, not a resolution",
			inc:  verifying(0, time.Minute), ev: Event{Kind: EventAlertResolved, At: at(3 * time.Minute), Key: "a@1"},
			state: StateVerifying, effects: []string{"save_soon"},
		},
		{
			name: "item 1: service_down joining a fix-forward incident takes it over and rolls back",
			inc:  fixingForward(),
			ev: Event{Kind: EventAlertJoined, At: at(time.Minute), Alert: Alert{Key: "b@1", Name: "Down"},
				Decision: ptr(decision(policy.OutcomeRollback, policy.ReasonCriterionMet)), Plan: &rollbackPlan},
			state: StateActing, effects: []string{"save", "keep_evidence", "act:rollback"},
			check: func(t *testing.T, _, after *Incident, _ []Effect) {
				if after.Decision.Outcome != policy.OutcomeRollback || !slices.Equal(after.Targets, []int64{4, 3}) {
					t.Errorf("decision %s, targets %v", after.Decision.Outcome, after.Targets)
				}
			},
		},
		{
			name: "item 1: a rollback joining an escalated incident (the fix-forward annotation expired) acts",
			inc: with(fixingForward(), func(i *Incident) {
				i.Decision = decision(policy.OutcomeFixForward, policy.ReasonFixForwardAnnotation)
			}),
			ev: Event{Kind: EventAlertJoined, At: at(time.Minute), Alert: Alert{Key: "a@2", Name: "Down"},
				Decision: ptr(decision(policy.OutcomeRollback, policy.ReasonCriterionMet)), Plan: &rollbackPlan},
			state: StateActing, effects: []string{"save", "keep_evidence", "act:rollback"},
		},
		{
			name: "item 1: the fix-forward annotation expired: decided again while the alert fires, the incident rolls back",
			inc: with(fixingForward(), func(i *Incident) {
				i.Decision = decision(policy.OutcomeFixForward, policy.ReasonFixForwardAnnotation)
			}),
			ev:    Event{Kind: EventRedecided, At: at(time.Minute), Decision: ptr(decision(policy.OutcomeRollback, policy.ReasonCriterionMet)), Plan: &rollbackPlan},
			state: StateActing, effects: []string{"save", "keep_evidence", "act:rollback"},
			check: func(t *testing.T, _, after *Incident, _ []Effect) {
				if len(after.Alerts) != 1 || after.Decision.Outcome != policy.OutcomeRollback {
					t.Errorf("alerts %d, decision %s", len(after.Alerts), after.Decision.Outcome)
				}
			},
		},
		{
			name: "decided again to fix forward: nothing changes, the budget place goes back",
			inc: with(fixingForward(), func(i *Incident) {
				i.Decision = decision(policy.OutcomeFixForward, policy.ReasonFixForwardAnnotation)
			}),
			ev:    Event{Kind: EventRedecided, At: at(time.Minute), Decision: ptr(decision(policy.OutcomeFixForward, policy.ReasonFixForwardAnnotation))},
			state: StateEscalated, effects: []string{"release_budget"},
		},
		{
			name: "a rollback joining an incident already rolling back joins; the engine kept no budget place for it",
			inc:  verifying(0, time.Minute),
			ev: Event{Kind: EventAlertJoined, At: at(time.Minute), Alert: Alert{Key: "b@1", Name: "Down"},
				Decision: ptr(decision(policy.OutcomeRollback, policy.ReasonCriterionMet)), Plan: &rollbackPlan},
			state: StateVerifying, effects: []string{"save_soon"},
		},
		{
			name: "a rollback joining after the automatic rungs failed does not start them again",
			inc:  with(verifying(1, time.Minute), func(i *Incident) { i.State = StateEscalated }),
			ev: Event{Kind: EventAlertJoined, At: at(time.Minute), Alert: Alert{Key: "b@1", Name: "Down"},
				Decision: ptr(decision(policy.OutcomeRollback, policy.ReasonCriterionMet)), Plan: &rollbackPlan},
			state: StateEscalated, rung: 1, effects: []string{"save_soon"},
		},
		{
			name: "a fix-forward alert joining a fix-forward incident only joins",
			inc:  fixingForward(),
			ev: Event{Kind: EventAlertJoined, At: at(time.Minute), Alert: Alert{Key: "b@1", Name: "Slow"},
				Decision: ptr(decision(policy.OutcomeFixForward, policy.ReasonCriterionMet))},
			state: StateEscalated, effects: []string{"save_soon"},
		},
		{
			name: "item 8: an alert handed over again is counted once",
			inc:  alerting(fixingForward(), 3, 0),
			ev: Event{Kind: EventAlertJoined, At: at(time.Minute), Alert: Alert{Key: "k2", Name: "Slow"},
				Decision: ptr(decision(policy.OutcomeFixForward, policy.ReasonCriterionMet))},
			state: StateEscalated,
			check: counts(3, 0, 3),
		},
		{
			name: "item 8: an alert joining already resolved counts its resolution with it",
			inc:  alerting(fixingForward(), 3, 0),
			ev: Event{Kind: EventAlertJoined, At: at(time.Minute), Alert: Alert{Key: "new", Name: "Slow", ResolvedAt: at(time.Minute)},
				Decision: ptr(decision(policy.OutcomeFixForward, policy.ReasonCriterionMet))},
			state: StateEscalated, effects: []string{"save_soon"},
			check: counts(4, 1, 4),
		},
		{
			name: "item 8: an alert handed over again, now resolved, counts its resolution once",
			inc:  alerting(fixingForward(), 3, 2),
			ev: Event{Kind: EventAlertJoined, At: at(time.Minute), Alert: Alert{Key: "k2", Name: "Slow", ResolvedAt: at(time.Minute)},
				Decision: ptr(decision(policy.OutcomeFixForward, policy.ReasonCriterionMet))},
			state: StateResolved, effects: []string{"save", "announce"},
			check: counts(3, 3, 3),
		},
		{
			name: "item 8: a resolution handed over again is counted once",
			inc:  alerting(fixingForward(), 3, 1),
			ev:   Event{Kind: EventAlertResolved, At: at(time.Minute), Key: "k0"}, state: StateEscalated,
			check: counts(3, 1, 3),
		},
		{
			name: "item 8: a resolution of no alert of the incident is not counted",
			inc:  alerting(fixingForward(), 3, 1),
			ev:   Event{Kind: EventAlertResolved, At: at(time.Minute), Key: "other"}, state: StateEscalated,
			check: counts(3, 1, 3),
		},
		{
			name: "item 8: alerts beyond those kept whole are counted, and kept ones that resolve make room",
			inc:  alerting(fixingForward(), 3*MaxAlertsKept, 0),
			ev:   Event{Kind: EventAlertResolved, At: at(time.Minute), Key: "k7"}, state: StateEscalated,
			effects: []string{"save_soon"},
			check: func(t *testing.T, before, after *Incident, fx []Effect) {
				counts(3*MaxAlertsKept, 1, MaxAlertsKept-1)(t, before, after, fx)
				if after.HasAlert("k7") != true || !after.HasAlert(fmt.Sprintf("k%d", 3*MaxAlertsKept-1)) {
					t.Error("an alert not kept whole no longer belongs to the incident")
				}
				if after.Timeline[len(after.Timeline)-1].What != "alert Slow resolved" {
					t.Errorf("timeline ends %q", after.Timeline[len(after.Timeline)-1].What)
				}
			},
		},
		{
			name:  "item 8: the last resolution, of an alert not kept whole, resolves the incident",
			inc:   alerting(fixingForward(), 3*MaxAlertsKept, 3*MaxAlertsKept-1),
			ev:    Event{Kind: EventAlertResolved, At: at(time.Minute), Key: fmt.Sprintf("k%d", 3*MaxAlertsKept-1)},
			state: StateResolved, effects: []string{"save", "announce"},
			check: counts(3*MaxAlertsKept, 3*MaxAlertsKept, alertsKeptFirst),
		},
		{
			name: "item 8: a version-2 record, every alert kept whole, is counted and resolves on its last alert",
			inc: &Incident{SchemaVersion: 2, ID: "i", State: StateEscalated, StartedAt: t0,
				Decision: decision(policy.OutcomeFixForward, policy.ReasonCriterionMet),
				Alerts:   []Alert{{Key: "a@1", Name: "Slow", ResolvedAt: t0}, {Key: "b@1", Name: "Slow"}, {Key: "a@1", Name: "Slow"}}},
			ev:    Event{Kind: EventAlertResolved, At: at(time.Minute), Key: "b@1"},
			state: StateResolved, effects: []string{"save", "announce"},
			check: counts(2, 2, 2),
		},
		{
			name: "an alert already in the incident joins once",
			inc:  fixingForward(),
			ev: Event{Kind: EventAlertJoined, At: at(time.Minute), Alert: Alert{Key: "a@1", Name: "Slow"},
				Decision: ptr(decision(policy.OutcomeRollback, policy.ReasonCriterionMet)), Plan: &rollbackPlan},
			state: StateEscalated,
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := tc.inc.clone()
			after, fx := Next(tc.inc, tc.ev, rules)
			if after.State != tc.state || after.Rung != tc.rung {
				t.Errorf("state %s rung %d, want %s rung %d\n%s", after.State, after.Rung, tc.state, tc.rung, after.Render())
			}
			if got := effectKinds(fx); !slices.Equal(got, tc.effects) {
				t.Errorf("effects %q, want %q", got, tc.effects)
			}
			if tc.inc.State != before.State || len(tc.inc.Timeline) != len(before.Timeline) || len(tc.inc.Pages) != len(before.Pages) {
				t.Error("Next changed the incident it was given")
			}
			if tc.check != nil {
				tc.check(t, before, after, fx)
			}
		})
	}
}

func ptr[T any](v T) *T { return &v }

// alerting has n alerts k0, k1 ... join inc, of which the first resolved
// are resolved.
func alerting(inc *Incident, n, resolved int) *Incident {
	inc.Alerts, inc.AlertsJoined = nil, 0
	for k := range n {
		inc.AddAlert(Alert{Key: fmt.Sprintf("k%d", k), Name: "Slow"})
	}
	for k := range resolved {
		inc.resolveAlert(fmt.Sprintf("k%d", k), t0)
	}
	return inc
}

// counts checks the incident's alert counts and how many it keeps whole.
func counts(joined, resolved, kept int) func(t *testing.T, _, after *Incident, _ []Effect) {
	return func(t *testing.T, _, after *Incident, _ []Effect) {
		t.Helper()
		if after.AlertsJoined != joined || after.AlertsResolved != resolved || len(after.Alerts) != kept {
			t.Errorf("alerts: %d joined, %d resolved, %d kept whole; want %d, %d, %d",
				after.AlertsJoined, after.AlertsResolved, len(after.Alerts), joined, resolved, kept)
		}
	}
}

func TestRungs(t *testing.T) {
	for _, tc := range []struct {
		plan Plan
		want []actuator.Kind
	}{
		{Plan{Targets: []int64{4, 3}}, []actuator.Kind{actuator.KindRollback, actuator.KindRollback}},
		{Plan{Targets: []int64{4}, ScaleBounce: true}, []actuator.Kind{actuator.KindRollback, actuator.KindScaleBounce}},
		{Plan{Targets: []int64{4, 3}, FeatureFlag: &actuator.FlagChange{}}, []actuator.Kind{actuator.KindFeatureFlag}},
		{Plan{FeatureFlag: &actuator.FlagChange{}, ScaleBounce: true}, []actuator.Kind{actuator.KindFeatureFlag, actuator.KindScaleBounce}},
		{Plan{}, nil},
	} {
		inc := &Incident{Plan: tc.plan}
		var got []actuator.Kind
		for n := 0; ; n++ {
			k, ok := inc.RungAction(n)
			if !ok {
				break
			}
			got = append(got, k)
		}
		if !slices.Equal(got, tc.want) {
			t.Errorf("plan %+v: rungs %v, want %v", tc.plan, got, tc.want)
		}
	}
}

func TestRedecides(t *testing.T) {
	for _, tc := range []struct {
		name string
		inc  *Incident
		want bool
	}{
		{"fix forward under the annotation", with(fixingForward(), func(i *Incident) { i.Decision.Reason = policy.ReasonFixForwardAnnotation }), true},
		{"rollback-unsafe", with(fixingForward(), func(i *Incident) { i.Decision.Reason = policy.ReasonRollbackUnsafe }), true},
		{"a non-critical alert's rule", fixingForward(), false},
		{"every alert resolved", with(fixingForward(), func(i *Incident) {
			i.Decision.Reason = policy.ReasonFixForwardAnnotation
			i.Alerts[0].ResolvedAt = t0
		}), false},
		{"rolling back", rollingBack(), false},
	} {
		if got := tc.inc.Redecides(); got != tc.want {
			t.Errorf("%s: Redecides() = %v, want %v", tc.name, got, tc.want)
		}
	}
}

// TestManyAlertsStayBounded: a DaemonSet's per-node alerts, thousands of
// them, join one incident one by one and resolve; the record stays small,
// each join and resolution is counted once, and the last resolution
// resolves the incident.
func TestManyAlertsStayBounded(t *testing.T) {
	const n = 5000
	inc := fixingForward()
	inc.Alerts = nil
	var fx []Effect
	for k := range n {
		ev := Event{Kind: EventAlertJoined, At: at(time.Second), Decision: ptr(decision(policy.OutcomeFixForward, policy.ReasonCriterionMet)),
			Alert: Alert{Key: fmt.Sprintf("node-%d@1", k), Name: "NodeAgentDown", Labels: map[string]string{"node": fmt.Sprintf("node-%d", k)}}}
		inc, _ = Next(inc, ev, rules)
		// Handed over twice: the second is no join.
		if inc, fx = Next(inc, ev, rules); len(fx) != 0 {
			t.Fatalf("a join handed over again has effects %q", effectKinds(fx))
		}
	}
	full, err := json.Marshal(inc)
	if err != nil {
		t.Fatal(err)
	}
	for k := range n {
		ev := Event{Kind: EventAlertResolved, At: at(time.Minute), Key: fmt.Sprintf("node-%d@1", k)}
		inc, fx = Next(inc, ev, rules)
		if inc, _ = Next(inc, ev, rules); inc.State == StateResolved && k < n-1 {
			t.Fatalf("resolved after %d of %d resolutions", k+1, n)
		}
	}
	if inc.State != StateResolved || !slices.Equal(effectKinds(fx), []string{"save", "announce"}) {
		t.Fatalf("after the last resolution: state %s, effects %q", inc.State, effectKinds(fx))
	}
	if inc.AlertsJoined != n || inc.AlertsResolved != n || len(inc.Alerts) != alertsKeptFirst {
		t.Errorf("%d joined, %d resolved, %d kept whole; want %d, %d, %d", inc.AlertsJoined, inc.AlertsResolved, len(inc.Alerts), n, n, alertsKeptFirst)
	}
	// The ledger is 8 bytes an alert (in base64, 32/3); the rest is bounded.
	if bound := n*32/3 + 16<<10; len(full) > bound {
		t.Errorf("the record of %d alerts is %d bytes, over %d", n, len(full), bound)
	}
	// A line for each alert kept whole, one a power of ten.
	if len(inc.Timeline) > 2*MaxAlertsKept+10 {
		t.Errorf("timeline of %d lines:\n%s", len(inc.Timeline), inc.Render())
	}
	t.Logf("%d alerts: record %d bytes, timeline %d lines", n, len(full), len(inc.Timeline))
}
