// Package engine carries accepted alerts through the daemon: it records each
// firing alert in the cluster before the webhook answers, so nothing accepted
// is lost (for a plain rollback, the rollback itself comes first and carries
// the record on the workload: see actfirst.go), refuses duplicates, decides every recorded alert by the policy,
// and hands the decision to the workload's incident, which it then works
// through its rungs (act, verify, go back further) while the people ladder
// runs on the runbook's clock.
package engine

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/util/workqueue"
	"k8s.io/utils/clock"
	"k8s.io/utils/keymutex"
	"k8s.io/utils/lru"

	"github.com/autorollbackd/autorollbackd/internal/actuator"
	"github.com/autorollbackd/autorollbackd/internal/escalate"
	"github.com/autorollbackd/autorollbackd/internal/gitops"
	"github.com/autorollbackd/autorollbackd/internal/incident"
	"github.com/autorollbackd/autorollbackd/internal/kinds"
	"github.com/autorollbackd/autorollbackd/internal/kube"
	"github.com/autorollbackd/autorollbackd/internal/kubeclient"
	"github.com/autorollbackd/autorollbackd/internal/policy"
	"github.com/autorollbackd/autorollbackd/internal/verify"
	"github.com/autorollbackd/autorollbackd/internal/webhook"
	"github.com/autorollbackd/autorollbackd/internal/workload"
)

// Actor carries out plans; *actuator.Actuator is one.
type Actor interface {
	Rollback(ctx context.Context, req actuator.Request, from, to int64) (actuator.Result, error)
	// RollbackRelease restores revision `to` by rolling back the workload's
	// Helm release (policy.helm.mode rollback-release).
	RollbackRelease(ctx context.Context, req actuator.Request, from, to int64) (actuator.Result, error)
	RollbackFeatureFlag(ctx context.Context, req actuator.Request, f actuator.FlagChange) (actuator.Result, error)
	ScaleBounce(ctx context.Context, req actuator.Request) (actuator.Result, error)
	RunTask(ctx context.Context, req actuator.Request, t actuator.Task) (string, error)
}

// GitOpsPauser pauses the GitOps owner of a workload before an action and
// resumes owners when their time comes; *gitops.Pauser is one.
type GitOpsPauser interface {
	Pause(ctx context.Context, w *policy.Workload, incident string, dryRun bool) (gitops.Pause, error)
	// ResumeDue resumes, in one bounded pass, the owners due.
	ResumeDue(ctx context.Context)
}

// Verifier proves a workload recovered; *verify.Verifier is one.
type Verifier interface {
	Verify(ctx context.Context, target policy.Ref) []verify.Result
	// Overall is the verdict of the checks' results (those of kinds the
	// verifier runs; the alert check's result is weighed by the lifecycle).
	Overall(results []verify.Result) verify.Status
}

// Escalator tells people; *escalate.Escalator is one.
type Escalator interface {
	Announce(ctx context.Context, m escalate.Message) error
	Page(ctx context.Context, step escalate.Step, m escalate.Message) (escalate.Delivery, error)
	Resolve(ctx context.Context, inc escalate.Incident, levels []string) error
	Ladder() escalate.Ladder
	// Deduplicates reports whether a page sent twice to the named notifier
	// reaches people once.
	Deduplicates(notifier string) bool
}

// The alert label that, with the workload's
// kinds.AnnotationFeatureFlagConfigMap, turns a rollback into a feature flag
// rollback (the runbook's "Environment Variable Flags"): the workload names
// the ConfigMap holding its flags, the alert names the flag.
const (
	LabelFeatureFlag = "feature_flag"
	// FeatureFlagOff is the value that turns a flag off.
	FeatureFlagOff = "false"
)

// AlertState asks Alertmanager whether alerts still fire: a result of Kind
// "alert" that passes when none does, fails when one still does, and is
// inconclusive when Alertmanager cannot tell; *verify.Verifier is one.
type AlertState interface {
	AlertState(ctx context.Context, q verify.AlertQuery) verify.Result
}

// FactSource reads what the policy needs to know about a workload. It
// returns nil and no error when the workload does not exist.
type FactSource interface {
	Facts(ctx context.Context, ref policy.Ref) (*policy.Workload, error)
}

// Options configures an Engine.
type Options struct {
	Client kubeclient.Interface
	// Namespace holds the alert records.
	Namespace string
	// Policy returns the policy in force; it changes on config reload.
	Policy func() *policy.Policy
	// Cache answers from the informer cache, at intake (does the workload
	// exist, is it opted in) and at decision time; Live answers from the API
	// server where only the latest will do (the rungs after the first).
	Cache, Live FactSource
	// Actor carries out rollback decisions.
	Actor Actor
	// Incidents stores incident records.
	Incidents *incident.Store
	// Verifier proves recovery after an action.
	Verifier Verifier
	// Cluster is the name of the cluster the daemon acts on (cluster.name):
	// in every incident and message. Empty: unnamed.
	Cluster string
	// Escalator pages people on the runbook's clock and announces what
	// happens.
	Escalator Escalator
	// AlertState, optional, asks Alertmanager whether an incident's alerts
	// still fire once the other checks passed; without it only resolved
	// notifications tell.
	AlertState AlertState
	// PageGroupWait and PageGroupEvery group the pages of escalations for
	// the same reason: the first waits PageGroupWait for others, which
	// join it for PageGroupEvery after.
	PageGroupWait, PageGroupEvery time.Duration
	// AlertGrace is how long after an action the triggering alerts may
	// keep firing, all other checks passing, before the service counts as
	// still down and the next rung is taken.
	AlertGrace time.Duration
	// GitOps, optional, pauses the Argo CD or Flux owner of a workload
	// before acting on it when the policy's gitops.mode is pause-and-undo,
	// and resumes paused owners every Resync. Without it such workloads
	// are refused.
	GitOps GitOpsPauser
	// AllowScaleBounce lets the last automatic rung scale a workload to zero
	// and back, for workloads that also carry the annotation
	// autorollback.io/allow-scale-bounce: "true".
	AllowScaleBounce bool
	// AllowFeatureFlags lets a rollback turn off the feature flag an alert
	// names (LabelFeatureFlag) instead of rolling back revisions, for
	// workloads that name a flag ConfigMap and list the key. Off, such
	// alerts roll back revisions, and stored flag plans are refused.
	AllowFeatureFlags bool
	// IncidentWorkers is how many incidents are worked on at once; each may
	// spend minutes verifying.
	IncidentWorkers int
	// Tasks are the post-rollback tasks workloads may name, by name.
	Tasks map[string]actuator.Task
	// MaxRollbackDepth is how many revisions back a rollback may go: 1 is
	// the last known good only, 2 adds the one before it (N-2).
	MaxRollbackDepth int
	// MaxPending is how many recorded alerts may wait for a decision before
	// the webhook answers 503 so that Alertmanager retries later.
	MaxPending int
	// MaxRecords is how many alert records may be kept before the webhook
	// answers 503 to alerts it would have to record; zero means
	// DefaultMaxRecords.
	MaxRecords int
	// Retention is how long decided records are kept; a re-sent alert
	// within it is still recognised as a duplicate.
	Retention time.Duration
	// Resync is how often the undecided records and open incidents are
	// listed again, to take up those no worker has queued: written by
	// another replica around a change of leader, after this one resumed.
	// Zero means DefaultResync.
	Resync time.Duration
	// Acted, optional, lists from the informer cache the workloads that
	// carry kinds.AnnotationActed: resuming and every Resync rebuild the
	// incident and record of a rollback taken before a crash lost them,
	// without waiting for Alertmanager to send its alert again.
	Acted func() ([]ActedWorkload, error)
	// PageSize bounds the records one List request reads; zero means
	// incident.DefaultPageSize.
	PageSize int64
	Logger   *slog.Logger
	Registry prometheus.Registerer
	Clock    clock.WithTicker
}

func (o *Options) validate() error {
	var errs []error
	if o.Client == nil {
		errs = append(errs, errors.New("engine: Client is required"))
	}
	if o.Namespace == "" {
		errs = append(errs, errors.New("engine: Namespace is required"))
	}
	if o.Policy == nil {
		errs = append(errs, errors.New("engine: Policy is required"))
	}
	if o.Cache == nil || o.Live == nil || o.Actor == nil || o.Incidents == nil || o.Verifier == nil || o.Escalator == nil {
		errs = append(errs, errors.New("engine: Cache, Live, Actor, Incidents, Verifier and Escalator are required"))
	}
	if o.IncidentWorkers < 1 {
		o.IncidentWorkers = 1
	}
	if o.MaxRollbackDepth < 1 {
		errs = append(errs, fmt.Errorf("engine: MaxRollbackDepth must be at least 1, got %d", o.MaxRollbackDepth))
	}
	if o.MaxPending < 1 {
		errs = append(errs, fmt.Errorf("engine: MaxPending must be at least 1, got %d", o.MaxPending))
	}
	if o.MaxRecords < 0 {
		errs = append(errs, fmt.Errorf("engine: MaxRecords must not be negative, got %d", o.MaxRecords))
	}
	if o.MaxRecords == 0 {
		o.MaxRecords = DefaultMaxRecords
	}
	if o.Resync <= 0 {
		o.Resync = DefaultResync
	}
	if o.AlertGrace <= 0 {
		o.AlertGrace = DefaultAlertGrace
	}
	if o.PageGroupWait <= 0 {
		o.PageGroupWait = DefaultPageGroupWait
	}
	if o.PageGroupEvery <= 0 {
		o.PageGroupEvery = DefaultPageGroupEvery
	}
	if o.Retention <= 0 {
		errs = append(errs, fmt.Errorf("engine: Retention must be positive, got %s", o.Retention))
	}
	if o.Logger == nil || o.Registry == nil {
		errs = append(errs, errors.New("engine: Logger and Registry are required"))
	}
	if o.Clock == nil {
		o.Clock = clock.RealClock{}
	}
	return errors.Join(errs...)
}

// Defaults of Options.
const (
	DefaultAlertGrace     = 5 * time.Minute
	DefaultPageGroupWait  = 10 * time.Second
	DefaultPageGroupEvery = 5 * time.Minute
	DefaultMaxRecords     = 5000
	DefaultResync         = 30 * time.Second
)

// Engine decides recorded alerts and works their incidents.
type Engine struct {
	opts   Options
	store  *store
	q      atomic.Pointer[queues]
	logger *slog.Logger
	m      *metrics

	// seen remembers recently recorded alert keys, with whether their
	// record was seen decided (seenDone), so re-sends are answered without
	// an API call; the record in the cluster stays the authority.
	seen *lru.Cache
	// records is how many alert records the cluster holds, as last
	// counted, plus those recorded since.
	records atomic.Int64
	// resolveFailures counts, by alert key, the notifications answered 503
	// in a row because the alert's resolution could not be recorded.
	resolveFailures *lru.Cache
	// budget counts the rollbacks applied in the last hour.
	budget *budget
	// open holds the open incident of each workload.
	open *openIncidents
	// handoff carries what was just written from one stage to the next,
	// by object name, so that the next stage need not read it back: a
	// record from intake to its decision, an incident from its opening to
	// its first step. A stale one fails its next write on the
	// resourceVersion precondition and is read again.
	handoff sync.Map
	// targets serialises the opening of incidents per workload, so that two
	// alerts about one workload decided at once join one incident.
	targets keymutex.KeyMutex
	// mail carries joining alerts to their incident's worker.
	mail mailbox
	// groups folds the pages of a storm of escalations into one.
	groups *pageGroups
	// resumed: this Run has counted the budget and the open incidents from
	// the cluster. Until then no alert is acted on before it is recorded:
	// the counts it would act on are not yet known.
	resumed atomic.Bool
}

// queues hold the work of one Run. Run shuts them down when it ends (the
// replica stopped leading, or is stopping) and leaves fresh ones for the
// next Run; what was queued is in the cluster and resumed from there.
type queues struct {
	alerts workqueue.TypedRateLimitingInterface[string]
	// incidents holds incident ids; an incident is worked on by one worker
	// at a time, and comes back when its next page is due.
	incidents workqueue.TypedRateLimitingInterface[string]
	// known holds the ids of the incidents this Run has queued, so that a
	// resync queues only those it did not know of.
	known sync.Map
}

func newQueues(clk clock.WithTicker) *queues {
	return &queues{
		alerts: workqueue.NewTypedRateLimitingQueueWithConfig(workqueue.DefaultTypedControllerRateLimiter[string](),
			workqueue.TypedRateLimitingQueueConfig[string]{Name: "alerts", Clock: clk}),
		incidents: workqueue.NewTypedRateLimitingQueueWithConfig(workqueue.DefaultTypedControllerRateLimiter[string](),
			workqueue.TypedRateLimitingQueueConfig[string]{Name: "incidents", Clock: clk}),
	}
}

func (q *queues) shutDown() {
	q.alerts.ShutDown()
	q.incidents.ShutDown()
}

func (e *Engine) alerts() workqueue.TypedRateLimitingInterface[string] { return e.q.Load().alerts }
func (e *Engine) incidents() workqueue.TypedRateLimitingInterface[string] {
	return e.q.Load().incidents
}

// New returns an Engine. Call Run to start deciding.
func New(opts Options) (*Engine, error) {
	if err := opts.validate(); err != nil {
		return nil, err
	}
	e := &Engine{
		opts:   opts,
		store:  &store{client: opts.Client, namespace: opts.Namespace, pageSize: opts.PageSize},
		logger: opts.Logger.With("component", "engine"),
		m:      newMetrics(opts.Registry, opts.MaxRecords),
		seen:   lru.New(10000),
		// Only keys whose resolution failed are kept, briefly.
		resolveFailures: lru.New(1000),
		budget:          &budget{},
		open:            &openIncidents{},
		// Hashed: two workloads may share a lock, which only orders them.
		targets: keymutex.NewHashed(64),
		groups:  &pageGroups{clock: opts.Clock, wait: opts.PageGroupWait, interval: opts.PageGroupEvery},
	}
	e.q.Store(newQueues(opts.Clock))
	return e, nil
}

// Accept records the firing alerts of n and queues them for a decision. It
// returns only after every actionable alert is recorded in the cluster, so a
// crash after the webhook's 2xx loses nothing. An alert the policy answers
// with a plain rollback is rolled back first, then recorded (actFirst). Resolved alerts, duplicates
// and alerts naming workloads the daemon may not touch are counted and not
// recorded; so are alerts that cannot be recorded faithfully (a fingerprint
// Alertmanager would not send, labels too large to keep).
func (e *Engine) Accept(ctx context.Context, n *webhook.Notification) (webhook.Receipt, error) {
	ic := &intakeContext{parent: ctx, deadline: time.Now().Add(intakeTimeout)}
	defer ic.cancel()
	var r webhook.Receipt
	queue := e.alerts()
	if n := queue.Len(); n >= e.opts.MaxPending {
		e.m.unavailable.Inc()
		return r, fmt.Errorf("%d alerts are waiting for a decision: %w", n, webhook.ErrQueueFull)
	}
	p := e.opts.Policy()
	now := e.opts.Clock.Now()
	// A resolution that failed for a reason that may pass; the other
	// alerts are still taken, and the notification answered 503 after.
	var retry error
	origin := policy.Origin{Sender: n.Sender.Name, Namespaces: n.Sender.Namespaces}
	for _, wa := range n.Alerts {
		log := alertLog{e.logger, &wa}
		if !validFingerprint(wa.Fingerprint) {
			r.Refuse(refuse, invalidFingerprint, "")
			e.m.invalid.WithLabelValues(invalidFingerprint).Inc()
			log.Warn("alert refused: its fingerprint is not 16 lower-case hex digits, as Alertmanager writes them", "reason", invalidFingerprint)
			continue
		}
		a := policy.Alert{
			Fingerprint:  wa.Fingerprint,
			Status:       wa.Status,
			Labels:       wa.Labels,
			Annotations:  wa.Annotations,
			StartsAt:     wa.StartsAt,
			EndsAt:       wa.EndsAt,
			GeneratorURL: wa.GeneratorURL,
		}
		key := AlertKey(a)
		if a.Status == "resolved" {
			err := e.alertResolved(ic.get(), p, a, key, origin)
			if errors.Is(err, errOriginMismatch) {
				r.Refuse(refuse, string(policy.ReasonOriginMismatch), "")
				log.Warn("resolution refused: the sender may not send alerts about the alert's workload", "sender", origin.Sender, "err", err)
				continue
			}
			r.Resolved++
			switch {
			case err == nil:
				e.resolveFailures.Remove(key)
			case !e.giveUpResolution(key, err, log) && retry == nil:
				retry = err
			}
			continue
		}
		if size := labelBytes(a.Labels); size > maxLabelBytes {
			r.Refuse(refuse, labelsTooLarge, "")
			e.m.invalid.WithLabelValues(labelsTooLarge).Inc()
			log.Warn("alert refused: its labels are too large to record exactly, and the policy decides on them",
				"reason", labelsTooLarge, "bytes", size, "limit", maxLabelBytes)
			continue
		}
		if v, ok := e.seen.Get(key); ok {
			r.Duplicates++
			e.m.duplicates.Inc()
			if v != seenDone {
				// Its record may have been queued on the queue of a Run
				// that ended; queueing again is harmless.
				queue.Add(recordName(key))
			}
			continue
		}
		target, resolveErr := p.Resolve(a)
		// The target checks need only the workload's existence, revision,
		// labels and annotations, which the cache has; a refusal here is
		// final and never recorded. Everything else is decided after the
		// record is written.
		var facts *policy.Workload
		var err error
		if !target.IsZero() {
			fctx := ic.parent
			if !workload.FromCache(e.opts.Cache) {
				fctx = ic.get()
			}
			if facts, err = workload.TargetFacts(fctx, e.opts.Cache, target); err != nil {
				return r, unavailable(err)
			}
		}
		// A target check that fails is final: the workload is not ours
		// to touch (refuse), or the alert is about another cluster
		// (ignore).
		if d := p.Screen(policy.Input{Alert: a, Target: target, Workload: facts, Origin: origin, Now: now}); d.Outcome != "" {
			var named string
			if !target.IsZero() && r.WantsTarget() {
				named = target.String()
			}
			r.Refuse(string(d.Outcome), string(d.Reason), named)
			e.m.decisions.WithLabelValues(string(d.Outcome), string(d.Reason)).Inc()
			// The notification's log line counts refusals by reason; each
			// one is detailed only at debug level, so that a notification
			// of many refused alerts costs one line.
			if log.enabled(ic.parent, slog.LevelDebug) {
				args := []any{"decision", d.Outcome, "reason", d.Reason, "namespace", target.Namespace, "workload", target.Name}
				if resolveErr != nil {
					args = append(args, "err", resolveErr)
				}
				log.Debug("alert refused", args...)
			}
			continue
		}
		if facts != nil && facts.Annotations[kinds.AnnotationActed] != "" && e.resumed.Load() {
			// A rollback taken before any record of it: its incident may
			// have been lost to a crash, and this alert belongs to it.
			lock := target.String()
			e.targets.LockKey(lock)
			_, err := e.rebuild(ic.get(), target, facts)
			_ = e.targets.UnlockKey(lock)
			if err != nil {
				return r, unavailable(err)
			}
		}
		rec := &Record{
			Key: key, Alert: a, Target: target, Origin: origin, ReceivedAt: now,
			Receiver: n.Receiver, GroupKey: n.GroupKey, ExternalURL: n.ExternalURL,
		}
		rec.trim()
		if rec.Truncated > 0 {
			e.m.truncated.Inc()
			log.Info("alert's annotations cut to keep its record small", "dropped_bytes", rec.Truncated)
		}
		ctx, name := ic.get(), recordName(key)
		switch acted, err := e.actFirst(ctx, p, rec, facts, log); {
		case err != nil:
			return r, unavailable(err)
		case acted:
			r.Accepted++
			continue
		}
		var cm *corev1.ConfigMap
		if kept := e.records.Load(); kept >= int64(e.opts.MaxRecords) {
			// Full: only an alert already recorded is taken.
			_, _, err = e.store.get(ctx, name)
			if apierrors.IsNotFound(errors.Unwrap(err)) {
				e.m.recordsFull.Inc()
				log.Warn("alert records full; answering 503", "records", kept, "limit", e.opts.MaxRecords)
				return r, fmt.Errorf("%d alert records are kept, the limit (engine.maxRecords): %w", kept, webhook.ErrRecordsFull)
			}
			if err == nil || errors.Is(err, errCorrupt) {
				err = errExists
			}
		} else {
			cm, err = e.store.create(ctx, rec)
		}
		switch {
		case errors.Is(err, errTooLarge):
			r.Refuse(refuse, recordTooLarge, target.String())
			e.m.invalid.WithLabelValues(recordTooLarge).Inc()
			log.Warn("alert refused: its record would be too large", "reason", recordTooLarge, "err", err)
		case rejected(err):
			// The API server refuses this record for what it holds:
			// retrying cannot help, and a 503 would have Alertmanager
			// retry forever.
			r.Refuse(refuse, recordRejected, target.String())
			e.m.invalid.WithLabelValues(recordRejected).Inc()
			log.Warn("alert cannot be recorded; refused", "reason", recordRejected, "err", err)
		case errors.Is(err, errExists):
			r.Duplicates++
			e.m.duplicates.Inc()
			e.seen.Add(key, seenPending)
			// An earlier attempt may have written the record and then timed
			// out before queueing it; queueing again is harmless, because a
			// record already handed over is left alone.
			queue.Add(name)
			log.Debug("duplicate alert", "key", key)
		case err != nil:
			return r, unavailable(err)
		default:
			r.Accepted++
			e.records.Add(1)
			e.m.records.Inc()
			e.seen.Add(key, seenPending)
			e.handoff.Store(cm.Name, recordHandoff{rec: rec, cm: cm})
			queue.Add(name)
			log.Info("alert recorded", "key", key, "namespace", target.Namespace, "workload", target.Name)
		}
	}
	if retry != nil {
		return r, unavailable(retry)
	}
	return r, nil
}

// What seen holds of an alert key.
type seenState uint8

const (
	seenPending seenState = iota // recorded; its decision may not be
	seenDone                     // its record was seen done
)

// maxResolveAttempts bounds the notifications answered 503 in a row
// because one alert's resolution could not be recorded. A resolution only
// feeds verification, which also asks Alertmanager; Alertmanager re-sends a
// failed notification until it succeeds, so without the bound one record
// that can never be written would turn every notification of its group
// into a 503, for ever.
const maxResolveAttempts = 10

// giveUpResolution decides about a resolution that could not be recorded:
// it gives up on it (logs, counts, and reports true) when retrying cannot
// help (the record is corrupt, or the API server refused the write for
// what it holds) or after maxResolveAttempts failures in a row; otherwise
// it counts the failure and reports false, for a 503.
func (e *Engine) giveUpResolution(key string, err error, log alertLog) bool {
	var reason string
	switch {
	case errors.Is(err, errCorrupt):
		reason = resolutionCorrupt
	case rejected(err):
		reason = resolutionRejected
	default:
		n := 1
		if v, ok := e.resolveFailures.Get(key); ok {
			n += v.(int)
		}
		if n < maxResolveAttempts {
			e.resolveFailures.Add(key, n)
			log.Warn("record the alert's resolution; answering 503 for a retry", "attempt", n, "of", maxResolveAttempts, "err", err)
			return false
		}
		reason = resolutionRetriesExhausted
	}
	e.resolveFailures.Remove(key)
	e.m.resolutionsDropped.WithLabelValues(reason).Inc()
	log.Error("alert resolution not recorded; giving up on it: its incident learns of it from Alertmanager, or not at all",
		"key", key, "reason", reason, "err", err)
	return true
}

// intakeTimeout bounds the API calls of one notification's intake.
const intakeTimeout = 3 * time.Second

// intakeContext is the context of one notification's intake. A stalled
// API server must turn into a 503 Alertmanager can retry, not a request
// that hangs until Alertmanager gives up on it; so what may reach the API
// server gets a deadline, intakeTimeout after the notification arrived.
// It is made at its first use: a notification answered from memory and
// the informer caches (a duplicate, a refusal) needs no timer. What intake
// sends goes to the API server ahead of the workers' requests
// (kube.Priority): Alertmanager is waiting for the answer.
type intakeContext struct {
	parent   context.Context
	deadline time.Time
	ctx      context.Context
	stop     context.CancelFunc
}

func (c *intakeContext) get() context.Context {
	if c.ctx == nil {
		c.ctx, c.stop = context.WithDeadline(kube.Foreground(c.parent), c.deadline)
	}
	return c.ctx
}

func (c *intakeContext) cancel() {
	if c.stop != nil {
		c.stop()
	}
}

// unavailable wraps err, which stopped a notification's intake, for a 503
// whose body names the reason when it is known: the Kubernetes API server
// did not answer in time, or answered that it cannot serve now.
func unavailable(err error) error {
	switch {
	case errors.Is(err, webhook.ErrUnavailable):
		return err
	case apiUnavailable(err):
		return fmt.Errorf("%w: %w", err, webhook.ErrClusterUnavailable)
	}
	return fmt.Errorf("%w: %w", err, webhook.ErrUnavailable)
}

// apiUnavailable reports whether err means the Kubernetes API server did
// not answer (in time), or answered that it cannot serve now. A refusal
// (forbidden, conflict, invalid) is not that.
func apiUnavailable(err error) bool {
	var netErr net.Error
	return errors.Is(err, context.DeadlineExceeded) || errors.As(err, &netErr) ||
		apierrors.IsServerTimeout(err) || apierrors.IsTimeout(err) || apierrors.IsServiceUnavailable(err) ||
		apierrors.IsTooManyRequests(err) || apierrors.IsInternalError(err)
}

// rejected reports whether the API server refused a write for its content.
func rejected(err error) bool {
	return apierrors.IsInvalid(err) || apierrors.IsRequestEntityTooLargeError(err) || apierrors.IsBadRequest(err)
}

// Run resumes the alert records and open incidents left by an earlier run
// (of this replica or another), then decides alerts with the given number of
// workers and works incidents with Options.IncidentWorkers, until ctx is
// cancelled. It may be called again after it returned, as when a replica
// leads again after losing its lease.
func (e *Engine) Run(ctx context.Context, workers int) error {
	q := e.q.Load()
	defer func() {
		e.resumed.Store(false)
		q.shutDown()
		e.q.Store(newQueues(e.opts.Clock))
	}()
	// The API server may be out when leadership begins; resuming waits for
	// it rather than giving up the lease.
	err := wait.PollUntilContextCancel(ctx, resumeInterval, true, func(ctx context.Context) (bool, error) {
		if err := e.resume(ctx, q); err != nil {
			if ctx.Err() == nil {
				e.logger.Error("resume alerts and incidents; retrying", "err", err, "retry_in", resumeInterval)
			}
			return false, nil
		}
		return true, nil
	})
	if err != nil {
		return nil // ctx ended
	}
	e.resumed.Store(true)
	e.logger.Info("resumed alert records and incidents")
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			for e.processNext(ctx, q) {
			}
		})
	}
	for range e.opts.IncidentWorkers {
		wg.Go(func() {
			for e.processNextIncident(ctx, q) {
			}
		})
	}
	wg.Go(func() {
		wait.UntilWithContext(ctx, e.collectGarbage, time.Minute)
	})
	wg.Go(func() {
		wait.UntilWithContext(ctx, func(ctx context.Context) { e.resync(ctx, q) }, e.opts.Resync)
	})
	if e.opts.GitOps != nil {
		wg.Go(func() {
			wait.UntilWithContext(ctx, e.opts.GitOps.ResumeDue, e.opts.Resync)
		})
	}
	<-ctx.Done()
	// Shut the queues before waiting, so the workers' Get returns.
	q.shutDown()
	wg.Wait()
	e.handoff.Clear()
	e.mail.clear()
	return nil
}

type recordHandoff struct {
	rec *Record
	cm  *corev1.ConfigMap
}

// takeRecord returns the record handed off by intake, or reads it.
func (e *Engine) takeRecord(ctx context.Context, name string) (*Record, *corev1.ConfigMap, error) {
	if h, ok := e.handoff.LoadAndDelete(name); ok {
		if h, ok := h.(recordHandoff); ok {
			return h.rec, h.cm, nil
		}
	}
	return e.store.get(ctx, name)
}

const resumeInterval = 2 * time.Second

// resume queues the undecided alert records and the open incidents, counts
// the records and the budget spent from every incident. It reads records
// and incidents a page at a time; one that cannot be decoded is moved aside
// (quarantined) and the others are resumed.
func (e *Engine) resume(ctx context.Context, q *queues) error {
	var total, pending int64
	err := e.store.each(ctx, recordSelector(nil), func(rec *Record, _ *corev1.ConfigMap) error {
		total++
		if rec.state() != stateDone {
			pending++
			e.seen.Add(rec.Key, seenPending)
			q.alerts.Add(recordName(rec.Key))
		}
		return nil
	}, e.quarantineRecord(ctx))
	if err != nil {
		return fmt.Errorf("resume alerts: %w", err)
	}
	e.countRecords(total)
	all, bad, err := e.opts.Incidents.Scan(ctx, false)
	if err != nil {
		return fmt.Errorf("resume open incidents: %w", err)
	}
	e.quarantineIncidents(ctx, bad)
	e.budget.reset(all, e.opts.Clock.Now())
	e.open.reset(all)
	if pending > 0 {
		e.logger.Info("resuming pending alerts", "count", pending)
	}
	open := 0
	for _, inc := range all {
		if !inc.Open() {
			continue
		}
		open++
		err := e.store.each(ctx, recordSelector(map[string]string{incidentLabel: incident.ObjectName(inc.ID)}), func(rec *Record, _ *corev1.ConfigMap) error {
			if !inc.HasAlert(rec.Key) && rec.Decision != nil {
				e.mail.post(inc.ID, incident.Event{Kind: incident.EventAlertJoined, At: rec.DecidedAt,
					Alert: alertOf(rec), Decision: rec.Decision, Plan: rec.Plan})
			}
			if !rec.ResolvedAt.IsZero() {
				e.mail.post(inc.ID, incident.Event{Kind: incident.EventAlertResolved, At: rec.ResolvedAt, Key: rec.Key})
			}
			return nil
		}, e.quarantineRecord(ctx))
		if err != nil {
			return fmt.Errorf("resume alerts of incident %s: %w", inc.ID, err)
		}
		q.known.Store(inc.ID, struct{}{})
		q.incidents.Add(inc.ID)
	}
	e.m.openIncidents.Set(float64(open))
	if open > 0 {
		e.logger.Info("resuming open incidents", "count", open)
	}
	// A rebuild that fails is tried again at the next Resync, and when the
	// alert is sent again; it never holds the leader back.
	if err := e.rebuildActed(ctx); err != nil {
		e.logger.Warn("rebuild rollbacks taken before their records; retrying at the next resync", "err", err)
	}
	return nil
}

// resync queues the undecided records and the open incidents that no worker
// of this Run has queued. Resuming finds what was in the cluster when this
// replica began to lead; but the replica that led before may still finish
// a webhook request it took then (its HTTP server drains them on shutdown,
// after it gave up the lease), and its record lands after the List.
// Alertmanager got a 2xx for it and will not re-send it soon.
func (e *Engine) resync(ctx context.Context, q *queues) {
	if err := e.rebuildActed(ctx); err != nil {
		e.logger.Warn("resync rollbacks taken before their records", "err", err)
	}
	err := e.store.each(ctx, recordSelector(nil, statePending, stateDecided), func(rec *Record, _ *corev1.ConfigMap) error {
		name := recordName(rec.Key)
		if q.alerts.NumRequeues(name) > 0 {
			return nil // failed before, and waits for its retry
		}
		e.seen.Add(rec.Key, seenPending)
		q.alerts.Add(name)
		return nil
	}, e.quarantineRecord(ctx))
	if err != nil {
		e.logger.Warn("resync undecided alerts", "err", err)
	}
	open, bad, err := e.opts.Incidents.Scan(ctx, true)
	if err != nil {
		e.logger.Warn("resync open incidents", "err", err)
		return
	}
	e.quarantineIncidents(ctx, bad)
	for _, inc := range open {
		if _, known := q.known.LoadOrStore(inc.ID, struct{}{}); known {
			continue
		}
		if e.open.get(inc.Target) == "" {
			e.open.set(inc.Target, inc.ID)
		}
		e.logger.Info("found an open incident no worker had taken up", "incident", inc.ID)
		q.incidents.Add(inc.ID)
	}
}

// countRecords sets the number of alert records kept, as counted.
func (e *Engine) countRecords(n int64) {
	e.records.Store(n)
	e.m.records.Set(float64(n))
}

// quarantineRecord returns what a walk over the records does with one it
// cannot decode: move it aside.
func (e *Engine) quarantineRecord(ctx context.Context) func(*corev1.ConfigMap, error) {
	return func(cm *corev1.ConfigMap, why error) { e.quarantine(ctx, kindAlert, cm, why) }
}

// quarantineIncidents moves aside the incidents that cannot be decoded,
// and leaves those a newer daemon wrote.
func (e *Engine) quarantineIncidents(ctx context.Context, bad []incident.Unreadable) {
	for _, u := range bad {
		if u.Newer {
			e.logger.Warn("incident written by a newer daemon; left alone", "object", u.Object.Name, "err", u.Err)
			continue
		}
		e.quarantine(ctx, incident.KindIncident, u.Object, u.Err)
	}
}

// quarantine moves a record or incident that cannot be decoded aside, for
// people to look at, so that it stops nothing else.
func (e *Engine) quarantine(ctx context.Context, kind string, cm *corev1.ConfigMap, why error) {
	moved, err := incident.Quarantine(ctx, e.opts.Client, cm, why)
	if err != nil {
		e.logger.Error("quarantine an unreadable "+kind+" record; it is skipped until the next try", "object", cm.Name, "err", err)
		return
	}
	e.m.quarantined.WithLabelValues(kind).Inc()
	e.logger.Error("quarantined an unreadable "+kind+" record: moved aside for people to look at; nothing else waits on it",
		"object", cm.Name, "quarantined_as", moved, "err", why)
}

func (e *Engine) processNext(ctx context.Context, q *queues) bool {
	name, shutdown := q.alerts.Get()
	if shutdown {
		return false
	}
	defer q.alerts.Done(name)
	if err := e.process(ctx, q, name); err != nil {
		if ctx.Err() != nil {
			return false
		}
		e.logger.Error("decide alert", "record", name, "err", err)
		q.alerts.AddRateLimited(name)
		return true
	}
	q.alerts.Forget(name)
	return true
}

// process decides one recorded alert and hands the decision
// to the workload's incident, then writes both into the record. The incident
// is written first and holds the decision, so a restart between the two
// writes finds the alert in its incident and takes the decision from there:
// nothing is decided or acted on twice.
func (e *Engine) process(ctx context.Context, q *queues, name string) error {
	rec, cm, err := e.takeRecord(ctx, name)
	if apierrors.IsNotFound(errors.Unwrap(err)) {
		return nil
	}
	if errors.Is(err, errCorrupt) {
		e.quarantine(ctx, kindAlert, cm, err)
		return nil
	}
	if err != nil {
		return err
	}
	if rec.state() == stateDone {
		e.seen.Add(rec.Key, seenDone)
		return nil
	}
	if !rec.Target.IsZero() {
		key := rec.Target.String()
		e.targets.LockKey(key)
		defer func() { _ = e.targets.UnlockKey(key) }()
	}
	var (
		facts   *policy.Workload
		open    *incident.Versioned
		decided bool
	)
	start := time.Now()
	if !rec.Target.IsZero() {
		// The informer cache is as fresh as the watch, and a decision it
		// misleads cannot act wrongly: the rollback reads the workload
		// again and acts only on the revision decided on.
		if facts, err = e.opts.Cache.Facts(ctx, rec.Target); err != nil {
			return err
		}
		if _, err = e.rebuild(ctx, rec.Target, facts); err != nil {
			return err
		}
		if open, err = e.openFor(ctx, rec.Target); err != nil {
			return err
		}
		if rec.Decision == nil && open != nil && open.HasAlert(rec.Key) {
			rec.Decision, rec.DecidedAt = &open.Decision, e.opts.Clock.Now()
		}
		if open != nil && !open.HasAlert(rec.Key) && newEpisode(open.Incident, facts) {
			// A newer rollout than the incident's: a new episode, with an
			// incident of its own. The old one goes on with its alerts.
			e.logger.Info("newer rollout than the open incident's: a new incident", "incident", open.ID,
				"namespace", rec.Target.Namespace, "workload", rec.Target.Name, "revision", facts.Revision)
			open = nil
		}
	}
	var place reservation
	if rec.Decision == nil {
		now := e.opts.Clock.Now()
		var d policy.Decision
		d, place = e.budget.decide(rec.Target, now, func(u policy.Usage) policy.Decision {
			return e.opts.Policy().Evaluate(policy.Input{Alert: rec.Alert, Target: rec.Target, Workload: facts, Origin: rec.Origin, Usage: u, Now: now})
		})
		rec.Decision, rec.DecidedAt, decided = &d, now, true
		rec.Plan = e.planFor(rec, facts)
	}
	took := time.Since(start)
	if rec.state() == stateDecided {
		var created bool
		rec.Incident, created, err = e.openIncident(ctx, rec, facts, open)
		if err != nil {
			place.release()
			return err
		}
		if created || (open != nil && open.TakesOver(*rec.Decision)) {
			// A rollback joining an incident that has not acted takes it
			// over. Should another alert take it over first, this place
			// stays counted for the hour: the budget errs on the side of
			// fewer rollbacks.
			place.keep(rec.Incident)
		} else {
			place.release()
		}
		q.known.Store(rec.Incident, struct{}{})
		q.incidents.Add(rec.Incident)
	} else {
		place.release()
	}
	if _, err := e.store.update(ctx, rec, cm); err != nil {
		// A conflict means another replica got here first; reading again
		// finds what it wrote.
		return fmt.Errorf("record decision: %w", err)
	}
	e.seen.Add(rec.Key, seenDone)
	if decided {
		d := rec.Decision
		e.m.decisionDuration.Observe(took.Seconds())
		e.m.decisions.WithLabelValues(string(d.Outcome), string(d.Reason)).Inc()
		e.logger.Info("decided", "key", rec.Key, "namespace", rec.Target.Namespace, "workload", rec.Target.Name,
			"decision", d.Outcome, "reason", d.Reason, "rule", d.Rule, "dry_run", d.DryRun, "message", d.Message,
			"took", took, "incident", rec.Incident)
	}
	return nil
}

// newEpisode reports whether the workload now runs a newer rollout than the
// one the incident is about, made by somebody else. Each rollback or flag
// restart the incident applied made one revision; a revision beyond those
// is not the incident's.
func newEpisode(inc *incident.Incident, w *policy.Workload) bool {
	if w == nil || inc.Revision == 0 {
		return false
	}
	ours := inc.Revision
	for _, a := range inc.Actions {
		if a.Result != nil && a.Result.Outcome == actuator.OutcomeApplied && a.Kind != actuator.KindScaleBounce {
			ours++
		}
	}
	if w.Revision == ours+1 && kinds.RolledBackFor(w.Annotations) == inc.Rollout &&
		w.Annotations[kinds.AnnotationRolledBackFrom] == fmt.Sprint(ours) {
		// The incident's own rollback, taken and not yet recorded in it.
		return false
	}
	return w.Revision > ours
}

// RolloutID names a bad rollout: one workload at one suspect revision. The
// actuator records it on the workload, so every alert about the same bad
// rollout finds the action already done.
func RolloutID(target policy.Ref, revision int64) string {
	return fmt.Sprintf("%s/%s/%s@%d", strings.ToLower(string(target.Kind)), target.Namespace, target.Name, revision)
}

// collectGarbage deletes decided alert records and resolved incidents older
// than the retention, counts the records kept, and moves aside those that
// cannot be decoded.
func (e *Engine) collectGarbage(ctx context.Context) {
	now := e.opts.Clock.Now()
	_, bad, err := e.opts.Incidents.DeleteResolvedBefore(ctx, now.Add(-e.opts.Retention))
	if err != nil {
		e.logger.Warn("collect old incidents", "err", err)
	}
	e.quarantineIncidents(ctx, bad)
	var kept int64
	err = e.store.each(ctx, recordSelector(nil), func(r *Record, _ *corev1.ConfigMap) error {
		kept++
		if r.state() != stateDone || now.Sub(r.DecidedAt) < e.opts.Retention {
			return nil
		}
		if err := e.store.delete(ctx, r.Key); err != nil {
			e.logger.Warn("collect old record", "key", r.Key, "err", err)
			return nil
		}
		kept--
		e.seen.Remove(r.Key)
		return nil
	}, e.quarantineRecord(ctx))
	if err != nil {
		e.logger.Warn("collect old records", "err", err)
		return
	}
	e.countRecords(kept)
}

// Record returns the record of the alert with the given key.
func (e *Engine) Record(ctx context.Context, key string) (*Record, error) {
	rec, _, err := e.store.get(ctx, recordName(key))
	return rec, err
}

type metrics struct {
	openIncidents      prometheus.Gauge
	decisionDuration   prometheus.Histogram
	actionToRecovery   prometheus.Histogram
	alertToAction      prometheus.Histogram
	decisions          *prometheus.CounterVec
	duplicates         prometheus.Counter
	unavailable        prometheus.Counter
	recordsFull        prometheus.Counter
	recordsLimit       prometheus.Gauge
	records            prometheus.Gauge
	invalid            *prometheus.CounterVec
	truncated          prometheus.Counter
	quarantined        *prometheus.CounterVec
	resolutionsDropped *prometheus.CounterVec
}

// Reasons of autorollbackd_alerts_invalid_total.
const (
	invalidFingerprint = "invalid_fingerprint"
	labelsTooLarge     = "labels_too_large"
	recordTooLarge     = "record_too_large"
	recordRejected     = "rejected_by_api"
)

// Reasons of autorollbackd_alert_resolutions_dropped_total.
const (
	resolutionCorrupt          = "corrupt_record"
	resolutionRejected         = "rejected_by_api"
	resolutionRetriesExhausted = "retries_exhausted"
)

// newMetrics registers the engine's metrics; maxRecords is the limit
// autorollbackd_alert_records_limit reports.
func newMetrics(reg prometheus.Registerer, maxRecords int) *metrics {
	f := promauto.With(reg)
	m := &metrics{
		openIncidents: f.NewGauge(prometheus.GaugeOpts{
			Namespace: "autorollbackd", Name: "incidents_open",
			Help: "Incidents not yet resolved.",
		}),
		decisionDuration: f.NewHistogram(prometheus.HistogramOpts{
			Namespace: "autorollbackd", Name: "decision_duration_seconds",
			Help:    "Time to decide one recorded alert: reading the workload's facts and its open incident, and evaluating the policy.",
			Buckets: []float64{0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1},
		}),
		actionToRecovery: f.NewHistogram(prometheus.HistogramOpts{
			Namespace: "autorollbackd", Name: "action_to_recovery_seconds",
			Help:    "Time from the first action of an incident to its verified recovery.",
			Buckets: []float64{1, 5, 10, 30, 60, 120, 300, 600, 1200},
		}),
		alertToAction: f.NewHistogram(prometheus.HistogramOpts{
			Namespace: "autorollbackd", Name: "alert_to_action_seconds",
			Help:    "Time from an alert's arrival at the webhook to its action being accepted by the API server.",
			Buckets: []float64{0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120},
		}),
		decisions: f.NewCounterVec(prometheus.CounterOpts{
			Namespace: "autorollbackd", Name: "decisions_total",
			Help: "Decisions taken on firing alerts, by outcome and reason.",
		}, []string{"outcome", "reason"}),
		duplicates: f.NewCounter(prometheus.CounterOpts{
			Namespace: "autorollbackd", Name: "alerts_duplicate_total",
			Help: "Firing alerts received again (re-sends and HA pairs) and not acted on a second time.",
		}),
		unavailable: f.NewCounter(prometheus.CounterOpts{
			Namespace: "autorollbackd", Name: "intake_backpressure_total",
			Help: "Notifications turned away with 503 because too many alerts were waiting for a decision.",
		}),
		recordsFull: f.NewCounter(prometheus.CounterOpts{
			Namespace: "autorollbackd", Name: "intake_records_full_total",
			Help: "Notifications turned away with 503 because engine.maxRecords alert records were kept.",
		}),
		records: f.NewGauge(prometheus.GaugeOpts{
			Namespace: "autorollbackd", Name: "alert_records",
			Help: "Alert records kept in the cluster, as last counted by the leader (at most engine.maxRecords).",
		}),
		recordsLimit: f.NewGauge(prometheus.GaugeOpts{
			Namespace: "autorollbackd", Name: "alert_records_limit",
			Help: "engine.maxRecords: at this many alert records the webhook answers 503.",
		}),
		invalid: f.NewCounterVec(prometheus.CounterOpts{
			Namespace: "autorollbackd", Name: "alerts_invalid_total",
			Help: "Alerts refused because they cannot be recorded faithfully, by reason.",
		}, []string{"reason"}),
		truncated: f.NewCounter(prometheus.CounterOpts{
			Namespace: "autorollbackd", Name: "alerts_truncated_total",
			Help: "Alerts recorded with their annotations, names or URLs cut to keep the record small.",
		}),
		quarantined: f.NewCounterVec(prometheus.CounterOpts{
			Namespace: "autorollbackd", Name: "records_quarantined_total",
			Help: "Alert and incident records that could not be decoded and were moved aside, by kind.",
		}, []string{"kind"}),
		resolutionsDropped: f.NewCounterVec(prometheus.CounterOpts{
			Namespace: "autorollbackd", Name: "alert_resolutions_dropped_total",
			Help: "Resolved alerts whose resolution could not be recorded and was given up on, by reason.",
		}, []string{"reason"}),
	}
	m.recordsLimit.Set(float64(maxRecords))
	for _, r := range []string{invalidFingerprint, labelsTooLarge, recordTooLarge, recordRejected} {
		m.invalid.WithLabelValues(r)
	}
	for _, k := range []string{kindAlert, incident.KindIncident} {
		m.quarantined.WithLabelValues(k)
	}
	for _, r := range []string{resolutionCorrupt, resolutionRejected, resolutionRetriesExhausted} {
		m.resolutionsDropped.WithLabelValues(r)
	}
	for _, o := range policy.Outcomes() {
		for _, r := range policy.Reasons() {
			m.decisions.WithLabelValues(string(o), string(r))
		}
	}
	return m
}
