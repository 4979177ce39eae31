// Package policy decides, for one alert, whether autorollbackd rolls back the
// workload the alert names, fixes forward, escalates, ignores it or refuses to
// touch it.
//
// It exists so that the decision the service rollback runbook asks a human to
// make ("When to Rollback vs Fix Forward") is written down once, as a pure
// function that can be read, tested row by row and explained: Evaluate does
// no I/O and reads no clock; the alert, the facts about the workload, the
// recent rollback counts and the current time are all passed in. The daemon
// (internal/engine) gathers those facts and acts on the Decision;
// `autorollbackd explain` prints the same Decision without acting.
//
// Reasons and outcomes are small bounded sets so they can double as metric
// label values.
package policy

import (
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/autorollbackd/autorollbackd/internal/kinds"
)

// Outcome is what the daemon does about an alert.
type Outcome string

// The outcomes of a decision.
const (
	OutcomeRollback   Outcome = "rollback"    // undo the suspect rollout
	OutcomeFixForward Outcome = "fix_forward" // no rollback; notify and escalate
	OutcomeEscalate   Outcome = "escalate"    // a guard blocked a rollback; tell people
	OutcomeIgnore     Outcome = "ignore"      // nothing to do
	OutcomeRefuse     Outcome = "refuse"      // not ours to touch: never acted on, logged and counted
)

// Outcomes returns all outcomes, for initialising metric label values at
// zero. The slice is fresh on every call.
func Outcomes() []Outcome {
	return []Outcome{OutcomeRollback, OutcomeFixForward, OutcomeEscalate, OutcomeIgnore, OutcomeRefuse}
}

// Reason says why a decision has its outcome. The set is bounded: it is used
// as a Prometheus label value.
type Reason string

// The reasons of a decision. Each check of Evaluate has one: the reason it
// gives when it is the first check to fail.
const (
	ReasonCriterionMet         Reason = "criterion_met"    // a rule matched; its outcome applies
	ReasonNoMatchingRule       Reason = "no_matching_rule" // the default outcome applies
	ReasonRuleError            Reason = "rule_error"       // the CEL condition of a rule failed at run time
	ReasonOtherCluster         Reason = "other_cluster"    // the alert is about another cluster than this daemon's
	ReasonNoTarget             Reason = "no_target"        // alert labels name no workload (or an ambiguous one)
	ReasonNamespaceDenied      Reason = "namespace_denied"
	ReasonWorkloadNotFound     Reason = "workload_not_found"
	ReasonNotOptedIn           Reason = "not_opted_in"
	ReasonOriginMismatch       Reason = "origin_mismatch"   // the alert comes from outside the target's namespace
	ReasonAlertNotAllowed      Reason = "alert_not_allowed" // the workload's alert-matchers annotation does not admit the alert
	ReasonAlertResolved        Reason = "alert_resolved"    // the alert is resolved: nothing to roll back or fix
	ReasonFrozen               Reason = "frozen"
	ReasonFixForwardAnnotation Reason = "fix_forward_annotation"
	ReasonRollbackUnsafe       Reason = "rollback_unsafe"
	ReasonGitOpsManaged        Reason = "gitops_managed"
	ReasonFlaggerManaged       Reason = "flagger_managed" // a Flagger Canary owns the workload (its primary)
	ReasonPaused               Reason = "paused"
	ReasonNoHistory            Reason = "no_history"
	ReasonNoRecentRollout      Reason = "no_recent_rollout"
	ReasonAlertPredatesRollout Reason = "alert_predates_rollout"
	ReasonCooldown             Reason = "cooldown"
	ReasonBudgetExhausted      Reason = "budget_exhausted"
)

// Reasons returns all reasons, for initialising metric label values at zero.
// The slice is fresh on every call.
func Reasons() []Reason {
	return []Reason{
		ReasonCriterionMet, ReasonNoMatchingRule, ReasonRuleError,
		ReasonNoTarget, ReasonNamespaceDenied, ReasonOriginMismatch, ReasonWorkloadNotFound, ReasonNotOptedIn,
		ReasonAlertNotAllowed,
		ReasonAlertResolved,
		ReasonFrozen, ReasonFixForwardAnnotation, ReasonRollbackUnsafe, ReasonGitOpsManaged, ReasonFlaggerManaged,
		ReasonPaused, ReasonNoHistory, ReasonNoRecentRollout, ReasonAlertPredatesRollout,
		ReasonCooldown, ReasonBudgetExhausted,
	}
}

// DefaultOptInLabel is the workload label that must be "true" before the
// daemon acts on the workload at all, unless policy.optInLabel names another.
const DefaultOptInLabel = kinds.LabelEnabled

// Kind is the kind of a workload the daemon can roll back.
type Kind = kinds.Kind

// The kinds of workload the daemon can roll back.
const (
	KindDeployment  = kinds.KindDeployment
	KindStatefulSet = kinds.KindStatefulSet
	KindDaemonSet   = kinds.KindDaemonSet
	KindRollout     = kinds.KindRollout
)

// Ref names one workload.
type Ref = kinds.Ref

// Alert is one alert of an Alertmanager notification, as the policy sees it.
type Alert struct {
	Fingerprint  string            `json:"fingerprint"`
	Status       string            `json:"status"` // "firing" or "resolved"
	Labels       map[string]string `json:"labels,omitempty"`
	Annotations  map[string]string `json:"annotations,omitempty"`
	StartsAt     time.Time         `json:"startsAt"`
	EndsAt       time.Time         `json:"endsAt,omitzero"`
	GeneratorURL string            `json:"generatorURL,omitempty"`
}

// TemplateField is the field name of a, for target templates: they are
// evaluated without reflection.
func (a Alert) TemplateField(name string) (any, bool) {
	switch name {
	case "Fingerprint":
		return a.Fingerprint, true
	case "Status":
		return a.Status, true
	case "Labels":
		return a.Labels, true
	case "Annotations":
		return a.Annotations, true
	case "StartsAt":
		return a.StartsAt, true
	case "EndsAt":
		return a.EndsAt, true
	case "GeneratorURL":
		return a.GeneratorURL, true
	}
	return nil, false
}

// Workload is what the daemon knows about the target workload, read from the
// cluster by the caller. Ref must be filled in: Evaluate refuses to act when
// it differs from Input.Target.
type Workload struct {
	Ref
	Labels, Annotations map[string]string
	Paused              bool
	Revision            int64     // current revision number (deployment.kubernetes.io/revision, or ControllerRevision revision)
	RolloutStartedAt    time.Time // when the current revision began rolling out; zero when unknown
	PreviousRevision    int64     // newest revision older than Revision; 0 when there is none
	// Older lists the revisions older than Revision, newest first; the
	// actuator's targets for going back further (N-2) come from it.
	Older              []int64
	LastAutoRollbackAt time.Time // zero when the daemon never rolled it back
	GitOpsManager      string    // "argocd", "flux" or "" (the caller detects it)
	// FlaggerCanary names the Flagger Canary that owns the workload, which
	// is then the Canary's primary; "" for none (the caller detects it).
	FlaggerCanary string
}

// Usage is how many automatic rollbacks happened in the last hour.
type Usage struct {
	Workload int // of the target workload
	Global   int // of all workloads
}

// Origin is who sent the alert, as the webhook authenticated it.
type Origin struct {
	// Sender is the name of the credential the alert came with; "" when
	// unknown.
	Sender string `json:"sender,omitempty"`
	// Namespaces are the namespaces the sender may target. Nil or empty,
	// or one of them "*": any namespace.
	Namespaces []string `json:"namespaces,omitempty"`
}

// Allows reports whether the sender may send alerts about namespace.
func (o Origin) Allows(namespace string) bool {
	return len(o.Namespaces) == 0 || slices.Contains(o.Namespaces, "*") || slices.Contains(o.Namespaces, namespace)
}

// Input is everything Evaluate decides on.
type Input struct {
	Alert    Alert
	Origin   Origin
	Target   Ref       // from Resolve; zero when Resolve failed
	Workload *Workload // nil when the workload does not exist
	Usage    Usage
	Now      time.Time
}

// Check is the result of one rule or guard, for `autorollbackd explain` and
// the incident record.
type Check struct {
	Name   string `json:"name"` // e.g. "namespace allowed", "opted in", "rule", "freeze", "fix-forward annotation", "recent rollout"
	Passed bool   `json:"passed"`
	Reason Reason `json:"reason"` // the reason this check gives when it is the first to fail
	Detail string `json:"detail"` // one human sentence with the facts
}

// Decision is the result of Evaluate.
type Decision struct {
	Outcome   Outcome `json:"outcome"`
	Reason    Reason  `json:"reason"`
	Rule      string  `json:"rule,omitempty"`      // matched rule name, "" for none
	Criterion string  `json:"criterion,omitempty"` // the runbook criterion of the matched rule
	Target    Ref     `json:"target"`
	DryRun    bool    `json:"dryRun,omitempty"` // the outcome is rollback but nothing may change (policy.dryRun)
	Checks    []Check `json:"checks"`           // every check evaluated, in order, including ones after the first failure
	Message   string  `json:"message"`          // one sentence: what and why
}

// Failed returns the first failing check, the one that decided the outcome,
// and false when every check passed.
func (d Decision) Failed() (Check, bool) {
	for _, c := range d.Checks {
		if !c.Passed {
			return c, true
		}
	}
	return Check{}, false
}

// String renders a readable multi-line trace: the target, the rule, each
// check with ✓ or ✗ and its detail, and the decision with its reason.
func (d Decision) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "target:   %s\n", d.Target)
	switch {
	case d.Rule != "":
		fmt.Fprintf(&b, "rule:     %s (%s)\n", d.Rule, d.Criterion)
	default:
		b.WriteString("rule:     none\n")
	}
	b.WriteString("checks:\n")
	for _, c := range d.Checks {
		mark := "✓"
		if !c.Passed {
			mark = "✗"
		}
		fmt.Fprintf(&b, "  %s %s: %s", mark, c.Name, c.Detail)
		if !c.Passed {
			fmt.Fprintf(&b, " [%s]", c.Reason)
		}
		b.WriteString("\n")
	}
	fmt.Fprintf(&b, "decision: %s (reason %s)", d.Outcome, d.Reason)
	if d.DryRun {
		b.WriteString(", dry run: nothing will change")
	}
	b.WriteString("\n")
	fmt.Fprintf(&b, "message:  %s\n", d.Message)
	return b.String()
}
