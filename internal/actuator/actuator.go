// Package actuator carries out the policy's decisions on the cluster: it
// undoes a rollout the way `kubectl rollout undo` does, rolls back a feature
// flag, and bounces a workload through zero replicas. Unlike kubectl it
// writes with a precondition, acts on a target revision
// pinned at decision time, and records what it did on the workload itself,
// so that no retry, restart or second replica ever acts twice.
package actuator

import (
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/tools/record"
	"k8s.io/utils/clock"

	"github.com/autorollbackd/autorollbackd/internal/kinds"
	"github.com/autorollbackd/autorollbackd/internal/kubeclient"
	"github.com/autorollbackd/autorollbackd/internal/policy"
)

// Event reasons, as `kubectl describe` shows them.
const (
	EventRollback        = "AutoRollback"
	EventRollbackSkipped = "AutoRollbackSkipped"
	EventRollbackFailed  = "AutoRollbackFailed"
)

// Errors callers branch on. Every error the actuator returns wraps one of
// these or an API error.
var (
	// ErrChanged: the workload changed meaning after the decision (a newer
	// rollout, most likely by a person). Escalate; never overwrite it.
	ErrChanged = errors.New("workload changed since the decision")
	// ErrNoHistory: the target revision is not in the workload's history.
	ErrNoHistory = errors.New("target revision not in history")
	// ErrPaused: the rollout is paused; kubectl refuses it too.
	ErrPaused = errors.New("rollout is paused")
	// ErrSettling: the controller has not yet observed the latest spec, so
	// the current revision is not known; retry shortly.
	ErrSettling = errors.New("workload controller has not observed the latest spec")
)

// Kind is the kind of action.
type Kind string

// The kinds of action.
const (
	KindRollback    Kind = "rollback"
	KindFeatureFlag Kind = "feature_flag"
	KindScaleBounce Kind = "scale_bounce"
)

// Kinds returns every kind of action, for metric initialisation.
func Kinds() []Kind { return []Kind{KindRollback, KindFeatureFlag, KindScaleBounce} }

// Outcome is what an action did.
type Outcome string

// The outcomes of an action.
const (
	OutcomeApplied Outcome = "applied" // the change was written
	OutcomeNoop    Outcome = "noop"    // nothing to do: already in the target state
	OutcomeDryRun  Outcome = "dry_run" // the server accepted the change in dry-run mode; nothing changed
)

// Request says on which workload to act and why.
type Request struct {
	Target policy.Ref
	// Incident identifies the episode the action belongs to; an action for
	// an incident already recorded on the workload is not repeated.
	Incident    string
	Fingerprint string
	// Why is one line for the change-cause and the Event.
	Why    string
	DryRun bool
	// Acted, when set, is written with a rollback under
	// kinds.AnnotationActed: the record of an action taken before any
	// other record of it. A rollback without it removes the annotation.
	Acted string
}

// Result describes an action that did not fail.
type Result struct {
	Kind    Kind    `json:"kind"`
	Outcome Outcome `json:"outcome"`
	From    int64   `json:"from,omitempty"`
	To      int64   `json:"to,omitempty"`
	Message string  `json:"message"`
	// Resumed is set on a no-op because the same incident's action is
	// already recorded on the workload: an earlier attempt carried it out
	// and was interrupted before its caller recorded that.
	Resumed bool `json:"resumed,omitempty"`
	// Release is the Helm release a rollback rolled back (RollbackRelease).
	Release *ReleaseRollback `json:"release,omitempty"`
}

// Options configures an Actuator.
type Options struct {
	Client   kubeclient.Interface
	Recorder record.EventRecorder
	Logger   *slog.Logger
	Registry prometheus.Registerer
	Clock    clock.PassiveClock
	// Cache, if set, is read instead of the API server on the first attempt
	// of a Deployment rollback; see rollbackDeployment. Nil means live reads.
	Cache Cache
	// Releases, optional, rolls back Helm releases (RollbackRelease).
	Releases Releases
}

// Actuator acts on workloads.
type Actuator struct {
	client   kubeclient.Interface
	recorder record.EventRecorder
	logger   *slog.Logger
	clock    clock.PassiveClock
	cache    Cache
	releases Releases
	actions  *prometheus.CounterVec
}

// New returns an Actuator.
func New(o Options) (*Actuator, error) {
	if o.Client == nil || o.Recorder == nil || o.Logger == nil || o.Registry == nil {
		return nil, errors.New("actuator: Client, Recorder, Logger and Registry are required")
	}
	if o.Clock == nil {
		o.Clock = clock.RealClock{}
	}
	a := &Actuator{
		client: o.Client, recorder: o.Recorder, logger: o.Logger.With("component", "actuator"), clock: o.Clock, cache: o.Cache, releases: o.Releases,
		actions: promauto.With(o.Registry).NewCounterVec(prometheus.CounterOpts{
			Namespace: "autorollbackd", Name: "actions_total",
			Help: "Actions on workloads, by kind, result (applied, noop, failed) and whether they were dry runs.",
		}, []string{"kind", "result", "dry_run"}),
	}
	for _, k := range Kinds() {
		for _, r := range []string{string(OutcomeApplied), string(OutcomeNoop), "failed"} {
			for _, d := range []string{"true", "false"} {
				a.actions.WithLabelValues(string(k), r, d)
			}
		}
	}
	return a, nil
}

// Reason is why an action failed, a bounded value for metrics and records.
type Reason string

// The reasons an action fails.
const (
	ReasonChanged     Reason = "changed"      // ErrChanged
	ReasonNoHistory   Reason = "no_history"   // ErrNoHistory
	ReasonPaused      Reason = "paused"       // ErrPaused
	ReasonSettling    Reason = "settling"     // ErrSettling
	ReasonNotScalable Reason = "not_scalable" // ErrNotScalable
	ReasonTaskFailed  Reason = "task_failed"  // ErrTaskFailed
	// ReasonReleaseNotDeployed: ErrReleaseNotDeployed.
	ReasonReleaseNotDeployed Reason = "release_not_deployed"
	// ReasonNoReleaseRevision: ErrNoReleaseRevision.
	ReasonNoReleaseRevision Reason = "no_release_revision"
	// ReasonReleaseDrifted: ErrReleaseDrifted.
	ReasonReleaseDrifted Reason = "release_drifted"
	ReasonForbidden      Reason = "forbidden" // the API server's Forbidden
	ReasonNotFound       Reason = "not_found" // the API server's NotFound
	ReasonConflict       Reason = "conflict"  // the API server's Conflict, still there after the action's own retries
	ReasonError          Reason = "error"     // anything else, a network error most likely
)

// Retryable reports whether an action that failed for r may succeed when
// tried again a little later: a conflict that did not clear, a controller
// still settling, an error of the connection. The others need a person or a
// new decision.
func (r Reason) Retryable() bool {
	return r == ReasonError || r == ReasonConflict || r == ReasonSettling
}

// FailureReason classifies an action error.
func FailureReason(err error) Reason {
	switch {
	case errors.Is(err, ErrChanged):
		return ReasonChanged
	case errors.Is(err, ErrNoHistory):
		return ReasonNoHistory
	case errors.Is(err, ErrPaused):
		return ReasonPaused
	case errors.Is(err, ErrSettling):
		return ReasonSettling
	case errors.Is(err, ErrNotScalable):
		return ReasonNotScalable
	case errors.Is(err, ErrTaskFailed):
		return ReasonTaskFailed
	case errors.Is(err, ErrReleaseNotDeployed):
		return ReasonReleaseNotDeployed
	case errors.Is(err, ErrNoReleaseRevision):
		return ReasonNoReleaseRevision
	case errors.Is(err, ErrReleaseDrifted):
		return ReasonReleaseDrifted
	case apierrors.IsForbidden(err):
		return ReasonForbidden
	case apierrors.IsNotFound(err):
		return ReasonNotFound
	case apierrors.IsConflict(err):
		return ReasonConflict
	}
	return ReasonError
}

// report is the one place an action's outcome is logged, counted and told to
// `kubectl describe`, so the three never disagree.
func (a *Actuator) report(obj runtime.Object, req Request, kind Kind, res Result, err error) {
	dry := fmt.Sprint(req.DryRun)
	log := a.logger.With("namespace", req.Target.Namespace, "workload", req.Target.Name, "kind", req.Target.Kind,
		"action", kind, "incident", req.Incident, "dry_run", req.DryRun)
	switch {
	case err != nil:
		a.actions.WithLabelValues(string(kind), "failed", dry).Inc()
		log.Error("action failed", "reason", FailureReason(err), "err", err)
		if obj != nil {
			// The workload's namespace belongs to a tenant: the API
			// server's error text (other names, addresses) stays in the
			// daemon's log and the incident record.
			a.recorder.Eventf(obj, corev1.EventTypeWarning, EventRollbackFailed,
				"%s failed (%s); the details are in autorollbackd's log and incident record", kind, FailureReason(err))
		}
	case res.Outcome == OutcomeNoop || res.Outcome == OutcomeDryRun:
		result := OutcomeNoop
		if res.Outcome == OutcomeDryRun {
			result = OutcomeApplied
		}
		a.actions.WithLabelValues(string(kind), string(result), dry).Inc()
		log.Info("action skipped", "message", res.Message)
		if obj != nil {
			a.recorder.Event(obj, corev1.EventTypeNormal, EventRollbackSkipped, res.Message)
		}
	default:
		a.actions.WithLabelValues(string(kind), string(OutcomeApplied), dry).Inc()
		log.Info("action applied", "message", res.Message, "from", res.From, "to", res.To)
		if obj != nil {
			a.recorder.Event(obj, corev1.EventTypeNormal, EventRollback, res.Message)
		}
	}
}

// recordAnnotations are written with every rollback.
func (a *Actuator) recordAnnotations(req Request, from, to int64) map[string]string {
	m := map[string]string{
		kinds.AnnotationRolledBackFrom: fmt.Sprint(from),
		kinds.AnnotationRolledBackTo:   fmt.Sprint(to),
		kinds.AnnotationRolledBackAt:   a.clock.Now().UTC().Format(time.RFC3339),
		kinds.AnnotationFingerprint:    clip(req.Fingerprint, 128),
		kinds.AnnotationRolledBackFor:  req.Incident,
		kinds.AnnotationChangeCause:    fmt.Sprintf("autorollbackd: rolled back from revision %d to %d: %s", from, to, clip(req.Why, 256)),
	}
	if req.Acted != "" {
		m[kinds.AnnotationActed] = req.Acted
	}
	return m
}

// clip keeps record annotations small whatever an alert carries: the API
// server refuses objects whose annotations pass 256 KiB.
func clip(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}

// alreadyDone reports whether the rollback of this incident from `from` to
// `to` is recorded on the workload.
func alreadyDone(ann map[string]string, req Request, from, to int64) bool {
	return req.Incident != "" && kinds.RolledBackFor(ann) == req.Incident &&
		ann[kinds.AnnotationRolledBackFrom] == fmt.Sprint(from) && ann[kinds.AnnotationRolledBackTo] == fmt.Sprint(to)
}
