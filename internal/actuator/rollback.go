package actuator

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/util/retry"

	"github.com/autorollbackd/autorollbackd/internal/kinds"
	"github.com/autorollbackd/autorollbackd/internal/kubeclient"
	"github.com/autorollbackd/autorollbackd/internal/workload"
)

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
	backoff := settleBackoff
	if req.Acted != "" {
		// Taken within a webhook request, before any record: a conflict,
		// or a cache a moment behind the controller, is retried briefly; a
		// workload still settling after that is left to the incident's
		// worker, which may wait for it.
		backoff = actFirstBackoff
	}
	ad, err := workload.For(req.Target.Kind)
	if err == nil {
		attempts := 0
		err = retry.OnError(backoff, retriable, func() error {
			var err error
			attempts++
			// Only the first attempt may read the cache: a retry follows a
			// Conflict or a settling workload, when the cache is the most
			// likely to be behind.
			obj, res, err = a.rollback(ctx, ad, req, from, to, attempts == 1)
			return err
		})
	}
	if err != nil {
		err = fmt.Errorf("roll back %s from revision %d to %d: %w", req.Target, from, to, err)
		if req.Acted != "" && errors.Is(err, ErrSettling) {
			// Nothing was attempted: the ordinary path acts, and reports.
			return res, err
		}
	}
	a.report(obj, req, KindRollback, res, err)
	return res, err
}

// rollback undoes the workload as kubectl does: it reads the workload and
// its history, checks them, and writes the target revision's template with
// the workload's UID, generation and (where the kind keeps it in an
// annotation) revision as its precondition.
//
// With a Cache, the first attempt reads from it and saves two round trips
// (a Cache holds Deployments only; other kinds are read live). A stale
// cache cannot cause a wrong write: the precondition fails unless the cached
// workload's spec and revision are the live ones, and the retry reads live.
// Nor may it cause a wrong refusal or no-op, which no write would catch, so
// any outcome but the write is decided again on live reads.
func (a *Actuator) rollback(ctx context.Context, ad workload.Adapter, req Request, from, to int64, useCache bool) (runtime.Object, Result, error) {
	if useCache && a.cache != nil {
		o, patch, res, err := a.plan(ctx, cachedReads{a.cache, a.client}, ad, req, from, to)
		if err == nil && patch != nil {
			return a.patch(ctx, ad, req, o, patch, res)
		}
		a.logger.Debug("cached workload does not settle the rollback; reading it live",
			"namespace", req.Target.Namespace, "workload", req.Target.Name, "outcome", res.Outcome, "err", err)
	}
	o, patch, res, err := a.plan(ctx, liveReads{a.client}, ad, req, from, to)
	if err != nil || patch == nil {
		if o == nil {
			// Not a nil object in a non-nil runtime.Object: report would
			// record an Event on it.
			return nil, res, err
		}
		return o.Runtime(), res, err
	}
	return a.patch(ctx, ad, req, o, patch, res)
}

// plan reads the workload and its history from reads and runs every check
// of a rollback. It returns the patch to write, or no patch and the final
// outcome: a no-op or an error.
// write is what a planned rollback writes: a JSON patch to the workload
// and, for a rollout aborted midway, first a JSON patch to its status.
type write struct {
	body, status []byte
}

func (a *Actuator) plan(ctx context.Context, reads rollbackReads, ad workload.Adapter, req Request, from, to int64) (workload.Object, *write, Result, error) {
	res := Result{Kind: KindRollback, From: from, To: to}
	o, err := reads.get(ctx, ad, req.Target.Namespace, req.Target.Name)
	if err != nil {
		return nil, nil, res, err
	}
	if alreadyDone(o.Meta().Annotations, req, from, to) {
		res.Outcome, res.Resumed = OutcomeNoop, true
		res.Message = fmt.Sprintf("already rolled back from revision %d to %d for incident %s", from, to, req.Incident)
		return o, nil, res, nil
	}
	if o.Paused() {
		return o, nil, res, ErrPaused
	}
	if !o.Observed() {
		return o, nil, res, ErrSettling
	}
	// Where the workload itself names its current revision, a workload at
	// another revision costs no read of its history.
	var history []workload.Revision
	readHistory := func() error {
		var err error
		history, err = reads.history(ctx, ad, o)
		return err
	}
	if ad.RevisionNeedsHistory() {
		if err := readHistory(); err != nil {
			return o, nil, res, err
		}
	}
	if current := o.CurrentRevision(history); current != from {
		return o, nil, res, fmt.Errorf("%w: now at revision %d, the decision was about revision %d", ErrChanged, current, from)
	}
	if !ad.RevisionNeedsHistory() {
		if err := readHistory(); err != nil {
			return o, nil, res, err
		}
	}
	target, ok := workload.Numbered(history, to)
	if !ok {
		return o, nil, res, fmt.Errorf("%w: no %s of revision %d", ErrNoHistory, ad.HistoryKind(), to)
	}
	if ab, ok := ad.(workload.Aborter); ok && ab.AbortsTo(o, target) {
		// Midway through a rollout from the stable revision `to`: the
		// controller returns to it when the rollout is aborted, where a
		// new template would be one more rollout through the steps.
		w, err := abortPatches(o, ab, a.recordAnnotations(req, from, to))
		return o, w, res, err
	}
	// The precondition guards the workload, not the revision whose template
	// is written: that revision is read whole by name (a cached one is its
	// metadata only) and must still carry the number `to`. The Deployment
	// controller renumbers an old ReplicaSet when it becomes the new
	// revision, which a cache may not show yet.
	if target, err = reads.withTemplate(ctx, ad, o, target); err != nil {
		return o, nil, res, err
	}
	template, same, err := o.UndoTemplate(target)
	if err != nil {
		return o, nil, res, err
	}
	if same {
		res.Outcome, res.Message = OutcomeNoop, fmt.Sprintf("current template already matches revision %d", to)
		return o, nil, res, nil
	}
	patch, err := undoPatch(o, target, template, a.recordAnnotations(req, from, to))
	if err != nil {
		return o, nil, res, err
	}
	return o, &write{body: patch}, res, nil
}

func (a *Actuator) patch(ctx context.Context, ad workload.Adapter, req Request, o workload.Object, w *write, res Result) (runtime.Object, Result, error) {
	meta := o.Meta()
	revision := o.RevisionAnnotation()
	rejected := func(err error) error {
		return preconditionOf(meta, revision).rejected(ctx, err, ad.Resource(), meta.Name, revision, liveMetaOf(a.client, ad, meta.Namespace, meta.Name))
	}
	if w.status != nil {
		// The abort goes first: the record alone would make the rollback
		// look done. Aborting twice is harmless.
		if err := ad.(workload.Aborter).PatchStatus(ctx, a.client, meta.Namespace, meta.Name, types.JSONPatchType, w.status, patchOptions(req)); err != nil {
			return o.Runtime(), res, rejected(err)
		}
	}
	if _, err := ad.Patch(ctx, a.client, meta.Namespace, meta.Name, types.JSONPatchType, w.body, patchOptions(req)); err != nil {
		return o.Runtime(), res, rejected(err)
	}
	res.Outcome, res.Message = applied(req, res.From, res.To)
	if w.status != nil {
		res.Message = "aborted the rollout midway, " + res.Message
	}
	return o.Runtime(), res, nil
}

// liveMetaOf reads the metadata of the named workload from the API server.
func liveMetaOf(c kubeclient.Interface, ad workload.Adapter, namespace, name string) func(context.Context) (*metav1.ObjectMeta, error) {
	return func(ctx context.Context) (*metav1.ObjectMeta, error) {
		live, err := ad.Get(ctx, c, namespace, name)
		if err != nil {
			return nil, err
		}
		return live.Meta(), nil
	}
}

// settleBackoff bounds how long an action waits, re-reading, for a conflict
// to clear or the workload's controller to observe the latest spec: about 15s.
var settleBackoff = wait.Backoff{Steps: 10, Duration: 200 * time.Millisecond, Factor: 1.5, Jitter: 0.1}

// actFirstBackoff bounds the retries of a rollback taken within a webhook
// request: about 0.5s.
var actFirstBackoff = wait.Backoff{Steps: 3, Duration: 200 * time.Millisecond, Factor: 1.5, Jitter: 0.1}

func retriable(err error) bool { return apierrors.IsConflict(err) || errors.Is(err, ErrSettling) }

// undoPatch builds kubectl's rollback patch to target: the pod template the
// kind's undo writes, and the annotations it leaves, with the record
// annotations added. It opens with the tests of the precondition, and
// writes the annotations key by key.
func undoPatch(o workload.Object, target workload.Revision, template any, record map[string]string) ([]byte, error) {
	meta := o.Meta()
	annotations := o.UndoAnnotations(target)
	// An earlier rollback's record, copied back from the revision's
	// history, describes another action.
	delete(annotations, kinds.AnnotationActed)
	maps.Copy(annotations, record)
	delete(annotations, kinds.AnnotationIncident) // the record's key before kinds.AnnotationRolledBackFor
	revision := o.RevisionAnnotation()
	ops := preconditionOf(meta, revision).ops(revision)
	ops = append(ops, jsonPatchOp{Op: "replace", Path: "/spec/template", Value: template})
	ops = append(ops, annotationOps(meta.Annotations, annotations)...)
	patch, err := json.Marshal(ops)
	if err != nil {
		return nil, fmt.Errorf("encode rollback patch: %w", err)
	}
	return patch, nil
}

// abortPatches are the writes of an abort: the kind's abort on the status,
// and the record annotations, each opening with the precondition's tests.
// Neither changes the spec, so the second's tests hold after the first.
func abortPatches(o workload.Object, ab workload.Aborter, record map[string]string) (*write, error) {
	meta := o.Meta()
	revision := o.RevisionAnnotation()
	tests := preconditionOf(meta, revision).ops(revision)
	status, err := json.Marshal(append(slices.Clone(tests), ab.AbortPatch()))
	if err != nil {
		return nil, fmt.Errorf("encode abort patch: %w", err)
	}
	annotations := maps.Clone(meta.Annotations)
	if annotations == nil {
		annotations = map[string]string{}
	}
	delete(annotations, kinds.AnnotationActed)
	maps.Copy(annotations, record)
	delete(annotations, kinds.AnnotationIncident)
	body, err := json.Marshal(append(tests, annotationOps(meta.Annotations, annotations)...))
	if err != nil {
		return nil, fmt.Errorf("encode abort record patch: %w", err)
	}
	return &write{body: body, status: status}, nil
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
