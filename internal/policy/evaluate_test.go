package policy_test

import (
	"slices"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/autorollbackd/autorollbackd/internal/kinds"
	"github.com/autorollbackd/autorollbackd/internal/policy"
)

var now = time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)

var eventService = policy.Ref{Kind: policy.KindDeployment, Namespace: "production", Name: "event-service"}

// baseInput is an alert that the default policy rolls back: a service_down
// alert on an opted-in Deployment whose revision 7 started rolling out 4
// minutes ago, with the alert firing 2 minutes later.
func baseInput() policy.Input {
	return policy.Input{
		Alert: policy.Alert{
			Fingerprint: "c0ffee",
			Status:      "firing",
			Labels: map[string]string{
				"alertname":  "EventServiceDown",
				"impact":     "service_down",
				"severity":   "critical",
				"namespace":  "production",
				"deployment": "event-service",
			},
			StartsAt: now.Add(-2 * time.Minute),
		},
		Target: eventService,
		Workload: &policy.Workload{
			Ref:              eventService,
			Labels:           map[string]string{policy.DefaultOptInLabel: "true", "tier": "backend"},
			Annotations:      map[string]string{},
			Revision:         7,
			RolloutStartedAt: now.Add(-4 * time.Minute),
			PreviousRevision: 6,
		},
		Usage: policy.Usage{Workload: 0, Global: 0},
		Now:   now,
	}
}

func dur(d time.Duration) metav1.Duration { return metav1.Duration{Duration: d} }

type evalRow struct {
	name       string
	cfg        func(*policy.Config)
	in         func(*policy.Input)
	outcome    policy.Outcome
	reason     policy.Reason
	rule       string
	failed     string // name of the first failing check; "" when all pass
	dryRun     bool
	absent     string // a check that must not have been evaluated
	msgContain string
}

func impact(v string) func(*policy.Input) {
	return func(in *policy.Input) { in.Alert.Labels["impact"] = v }
}

// rolloutAgo moves the rollout back by d, with the alert a minute old, so
// that only the recent-rollout guard can object.
func rolloutAgo(d time.Duration) func(*policy.Input) {
	return func(in *policy.Input) {
		in.Workload.RolloutStartedAt = now.Add(-d)
		in.Alert.StartsAt = now.Add(-time.Minute)
	}
}

// ruleWindow gives the named rule its own recentRolloutWindow.
func ruleWindow(name string, d time.Duration) func(*policy.Config) {
	return func(c *policy.Config) {
		for i := range c.Rules {
			if c.Rules[i].Name == name {
				c.Rules[i].RecentRolloutWindow = ptr(dur(d))
				return
			}
		}
		panic("no rule " + name)
	}
}

func ptr[T any](v T) *T { return &v }

func gitopsMode(m policy.GitOpsMode, trackingLabel string) func(*policy.Config) {
	return func(c *policy.Config) { c.GitOps.Mode, c.GitOps.ArgoCD.TrackingLabel = m, trackingLabel }
}

func annotate(k, v string) func(*policy.Input) {
	return func(in *policy.Input) { in.Workload.Annotations[k] = v }
}

func alertLabel(k, v string) func(*policy.Input) {
	return func(in *policy.Input) { in.Alert.Labels[k] = v }
}

// sender gives the input an origin: the named sender, which may target the
// namespaces.
func sender(name string, namespaces ...string) func(*policy.Input) {
	return func(in *policy.Input) { in.Origin = policy.Origin{Sender: name, Namespaces: namespaces} }
}

func originLabel(label string) func(*policy.Config) {
	return func(c *policy.Config) { c.Origin.Label = label }
}

func evalRows() []evalRow {
	ns := func(n string) func(*policy.Input) {
		return func(in *policy.Input) {
			in.Target.Namespace = n
			in.Workload.Namespace = n
			in.Alert.Labels["namespace"] = n
		}
	}
	whenRule := func(when string, outcome policy.Outcome) func(*policy.Config) {
		return func(c *policy.Config) {
			c.Rules = append([]policy.Rule{{
				Name: "frontend-down", Matchers: []string{`impact="service_down"`},
				Criterion: "service_down", Outcome: outcome, When: when,
			}}, c.Rules...)
		}
	}
	return []evalRow{
		// One row per runbook criterion of the default rules.
		{name: "service down rolls back", outcome: policy.OutcomeRollback, reason: policy.ReasonCriterionMet, rule: "service-down",
			msgContain: "roll back Deployment production/event-service: rule service-down (service_down) matched and revision 7 started rolling out 4m0s ago"},
		{name: "data corruption rolls back", in: impact("data_corruption"), outcome: policy.OutcomeRollback, reason: policy.ReasonCriterionMet, rule: "data-corruption"},
		{name: "security vulnerability rolls back", in: impact("security_vulnerability"), outcome: policy.OutcomeRollback, reason: policy.ReasonCriterionMet, rule: "security-vulnerability"},
		{name: "critical flow broken rolls back", in: impact("critical_flow_broken"), outcome: policy.OutcomeRollback, reason: policy.ReasonCriterionMet, rule: "critical-flow-broken"},
		{name: "non-critical fixes forward without guards", in: impact("non_critical"), outcome: policy.OutcomeFixForward, reason: policy.ReasonCriterionMet, rule: "non-critical",
			absent: "freeze", msgContain: "fix forward instead of rolling back Deployment production/event-service: rule non-critical (non_critical) matched"},
		{name: "non-critical is not blocked by freeze", cfg: func(c *policy.Config) { c.Freeze = true }, in: impact("non_critical"),
			outcome: policy.OutcomeFixForward, reason: policy.ReasonCriterionMet, rule: "non-critical", absent: "freeze"},

		// Rules and defaults.
		{name: "no matching rule ignores", in: impact("cosmetic"), outcome: policy.OutcomeIgnore, reason: policy.ReasonNoMatchingRule, absent: "freeze",
			msgContain: "ignore the alert about Deployment production/event-service: no rule matched and the default outcome is ignore"},
		{name: "no impact label ignores", in: func(in *policy.Input) { delete(in.Alert.Labels, "impact") }, outcome: policy.OutcomeIgnore, reason: policy.ReasonNoMatchingRule},
		{name: "no matching rule with default fix_forward", cfg: func(c *policy.Config) { c.DefaultOutcome = policy.OutcomeFixForward }, in: impact("cosmetic"),
			outcome: policy.OutcomeFixForward, reason: policy.ReasonNoMatchingRule},
		{name: "rule with outcome ignore", cfg: func(c *policy.Config) {
			c.Rules = append(c.Rules, policy.Rule{Name: "info", Matchers: []string{`severity="info"`}, Criterion: "informational", Outcome: policy.OutcomeIgnore})
		}, in: func(in *policy.Input) { in.Alert.Labels["impact"] = ""; in.Alert.Labels["severity"] = "info" },
			outcome: policy.OutcomeIgnore, reason: policy.ReasonCriterionMet, rule: "info"},
		{name: "first matching rule wins", cfg: func(c *policy.Config) {
			c.Rules = append([]policy.Rule{{Name: "canary", Matchers: []string{`impact="service_down"`, `track="canary"`}, Criterion: "non_critical", Outcome: policy.OutcomeFixForward}}, c.Rules...)
		}, in: func(in *policy.Input) { in.Alert.Labels["track"] = "canary" }, outcome: policy.OutcomeFixForward, reason: policy.ReasonCriterionMet, rule: "canary"},
		{name: "CEL condition true", cfg: whenRule(`workload.labels.tier == "backend"`, policy.OutcomeFixForward),
			outcome: policy.OutcomeFixForward, reason: policy.ReasonCriterionMet, rule: "frontend-down"},
		{name: "CEL condition false falls through to the next rule", cfg: whenRule(`workload.labels.tier == "frontend"`, policy.OutcomeFixForward),
			outcome: policy.OutcomeRollback, reason: policy.ReasonCriterionMet, rule: "service-down"},
		{name: "CEL runtime error escalates", cfg: whenRule(`workload.labels.team == "web"`, policy.OutcomeRollback),
			outcome: policy.OutcomeEscalate, reason: policy.ReasonRuleError, rule: "frontend-down", failed: "rule",
			msgContain: "escalate about Deployment production/event-service: the condition of rule frontend-down (service_down) failed: no such key: team"},
		{name: "CEL runtime error stops at that rule even when a later one would match", cfg: whenRule(`alert.annotations.runbook != ""`, policy.OutcomeFixForward),
			outcome: policy.OutcomeEscalate, reason: policy.ReasonRuleError, rule: "frontend-down", failed: "rule"},

		// Target checks refuse, for every outcome.
		{name: "no target", in: func(in *policy.Input) { in.Target = policy.Ref{}; delete(in.Alert.Labels, "deployment") },
			outcome: policy.OutcomeRefuse, reason: policy.ReasonNoTarget, rule: "service-down", failed: "target resolved",
			msgContain: "refuse to act: alert names no workload: none of the labels daemonset, deployment, rollout, statefulset is set"},
		{name: "incomplete target", in: func(in *policy.Input) { in.Target.Name = "" },
			outcome: policy.OutcomeRefuse, reason: policy.ReasonNoTarget, rule: "service-down", failed: "target resolved"},
		{name: "no target for a fix-forward alert", in: func(in *policy.Input) { in.Target = policy.Ref{}; in.Alert.Labels["impact"] = "non_critical" },
			outcome: policy.OutcomeRefuse, reason: policy.ReasonNoTarget, rule: "non-critical", failed: "target resolved"},
		{name: "denied namespace", in: ns("kube-system"), outcome: policy.OutcomeRefuse, reason: policy.ReasonNamespaceDenied, rule: "service-down", failed: "namespace allowed",
			msgContain: "refuse to act on Deployment kube-system/event-service: namespace kube-system is in namespaces.deny"},
		{name: "namespace not in allow list", cfg: func(c *policy.Config) { c.Namespaces.Allow = []string{"staging"} },
			outcome: policy.OutcomeRefuse, reason: policy.ReasonNamespaceDenied, rule: "service-down", failed: "namespace allowed"},
		{name: "namespace in allow list", cfg: func(c *policy.Config) { c.Namespaces.Allow = []string{"staging", "production"} },
			outcome: policy.OutcomeRollback, reason: policy.ReasonCriterionMet, rule: "service-down"},
		{name: "denied namespace wins over a later failure", in: func(in *policy.Input) {
			ns("kube-system")(in)
			delete(in.Workload.Labels, policy.DefaultOptInLabel)
		}, outcome: policy.OutcomeRefuse, reason: policy.ReasonNamespaceDenied, rule: "service-down", failed: "namespace allowed"},
		{name: "workload not found", in: func(in *policy.Input) { in.Workload = nil },
			outcome: policy.OutcomeRefuse, reason: policy.ReasonWorkloadNotFound, rule: "service-down", failed: "workload exists"},
		{name: "workload facts for another workload", in: func(in *policy.Input) { in.Workload.Name = "ticket-service" },
			outcome: policy.OutcomeRefuse, reason: policy.ReasonWorkloadNotFound, rule: "service-down", failed: "workload exists"},
		{name: "not opted in", in: func(in *policy.Input) { delete(in.Workload.Labels, policy.DefaultOptInLabel) },
			outcome: policy.OutcomeRefuse, reason: policy.ReasonNotOptedIn, rule: "service-down", failed: "opted in"},
		{name: "opt-in label not exactly true", in: func(in *policy.Input) { in.Workload.Labels[policy.DefaultOptInLabel] = "yes" },
			outcome: policy.OutcomeRefuse, reason: policy.ReasonNotOptedIn, rule: "service-down", failed: "opted in"},
		{name: "not opted in refuses even fix forward", in: func(in *policy.Input) {
			in.Alert.Labels["impact"] = "non_critical"
			delete(in.Workload.Labels, policy.DefaultOptInLabel)
		}, outcome: policy.OutcomeRefuse, reason: policy.ReasonNotOptedIn, rule: "non-critical", failed: "opted in"},
		{name: "custom opt-in label", cfg: func(c *policy.Config) { c.OptInLabel = "example.com/autorollback" },
			outcome: policy.OutcomeRefuse, reason: policy.ReasonNotOptedIn, rule: "service-down", failed: "opted in"},
		{name: "refuse wins over a rule error", cfg: whenRule(`workload.labels.team == "web"`, policy.OutcomeRollback),
			in:      func(in *policy.Input) { delete(in.Workload.Labels, policy.DefaultOptInLabel) },
			outcome: policy.OutcomeRefuse, reason: policy.ReasonNotOptedIn, rule: "frontend-down", failed: "opted in"},

		// Where the alert comes from: the sender's namespaces, the origin
		// label, the workload's alert matchers. They refuse, for every outcome.
		{name: "sender may not target the namespace", in: sender("team-a", "team-a", "staging"),
			outcome: policy.OutcomeRefuse, reason: policy.ReasonOriginMismatch, rule: "service-down", failed: "sender allowed",
			msgContain: `refuse to act on Deployment production/event-service: sender "team-a" may not target namespace production, only team-a, staging`},
		{name: "sender may target the namespace", in: sender("team-a", "staging", "production"),
			outcome: policy.OutcomeRollback, reason: policy.ReasonCriterionMet, rule: "service-down"},
		{name: "sender may target any namespace", in: sender("platform", "*"),
			outcome: policy.OutcomeRollback, reason: policy.ReasonCriterionMet, rule: "service-down"},
		{name: "unknown sender with namespaces", in: sender("", "staging"),
			outcome: policy.OutcomeRefuse, reason: policy.ReasonOriginMismatch, rule: "service-down", failed: "sender allowed",
			msgContain: "the sender may not target namespace production, only staging"},
		{name: "sender refused even to fix forward", in: func(in *policy.Input) { impact("non_critical")(in); sender("team-a", "team-a")(in) },
			outcome: policy.OutcomeRefuse, reason: policy.ReasonOriginMismatch, rule: "non-critical", failed: "sender allowed"},
		{name: "denied namespace wins over the sender", in: func(in *policy.Input) { ns("kube-system")(in); sender("team-a", "team-a")(in) },
			outcome: policy.OutcomeRefuse, reason: policy.ReasonNamespaceDenied, rule: "service-down", failed: "namespace allowed"},
		{name: "origin label equals the target namespace", cfg: originLabel("namespace"),
			outcome: policy.OutcomeRollback, reason: policy.ReasonCriterionMet, rule: "service-down"},
		{name: "origin label names another namespace", cfg: originLabel("origin_namespace"), in: alertLabel("origin_namespace", "team-a"),
			outcome: policy.OutcomeRefuse, reason: policy.ReasonOriginMismatch, rule: "service-down", failed: "alert origin",
			msgContain: "refuse to act on Deployment production/event-service: the alert comes from namespace team-a (label origin_namespace), not production"},
		{name: "origin label missing", cfg: originLabel("origin_namespace"),
			outcome: policy.OutcomeRefuse, reason: policy.ReasonOriginMismatch, rule: "service-down", failed: "alert origin",
			msgContain: "the alert has no label origin_namespace: its origin is unknown"},
		{name: "origin label empty", cfg: originLabel("origin_namespace"), in: alertLabel("origin_namespace", ""),
			outcome: policy.OutcomeRefuse, reason: policy.ReasonOriginMismatch, rule: "service-down", failed: "alert origin"},
		{name: "origin label missing refuses even fix forward", cfg: originLabel("origin_namespace"), in: impact("non_critical"),
			outcome: policy.OutcomeRefuse, reason: policy.ReasonOriginMismatch, rule: "non-critical", failed: "alert origin"},
		{name: "another origin the workload allows", cfg: originLabel("origin_namespace"), in: func(in *policy.Input) {
			alertLabel("origin_namespace", "team-a")(in)
			annotate(kinds.AnnotationAllowedOriginNamespaces, "team-b, team-a")(in)
		}, outcome: policy.OutcomeRollback, reason: policy.ReasonCriterionMet, rule: "service-down"},
		{name: "another origin the workload does not list", cfg: originLabel("origin_namespace"), in: func(in *policy.Input) {
			alertLabel("origin_namespace", "team-a")(in)
			annotate(kinds.AnnotationAllowedOriginNamespaces, "team-b,team-c,team-a-old")(in)
		}, outcome: policy.OutcomeRefuse, reason: policy.ReasonOriginMismatch, rule: "service-down", failed: "alert origin",
			msgContain: "not production, and annotation autorollback.io/allowed-origin-namespaces does not list it"},
		{name: "the allowed origins are no wildcard", cfg: originLabel("origin_namespace"), in: func(in *policy.Input) {
			alertLabel("origin_namespace", "team-a")(in)
			annotate(kinds.AnnotationAllowedOriginNamespaces, "*")(in)
		}, outcome: policy.OutcomeRefuse, reason: policy.ReasonOriginMismatch, rule: "service-down", failed: "alert origin"},
		{name: "not opted in wins over the origin", cfg: originLabel("origin_namespace"), in: func(in *policy.Input) { delete(in.Workload.Labels, policy.DefaultOptInLabel) },
			outcome: policy.OutcomeRefuse, reason: policy.ReasonNotOptedIn, rule: "service-down", failed: "opted in"},
		{name: "alert matchers admit the alert", in: func(in *policy.Input) {
			annotate(kinds.AnnotationAlertMatchers, `{team="payments", severity=~"critical|page"}`)(in)
			alertLabel("team", "payments")(in)
		}, outcome: policy.OutcomeRollback, reason: policy.ReasonCriterionMet, rule: "service-down"},
		{name: "alert matchers without braces", in: func(in *policy.Input) {
			annotate(kinds.AnnotationAlertMatchers, `severity="critical",team!="web"`)(in)
		}, outcome: policy.OutcomeRollback, reason: policy.ReasonCriterionMet, rule: "service-down"},
		{name: "alert matchers refuse the alert", in: annotate(kinds.AnnotationAlertMatchers, `{severity="critical",team="payments"}`),
			outcome: policy.OutcomeRefuse, reason: policy.ReasonAlertNotAllowed, rule: "service-down", failed: "alert matchers",
			msgContain: `refuse to act on Deployment production/event-service: the alert does not match team="payments" of annotation autorollback.io/alert-matchers`},
		{name: "alert matchers refuse even fix forward", in: func(in *policy.Input) {
			impact("non_critical")(in)
			annotate(kinds.AnnotationAlertMatchers, `team="payments"`)(in)
		}, outcome: policy.OutcomeRefuse, reason: policy.ReasonAlertNotAllowed, rule: "non-critical", failed: "alert matchers"},
		{name: "unparseable alert matchers refuse", in: annotate(kinds.AnnotationAlertMatchers, `{team=~"("}`),
			outcome: policy.OutcomeRefuse, reason: policy.ReasonAlertNotAllowed, rule: "service-down", failed: "alert matchers",
			msgContain: "annotation autorollback.io/alert-matchers cannot be parsed, so no alert may act: error parsing regexp: missing closing ): `^(?:()$`"},
		{name: "alert matchers of bad syntax refuse", in: annotate(kinds.AnnotationAlertMatchers, `team`),
			outcome: policy.OutcomeRefuse, reason: policy.ReasonAlertNotAllowed, rule: "service-down", failed: "alert matchers",
			msgContain: "cannot be parsed, so no alert may act: bad matcher format: team"},
		{name: "alert matchers that list none refuse", in: annotate(kinds.AnnotationAlertMatchers, "{}"),
			outcome: policy.OutcomeRefuse, reason: policy.ReasonAlertNotAllowed, rule: "service-down", failed: "alert matchers",
			msgContain: "annotation autorollback.io/alert-matchers lists no matchers, so no alert may act"},
		{name: "empty alert matchers are not set", in: annotate(kinds.AnnotationAlertMatchers, ""),
			outcome: policy.OutcomeRollback, reason: policy.ReasonCriterionMet, rule: "service-down"},

		{name: "resolved alert", in: func(in *policy.Input) { in.Alert.Status = "resolved" },
			outcome: policy.OutcomeIgnore, reason: policy.ReasonAlertResolved, rule: "service-down", failed: "alert firing"},

		// Guards, in order.
		{name: "frozen", cfg: func(c *policy.Config) { c.Freeze = true },
			outcome: policy.OutcomeEscalate, reason: policy.ReasonFrozen, rule: "service-down", failed: "freeze"},
		{name: "frozen wins over later guards", cfg: func(c *policy.Config) { c.Freeze = true }, in: func(in *policy.Input) { in.Workload.Paused = true },
			outcome: policy.OutcomeEscalate, reason: policy.ReasonFrozen, rule: "service-down", failed: "freeze"},
		{name: "fix-forward annotation true", in: annotate(kinds.AnnotationFixForward, "true"),
			outcome: policy.OutcomeFixForward, reason: policy.ReasonFixForwardAnnotation, rule: "service-down", failed: "fix-forward annotation"},
		{name: "fix-forward annotation active until later", in: annotate(kinds.AnnotationFixForward, now.Add(time.Second).Format(time.RFC3339)),
			outcome: policy.OutcomeFixForward, reason: policy.ReasonFixForwardAnnotation, rule: "service-down", failed: "fix-forward annotation"},
		{name: "fix-forward annotation expires exactly now", in: annotate(kinds.AnnotationFixForward, now.Format(time.RFC3339)),
			outcome: policy.OutcomeRollback, reason: policy.ReasonCriterionMet, rule: "service-down"},
		{name: "fix-forward annotation expired", in: annotate(kinds.AnnotationFixForward, "2026-11-24T12:00:00+01:00"),
			outcome: policy.OutcomeRollback, reason: policy.ReasonCriterionMet, rule: "service-down"},
		{name: "fix-forward annotation malformed counts as set", in: annotate(kinds.AnnotationFixForward, "until friday"),
			outcome: policy.OutcomeFixForward, reason: policy.ReasonFixForwardAnnotation, rule: "service-down", failed: "fix-forward annotation"},
		{name: "fix-forward annotation false counts as set", in: annotate(kinds.AnnotationFixForward, "false"),
			outcome: policy.OutcomeFixForward, reason: policy.ReasonFixForwardAnnotation, rule: "service-down", failed: "fix-forward annotation"},
		{name: "fix-forward annotation empty is not set", in: annotate(kinds.AnnotationFixForward, ""),
			outcome: policy.OutcomeRollback, reason: policy.ReasonCriterionMet, rule: "service-down"},
		{name: "rollback unsafe", in: annotate(kinds.AnnotationRollbackUnsafe, "true"),
			outcome: policy.OutcomeFixForward, reason: policy.ReasonRollbackUnsafe, rule: "service-down", failed: "rollback-unsafe annotation",
			msgContain: `fix forward instead of rolling back Deployment production/event-service: annotation autorollback.io/rollback-unsafe="true" says a rollback would cause data issues`},
		{name: "rollback unsafe with another value", in: annotate(kinds.AnnotationRollbackUnsafe, "migration 42"),
			outcome: policy.OutcomeFixForward, reason: policy.ReasonRollbackUnsafe, rule: "service-down", failed: "rollback-unsafe annotation"},
		{name: "gitops managed", in: func(in *policy.Input) { in.Workload.GitOpsManager = "argocd" },
			outcome: policy.OutcomeEscalate, reason: policy.ReasonGitOpsManaged, rule: "service-down", failed: "not managed by GitOps"},
		{name: "gitops managed with pause-and-undo rolls back", cfg: gitopsMode(policy.GitOpsPauseAndUndo, ""),
			in:      func(in *policy.Input) { in.Workload.GitOpsManager = "flux" },
			outcome: policy.OutcomeRollback, reason: policy.ReasonCriterionMet, rule: "service-down"},
		{name: "gitops tracking label escalates", cfg: gitopsMode(policy.GitOpsEscalate, "app.kubernetes.io/instance"),
			in:      func(in *policy.Input) { in.Workload.Labels["app.kubernetes.io/instance"] = "web" },
			outcome: policy.OutcomeEscalate, reason: policy.ReasonGitOpsManaged, rule: "service-down", failed: "not managed by GitOps",
			msgContain: "managed by argocd, which would undo a rollback"},
		{name: "gitops tracking label not configured is not GitOps", in: func(in *policy.Input) { in.Workload.Labels["app.kubernetes.io/instance"] = "web" },
			outcome: policy.OutcomeRollback, reason: policy.ReasonCriterionMet, rule: "service-down"},
		{name: "flagger primary", in: func(in *policy.Input) { in.Workload.FlaggerCanary = "event-service" },
			outcome: policy.OutcomeEscalate, reason: policy.ReasonFlaggerManaged, rule: "service-down", failed: "not managed by Flagger",
			msgContain: "the primary of Flagger Canary event-service, which promotes its target onto it and would fight a rollback"},
		{name: "flagger primary escalates under pause-and-undo too", cfg: gitopsMode(policy.GitOpsPauseAndUndo, ""),
			in: func(in *policy.Input) {
				in.Workload.FlaggerCanary = "event-service"
				in.Workload.GitOpsManager = "flux"
			},
			outcome: policy.OutcomeEscalate, reason: policy.ReasonFlaggerManaged, rule: "service-down", failed: "not managed by Flagger"},
		{name: "paused", in: func(in *policy.Input) { in.Workload.Paused = true },
			outcome: policy.OutcomeEscalate, reason: policy.ReasonPaused, rule: "service-down", failed: "not paused"},
		{name: "no history", in: func(in *policy.Input) { in.Workload.PreviousRevision = 0 },
			outcome: policy.OutcomeEscalate, reason: policy.ReasonNoHistory, rule: "service-down", failed: "previous revision"},
		{name: "rollout long ago", in: func(in *policy.Input) {
			in.Workload.RolloutStartedAt = now.Add(-3 * time.Hour)
			in.Alert.StartsAt = now.Add(-time.Minute)
		},
			outcome: policy.OutcomeEscalate, reason: policy.ReasonNoRecentRollout, rule: "service-down", failed: "recent rollout",
			msgContain: "escalate instead of rolling back Deployment production/event-service: revision 7 started rolling out 3h0m0s ago, outside the 1h0m0s window"},
		{name: "rollout exactly at the window edge", in: func(in *policy.Input) { in.Workload.RolloutStartedAt = now.Add(-time.Hour) },
			outcome: policy.OutcomeRollback, reason: policy.ReasonCriterionMet, rule: "service-down"},
		{name: "rollout just outside the window", in: func(in *policy.Input) { in.Workload.RolloutStartedAt = now.Add(-time.Hour - time.Nanosecond) },
			outcome: policy.OutcomeEscalate, reason: policy.ReasonNoRecentRollout, rule: "service-down", failed: "recent rollout"},
		{name: "rollout start unknown", in: func(in *policy.Input) { in.Workload.RolloutStartedAt = time.Time{} },
			outcome: policy.OutcomeEscalate, reason: policy.ReasonNoRecentRollout, rule: "service-down", failed: "recent rollout"},

		// A rule's own recentRolloutWindow replaces the global one for the
		// alerts it matches, and the decision names the window that applied.
		{name: "data corruption 3h after the rollout rolls back within its rule's 24h window",
			cfg: ruleWindow("data-corruption", 24*time.Hour), in: func(in *policy.Input) { impact("data_corruption")(in); rolloutAgo(3 * time.Hour)(in) },
			outcome: policy.OutcomeRollback, reason: policy.ReasonCriterionMet, rule: "data-corruption",
			msgContain: "roll back Deployment production/event-service: rule data-corruption (data_corruption) matched and revision 7 started rolling out 3h0m0s ago, within the 24h0m0s window of rule data-corruption"},
		{name: "service down 3h after the rollout escalates with the global window when another rule has its own",
			cfg: ruleWindow("data-corruption", 24*time.Hour), in: rolloutAgo(3 * time.Hour),
			outcome: policy.OutcomeEscalate, reason: policy.ReasonNoRecentRollout, rule: "service-down", failed: "recent rollout",
			msgContain: "escalate instead of rolling back Deployment production/event-service: revision 7 started rolling out 3h0m0s ago, outside the 1h0m0s window"},
		{name: "data corruption beyond its rule's window escalates naming that window",
			cfg: ruleWindow("data-corruption", 2*time.Hour), in: func(in *policy.Input) { impact("data_corruption")(in); rolloutAgo(3 * time.Hour)(in) },
			outcome: policy.OutcomeEscalate, reason: policy.ReasonNoRecentRollout, rule: "data-corruption", failed: "recent rollout",
			msgContain: "revision 7 started rolling out 3h0m0s ago, outside the 2h0m0s window of rule data-corruption"},
		{name: "a rule window shorter than the global one escalates a rollout the global one would blame",
			cfg:     ruleWindow("service-down", 3*time.Minute),
			outcome: policy.OutcomeEscalate, reason: policy.ReasonNoRecentRollout, rule: "service-down", failed: "recent rollout",
			msgContain: "revision 7 started rolling out 4m0s ago, outside the 3m0s window of rule service-down"},
		{name: "a rule window at its edge is recent",
			cfg: ruleWindow("data-corruption", 24*time.Hour), in: func(in *policy.Input) { impact("data_corruption")(in); rolloutAgo(24 * time.Hour)(in) },
			outcome: policy.OutcomeRollback, reason: policy.ReasonCriterionMet, rule: "data-corruption"},
		// The default policy gives the criteria whose harm is found late a
		// day; outages keep the global hour.
		{name: "default: data corruption 3h after the rollout rolls back", in: func(in *policy.Input) { impact("data_corruption")(in); rolloutAgo(3 * time.Hour)(in) },
			outcome: policy.OutcomeRollback, reason: policy.ReasonCriterionMet, rule: "data-corruption",
			msgContain: "within the 24h0m0s window of rule data-corruption"},
		{name: "default: security vulnerability 20h after the rollout rolls back", in: func(in *policy.Input) { impact("security_vulnerability")(in); rolloutAgo(20 * time.Hour)(in) },
			outcome: policy.OutcomeRollback, reason: policy.ReasonCriterionMet, rule: "security-vulnerability"},
		{name: "default: data corruption 25h after the rollout escalates", in: func(in *policy.Input) { impact("data_corruption")(in); rolloutAgo(25 * time.Hour)(in) },
			outcome: policy.OutcomeEscalate, reason: policy.ReasonNoRecentRollout, rule: "data-corruption", failed: "recent rollout",
			msgContain: "outside the 24h0m0s window of rule data-corruption"},
		{name: "default: service down 3h after the rollout escalates", in: rolloutAgo(3 * time.Hour),
			outcome: policy.OutcomeEscalate, reason: policy.ReasonNoRecentRollout, rule: "service-down", failed: "recent rollout",
			msgContain: "outside the 1h0m0s window"},
		{name: "default: critical flow broken 3h after the rollout escalates", in: func(in *policy.Input) { impact("critical_flow_broken")(in); rolloutAgo(3 * time.Hour)(in) },
			outcome: policy.OutcomeEscalate, reason: policy.ReasonNoRecentRollout, rule: "critical-flow-broken", failed: "recent rollout"},
		{name: "the rule window of a rule whose condition is false does not apply",
			cfg: func(c *policy.Config) {
				c.Rules = append([]policy.Rule{{
					Name: "backend-down", Matchers: []string{`impact="service_down"`}, Criterion: "service_down",
					Outcome: policy.OutcomeRollback, When: `workload.labels.tier == "frontend"`, RecentRolloutWindow: ptr(dur(24 * time.Hour)),
				}}, c.Rules...)
			}, in: rolloutAgo(3 * time.Hour),
			outcome: policy.OutcomeEscalate, reason: policy.ReasonNoRecentRollout, rule: "service-down", failed: "recent rollout"},
		{name: "alert predates rollout", in: func(in *policy.Input) { in.Alert.StartsAt = now.Add(-30 * time.Minute) },
			outcome: policy.OutcomeEscalate, reason: policy.ReasonAlertPredatesRollout, rule: "service-down", failed: "alert after rollout"},
		{name: "alert starts exactly at the clock-skew edge", in: func(in *policy.Input) { in.Alert.StartsAt = now.Add(-4*time.Minute - 2*time.Minute) },
			outcome: policy.OutcomeRollback, reason: policy.ReasonCriterionMet, rule: "service-down"},
		{name: "alert starts just beyond the clock skew", in: func(in *policy.Input) { in.Alert.StartsAt = now.Add(-4*time.Minute - 2*time.Minute - time.Nanosecond) },
			outcome: policy.OutcomeEscalate, reason: policy.ReasonAlertPredatesRollout, rule: "service-down", failed: "alert after rollout"},
		{name: "zero clock skew, alert at rollout start", cfg: func(c *policy.Config) { c.ClockSkew = dur(0) }, in: func(in *policy.Input) { in.Alert.StartsAt = now.Add(-4 * time.Minute) },
			outcome: policy.OutcomeRollback, reason: policy.ReasonCriterionMet, rule: "service-down"},
		{name: "cooldown", in: func(in *policy.Input) { in.Workload.LastAutoRollbackAt = now.Add(-5 * time.Minute) },
			outcome: policy.OutcomeEscalate, reason: policy.ReasonCooldown, rule: "service-down", failed: "cooldown"},
		{name: "cooldown just not over", in: func(in *policy.Input) { in.Workload.LastAutoRollbackAt = now.Add(-10*time.Minute + time.Nanosecond) },
			outcome: policy.OutcomeEscalate, reason: policy.ReasonCooldown, rule: "service-down", failed: "cooldown"},
		{name: "cooldown over exactly now", in: func(in *policy.Input) { in.Workload.LastAutoRollbackAt = now.Add(-10 * time.Minute) },
			outcome: policy.OutcomeRollback, reason: policy.ReasonCriterionMet, rule: "service-down"},
		{name: "workload budget exhausted", in: func(in *policy.Input) { in.Usage.Workload = 2 },
			outcome: policy.OutcomeEscalate, reason: policy.ReasonBudgetExhausted, rule: "service-down", failed: "budget"},
		{name: "workload budget has one left", in: func(in *policy.Input) { in.Usage.Workload = 1 },
			outcome: policy.OutcomeRollback, reason: policy.ReasonCriterionMet, rule: "service-down"},
		{name: "global budget exhausted", in: func(in *policy.Input) { in.Usage.Global = 10 },
			outcome: policy.OutcomeEscalate, reason: policy.ReasonBudgetExhausted, rule: "service-down", failed: "budget"},
		{name: "global budget has one left", in: func(in *policy.Input) { in.Usage.Global = 9 },
			outcome: policy.OutcomeRollback, reason: policy.ReasonCriterionMet, rule: "service-down"},

		{name: "dry run", cfg: func(c *policy.Config) { c.DryRun = true },
			outcome: policy.OutcomeRollback, reason: policy.ReasonCriterionMet, rule: "service-down", dryRun: true,
			msgContain: "dry run, would roll back Deployment production/event-service"},
		{name: "dry run does not mark an escalation", cfg: func(c *policy.Config) { c.DryRun = true }, in: func(in *policy.Input) { in.Workload.Paused = true },
			outcome: policy.OutcomeEscalate, reason: policy.ReasonPaused, rule: "service-down", failed: "not paused"},
	}
}

func TestEvaluate(t *testing.T) {
	for _, row := range evalRows() {
		t.Run(row.name, func(t *testing.T) {
			d := evaluateRow(t, row)
			if d.Outcome != row.outcome || d.Reason != row.reason || d.Rule != row.rule {
				t.Errorf("got outcome %s, reason %s, rule %q; want %s, %s, %q\n%s", d.Outcome, d.Reason, d.Rule, row.outcome, row.reason, row.rule, d)
			}
			if d.DryRun != row.dryRun {
				t.Errorf("DryRun = %v, want %v", d.DryRun, row.dryRun)
			}
			failed, ok := d.Failed()
			switch {
			case row.failed == "" && ok:
				t.Errorf("check %q failed, want every check to pass\n%s", failed.Name, d)
			case row.failed != "" && !ok:
				t.Errorf("every check passed, want %q to fail\n%s", row.failed, d)
			case row.failed != "" && (failed.Name != row.failed || failed.Reason != row.reason):
				t.Errorf("first failing check is %q (%s), want %q (%s)\n%s", failed.Name, failed.Reason, row.failed, row.reason, d)
			}
			if row.absent != "" && slices.ContainsFunc(d.Checks, func(c policy.Check) bool { return c.Name == row.absent }) {
				t.Errorf("check %q was evaluated, want it skipped\n%s", row.absent, d)
			}
			if d.Target != baseTarget(row) {
				t.Errorf("Target = %s, want %s", d.Target, baseTarget(row))
			}
			if d.Message == "" || strings.Contains(d.Message, "\n") {
				t.Errorf("Message = %q, want one sentence", d.Message)
			}
			if row.msgContain != "" && !strings.Contains(d.Message, row.msgContain) {
				t.Errorf("Message = %q\nwant it to contain %q", d.Message, row.msgContain)
			}
		})
	}
}

func evaluateRow(t testing.TB, row evalRow) policy.Decision {
	t.Helper()
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
	return p.Evaluate(in)
}

func baseTarget(row evalRow) policy.Ref {
	in := baseInput()
	if row.in != nil {
		row.in(&in)
	}
	return in.Target
}

// TestEvaluateCoversEveryReason keeps the table honest: a reason added to
// Reasons without a row fails here.
func TestEvaluateCoversEveryReason(t *testing.T) {
	seen := map[policy.Reason]bool{}
	outcomes := map[policy.Outcome]bool{}
	for _, row := range evalRows() {
		seen[row.reason] = true
		outcomes[row.outcome] = true
	}
	for _, r := range policy.Reasons() {
		if !seen[r] {
			t.Errorf("no row of TestEvaluate produces reason %s", r)
		}
	}
	for _, o := range policy.Outcomes() {
		if !outcomes[o] {
			t.Errorf("no row of TestEvaluate produces outcome %s", o)
		}
	}
}

func TestEvaluateRecordsEveryCheck(t *testing.T) {
	all := []string{
		"target resolved", "namespace allowed", "sender allowed", "workload exists", "opted in", "alert origin", "alert matchers",
		"alert firing", "rule",
		"freeze", "fix-forward annotation", "rollback-unsafe annotation", "not managed by GitOps",
		"not managed by Flagger", "not paused", "previous revision", "recent rollout", "alert after rollout", "cooldown", "budget",
	}
	names := func(d policy.Decision) []string {
		var out []string
		for _, c := range d.Checks {
			out = append(out, c.Name)
		}
		return out
	}
	p, err := policy.Compile(policy.DefaultConfig())
	if err != nil {
		t.Fatal(err)
	}

	t.Run("all pass", func(t *testing.T) {
		d := p.Evaluate(baseInput())
		if got := names(d); !slices.Equal(got, all) {
			t.Errorf("checks = %q\nwant %q", got, all)
		}
		for _, c := range d.Checks {
			if !c.Passed || c.Detail == "" {
				t.Errorf("check %+v: want passed with a detail", c)
			}
		}
	})
	t.Run("checks after the first failure are still evaluated", func(t *testing.T) {
		in := baseInput()
		in.Target = policy.Ref{Kind: policy.KindDeployment, Namespace: "kube-system", Name: "event-service"}
		in.Workload.Ref = in.Target
		in.Workload.Paused = true
		in.Usage.Global = 10
		d := p.Evaluate(in)
		if got := names(d); !slices.Equal(got, all) {
			t.Errorf("checks = %q\nwant %q", got, all)
		}
		var failed []policy.Reason
		for _, c := range d.Checks {
			if !c.Passed {
				failed = append(failed, c.Reason)
			}
		}
		want := []policy.Reason{policy.ReasonNamespaceDenied, policy.ReasonPaused, policy.ReasonBudgetExhausted}
		if !slices.Equal(failed, want) || d.Reason != policy.ReasonNamespaceDenied {
			t.Errorf("failed checks %v, decision reason %s; want %v, %s", failed, d.Reason, want, policy.ReasonNamespaceDenied)
		}
	})
	t.Run("without a workload every workload guard fails", func(t *testing.T) {
		in := baseInput()
		in.Workload = nil
		d := p.Evaluate(in)
		if got := names(d); !slices.Equal(got, all) {
			t.Errorf("checks = %q\nwant %q", got, all)
		}
		for _, c := range d.Checks {
			needsWorkload := !slices.Contains([]string{"target resolved", "namespace allowed", "sender allowed", "alert origin", "alert firing", "rule", "freeze", "budget"}, c.Name)
			if needsWorkload && c.Passed {
				t.Errorf("check %q passed without a workload: %s", c.Name, c.Detail)
			}
		}
		if d.Outcome != policy.OutcomeRefuse || d.Reason != policy.ReasonWorkloadNotFound {
			t.Errorf("got %s/%s, want refuse/workload_not_found", d.Outcome, d.Reason)
		}
	})
}

func TestEvaluateMessages(t *testing.T) {
	for _, tc := range []struct {
		name string
		in   func(*policy.Input)
		want string
	}{
		{"rollback", nil,
			"roll back Deployment production/event-service: rule service-down (service_down) matched and revision 7 started rolling out 4m0s ago, within the 1h0m0s window"},
		{"outside window", func(in *policy.Input) { in.Workload.RolloutStartedAt = now.Add(-3 * time.Hour) },
			"escalate instead of rolling back Deployment production/event-service: revision 7 started rolling out 3h0m0s ago, outside the 1h0m0s window"},
		{"predates", func(in *policy.Input) { in.Alert.StartsAt = now.Add(-30 * time.Minute) },
			"escalate instead of rolling back Deployment production/event-service: the alert started 26m0s before revision 7 began rolling out, more than the 2m0s clock skew: the rollout did not cause it"},
		{"cooldown", func(in *policy.Input) { in.Workload.LastAutoRollbackAt = now.Add(-5 * time.Minute) },
			"escalate instead of rolling back Deployment production/event-service: last automatic rollback 5m0s ago, within the 10m0s cooldown"},
		{"budget", func(in *policy.Input) { in.Usage = policy.Usage{Workload: 2, Global: 3} },
			"escalate instead of rolling back Deployment production/event-service: 2 of 2 rollbacks of this workload and 3 of 10 in all used in the last hour, budget exhausted"},
		{"fix-forward until", annotate(kinds.AnnotationFixForward, "2026-11-25T18:00:00Z"),
			"fix forward instead of rolling back Deployment production/event-service: annotation autorollback.io/fix-forward: the owners fix forward until 2026-11-25T18:00:00Z"},
		{"gitops", func(in *policy.Input) { in.Workload.GitOpsManager = "flux" },
			"escalate instead of rolling back Deployment production/event-service: managed by flux, which would undo a rollback; revert in Git instead"},
		{"not opted in", func(in *policy.Input) { in.Workload.Labels[policy.DefaultOptInLabel] = "false" },
			`refuse to act on Deployment production/event-service: label autorollback.io/enabled is "false", not "true"`},
		{"resolved", func(in *policy.Input) { in.Alert.Status = "resolved" },
			"ignore the alert about Deployment production/event-service: the alert is resolved"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d := evaluateRow(t, evalRow{in: tc.in})
			if d.Message != tc.want {
				t.Errorf("Message:\n got %q\nwant %q", d.Message, tc.want)
			}
		})
	}
}

func TestDecisionString(t *testing.T) {
	in := baseInput()
	in.Workload.Paused = true
	d := evaluateRow(t, evalRow{in: func(i *policy.Input) { *i = in }})
	want := `target:   Deployment production/event-service
rule:     service-down (service_down)
checks:
  ✓ target resolved: the alert names Deployment production/event-service
  ✓ namespace allowed: namespace production is not denied
  ✓ sender allowed: the sender may target any namespace
  ✓ workload exists: Deployment production/event-service exists at revision 7
  ✓ opted in: label autorollback.io/enabled is "true"
  ✓ alert origin: no origin label is set (policy.origin.label)
  ✓ alert matchers: no autorollback.io/alert-matchers annotation
  ✓ alert firing: the alert is firing
  ✓ rule: rule service-down (service_down) matched: rollback
  ✓ freeze: rollbacks are not frozen
  ✓ fix-forward annotation: no autorollback.io/fix-forward annotation
  ✓ rollback-unsafe annotation: no autorollback.io/rollback-unsafe annotation
  ✓ not managed by GitOps: not managed by Argo CD or Flux
  ✓ not managed by Flagger: not owned by a Flagger Canary
  ✗ not paused: the rollout is paused, someone is working on it [paused]
  ✓ previous revision: revision 6 is there to roll back to
  ✓ recent rollout: revision 7 started rolling out 4m0s ago, within the 1h0m0s window
  ✓ alert after rollout: the alert started 2m0s after revision 7 began rolling out
  ✓ cooldown: never rolled back automatically
  ✓ budget: 0 of 2 rollbacks of this workload and 0 of 10 in all used in the last hour
decision: escalate (reason paused)
message:  escalate instead of rolling back Deployment production/event-service: the rollout is paused, someone is working on it
`
	if got := d.String(); got != want {
		t.Errorf("String():\n%s\nwant:\n%s", got, want)
	}
}

// TestEvaluateIsPure evaluates the same input twice, the second time after
// the first decision was mutated, and expects the same decision: no state is
// kept between calls and the input is not changed.
func TestEvaluateIsPure(t *testing.T) {
	p, err := policy.Compile(policy.DefaultConfig())
	if err != nil {
		t.Fatal(err)
	}
	in := baseInput()
	first := p.Evaluate(in)
	first.Checks[0].Passed = false
	if !in.Workload.RolloutStartedAt.Equal(now.Add(-4*time.Minute)) || in.Alert.Labels["impact"] != "service_down" {
		t.Fatalf("Evaluate changed its input")
	}
	second := p.Evaluate(in)
	if second.Outcome != policy.OutcomeRollback || !second.Checks[0].Passed {
		t.Errorf("second evaluation differs: %s", second)
	}
}

func TestRefString(t *testing.T) {
	if got := eventService.String(); got != "Deployment production/event-service" {
		t.Errorf("String() = %q", got)
	}
	if got := (policy.Ref{}).String(); got != "<none>" {
		t.Errorf("zero String() = %q", got)
	}
}

func BenchmarkEvaluate(b *testing.B) {
	p, err := policy.Compile(policy.DefaultConfig())
	if err != nil {
		b.Fatal(err)
	}
	in := baseInput()
	in.Alert.Labels["impact"] = "critical_flow_broken" // the fourth rule: most matchers run
	b.ReportAllocs()
	for b.Loop() {
		if d := p.Evaluate(in); d.Outcome != policy.OutcomeRollback {
			b.Fatalf("outcome %s", d.Outcome)
		}
	}
}
