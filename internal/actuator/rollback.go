package actuator

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"strconv"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apiequality "k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/util/retry"

	"github.com/autorollbackd/autorollbackd/internal/kinds"
	"github.com/autorollbackd/autorollbackd/internal/policy"
)

// Annotations kubectl keeps from the Deployment rather than taking from the
// ReplicaSet it restores (polymorphichelpers' annotationsToSkip).
var deploymentAnnotationsToSkip = map[string]bool{
	corev1.LastAppliedConfigAnnotation:        true,
	kinds.AnnotationDeploymentRevision:        true,
	kinds.AnnotationDeploymentRevisionHistory: true,
	kinds.AnnotationDeploymentDesiredReplicas: true,
	kinds.AnnotationDeploymentMaxReplicas:     true,
	appsv1.DeprecatedRollbackTo:               true,
}

// Rollback restores revision `to` of the target workload, which must still be
// at revision `from`, the revision the decision was about. Both are pinned
// at decision time: "the previous revision" is never recomputed, because
// after one undo the previous revision is the bad one again.
//
// The write tests what it was planned on (see precondition), so a
// concurrent change of the workload's spec or revision fails it; the
// workload is then read again and, if it changed meaning (a new revision),
// the rollback stops with ErrChanged.
func (a *Actuator) Rollback(ctx context.Context, req Request, from, to int64) (Result, error) {
	var (
		res Result
		obj runtime.Object
	)
	attempts := 0
	err := retry.OnError(settleBackoff, retriable, func() error {
		var err error
		attempts++
		switch req.Target.Kind {
		case policy.KindDeployment:
			// Only the first attempt may read the cache: a retry follows a
			// Conflict or a settling workload, when the cache is the most
			// likely to be behind.
			obj, res, err = a.rollbackDeployment(ctx, req, from, to, attempts == 1)
		case policy.KindStatefulSet, policy.KindDaemonSet:
			obj, res, err = a.rollbackFromHistory(ctx, req, from, to)
		default:
			err = fmt.Errorf("unsupported kind %q", req.Target.Kind)
		}
		return err
	})
	if err != nil {
		err = fmt.Errorf("roll back %s from revision %d to %d: %w", req.Target, from, to, err)
	}
	a.report(obj, req, KindRollback, res, err)
	return res, err
}

// rollbackDeployment undoes a Deployment as kubectl does: it reads the
// Deployment and its ReplicaSets, checks them, and writes the ReplicaSet's
// template with the Deployment's UID, generation and revision as its
// precondition.
//
// With a Cache, the first attempt reads from it and saves two round trips.
// A stale cache cannot cause a wrong write: the precondition fails unless
// the cached Deployment's spec and revision are the live ones, and the retry
// reads live. Nor may it cause a wrong refusal or no-op, which no write would
// catch, so any outcome but the write is decided again on live reads.
func (a *Actuator) rollbackDeployment(ctx context.Context, req Request, from, to int64, useCache bool) (runtime.Object, Result, error) {
	if useCache && a.cache != nil {
		d, patch, res, err := a.planDeployment(ctx, cachedReads{a.cache}, req, from, to)
		if err == nil && patch != nil {
			return a.patchDeployment(ctx, req, d, patch, res)
		}
		a.logger.Debug("cached Deployment does not settle the rollback; reading it live",
			"namespace", req.Target.Namespace, "workload", req.Target.Name, "outcome", res.Outcome, "err", err)
	}
	d, patch, res, err := a.planDeployment(ctx, liveReads{a.client}, req, from, to)
	if err != nil || patch == nil {
		if d == nil {
			// Not a nil *Deployment in a non-nil runtime.Object: report
			// would record an Event on it.
			return nil, res, err
		}
		return d, res, err
	}
	return a.patchDeployment(ctx, req, d, patch, res)
}

// planDeployment reads the Deployment and its ReplicaSets from reads and
// runs every check of a rollback. It returns the patch to write, or no patch
// and the final outcome: a no-op or an error.
func (a *Actuator) planDeployment(ctx context.Context, reads deploymentReads, req Request, from, to int64) (*appsv1.Deployment, []byte, Result, error) {
	res := Result{Kind: KindRollback, From: from, To: to}
	d, err := reads.deployment(ctx, req.Target.Namespace, req.Target.Name)
	if err != nil {
		return nil, nil, res, err
	}
	if alreadyDone(d.Annotations, req, from, to) {
		res.Outcome, res.Resumed = OutcomeNoop, true
		res.Message = fmt.Sprintf("already rolled back from revision %d to %d for incident %s", from, to, req.Incident)
		return d, nil, res, nil
	}
	if d.Spec.Paused {
		return d, nil, res, ErrPaused
	}
	if d.Generation > d.Status.ObservedGeneration {
		return d, nil, res, ErrSettling
	}
	current, _ := strconv.ParseInt(d.Annotations[kinds.AnnotationDeploymentRevision], 10, 64)
	if current != from {
		return d, nil, res, fmt.Errorf("%w: now at revision %d, the decision was about revision %d", ErrChanged, current, from)
	}
	sel, err := metav1.LabelSelectorAsSelector(d.Spec.Selector)
	if err != nil {
		return d, nil, res, fmt.Errorf("read selector: %w", err)
	}
	rss, err := reads.replicaSets(ctx, d.Namespace, sel)
	if err != nil {
		return d, nil, res, err
	}
	var target, newest *appsv1.ReplicaSet
	for _, rs := range rss {
		if !metav1.IsControlledBy(rs, d) {
			continue
		}
		switch rs.Annotations[kinds.AnnotationDeploymentRevision] {
		case fmt.Sprint(to):
			target = rs
		case fmt.Sprint(from):
			newest = rs
		}
	}
	if target == nil {
		return d, nil, res, fmt.Errorf("%w: no ReplicaSet of revision %d", ErrNoHistory, to)
	}
	if _, cached := reads.(cachedReads); cached && (newest == nil || !equalIgnoreHash(&newest.Spec.Template, &d.Spec.Template)) {
		// The precondition guards the Deployment, not the ReplicaSet whose
		// template is written. The controller numbers a ReplicaSet before it
		// writes the Deployment's revision, and renumbers old ones only for
		// a new revision; so cached ReplicaSets that already show the
		// current one as `from` show the old ones' current numbers too.
		// Without it, an old ReplicaSet may still carry a number the
		// controller has since moved to another.
		return d, nil, res, errors.New("cached ReplicaSets lag behind the cached Deployment")
	}
	if equalIgnoreHash(&target.Spec.Template, &d.Spec.Template) {
		res.Outcome, res.Message = OutcomeNoop, fmt.Sprintf("current template already matches revision %d", to)
		return d, nil, res, nil
	}
	patch, err := deploymentPatch(d, target, a.recordAnnotations(req, from, to))
	if err != nil {
		return d, nil, res, err
	}
	return d, patch, res, nil
}

func (a *Actuator) patchDeployment(ctx context.Context, req Request, d *appsv1.Deployment, patch []byte, res Result) (runtime.Object, Result, error) {
	api := a.client.AppsV1().Deployments(d.Namespace)
	if _, err := api.Patch(ctx, d.Name, types.JSONPatchType, patch, patchOptions(req)); err != nil {
		pre := preconditionOf(&d.ObjectMeta, kinds.AnnotationDeploymentRevision)
		return d, res, pre.rejected(ctx, err, deploymentsResource, d.Name, kinds.AnnotationDeploymentRevision, func(ctx context.Context) (*metav1.ObjectMeta, error) {
			live, err := api.Get(ctx, d.Name, metav1.GetOptions{})
			if err != nil {
				return nil, err
			}
			return &live.ObjectMeta, nil
		})
	}
	res.Outcome, res.Message = applied(req, res.From, res.To)
	return d, res, nil
}

// settleBackoff bounds how long an action waits, re-reading, for a conflict
// to clear or the workload's controller to observe the latest spec: about 15s.
var settleBackoff = wait.Backoff{Steps: 10, Duration: 200 * time.Millisecond, Factor: 1.5, Jitter: 0.1}

func retriable(err error) bool { return apierrors.IsConflict(err) || errors.Is(err, ErrSettling) }

// deploymentPatch builds kubectl's rollback patch: the ReplicaSet's pod
// template without its pod-template-hash label, and the ReplicaSet's
// annotations except those kubectl keeps from the Deployment. It adds the
// record annotations, and opens with the tests of the precondition.
func deploymentPatch(d *appsv1.Deployment, rs *appsv1.ReplicaSet, record map[string]string) ([]byte, error) {
	template := rs.Spec.Template.DeepCopy()
	delete(template.Labels, appsv1.DefaultDeploymentUniqueLabelKey)
	annotations := map[string]string{}
	for k := range deploymentAnnotationsToSkip {
		if v, ok := d.Annotations[k]; ok {
			annotations[k] = v
		}
	}
	for k, v := range rs.Annotations {
		if !deploymentAnnotationsToSkip[k] {
			annotations[k] = v
		}
	}
	maps.Copy(annotations, record)
	delete(annotations, kinds.AnnotationIncident) // the record's key before kinds.AnnotationRolledBackFor
	ops := preconditionOf(&d.ObjectMeta, kinds.AnnotationDeploymentRevision).ops(kinds.AnnotationDeploymentRevision)
	ops = append(ops, jsonPatchOp{Op: "replace", Path: "/spec/template", Value: template})
	ops = append(ops, annotationOps(d.Annotations, annotations)...)
	patch, err := json.Marshal(ops)
	if err != nil {
		return nil, fmt.Errorf("encode rollback patch: %w", err)
	}
	return patch, nil
}

func equalIgnoreHash(a, b *corev1.PodTemplateSpec) bool {
	a, b = a.DeepCopy(), b.DeepCopy()
	delete(a.Labels, appsv1.DefaultDeploymentUniqueLabelKey)
	delete(b.Labels, appsv1.DefaultDeploymentUniqueLabelKey)
	return apiequality.Semantic.DeepEqual(a, b)
}

// rollbackFromHistory undoes a StatefulSet or DaemonSet: like kubectl, it
// applies the target ControllerRevision's data (a strategic merge patch that
// replaces the pod template) to the workload.
func (a *Actuator) rollbackFromHistory(ctx context.Context, req Request, from, to int64) (runtime.Object, Result, error) {
	res := Result{Kind: KindRollback, From: from, To: to}
	obj, meta, template, selector, current, err := a.getHistoried(ctx, req.Target)
	if err != nil {
		return nil, res, err
	}
	if alreadyDone(meta.Annotations, req, from, to) {
		res.Outcome, res.Resumed = OutcomeNoop, true
		res.Message = fmt.Sprintf("already rolled back from revision %d to %d for incident %s", from, to, req.Incident)
		return obj, res, nil
	}
	sel, err := metav1.LabelSelectorAsSelector(selector)
	if err != nil {
		return obj, res, fmt.Errorf("read selector: %w", err)
	}
	crs, err := a.client.AppsV1().ControllerRevisions(req.Target.Namespace).List(ctx, metav1.ListOptions{LabelSelector: sel.String()})
	if err != nil {
		return obj, res, fmt.Errorf("list ControllerRevisions: %w", err)
	}
	var (
		target *appsv1.ControllerRevision
		newest int64
	)
	for i := range crs.Items {
		cr := &crs.Items[i]
		if !metav1.IsControlledBy(cr, meta) {
			continue
		}
		newest = max(newest, cr.Revision)
		if cr.Revision == to {
			target = cr
		}
		if current.name != "" && cr.Name == current.name {
			current.number = cr.Revision
		}
	}
	if current.name == "" {
		// A DaemonSet's status does not name its revision: it is the newest.
		current.number = newest
	}
	if current.number != from {
		return obj, res, fmt.Errorf("%w: now at revision %d, the decision was about revision %d", ErrChanged, current.number, from)
	}
	if target == nil {
		return obj, res, fmt.Errorf("%w: no ControllerRevision of revision %d", ErrNoHistory, to)
	}
	var data struct {
		Spec struct {
			Template corev1.PodTemplateSpec `json:"template"`
		} `json:"spec"`
	}
	if err := json.Unmarshal(target.Data.Raw, &data); err != nil {
		return obj, res, fmt.Errorf("decode ControllerRevision %s: %w", target.Name, err)
	}
	if apiequality.Semantic.DeepEqual(&data.Spec.Template, template) {
		res.Outcome, res.Message = OutcomeNoop, fmt.Sprintf("current template already matches revision %d", to)
		return obj, res, nil
	}
	body, err := historyPatch(target, meta, a.recordAnnotations(req, from, to))
	if err != nil {
		return obj, res, err
	}
	gr, patch, live := a.historied(req.Target)
	if err := patch(ctx, body, patchOptions(req)); err != nil {
		return obj, res, preconditionOf(meta, "").rejected(ctx, err, gr, meta.Name, "", live)
	}
	res.Outcome, res.Message = applied(req, from, to)
	return obj, res, nil
}

var (
	statefulSetsResource = appsv1.Resource("statefulsets")
	daemonSetsResource   = appsv1.Resource("daemonsets")
)

// historyPatch is kubectl's undo of a StatefulSet or DaemonSet: the target
// ControllerRevision's pod template replaces the workload's. The controller
// stores it as a strategic merge patch that replaces the whole template;
// here it is a JSON patch that says so, opens with the precondition's
// tests, and adds the record annotations.
func historyPatch(cr *appsv1.ControllerRevision, meta *metav1.ObjectMeta, record map[string]string) ([]byte, error) {
	var data struct {
		Spec struct {
			Template map[string]any `json:"template"`
		} `json:"spec"`
	}
	if err := json.Unmarshal(cr.Data.Raw, &data); err != nil {
		return nil, fmt.Errorf("decode ControllerRevision %s: %w", cr.Name, err)
	}
	if data.Spec.Template == nil {
		return nil, fmt.Errorf("ControllerRevision %s holds no pod template", cr.Name)
	}
	delete(data.Spec.Template, "$patch")
	annotations := maps.Clone(meta.Annotations)
	if annotations == nil {
		annotations = map[string]string{}
	}
	maps.Copy(annotations, record)
	delete(annotations, kinds.AnnotationIncident) // the record's key before kinds.AnnotationRolledBackFor
	ops := preconditionOf(meta, "").ops("")
	ops = append(ops, jsonPatchOp{Op: "replace", Path: "/spec/template", Value: data.Spec.Template})
	ops = append(ops, annotationOps(meta.Annotations, annotations)...)
	body, err := json.Marshal(ops)
	if err != nil {
		return nil, fmt.Errorf("encode rollback patch: %w", err)
	}
	return body, nil
}

// historied returns the resource of a StatefulSet or DaemonSet, a JSON
// patch of it and a live read of its metadata.
func (a *Actuator) historied(ref policy.Ref) (schema.GroupResource, func(context.Context, []byte, metav1.PatchOptions) error, func(context.Context) (*metav1.ObjectMeta, error)) {
	apps := a.client.AppsV1()
	if ref.Kind == policy.KindStatefulSet {
		api := apps.StatefulSets(ref.Namespace)
		return statefulSetsResource, func(ctx context.Context, body []byte, opts metav1.PatchOptions) error {
				_, err := api.Patch(ctx, ref.Name, types.JSONPatchType, body, opts)
				return err
			}, func(ctx context.Context) (*metav1.ObjectMeta, error) {
				s, err := api.Get(ctx, ref.Name, metav1.GetOptions{})
				if err != nil {
					return nil, err
				}
				return &s.ObjectMeta, nil
			}
	}
	api := apps.DaemonSets(ref.Namespace)
	return daemonSetsResource, func(ctx context.Context, body []byte, opts metav1.PatchOptions) error {
			_, err := api.Patch(ctx, ref.Name, types.JSONPatchType, body, opts)
			return err
		}, func(ctx context.Context) (*metav1.ObjectMeta, error) {
			ds, err := api.Get(ctx, ref.Name, metav1.GetOptions{})
			if err != nil {
				return nil, err
			}
			return &ds.ObjectMeta, nil
		}
}

type revisionRef struct {
	name   string
	number int64
}

// getHistoried reads a StatefulSet or DaemonSet and the parts rollback needs.
func (a *Actuator) getHistoried(ctx context.Context, ref policy.Ref) (runtime.Object, *metav1.ObjectMeta, *corev1.PodTemplateSpec, *metav1.LabelSelector, revisionRef, error) {
	apps := a.client.AppsV1()
	if ref.Kind == policy.KindStatefulSet {
		s, err := apps.StatefulSets(ref.Namespace).Get(ctx, ref.Name, metav1.GetOptions{})
		if err != nil {
			return nil, nil, nil, nil, revisionRef{}, err
		}
		if s.Generation > s.Status.ObservedGeneration {
			return s, &s.ObjectMeta, nil, nil, revisionRef{}, ErrSettling
		}
		return s, &s.ObjectMeta, &s.Spec.Template, s.Spec.Selector, revisionRef{name: s.Status.UpdateRevision}, nil
	}
	ds, err := apps.DaemonSets(ref.Namespace).Get(ctx, ref.Name, metav1.GetOptions{})
	if err != nil {
		return nil, nil, nil, nil, revisionRef{}, err
	}
	if ds.Generation > ds.Status.ObservedGeneration {
		return ds, &ds.ObjectMeta, nil, nil, revisionRef{}, ErrSettling
	}
	return ds, &ds.ObjectMeta, &ds.Spec.Template, ds.Spec.Selector, revisionRef{}, nil
}

func patchOptions(req Request) metav1.PatchOptions {
	if req.DryRun {
		return metav1.PatchOptions{DryRun: []string{metav1.DryRunAll}, FieldManager: "autorollbackd"}
	}
	return metav1.PatchOptions{FieldManager: "autorollbackd"}
}

func applied(req Request, from, to int64) (Outcome, string) {
	if req.DryRun {
		return OutcomeDryRun, fmt.Sprintf("dry run: would roll back from revision %d to %d: %s", from, to, req.Why)
	}
	return OutcomeApplied, fmt.Sprintf("rolled back from revision %d to %d: %s", from, to, req.Why)
}
