// Package metricsutil holds what the daemon's components share about their
// Prometheus metrics.
package metricsutil

import (
	"errors"
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
)

// Register is promauto.With(reg) that, instead of panicking, returns the
// collector already registered under the same description, so a component
// built twice on one registry (a test, or a rebuild on reload) shares its
// metrics. A nil reg registers nothing.
func Register[C prometheus.Collector](reg prometheus.Registerer, c C) (C, error) {
	if reg == nil {
		return c, nil
	}
	err := reg.Register(c)
	if err == nil {
		return c, nil
	}
	if are, ok := errors.AsType[prometheus.AlreadyRegisteredError](err); ok {
		if existing, ok := are.ExistingCollector.(C); ok {
			return existing, nil
		}
	}
	return c, fmt.Errorf("register metric: %w", err)
}
