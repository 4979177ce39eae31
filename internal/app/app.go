// Package app wires the daemon together: the Kubernetes client and informers,
// the HTTP server with its probes and metrics, and an orderly shutdown.
package app

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync/atomic"

	"github.com/oklog/run"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	versioncollector "github.com/prometheus/client_golang/prometheus/collectors/version"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"

	"github.com/autorollbackd/autorollbackd/internal/config"
	"github.com/autorollbackd/autorollbackd/internal/kube"
)

// Options is everything Run needs.
type Options struct {
	Config *config.Config
	Logger *slog.Logger
}

func (o Options) validate() error {
	if o.Config == nil {
		return errors.New("options: Config is required")
	}
	if o.Logger == nil {
		return errors.New("options: Logger is required")
	}
	return nil
}

// Run runs the daemon until ctx is cancelled, then drains in-flight requests
// and returns nil. It returns an error when it cannot start: the API server
// is unreachable, the listen address is taken, or the caches do not sync in
// time.
func Run(ctx context.Context, opts Options) error {
	if err := opts.validate(); err != nil {
		return err
	}
	cfg, logger := opts.Config, opts.Logger
	kube.RouteKlog(logger)

	rc, err := kube.RESTConfig(cfg.Kubernetes)
	if err != nil {
		return err
	}
	cs, err := kubernetes.NewForConfig(rc)
	if err != nil {
		return fmt.Errorf("create Kubernetes client: %w", err)
	}
	pingCtx, cancelPing := context.WithTimeout(ctx, cfg.Kubernetes.StartupTimeout.Duration)
	serverVersion, err := kube.Ping(pingCtx, cs, rc.Host)
	cancelPing()
	if err != nil {
		return err
	}
	logger.Info("connected to the Kubernetes API server", "server", rc.Host, "version", serverVersion)

	reg := prometheus.NewRegistry()
	reg.MustRegister(
		versioncollector.NewCollector("autorollbackd"),
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	)

	factory := informers.NewSharedInformerFactory(cs, 0)
	// The workloads the daemon may roll back, and the revisions they keep.
	factory.Apps().V1().Deployments().Informer()
	factory.Apps().V1().ReplicaSets().Informer()
	factory.Apps().V1().StatefulSets().Informer()
	factory.Apps().V1().DaemonSets().Informer()
	factory.Apps().V1().ControllerRevisions().Informer()

	var ready atomic.Bool
	ln, err := net.Listen("tcp", cfg.Server.ListenAddress)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", cfg.Server.ListenAddress, err)
	}
	srv := &http.Server{
		Handler:           newMux(reg, &ready),
		ReadHeaderTimeout: cfg.Server.ReadHeaderTimeout.Duration,
		ReadTimeout:       cfg.Server.ReadTimeout.Duration,
		WriteTimeout:      cfg.Server.WriteTimeout.Duration,
		IdleTimeout:       cfg.Server.IdleTimeout.Duration,
		ErrorLog:          slog.NewLogLogger(logger.With("component", "http").Handler(), slog.LevelWarn),
	}
	logger.Info("HTTP server listening", "address", ln.Addr().String())

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var g run.Group
	g.Add(func() error {
		<-ctx.Done()
		logger.Info("shutting down")
		return nil
	}, func(error) { cancel() })
	g.Add(func() error {
		factory.Start(ctx.Done())
		syncCtx, cancelSync := context.WithTimeout(ctx, cfg.Kubernetes.StartupTimeout.Duration)
		defer cancelSync()
		for typ, ok := range factory.WaitForCacheSync(syncCtx.Done()) {
			if !ok {
				if ctx.Err() != nil {
					return nil
				}
				return fmt.Errorf("sync the informer cache of %v: not done within kubernetes.startupTimeout (%s)", typ, cfg.Kubernetes.StartupTimeout.Duration)
			}
		}
		ready.Store(true)
		logger.Info("informer caches synced; ready")
		<-ctx.Done()
		return nil
	}, func(error) {
		cancel()
		factory.Shutdown()
	})
	g.Add(func() error {
		if err := srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
			return fmt.Errorf("serve HTTP on %s: %w", ln.Addr(), err)
		}
		return nil
	}, func(error) {
		ready.Store(false)
		// ctx is already cancelled here; a child of it would not wait for
		// in-flight requests, so the drain gets a fresh deadline.
		shutdownCtx, cancelShutdown := context.WithTimeout(context.Background(), cfg.Server.ShutdownTimeout.Duration)
		defer cancelShutdown()
		if err := srv.Shutdown(shutdownCtx); err != nil {
			logger.Error("drain in-flight HTTP requests", "err", err)
		}
	})
	return g.Run()
}
