package policy_test

import (
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/autorollbackd/autorollbackd/internal/policy"
)

// TestCELCondition runs conditions on a rule placed before the default ones
// with outcome fix_forward, so a true condition shows as fix_forward from
// rule "guarded", a false one falls through to the default service-down
// rule (rollback), and a runtime error escalates.
func TestCELCondition(t *testing.T) {
	for _, tc := range []struct {
		name    string
		when    string
		in      func(*policy.Input)
		outcome policy.Outcome
		reason  policy.Reason
		rule    string
		detail  string // in the rule check's detail
	}{
		{name: "labels of alert and workload match",
			when:    `alert.labels.severity == "critical" && workload.labels.tier == "backend"`,
			outcome: policy.OutcomeFixForward, reason: policy.ReasonCriterionMet, rule: "guarded"},
		{name: "time arithmetic on now and startsAt",
			when:    `now - alert.startsAt > duration("1m") && now - workload.rolloutStartedAt < duration("1h")`,
			outcome: policy.OutcomeFixForward, reason: policy.ReasonCriterionMet, rule: "guarded"},
		{name: "workload identity and revision",
			when:    `workload.kind == "Deployment" && workload.namespace == "production" && workload.name.startsWith("event-") && workload.revision >= 7`,
			outcome: policy.OutcomeFixForward, reason: policy.ReasonCriterionMet, rule: "guarded"},
		{name: "alert fields and annotations",
			when:    `alert.status == "firing" && alert.fingerprint == "c0ffee" && alert.annotations.summary.contains("down")`,
			in:      func(in *policy.Input) { in.Alert.Annotations = map[string]string{"summary": "event-service is down"} },
			outcome: policy.OutcomeFixForward, reason: policy.ReasonCriterionMet, rule: "guarded"},
		{name: "non-matching condition falls through",
			when:    `workload.labels.tier == "frontend"`,
			outcome: policy.OutcomeRollback, reason: policy.ReasonCriterionMet, rule: "service-down"},
		{name: "has() guards a missing key",
			when:    `has(workload.labels.team) && workload.labels.team == "web"`,
			outcome: policy.OutcomeRollback, reason: policy.ReasonCriterionMet, rule: "service-down"},
		{name: "in guards a missing key",
			when:    `"team" in workload.labels`,
			outcome: policy.OutcomeRollback, reason: policy.ReasonCriterionMet, rule: "service-down"},
		{name: "missing key is a runtime error",
			when:    `workload.labels.team == "web"`,
			outcome: policy.OutcomeEscalate, reason: policy.ReasonRuleError, rule: "guarded", detail: "no such key: team"},
		{name: "runaway expression hits the cost limit",
			when:    `[1,2,3,4,5,6,7,8,9,10].all(a, [1,2,3,4,5,6,7,8,9,10].all(b, [1,2,3,4,5,6,7,8,9,10].all(c, [1,2,3,4,5,6,7,8,9,10].all(d, [1,2,3,4,5,6,7,8,9,10].all(e, a+b+c+d+e > 0)))))`,
			outcome: policy.OutcomeEscalate, reason: policy.ReasonRuleError, rule: "guarded", detail: "cost limit exceeded"},
		{name: "without a workload the condition sees empty labels and is refused anyway",
			when:    `workload.labels.tier == "backend"`,
			in:      func(in *policy.Input) { in.Workload = nil },
			outcome: policy.OutcomeRefuse, reason: policy.ReasonWorkloadNotFound, rule: "guarded", detail: "no such key: tier"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := policy.DefaultConfig()
			cfg.Rules = append([]policy.Rule{{
				Name: "guarded", Matchers: []string{`impact="service_down"`}, Criterion: "service_down",
				Outcome: policy.OutcomeFixForward, When: tc.when,
			}}, cfg.Rules...)
			p, err := policy.Compile(cfg)
			if err != nil {
				t.Fatalf("Compile: %v", err)
			}
			in := baseInput()
			if tc.in != nil {
				tc.in(&in)
			}
			d := p.Evaluate(in)
			if d.Outcome != tc.outcome || d.Reason != tc.reason || d.Rule != tc.rule {
				t.Errorf("got %s/%s rule %q, want %s/%s rule %q\n%s", d.Outcome, d.Reason, d.Rule, tc.outcome, tc.reason, tc.rule, d)
			}
			for _, c := range d.Checks {
				if c.Name == "rule" && !strings.Contains(c.Detail, tc.detail) {
					t.Errorf("rule check detail %q, want it to contain %q", c.Detail, tc.detail)
				}
			}
		})
	}
}

func TestCELConditionFalseIsExplained(t *testing.T) {
	cfg := policy.DefaultConfig()
	cfg.Rules = []policy.Rule{{Name: "late", Matchers: []string{`impact="service_down"`}, Criterion: "service_down",
		Outcome: policy.OutcomeRollback, When: `now - alert.startsAt > duration("10m")`}}
	p, err := policy.Compile(cfg)
	if err != nil {
		t.Fatal(err)
	}
	in := baseInput()
	in.Alert.StartsAt = now.Add(-time.Minute)
	d := p.Evaluate(in)
	if d.Outcome != policy.OutcomeIgnore || d.Reason != policy.ReasonNoMatchingRule {
		t.Fatalf("got %s/%s, want ignore/no_matching_rule", d.Outcome, d.Reason)
	}
	want := "no rule matched; the default outcome is ignore (the conditions of late were false)"
	i := slices.IndexFunc(d.Checks, func(c policy.Check) bool { return c.Name == "rule" })
	if i < 0 || d.Checks[i].Detail != want {
		t.Errorf("checks = %+v, want a rule check with detail %q", d.Checks, want)
	}
}
