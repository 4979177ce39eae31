package policy

import (
	"maps"
	"slices"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// Config is the `policy:` section of the daemon configuration. It is decoded
// by viper/mapstructure and printed as JSON or YAML, hence both tags.
// Compile validates it.
type Config struct {
	// DryRun makes the daemon decide and report but never change anything.
	DryRun bool `json:"dryRun" mapstructure:"dryRun"`
	// Freeze blocks every rollback: rollbacks escalate with reason frozen.
	Freeze bool `json:"freeze" mapstructure:"freeze"`
	// ClusterLabel, when set, is the alert label naming the cluster an
	// alert is about; an alert that does not name this daemon's cluster
	// (cluster.name) is ignored with reason other_cluster.
	ClusterLabel string `json:"clusterLabel" mapstructure:"clusterLabel"`
	// OptInLabel is the workload label that must be "true".
	OptInLabel string     `json:"optInLabel" mapstructure:"optInLabel"`
	Namespaces Namespaces `json:"namespaces" mapstructure:"namespaces"`
	Origin     OriginRule `json:"origin" mapstructure:"origin"`
	// RecentRolloutWindow: roll back only if the current revision started
	// rolling out within this window.
	RecentRolloutWindow metav1.Duration `json:"recentRolloutWindow" mapstructure:"recentRolloutWindow"`
	// ClockSkew is how much earlier than the rollout an alert may start and
	// still blame it: the alert's and the cluster's clocks differ.
	ClockSkew metav1.Duration `json:"clockSkew" mapstructure:"clockSkew"`
	// Cooldown: after an automatic rollback of a workload, no second one
	// within this time.
	Cooldown metav1.Duration `json:"cooldown" mapstructure:"cooldown"`
	Budget   Budget          `json:"budget" mapstructure:"budget"`
	// DefaultOutcome applies when no rule matches: ignore or fix_forward,
	// never rollback.
	DefaultOutcome Outcome       `json:"defaultOutcome" mapstructure:"defaultOutcome"`
	DefaultTarget  DefaultTarget `json:"defaultTarget" mapstructure:"defaultTarget"`
	// Rules are tried in order; the first that matches decides.
	Rules []Rule `json:"rules" mapstructure:"rules"`
	// GitOps says what to do with workloads Argo CD or Flux manage.
	GitOps GitOps `json:"gitops" mapstructure:"gitops"`
	// Helm says how to roll back workloads that are part of a Helm release.
	Helm Helm `json:"helm" mapstructure:"helm"`
}

// HelmMode is what a rollback of a workload that is part of a Helm release
// does.
type HelmMode string

// The Helm modes.
const (
	// HelmUndoWorkload: undo the workload alone, as for any other, and
	// announce that the release's history still records the bad version.
	HelmUndoWorkload HelmMode = "undo-workload"
	// HelmRollbackRelease: roll the release back, as `helm rollback` does,
	// to the revision whose manifest carries the template to restore, so
	// that Helm's history says what runs.
	HelmRollbackRelease HelmMode = "rollback-release"
)

// Helm configures workloads that are part of a Helm release.
type Helm struct {
	// Mode is undo-workload (also when empty) or rollback-release.
	Mode HelmMode `json:"mode" mapstructure:"mode"`
}

// GitOpsMode is what a rollback of a GitOps-managed workload does.
type GitOpsMode string

// The GitOps modes.
const (
	// GitOpsEscalate: never roll back a GitOps-managed workload; people
	// revert in Git (reason gitops_managed).
	GitOpsEscalate GitOpsMode = "escalate"
	// GitOpsPauseAndUndo: pause the workload's Argo CD Application or Flux
	// Kustomization/HelmRelease, then roll back; resumed by an operator or
	// when the owner's revision changes.
	GitOpsPauseAndUndo GitOpsMode = "pause-and-undo"
)

// GitOps configures GitOps-managed workloads.
type GitOps struct {
	// Mode is escalate (also when empty) or pause-and-undo.
	Mode   GitOpsMode `json:"mode" mapstructure:"mode"`
	ArgoCD ArgoCD     `json:"argocd" mapstructure:"argocd"`
}

// DefaultArgoCDNamespace is where Argo CD keeps its Applications by default.
const DefaultArgoCDNamespace = "argocd"

// ArgoCD says how Argo CD tracks workloads and where its Applications are.
type ArgoCD struct {
	// TrackingLabel, when set, is a label whose value names the workload's
	// Application (Argo CD 2.x's label tracking; its default
	// app.kubernetes.io/instance is set by Helm too, hence opt-in). Empty:
	// only the tracking annotation and argocd.argoproj.io/instance count.
	TrackingLabel string `json:"trackingLabel" mapstructure:"trackingLabel"`
	// Namespace holds the Applications whose tracking id or label has no
	// namespace of its own.
	Namespace string `json:"namespace" mapstructure:"namespace"`
}

// Namespaces limits where the daemon acts. Deny wins over Allow.
type Namespaces struct {
	Allow []string `json:"allow" mapstructure:"allow"` // empty: every namespace not denied
	Deny  []string `json:"deny" mapstructure:"deny"`
}

// OriginRule binds an alert to the namespace it was raised in.
type OriginRule struct {
	// Label is the alert label that holds the namespace the alert comes
	// from, such as the one the Prometheus Operator's
	// enforcedNamespaceLabel sets. When set, it must equal the target's
	// namespace, or be listed in the target's
	// kinds.AnnotationAllowedOriginNamespaces. Empty: no such rule.
	Label string `json:"label" mapstructure:"label"`
}

// Budget limits automatic rollbacks per rolling hour.
type Budget struct {
	PerWorkloadPerHour int `json:"perWorkloadPerHour" mapstructure:"perWorkloadPerHour"`
	GlobalPerHour      int `json:"globalPerHour" mapstructure:"globalPerHour"`
}

// DefaultTarget says how to find the workload an alert names when no rule
// overrides it.
type DefaultTarget struct {
	// NamespaceLabel is the alert label holding the namespace.
	NamespaceLabel string `json:"namespaceLabel" mapstructure:"namespaceLabel"`
	// KindLabels maps an alert label name to the kind of workload its value
	// names, as kube-state-metrics labels them. Exactly one must be present.
	KindLabels map[string]Kind `json:"kindLabels" mapstructure:"kindLabels"`
}

// Rule maps alerts to an outcome and names the runbook criterion it stands
// for.
type Rule struct {
	Name string `json:"name" mapstructure:"name"`
	// Matchers use Alertmanager matcher syntax; all must match.
	Matchers []string `json:"matchers" mapstructure:"matchers"`
	// Criterion is the runbook criterion, [a-z][a-z0-9_]*; a metric label.
	Criterion string  `json:"criterion" mapstructure:"criterion"`
	Outcome   Outcome `json:"outcome" mapstructure:"outcome"`
	// When is an optional CEL condition that must also be true.
	When string `json:"when,omitempty" mapstructure:"when"`
	// RecentRolloutWindow, when set, replaces Config.RecentRolloutWindow
	// for the alerts this rule decides. Only for outcome rollback.
	RecentRolloutWindow *metav1.Duration `json:"recentRolloutWindow,omitempty" mapstructure:"recentRolloutWindow"`
	// Target optionally overrides how the workload is found.
	Target RuleTarget `json:"target,omitzero" mapstructure:"target"`
}

// RuleTarget overrides DefaultTarget for alerts a rule matches. Templates win
// over label names. Kind is required with NameLabel or NameTemplate; without
// them the kind and name come from DefaultTarget.KindLabels.
type RuleTarget struct {
	Kind           Kind   `json:"kind,omitempty" mapstructure:"kind"`
	NamespaceLabel string `json:"namespaceLabel,omitempty" mapstructure:"namespaceLabel"`
	NameLabel      string `json:"nameLabel,omitempty" mapstructure:"nameLabel"`
	// Templates use text/template's syntax over the Alert, for example
	// {{ .Labels.kubernetes_namespace }}; see strtemplate for what they may
	// use.
	NamespaceTemplate string `json:"namespaceTemplate,omitempty" mapstructure:"namespaceTemplate"`
	NameTemplate      string `json:"nameTemplate,omitempty" mapstructure:"nameTemplate"`
}

// DefaultConfig returns the policy that encodes the service rollback
// runbook: roll back when a service is down, data is being corrupted, a
// security vulnerability is out or a critical business flow is broken; fix
// forward when the issue is isolated to a non-critical feature.
//
// Data corruption and security vulnerabilities get a 24h recent-rollout
// window: they are found by integrity checks, scanners and reports hours
// after the deploy that caused them, and the bad revision does harm for as
// long as it runs. Outages and broken flows show on request metrics within
// minutes, so they keep the global hour.
func DefaultConfig() Config {
	d := func(x time.Duration) metav1.Duration { return metav1.Duration{Duration: x} }
	rule := func(criterion string, outcome Outcome) Rule {
		return Rule{
			Name:      dashed(criterion),
			Matchers:  []string{`impact="` + criterion + `"`},
			Criterion: criterion,
			Outcome:   outcome,
		}
	}
	foundLate := func(r Rule) Rule {
		r.RecentRolloutWindow = &metav1.Duration{Duration: 24 * time.Hour}
		return r
	}
	return Config{
		OptInLabel: DefaultOptInLabel,
		Namespaces: Namespaces{
			Allow: []string{},
			Deny:  []string{"kube-system", "kube-public", "kube-node-lease"},
		},
		RecentRolloutWindow: d(time.Hour),
		ClockSkew:           d(2 * time.Minute),
		Cooldown:            d(10 * time.Minute),
		Budget:              Budget{PerWorkloadPerHour: 2, GlobalPerHour: 10},
		DefaultOutcome:      OutcomeIgnore,
		DefaultTarget: DefaultTarget{
			NamespaceLabel: "namespace",
			KindLabels: map[string]Kind{
				"deployment":  KindDeployment,
				"statefulset": KindStatefulSet,
				"daemonset":   KindDaemonSet,
				"rollout":     KindRollout,
			},
		},
		GitOps: GitOps{Mode: GitOpsEscalate, ArgoCD: ArgoCD{Namespace: DefaultArgoCDNamespace}},
		Helm:   Helm{Mode: HelmUndoWorkload},
		Rules: []Rule{
			rule("service_down", OutcomeRollback),
			foundLate(rule("data_corruption", OutcomeRollback)),
			foundLate(rule("security_vulnerability", OutcomeRollback)),
			rule("critical_flow_broken", OutcomeRollback),
			rule("non_critical", OutcomeFixForward),
		},
	}
}

func dashed(s string) string {
	b := []byte(s)
	for i, c := range b {
		if c == '_' {
			b[i] = '-'
		}
	}
	return string(b)
}

// clone returns a deep copy, so a compiled Policy cannot be changed through
// the Config it was compiled from or the one it hands out.
func (c Config) clone() Config {
	c.Namespaces.Allow = slices.Clone(c.Namespaces.Allow)
	c.Namespaces.Deny = slices.Clone(c.Namespaces.Deny)
	c.DefaultTarget.KindLabels = maps.Clone(c.DefaultTarget.KindLabels)
	c.Rules = slices.Clone(c.Rules)
	for i := range c.Rules {
		c.Rules[i].Matchers = slices.Clone(c.Rules[i].Matchers)
		if w := c.Rules[i].RecentRolloutWindow; w != nil {
			c.Rules[i].RecentRolloutWindow = &metav1.Duration{Duration: w.Duration}
		}
	}
	return c
}

// GitOpsManager names the GitOps controller that manages w ("argocd",
// "flux" or ""): the one the facts found, or Argo CD when the configured
// gitops.argocd.trackingLabel is set on w.
func (p *Policy) GitOpsManager(w *Workload) string {
	if w == nil {
		return ""
	}
	if w.GitOpsManager != "" {
		return w.GitOpsManager
	}
	if l := p.cfg.GitOps.ArgoCD.TrackingLabel; l != "" && w.Labels[l] != "" {
		return "argocd"
	}
	return ""
}

// PauseGitOps reports whether a rollback of a GitOps-managed workload
// pauses its owner first (gitops.mode pause-and-undo).
func (p *Policy) PauseGitOps() bool { return p.cfg.GitOps.Mode == GitOpsPauseAndUndo }

// RollbackHelmRelease reports whether a rollback of a workload that is part
// of a Helm release rolls the release back (helm.mode rollback-release).
func (p *Policy) RollbackHelmRelease() bool { return p.cfg.Helm.Mode == HelmRollbackRelease }
