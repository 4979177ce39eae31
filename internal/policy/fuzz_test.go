package policy_test

import (
	"slices"
	"testing"

	"github.com/autorollbackd/autorollbackd/internal/policy"
)

// FuzzCompileMatchers feeds arbitrary matcher strings, CEL conditions and
// name templates to Compile. Compile must not panic and must return either
// an error or a policy that resolves and evaluates without panicking and
// gives a known outcome and reason.
func FuzzCompileMatchers(f *testing.F) {
	for _, seed := range []struct{ matcher, when, tmpl string }{
		{`impact="service_down"`, ``, ``},
		{`severity=~"critical|page"`, `alert.labels.severity == "critical"`, `{{ .Labels.deployment }}`},
		{`env!="staging"`, `now - alert.startsAt > duration("5m")`, `{{ .Labels.pod | reReplaceAll "-[a-z0-9]+$" "" }}`},
		{`team!~"^$"`, `workload.labels.tier == "frontend"`, `{{ template "x" }}`},
		{`severity=~"("`, `alert.labels.severity ==`, `{{`},
		{`=`, `1`, `{{ .Nope }}`},
		{`{a="b"}`, `alert.labels`, `{{ range .Labels }}{{ . }}{{ end }}`},
		{"a=\"\\\"\"", `[1,2,3].all(x, [1,2,3].all(y, x < y))`, `{{ reReplaceAll "(" "" "x" }}`},
		{`a=~".*"`, `has(alert.annotations.x) || workload.revision > 3`, `{{ define "x" }}{{ template "x" }}{{ end }}{{ template "x" }}`},
	} {
		f.Add(seed.matcher, seed.when, seed.tmpl)
	}
	reasons, outcomes := policy.Reasons(), policy.Outcomes()
	f.Fuzz(func(t *testing.T, matcher, when, tmpl string) {
		cfg := policy.DefaultConfig()
		cfg.Rules = append([]policy.Rule{{
			Name: "fuzz", Matchers: []string{matcher}, Criterion: "service_down", Outcome: policy.OutcomeRollback, When: when,
			Target: policy.RuleTarget{Kind: policy.KindDeployment, NameTemplate: tmpl},
		}}, cfg.Rules...)
		p, err := policy.Compile(cfg)
		if err != nil {
			if p != nil {
				t.Fatalf("Compile returned a policy and an error: %v", err)
			}
			return
		}
		in := baseInput()
		in.Alert.Labels["pod"] = "event-service-7d9f8b6c4-x2x7q"
		ref, err := p.Resolve(in.Alert)
		if (err == nil) == ref.IsZero() {
			t.Fatalf("Resolve = %v, %v: want exactly one of a target and an error", ref, err)
		}
		if err == nil {
			in.Target, in.Workload.Ref = ref, ref
		} else {
			in.Target = policy.Ref{}
		}
		d := p.Evaluate(in)
		if !slices.Contains(outcomes, d.Outcome) || !slices.Contains(reasons, d.Reason) || d.Message == "" {
			t.Fatalf("unknown outcome or reason, or no message: %s", d)
		}
		if d.Outcome == policy.OutcomeRollback && d.Reason != policy.ReasonCriterionMet {
			t.Fatalf("rollback with reason %s", d.Reason)
		}
	})
}
