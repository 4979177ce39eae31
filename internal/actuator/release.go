package actuator

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/util/retry"

	"github.com/autorollbackd/autorollbackd/internal/helm"
	"github.com/autorollbackd/autorollbackd/internal/kinds"
	"github.com/autorollbackd/autorollbackd/internal/workload"
)

// Releases reads and rolls back Helm releases; *helm.Client is one.
type Releases interface {
	// History returns every revision of the release, newest first.
	History(ctx context.Context, namespace, name string) ([]helm.Revision, error)
	// Rollback rolls the release back to revision `to`, provided its
	// newest revision is still `current` and deployed (helm.ErrMoved,
	// helm.ErrNotDeployed otherwise).
	Rollback(ctx context.Context, namespace, name string, current, to int, dryRun bool) error
}

// Errors of a Helm release rollback.
var (
	// ErrReleaseNotDeployed: the release's newest revision is not deployed
	// (an install, upgrade or rollback is pending, or it failed), so what
	// Helm would do next is not known.
	ErrReleaseNotDeployed = errors.New("Helm release is not deployed")
	// ErrNoReleaseRevision: no revision of the release carries the
	// template to restore, so a release rollback cannot restore it.
	ErrNoReleaseRevision = errors.New("no revision of the Helm release carries the template to restore")
	// ErrReleaseDrifted: the release's newest revision does not carry the
	// workload's current template: it was changed outside Helm, and the
	// release is not what the decision was about.
	ErrReleaseDrifted = errors.New("workload's template is not the one its Helm release deployed")
)

// ReleaseRollback says which Helm release a rollback rolled back, and how.
type ReleaseRollback struct {
	Namespace string `json:"namespace"`
	Name      string `json:"name"`
	// From is the revision that was current, To the one restored, and
	// Revision the new revision that records the rollback ("Rollback to
	// To" in `helm history`).
	From     int `json:"from"`
	To       int `json:"to"`
	Revision int `json:"revision"`
}

func (r ReleaseRollback) String() string {
	return fmt.Sprintf("%s/%s: revision %d to %d, as revision %d", r.Namespace, r.Name, r.From, r.To, r.Revision)
}

// RollbackRelease restores revision `to` of the target workload, which must
// still be at revision `from`, by rolling back the Helm release it is part
// of, as `helm rollback` does, to the newest revision whose manifest carries
// the template of revision `to`; Helm's history then says what runs.
//
// Before it acts it checks that the workload is still at `from`, that the
// release's newest revision is deployed (ErrReleaseNotDeployed) and carries
// the workload's current template (ErrReleaseDrifted), and that some older
// revision carries the one to restore (ErrNoReleaseRevision). A template is
// compared as the API server stores it: the manifest's template is written
// onto the workload in a dry run, defaulted and admitted as a real write
// would be, and compared as an undo compares templates. The release must
// still be at the revision planned on when the rollback is recorded
// (helm.Client.Rollback); what was done is then recorded on the workload as
// a rollback records it, so a second attempt is a no-op.
func (a *Actuator) RollbackRelease(ctx context.Context, req Request, from, to int64) (Result, error) {
	var (
		res Result
		obj runtime.Object
	)
	ad, err := workload.For(req.Target.Kind)
	if err == nil && a.releases == nil {
		err = errors.New("no Helm client configured")
	}
	if err == nil {
		err = retry.OnError(settleBackoff, retriable, func() error {
			var err error
			obj, res, err = a.rollbackRelease(ctx, ad, req, from, to)
			return err
		})
	}
	if err != nil {
		err = fmt.Errorf("roll back the Helm release of %s from revision %d to %d: %w", req.Target, from, to, err)
	}
	a.report(obj, req, KindRollback, res, err)
	return res, err
}

func (a *Actuator) rollbackRelease(ctx context.Context, ad workload.Adapter, req Request, from, to int64) (runtime.Object, Result, error) {
	res := Result{Kind: KindRollback, From: from, To: to}
	ns, name := req.Target.Namespace, req.Target.Name
	o, err := ad.Get(ctx, a.client, ns, name)
	if err != nil {
		return nil, res, err
	}
	meta := o.Meta()
	if alreadyDone(meta.Annotations, req, from, to) {
		res.Outcome, res.Resumed = OutcomeNoop, true
		res.Message = fmt.Sprintf("already rolled back from revision %d to %d for incident %s", from, to, req.Incident)
		if r := meta.Annotations[kinds.AnnotationRolledBackRelease]; r != "" {
			res.Message += " (Helm release " + r + ")"
		}
		return o.Runtime(), res, nil
	}
	relNS, relName, ok := kinds.HelmRelease(meta.Namespace, meta.Labels, meta.Annotations)
	if !ok {
		return o.Runtime(), res, fmt.Errorf("%w: no longer part of a Helm release", ErrChanged)
	}
	if o.Paused() {
		return o.Runtime(), res, ErrPaused
	}
	if !o.Observed() {
		return o.Runtime(), res, ErrSettling
	}
	history, err := ad.History(ctx, a.client, o)
	if err != nil {
		return o.Runtime(), res, err
	}
	if current := o.CurrentRevision(history); current != from {
		return o.Runtime(), res, fmt.Errorf("%w: now at revision %d, the decision was about revision %d", ErrChanged, current, from)
	}
	suspect, okFrom := workload.Numbered(history, from)
	target, okTo := workload.Numbered(history, to)
	if !okFrom || !okTo {
		return o.Runtime(), res, fmt.Errorf("%w: no %s of revision %d or %d", ErrNoHistory, ad.HistoryKind(), from, to)
	}
	if _, same, err := o.UndoTemplate(target); err != nil {
		return o.Runtime(), res, err
	} else if same {
		res.Outcome, res.Message = OutcomeNoop, fmt.Sprintf("current template already matches revision %d", to)
		return o.Runtime(), res, nil
	}

	revs, err := a.releases.History(ctx, relNS, relName)
	if errors.Is(err, helm.ErrNotFound) {
		return o.Runtime(), res, fmt.Errorf("%w: %w", ErrNoReleaseRevision, err)
	}
	if err != nil {
		return o.Runtime(), res, err
	}
	last := revs[0]
	if last.Status != helm.StatusDeployed {
		return o.Runtime(), res, fmt.Errorf("%w: release %s/%s is at revision %d, %s", ErrReleaseNotDeployed, relNS, relName, last.Number, last.Status)
	}
	carries := func(rev helm.Revision, want workload.Revision) (bool, error) {
		return a.carries(ctx, ad, o, relNS, rev, want, req)
	}
	if ok, err := carries(last, suspect); err != nil {
		return o.Runtime(), res, err
	} else if !ok {
		return o.Runtime(), res, fmt.Errorf("%w: revision %d of release %s/%s does not carry the template of revision %d", ErrReleaseDrifted, last.Number, relNS, relName, from)
	}
	good := -1
	for _, rev := range revs[1:] {
		ok, err := carries(rev, target)
		if err != nil {
			return o.Runtime(), res, err
		}
		if ok {
			good = rev.Number
			break
		}
	}
	if good < 0 {
		return o.Runtime(), res, fmt.Errorf("%w: none of the %d revisions of release %s/%s before %d carries the template of revision %d",
			ErrNoReleaseRevision, len(revs)-1, relNS, relName, last.Number, to)
	}
	rel := ReleaseRollback{Namespace: relNS, Name: relName, From: last.Number, To: good, Revision: last.Number + 1}

	// The comparisons took a few round trips: the workload must still be
	// the one they were made on. Helm's writes carry no precondition on it.
	now, err := ad.Get(ctx, a.client, ns, name)
	if err != nil {
		return o.Runtime(), res, err
	}
	if now.Meta().UID != meta.UID || now.Meta().Generation != meta.Generation {
		return o.Runtime(), res, apierrors.NewConflict(ad.Resource(), name, errors.New("changed while the Helm release was read"))
	}
	err = a.releases.Rollback(ctx, relNS, relName, rel.From, rel.To, req.DryRun)
	switch {
	case errors.Is(err, helm.ErrMoved):
		return o.Runtime(), res, fmt.Errorf("%w: %w", ErrChanged, err)
	case errors.Is(err, helm.ErrNotDeployed):
		return o.Runtime(), res, fmt.Errorf("%w: %w", ErrReleaseNotDeployed, err)
	case err != nil:
		return o.Runtime(), res, err
	}
	res.Release = &rel
	if req.DryRun {
		res.Outcome = OutcomeDryRun
		res.Message = fmt.Sprintf("dry run: would roll back Helm release %s, restoring revision %d in place of %d: %s", rel, to, from, req.Why)
		return o.Runtime(), res, nil
	}
	if err := a.recordRelease(ctx, ad, req, from, to, rel); err != nil {
		// The release is rolled back: a retry would find the workload at
		// a new revision and stop; say what happened instead.
		return o.Runtime(), res, fmt.Errorf("rolled back Helm release %s, but recording it on the workload failed: %w", rel, err)
	}
	res.Outcome = OutcomeApplied
	res.Message = fmt.Sprintf("rolled back Helm release %s, restoring revision %d in place of %d: %s", rel, to, from, req.Why)
	return o.Runtime(), res, nil
}

// carries reports whether the manifest of rev, a revision of the workload's
// release, holds the workload with the pod template of want, one of its
// revisions. The manifest's template is written onto the workload o in a
// dry run, so that it is compared as the API server would store it.
func (a *Actuator) carries(ctx context.Context, ad workload.Adapter, o workload.Object, releaseNS string, rev helm.Revision, want workload.Revision, req Request) (bool, error) {
	meta := o.Meta()
	template, ok, err := rev.PodTemplate(helm.Object{Group: ad.Resource().Group, Kind: string(ad.Kind()), Namespace: meta.Namespace, Name: meta.Name}, releaseNS)
	if err != nil || !ok {
		return false, err
	}
	revision := o.RevisionAnnotation()
	ops := append(preconditionOf(meta, revision).ops(revision), jsonPatchOp{Op: "replace", Path: "/spec/template", Value: template})
	body, err := json.Marshal(ops)
	if err != nil {
		return false, fmt.Errorf("encode the dry run of revision %d's template: %w", rev.Number, err)
	}
	dry := Request{DryRun: true}
	as, err := ad.Patch(ctx, a.client, meta.Namespace, meta.Name, types.JSONPatchType, body, patchOptions(dry))
	if err != nil {
		err = preconditionOf(meta, revision).rejected(ctx, err, ad.Resource(), meta.Name, revision, liveMetaOf(a.client, ad, meta.Namespace, meta.Name))
		if apierrors.IsInvalid(err) {
			// The manifest's template is not one this workload could
			// have (a selector it does not match): not the one wanted.
			a.logger.Debug("Helm revision's template is invalid on the workload", "namespace", meta.Namespace, "workload", meta.Name,
				"incident", req.Incident, "revision", rev.Number, "err", err)
			return false, nil
		}
		return false, fmt.Errorf("compare the template of Helm revision %d: %w", rev.Number, err)
	}
	_, same, err := as.UndoTemplate(want)
	return same, err
}

// recordRelease records the release rollback on the workload, as a rollback
// records itself, and which release it rolled back.
func (a *Actuator) recordRelease(ctx context.Context, ad workload.Adapter, req Request, from, to int64, rel ReleaseRollback) error {
	o, err := ad.Get(ctx, a.client, req.Target.Namespace, req.Target.Name)
	if err != nil {
		return err
	}
	meta := o.Meta()
	record := a.recordAnnotations(req, from, to)
	record[kinds.AnnotationRolledBackRelease] = rel.String()
	record[kinds.AnnotationChangeCause] = clip(fmt.Sprintf("autorollbackd: rolled back Helm release %s (revision %d to %d): %s", rel, from, to, req.Why), 512)
	want := maps.Clone(meta.Annotations)
	if want == nil {
		want = map[string]string{}
	}
	maps.Copy(want, record)
	delete(want, kinds.AnnotationIncident)
	ops := []any{jsonPatchOp{Op: "test", Path: "/metadata/uid", Value: meta.UID}}
	if meta.Annotations == nil {
		ops = append(ops, jsonPatchOp{Op: "test", Path: "/metadata/annotations", Value: nil})
	}
	body, err := json.Marshal(append(ops, annotationOps(meta.Annotations, want)...))
	if err != nil {
		return fmt.Errorf("encode the record: %w", err)
	}
	_, err = ad.Patch(ctx, a.client, meta.Namespace, meta.Name, types.JSONPatchType, body, patchOptions(req))
	return err
}
