package webhook

import (
	"net/http"
	"strconv"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"

	"github.com/autorollbackd/autorollbackd/internal/secretfile"
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
	if err := secretfile.RegisterReloads(reg, &auth.reloads); err != nil {
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
