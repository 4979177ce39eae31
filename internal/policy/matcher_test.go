package policy_test

import (
	"bytes"
	"log/slog"
	"strings"
	"testing"

	"github.com/autorollbackd/autorollbackd/internal/kinds"
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
		// Label names beyond [a-zA-Z_][a-zA-Z0-9_]*, as Alertmanager 0.27
		// and later parse them: quoted, or unquoted without ambiguity.
		{`"service.name"="checkout"`, map[string]string{"service.name": "checkout"}, true},
		{`service.name="checkout"`, map[string]string{"service.name": "checkout"}, true},
		{`"service.name"="checkout"`, map[string]string{"service_name": "checkout"}, false},
		// Valid only for the classic parser, which Alertmanager falls back to.
		{`impact=service down`, map[string]string{"impact": "service down"}, true},
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

// TestAlertMatchersAnnotationUTF8: a workload's alert matchers are parsed
// as Alertmanager parses them too, UTF-8 label names included.
func TestAlertMatchersAnnotationUTF8(t *testing.T) {
	p, err := policy.Compile(policy.DefaultConfig())
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		annotation string
		labels     map[string]string
		admit      bool
	}{
		{`{"service.name"="checkout"}`, map[string]string{"service.name": "checkout"}, true},
		{`{"service.name"="checkout"}`, map[string]string{"service.name": "cart"}, false},
		{`{"service.name"=~"check.*", team="payments"}`, map[string]string{"service.name": "checkout", "team": "payments"}, true},
	} {
		in := baseInput()
		for k, v := range tc.labels {
			in.Alert.Labels[k] = v
		}
		in.Workload.Annotations = map[string]string{kinds.AnnotationAlertMatchers: tc.annotation}
		d := p.Screen(in)
		if admitted := d.Outcome == ""; admitted != tc.admit {
			t.Errorf("annotation %s on %v: admitted %v, want %v\n%s", tc.annotation, tc.labels, admitted, tc.admit, d)
		}
	}
}

// TestClassicOnlyMatcherIsLogged: a matcher only the classic parser takes
// still works, as in Alertmanager, and the log says which key to rewrite.
func TestClassicOnlyMatcherIsLogged(t *testing.T) {
	cfg := policy.DefaultConfig()
	cfg.Rules = append([]policy.Rule{{Name: "spaced", Matchers: []string{`impact=service down`}, Criterion: "service_down", Outcome: policy.OutcomeRollback}}, cfg.Rules...)
	var buf bytes.Buffer
	if _, err := policy.Compile(cfg, policy.WithLogger(slog.New(slog.NewTextHandler(&buf, nil)))); err != nil {
		t.Fatal(err)
	}
	if out := buf.String(); !strings.Contains(out, "level=WARN") || !strings.Contains(out, "rules[0].matchers[0]") {
		t.Errorf("log does not warn about rules[0].matchers[0]:\n%s", out)
	}
}
