package policy

import (
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/autorollbackd/autorollbackd/internal/kinds"
)

// Names of the checks, in the order Evaluate runs them.
const (
	checkCluster      = "this cluster"
	checkTarget       = "target resolved"
	checkNamespace    = "namespace allowed"
	checkSender       = "sender allowed"
	checkExists       = "workload exists"
	checkOptIn        = "opted in"
	checkOrigin       = "alert origin"
	checkMatchers     = "alert matchers"
	checkFiring       = "alert firing"
	checkRule         = "rule"
	checkFreeze       = "freeze"
	checkFixForward   = "fix-forward annotation"
	checkUnsafe       = "rollback-unsafe annotation"
	checkGitOps       = "not managed by GitOps"
	checkFlagger      = "not managed by Flagger"
	checkPaused       = "not paused"
	checkHistory      = "previous revision"
	checkRecent       = "recent rollout"
	checkAlertAfter   = "alert after rollout"
	checkCooldown     = "cooldown"
	checkBudget       = "budget"
	unknownNoWorkload = "unknown: the workload does not exist"
)

// Evaluate decides what to do about one alert. It is pure: the same Input
// gives the same Decision.
//
// The checks run in a fixed order and all of them are recorded, but the
// first that fails decides:
//  1. the target checks (resolved, namespace allowed, sender allowed,
//     exists, opted in, alert origin, alert matchers), which refuse: a
//     workload that is not ours, or an alert that may not act on it, is
//     never acted on, not even to fix forward;
//  2. the alert is firing, else ignore;
//  3. the first rule whose matchers all match and whose condition is true
//     gives the outcome; none gives the default outcome; a condition that
//     fails to evaluate escalates, because doubt must not turn into action;
//  4. only when the outcome is rollback, the guards, from the operator's
//     switches (freeze, annotations) to the facts that tie the alert to the
//     rollout (history, recent rollout, alert timing) to the rate limits
//     (cooldown, budget).
func (p *Policy) Evaluate(in Input) Decision {
	e := &evaluation{p: p, in: in, w: in.Workload, steps: make([]step, 0, checkCount)}
	e.targetChecks()
	e.firingCheck()
	e.ruleCheck()
	if e.candidate() == OutcomeRollback {
		e.guards()
	}
	return e.decide()
}

// Screen runs the target checks of Evaluate alone: the alert names a
// workload, in an allowed namespace its sender may target, that exists and
// is opted in, and the alert may act on it by its origin label and the
// workload's alert matchers. They are the only checks that refuse, and they
// read no more of the workload than its existence, revision, labels and
// annotations, so Screen is what intake needs to refuse an alert without
// the cost of the rules and guards.
//
// When a target check fails, Outcome, Reason, Message and Target are those
// Evaluate gives for the same Input; Checks holds the target checks only,
// and Rule and Criterion are empty, since no rule is consulted. When every
// target check passes, Outcome is empty: what to do is for Evaluate to
// decide.
func (p *Policy) Screen(in Input) Decision {
	e := &evaluation{p: p, in: in, w: in.Workload, steps: make([]step, 0, targetCheckCount)}
	e.targetChecks()
	for _, s := range e.steps {
		if !s.Passed {
			return e.decide()
		}
	}
	d := Decision{Target: in.Target, Checks: make([]Check, len(e.steps))}
	for i, s := range e.steps {
		d.Checks[i] = s.Check
	}
	d.Message = "not refused: " + in.Target.String() + " passes the target checks"
	return d
}

// How many checks Evaluate records at most, and how many of them are
// target checks.
const (
	checkCount       = 21
	targetCheckCount = 8
)

// step is a check and the outcome it gives when it is the first to fail.
type step struct {
	Check
	outcome Outcome
}

type evaluation struct {
	p     *Policy
	in    Input
	w     *Workload
	steps []step

	matched *rule // the rule that decided, nil for none
	errored *rule // the rule whose condition failed to evaluate
}

func (e *evaluation) record(name string, reason Reason, outcome Outcome, passed bool, format string, args ...any) {
	e.add(name, reason, outcome, passed, fmt.Sprintf(format, args...))
}

func (e *evaluation) add(name string, reason Reason, outcome Outcome, passed bool, detail string) {
	e.steps = append(e.steps, step{
		Check:   Check{Name: name, Passed: passed, Reason: reason, Detail: detail},
		outcome: outcome,
	})
}

// targetChecks builds its details by concatenation rather than with fmt:
// Screen runs them for every alert at intake.
func (e *evaluation) targetChecks() {
	t := e.in.Target
	var refuse refuseFunc = func(name string, reason Reason, passed bool, detail string) {
		e.add(name, reason, OutcomeRefuse, passed, detail)
	}

	// An alert about another cluster is none of this daemon's business,
	// whatever workload it names: ignored.
	if l := e.p.cfg.ClusterLabel; l != "" && e.in.Alert.Labels != nil {
		switch v, ok := e.in.Alert.Labels[l]; {
		case !ok:
			e.add(checkCluster, ReasonOtherCluster, OutcomeIgnore, false, "the alert has no "+l+" label; this is cluster "+strconv.Quote(e.p.cluster))
		case v != e.p.cluster:
			e.add(checkCluster, ReasonOtherCluster, OutcomeIgnore, false, l+"="+strconv.Quote(v)+" is another cluster; this is "+strconv.Quote(e.p.cluster))
		default:
			e.add(checkCluster, ReasonOtherCluster, OutcomeIgnore, true, l+"="+strconv.Quote(v)+" is this cluster")
		}
	}

	switch {
	case t.Complete():
		refuse(checkTarget, ReasonNoTarget, true, "the alert names "+t.String())
	case t.IsZero():
		detail := "no target was given"
		if _, err := e.p.Resolve(e.in.Alert); err != nil {
			detail = err.Error()
		}
		refuse(checkTarget, ReasonNoTarget, false, detail)
	default:
		refuse(checkTarget, ReasonNoTarget, false, fmt.Sprintf("target %q is incomplete or of an unknown kind", t))
	}

	ns := t.Namespace
	switch {
	case ns == "":
		refuse(checkNamespace, ReasonNamespaceDenied, false, "unknown: no namespace")
	case e.p.deny[ns]:
		refuse(checkNamespace, ReasonNamespaceDenied, false, "namespace "+ns+" is in namespaces.deny")
	case len(e.p.allow) > 0 && !e.p.allow[ns]:
		refuse(checkNamespace, ReasonNamespaceDenied, false, "namespace "+ns+" is not in namespaces.allow")
	case len(e.p.allow) > 0:
		refuse(checkNamespace, ReasonNamespaceDenied, true, "namespace "+ns+" is in namespaces.allow")
	default:
		refuse(checkNamespace, ReasonNamespaceDenied, true, "namespace "+ns+" is not denied")
	}

	e.senderCheck(refuse)

	switch {
	case e.w == nil:
		refuse(checkExists, ReasonWorkloadNotFound, false, t.String()+" does not exist")
	case e.w.Ref != t:
		// A caller bug, but acting on facts about another workload would
		// be worse than refusing.
		refuse(checkExists, ReasonWorkloadNotFound, false, fmt.Sprintf("the workload facts are for %s, not for %s", e.w.Ref, t))
	default:
		refuse(checkExists, ReasonWorkloadNotFound, true, t.String()+" exists at revision "+strconv.FormatInt(e.w.Revision, 10))
	}

	label := e.p.cfg.OptInLabel
	switch {
	case e.w == nil:
		refuse(checkOptIn, ReasonNotOptedIn, false, unknownNoWorkload)
	case e.w.Labels[label] == "true":
		refuse(checkOptIn, ReasonNotOptedIn, true, "label "+label+` is "true"`)
	default:
		v, ok := e.w.Labels[label]
		if !ok {
			refuse(checkOptIn, ReasonNotOptedIn, false, "label "+label+` is not set; set it to "true" to opt in`)
		} else {
			refuse(checkOptIn, ReasonNotOptedIn, false, "label "+label+" is "+strconv.Quote(v)+`, not "true"`)
		}
	}

	e.originCheck(refuse)
	e.alertMatchersCheck(refuse)
}

type refuseFunc func(name string, reason Reason, passed bool, detail string)

// senderCheck holds the target's namespace to the namespaces the sender's
// credential may target.
func (e *evaluation) senderCheck(refuse refuseFunc) {
	o, ns := e.in.Origin, e.in.Target.Namespace
	who := "the sender"
	if o.Sender != "" {
		who = "sender " + strconv.Quote(o.Sender)
	}
	switch {
	case len(o.Namespaces) == 0 || slices.Contains(o.Namespaces, "*"):
		refuse(checkSender, ReasonOriginMismatch, true, who+" may target any namespace")
	case ns == "":
		refuse(checkSender, ReasonOriginMismatch, false, "unknown: no namespace")
	case o.Allows(ns):
		refuse(checkSender, ReasonOriginMismatch, true, who+" may target namespace "+ns)
	default:
		refuse(checkSender, ReasonOriginMismatch, false, who+" may not target namespace "+ns+", only "+strings.Join(o.Namespaces, ", "))
	}
}

// originCheck holds the alert's origin label, when policy.origin.label is
// set, to the target's namespace, or to the namespaces the workload's
// kinds.AnnotationAllowedOriginNamespaces lists. An alert without the label is
// of unknown origin, and refused.
func (e *evaluation) originCheck(refuse refuseFunc) {
	label, ns := e.p.cfg.Origin.Label, e.in.Target.Namespace
	if label == "" {
		refuse(checkOrigin, ReasonOriginMismatch, true, "no origin label is set (policy.origin.label)")
		return
	}
	from := e.in.Alert.Labels[label]
	if from == "" {
		refuse(checkOrigin, ReasonOriginMismatch, false, "the alert has no label "+label+": its origin is unknown")
		return
	}
	detail := "the alert comes from namespace " + printable(from) + " (label " + label + ")"
	if from == ns {
		refuse(checkOrigin, ReasonOriginMismatch, true, detail)
		return
	}
	var allowed string
	var annotated bool
	if e.w != nil {
		allowed, annotated = e.w.Annotations[kinds.AnnotationAllowedOriginNamespaces]
	}
	switch {
	case annotated && listed(allowed, from):
		refuse(checkOrigin, ReasonOriginMismatch, true, detail+", which annotation "+kinds.AnnotationAllowedOriginNamespaces+" of the workload allows")
	case annotated:
		refuse(checkOrigin, ReasonOriginMismatch, false, detail+", not "+ns+", and annotation "+kinds.AnnotationAllowedOriginNamespaces+" does not list it")
	default:
		refuse(checkOrigin, ReasonOriginMismatch, false, detail+", not "+ns)
	}
}

// listed reports whether the comma-separated list has ns as an element.
func listed(list, ns string) bool {
	for s := range strings.SplitSeq(list, ",") {
		if strings.TrimSpace(s) == ns {
			return true
		}
	}
	return false
}

// printable returns a namespace as it is when it is a valid one, else
// quoted: label values come from the alert and may hold anything.
func printable(ns string) string {
	if len(ns) <= 63 && isDNS1123Label(ns) {
		return ns
	}
	return strconv.Quote(ns)
}

// alertMatchersCheck holds the alert's labels to the matchers of the
// workload's kinds.AnnotationAlertMatchers. A value that does not parse, or
// that has no matcher, admits no alert: doubt does not act.
func (e *evaluation) alertMatchersCheck(refuse refuseFunc) {
	if e.w == nil {
		refuse(checkMatchers, ReasonAlertNotAllowed, false, unknownNoWorkload)
		return
	}
	v := strings.TrimSpace(e.w.Annotations[kinds.AnnotationAlertMatchers])
	if v == "" {
		refuse(checkMatchers, ReasonAlertNotAllowed, true, "no "+kinds.AnnotationAlertMatchers+" annotation")
		return
	}
	ms, err := e.p.alertMatchers(v)
	switch {
	case err != nil:
		refuse(checkMatchers, ReasonAlertNotAllowed, false, "annotation "+kinds.AnnotationAlertMatchers+" cannot be parsed, so no alert may act: "+oneLine(err.Error(), 200))
		return
	case len(ms) == 0:
		refuse(checkMatchers, ReasonAlertNotAllowed, false, "annotation "+kinds.AnnotationAlertMatchers+" lists no matchers, so no alert may act; remove it to admit every alert")
		return
	}
	for _, m := range ms {
		if !m.Matches(e.in.Alert.Labels[m.Name]) {
			refuse(checkMatchers, ReasonAlertNotAllowed, false, "the alert does not match "+oneLine(m.String(), 200)+" of annotation "+kinds.AnnotationAlertMatchers)
			return
		}
	}
	refuse(checkMatchers, ReasonAlertNotAllowed, true, "the alert matches annotation "+kinds.AnnotationAlertMatchers)
}

// oneLine shortens s to at most n bytes, at a rune boundary, and escapes
// its line feeds, for a check's detail: the text comes from an annotation,
// which may be long and span lines.
func oneLine(s string, n int) string {
	if len(s) > n {
		for n > 0 && !utf8.RuneStart(s[n]) {
			n--
		}
		s = s[:n] + "…"
	}
	return strings.ReplaceAll(s, "\n", `\n`)
}

func (e *evaluation) firingCheck() {
	switch s := e.in.Alert.Status; s {
	case "resolved":
		e.record(checkFiring, ReasonAlertResolved, OutcomeIgnore, false, "the alert is resolved")
	case "firing":
		e.record(checkFiring, ReasonAlertResolved, OutcomeIgnore, true, "the alert is firing")
	default:
		e.record(checkFiring, ReasonAlertResolved, OutcomeIgnore, true, "the alert status is %q, not resolved", s)
	}
}

func (e *evaluation) ruleCheck() {
	var falseWhen []string
	for _, r := range e.p.rules {
		if !r.matches(e.in.Alert.Labels) {
			continue
		}
		if r.when != nil {
			ok, err := evalWhen(r.when, e.in)
			if err != nil {
				e.errored = r
				e.record(checkRule, ReasonRuleError, OutcomeEscalate, false,
					"the condition of rule %s (%s) failed: %v", r.Name, r.Criterion, err)
				return
			}
			if !ok {
				falseWhen = append(falseWhen, r.Name)
				continue
			}
		}
		e.matched = r
		e.record(checkRule, ReasonRuleError, OutcomeEscalate, true,
			"rule %s (%s) matched: %s", r.Name, r.Criterion, r.Outcome)
		return
	}
	detail := fmt.Sprintf("no rule matched; the default outcome is %s", e.p.cfg.DefaultOutcome)
	if len(falseWhen) > 0 {
		detail += fmt.Sprintf(" (the conditions of %s were false)", strings.Join(falseWhen, ", "))
	}
	e.record(checkRule, ReasonRuleError, OutcomeEscalate, true, "%s", detail)
}

// candidate is the outcome the rules ask for, before the guards.
func (e *evaluation) candidate() Outcome {
	switch {
	case e.matched != nil:
		return e.matched.Outcome
	case e.errored != nil:
		return e.errored.Outcome
	}
	return e.p.cfg.DefaultOutcome
}

func (e *evaluation) guards() {
	p, cfg, w, now := e.p, e.p.cfg, e.w, e.in.Now
	escalate := func(name string, reason Reason, passed bool, format string, args ...any) {
		e.record(name, reason, OutcomeEscalate, passed, format, args...)
	}
	fixForward := func(name string, reason Reason, passed bool, format string, args ...any) {
		e.record(name, reason, OutcomeFixForward, passed, format, args...)
	}

	if cfg.Freeze {
		escalate(checkFreeze, ReasonFrozen, false, "rollbacks are frozen (policy.freeze)")
	} else {
		escalate(checkFreeze, ReasonFrozen, true, "rollbacks are not frozen")
	}

	if w == nil {
		// Without facts every guard is in doubt, and doubt blocks.
		fixForward(checkFixForward, ReasonFixForwardAnnotation, false, unknownNoWorkload)
		fixForward(checkUnsafe, ReasonRollbackUnsafe, false, unknownNoWorkload)
		for _, g := range []struct {
			name   string
			reason Reason
		}{
			{checkGitOps, ReasonGitOpsManaged}, {checkFlagger, ReasonFlaggerManaged}, {checkPaused, ReasonPaused},
			{checkHistory, ReasonNoHistory}, {checkRecent, ReasonNoRecentRollout},
			{checkAlertAfter, ReasonAlertPredatesRollout}, {checkCooldown, ReasonCooldown},
		} {
			escalate(g.name, g.reason, false, unknownNoWorkload)
		}
	} else {
		e.fixForwardCheck(fixForward)

		if v := w.Annotations[kinds.AnnotationRollbackUnsafe]; v != "" {
			fixForward(checkUnsafe, ReasonRollbackUnsafe, false, "annotation %s=%q says a rollback would cause data issues", kinds.AnnotationRollbackUnsafe, v)
		} else {
			fixForward(checkUnsafe, ReasonRollbackUnsafe, true, "no %s annotation", kinds.AnnotationRollbackUnsafe)
		}

		switch m := p.GitOpsManager(w); {
		case m != "" && cfg.GitOps.Mode == GitOpsPauseAndUndo:
			escalate(checkGitOps, ReasonGitOpsManaged, true, "managed by %s; policy.gitops.mode %s pauses it before the rollback", m, GitOpsPauseAndUndo)
		case m != "":
			escalate(checkGitOps, ReasonGitOpsManaged, false, "managed by %s, which would undo a rollback; revert in Git instead", m)
		default:
			escalate(checkGitOps, ReasonGitOpsManaged, true, "not managed by Argo CD or Flux")
		}

		if c := w.FlaggerCanary; c != "" {
			escalate(checkFlagger, ReasonFlaggerManaged, false, "the primary of Flagger Canary %s, which promotes its target onto it and would fight a rollback; roll back the Canary's target instead", c)
		} else {
			escalate(checkFlagger, ReasonFlaggerManaged, true, "not owned by a Flagger Canary")
		}

		if w.Paused {
			escalate(checkPaused, ReasonPaused, false, "the rollout is paused, someone is working on it")
		} else {
			escalate(checkPaused, ReasonPaused, true, "the rollout is not paused")
		}

		if w.PreviousRevision == 0 {
			escalate(checkHistory, ReasonNoHistory, false, "no revision older than %d to roll back to", w.Revision)
		} else {
			escalate(checkHistory, ReasonNoHistory, true, "revision %d is there to roll back to", w.PreviousRevision)
		}

		e.recentCheck(escalate)
		e.alertAfterCheck(escalate)

		switch {
		case w.LastAutoRollbackAt.IsZero():
			escalate(checkCooldown, ReasonCooldown, true, "never rolled back automatically")
		case now.Sub(w.LastAutoRollbackAt) >= cfg.Cooldown.Duration:
			escalate(checkCooldown, ReasonCooldown, true, "last automatic rollback %s ago, the %s cooldown has passed", age(now.Sub(w.LastAutoRollbackAt)), cfg.Cooldown.Duration)
		default:
			escalate(checkCooldown, ReasonCooldown, false, "last automatic rollback %s ago, within the %s cooldown", age(now.Sub(w.LastAutoRollbackAt)), cfg.Cooldown.Duration)
		}
	}

	u, b := e.in.Usage, cfg.Budget
	passed := u.Workload < b.PerWorkloadPerHour && u.Global < b.GlobalPerHour
	detail := fmt.Sprintf("%d of %d rollbacks of this workload and %d of %d in all used in the last hour", u.Workload, b.PerWorkloadPerHour, u.Global, b.GlobalPerHour)
	if !passed {
		detail += ", budget exhausted"
	}
	escalate(checkBudget, ReasonBudgetExhausted, passed, "%s", detail)
}

type recordFunc func(name string, reason Reason, passed bool, format string, args ...any)

// fixForwardCheck reads kinds.AnnotationFixForward: "true" is set until removed,
// an RFC3339 time is set until then, and any other value is set, because a
// value we cannot read is doubt.
func (e *evaluation) fixForwardCheck(fixForward recordFunc) {
	v, ok := e.w.Annotations[kinds.AnnotationFixForward]
	if !ok || v == "" {
		fixForward(checkFixForward, ReasonFixForwardAnnotation, true, "no %s annotation", kinds.AnnotationFixForward)
		return
	}
	if v == "true" {
		fixForward(checkFixForward, ReasonFixForwardAnnotation, false, "annotation %s=\"true\": the owners fix forward", kinds.AnnotationFixForward)
		return
	}
	until, err := time.Parse(time.RFC3339, v)
	switch {
	case err != nil:
		fixForward(checkFixForward, ReasonFixForwardAnnotation, false, "annotation %s=%q is neither \"true\" nor an RFC3339 time; treated as set", kinds.AnnotationFixForward, v)
	case e.in.Now.Before(until):
		fixForward(checkFixForward, ReasonFixForwardAnnotation, false, "annotation %s: the owners fix forward until %s", kinds.AnnotationFixForward, v)
	default:
		fixForward(checkFixForward, ReasonFixForwardAnnotation, true, "annotation %s expired at %s", kinds.AnnotationFixForward, v)
	}
}

func (e *evaluation) recentCheck(escalate recordFunc) {
	w, window := e.w, e.window()
	if w.RolloutStartedAt.IsZero() {
		escalate(checkRecent, ReasonNoRecentRollout, false, "revision %d has no known rollout start", w.Revision)
		return
	}
	since := e.in.Now.Sub(w.RolloutStartedAt)
	if since <= window {
		escalate(checkRecent, ReasonNoRecentRollout, true, "revision %d started rolling out %s, within %s", w.Revision, ago(since), e.windowName())
	} else {
		escalate(checkRecent, ReasonNoRecentRollout, false, "revision %d started rolling out %s, outside %s", w.Revision, ago(since), e.windowName())
	}
}

// rule is the rule whose outcome is being guarded: the one that matched,
// or the one whose condition failed.
func (e *evaluation) rule() *rule {
	if e.matched != nil {
		return e.matched
	}
	return e.errored
}

// window is the recent-rollout window that applies: the rule's own, else
// the global one.
func (e *evaluation) window() time.Duration {
	if r := e.rule(); r != nil {
		return r.window
	}
	return e.p.cfg.RecentRolloutWindow.Duration
}

func (e *evaluation) windowName() string {
	if r := e.rule(); r != nil {
		return r.windowName
	}
	return windowName(e.p.cfg.RecentRolloutWindow.Duration, Rule{})
}

func (e *evaluation) alertAfterCheck(escalate recordFunc) {
	w, skew, starts := e.w, e.p.cfg.ClockSkew.Duration, e.in.Alert.StartsAt
	if w.RolloutStartedAt.IsZero() {
		escalate(checkAlertAfter, ReasonAlertPredatesRollout, false, "unknown: revision %d has no known rollout start", w.Revision)
		return
	}
	d := starts.Sub(w.RolloutStartedAt)
	switch {
	case d >= 0:
		escalate(checkAlertAfter, ReasonAlertPredatesRollout, true, "the alert started %s after revision %d began rolling out", age(d), w.Revision)
	case -d <= skew:
		escalate(checkAlertAfter, ReasonAlertPredatesRollout, true, "the alert started %s before revision %d began rolling out, within the %s clock skew", age(-d), w.Revision, skew)
	default:
		escalate(checkAlertAfter, ReasonAlertPredatesRollout, false, "the alert started %s before revision %d began rolling out, more than the %s clock skew: the rollout did not cause it", age(-d), w.Revision, skew)
	}
}

func (e *evaluation) decide() Decision {
	d := Decision{Target: e.in.Target, Checks: make([]Check, len(e.steps))}
	var failed *step
	for i := range e.steps {
		d.Checks[i] = e.steps[i].Check
		if failed == nil && !e.steps[i].Passed {
			failed = &e.steps[i]
		}
	}
	if r := e.matched; r != nil {
		d.Rule, d.Criterion = r.Name, r.Criterion
	} else if r := e.errored; r != nil {
		d.Rule, d.Criterion = r.Name, r.Criterion
	}

	t := e.in.Target.String()
	switch {
	case failed != nil:
		d.Outcome, d.Reason = failed.outcome, failed.Reason
		switch {
		case d.Outcome == OutcomeRefuse && !e.in.Target.Complete():
			d.Message = "refuse to act: " + failed.Detail
		case d.Outcome == OutcomeRefuse:
			d.Message = "refuse to act on " + t + ": " + failed.Detail
		case d.Outcome == OutcomeIgnore:
			d.Message = fmt.Sprintf("ignore the alert about %s: %s", t, failed.Detail)
		case d.Reason == ReasonRuleError:
			d.Message = fmt.Sprintf("escalate about %s: %s", t, failed.Detail)
		case d.Outcome == OutcomeFixForward:
			d.Message = fmt.Sprintf("fix forward instead of rolling back %s: %s", t, failed.Detail)
		default:
			d.Message = fmt.Sprintf("escalate instead of rolling back %s: %s", t, failed.Detail)
		}
	case e.matched != nil:
		r := e.matched
		d.Outcome, d.Reason = r.Outcome, ReasonCriterionMet
		why := fmt.Sprintf("rule %s (%s) matched", r.Name, r.Criterion)
		switch r.Outcome {
		case OutcomeRollback:
			d.DryRun = e.p.cfg.DryRun
			verb := "roll back"
			if d.DryRun {
				verb = "dry run, would roll back"
			}
			d.Message = fmt.Sprintf("%s %s: %s and revision %d started rolling out %s, within %s",
				verb, t, why, e.w.Revision, ago(e.in.Now.Sub(e.w.RolloutStartedAt)), e.windowName())
		case OutcomeFixForward:
			d.Message = fmt.Sprintf("fix forward instead of rolling back %s: %s", t, why)
		default:
			d.Message = fmt.Sprintf("ignore the alert about %s: %s", t, why)
		}
	default:
		d.Outcome, d.Reason = e.p.cfg.DefaultOutcome, ReasonNoMatchingRule
		verb := "ignore the alert about"
		if d.Outcome == OutcomeFixForward {
			verb = "fix forward instead of rolling back"
		}
		d.Message = fmt.Sprintf("%s %s: no rule matched and the default outcome is %s", verb, t, d.Outcome)
	}
	return d
}

// age renders a duration to the second, as in "4m0s".
func age(d time.Duration) string { return d.Round(time.Second).String() }

// ago renders how long ago something started; a start in the future means
// the clocks disagree.
func ago(d time.Duration) string {
	if d < 0 {
		return age(-d) + " from now (clocks disagree)"
	}
	return age(d) + " ago"
}
