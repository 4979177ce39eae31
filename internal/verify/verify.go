// Package verify proves, after an action, that the workload recovered. It
// does what the service rollback runbook asks a human to do in "Step 3:
// Verify Rollback", "Step 4: Verify Functionality" and the first lines of
// the "Post-Rollback Checklist": watch `kubectl rollout status`, see that
// the pods are running, curl the health endpoints and an API call, and
// check that the error rate comes down.
//
// The checks run in the runbook's order, each stage only after the one
// before passed: rollout, pods, the http checks, the promql checks. Each
// check ends with a Result that is pass, fail or inconclusive, and says why
// in one sentence. Fail means the evidence shows the service did not
// recover; inconclusive means the evidence could not be had (a check was
// cancelled, a query never returned data, a token could not be read), and
// is counted as a pass only with Config.InconclusiveIsPass. Verification
// stops at the first check that fails (or, by default, that is
// inconclusive): the overall verdict can no longer be pass. The engine
// (internal/engine) escalates on anything but an overall pass.
//
// An http or promql check runs only for the workloads its Scope selects,
// so that one team's check, and its credentials, never meet another
// team's workload.
package verify

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"regexp"
	"sync"
	"time"

	"github.com/prometheus/client_golang/api"
	v1 "github.com/prometheus/client_golang/api/prometheus/v1"
	"github.com/prometheus/client_golang/prometheus"
	promconfig "github.com/prometheus/common/config"
	"github.com/prometheus/common/model"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/utils/clock"

	"github.com/autorollbackd/autorollbackd/internal/kubeclient"
	"github.com/autorollbackd/autorollbackd/internal/metricsutil"
	"github.com/autorollbackd/autorollbackd/internal/policy"
)

// Status is the verdict of one check, or of all of them.
type Status string

// The verdicts.
const (
	StatusPass         Status = "pass"         // the evidence shows the workload recovered
	StatusFail         Status = "fail"         // the evidence shows it did not
	StatusInconclusive Status = "inconclusive" // there is no evidence either way
)

// Statuses returns all statuses, for initialising metric label values at
// zero. The slice is fresh on every call.
func Statuses() []Status { return []Status{StatusPass, StatusFail, StatusInconclusive} }

// The kinds of check: the Kind of a Result and a metric label value.
const (
	KindRollout = "rollout"
	KindPods    = "pods"
	KindHTTP    = "http"
	KindPromQL  = "promql"
	KindAlert   = "alert"
)

// Kinds returns all kinds of check, for initialising metric label values at
// zero. The slice is fresh on every call.
func Kinds() []string { return []string{KindRollout, KindPods, KindHTTP, KindPromQL, KindAlert} }

// Result is one check's verdict.
type Result struct {
	Check   string    `json:"check"`   // "rollout", "pods", "http:<name>", "promql:<name>", "alert"
	Kind    string    `json:"kind"`    // bounded metric label: rollout | pods | http | promql | alert
	Status  Status    `json:"status"`  // pass | fail | inconclusive
	Message string    `json:"message"` // one human sentence with the facts
	At      time.Time `json:"at"`      // when the verdict was reached
}

// Overall combines results as the default configuration does
// (inconclusiveIsPass off): fail if any check failed; pass if there was a
// check and every check passed; else inconclusive. Only results of the
// check kinds (Kinds) count: a result of another kind, such as a signal a
// caller records next to the checks, never decides. Verifier.Overall
// applies the Verifier's configuration.
func Overall(results []Result) Status { return overall(results, false) }

// Overall combines results under the Verifier's configuration: as the
// package's Overall, except that with inconclusiveIsPass an inconclusive
// check does not stop a pass (at least one check must still pass).
func (v *Verifier) Overall(results []Result) Status {
	return overall(results, v.cfg.InconclusiveIsPass)
}

func overall(results []Result, inconclusiveIsPass bool) Status {
	var passed, inconclusive bool
	for _, r := range results {
		if !isCheckKind(r.Kind) {
			continue
		}
		switch r.Status {
		case StatusFail:
			return StatusFail
		case StatusPass:
			passed = true
		default:
			inconclusive = true
		}
	}
	if passed && (!inconclusive || inconclusiveIsPass) {
		return StatusPass
	}
	return StatusInconclusive
}

func isCheckKind(kind string) bool {
	switch kind {
	case KindRollout, KindPods, KindHTTP, KindPromQL:
		return true
	}
	return false
}

// counts reports whether a check's status lets verification go on to the
// next stage: a pass, or an inconclusive with inconclusiveIsPass.
func (v *Verifier) counts(s Status) bool {
	return s == StatusPass || (s == StatusInconclusive && v.cfg.InconclusiveIsPass)
}

// PromAPI is the one method of the Prometheus HTTP API client that the
// promql checks use; v1.API of github.com/prometheus/client_golang
// satisfies it.
type PromAPI interface {
	Query(ctx context.Context, query string, ts time.Time, opts ...v1.Option) (model.Value, v1.Warnings, v1.Infos, error)
}

var _ PromAPI = v1.API(nil)

// Options are the dependencies of a Verifier.
type Options struct {
	Config Config
	// Client reads workloads, their ReplicaSets, ControllerRevisions and
	// pods, and the Secrets named by bearerTokenSecret. It is required when
	// the rollout or pods check is enabled or an http check names a Secret.
	Client kubeclient.Interface
	// HTTPClient sends the http checks' requests. Nil means a client per
	// check that gives up after the check's timeout and follows redirects
	// only within the same host.
	HTTPClient *http.Client
	// Prometheus runs the promql checks' queries. Nil means a client of
	// Config.PrometheusURL; then promql checks without a PrometheusURL are
	// a config error.
	Prometheus PromAPI
	// Cache, optional, answers the rollout and pods checks' later reads
	// of the workload and its revisions, and the scoped checks' reads of
	// its labels, once it has caught up with the first read (see reads).
	// Nil: every read goes to the API server.
	Cache    Cache
	Logger   *slog.Logger          // nil: discard
	Registry prometheus.Registerer // nil: metrics are not registered
	Clock    clock.WithTicker      // nil: the real clock
	// SecretNamespace, when set, is where the Secrets named by
	// bearerTokenSecret are read: the daemon's own namespace, so that it
	// needs no access to Secrets in the workloads' namespaces. Empty means
	// the workload's namespace.
	SecretNamespace string
}

// Verifier runs the configured checks. It is safe for concurrent use.
type Verifier struct {
	cfg    Config
	client kubeclient.Interface
	cache  Cache
	// secretNamespace overrides where token Secrets are read.
	secretNamespace string
	prom            PromAPI
	http            []*httpCheck
	promql          []*promCheck
	// alertmanager asks Alertmanager's API, as alertmanager.httpConfig
	// says.
	alertmanager *http.Client
	logger       *slog.Logger
	clock        clock.WithTicker
	metrics      metrics
}

type metrics struct {
	verifications *prometheus.CounterVec
	duration      *prometheus.HistogramVec
}

// newMetrics creates the metrics and registers them with reg (nil: not
// registered). A second Verifier on the same registry, as after a config
// reload, shares the collectors the first registered instead of failing.
func newMetrics(reg prometheus.Registerer) (metrics, error) {
	var m metrics
	var err error
	m.verifications, err = metricsutil.Register(reg, prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: "autorollbackd",
		Name:      "verifications_total",
		Help:      "Verification checks run, by kind of check and result.",
	}, []string{"kind", "result"}))
	if err != nil {
		return m, err
	}
	m.duration, err = metricsutil.Register(reg, prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Namespace: "autorollbackd",
		Name:      "verification_duration_seconds",
		Help:      "How long verification checks took to reach a verdict, by kind of check.",
		Buckets:   []float64{0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600},
	}, []string{"kind"}))
	if err != nil {
		return m, err
	}
	for _, k := range Kinds() {
		m.duration.WithLabelValues(k)
		for _, s := range Statuses() {
			m.verifications.WithLabelValues(k, string(s))
		}
	}
	return m, nil
}

// New validates o.Config, compiles its templates and returns a Verifier.
// Config errors are *KeyError values joined, as from Config.Validate.
func New(o Options) (*Verifier, error) {
	cfg := o.Config
	if err := cfg.validate(o.Prometheus == nil); err != nil {
		return nil, fmt.Errorf("new verifier: %w", err)
	}
	cfg = cfg.withDefaults()
	needsClient := cfg.Rollout.Enabled || cfg.Pods.Enabled
	for _, h := range cfg.HTTP {
		needsClient = needsClient || !h.BearerTokenSecret.IsZero() || h.Selector != ""
	}
	for _, p := range cfg.PromQL {
		needsClient = needsClient || p.Selector != ""
	}
	if needsClient && o.Client == nil {
		return nil, errors.New("new verifier: Options.Client is required for the rollout and pods checks, for bearer tokens from Secrets and for checks with a selector")
	}
	v := &Verifier{
		cfg:             cfg,
		client:          o.Client,
		cache:           o.Cache,
		secretNamespace: o.SecretNamespace,
		prom:            o.Prometheus,
		logger:          o.Logger,
		clock:           o.Clock,
	}
	if v.logger == nil {
		v.logger = slog.New(slog.DiscardHandler)
	}
	v.logger = v.logger.With("component", "verify")
	if v.clock == nil {
		v.clock = clock.RealClock{}
	}
	if v.prom == nil && len(cfg.PromQL) > 0 {
		hc := promconfig.DefaultHTTPClientConfig
		if cfg.PrometheusHTTPConfig != nil {
			hc = *cfg.PrometheusHTTPConfig
		}
		httpClient, err := promconfig.NewClientFromConfig(hc, "verify_prometheus")
		if err != nil {
			return nil, fmt.Errorf("new verifier: %w", &KeyError{Key: "prometheusHTTPConfig", Err: err})
		}
		c, err := api.NewClient(api.Config{Address: cfg.PrometheusURL, Client: httpClient})
		if err != nil {
			return nil, fmt.Errorf("new verifier: create Prometheus client for %s: %w", cfg.PrometheusURL, err)
		}
		v.prom = v1.NewAPI(c)
	}
	var transport http.RoundTripper
	if o.HTTPClient == nil && len(cfg.HTTP) > 0 {
		transport = http.DefaultTransport.(*http.Transport).Clone()
	}
	for _, h := range cfg.HTTP {
		h = h.withDefaults()
		c := &httpCheck{HTTPCheck: h, client: o.HTTPClient}
		var err error
		if c.url, err = parseTemplate("url", h.URL); err != nil {
			return nil, fmt.Errorf("new verifier: http check %s: %w", h.Name, err) // unreachable: validated
		}
		if c.scope, err = h.Scope.compile(); err != nil {
			return nil, fmt.Errorf("new verifier: http check %s: %w", h.Name, err) // unreachable: validated
		}
		if h.BodyRegex != "" {
			c.body = regexp.MustCompile(h.BodyRegex) // validated
		}
		if c.client == nil {
			c.client = newHTTPClient(transport, h.Timeout.Duration)
		}
		v.http = append(v.http, c)
	}
	for _, p := range cfg.PromQL {
		p = p.withDefaults()
		c := &promCheck{PromQLCheck: p}
		var err error
		if c.query, err = parseTemplate("query", p.Query); err != nil {
			return nil, fmt.Errorf("new verifier: promql check %s: %w", p.Name, err) // unreachable: validated
		}
		if c.scope, err = p.Scope.compile(); err != nil {
			return nil, fmt.Errorf("new verifier: promql check %s: %w", p.Name, err) // unreachable: validated
		}
		v.promql = append(v.promql, c)
	}
	hc := promconfig.DefaultHTTPClientConfig
	if cfg.Alertmanager.HTTPConfig != nil {
		hc = *cfg.Alertmanager.HTTPConfig
	}
	var err error
	if v.alertmanager, err = promconfig.NewClientFromConfig(hc, "verify_alertmanager"); err != nil {
		return nil, fmt.Errorf("new verifier: %w", &KeyError{Key: "alertmanager.httpConfig", Err: err})
	}
	if v.metrics, err = newMetrics(o.Registry); err != nil {
		return nil, fmt.Errorf("new verifier: %w", err)
	}
	return v, nil
}

// check is one check to run for a target. floor is the earliest time it
// may give up (zero: no floor); see Verify.
type check struct {
	name, kind string
	run        func(ctx context.Context, floor time.Time) (Status, string)
}

// stage is checks that start together, once every stage before has passed.
type stage []check

// Verify runs the configured checks for the workload in the runbook's
// order and returns their results in that order: rollout, pods, the http
// checks in config order, then the promql checks in config order. Of the
// http and promql checks only those whose Scope selects the workload run;
// the others have no result, so they can neither fail nor pass it. Each
// stage starts only when the one before passed: the rollout check; the pods
// check; each http check, one after another; the promql checks, together
// (each observes over time; one after another would multiply the wait).
//
// Verification stops at the first check that fails, or that is
// inconclusive unless inconclusiveIsPass is set: the overall verdict can no
// longer be pass. The checks after it are not run and are reported as
// inconclusive, "Not run: http:live failed first."; the other promql checks
// still running are stopped and reported inconclusive, "Stopped because
// promql:error-ratio failed: ...". Not-run checks are not counted in the
// metrics.
//
// Each check is bounded by its own timeout and by ctx; a check that ctx
// ends before its verdict is inconclusive. Unless the rollout check passed
// (it is off, or inconclusive with inconclusiveIsPass), no later check
// gives up before rollout.timeout has passed since Verify began: a check
// whose own timeout or retries run out earlier keeps trying until then, so
// that a rollout that is slow but good is not judged failed.
func (v *Verifier) Verify(ctx context.Context, target policy.Ref) []Result {
	var floor time.Time
	if d := v.cfg.Rollout.Timeout.Duration; d > 0 {
		floor = v.clock.Now().Add(d)
	}
	var results []Result
	var stop string // why the stages left are not run
	var notRun []string
	run := func(s stage) {
		if stop != "" {
			at := v.clock.Now()
			for _, c := range s {
				results = append(results, Result{Check: c.name, Kind: c.kind, Status: StatusInconclusive, Message: "Not run: " + stop + ".", At: at})
				notRun = append(notRun, c.name)
			}
			return
		}
		rs := v.runStage(ctx, target, s, floor)
		results = append(results, rs...)
		if s[0].kind == KindRollout && rs[0].Status == StatusPass {
			floor = time.Time{}
		}
		stop = v.stopReason(ctx, rs)
	}
	reads := &reads{v: v, target: target}
	for _, s := range v.kubeStages(reads) {
		run(s)
	}
	// The scoped checks are chosen only now: when the rollout and pods
	// checks passed, the workload whose labels a selector needs was just
	// read.
	for _, s := range v.scopedStages(ctx, reads) {
		run(s)
	}
	if len(notRun) > 0 {
		v.logger.Log(ctx, slog.LevelWarn, "verification stopped early", "namespace", target.Namespace, "workload", target.Name,
			"reason", stop, "not_run", notRun)
	}
	return results
}

// kubeStages returns the rollout and pods checks, as configured.
func (v *Verifier) kubeStages(r *reads) []stage {
	target := r.target
	var stages []stage
	if v.cfg.Rollout.Enabled {
		stages = append(stages, stage{{KindRollout, KindRollout, func(ctx context.Context, _ time.Time) (Status, string) {
			if !workloadRef(target) {
				return StatusInconclusive, fmt.Sprintf("Cannot judge the rollout of %s: not a Deployment, StatefulSet or DaemonSet with a namespace and name.", target)
			}
			return v.checkRollout(ctx, r)
		}}})
	}
	if v.cfg.Pods.Enabled {
		stages = append(stages, stage{{KindPods, KindPods, func(ctx context.Context, floor time.Time) (Status, string) {
			if !workloadRef(target) {
				return StatusInconclusive, fmt.Sprintf("Cannot check the pods of %s: not a Deployment, StatefulSet or DaemonSet with a namespace and name.", target)
			}
			return v.checkPods(ctx, r, floor)
		}}})
	}
	return stages
}

// scopedStages returns the http and promql checks that select target (see
// Scope), stage by stage. A check that selects on labels that cannot be
// read is not run but reported inconclusive: it might have applied, and
// then its verdict is missing.
func (v *Verifier) scopedStages(ctx context.Context, r *reads) []stage {
	target := r.target
	var stages []stage
	wl := &workloadLabels{read: func(ctx context.Context) (labels.Set, error) { return v.readLabels(ctx, r) }}
	var leftOut []string
	// pick returns the check, or false when it does not select target.
	pick := func(name, kind string, s scope, run func(ctx context.Context, floor time.Time) (Status, string)) (check, bool) {
		sel, err := s.selects(ctx, target, wl)
		switch sel {
		case unselected:
			leftOut = append(leftOut, name)
			return check{}, false
		case unknown:
			msg := fmt.Sprintf("Not run: could not read the labels of %s to tell whether the check selects it: %v.", target, err)
			run = func(context.Context, time.Time) (Status, string) { return StatusInconclusive, msg }
		}
		return check{name, kind, run}, true
	}
	for _, h := range v.http {
		c, ok := pick(KindHTTP+":"+h.Name, KindHTTP, h.scope, func(ctx context.Context, floor time.Time) (Status, string) {
			return v.checkHTTP(ctx, h, target, floor)
		})
		if ok {
			stages = append(stages, stage{c})
		}
	}
	var promql stage
	for _, p := range v.promql {
		c, ok := pick(KindPromQL+":"+p.Name, KindPromQL, p.scope, func(ctx context.Context, floor time.Time) (Status, string) {
			return v.checkPromQL(ctx, p, target, floor)
		})
		if ok {
			promql = append(promql, c)
		}
	}
	if len(promql) > 0 {
		stages = append(stages, promql)
	}
	if len(leftOut) > 0 {
		v.logger.Debug("checks that do not select the workload are left out", "namespace", target.Namespace, "workload", target.Name,
			"checks", leftOut)
	}
	return stages
}

// stopped is the cause of a stage's context ended because one of its
// checks did not pass.
type stopped struct {
	check  string
	status Status
}

func (s *stopped) Error() string { return s.check + " " + verdictWords(s.status) }

// verdictWords is how a verdict reads in a message about another check.
func verdictWords(s Status) string {
	if s == StatusFail {
		return "failed"
	}
	return "was " + string(s)
}

// runStage runs the checks of a stage together and returns their results
// in order. The first that does not pass stops the others.
func (v *Verifier) runStage(ctx context.Context, target policy.Ref, s stage, floor time.Time) []Result {
	if len(s) == 1 {
		return []Result{v.run(ctx, s[0], floor, "namespace", target.Namespace, "workload", target.Name)}
	}
	sctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	results := make([]Result, len(s))
	var wg sync.WaitGroup
	for i, c := range s {
		wg.Go(func() {
			results[i] = v.run(sctx, c, floor, "namespace", target.Namespace, "workload", target.Name)
			if !v.counts(results[i].Status) {
				cancel(&stopped{check: c.name, status: results[i].Status})
			}
		})
	}
	wg.Wait()
	return results
}

// stopReason says why verification stops after a stage with these
// results, or "" when it goes on.
func (v *Verifier) stopReason(ctx context.Context, results []Result) string {
	for _, r := range results {
		if r.Status == StatusFail {
			return r.Check + " failed first"
		}
	}
	if ctx.Err() != nil {
		return "verification was cancelled"
	}
	for _, r := range results {
		if !v.counts(r.Status) {
			return r.Check + " " + verdictWords(r.Status) + " first"
		}
	}
	return ""
}

// run runs one check and records its result in the metrics and the log,
// with attrs (key-value pairs) saying what was checked.
func (v *Verifier) run(ctx context.Context, c check, floor time.Time, attrs ...any) Result {
	start := v.clock.Now()
	status, msg := c.run(ctx, floor)
	if s := (*stopped)(nil); status == StatusInconclusive && errors.As(context.Cause(ctx), &s) && s.check != c.name {
		msg = fmt.Sprintf("Stopped because %s: %s", s, msg)
	}
	at := v.clock.Now()
	v.metrics.verifications.WithLabelValues(c.kind, string(status)).Inc()
	v.metrics.duration.WithLabelValues(c.kind).Observe(at.Sub(start).Seconds())
	level := slog.LevelInfo
	if status != StatusPass {
		level = slog.LevelWarn
	}
	attrs = append([]any{"check", c.name, "kind", c.kind, "result", string(status)}, attrs...)
	v.logger.Log(ctx, level, "verification check finished", append(attrs, "duration", at.Sub(start), "detail", msg)...)
	return Result{Check: c.name, Kind: c.kind, Status: status, Message: msg, At: at}
}

// limit returns how long a check starting now may take: its own timeout,
// or longer when floor is later, and how messages name that limit.
func (v *Verifier) limit(own time.Duration, floor time.Time) (time.Duration, string) {
	if rest := floor.Sub(v.clock.Now()); !floor.IsZero() && rest > own {
		return rest, "rollout.timeout " + v.cfg.Rollout.Timeout.Duration.String()
	}
	return own, own.String()
}

func workloadRef(r policy.Ref) bool { return r.Complete() }

// errTimeout is the cause of a context ended by a check's own timeout, as
// opposed to the caller's context.
var errTimeout = errors.New("check timed out")

// withTimeout is context.WithTimeout measured on v.clock, with errTimeout as
// the cause, so that a check tells its own timeout from the caller's
// cancellation.
func (v *Verifier) withTimeout(parent context.Context, d time.Duration) (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithCancelCause(parent)
	t := v.clock.NewTimer(d)
	stop := make(chan struct{})
	go func() {
		select {
		case <-t.C():
			cancel(errTimeout)
		case <-stop:
		case <-ctx.Done():
		}
	}()
	var once sync.Once
	return ctx, func() {
		once.Do(func() {
			t.Stop()
			close(stop)
			cancel(context.Canceled)
		})
	}
}

// sleep waits d on v.clock (at once when d <= 0) and reports whether ctx
// is still live.
func (v *Verifier) sleep(ctx context.Context, d time.Duration) bool {
	if d > 0 {
		t := v.clock.NewTimer(d)
		defer t.Stop()
		select {
		case <-ctx.Done():
		case <-t.C():
		}
	}
	return ctx.Err() == nil
}

// waitWords are the words of a wait check's messages when polling ends
// without a verdict.
type waitWords struct {
	read     string // what each poll reads: "Could not read <read> within ..."
	awaited  string // what the check waits for: "cancelled before <awaited>: ..."
	deadline string // the verdict at the timeout: "<deadline> within ..."
}

// judgeFunc reads the workload once and judges it. done reports a verdict,
// held in status; msg describes what was read, also when not done. A
// non-nil err means nothing could be read.
type judgeFunc func(ctx context.Context) (msg string, status Status, done bool, err error)

// wait calls judge at once and then every poll interval until it reaches a
// verdict, the workload turns out not to exist (fail), or the timeout (own,
// or until floor when that is later; or ctx) ends it. At the timeout the last message read is the reason for a
// fail; without one (every poll failed) the result is inconclusive, as it
// is when the caller's ctx ends first.
func (v *Verifier) wait(ctx context.Context, target policy.Ref, own time.Duration, floor time.Time, words waitWords, judge judgeFunc) (Status, string) {
	timeout, within := v.limit(own, floor)
	pctx, cancel := v.withTimeout(ctx, timeout)
	defer cancel()
	ticker := v.clock.NewTicker(v.cfg.PollInterval.Duration)
	defer ticker.Stop()
	var lastMsg string
	var lastErr error
polling:
	for {
		msg, status, done, err := judge(pctx)
		switch {
		case pctx.Err() != nil:
			// A read cut short by the end of polling says nothing.
		case err != nil && isNotFound(err):
			return StatusFail, fmt.Sprintf("%s does not exist: %v.", target, err)
		case err != nil:
			lastErr = err
		default:
			lastErr, lastMsg = nil, msg
			if done {
				return status, msg
			}
		}
		select {
		case <-pctx.Done():
			break polling
		case <-ticker.C():
		}
	}
	switch {
	case context.Cause(pctx) != errTimeout && lastMsg != "":
		return StatusInconclusive, fmt.Sprintf("Verification was cancelled before %s: %s", words.awaited, lastMsg)
	case context.Cause(pctx) != errTimeout:
		return StatusInconclusive, fmt.Sprintf("Verification was cancelled before %s could be read.", words.read)
	case lastMsg == "" && lastErr != nil:
		return StatusInconclusive, fmt.Sprintf("Could not read %s within %s: %v.", words.read, within, lastErr)
	case lastMsg == "":
		return StatusInconclusive, fmt.Sprintf("Could not read %s within %s.", words.read, within)
	case lastErr != nil:
		return StatusFail, fmt.Sprintf("%s within %s: %s (then: %v)", words.deadline, within, lastMsg, lastErr)
	}
	return StatusFail, fmt.Sprintf("%s within %s: %s", words.deadline, within, lastMsg)
}

func isNotFound(err error) bool { return apierrors.IsNotFound(err) }
