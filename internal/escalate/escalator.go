package escalate

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"slices"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	promconfig "github.com/prometheus/common/config"
	"k8s.io/client-go/tools/record"
	"k8s.io/utils/clock"

	"github.com/autorollbackd/autorollbackd/internal/kubeclient"
	"github.com/autorollbackd/autorollbackd/internal/policy"
	"github.com/autorollbackd/autorollbackd/internal/secretfile"
	"github.com/autorollbackd/autorollbackd/internal/workload"
)

// Options configures an Escalator.
type Options struct {
	Config Config
	// Events records the Kubernetes Events of notifiers of type events;
	// required when there is one.
	Events record.EventRecorder
	// Client, optional, looks up a workload's UID for its Events, so that
	// they show in `kubectl describe`.
	Client kubeclient.Interface
	// Workloads, optional, looks the UID up first, from the informers.
	Workloads WorkloadCache
	// HTTPClient sends the requests of the pagerduty, slack and webhook
	// notifiers; nil means a client with default settings. Its transport is
	// wrapped, not replaced. Per-attempt timeouts come from the notifier's
	// timeout, not from HTTPClient.Timeout.
	HTTPClient *http.Client
	// Logger receives the component's logs; nil discards them.
	Logger *slog.Logger
	// Registry receives the metrics; nil registers none.
	Registry prometheus.Registerer
	// Clock dates PagerDuty events and reads Retry-After dates; nil means
	// the real clock. When it is also a clock.Clock (for example a fake
	// clock), waits between retries run on it too.
	Clock clock.PassiveClock

	// sleep, when set, replaces the wait between retries (tests).
	sleep func(context.Context, time.Duration) error
}

// WorkloadCache is a view of the workloads from the daemon's informers
// (workload.Caches); an error means: ask the API server.
type WorkloadCache interface {
	Lookup(ref policy.Ref) (workload.Object, error)
}

// Escalator owns the notifiers and the ladder. It is safe for concurrent
// use. It keeps no per-incident state: which levels were paged is the
// caller's to keep (and persist), and Ladder answers what is due.
type Escalator struct {
	cfg       Config
	ladder    Ladder
	notifiers map[string]*notifier
	log       *slog.Logger
	m         *metrics
	reloads   secretfile.Reloads
}

// New validates the configuration, reads every secret file and builds the
// notifiers. A missing or empty secret file is an error naming the key and
// the file; all problems are reported at once. The notifiers read their
// secret files again at each delivery attempt.
func New(o Options) (*Escalator, error) {
	if err := o.Config.Validate(); err != nil {
		return nil, fmt.Errorf("invalid escalation configuration: %w", err)
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.Clock == nil {
		o.Clock = clock.RealClock{}
	}
	if o.sleep == nil {
		o.sleep = sleeper(o.Clock)
	}
	m, err := newMetrics(o.Registry)
	if err != nil {
		return nil, err
	}
	log := o.Logger.With("component", "escalate")
	e := &Escalator{
		cfg:       o.Config,
		ladder:    slices.Clone(Ladder(o.Config.Ladder)),
		notifiers: map[string]*notifier{},
		log:       log,
		m:         m,
	}
	if o.Registry != nil {
		if err := secretfile.RegisterReloads(o.Registry, &e.reloads); err != nil {
			return nil, err
		}
	}
	env := buildEnv{
		http:    wrapHTTPClient(o.HTTPClient),
		events:  o.Events,
		cache:   o.Workloads,
		client:  o.Client,
		clock:   o.Clock,
		logger:  log,
		reloads: &e.reloads,
	}
	var errs []error
	for i, nc := range o.Config.Notifiers {
		nlog := log.With("notifier", nc.Name, "type", nc.Type)
		key := fmt.Sprintf("notifiers[%d]", i)
		env := env
		env.logger = nlog
		var inline []string
		if hc := nc.HTTPConfig; hc != nil {
			c, err := promconfig.NewClientFromConfig(*hc, "autorollbackd")
			if err != nil {
				errs = append(errs, &KeyError{Key: key + ".httpConfig", Err: err})
				continue
			}
			env.http = wrapHTTPClient(c)
			inline = inlineSecrets(hc)
		}
		s, secrets, err := notifierTypes[nc.Type].build(key, nc, env)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		e.notifiers[nc.Name] = &notifier{
			name: nc.Name, typ: nc.Type, s: s,
			timeout: nc.timeout(), retries: nc.retries(), inline: inline, files: secrets,
			sleep: o.sleep, clock: o.Clock, m: m, log: nlog,
		}
	}
	if err := errors.Join(errs...); err != nil {
		return nil, fmt.Errorf("build escalation notifiers: %w", err)
	}
	m.initialise(o.Config)
	return e, nil
}

// Ladder returns a copy of the configured ladder.
func (e *Escalator) Ladder() Ladder {
	out := make(Ladder, len(e.ladder))
	for i, s := range e.ladder {
		s.Notifiers = slices.Clone(s.Notifiers)
		out[i] = s
	}
	return out
}

// Notifier returns the configured notifier of a name (for example to send
// a test message), and false when there is none.
func (e *Escalator) Notifier(name string) (Notifier, bool) {
	n, ok := e.notifiers[name]
	return n, ok
}

// Announce sends m, as an announcement, to every notifier of
// Config.Announce at once. It returns the failures joined, nil when every
// notifier delivered (or none is configured).
func (e *Escalator) Announce(ctx context.Context, m Message) error {
	m.Kind, m.Level = Announce, ""
	return errors.Join(e.fanout(ctx, e.cfg.Announce, func(*notifier) []Message { return []Message{e.prepare(m)} })...)
}

// Delivery is who received a page.
type Delivery struct {
	// Receivers are the notifiers of the step that accepted the page, in
	// the step's order. A notifier that failed is not among them.
	Receivers []string
	// NoReceiver is true when the step names no notifier, so nobody was
	// paged: the level is reached, but no person is told. It is never true
	// when a notifier was tried, even if every one failed (that is an
	// error).
	NoReceiver bool
}

// Page sends m, as a page of step's level, to every notifier of the step at
// once, and returns the notifiers that accepted it. It counts
// autorollbackd_escalations_total: success when all delivered, failure when
// any did not (the error names each), no_receiver when the step has no
// notifiers (nobody is paged; Delivery.NoReceiver is set and a warning is
// logged). Paging a level again is safe: PagerDuty deduplicates it into the
// open incident.
func (e *Escalator) Page(ctx context.Context, step Step, m Message) (Delivery, error) {
	m.Kind, m.Level = Page, step.Level
	if len(step.Notifiers) == 0 {
		e.m.escalations.WithLabelValues(step.Level, resultNoReceiver).Inc()
		e.log.Warn("escalation level has no notifiers: nobody was paged",
			"level", step.Level, "incident", m.Incident.ID)
		return Delivery{NoReceiver: true}, nil
	}
	errs := e.fanout(ctx, step.Notifiers, func(*notifier) []Message { return []Message{e.prepare(m)} })
	var d Delivery
	for i, name := range step.Notifiers {
		if errs[i] == nil {
			d.Receivers = append(d.Receivers, name)
		}
	}
	result := resultSuccess
	err := errors.Join(errs...)
	if err != nil {
		result = resultFailure
		err = fmt.Errorf("page %s for incident %s: %w", step.Level, m.Incident.ID, err)
	}
	e.m.escalations.WithLabelValues(step.Level, result).Inc()
	return d, err
}

// Deduplicates reports whether the named notifier folds a repeated page
// into the first, so that sending a page again cannot page anybody twice:
// PagerDuty by the page's dedup key, Alertmanager by the page's labels,
// Kubernetes Events by the event recorder's aggregation. Slack and webhook
// receivers would get it twice.
func (e *Escalator) Deduplicates(name string) bool {
	n, ok := e.notifiers[name]
	return ok && (n.typ == "pagerduty" || n.typ == "alertmanager" || n.typ == "events")
}

// Resolve closes the pages of inc at the given levels: every notifier of
// those steps gets one resolve message per level it was paged for
// (PagerDuty: a resolve event with the page's dedup key; slack and webhook:
// a "resolved" message; events: an Event). A level that is not in the
// ladder is reported in the error; the other levels are still resolved.
func (e *Escalator) Resolve(ctx context.Context, inc Incident, levels []string) error {
	var errs []error
	perNotifier := map[string][]string{} // notifier -> levels, in the order given
	var names []string
	for _, level := range dedupe(levels) {
		step, ok := e.ladder.Step(level)
		if !ok {
			errs = append(errs, fmt.Errorf("resolve level %q: not in the ladder", level))
			continue
		}
		for _, n := range step.Notifiers {
			if _, seen := perNotifier[n]; !seen {
				names = append(names, n)
			}
			perNotifier[n] = append(perNotifier[n], level)
		}
	}
	summary := "Resolved: " + inc.Target.String()
	if inc.Alertname != "" {
		summary = "Resolved: " + inc.Alertname + " on " + inc.Target.String()
	}
	err := errors.Join(e.fanout(ctx, names, func(n *notifier) []Message {
		var ms []Message
		for _, level := range perNotifier[n.name] {
			ms = append(ms, e.prepare(Message{
				Kind: Resolve, Level: level, Incident: inc, Summary: summary,
				Details: []string{fmt.Sprintf("The %s page is closed: the incident is over.", level)},
			}))
		}
		return ms
	})...)
	if err != nil {
		errs = append(errs, err)
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("resolve incident %s: %w", inc.ID, err)
	}
	return nil
}

// prepare fills in the configured dashboard link when the incident names
// none, and copies Details so that concurrent notifiers share nothing the
// caller may change.
func (e *Escalator) prepare(m Message) Message {
	if m.Incident.DashboardURL == "" {
		m.Incident.DashboardURL = e.cfg.DashboardURL
	}
	m.Details = slices.Clone(m.Details)
	return m
}

// fanout delivers, to each named notifier concurrently, the messages msgs
// returns for it, in order. A slow or retrying notifier does not hold up the
// others. It returns each notifier's failures, nil when it delivered
// everything, at the index of its name.
func (e *Escalator) fanout(ctx context.Context, names []string, msgs func(*notifier) []Message) []error {
	errs := make([]error, len(names))
	var wg sync.WaitGroup
	for i, name := range names {
		n, ok := e.notifiers[name]
		if !ok {
			errs[i] = fmt.Errorf("no notifier named %q", name)
			continue
		}
		wg.Go(func() {
			var failed []error
			for _, m := range msgs(n) {
				if err := n.Notify(ctx, m); err != nil {
					n.log.Error("notification failed", "kind", string(m.Kind), "level", m.Level,
						"incident", m.Incident.ID, "namespace", m.Incident.Target.Namespace,
						"workload", m.Incident.Target.Name, "alertname", m.Incident.Alertname, "err", err)
					failed = append(failed, err)
					continue
				}
				n.log.Info("notification delivered", "kind", string(m.Kind), "level", m.Level,
					"incident", m.Incident.ID, "namespace", m.Incident.Target.Namespace,
					"workload", m.Incident.Target.Name)
			}
			errs[i] = errors.Join(failed...)
		})
	}
	wg.Wait()
	return errs
}

func dedupe(in []string) []string {
	var out []string
	for _, s := range in {
		if !slices.Contains(out, s) {
			out = append(out, s)
		}
	}
	return out
}

// inlineSecrets are the secrets written into an http_config itself, kept
// out of errors like those read from files.
func inlineSecrets(hc *promconfig.HTTPClientConfig) []string {
	var out []string
	add := func(s promconfig.Secret) {
		if s != "" {
			out = append(out, string(s))
		}
	}
	add(hc.BearerToken)
	if a := hc.Authorization; a != nil {
		add(a.Credentials)
	}
	if b := hc.BasicAuth; b != nil {
		add(b.Password)
	}
	if o := hc.OAuth2; o != nil {
		add(o.ClientSecret)
	}
	return out
}
