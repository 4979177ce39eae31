package policy_test

import (
	"slices"
	"strings"
	"testing"

	"github.com/autorollbackd/autorollbackd/internal/kinds"
	"github.com/autorollbackd/autorollbackd/internal/policy"
)

// FuzzCompileMatchers feeds arbitrary matcher strings, CEL conditions and
// name templates to Compile, and arbitrary alert-matchers annotations to
// the workload. Compile must not panic and must return either an error or
// a policy that resolves and evaluates without panicking and gives a known
// outcome and reason; Screen must agree with Evaluate; and the
// alert-matchers check must give a one-line detail.
func FuzzCompileMatchers(f *testing.F) {
	for _, seed := range []struct{ matcher, when, tmpl, annotation string }{
		{`impact="service_down"`, ``, ``, ``},
		{`severity=~"critical|page"`, `alert.labels.severity == "critical"`, `{{ .Labels.deployment }}`, `{severity="critical"}`},
		{`env!="staging"`, `now - alert.startsAt > duration("5m")`, `{{ .Labels.pod | reReplaceAll "-[a-z0-9]+$" "" }}`, `team=~"pay.*", severity!="info"`},
		{`team!~"^$"`, `workload.labels.tier == "frontend"`, `{{ template "x" }}`, `{team="payments"}`},
		{`severity=~"("`, `alert.labels.severity ==`, `{{`, `{team=~"("}`},
		{`=`, `1`, `{{ .Nope }}`, `{}`},
		{`{a="b"}`, `alert.labels`, `{{ range .Labels }}{{ . }}{{ end }}`, `team`},
		{"a=\"\\\"\"", `[1,2,3].all(x, [1,2,3].all(y, x < y))`, `{{ reReplaceAll "(" "" "x" }}`, "{team=\"a\nb\"}"},
		{`a=~".*"`, `has(alert.annotations.x) || workload.revision > 3`, `{{ define "x" }}{{ template "x" }}{{ end }}{{ template "x" }}`, "a\nb=~\"\n\""},
	} {
		f.Add(seed.matcher, seed.when, seed.tmpl, seed.annotation)
	}
	reasons, outcomes := policy.Reasons(), policy.Outcomes()
	f.Fuzz(func(t *testing.T, matcher, when, tmpl, annotation string) {
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
		in.Workload.Annotations[kinds.AnnotationAlertMatchers] = annotation
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
		s := p.Screen(in)
		if n := len(s.Checks); n > len(d.Checks) || !slices.Equal(s.Checks, d.Checks[:n]) || (s.Outcome == policy.OutcomeRefuse) != (d.Outcome == policy.OutcomeRefuse) {
			t.Fatalf("Screen differs from Evaluate:\n%s\n%s", s, d)
		}
		for _, c := range d.Checks {
			if c.Name == "alert matchers" && strings.Contains(c.Detail, "\n") {
				t.Fatalf("alert matchers detail spans lines: %q", c.Detail)
			}
		}
	})
}
