package escalate

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/autorollbackd/autorollbackd/internal/metricsutil"
)

// Results of a notification or an escalation, as metric label values.
const (
	resultSuccess = "success"
	resultFailure = "failure"
	// resultNoReceiver is a page of a level that has no notifiers: nobody
	// was paged.
	resultNoReceiver = "no_receiver"
)

type metrics struct {
	notifications *prometheus.CounterVec   // notifier, type, kind, result
	attempts      *prometheus.CounterVec   // notifier, type
	duration      *prometheus.HistogramVec // type
	escalations   *prometheus.CounterVec   // level, result
}

// newMetrics registers the metrics on reg (nil registers nothing). A
// collector already registered by an earlier Escalator on the same
// registry, after a configuration reload, is reused instead of failing the
// way promauto would.
func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		notifications: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "autorollbackd", Name: "notifications_total",
			Help: "Notifications delivered (success) or given up on after retries (failure), by notifier, notifier type, message kind (announce, page, resolve) and result.",
		}, []string{"notifier", "type", "kind", "result"}),
		attempts: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "autorollbackd", Name: "notification_attempts_total",
			Help: "Delivery attempts, retries included, by notifier and notifier type.",
		}, []string{"notifier", "type"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: "autorollbackd", Name: "notification_duration_seconds",
			Help:    "Time taken by one delivery attempt, by notifier type.",
			Buckets: []float64{.01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30},
		}, []string{"type"}),
		escalations: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "autorollbackd", Name: "escalations_total",
			Help: "Pages of a ladder level: success when every notifier of the step delivered, failure when one did not, no_receiver when the level has no notifiers and nobody was paged.",
		}, []string{"level", "result"}),
	}
	var err error
	if m.notifications, err = metricsutil.Register(reg, m.notifications); err != nil {
		return nil, err
	}
	if m.attempts, err = metricsutil.Register(reg, m.attempts); err != nil {
		return nil, err
	}
	if m.duration, err = metricsutil.Register(reg, m.duration); err != nil {
		return nil, err
	}
	if m.escalations, err = metricsutil.Register(reg, m.escalations); err != nil {
		return nil, err
	}
	return m, nil
}

// initialise creates the series of the configured notifiers and levels at
// zero, so that rate() and alerts work before the first notification.
func (m *metrics) initialise(c Config) {
	for _, n := range c.Notifiers {
		for _, k := range Kinds() {
			for _, r := range []string{resultSuccess, resultFailure} {
				m.notifications.WithLabelValues(n.Name, n.Type, string(k), r)
			}
		}
		m.attempts.WithLabelValues(n.Name, n.Type)
		m.duration.WithLabelValues(n.Type)
	}
	for _, s := range c.Ladder {
		for _, r := range []string{resultSuccess, resultFailure, resultNoReceiver} {
			m.escalations.WithLabelValues(s.Level, r)
		}
	}
}
