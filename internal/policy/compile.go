package policy

import (
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"regexp"
	"slices"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/google/cel-go/cel"
	"github.com/prometheus/alertmanager/matcher/compat"
	"github.com/prometheus/alertmanager/pkg/labels"
	"k8s.io/apimachinery/pkg/api/validate/content"
	"k8s.io/utils/lru"

	"github.com/autorollbackd/autorollbackd/internal/helm"
	"github.com/autorollbackd/autorollbackd/internal/strtemplate"
)

// KeyError is a problem with one key of the policy section. Key is relative
// to the section, for example "rules[2].matchers[0]", so the config package
// can prefix "policy.".
type KeyError struct {
	Key string
	Err error
}

func (e *KeyError) Error() string { return e.Key + ": " + e.Err.Error() }
func (e *KeyError) Unwrap() error { return e.Err }

// Policy is a compiled, validated Config. It is immutable and safe for
// concurrent use.
type Policy struct {
	cfg           Config
	rules         []*rule
	defaultTarget target
	deny, allow   map[string]bool
	// matchers caches parsed kinds.AnnotationAlertMatchers values, by value;
	// a cache, not state: a decision does not depend on it.
	matchers *lru.Cache
	// parseMatchers parses them as Alertmanager does by default.
	parseMatchers compat.ParseMatchers
	// cluster is this daemon's cluster, which alerts must name in
	// cfg.ClusterLabel when it is set.
	cluster string
}

// Option changes how Compile compiles.
type Option func(*options)

type options struct {
	logger  *slog.Logger
	cluster string
}

// WithCluster names the cluster this daemon acts on (cluster.name), which
// alerts must name in ClusterLabel when it is set.
func WithCluster(name string) Option { return func(o *options) { o.cluster = name } }

// WithLogger logs what compiling and evaluating want known but is no
// error: a matcher only Alertmanager's classic parser takes.
func WithLogger(l *slog.Logger) Option { return func(o *options) { o.logger = l } }

type rule struct {
	Rule
	matchers labels.Matchers
	when     cel.Program // nil without a condition
	target   target
	window   time.Duration // the rule's recentRolloutWindow, else the global one
	// windowName names window in decisions, built once here rather than
	// for every alert.
	windowName string
}

// target is how to find the workload in an alert's labels.
type target struct {
	namespaceLabel string
	namespaceTmpl  *strtemplate.Template // wins over namespaceLabel
	kind           Kind                  // "" means: use kindLabels
	nameLabel      string
	nameTmpl       *strtemplate.Template // wins over nameLabel
	kindLabels     []kindLabel           // sorted by label
}

type kindLabel struct {
	label string
	kind  Kind
}

var criterionRE = regexp.MustCompile(`^[a-z][a-z0-9_]*$`)

// Compile validates cfg and compiles its matchers, CEL conditions and
// templates. It reports every problem, each as a *KeyError naming the key,
// joined with errors.Join.
//
// Matchers are parsed as Alertmanager parses them by default: with its
// UTF-8 parser, falling back to the classic one (and logging a warning
// that names the key) for input only the classic parser takes.
func Compile(cfg Config, opts ...Option) (*Policy, error) {
	o := options{logger: slog.New(slog.DiscardHandler)}
	for _, opt := range opts {
		opt(&o)
	}
	cfg = cfg.clone()
	c := &compiler{}
	p := &Policy{cfg: cfg, deny: map[string]bool{}, allow: map[string]bool{}, matchers: lru.New(matchersCacheSize),
		parseMatchers: compat.FallbackMatchersParser(o.logger), cluster: o.cluster}
	parseMatcher := compat.FallbackMatcherParser(o.logger)

	if msgs := content.IsLabelKey(cfg.OptInLabel); len(msgs) > 0 {
		c.bad("optInLabel", "must be a label key: %s", strings.Join(msgs, "; "))
	}
	for i, ns := range cfg.Namespaces.Deny {
		if msgs := content.IsDNS1123Label(ns); len(msgs) > 0 {
			c.bad(fmt.Sprintf("namespaces.deny[%d]", i), "must be a namespace name: %s", strings.Join(msgs, "; "))
		}
		p.deny[ns] = true
	}
	for i, ns := range cfg.Namespaces.Allow {
		if msgs := content.IsDNS1123Label(ns); len(msgs) > 0 {
			c.bad(fmt.Sprintf("namespaces.allow[%d]", i), "must be a namespace name: %s", strings.Join(msgs, "; "))
		}
		if p.deny[ns] {
			c.bad(fmt.Sprintf("namespaces.allow[%d]", i), "%q is also in namespaces.deny", ns)
		}
		p.allow[ns] = true
	}

	if l := cfg.ClusterLabel; l != "" {
		switch {
		case !validLabelName(l):
			c.bad("clusterLabel", "must be a UTF-8 label name, got %q", l)
		case o.cluster == "":
			c.bad("clusterLabel", "is set, so cluster.name must name this cluster")
		}
	}
	if l := cfg.Origin.Label; l != "" && !validLabelName(l) {
		c.bad("origin.label", "must be a UTF-8 label name, got %q", l)
	}

	if d := cfg.RecentRolloutWindow.Duration; d <= 0 {
		c.bad("recentRolloutWindow", "must be a positive duration, got %s", d)
	}
	if d := cfg.ClockSkew.Duration; d < 0 {
		c.bad("clockSkew", "must not be negative, got %s", d)
	}
	if d := cfg.Cooldown.Duration; d <= 0 {
		c.bad("cooldown", "must be a positive duration, got %s", d)
	}
	if n := cfg.Budget.PerWorkloadPerHour; n < 1 {
		c.bad("budget.perWorkloadPerHour", "must be at least 1, got %d", n)
	}
	if n := cfg.Budget.GlobalPerHour; n < 1 {
		c.bad("budget.globalPerHour", "must be at least 1, got %d", n)
	}
	if o := cfg.DefaultOutcome; o != OutcomeIgnore && o != OutcomeFixForward {
		c.bad("defaultOutcome", "must be ignore or fix_forward, got %q", o)
	}

	switch cfg.GitOps.Mode {
	case "", GitOpsEscalate, GitOpsPauseAndUndo:
	default:
		c.bad("gitops.mode", "must be %s or %s, got %q", GitOpsEscalate, GitOpsPauseAndUndo, cfg.GitOps.Mode)
	}
	if l := cfg.GitOps.ArgoCD.TrackingLabel; l != "" {
		if msgs := content.IsLabelKey(l); len(msgs) > 0 {
			c.bad("gitops.argocd.trackingLabel", "must be a label key: %s", strings.Join(msgs, "; "))
		}
	}
	if cfg.GitOps.ArgoCD.Namespace == "" {
		p.cfg.GitOps.ArgoCD.Namespace = DefaultArgoCDNamespace
	} else if msgs := content.IsDNS1123Label(cfg.GitOps.ArgoCD.Namespace); len(msgs) > 0 {
		c.bad("gitops.argocd.namespace", "must be a namespace name: %s", strings.Join(msgs, "; "))
	}

	switch cfg.Helm.Mode {
	case "", HelmUndoWorkload:
	case HelmRollbackRelease:
		if !helm.SDK {
			c.bad("helm.mode", "%s needs the Helm SDK, which this build of autorollbackd lacks: use the -helm image (built with -tags helm)", HelmRollbackRelease)
		}
	default:
		c.bad("helm.mode", "must be %s or %s, got %q", HelmUndoWorkload, HelmRollbackRelease, cfg.Helm.Mode)
	}

	p.defaultTarget = c.defaultTarget(cfg.DefaultTarget)

	names := map[string]int{}
	for i, r := range cfg.Rules {
		key := fmt.Sprintf("rules[%d]", i)
		cr := &rule{Rule: r}
		if r.Name == "" {
			c.bad(key+".name", "must not be empty")
		} else if j, dup := names[r.Name]; dup {
			c.bad(key+".name", "duplicate rule name %q (also rules[%d])", r.Name, j)
		} else {
			names[r.Name] = i
		}
		if len(r.Matchers) == 0 {
			c.bad(key+".matchers", "must have at least one matcher")
		}
		for j, s := range r.Matchers {
			mkey := fmt.Sprintf("%s.matchers[%d]", key, j)
			m, err := parseMatcher(s, "policy."+mkey)
			if err != nil {
				c.add(mkey, fmt.Errorf("parse matcher %q: %w", s, err))
				continue
			}
			cr.matchers = append(cr.matchers, m)
		}
		if !criterionRE.MatchString(r.Criterion) {
			c.bad(key+".criterion", "must match %s, got %q", criterionRE, r.Criterion)
		}
		switch r.Outcome {
		case OutcomeRollback, OutcomeFixForward, OutcomeIgnore:
		default:
			c.bad(key+".outcome", "must be rollback, fix_forward or ignore, got %q", r.Outcome)
		}
		if r.When != "" {
			prg, err := c.compileWhen(r.When)
			if err != nil {
				c.add(key+".when", err)
			}
			cr.when = prg
		}
		cr.window = cfg.RecentRolloutWindow.Duration
		if w := r.RecentRolloutWindow; w != nil {
			switch {
			case w.Duration <= 0:
				c.bad(key+".recentRolloutWindow", "must be a positive duration, got %s", w.Duration)
			case r.Outcome == OutcomeFixForward || r.Outcome == OutcomeIgnore:
				// The guards run only before a rollback: the window would
				// silently do nothing. (A bad outcome is reported above.)
				c.bad(key+".recentRolloutWindow", "only applies to rules with outcome rollback, got outcome %s", r.Outcome)
			}
			cr.window = w.Duration
		}
		cr.windowName = windowName(cr.window, r)
		cr.target = c.ruleTarget(key+".target", r.Target, p.defaultTarget)
		p.rules = append(p.rules, cr)
	}

	if err := errors.Join(c.errs...); err != nil {
		return nil, err
	}
	return p, nil
}

// windowName names a recent-rollout window and, when it is the rule's own,
// the rule, so that a decision says which setting to change.
func windowName(window time.Duration, r Rule) string {
	if r.RecentRolloutWindow != nil {
		return "the " + window.String() + " window of rule " + r.Name
	}
	return "the " + window.String() + " window"
}

// Config returns a copy of the configuration p was compiled from.
func (p *Policy) Config() Config { return p.cfg.clone() }

// compiler collects the problems of one Compile and the CEL environment,
// which is built once and only when a rule has a condition.
type compiler struct {
	errs   []error
	env    *cel.Env
	envErr error
}

func (c *compiler) add(key string, err error) {
	c.errs = append(c.errs, &KeyError{Key: key, Err: err})
}

func (c *compiler) bad(key, format string, args ...any) {
	c.add(key, fmt.Errorf(format, args...))
}

func (c *compiler) compileWhen(src string) (cel.Program, error) {
	if c.env == nil && c.envErr == nil {
		c.env, c.envErr = newCELEnv()
	}
	if c.envErr != nil {
		return nil, c.envErr
	}
	return compileCEL(c.env, src)
}

func (c *compiler) defaultTarget(dt DefaultTarget) target {
	t := target{namespaceLabel: dt.NamespaceLabel}
	if !validLabelName(dt.NamespaceLabel) {
		c.bad("defaultTarget.namespaceLabel", "must be a non-empty UTF-8 label name, got %q", dt.NamespaceLabel)
	}
	if len(dt.KindLabels) == 0 {
		c.bad("defaultTarget.kindLabels", "must name at least one label")
	}
	// Sorted so that problems are reported, and ambiguous alerts described,
	// in the same order every time.
	for _, label := range slices.Sorted(maps.Keys(dt.KindLabels)) {
		kind := dt.KindLabels[label]
		key := "defaultTarget.kindLabels." + label
		if !validLabelName(label) {
			c.bad(key, "must be a non-empty UTF-8 label name, got %q", label)
		}
		if !kind.Known() {
			c.bad(key, "must be Deployment, StatefulSet, DaemonSet or Rollout, got %q", kind)
		}
		t.kindLabels = append(t.kindLabels, kindLabel{label: label, kind: kind})
	}
	return t
}

func (c *compiler) ruleTarget(key string, rt RuleTarget, def target) target {
	t := def
	if rt.NamespaceLabel != "" {
		if !validLabelName(rt.NamespaceLabel) {
			c.bad(key+".namespaceLabel", "must be a UTF-8 label name, got %q", rt.NamespaceLabel)
		}
		t.namespaceLabel = rt.NamespaceLabel
	}
	if rt.NamespaceTemplate != "" {
		t.namespaceTmpl = c.template(key+".namespaceTemplate", rt.NamespaceTemplate)
	}
	if rt.NameLabel != "" && !validLabelName(rt.NameLabel) {
		c.bad(key+".nameLabel", "must be a UTF-8 label name, got %q", rt.NameLabel)
	}
	named := rt.NameLabel != "" || rt.NameTemplate != ""
	switch {
	case rt.Kind == "" && named:
		c.bad(key+".kind", "is required with nameLabel or nameTemplate")
	case rt.Kind != "" && !rt.Kind.Known():
		c.bad(key+".kind", "must be Deployment, StatefulSet, DaemonSet or Rollout, got %q", rt.Kind)
	case rt.Kind != "" && !named:
		c.bad(key+".kind", "needs nameLabel or nameTemplate to name the %s", rt.Kind)
	}
	if rt.Kind != "" {
		t.kind = rt.Kind
		t.nameLabel = rt.NameLabel
		if rt.NameTemplate != "" {
			t.nameTmpl = c.template(key+".nameTemplate", rt.NameTemplate)
		}
	}
	return t
}

// template parses a target template. Defined templates, which could call
// themselves, are refused by strtemplate, as is every other construct it
// does not evaluate.
func (c *compiler) template(key, src string) *strtemplate.Template {
	t, err := strtemplate.Parse(key, src, strtemplate.Options{Funcs: templateFuncs, MissingKey: strtemplate.MissingKeyZero})
	if err != nil {
		c.add(key, fmt.Errorf("parse template: %w", err))
		return nil
	}
	return t
}

// validLabelName accepts what Alertmanager accepts since UTF-8 label names:
// any non-empty valid UTF-8 string.
func validLabelName(s string) bool { return s != "" && utf8.ValidString(s) }
