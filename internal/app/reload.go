package app

import (
	"context"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"reflect"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/fsnotify/fsnotify"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"

	"github.com/autorollbackd/autorollbackd/internal/config"
	"github.com/autorollbackd/autorollbackd/internal/policy"
)

// reloader swaps in a new policy when the config file changes or on SIGHUP.
// A new configuration is loaded and validated in full first; a bad one is
// rejected and the running policy stays.
type reloader struct {
	load    func() (*config.Config, error)
	file    string
	running *config.Config
	policy  *atomic.Pointer[policy.Policy]
	logger  *slog.Logger

	success   prometheus.Gauge
	timestamp prometheus.Gauge
}

func newReloader(load func() (*config.Config, error), file string, running *config.Config, p *atomic.Pointer[policy.Policy], logger *slog.Logger, reg prometheus.Registerer) *reloader {
	f := promauto.With(reg)
	r := &reloader{
		load: load, file: file, running: running, policy: p, logger: logger.With("component", "reload"),
		success: f.NewGauge(prometheus.GaugeOpts{
			Namespace: "autorollbackd", Name: "config_last_reload_successful",
			Help: "Whether the last configuration reload attempt was successful (1) or not (0).",
		}),
		timestamp: f.NewGauge(prometheus.GaugeOpts{
			Namespace: "autorollbackd", Name: "config_last_reload_success_timestamp_seconds",
			Help: "Timestamp of the last successful configuration load.",
		}),
	}
	r.success.Set(1)
	r.timestamp.SetToCurrentTime()
	return r
}

// run reloads on SIGHUP and on changes to the config file until ctx ends.
// Reloads happen one at a time on this goroutine.
func (r *reloader) run(ctx context.Context) error {
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)

	var events <-chan fsnotify.Event
	if r.file != "" {
		w, err := fsnotify.NewWatcher()
		if err != nil {
			r.logger.Warn("cannot watch the config file; reload with SIGHUP", "err", err)
		} else {
			defer w.Close()
			// A ConfigMap volume replaces the file through a symlink swap in
			// its directory, so watch the directory, not the file.
			if err := w.Add(filepath.Dir(r.file)); err != nil {
				r.logger.Warn("cannot watch the config file; reload with SIGHUP", "file", r.file, "err", err)
			}
			events = w.Events
		}
	}
	// Editors and volume updates produce bursts of events; reload once
	// after the burst settles.
	var settle <-chan time.Time
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-hup:
			r.reload("SIGHUP")
		case ev := <-events:
			// The directory may hold other files (a log, say); only the
			// config file, or a ConfigMap volume's ..data swap, counts.
			if name := filepath.Base(ev.Name); name == filepath.Base(r.file) || strings.HasPrefix(name, "..") {
				settle = time.After(500 * time.Millisecond)
			}
		case <-settle:
			settle = nil
			r.reload("file change")
		}
	}
}

func (r *reloader) reload(trigger string) {
	cfg, err := r.load()
	if err != nil {
		r.success.Set(0)
		r.logger.Error("configuration rejected; keeping the running one", "trigger", trigger, "err", err)
		return
	}
	// The cluster's name is the running one until a restart, like the
	// engine's messages that carry it.
	p, err := policy.Compile(cfg.Policy, policy.WithLogger(r.logger), policy.WithCluster(r.running.Cluster.Name))
	if err != nil {
		r.success.Set(0)
		r.logger.Error("policy rejected; keeping the running one", "trigger", trigger, "err", err)
		return
	}
	r.policy.Store(p)
	r.success.Set(1)
	r.timestamp.SetToCurrentTime()
	for name, same := range map[string]bool{
		"cluster":    reflect.DeepEqual(cfg.Cluster, r.running.Cluster),
		"server":     reflect.DeepEqual(cfg.Server, r.running.Server),
		"kubernetes": reflect.DeepEqual(cfg.Kubernetes, r.running.Kubernetes),
		"log":        reflect.DeepEqual(cfg.Log, r.running.Log),
		"webhook":    reflect.DeepEqual(cfg.Webhook, r.running.Webhook),
		"api":        reflect.DeepEqual(cfg.API, r.running.API),
		"engine":     reflect.DeepEqual(cfg.Engine, r.running.Engine),
	} {
		if !same {
			r.logger.Warn("configuration section changed but only the policy is reloaded; restart to apply it", "section", name)
		}
	}
	r.logger.Info("policy reloaded", "trigger", trigger, "rules", len(cfg.Policy.Rules))
}
