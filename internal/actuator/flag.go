package actuator

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/client-go/util/retry"

	"github.com/autorollbackd/autorollbackd/internal/kinds"
	"github.com/autorollbackd/autorollbackd/internal/policy"
	"github.com/autorollbackd/autorollbackd/internal/workload"
)

// FlagChange names one key of a ConfigMap in the target's namespace and the
// value that turns the feature off.
type FlagChange struct {
	ConfigMap string `json:"configMap"`
	Key       string `json:"key"`
	Value     string `json:"value"`
}

// Validate reports why f cannot be acted on: a ConfigMap name that is no
// DNS subdomain, a key that is no ConfigMap key, or a key too long to be
// recorded in the annotations the rollback writes.
func (f FlagChange) Validate() error {
	if msgs := validation.IsDNS1123Subdomain(f.ConfigMap); len(msgs) > 0 {
		return fmt.Errorf("invalid ConfigMap name %q: %s", f.ConfigMap, strings.Join(msgs, "; "))
	}
	if msgs := validation.IsConfigMapKey(f.Key); len(msgs) > 0 {
		return fmt.Errorf("invalid ConfigMap key %q: %s", f.Key, strings.Join(msgs, "; "))
	}
	// The key is part of the record's annotation names, whose name part is
	// at most 63 characters and must end with an alphanumeric character.
	if msgs := validation.IsQualifiedName(kinds.AnnotationFlagPreviousPrefix + f.Key); len(msgs) > 0 {
		return fmt.Errorf("ConfigMap key %q cannot be recorded in an annotation: %s", f.Key, strings.Join(msgs, "; "))
	}
	return nil
}

func (f FlagChange) previousAnnotation() string { return kinds.AnnotationFlagPreviousPrefix + f.Key }
func (f FlagChange) incidentAnnotation() string { return kinds.AnnotationFlagIncidentPrefix + f.Key }

// RollbackFeatureFlag sets the flag key to Value (for example
// FEATURE_NEW_PRICING to "false") and restarts the workload the way `kubectl
// rollout restart` does, so that its pods pick the change up.
//
// The key's previous value and req.Incident are recorded as annotations on
// the ConfigMap in the same write as the change, with a resourceVersion
// precondition; RevertFeatureFlag restores from that record. A call for an
// incident already recorded, with the value already set, writes nothing and
// returns OutcomeNoop, unless the restart is still missing (the daemon
// stopped between the two writes), which it then does. It fails with
// ErrChanged when the value was changed after the recorded rollback, or when
// another incident's rollback of the key is recorded and the value is no
// longer the one it set; it returns OutcomeNoop when another incident already
// set the value. A paused Deployment is refused with ErrPaused before any
// write. A missing ConfigMap or workload gives the API's NotFound error.
func (a *Actuator) RollbackFeatureFlag(ctx context.Context, req Request, f FlagChange) (Result, error) {
	obj, res, err := a.featureFlag(ctx, req, f, false)
	if err != nil {
		err = fmt.Errorf("roll back feature flag %s/%s %s: %w", req.Target.Namespace, f.ConfigMap, f.Key, err)
	}
	a.report(obj, req, KindFeatureFlag, res, err)
	return res, err
}

// RevertFeatureFlag restores the value recorded by RollbackFeatureFlag for
// req.Incident, deleting the key if it was absent before, removes the record
// and restarts the workload. It fails with ErrChanged when the value is no
// longer f.Value (someone changed the flag after the rollback: their change
// is not overwritten) or when the record belongs to another incident. With no
// record for req.Incident it returns OutcomeNoop, after doing the restart if
// the daemon stopped between restoring the value and restarting.
func (a *Actuator) RevertFeatureFlag(ctx context.Context, req Request, f FlagChange) (Result, error) {
	obj, res, err := a.featureFlag(ctx, req, f, true)
	if err != nil {
		err = fmt.Errorf("revert feature flag %s/%s %s: %w", req.Target.Namespace, f.ConfigMap, f.Key, err)
	}
	a.report(obj, req, KindFeatureFlag, res, err)
	return res, err
}

// flagPlan is what one attempt of a feature flag action is going to write.
type flagPlan struct {
	// data and annotations are the ConfigMap changes, nil values deleting;
	// write is false when the ConfigMap is already as wanted.
	write       bool
	data        map[string]*string
	annotations map[string]*string
	// restart is the kinds.AnnotationRestartedFor value to restart for, or "" for
	// no restart. A ConfigMap change always restarts, since pods read it
	// when they start; without one, the plan restarts only if this
	// incident's restart is not recorded yet (the daemon stopped between
	// the two writes).
	restart string
	// resumed: this incident's change is already recorded on the ConfigMap.
	resumed bool
	// describe says what the plan does, for Result.Message.
	describe string
}

// featureFlag does one flag action: read the workload and the ConfigMap,
// plan, write the ConfigMap, restart. A Conflict on either write starts over
// from fresh reads. The workload is read first so that a failure has an
// object for its Event, and so that a paused Deployment is refused before
// the flag changes.
func (a *Actuator) featureFlag(ctx context.Context, req Request, f FlagChange, revert bool) (runtime.Object, Result, error) {
	res := Result{Kind: KindFeatureFlag}
	if err := f.Validate(); err != nil {
		return nil, res, err
	}
	if req.Incident == "" {
		return nil, res, errors.New("the request names no incident")
	}
	var obj runtime.Object
	err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
		w, err := a.readLiveWorkload(ctx, req.Target)
		if err != nil {
			return err
		}
		obj = w.obj
		cm, err := a.client.CoreV1().ConfigMaps(req.Target.Namespace).Get(ctx, f.ConfigMap, metav1.GetOptions{})
		if err != nil {
			return err
		}
		plan := planRollback
		if revert {
			plan = planRevert
		}
		p, err := plan(cm, req, f, w.meta.Annotations[kinds.AnnotationRestartedFor])
		if err != nil {
			return err
		}
		if !p.write && p.restart == "" {
			res.Outcome, res.Message, res.Resumed = OutcomeNoop, p.describe, p.resumed
			return nil
		}
		if p.restart != "" && w.paused {
			return ErrPaused
		}
		if p.write {
			if err := a.patchFlagConfigMap(ctx, req, cm, p.data, p.annotations); err != nil {
				return err
			}
		}
		msg := p.describe
		if p.restart != "" {
			if err := a.restartLiveWorkload(ctx, req, w, p.restart); err != nil {
				return err
			}
			if p.write {
				msg += " and restarted " + req.Target.String()
			} else {
				msg = "restarted " + req.Target.String() + ": " + msg
			}
		}
		res.Outcome, res.Message = OutcomeApplied, msg+": "+req.Why
		if req.DryRun {
			res.Outcome, res.Message = OutcomeDryRun, "dry run: would have "+res.Message
		}
		return nil
	})
	return obj, res, err
}

// planRollback plans setting the flag; restartedFor is the workload's
// kinds.AnnotationRestartedFor.
func planRollback(cm *corev1.ConfigMap, req Request, f FlagChange, restartedFor string) (flagPlan, error) {
	p := flagPlan{restart: req.Incident + ":flag"}
	if _, ok := cm.BinaryData[f.Key]; ok {
		return p, fmt.Errorf("key %s is in binaryData, not data", f.Key)
	}
	current, present := cm.Data[f.Key]
	switch recorded := cm.Annotations[f.incidentAnnotation()]; {
	case recorded == req.Incident:
		if !present || current != f.Value {
			return p, fmt.Errorf("%w: %s is %s since it was set to %q for incident %s", ErrChanged, f.Key, describeValue(current, present), f.Value, recorded)
		}
		p.describe, p.resumed = fmt.Sprintf("%s already set to %q for incident %s", f.Key, f.Value, req.Incident), true
		if restartedFor == p.restart {
			p.restart = ""
		}
	case recorded != "":
		// The record of the other incident holds the value from before any
		// rollback; it is never replaced.
		if !present || current != f.Value {
			return p, fmt.Errorf("%w: %s was rolled back for incident %s and is %s since", ErrChanged, f.Key, recorded, describeValue(current, present))
		}
		p.restart = ""
		p.describe = fmt.Sprintf("%s already set to %q for incident %s", f.Key, f.Value, recorded)
	default:
		previous, err := json.Marshal(optional(current, present))
		if err != nil {
			return p, fmt.Errorf("encode previous value: %w", err)
		}
		p.write = true
		p.data = map[string]*string{f.Key: &f.Value}
		p.annotations = map[string]*string{
			f.previousAnnotation(): new(string(previous)),
			f.incidentAnnotation(): &req.Incident,
		}
		p.describe = fmt.Sprintf("set %s in ConfigMap %s to %q (was %s)", f.Key, cm.Name, f.Value, describeValue(current, present))
	}
	return p, nil
}

// planRevert plans restoring the flag; restartedFor is the workload's
// kinds.AnnotationRestartedFor.
func planRevert(cm *corev1.ConfigMap, req Request, f FlagChange, restartedFor string) (flagPlan, error) {
	p := flagPlan{restart: req.Incident + ":revert"}
	current, present := cm.Data[f.Key]
	switch recorded := cm.Annotations[f.incidentAnnotation()]; {
	case recorded == req.Incident:
		raw, ok := cm.Annotations[f.previousAnnotation()]
		if !ok {
			return p, fmt.Errorf("%w: annotation %s is missing", ErrChanged, f.previousAnnotation())
		}
		var previous *string
		if err := json.Unmarshal([]byte(raw), &previous); err != nil {
			return p, fmt.Errorf("%w: annotation %s: %v", ErrChanged, f.previousAnnotation(), err)
		}
		if !present || current != f.Value {
			return p, fmt.Errorf("%w: %s is %s since it was set to %q for incident %s", ErrChanged, f.Key, describeValue(current, present), f.Value, recorded)
		}
		p.write = true
		p.data = map[string]*string{f.Key: previous}
		p.annotations = map[string]*string{f.previousAnnotation(): nil, f.incidentAnnotation(): nil}
		if previous == nil {
			p.describe = fmt.Sprintf("deleted %s from ConfigMap %s, as before incident %s", f.Key, cm.Name, req.Incident)
		} else {
			p.describe = fmt.Sprintf("restored %s in ConfigMap %s to %q, as before incident %s", f.Key, cm.Name, *previous, req.Incident)
		}
	case recorded != "":
		return p, fmt.Errorf("%w: %s was rolled back for incident %s, not %s", ErrChanged, f.Key, recorded, req.Incident)
	default:
		// Already reverted, with the restart still to do if the last restart
		// was the rollback's; or never rolled back: nothing to restart for.
		switch restartedFor {
		case req.Incident + ":flag":
			p.describe = fmt.Sprintf("%s already restored for incident %s", f.Key, req.Incident)
		case p.restart:
			p.describe, p.restart = fmt.Sprintf("%s already restored for incident %s", f.Key, req.Incident), ""
		default:
			p.describe, p.restart = fmt.Sprintf("no rollback of %s recorded for incident %s", f.Key, req.Incident), ""
		}
	}
	return p, nil
}

// patchFlagConfigMap writes data and annotations (nil deletes) to cm as a
// JSON merge patch carrying cm's resourceVersion, which the API server
// checks: if cm changed since it was read, the write fails with a Conflict.
func (a *Actuator) patchFlagConfigMap(ctx context.Context, req Request, cm *corev1.ConfigMap, data, annotations map[string]*string) error {
	// An empty map is left out: as null it would delete them all.
	metadata := map[string]any{"resourceVersion": cm.ResourceVersion}
	patch := map[string]any{"metadata": metadata}
	if len(annotations) > 0 {
		metadata["annotations"] = annotations
	}
	if len(data) > 0 {
		patch["data"] = data
	}
	body, err := json.Marshal(patch)
	if err != nil {
		return fmt.Errorf("encode ConfigMap patch: %w", err)
	}
	_, err = a.client.CoreV1().ConfigMaps(cm.Namespace).Patch(ctx, cm.Name, types.MergePatchType, body, patchOptions(req))
	return err
}

// restartLiveWorkload does what `kubectl rollout restart` does, a strategic
// merge patch of the pod template's restartedAt annotation, and records
// restartedFor in kinds.AnnotationRestartedFor in the same write, which carries
// the resourceVersion that was read.
//
// kubectl writes the local time to the second; two restarts within a second
// would write the same value and the second would restart nothing, so then
// the time is written with fractional seconds, which is still RFC 3339.
func (a *Actuator) restartLiveWorkload(ctx context.Context, req Request, w *liveWorkload, restartedFor string) error {
	now := a.clock.Now()
	at := now.Format(time.RFC3339)
	if at == w.template.Annotations[kinds.AnnotationTemplateRestartedAt] {
		at = now.Format(time.RFC3339Nano)
	}
	body, err := json.Marshal(map[string]any{
		"metadata": map[string]any{
			"resourceVersion": w.meta.ResourceVersion,
			// Every action arms the policy's cooldown.
			"annotations": map[string]string{kinds.AnnotationRestartedFor: restartedFor, kinds.AnnotationRolledBackAt: now.UTC().Format(time.RFC3339),
				kinds.AnnotationOwnRestartAt: at},
		},
		"spec": map[string]any{"template": map[string]any{"metadata": map[string]any{
			"annotations": map[string]string{kinds.AnnotationTemplateRestartedAt: at},
		}}},
	})
	if err != nil {
		return fmt.Errorf("encode restart patch: %w", err)
	}
	return a.patchLiveWorkload(ctx, req, w, body)
}

// liveWorkload is a workload as read, with the parts the flag and scale
// actions need.
type liveWorkload struct {
	adapter  workload.Adapter
	obj      runtime.Object
	meta     *metav1.ObjectMeta
	template *corev1.PodTemplateSpec
	paused   bool
	// replicas is spec.replicas; nil for a kind that cannot be scaled.
	replicas *int32
	// scaledDown: the controller has observed the latest spec and reports
	// no pods left, terminating ones included where it reports those.
	scaledDown bool
	status     string
}

func (a *Actuator) readLiveWorkload(ctx context.Context, ref policy.Ref) (*liveWorkload, error) {
	ad, err := workload.For(ref.Kind)
	if err != nil {
		return nil, err
	}
	o, err := ad.Get(ctx, a.client, ref.Namespace, ref.Name)
	if err != nil {
		return nil, err
	}
	return &liveWorkload{
		adapter: ad, obj: o.Runtime(), meta: o.Meta(), template: o.Template(), paused: o.Paused(), replicas: o.Replicas(),
		scaledDown: o.ScaledDown(), status: o.Progress(),
	}, nil
}

// patchLiveWorkload applies a strategic merge patch to w.
func (a *Actuator) patchLiveWorkload(ctx context.Context, req Request, w *liveWorkload, body []byte) error {
	_, err := w.adapter.Patch(ctx, a.client, w.meta.Namespace, w.meta.Name, types.StrategicMergePatchType, body, patchOptions(req))
	return err
}

func optional(v string, present bool) *string {
	if !present {
		return nil
	}
	return &v
}

func describeValue(v string, present bool) string {
	if !present {
		return "unset"
	}
	return fmt.Sprintf("%q", v)
}
