package kube

import (
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"k8s.io/client-go/rest"
)

// Requests times the daemon's requests to the API server, by client and
// verb: whether the acting client's reads and patches are slow, or the
// records client's writes, is what an alert-to-action time that grew
// needs to be read against. It is a prometheus.Collector.
type Requests struct {
	seconds *prometheus.HistogramVec
}

// NewRequests returns a Requests with no client yet.
func NewRequests() *Requests {
	return &Requests{seconds: prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name: "autorollbackd_kube_request_duration_seconds",
		Help: "Time the daemon's requests to the Kubernetes API server took, from sending to the response's headers, by client (act, records, verify, election) and HTTP verb; watches are left out. Time spent waiting for kubernetes.backgroundInFlight or a client's rate limit is not counted.",
		// From a read served by the watch cache to a write on an API
		// server near its limits.
		Buckets: []float64{0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10},
	}, []string{"client", "verb"})}
}

// Describe implements prometheus.Collector.
func (q *Requests) Describe(ch chan<- *prometheus.Desc) { q.seconds.Describe(ch) }

// Collect implements prometheus.Collector.
func (q *Requests) Collect(ch chan<- prometheus.Metric) { q.seconds.Collect(ch) }

// Time wraps the transport of cfg so that its requests are timed under
// client. Wrapped before the client's other wrappers, it times the request
// on the wire only.
func (q *Requests) Time(cfg *rest.Config, client string) {
	cfg.Wrap(func(rt http.RoundTripper) http.RoundTripper {
		return roundTripper(func(r *http.Request) (*http.Response, error) {
			if r.URL.Query().Get("watch") == "true" {
				// Open for as long as the watch lasts.
				return rt.RoundTrip(r)
			}
			start := time.Now()
			resp, err := rt.RoundTrip(r)
			q.seconds.WithLabelValues(client, r.Method).Observe(time.Since(start).Seconds())
			return resp, err
		})
	})
}
