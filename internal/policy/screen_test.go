package policy_test

import (
	"slices"
	"testing"

	"github.com/autorollbackd/autorollbackd/internal/kinds"
	"github.com/autorollbackd/autorollbackd/internal/policy"
)

// targetChecks is how many checks Screen runs: the first ones of Evaluate.
const targetChecks = 7

// TestScreen checks Screen against Evaluate on every row of the Evaluate
// table: the same refusal, or no outcome when Evaluate does not refuse.
func TestScreen(t *testing.T) {
	for _, row := range evalRows() {
		t.Run(row.name, func(t *testing.T) {
			cfg := policy.DefaultConfig()
			if row.cfg != nil {
				row.cfg(&cfg)
			}
			p, err := policy.Compile(cfg)
			if err != nil {
				t.Fatalf("Compile: %v", err)
			}
			in := baseInput()
			if row.in != nil {
				row.in(&in)
			}
			want := p.Evaluate(in)
			got := p.Screen(in)
			if len(got.Checks) != targetChecks || !slices.Equal(got.Checks, want.Checks[:targetChecks]) {
				t.Errorf("Checks =\n%v\nwant the target checks of Evaluate:\n%v", got.Checks, want.Checks[:targetChecks])
			}
			if got.Target != want.Target || got.Rule != "" || got.Criterion != "" || got.DryRun {
				t.Errorf("Screen = %+v, want target %s and no rule", got, want.Target)
			}
			if want.Outcome != policy.OutcomeRefuse {
				if got.Outcome != "" || got.Reason != "" || got.Message == "" {
					t.Errorf("Screen = %+v, want no outcome, no reason and a message", got)
				}
				return
			}
			if got.Outcome != want.Outcome || got.Reason != want.Reason || got.Message != want.Message {
				t.Errorf("Screen = %s, %s, %q\nwant %s, %s, %q", got.Outcome, got.Reason, got.Message, want.Outcome, want.Reason, want.Message)
			}
		})
	}
}

// TestScreenRefusals covers the refusals the Evaluate table has no row for.
func TestScreenRefusals(t *testing.T) {
	p, err := policy.Compile(policy.DefaultConfig())
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name   string
		in     func(*policy.Input)
		reason policy.Reason
		msg    string
	}{
		{"opt-in label false", func(in *policy.Input) { in.Workload.Labels[policy.DefaultOptInLabel] = `fa"lse` }, policy.ReasonNotOptedIn,
			`refuse to act on Deployment production/event-service: label autorollback.io/enabled is "fa\"lse", not "true"`},
		{"opt-in label missing", func(in *policy.Input) { delete(in.Workload.Labels, policy.DefaultOptInLabel) }, policy.ReasonNotOptedIn,
			`refuse to act on Deployment production/event-service: label autorollback.io/enabled is not set; set it to "true" to opt in`},
		{"no workload", func(in *policy.Input) { in.Workload = nil }, policy.ReasonWorkloadNotFound,
			"refuse to act on Deployment production/event-service: Deployment production/event-service does not exist"},
		{"facts of another workload", func(in *policy.Input) { in.Workload.Name = "other" }, policy.ReasonWorkloadNotFound,
			"refuse to act on Deployment production/event-service: the workload facts are for Deployment production/other, not for Deployment production/event-service"},
		{"no namespace", func(in *policy.Input) { in.Target.Namespace = "" }, policy.ReasonNoTarget,
			`refuse to act: target "Deployment /event-service" is incomplete or of an unknown kind`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			in := baseInput()
			tc.in(&in)
			got, want := p.Screen(in), p.Evaluate(in)
			if got.Outcome != policy.OutcomeRefuse || got.Reason != tc.reason || got.Message != tc.msg {
				t.Errorf("Screen = %s, %s, %q\nwant refuse, %s, %q", got.Outcome, got.Reason, got.Message, tc.reason, tc.msg)
			}
			if got.Reason != want.Reason || got.Message != want.Message || !slices.Equal(got.Checks, want.Checks[:targetChecks]) {
				t.Errorf("Screen differs from Evaluate:\n%s\n%s", got, want)
			}
		})
	}
}

func BenchmarkScreen(b *testing.B) {
	p, err := policy.Compile(policy.DefaultConfig())
	if err != nil {
		b.Fatal(err)
	}
	in := baseInput()
	delete(in.Workload.Labels, policy.DefaultOptInLabel)
	b.ReportAllocs()
	for b.Loop() {
		if d := p.Screen(in); d.Reason != policy.ReasonNotOptedIn {
			b.Fatalf("reason %s", d.Reason)
		}
	}
}

// BenchmarkScreenAlertMatchers screens an alert that the workload's
// alert-matchers annotation, with a regular expression, admits: the
// annotation is read for every alert at intake.
func BenchmarkScreenAlertMatchers(b *testing.B) {
	cfg := policy.DefaultConfig()
	cfg.Origin.Label = "namespace"
	p, err := policy.Compile(cfg)
	if err != nil {
		b.Fatal(err)
	}
	in := baseInput()
	in.Alert.Labels["team"] = "payments"
	in.Workload.Annotations[kinds.AnnotationAlertMatchers] = `{team="payments", severity=~"critical|page"}`
	in.Origin = policy.Origin{Sender: "payments", Namespaces: []string{"payments", "production"}}
	b.ReportAllocs()
	for b.Loop() {
		if d := p.Screen(in); d.Outcome != "" {
			b.Fatalf("%s", d)
		}
	}
}
