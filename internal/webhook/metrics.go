package webhook

import (
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
)

// knownCodes are the status codes the handler answers with.
var knownCodes = []int{200, 400, 401, 405, 413, 415, 500, 503}

type metrics struct {
	requests      *prometheus.CounterVec
	rejected      *prometheus.CounterVec
	notifications *prometheus.CounterVec
	alerts        *prometheus.CounterVec
	senders       *prometheus.CounterVec
	duration      prometheus.Histogram
}

func newMetrics(reg prometheus.Registerer, auth *Authenticator) (*metrics, error) {
	f := promauto.With(reg)
	m := &metrics{
		requests: f.NewCounterVec(prometheus.CounterOpts{
			Name: "autorollbackd_webhook_requests_total",
			Help: "Webhook requests by HTTP status code.",
		}, []string{"code"}),
		rejected: f.NewCounterVec(prometheus.CounterOpts{
			Name: "autorollbackd_webhook_rejected_total",
			Help: "Webhook requests refused, by reason.",
		}, []string{"reason"}),
		notifications: f.NewCounterVec(prometheus.CounterOpts{
			Name: "autorollbackd_notifications_received_total",
			Help: "Valid Alertmanager notifications received, by status.",
		}, []string{"status"}),
		alerts: f.NewCounterVec(prometheus.CounterOpts{
			Name: "autorollbackd_alerts_received_total",
			Help: "Alerts in valid Alertmanager notifications, by status.",
		}, []string{"status"}),
		senders: f.NewCounterVec(prometheus.CounterOpts{
			Name: "autorollbackd_webhook_sender_requests_total",
			Help: "Authenticated webhook requests by sender (webhook.auth.senders; default is the single credential of webhook.auth) and status code.",
		}, []string{"sender", "code"}),
		duration: f.NewHistogram(prometheus.HistogramOpts{
			Name:    "autorollbackd_webhook_request_duration_seconds",
			Help:    "Time to answer a webhook request.",
			Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10},
		}),
	}
	f.NewCounterFunc(prometheus.CounterOpts{
		Name: "autorollbackd_webhook_auth_failures_total",
		Help: "Webhook requests refused for missing or invalid credentials.",
	}, func() float64 { return float64(auth.failures.Load()) })
	if err := registerReloads(reg, &auth.reloads); err != nil {
		return nil, err
	}

	for _, c := range knownCodes {
		m.requests.WithLabelValues(strconv.Itoa(c))
	}
	for _, r := range reasons {
		m.rejected.WithLabelValues(r)
	}
	for _, s := range auth.senderNames() {
		for _, c := range knownCodes {
			if c != http.StatusUnauthorized {
				m.senders.WithLabelValues(s, strconv.Itoa(c))
			}
		}
	}
	for _, s := range []string{"firing", "resolved"} {
		m.notifications.WithLabelValues(s)
		m.alerts.WithLabelValues(s)
	}
	return m, nil
}

// reloadStats counts re-reads of secret files after the start: success when
// a changed secret was loaded, failure when a read failed and the last good
// secret was kept.
type reloadStats struct {
	success, failure atomic.Uint64
}

var reloadsDesc = prometheus.NewDesc("autorollbackd_secret_reloads_total",
	"Re-reads of secret files (webhook credentials, TLS certificates) after the start: success when a changed secret was loaded, failure when a read failed and the last good secret was kept.",
	[]string{"result"}, nil)

// reloadCollector is autorollbackd_secret_reloads_total: the sum of the
// reloadStats of the Authenticator and of ServerTLS. Those are built apart
// from each other and without the registry, so the collector is registered
// once per registry and found again through prometheus.AlreadyRegisteredError
// (hence no promauto here).
type reloadCollector struct {
	mu      sync.Mutex
	sources []*reloadStats
}

func registerReloads(reg prometheus.Registerer, s *reloadStats) error {
	c := &reloadCollector{}
	if err := reg.Register(c); err != nil {
		are, ok := errors.AsType[prometheus.AlreadyRegisteredError](err)
		if !ok {
			return fmt.Errorf("register secret reload metric: %w", err)
		}
		if c, ok = are.ExistingCollector.(*reloadCollector); !ok {
			return fmt.Errorf("register secret reload metric: %w", err)
		}
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if !slices.Contains(c.sources, s) {
		c.sources = append(c.sources, s)
	}
	return nil
}

func (c *reloadCollector) Describe(ch chan<- *prometheus.Desc) { ch <- reloadsDesc }

func (c *reloadCollector) Collect(ch chan<- prometheus.Metric) {
	c.mu.Lock()
	var ok, failed uint64
	for _, s := range c.sources {
		ok += s.success.Load()
		failed += s.failure.Load()
	}
	c.mu.Unlock()
	ch <- prometheus.MustNewConstMetric(reloadsDesc, prometheus.CounterValue, float64(ok), "success")
	ch <- prometheus.MustNewConstMetric(reloadsDesc, prometheus.CounterValue, float64(failed), "failure")
}
