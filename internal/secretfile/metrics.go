package secretfile

import (
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"
)

// Reloads counts re-reads of secret files after the start: a success when
// a changed secret was loaded, a failure when a read failed and the last
// good secret was kept.
type Reloads struct {
	success, failure atomic.Uint64
}

// Succeeded counts a changed secret loaded.
func (r *Reloads) Succeeded() { r.success.Add(1) }

// Failed counts a read that failed, the last good secret kept.
func (r *Reloads) Failed() { r.failure.Add(1) }

var reloadsDesc = prometheus.NewDesc("autorollbackd_secret_reloads_total",
	"Re-reads of secret files (webhook and API credentials, TLS certificates, notifier secrets) after the start: success when a changed secret was loaded, failure when a read failed and the last good secret was kept.",
	[]string{"result"}, nil)

// reloadCollector is autorollbackd_secret_reloads_total: the sum of the
// Reloads of every reader of secret files. Those are built apart from each
// other and without the registry, so the collector is registered once per
// registry and found again through prometheus.AlreadyRegisteredError
// (hence no promauto here).
type reloadCollector struct {
	mu      sync.Mutex
	sources []*Reloads
}

// RegisterReloads adds r to autorollbackd_secret_reloads_total on reg.
func RegisterReloads(reg prometheus.Registerer, r *Reloads) error {
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
	if !slices.Contains(c.sources, r) {
		c.sources = append(c.sources, r)
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
