// Package gitops pauses the Argo CD Application or Flux Kustomization or
// HelmRelease that manages a workload before the daemon rolls it back
// (policy.gitops.mode pause-and-undo), so that its controller does not
// re-apply the bad version from Git, and resumes it when an operator says so
// or when the owner's revision changes.
//
// What the daemon changed is recorded on the owner itself
// (kinds.AnnotationGitOpsPause), as the rollback is recorded on the
// workload: a retry or a restart recognises its own pause, and a resume
// restores exactly what was there before.
package gitops

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/tools/record"
	"k8s.io/utils/clock"

	"github.com/autorollbackd/autorollbackd/internal/kinds"
	"github.com/autorollbackd/autorollbackd/internal/policy"
)

// The resources of the owners.
var (
	ApplicationGVR   = schema.GroupVersionResource{Group: "argoproj.io", Version: "v1alpha1", Resource: "applications"}
	KustomizationGVR = schema.GroupVersionResource{Group: "kustomize.toolkit.fluxcd.io", Version: "v1", Resource: "kustomizations"}
	HelmReleaseGVR   = schema.GroupVersionResource{Group: "helm.toolkit.fluxcd.io", Version: "v2", Resource: "helmreleases"}
)

// The kinds of owner.
const (
	KindApplication   = "Application"
	KindKustomization = "Kustomization"
	KindHelmRelease   = "HelmRelease"
)

// Event reasons, as `kubectl describe` shows them.
const (
	EventPaused  = "GitOpsPaused"
	EventResumed = "GitOpsResumed"
)

// ErrNoOwner: the workload's labels or annotations name no owner the daemon
// can find, or the owner does not exist. A rollback would be undone by the
// controller, so the daemon escalates.
var ErrNoOwner = errors.New("no GitOps owner")

// Owner is the object that manages a workload.
type Owner struct {
	Kind      string `json:"kind"`
	Namespace string `json:"namespace"`
	Name      string `json:"name"`
}

func (o Owner) String() string { return o.Kind + " " + o.Namespace + "/" + o.Name }

func (o Owner) gvr() schema.GroupVersionResource {
	switch o.Kind {
	case KindApplication:
		return ApplicationGVR
	case KindKustomization:
		return KustomizationGVR
	}
	return HelmReleaseGVR
}

// FindOwner names the owner of workload w from its labels and annotations:
//   - Argo CD: the Application of the tracking annotation
//     "<app>:<group>/<kind>:<namespace>/<name>", whose <app> is
//     "<namespace>_<name>" for an Application outside cfg.ArgoCD.Namespace;
//     else the Application the label argocd.argoproj.io/instance or the
//     configured cfg.ArgoCD.TrackingLabel names, in cfg.ArgoCD.Namespace.
//     A tracking id that names another object (copied along with a
//     manifest) is refused, as Argo CD ignores it too.
//   - Flux: the Kustomization or HelmRelease of the labels
//     <controller>.toolkit.fluxcd.io/name and /namespace.
//
// The error wraps ErrNoOwner.
func FindOwner(w *policy.Workload, cfg policy.GitOps) (Owner, error) {
	ns := cfg.ArgoCD.Namespace
	if ns == "" {
		ns = policy.DefaultArgoCDNamespace
	}
	if id := w.Annotations[kinds.AnnotationArgoTrackingID]; id != "" {
		app, obj, ok := strings.Cut(id, ":")
		want := fmt.Sprintf("apps/%s:%s/%s", w.Kind, w.Namespace, w.Name)
		if !ok || app == "" {
			return Owner{}, fmt.Errorf("%w: annotation %s=%q is not <app>:<group>/<kind>:<namespace>/<name>", ErrNoOwner, kinds.AnnotationArgoTrackingID, id)
		}
		if obj != want {
			return Owner{}, fmt.Errorf("%w: annotation %s=%q tracks %s, not this workload (%s)", ErrNoOwner, kinds.AnnotationArgoTrackingID, id, obj, want)
		}
		if appNS, name, ok := strings.Cut(app, "_"); ok {
			return Owner{Kind: KindApplication, Namespace: appNS, Name: name}, nil
		}
		return Owner{Kind: KindApplication, Namespace: ns, Name: app}, nil
	}
	for _, l := range []string{kinds.LabelArgoInstance, cfg.ArgoCD.TrackingLabel} {
		if app := w.Labels[l]; l != "" && app != "" {
			return Owner{Kind: KindApplication, Namespace: ns, Name: app}, nil
		}
	}
	for _, f := range []struct{ kind, name, namespace string }{
		{KindKustomization, kinds.LabelFluxKustomization, kinds.LabelFluxKustomizationNamespace},
		{KindHelmRelease, kinds.LabelFluxHelm, kinds.LabelFluxHelmNamespace},
	} {
		name := w.Labels[f.name]
		if name == "" {
			continue
		}
		owNS := w.Labels[f.namespace]
		if owNS == "" {
			return Owner{}, fmt.Errorf("%w: label %s=%q without label %s", ErrNoOwner, f.name, name, f.namespace)
		}
		return Owner{Kind: f.kind, Namespace: owNS, Name: name}, nil
	}
	return Owner{}, fmt.Errorf("%w: no Argo CD tracking annotation or label, and no Flux label", ErrNoOwner)
}

// Record is what the daemon wrote on a paused owner
// (kinds.AnnotationGitOpsPause).
type Record struct {
	Incident string    `json:"incident"`
	Workload kinds.Ref `json:"workload"`
	At       time.Time `json:"at"`
	Revision string    `json:"revision,omitempty"` // the owner's revision at the pause (see revision)
	// Argo CD: Automated says the Application had an automated sync
	// policy, whose selfHeal was SelfHeal (nil: unset) and is now false.
	// Without one nothing syncs on its own and nothing was changed.
	Automated bool  `json:"automated,omitempty"`
	SelfHeal  *bool `json:"selfHeal,omitempty"`
	// Flux: Suspended is spec.suspend before the pause; the daemon set it
	// to true, and sets it back to false on resume only if it was false.
	Suspended bool `json:"suspended,omitempty"`
}

// Pause is the outcome of Pauser.Pause.
type Pause struct {
	Owner  Owner
	Record Record
	// Resumed: this incident's pause was already recorded on the owner (a
	// retry or a restart); nothing was written.
	Resumed bool
	// Earlier: another incident's pause is still in force; it is kept, so
	// that a resume restores what was there before either.
	Earlier bool
}

// Message says what the pause means for people: Git still points at the
// bad version.
func (p Pause) Message() string {
	what := "self-heal is off"
	switch {
	case p.Owner.Kind != KindApplication:
		what = "reconciliation is suspended"
	case !p.Record.Automated:
		what = "it has no automated sync, so nothing was changed"
	}
	return fmt.Sprintf("%s paused (%s): Git still points at the bad version; it stays paused until a fix is committed (its revision changes) or an operator sets %s=true on it",
		p.Owner, what, kinds.AnnotationGitOpsResume)
}

// Pauser pauses and resumes owners.
type Pauser struct {
	Dynamic  dynamic.Interface
	Recorder record.EventRecorder
	Logger   *slog.Logger
	Clock    clock.PassiveClock
	// Config returns the gitops section of the policy in force.
	Config func() policy.GitOps
	// ListLimit bounds the owners one pass of ResumeDue reads per kind;
	// zero means 500.
	ListLimit int64
}

// Pause pauses the owner of w for incident. It is idempotent: a pause
// recorded for the same incident is recognised and not written again.
func (p *Pauser) Pause(ctx context.Context, w *policy.Workload, incident string, dryRun bool) (Pause, error) {
	owner, err := FindOwner(w, p.Config())
	if err != nil {
		return Pause{}, err
	}
	res := Pause{Owner: owner}
	obj, err := p.Dynamic.Resource(owner.gvr()).Namespace(owner.Namespace).Get(ctx, owner.Name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return res, fmt.Errorf("%w: %s, which %s names, does not exist", ErrNoOwner, owner, w.Ref)
	}
	if err != nil {
		return res, fmt.Errorf("read %s: %w", owner, err)
	}
	if raw := obj.GetAnnotations()[kinds.AnnotationGitOpsPause]; raw != "" {
		if err := json.Unmarshal([]byte(raw), &res.Record); err != nil {
			return res, fmt.Errorf("%s: annotation %s: %w", owner, kinds.AnnotationGitOpsPause, err)
		}
		res.Resumed = res.Record.Incident == incident
		res.Earlier = !res.Resumed
		return res, nil
	}
	rec := Record{Incident: incident, Workload: w.Ref, At: p.Clock.Now().UTC().Truncate(time.Second), Revision: p.revision(ctx, obj)}
	spec := map[string]any{}
	if owner.Kind == KindApplication {
		automated, found, _ := unstructured.NestedMap(obj.Object, "spec", "syncPolicy", "automated")
		if found && automated != nil {
			rec.Automated = true
			if v, ok := automated["selfHeal"].(bool); ok {
				rec.SelfHeal = &v
			}
			spec["syncPolicy"] = map[string]any{"automated": map[string]any{"selfHeal": false}}
		}
	} else {
		rec.Suspended, _, _ = unstructured.NestedBool(obj.Object, "spec", "suspend")
		spec["suspend"] = true
	}
	res.Record = rec
	body, err := json.Marshal(rec)
	if err != nil {
		return res, err
	}
	patch := map[string]any{
		"metadata": map[string]any{
			"resourceVersion": obj.GetResourceVersion(),
			"labels":          map[string]any{kinds.LabelGitOpsPaused: "true"},
			"annotations":     map[string]any{kinds.AnnotationGitOpsPause: string(body)},
		},
		"spec": spec,
	}
	if err := p.patch(ctx, owner, patch, dryRun); err != nil {
		return res, fmt.Errorf("pause %s: %w", owner, err)
	}
	if !dryRun {
		p.Recorder.Eventf(workloadRef(w.Ref), corev1.EventTypeWarning, EventPaused, "incident %s: %s", incident, res.Message())
		p.Logger.Info("paused GitOps owner", "owner", owner.String(), "workload", w.Ref.String(), "incident", incident, "revision", rec.Revision)
	}
	return res, nil
}

func (p *Pauser) patch(ctx context.Context, owner Owner, patch map[string]any, dryRun bool) error {
	body, err := json.Marshal(patch)
	if err != nil {
		return err
	}
	opts := metav1.PatchOptions{FieldManager: kinds.ManagedBy}
	if dryRun {
		opts.DryRun = []string{metav1.DryRunAll}
	}
	_, err = p.Dynamic.Resource(owner.gvr()).Namespace(owner.Namespace).Patch(ctx, owner.Name, types.MergePatchType, body, opts)
	return err
}

// revision is what the resumer watches:
//   - an Application's status.sync.revision, the Git revision Argo CD last
//     compared with, or for one of several sources their
//     status.sync.revisions joined by commas; with self-heal off, automated
//     sync still follows new commits, and a refresh updates it;
//   - a Flux object's source artifact revision, status.artifact.revision
//     of the Kustomization's spec.sourceRef (GitRepository, OCIRepository,
//     Bucket) or of the HelmRelease's spec.chartRef, or of the HelmChart
//     source-controller makes for its spec.chart (named
//     <namespace>-<name>, in the namespace of spec.chart.spec.sourceRef).
//     A suspended object's own status does not move, so its source is
//     asked. When the source cannot be read it is "", and only an operator
//     resumes.
func (p *Pauser) revision(ctx context.Context, obj *unstructured.Unstructured) string {
	if obj.GetKind() == KindApplication {
		if v, _, _ := unstructured.NestedString(obj.Object, "status", "sync", "revision"); v != "" {
			return v
		}
		// An Application of several sources leaves revision empty and has
		// one per source in revisions.
		revs, _, _ := unstructured.NestedStringSlice(obj.Object, "status", "sync", "revisions")
		return strings.Join(revs, ",")
	}
	var ref map[string]any
	switch obj.GetKind() {
	case KindKustomization:
		ref, _, _ = unstructured.NestedMap(obj.Object, "spec", "sourceRef")
	case KindHelmRelease:
		if r, found, _ := unstructured.NestedMap(obj.Object, "spec", "chartRef"); found {
			ref = r
		} else if r, found, _ := unstructured.NestedMap(obj.Object, "spec", "chart", "spec", "sourceRef"); found {
			ns, _ := r["namespace"].(string)
			ref = map[string]any{"kind": "HelmChart", "name": obj.GetNamespace() + "-" + obj.GetName(), "namespace": ns}
		}
	}
	kind, _ := ref["kind"].(string)
	name, _ := ref["name"].(string)
	ns, _ := ref["namespace"].(string)
	if ns == "" {
		ns = obj.GetNamespace()
	}
	resource := map[string]string{"GitRepository": "gitrepositories", "OCIRepository": "ocirepositories", "Bucket": "buckets", "HelmChart": "helmcharts"}[kind]
	if resource == "" || name == "" {
		return ""
	}
	src, err := p.Dynamic.Resource(schema.GroupVersionResource{Group: "source.toolkit.fluxcd.io", Version: "v1", Resource: resource}).
		Namespace(ns).Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		p.Logger.Debug("read Flux source", "kind", kind, "namespace", ns, "name", name, "err", err)
		return ""
	}
	v, _, _ := unstructured.NestedString(src.Object, "status", "artifact", "revision")
	return v
}

func workloadRef(r kinds.Ref) *corev1.ObjectReference {
	return &corev1.ObjectReference{Kind: string(r.Kind), APIVersion: "apps/v1", Namespace: r.Namespace, Name: r.Name}
}

// Resume restores what the daemon recorded on owner and removes the
// record; why is said in the Events. An owner without a record is left
// alone.
func (p *Pauser) Resume(ctx context.Context, owner Owner, why string) error {
	obj, err := p.Dynamic.Resource(owner.gvr()).Namespace(owner.Namespace).Get(ctx, owner.Name, metav1.GetOptions{})
	if err != nil {
		return fmt.Errorf("read %s: %w", owner, err)
	}
	return p.resume(ctx, owner, obj, why)
}

func (p *Pauser) resume(ctx context.Context, owner Owner, obj *unstructured.Unstructured, why string) error {
	raw := obj.GetAnnotations()[kinds.AnnotationGitOpsPause]
	if raw == "" {
		return fmt.Errorf("%s: not paused by the daemon (no annotation %s)", owner, kinds.AnnotationGitOpsPause)
	}
	var rec Record
	if err := json.Unmarshal([]byte(raw), &rec); err != nil {
		return fmt.Errorf("%s: annotation %s: %w", owner, kinds.AnnotationGitOpsPause, err)
	}
	spec := map[string]any{}
	if owner.Kind == KindApplication {
		// Only where the automated sync policy still is: setting selfHeal
		// on a removed one would turn automated sync back on.
		if _, found, _ := unstructured.NestedMap(obj.Object, "spec", "syncPolicy", "automated"); found && rec.Automated {
			var v any // nil removes the field, as it was
			if rec.SelfHeal != nil {
				v = *rec.SelfHeal
			}
			spec["syncPolicy"] = map[string]any{"automated": map[string]any{"selfHeal": v}}
		}
	} else if !rec.Suspended {
		spec["suspend"] = false
	}
	patch := map[string]any{
		"metadata": map[string]any{
			"resourceVersion": obj.GetResourceVersion(),
			"labels":          map[string]any{kinds.LabelGitOpsPaused: nil},
			"annotations":     map[string]any{kinds.AnnotationGitOpsPause: nil, kinds.AnnotationGitOpsResume: nil},
		},
		"spec": spec,
	}
	if err := p.patch(ctx, owner, patch, false); err != nil {
		return fmt.Errorf("resume %s: %w", owner, err)
	}
	msg := fmt.Sprintf("incident %s: %s resumed (%s); what the daemon changed is restored", rec.Incident, owner, why)
	p.Recorder.Event(obj, corev1.EventTypeNormal, EventResumed, msg)
	p.Recorder.Event(workloadRef(rec.Workload), corev1.EventTypeNormal, EventResumed, msg)
	p.Logger.Info("resumed GitOps owner", "owner", owner.String(), "workload", rec.Workload.String(), "incident", rec.Incident, "why", why)
	return nil
}

// ResumeDue resumes, in one bounded pass, every owner the daemon paused
// that an operator asked to resume (kinds.AnnotationGitOpsResume=true) or
// whose revision differs from the one recorded at the pause. Argo CD
// Applications are looked for in policy.gitops.argocd.namespace, Flux
// objects in every namespace. A kind whose CRD is not installed is skipped.
//
// It does nothing while the mode is escalate: the daemon may then not be
// allowed to read the owners, and pauses left from before stay recorded on
// them for an operator (see docs/actions.md).
func (p *Pauser) ResumeDue(ctx context.Context) {
	if p.Config().Mode != policy.GitOpsPauseAndUndo {
		return
	}
	limit := p.ListLimit
	if limit <= 0 {
		limit = 500
	}
	for _, k := range []struct {
		kind string
		gvr  schema.GroupVersionResource
		ns   string
	}{
		{KindApplication, ApplicationGVR, p.Config().ArgoCD.Namespace},
		{KindKustomization, KustomizationGVR, metav1.NamespaceAll},
		{KindHelmRelease, HelmReleaseGVR, metav1.NamespaceAll},
	} {
		if k.kind == KindApplication && k.ns == "" {
			k.ns = policy.DefaultArgoCDNamespace
		}
		list, err := p.Dynamic.Resource(k.gvr).Namespace(k.ns).List(ctx, metav1.ListOptions{
			LabelSelector: kinds.LabelGitOpsPaused + "=true", Limit: limit})
		if apierrors.IsNotFound(err) {
			continue
		}
		if err != nil {
			p.Logger.Warn("list paused GitOps owners", "kind", k.kind, "err", err)
			continue
		}
		for i := range list.Items {
			obj := &list.Items[i]
			owner := Owner{Kind: k.kind, Namespace: obj.GetNamespace(), Name: obj.GetName()}
			why := p.dueWhy(ctx, obj)
			if why == "" {
				continue
			}
			if err := p.resume(ctx, owner, obj, why); err != nil {
				p.Logger.Warn("resume GitOps owner", "owner", owner.String(), "err", err)
			}
		}
	}
}

// dueWhy says why obj is to be resumed now, or "" when it is not.
func (p *Pauser) dueWhy(ctx context.Context, obj *unstructured.Unstructured) string {
	if obj.GetAnnotations()[kinds.AnnotationGitOpsResume] == "true" {
		return "an operator set " + kinds.AnnotationGitOpsResume + "=true"
	}
	var rec Record
	if err := json.Unmarshal([]byte(obj.GetAnnotations()[kinds.AnnotationGitOpsPause]), &rec); err != nil {
		return ""
	}
	// Without a revision recorded at the pause there is nothing to compare
	// with: one read now may be the bad version's own.
	if rec.Revision == "" {
		return ""
	}
	if now := p.revision(ctx, obj); now != "" && now != rec.Revision {
		return fmt.Sprintf("its revision changed from %q to %q", rec.Revision, now)
	}
	return ""
}
