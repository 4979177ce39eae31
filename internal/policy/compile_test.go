package policy_test

import (
	"encoding/json"
	"errors"
	"os"
	"reflect"
	"strings"
	"testing"
	"time"

	"sigs.k8s.io/yaml"

	"github.com/autorollbackd/autorollbackd/internal/helm"
	"github.com/autorollbackd/autorollbackd/internal/policy"
)

func TestCompileErrors(t *testing.T) {
	for _, tc := range []struct {
		name string
		cfg  func(*policy.Config)
		want string // the whole error text, one problem a line
	}{
		{"bad matcher syntax", func(c *policy.Config) { c.Rules[2].Matchers = []string{"impact"} },
			`rules[2].matchers[0]: parse matcher "impact": bad matcher format: impact`},
		{"bad matcher regexp", func(c *policy.Config) { c.Rules[0].Matchers = append(c.Rules[0].Matchers, `severity=~"("`) },
			"rules[0].matchers[1]: parse matcher \"severity=~\\\"(\\\"\": error parsing regexp: missing closing ): `^(?:()$`"},
		{"no matchers", func(c *policy.Config) { c.Rules[1].Matchers = nil },
			`rules[1].matchers: must have at least one matcher`},
		{"CEL syntax error", func(c *policy.Config) { c.Rules[0].When = `alert.labels.severity ==` },
			`rules[0].when: 1:25: Syntax error: mismatched input '<EOF>' expecting {'[', '{', '(', '.', '-', '!', 'true', 'false', 'null', NUM_FLOAT, NUM_INT, NUM_UINT, STRING, BYTES, IDENTIFIER}`},
		{"CEL misspelt field", func(c *policy.Config) { c.Rules[0].When = `alert.lables.severity == "critical"` },
			`rules[0].when: 1:6: undefined field 'lables'`},
		{"CEL type error", func(c *policy.Config) { c.Rules[0].When = `workload.revision > "3"` },
			`rules[0].when: 1:19: found no matching overload for '_>_' applied to '(int, string)'`},
		{"CEL not bool", func(c *policy.Config) { c.Rules[3].When = `alert.labels.severity` },
			`rules[3].when: must be a bool expression, got string`},
		{"CEL undeclared variable", func(c *policy.Config) { c.Rules[0].When = `pod.name == "x"` },
			`rules[0].when: 1:1: undeclared reference to 'pod' (in container '')`},
		{"duplicate rule name", func(c *policy.Config) { c.Rules[4].Name = "service-down" },
			`rules[4].name: duplicate rule name "service-down" (also rules[0])`},
		{"empty rule name", func(c *policy.Config) { c.Rules[0].Name = "" },
			`rules[0].name: must not be empty`},
		{"bad gitops mode", func(c *policy.Config) { c.GitOps.Mode = "pause" },
			`gitops.mode: must be escalate or pause-and-undo, got "pause"`},
		{"bad helm mode", func(c *policy.Config) { c.Helm.Mode = "rollback" },
			`helm.mode: must be undo-workload or rollback-release, got "rollback"`},
		{"bad gitops tracking label", func(c *policy.Config) { c.GitOps.ArgoCD.TrackingLabel = "a b" },
			`gitops.argocd.trackingLabel: must be a label key: name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')`},
		{"bad argocd namespace", func(c *policy.Config) { c.GitOps.ArgoCD.Namespace = "Argo" },
			`gitops.argocd.namespace: must be a namespace name: a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')`},
		{"bad outcome", func(c *policy.Config) { c.Rules[1].Outcome = "restart" },
			`rules[1].outcome: must be rollback, fix_forward or ignore, got "restart"`},
		{"escalate is not a rule outcome", func(c *policy.Config) { c.Rules[1].Outcome = policy.OutcomeEscalate },
			`rules[1].outcome: must be rollback, fix_forward or ignore, got "escalate"`},
		{"bad criterion", func(c *policy.Config) { c.Rules[0].Criterion = "Service-Down" },
			`rules[0].criterion: must match ^[a-z][a-z0-9_]*$, got "Service-Down"`},
		{"empty criterion", func(c *policy.Config) { c.Rules[0].Criterion = "" },
			`rules[0].criterion: must match ^[a-z][a-z0-9_]*$, got ""`},
		{"rollback as default outcome", func(c *policy.Config) { c.DefaultOutcome = policy.OutcomeRollback },
			`defaultOutcome: must be ignore or fix_forward, got "rollback"`},
		{"empty default outcome", func(c *policy.Config) { c.DefaultOutcome = "" },
			`defaultOutcome: must be ignore or fix_forward, got ""`},
		{"kind missing with nameLabel", func(c *policy.Config) { c.Rules[0].Target = policy.RuleTarget{NameLabel: "app"} },
			`rules[0].target.kind: is required with nameLabel or nameTemplate`},
		{"kind missing with nameTemplate", func(c *policy.Config) { c.Rules[0].Target = policy.RuleTarget{NameTemplate: "{{ .Labels.app }}"} },
			`rules[0].target.kind: is required with nameLabel or nameTemplate`},
		{"kind without a name", func(c *policy.Config) { c.Rules[0].Target = policy.RuleTarget{Kind: policy.KindStatefulSet} },
			`rules[0].target.kind: needs nameLabel or nameTemplate to name the StatefulSet`},
		{"bad kind", func(c *policy.Config) { c.Rules[0].Target = policy.RuleTarget{Kind: "Pod", NameLabel: "pod"} },
			`rules[0].target.kind: must be Deployment, StatefulSet, DaemonSet or Rollout, got "Pod"`},
		{"bad template", func(c *policy.Config) {
			c.Rules[0].Target = policy.RuleTarget{Kind: policy.KindDeployment, NameTemplate: "{{ .Labels.app "}
		}, `rules[0].target.nameTemplate: parse template: template: rules[0].target.nameTemplate:1: unclosed action`},
		{"template calls an unknown function", func(c *policy.Config) {
			c.Rules[0].Target = policy.RuleTarget{NamespaceTemplate: "{{ .Labels.ns | title }}"}
		}, `rules[0].target.namespaceTemplate: parse template: template: rules[0].target.namespaceTemplate:1: function "title" not defined`},
		{"template defines a template", func(c *policy.Config) {
			c.Rules[0].Target = policy.RuleTarget{Kind: policy.KindDeployment, NameTemplate: `{{ define "x" }}{{ template "x" }}{{ end }}{{ template "x" }}`}
		}, `rules[0].target.nameTemplate: parse template: template: rules[0].target.nameTemplate: defining templates (define "x") is not supported`},
		{"template only defines a template", func(c *policy.Config) {
			c.Rules[0].Target = policy.RuleTarget{NamespaceTemplate: `{{ define "ns" }}production{{ end }}`}
		}, `rules[0].target.namespaceTemplate: parse template: template: rules[0].target.namespaceTemplate: defining templates (define "ns") is not supported`},
		{"template ranges", func(c *policy.Config) {
			c.Rules[0].Target = policy.RuleTarget{NamespaceTemplate: `{{ range .Labels }}{{ . }}{{ end }}`}
		}, `rules[0].target.namespaceTemplate: parse template: template: rules[0].target.namespaceTemplate:1:9: range is not supported`},
		{"template calls a method", func(c *policy.Config) {
			c.Rules[0].Target = policy.RuleTarget{Kind: policy.KindDeployment, NameTemplate: `{{ .StartsAt.Format "2006" }}`}
		}, `rules[0].target.nameTemplate: parse template: template: rules[0].target.nameTemplate:1:3: calling a method (.StartsAt.Format) is not supported`},
		{"template declares a variable", func(c *policy.Config) {
			c.Rules[0].Target = policy.RuleTarget{Kind: policy.KindDeployment, NameTemplate: `{{ $app := .Labels.app }}{{ $app }}`}
		}, `rules[0].target.nameTemplate: parse template: template: rules[0].target.nameTemplate:1:3: declaring or assigning variables is not supported`},
		{"bad kind label", func(c *policy.Config) { c.DefaultTarget.KindLabels["pod"] = "Pod" },
			`defaultTarget.kindLabels.pod: must be Deployment, StatefulSet, DaemonSet or Rollout, got "Pod"`},
		{"no kind labels", func(c *policy.Config) { c.DefaultTarget.KindLabels = nil },
			`defaultTarget.kindLabels: must name at least one label`},
		{"no namespace label", func(c *policy.Config) { c.DefaultTarget.NamespaceLabel = "" },
			`defaultTarget.namespaceLabel: must be a non-empty UTF-8 label name, got ""`},
		{"overlapping allow and deny", func(c *policy.Config) { c.Namespaces.Allow = []string{"production", "kube-system"} },
			`namespaces.allow[1]: "kube-system" is also in namespaces.deny`},
		{"bad namespace name", func(c *policy.Config) { c.Namespaces.Deny = append(c.Namespaces.Deny, "Prod") },
			`namespaces.deny[3]: must be a namespace name: a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')`},
		{"bad opt-in label", func(c *policy.Config) { c.OptInLabel = "" },
			`optInLabel: must be a label key: name part must be non-empty; name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')`},
		{"origin label not UTF-8", func(c *policy.Config) { c.Origin.Label = "name\xffspace" },
			`origin.label: must be a UTF-8 label name, got "name\xffspace"`},
		{"zero window", func(c *policy.Config) { c.RecentRolloutWindow = dur(0) },
			`recentRolloutWindow: must be a positive duration, got 0s`},
		{"zero rule window", func(c *policy.Config) { c.Rules[2].RecentRolloutWindow = ptr(dur(0)) },
			`rules[2].recentRolloutWindow: must be a positive duration, got 0s`},
		{"negative rule window", func(c *policy.Config) { c.Rules[0].RecentRolloutWindow = ptr(dur(-time.Hour)) },
			`rules[0].recentRolloutWindow: must be a positive duration, got -1h0m0s`},
		{"rule window on a rule that does not roll back", func(c *policy.Config) { c.Rules[4].RecentRolloutWindow = ptr(dur(time.Hour)) },
			`rules[4].recentRolloutWindow: only applies to rules with outcome rollback, got outcome fix_forward`},
		{"bad outcome on a rule with a window is reported once", func(c *policy.Config) {
			c.Rules[0].RecentRolloutWindow = ptr(dur(time.Hour))
			c.Rules[0].Outcome = "revert"
		}, `rules[0].outcome: must be rollback, fix_forward or ignore, got "revert"`},
		{"zero cooldown", func(c *policy.Config) { c.Cooldown = dur(0) },
			`cooldown: must be a positive duration, got 0s`},
		{"negative cooldown", func(c *policy.Config) { c.Cooldown = dur(-time.Minute) },
			`cooldown: must be a positive duration, got -1m0s`},
		{"negative clock skew", func(c *policy.Config) { c.ClockSkew = dur(-time.Second) },
			`clockSkew: must not be negative, got -1s`},
		{"zero workload budget", func(c *policy.Config) { c.Budget.PerWorkloadPerHour = 0 },
			`budget.perWorkloadPerHour: must be at least 1, got 0`},
		{"zero global budget", func(c *policy.Config) { c.Budget.GlobalPerHour = -1 },
			`budget.globalPerHour: must be at least 1, got -1`},
		{"every problem is reported", func(c *policy.Config) {
			c.Cooldown = dur(0)
			c.DefaultOutcome = policy.OutcomeRollback
			c.Rules[0].Matchers[0] = "="
			c.Rules[1].When = "1"
		}, `cooldown: must be a positive duration, got 0s
defaultOutcome: must be ignore or fix_forward, got "rollback"
rules[0].matchers[0]: parse matcher "=": bad matcher format: =
rules[1].when: must be a bool expression, got int`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := policy.DefaultConfig()
			tc.cfg(&cfg)
			p, err := policy.Compile(cfg)
			if err == nil {
				t.Fatalf("Compile succeeded, want %q", tc.want)
			}
			if p != nil {
				t.Errorf("Compile returned a policy with an error")
			}
			if err.Error() != tc.want {
				t.Errorf("error:\n got %s\nwant %s", err, tc.want)
			}
			var ke *policy.KeyError
			if !errors.As(err, &ke) || !strings.HasPrefix(tc.want, ke.Key+": ") {
				t.Errorf("error %v is not a *KeyError for the first key", err)
			}
		})
	}
}

func TestCompileAccepts(t *testing.T) {
	for _, tc := range []struct {
		name string
		cfg  func(*policy.Config)
	}{
		{"defaults", func(*policy.Config) {}},
		{"zero clock skew", func(c *policy.Config) { c.ClockSkew = dur(0) }},
		{"no rules", func(c *policy.Config) { c.Rules = nil }},
		{"gitops pause-and-undo with a tracking label", func(c *policy.Config) {
			c.GitOps = policy.GitOps{Mode: policy.GitOpsPauseAndUndo, ArgoCD: policy.ArgoCD{TrackingLabel: "app.kubernetes.io/instance", Namespace: "gitops"}}
		}},
		{"fix_forward default", func(c *policy.Config) { c.DefaultOutcome = policy.OutcomeFixForward }},
		{"allow list", func(c *policy.Config) { c.Namespaces.Allow = []string{"production"} }},
		{"origin label", func(c *policy.Config) { c.Origin.Label = "namespace" }},
		{"UTF-8 origin label", func(c *policy.Config) { c.Origin.Label = "origin.namespace" }},
		{"matchers of every type", func(c *policy.Config) {
			c.Rules[0].Matchers = []string{`severity=~"critical|page"`, `env!="staging"`, `team!~"^$"`, `impact=service_down`}
		}},
		{"rule target with a template", func(c *policy.Config) {
			c.Rules[0].Target = policy.RuleTarget{Kind: policy.KindStatefulSet, NameTemplate: `{{ .Labels.pod | reReplaceAll "-[0-9]+$" "" }}`}
		}},
		{"rule target with only a namespace label", func(c *policy.Config) {
			c.Rules[0].Target = policy.RuleTarget{NamespaceLabel: "kubernetes_namespace"}
		}},
		{"rule windows longer and shorter than the global one", func(c *policy.Config) {
			c.Rules[0].RecentRolloutWindow = ptr(dur(time.Minute))
			c.Rules[1].RecentRolloutWindow = ptr(dur(72 * time.Hour))
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := policy.DefaultConfig()
			tc.cfg(&cfg)
			if _, err := policy.Compile(cfg); err != nil {
				t.Fatalf("Compile: %v", err)
			}
		})
	}
}

// lateFound are the criteria the default policy gives a recent-rollout
// window of their own.
var lateFound = map[string]time.Duration{
	"data_corruption":        24 * time.Hour,
	"security_vulnerability": 24 * time.Hour,
}

func TestDefaultConfigEncodesTheRunbook(t *testing.T) {
	cfg := policy.DefaultConfig()
	want := map[string]policy.Outcome{
		"service_down":           policy.OutcomeRollback,
		"data_corruption":        policy.OutcomeRollback,
		"security_vulnerability": policy.OutcomeRollback,
		"critical_flow_broken":   policy.OutcomeRollback,
		"non_critical":           policy.OutcomeFixForward,
	}
	if len(cfg.Rules) != len(want) {
		t.Fatalf("%d rules, want %d", len(cfg.Rules), len(want))
	}
	for _, r := range cfg.Rules {
		if want[r.Criterion] != r.Outcome {
			t.Errorf("rule %s: criterion %s has outcome %s, want %s", r.Name, r.Criterion, r.Outcome, want[r.Criterion])
		}
		if wantName := strings.ReplaceAll(r.Criterion, "_", "-"); r.Name != wantName {
			t.Errorf("rule name %q, want %q", r.Name, wantName)
		}
		if len(r.Matchers) != 1 || r.Matchers[0] != `impact="`+r.Criterion+`"` {
			t.Errorf("rule %s: matchers %q", r.Name, r.Matchers)
		}
		// Harm that is found late gets a day to be tied to the rollout;
		// outages show at once and keep the global hour.
		var window time.Duration
		if r.RecentRolloutWindow != nil {
			window = r.RecentRolloutWindow.Duration
		}
		if want := lateFound[r.Criterion]; window != want {
			t.Errorf("rule %s: recentRolloutWindow %v, want %v (0: the global one)", r.Name, window, want)
		}
	}
	if cfg.RecentRolloutWindow.Duration != time.Hour {
		t.Errorf("recentRolloutWindow = %v, want 1h", cfg.RecentRolloutWindow.Duration)
	}
	if cfg.OptInLabel != policy.DefaultOptInLabel || cfg.DefaultOutcome != policy.OutcomeIgnore || cfg.DryRun || cfg.Freeze {
		t.Errorf("unexpected defaults: %+v", cfg)
	}
}

// TestConfigRoundTrip checks that the configuration prints and reads back
// unchanged, as `check-config` prints it.
func TestConfigRoundTrip(t *testing.T) {
	cfg := policy.DefaultConfig()
	cfg.Rules[0].When = `alert.labels.severity == "critical"`
	cfg.Rules[0].Target = policy.RuleTarget{Kind: policy.KindDeployment, NameTemplate: "{{ .Labels.app }}"}
	cfg.Rules[0].RecentRolloutWindow = ptr(dur(90 * time.Minute))
	raw, err := yaml.Marshal(cfg)
	if err != nil {
		t.Fatal(err)
	}
	var back policy.Config
	if err := yaml.UnmarshalStrict(raw, &back); err != nil {
		t.Fatalf("read back:\n%s\n%v", raw, err)
	}
	if !reflect.DeepEqual(back, cfg) {
		t.Errorf("round trip changed the config:\n%s", raw)
	}
	if strings.Contains(string(raw), "nameLabel") {
		t.Errorf("empty target keys are printed:\n%s", raw)
	}
}

// TestExamplePolicyIsTheDefault keeps examples/policy.yaml equal to
// DefaultConfig.
func TestExamplePolicyIsTheDefault(t *testing.T) {
	raw, err := os.ReadFile("../../examples/policy.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var file struct {
		Policy policy.Config `json:"policy"`
	}
	if err := yaml.UnmarshalStrict(raw, &file); err != nil {
		t.Fatalf("examples/policy.yaml: %v", err)
	}
	if want := policy.DefaultConfig(); !reflect.DeepEqual(file.Policy, want) {
		got, _ := json.MarshalIndent(file.Policy, "", "  ")
		exp, _ := json.MarshalIndent(want, "", "  ")
		t.Errorf("examples/policy.yaml differs from DefaultConfig:\n%s\nwant:\n%s", got, exp)
	}
}

// TestDocsListEveryCode keeps docs/policy.md in step with the code.
func TestDocsListEveryCode(t *testing.T) {
	raw, err := os.ReadFile("../../docs/policy.md")
	if err != nil {
		t.Fatal(err)
	}
	doc := string(raw)
	for _, r := range policy.Reasons() {
		if !strings.Contains(doc, "`"+string(r)+"`") {
			t.Errorf("docs/policy.md does not mention reason `%s`", r)
		}
	}
	for _, o := range policy.Outcomes() {
		if !strings.Contains(doc, "`"+string(o)+"`") {
			t.Errorf("docs/policy.md does not mention outcome `%s`", o)
		}
	}
	for _, key := range []string{"dryRun", "freeze", "optInLabel", "namespaces.allow", "namespaces.deny", "origin.label", "recentRolloutWindow",
		"clockSkew", "cooldown", "budget.perWorkloadPerHour", "budget.globalPerHour", "defaultOutcome",
		"defaultTarget.namespaceLabel", "defaultTarget.kindLabels", "rules[].name", "rules[].matchers", "rules[].criterion",
		"rules[].outcome", "rules[].when", "rules[].recentRolloutWindow", "rules[].target.kind", "rules[].target.namespaceLabel", "rules[].target.nameLabel",
		"rules[].target.namespaceTemplate", "rules[].target.nameTemplate"} {
		if !strings.Contains(doc, "`"+key+"`") {
			t.Errorf("docs/policy.md does not document key `%s`", key)
		}
	}
}

func TestPolicyConfigIsACopy(t *testing.T) {
	cfg := policy.DefaultConfig()
	p, err := policy.Compile(cfg)
	if err != nil {
		t.Fatal(err)
	}
	cfg.Namespaces.Deny[0] = "production"
	got := p.Config()
	got.Rules[0].Matchers[0] = `impact="nothing"`
	got.DefaultTarget.KindLabels["pod"] = "Pod"

	if !reflect.DeepEqual(p.Config(), policy.DefaultConfig()) {
		t.Errorf("the policy's config changed through a copy")
	}
	if d := p.Evaluate(baseInput()); d.Outcome != policy.OutcomeRollback {
		t.Errorf("after mutating copies: %s", d)
	}
}

// TestRuleWindowIsACopy changes a rule's window through the Config a policy
// was compiled from and through the one it hands out; the policy keeps its
// own.
func TestRuleWindowIsACopy(t *testing.T) {
	cfg := policy.DefaultConfig()
	cfg.Rules[1].RecentRolloutWindow = ptr(dur(24 * time.Hour))
	p, err := policy.Compile(cfg)
	if err != nil {
		t.Fatal(err)
	}
	cfg.Rules[1].RecentRolloutWindow.Duration = time.Minute
	p.Config().Rules[1].RecentRolloutWindow.Duration = time.Minute

	if got := p.Config().Rules[1].RecentRolloutWindow; got == nil || got.Duration != 24*time.Hour {
		t.Errorf("Config().Rules[1].RecentRolloutWindow = %v, want 24h", got)
	}
	in := baseInput()
	impact("data_corruption")(&in)
	rolloutAgo(3 * time.Hour)(&in)
	if d := p.Evaluate(in); d.Outcome != policy.OutcomeRollback {
		t.Errorf("after mutating copies: %s", d)
	}
}

func TestKeyError(t *testing.T) {
	inner := errors.New("must be positive")
	err := &policy.KeyError{Key: "cooldown", Err: inner}
	if err.Error() != "cooldown: must be positive" || !errors.Is(err, inner) {
		t.Errorf("KeyError = %q, unwraps to inner: %v", err, errors.Is(err, inner))
	}
}

// TestExamplePolicyCommentedRules compiles the commented-out example rules
// of examples/policy.yaml, so the examples SREs copy do work.
func TestExamplePolicyCommentedRules(t *testing.T) {
	raw, err := os.ReadFile("../../examples/policy.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var rulesYAML strings.Builder
	for line := range strings.Lines(string(raw)) {
		if rest, ok := strings.CutPrefix(line, "    # "); ok && (strings.HasPrefix(rest, "- ") || strings.HasPrefix(rest, "  ")) {
			rulesYAML.WriteString(rest)
		}
	}
	var rules []policy.Rule
	if err := yaml.UnmarshalStrict([]byte(rulesYAML.String()), &rules); err != nil {
		t.Fatalf("commented rules:\n%s\n%v", rulesYAML.String(), err)
	}
	if len(rules) != 2 {
		t.Fatalf("found %d commented rules, want 2:\n%s", len(rules), rulesYAML.String())
	}
	cfg := policy.DefaultConfig()
	cfg.Rules = append(rules, cfg.Rules...)
	p, err := policy.Compile(cfg)
	if err != nil {
		t.Fatalf("Compile: %v", err)
	}

	in := baseInput()
	in.Workload.Labels["tier"] = "frontend"
	if d := p.Evaluate(in); d.Rule != "frontend-down-early" || d.Outcome != policy.OutcomeFixForward {
		t.Errorf("early frontend outage: %s", d)
	}
	in.Alert.StartsAt = in.Workload.RolloutStartedAt.Add(-time.Minute)
	in.Now = in.Alert.StartsAt.Add(6 * time.Minute)
	if d := p.Evaluate(in); d.Rule != "service-down" || d.Outcome != policy.OutcomeRollback {
		t.Errorf("frontend outage after 6m: %s", d)
	}

	ref, err := p.Resolve(policy.Alert{Labels: map[string]string{
		"alertname": "CheckoutErrors", "kubernetes_namespace": "production", "pod": "checkout-5d8c7b9f4-q8w2x",
	}})
	if want := (policy.Ref{Kind: policy.KindDeployment, Namespace: "production", Name: "checkout"}); err != nil || ref != want {
		t.Errorf("Resolve = %v, %v; want %v", ref, err, want)
	}
}

// TestHelmRollbackReleaseNeedsTheSDK: policy.helm.mode rollback-release
// compiles in the helm build, and is a configuration error naming the key
// in a build without the Helm SDK.
func TestHelmRollbackReleaseNeedsTheSDK(t *testing.T) {
	cfg := policy.DefaultConfig()
	cfg.Helm.Mode = policy.HelmRollbackRelease
	_, err := policy.Compile(cfg)
	if helm.SDK {
		if err != nil {
			t.Fatalf("the helm build refuses rollback-release: %v", err)
		}
		return
	}
	if err == nil || !strings.Contains(err.Error(), "helm.mode: rollback-release needs the Helm SDK") {
		t.Fatalf("a build without the Helm SDK compiled rollback-release; err = %v", err)
	}
}
