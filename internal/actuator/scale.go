package actuator

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/runtime"
	utilnet "k8s.io/apimachinery/pkg/util/net"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/util/retry"

	"github.com/autorollbackd/autorollbackd/internal/kinds"
	"github.com/autorollbackd/autorollbackd/internal/workload"
)

// ErrNotScalable: the workload has no replica count (a DaemonSet).
var ErrNotScalable = errors.New("workload kind cannot be scaled")

// scaleDownPollInterval is how often ScaleBounce checks for the last pod.
const scaleDownPollInterval = 500 * time.Millisecond

// ScaleBounce scales the workload to zero, waits until it has no pods left,
// and scales it back to exactly the replica count it had before, even if
// the daemon restarts in between. Deployments and StatefulSets only: a
// DaemonSet gives ErrNotScalable.
//
// The bounce is three writes, each with a resourceVersion precondition:
// record spec.replicas and req.Incident in annotations while setting
// spec.replicas to 0; after the controller reports no pods left, restore
// spec.replicas from the record, remove it and mark the bounce finished for
// req.Incident. A call that finds its own incident recorded resumes at the
// wait, so a restarted daemon never records the 0; one that finds another
// incident's bounce in flight fails with ErrChanged; one that finds its
// incident marked finished returns OutcomeNoop. The wait lasts as long as
// ctx allows; when ctx ends first the workload stays at zero with the record
// in place, and a later call for the same incident finishes the bounce.
//
// In dry run the first write is sent as a server-side dry run and the call
// returns OutcomeDryRun without waiting.
func (a *Actuator) ScaleBounce(ctx context.Context, req Request) (Result, error) {
	obj, res, err := a.scaleBounce(ctx, req)
	if err != nil {
		err = fmt.Errorf("scale bounce %s: %w", req.Target, err)
	}
	a.report(obj, req, KindScaleBounce, res, err)
	return res, err
}

func (a *Actuator) scaleBounce(ctx context.Context, req Request) (runtime.Object, Result, error) {
	res := Result{Kind: KindScaleBounce}
	ad, err := workload.For(req.Target.Kind)
	if err != nil {
		return nil, res, err
	}
	if why := ad.ScaleRefusal(); why != "" {
		return nil, res, fmt.Errorf("%w: %s", ErrNotScalable, why)
	}
	if req.Incident == "" {
		return nil, res, errors.New("the request names no incident")
	}

	// Step 1: record and scale to zero, unless this incident's bounce is
	// already recorded (resume) or finished.
	var (
		obj      runtime.Object
		restore  int32
		resumed  bool
		finished bool
	)
	err = retry.RetryOnConflict(retry.DefaultRetry, func() error {
		w, err := a.readLiveWorkload(ctx, req.Target)
		if err != nil {
			return err
		}
		obj = w.obj
		ann := w.meta.Annotations
		switch inflight := ann[kinds.AnnotationScaleIncident]; {
		case inflight == req.Incident:
			resumed = true
			restore, err = recordedReplicas(ann)
			return err
		case inflight != "":
			return fmt.Errorf("%w: a scale bounce for incident %s is in flight", ErrChanged, inflight)
		case ann[kinds.AnnotationScaleBouncedFor] == req.Incident:
			finished = true
			return nil
		}
		if w.replicas == nil || *w.replicas == 0 {
			return errors.New("it has 0 replicas: nothing to bounce")
		}
		restore = *w.replicas
		return a.patchLiveWorkload(ctx, req, w, scalePatch(w.meta.ResourceVersion, 0, map[string]*string{
			kinds.AnnotationScaleRestoreReplicas: new(strconv.Itoa(int(restore))),
			kinds.AnnotationScaleIncident:        &req.Incident,
			// Every action arms the policy's cooldown.
			kinds.AnnotationRolledBackAt: new(a.clock.Now().UTC().Format(time.RFC3339)),
		}))
	})
	switch {
	case err != nil:
		return obj, res, err
	case finished:
		res.Outcome, res.Resumed = OutcomeNoop, true
		res.Message = fmt.Sprintf("already scaled to 0 and back for incident %s", req.Incident)
		return obj, res, nil
	case req.DryRun:
		res.Outcome, res.Message = OutcomeDryRun, fmt.Sprintf("dry run: would scale to 0 and back to %d replicas: %s", restore, req.Why)
		if resumed {
			res.Message = fmt.Sprintf("dry run: would resume the scale bounce back to %d replicas: %s", restore, req.Why)
		}
		return obj, res, nil
	}

	// Step 2: wait for the last pod to go.
	if err := a.waitScaledDown(ctx, req); err != nil {
		return obj, res, err
	}

	// Step 3: restore the recorded count and mark the bounce finished.
	err = retry.RetryOnConflict(retry.DefaultRetry, func() error {
		w, err := a.readLiveWorkload(ctx, req.Target)
		if err != nil {
			return err
		}
		obj = w.obj
		ann := w.meta.Annotations
		if ann[kinds.AnnotationScaleIncident] != req.Incident {
			if ann[kinds.AnnotationScaleBouncedFor] == req.Incident {
				finished = true // by another replica of the daemon
				return nil
			}
			return fmt.Errorf("%w: the record of the bounce was removed while at 0 replicas", ErrChanged)
		}
		if restore, err = recordedReplicas(ann); err != nil {
			return err
		}
		if w.replicas == nil || *w.replicas != 0 {
			return fmt.Errorf("%w: scaled to %d replicas during the bounce", ErrChanged, ptrValue(w.replicas))
		}
		return a.patchLiveWorkload(ctx, req, w, scalePatch(w.meta.ResourceVersion, restore, map[string]*string{
			kinds.AnnotationScaleRestoreReplicas: nil,
			kinds.AnnotationScaleIncident:        nil,
			kinds.AnnotationScaleBouncedFor:      &req.Incident,
		}))
	})
	if err != nil {
		return obj, res, err
	}
	if finished {
		res.Outcome, res.Resumed = OutcomeNoop, true
		res.Message = fmt.Sprintf("already scaled to 0 and back for incident %s", req.Incident)
		return obj, res, nil
	}
	res.Outcome, res.Message = OutcomeApplied, fmt.Sprintf("scaled to 0 and back to %d replicas: %s", restore, req.Why)
	if resumed {
		res.Message = fmt.Sprintf("resumed the scale bounce: scaled to 0 and back to %d replicas: %s", restore, req.Why)
	}
	return obj, res, nil
}

// waitScaledDown polls until the controller has observed spec.replicas 0
// and reports no pods, terminating ones included where the API reports
// them (Deployments, with the DeploymentReplicaSetTerminatingReplicas
// feature). It stops early, without error, when the record of the bounce is
// gone, and fails with ErrChanged when spec.replicas is no longer 0. Errors
// that may pass (timeouts, throttling, unavailability) are polled through.
func (a *Actuator) waitScaledDown(ctx context.Context, req Request) error {
	var last string
	err := wait.PollUntilContextCancel(ctx, scaleDownPollInterval, true, func(ctx context.Context) (bool, error) {
		w, err := a.readLiveWorkload(ctx, req.Target)
		if err != nil {
			if transient(err) {
				last = err.Error()
				return false, nil
			}
			return false, err
		}
		if w.meta.Annotations[kinds.AnnotationScaleIncident] != req.Incident {
			return true, nil
		}
		if w.replicas == nil || *w.replicas != 0 {
			return false, fmt.Errorf("%w: scaled to %d replicas during the bounce", ErrChanged, ptrValue(w.replicas))
		}
		last = w.status
		return w.scaledDown, nil
	})
	if err != nil && ctx.Err() != nil {
		return fmt.Errorf("wait for 0 pods (last seen: %s): %w", last, err)
	}
	return err
}

// scalePatch is a strategic merge patch setting spec.replicas and
// annotations (nil deletes), with resourceVersion as the precondition.
func scalePatch(resourceVersion string, replicas int32, annotations map[string]*string) []byte {
	body, _ := json.Marshal(map[string]any{ // maps of strings always encode
		"metadata": map[string]any{"resourceVersion": resourceVersion, "annotations": annotations},
		"spec":     map[string]any{"replicas": replicas},
	})
	return body
}

func recordedReplicas(ann map[string]string) (int32, error) {
	n, err := strconv.ParseInt(ann[kinds.AnnotationScaleRestoreReplicas], 10, 32)
	if err != nil || n < 1 {
		return 0, fmt.Errorf("%w: annotation %s is %q, not a replica count", ErrChanged, kinds.AnnotationScaleRestoreReplicas, ann[kinds.AnnotationScaleRestoreReplicas])
	}
	return int32(n), nil
}

// transient reports whether an error reading the workload may pass on its
// own: the API server is slow, throttling, restarting or unreachable.
func transient(err error) bool {
	return apierrors.IsTimeout(err) || apierrors.IsServerTimeout(err) || apierrors.IsTooManyRequests(err) ||
		apierrors.IsServiceUnavailable(err) || apierrors.IsInternalError(err) ||
		utilnet.IsConnectionRefused(err) || utilnet.IsConnectionReset(err) || utilnet.IsProbableEOF(err)
}

func ptrValue(p *int32) int32 {
	if p == nil {
		return 0
	}
	return *p
}
