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
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/util/retry"

	"github.com/autorollbackd/autorollbackd/internal/policy"
	"github.com/autorollbackd/autorollbackd/internal/workload"
)

// Annotations kubectl keeps from the Deployment rather than taking from the
// ReplicaSet it restores (polymorphichelpers' annotationsToSkip).
var deploymentAnnotationsToSkip = map[string]bool{
	corev1.LastAppliedConfigAnnotation:          true,
	workload.RevisionAnnotation:                 true,
	"deployment.kubernetes.io/revision-history": true,
	"deployment.kubernetes.io/desired-replicas": true,
	"deployment.kubernetes.io/max-replicas":     true,
	appsv1.DeprecatedRollbackTo:                 true,
}

// Rollback restores revision `to` of the target workload, which must still be
// at revision `from`, the revision the decision was about. Both are pinned
// at decision time: "the previous revision" is never recomputed, because
// after one undo the previous revision is the bad one again.
//
// The write carries the resourceVersion that was read, so a concurrent
// change fails it; the workload is then read again and, if it changed
// meaning (a new revision), the rollback stops with ErrChanged.
func (a *Actuator) Rollback(ctx context.Context, req Request, from, to int64) (Result, error) {
	var (
		res Result
		obj runtime.Object
	)
	err := retry.OnError(settleBackoff, retriable, func() error {
		var err error
		switch req.Target.Kind {
		case policy.KindDeployment:
			obj, res, err = a.rollbackDeployment(ctx, req, from, to)
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

func (a *Actuator) rollbackDeployment(ctx context.Context, req Request, from, to int64) (runtime.Object, Result, error) {
	res := Result{Kind: KindRollback, From: from, To: to}
	deployments := a.client.AppsV1().Deployments(req.Target.Namespace)
	d, err := deployments.Get(ctx, req.Target.Name, metav1.GetOptions{})
	if err != nil {
		return nil, res, err
	}
	if alreadyDone(d.Annotations, req, from, to) {
		res.Outcome, res.Resumed = OutcomeNoop, true
		res.Message = fmt.Sprintf("already rolled back from revision %d to %d for incident %s", from, to, req.Incident)
		return d, res, nil
	}
	if d.Spec.Paused {
		return d, res, ErrPaused
	}
	if d.Generation > d.Status.ObservedGeneration {
		return d, res, ErrSettling
	}
	current, _ := strconv.ParseInt(d.Annotations[workload.RevisionAnnotation], 10, 64)
	if current != from {
		return d, res, fmt.Errorf("%w: now at revision %d, the decision was about revision %d", ErrChanged, current, from)
	}
	sel, err := metav1.LabelSelectorAsSelector(d.Spec.Selector)
	if err != nil {
		return d, res, fmt.Errorf("read selector: %w", err)
	}
	rss, err := a.client.AppsV1().ReplicaSets(d.Namespace).List(ctx, metav1.ListOptions{LabelSelector: sel.String()})
	if err != nil {
		return d, res, fmt.Errorf("list ReplicaSets: %w", err)
	}
	var target *appsv1.ReplicaSet
	for i := range rss.Items {
		rs := &rss.Items[i]
		if metav1.IsControlledBy(rs, d) && rs.Annotations[workload.RevisionAnnotation] == fmt.Sprint(to) {
			target = rs
		}
	}
	if target == nil {
		return d, res, fmt.Errorf("%w: no ReplicaSet of revision %d", ErrNoHistory, to)
	}
	if equalIgnoreHash(&target.Spec.Template, &d.Spec.Template) {
		res.Outcome, res.Message = OutcomeNoop, fmt.Sprintf("current template already matches revision %d", to)
		return d, res, nil
	}
	patch, err := deploymentPatch(d, target, a.recordAnnotations(req, from, to))
	if err != nil {
		return d, res, err
	}
	if _, err := deployments.Patch(ctx, d.Name, types.JSONPatchType, patch, patchOptions(req)); err != nil {
		return d, res, err
	}
	res.Outcome, res.Message = applied(req, from, to)
	return d, res, nil
}

// settleBackoff bounds how long an action waits, re-reading, for a conflict
// to clear or the workload's controller to observe the latest spec: about 15s.
var settleBackoff = wait.Backoff{Steps: 10, Duration: 200 * time.Millisecond, Factor: 1.5, Jitter: 0.1}

func retriable(err error) bool { return apierrors.IsConflict(err) || errors.Is(err, ErrSettling) }

// deploymentPatch builds kubectl's rollback patch: the ReplicaSet's pod
// template without its pod-template-hash label, and the ReplicaSet's
// annotations except those kubectl keeps from the Deployment. It adds the
// record annotations and a resourceVersion, which the API server treats as a
// precondition.
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
	patch, err := json.Marshal([]map[string]any{
		{"op": "replace", "path": "/metadata/resourceVersion", "value": d.ResourceVersion},
		{"op": "replace", "path": "/spec/template", "value": template},
		{"op": "replace", "path": "/metadata/annotations", "value": annotations},
	})
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
	var patch map[string]any
	if err := json.Unmarshal(target.Data.Raw, &patch); err != nil {
		return obj, res, fmt.Errorf("decode ControllerRevision %s: %w", target.Name, err)
	}
	patch["metadata"] = map[string]any{
		"resourceVersion": meta.ResourceVersion,
		"annotations":     a.recordAnnotations(req, from, to),
	}
	body, err := json.Marshal(patch)
	if err != nil {
		return obj, res, fmt.Errorf("encode rollback patch: %w", err)
	}
	apps := a.client.AppsV1()
	if req.Target.Kind == policy.KindStatefulSet {
		_, err = apps.StatefulSets(meta.Namespace).Patch(ctx, meta.Name, types.StrategicMergePatchType, body, patchOptions(req))
	} else {
		_, err = apps.DaemonSets(meta.Namespace).Patch(ctx, meta.Name, types.StrategicMergePatchType, body, patchOptions(req))
	}
	if err != nil {
		return obj, res, err
	}
	res.Outcome, res.Message = applied(req, from, to)
	return obj, res, nil
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
