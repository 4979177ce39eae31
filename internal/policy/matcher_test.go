package policy_test

import (
	"testing"

	"github.com/autorollbackd/autorollbackd/internal/policy"
)

// TestMatchers checks that rule matchers mean what they mean in Alertmanager:
// regexps are anchored, and a missing label is the empty string.
func TestMatchers(t *testing.T) {
	for _, tc := range []struct {
		matcher string
		labels  map[string]string
		match   bool
	}{
		{`severity=~"critical|page"`, map[string]string{"severity": "critical"}, true},
		{`severity=~"critical|page"`, map[string]string{"severity": "page"}, true},
		{`severity=~"critical|page"`, map[string]string{"severity": "critical-ish"}, false}, // anchored
		{`severity=~"critical|page"`, map[string]string{}, false},
		{`severity!~"info|warning"`, map[string]string{"severity": "critical"}, true},
		{`severity!~"info|warning"`, map[string]string{"severity": "info"}, false},
		{`env!="staging"`, map[string]string{"env": "production"}, true},
		{`env!="staging"`, map[string]string{"env": "staging"}, false},
		{`env!="staging"`, map[string]string{}, true}, // missing is "", which is not "staging"
		{`team=""`, map[string]string{}, true},
		{`team=""`, map[string]string{"team": "web"}, false},
		{`team!=""`, map[string]string{}, false},
		{`team=~".*"`, map[string]string{}, true},
		{`team=~".+"`, map[string]string{}, false},
		{`service = event-service`, map[string]string{"service": "event-service"}, true}, // unquoted, with spaces
	} {
		t.Run(tc.matcher+" on "+labelsString(tc.labels), func(t *testing.T) {
			cfg := policy.DefaultConfig()
			cfg.Rules = []policy.Rule{{Name: "r", Matchers: []string{tc.matcher}, Criterion: "service_down", Outcome: policy.OutcomeFixForward}}
			p, err := policy.Compile(cfg)
			if err != nil {
				t.Fatalf("Compile: %v", err)
			}
			in := baseInput()
			in.Alert.Labels = tc.labels
			d := p.Evaluate(in)
			if got := d.Rule == "r"; got != tc.match {
				t.Errorf("matched = %v, want %v\n%s", got, tc.match, d)
			}
		})
	}
}

func TestAllMatchersMustMatch(t *testing.T) {
	cfg := policy.DefaultConfig()
	cfg.Rules = []policy.Rule{{Name: "r", Matchers: []string{`impact="service_down"`, `severity=~"critical|page"`}, Criterion: "service_down", Outcome: policy.OutcomeFixForward}}
	p, err := policy.Compile(cfg)
	if err != nil {
		t.Fatal(err)
	}
	in := baseInput()
	if d := p.Evaluate(in); d.Rule != "r" {
		t.Errorf("both match: rule %q, want r", d.Rule)
	}
	in.Alert.Labels["severity"] = "warning"
	if d := p.Evaluate(in); d.Rule != "" || d.Reason != policy.ReasonNoMatchingRule {
		t.Errorf("one of two matches: rule %q reason %s, want none", d.Rule, d.Reason)
	}
}

func labelsString(m map[string]string) string {
	if len(m) == 0 {
		return "{}"
	}
	s := "{"
	for k, v := range m {
		s += k + "=" + v
	}
	return s + "}"
}
