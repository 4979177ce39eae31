// Package app wires the daemon together: the Kubernetes client and informers,
// the HTTP server with its probes and metrics, and an orderly shutdown.
package app

import (
	"cmp"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync/atomic"

	"github.com/KimMachineGun/automemlimit/memlimit"
	"github.com/oklog/run"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	versioncollector "github.com/prometheus/client_golang/prometheus/collectors/version"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/dynamic/dynamicinformer"
	"k8s.io/client-go/kubernetes/scheme"
	typedcorev1 "k8s.io/client-go/kubernetes/typed/core/v1"
	"k8s.io/client-go/metadata"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/record"
	"k8s.io/client-go/util/flowcontrol"
	"k8s.io/utils/clock"

	"github.com/autorollbackd/autorollbackd/internal/actuator"
	"github.com/autorollbackd/autorollbackd/internal/config"
	"github.com/autorollbackd/autorollbackd/internal/engine"
	"github.com/autorollbackd/autorollbackd/internal/escalate"
	"github.com/autorollbackd/autorollbackd/internal/gitops"
	"github.com/autorollbackd/autorollbackd/internal/helm"
	"github.com/autorollbackd/autorollbackd/internal/incident"
	"github.com/autorollbackd/autorollbackd/internal/kube"
	"github.com/autorollbackd/autorollbackd/internal/kubeclient"
	"github.com/autorollbackd/autorollbackd/internal/policy"
	"github.com/autorollbackd/autorollbackd/internal/verify"
	"github.com/autorollbackd/autorollbackd/internal/webhook"
	"github.com/autorollbackd/autorollbackd/internal/workload"
)

// Options is everything Run needs.
type Options struct {
	Config *config.Config
	// ConfigFile is watched for changes; empty means no file.
	ConfigFile string
	// Reload loads the configuration again, from the same sources, for a
	// reload on SIGHUP or a change of ConfigFile.
	Reload func() (*config.Config, error)
	Logger *slog.Logger
	// apiDefaultTokenFile replaces webhook.DefaultAPIBearerTokenFile, so
	// that a test does not depend on what the machine has there.
	apiDefaultTokenFile string
}

func (o Options) validate() error {
	if o.Config == nil {
		return errors.New("options: Config is required")
	}
	if o.Logger == nil {
		return errors.New("options: Logger is required")
	}
	if o.Reload == nil {
		return errors.New("options: Reload is required")
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
	if _, err := setMemoryLimit(logger.With("component", "memlimit"), memlimit.FromCgroup); err != nil {
		return err
	}

	rc, ownNamespace, err := kube.RESTConfig(cfg.Kubernetes)
	if err != nil {
		return err
	}
	pol, err := policy.Compile(cfg.Policy, policy.WithLogger(logger.With("component", "policy")), policy.WithCluster(cfg.Cluster.Name))
	if err != nil {
		return fmt.Errorf("compile policy: %w", err)
	}
	var currentPolicy atomic.Pointer[policy.Policy]
	currentPolicy.Store(pol)
	clients, err := newClients(rc, cfg.Kubernetes)
	if err != nil {
		return err
	}
	cs, checking, electing := clients.records, clients.verifying, clients.electing
	pingCtx, cancelPing := context.WithTimeout(ctx, cfg.Kubernetes.StartupTimeout.Duration)
	serverVersion, err := kubeclient.Ping(pingCtx, cs, rc.Host)
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
		clients.priority,
		clients.requests,
	)

	// The workloads the daemon may roll back, and the revisions they keep:
	// cluster-wide, or only in the allowed namespaces when the policy lists
	// them (a namespaced install may read nothing else).
	meta, err := metadata.NewForConfig(rest.AddUserAgent(rest.CopyConfig(rc), "autorollbackd"))
	if err != nil {
		return fmt.Errorf("create Kubernetes metadata client: %w", err)
	}
	namespaces := cfg.Policy.Namespaces.Allow
	if len(namespaces) == 0 {
		namespaces = []string{""}
	}
	factories := map[string]*workload.Informers{}
	caches := workload.Caches{}
	for _, ns := range namespaces {
		inf, err := workload.NewInformers(cs, meta, ns)
		if err != nil {
			return err
		}
		factories[ns], caches[ns] = inf, workload.NewCached(inf)
	}
	// Rollouts have no typed client: the acting and verifying clients carry
	// a dynamic one, and a dynamic informer per namespace feeds the facts.
	// The GitOps owners (Argo CD Applications, Flux Kustomizations and
	// HelmReleases) are read and paused through the same dynamic client.
	dyn, err := dynamic.NewForConfig(rest.AddUserAgent(rest.CopyConfig(rc), "autorollbackd"))
	if err != nil {
		return fmt.Errorf("create dynamic Kubernetes client: %w", err)
	}
	var acting, recording, verifying kubeclient.Interface = clients.acting, cs, checking
	rolloutFactories := map[string]dynamicinformer.DynamicSharedInformerFactory{}
	if cfg.Kubernetes.ArgoRollouts {
		dynChecking, err := dynamic.NewForConfig(rest.AddUserAgent(rest.CopyConfig(rc), "autorollbackd-verify"))
		if err != nil {
			return fmt.Errorf("create dynamic Kubernetes client: %w", err)
		}
		// Rollouts are acted on through a dynamic client with the acting
		// client's limiter.
		dynActing, err := dynamic.NewForConfig(clients.actingConfig)
		if err != nil {
			return fmt.Errorf("create dynamic Kubernetes client: %w", err)
		}
		acting, verifying = workload.Clients{Interface: clients.acting, Dynamic: dynActing}, workload.Clients{Interface: checking, Dynamic: dynChecking}
		// The evidence of a Rollout's pods is read through the engine's.
		recording = workload.Clients{Interface: cs, Dynamic: dyn}
		for ns := range factories {
			f := dynamicinformer.NewFilteredDynamicSharedInformerFactory(dyn, 0, ns, nil)
			c := caches[ns]
			c.Rollouts = f.ForResource(workload.RolloutResource).Lister()
			caches[ns] = c
			rolloutFactories[ns] = f
		}
	}

	recordNamespace := cmp.Or(cfg.Engine.Namespace, ownNamespace)
	broadcaster := record.NewBroadcaster(record.WithContext(ctx))
	broadcaster.StartStructuredLogging(0)
	broadcaster.StartRecordingToSink(&typedcorev1.EventSinkImpl{Interface: checking.CoreV1().Events("")})
	defer broadcaster.Shutdown()
	recorder := broadcaster.NewRecorder(scheme.Scheme, corev1.EventSource{Component: "autorollbackd"})
	act, err := actuator.New(actuator.Options{
		Client:   acting,
		Recorder: recorder,
		Logger:   logger,
		Registry: reg,
		Cache:    actuator.NewInformerCache(factories),
		// Used only while policy.helm.mode is rollback-release; the
		// policy may change on reload, so it is always there.
		Releases: &helm.Client{REST: rest.AddUserAgent(rest.CopyConfig(rc), "autorollbackd-helm"), Client: cs, Logger: logger},
	})
	if err != nil {
		return err
	}
	ver, err := verify.New(verify.Options{Config: cfg.Verify, Client: verifying, Cache: caches, SecretNamespace: recordNamespace, Logger: logger, Registry: reg})
	if err != nil {
		return err
	}
	esc, err := escalate.New(escalate.Options{Config: cfg.Escalation, Events: recorder, Client: verifying, Workloads: caches, Logger: logger, Registry: reg})
	if err != nil {
		return err
	}
	incidents := &incident.Store{Client: cs, Namespace: recordNamespace}
	tasks := map[string]actuator.Task{}
	for _, t := range cfg.Tasks {
		spec, err := t.JobSpec()
		if err != nil {
			return fmt.Errorf("task %s: %w", t.Name, err)
		}
		tasks[t.Name] = actuator.Task{Name: t.Name, Job: spec, Timeout: t.Timeout.Duration, Phase: t.Phase, FromWorkload: t.FromWorkload}
	}
	pauser := &gitops.Pauser{Dynamic: dyn, Recorder: recorder, Logger: logger, Clock: clock.RealClock{},
		Config: func() policy.GitOps { return currentPolicy.Load().Config().GitOps }}
	eng, err := engine.New(engine.Options{
		Cluster:          cfg.Cluster.Name,
		Client:           recording,
		Namespace:        recordNamespace,
		Policy:           currentPolicy.Load,
		Cache:            caches,
		Live:             workload.Live{Client: acting},
		Actor:            act,
		Incidents:        incidents,
		Verifier:         ver,
		Escalator:        esc,
		GitOps:           pauser,
		AllowScaleBounce: cfg.Engine.AllowScaleBounce,
		IncidentWorkers:  cfg.Engine.IncidentWorkers,
		Tasks:            tasks,
		MaxRollbackDepth: cfg.Engine.MaxRollbackDepth,
		MaxPending:       cfg.Engine.MaxPending,
		MaxRecords:       cfg.Engine.MaxRecords,
		Retention:        cfg.Engine.Retention.Duration,
		AlertState:       ver,
		AlertGrace:       ver.AlertResolveGrace(),
		PageGroupWait:    cfg.Engine.PageGroupWait.Duration,
		PageGroupEvery:   cfg.Engine.PageGroupInterval.Duration,
		Acted:            actedWorkloads(caches),
		Logger:           logger,
		Registry:         reg,

		AllowFeatureFlags: cfg.Engine.AllowFeatureFlags,
	})
	if err != nil {
		return err
	}

	auth, err := webhook.NewAuthenticator(cfg.Webhook.Auth, logger)
	if err != nil {
		return err
	}
	defer auth.Close()
	// The incidents API has its own read credential: no credential that
	// sends alerts reads incidents.
	apiAuth, err := webhook.NewAPIAuthenticatorDefaulting(cfg.API.Auth, auth, cmp.Or(opts.apiDefaultTokenFile, webhook.DefaultAPIBearerTokenFile), logger)
	if err != nil {
		return err
	}
	defer apiAuth.Close()
	if err := webhook.RegisterAPIMetrics(reg, apiAuth); err != nil {
		return err
	}
	var ready atomic.Bool
	lead := newLeadership(cfg.LeaderElection, electing, recordNamespace, logger, reg)
	intake := webhook.IntakeFunc(func(ctx context.Context, n *webhook.Notification) (webhook.Receipt, error) {
		if !ready.Load() {
			return webhook.Receipt{}, fmt.Errorf("informer caches not synced yet: %w", webhook.ErrNotReady)
		}
		if !lead.isLeader.Load() {
			return webhook.Receipt{}, fmt.Errorf("this replica is not the leader: %w", webhook.ErrNotLeader)
		}
		return eng.Accept(ctx, n)
	})
	hook, err := webhook.NewHandler(cfg.Webhook, auth, intake, logger, reg)
	if err != nil {
		return err
	}
	reload := newReloader(opts.Reload, opts.ConfigFile, cfg, &currentPolicy, logger, reg)

	ln, err := net.Listen("tcp", cfg.Server.ListenAddress)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", cfg.Server.ListenAddress, err)
	}
	mux := newMux(reg, &ready)
	mux.Handle("/webhook", hook)
	incidentsAPI := apiAuth.Wrap(incident.Handler(incidents, logger))
	mux.Handle("/api/v1/incidents", incidentsAPI)
	mux.Handle("/api/v1/incidents/", incidentsAPI)
	srv := &http.Server{
		Handler:           mux,
		ReadHeaderTimeout: cfg.Server.ReadHeaderTimeout.Duration,
		ReadTimeout:       cfg.Server.ReadTimeout.Duration,
		WriteTimeout:      cfg.Server.WriteTimeout.Duration,
		IdleTimeout:       cfg.Server.IdleTimeout.Duration,
		ErrorLog:          slog.NewLogLogger(logger.With("component", "http").Handler(), slog.LevelWarn),
	}
	if cfg.Server.TLS.CertFile != "" {
		if srv.TLSConfig, err = webhook.ServerTLS(cfg.Server.TLS, logger, webhook.WithRegisterer(reg)); err != nil {
			_ = ln.Close()
			return err
		}
		ln = tls.NewListener(ln, srv.TLSConfig)
	}
	logger.Info("HTTP server listening", "address", ln.Addr().String(), "tls", srv.TLSConfig != nil, "records_namespace", recordNamespace)

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var g run.Group
	g.Add(func() error {
		<-ctx.Done()
		logger.Info("shutting down")
		return nil
	}, func(error) { cancel() })
	g.Add(func() error {
		syncCtx, cancelSync := context.WithTimeout(ctx, cfg.Kubernetes.StartupTimeout.Duration)
		defer cancelSync()
		for ns, inf := range factories {
			inf.Run(ctx)
			if unsynced := inf.WaitForCacheSync(syncCtx); len(unsynced) > 0 {
				if ctx.Err() != nil {
					return nil
				}
				return fmt.Errorf("sync the informer cache of %s in %q: not done within kubernetes.startupTimeout (%s)", strings.Join(unsynced, ", "), ns, cfg.Kubernetes.StartupTimeout.Duration)
			}
		}
		for ns, factory := range rolloutFactories {
			factory.Start(ctx.Done())
			for _, ok := range factory.WaitForCacheSync(syncCtx.Done()) {
				if !ok {
					if ctx.Err() != nil {
						return nil
					}
					return fmt.Errorf("sync the informer cache of Argo Rollouts' Rollouts in %q (kubernetes.argoRollouts is on: is their CRD installed?): not done within kubernetes.startupTimeout (%s)", ns, cfg.Kubernetes.StartupTimeout.Duration)
				}
			}
		}
		ready.Store(true)
		logger.Info("informer caches synced; ready")
		return lead.run(ctx, func(ctx context.Context) error { return eng.Run(ctx, cfg.Engine.Workers) })
	}, func(error) {
		cancel()
		for _, inf := range factories {
			inf.Shutdown()
		}
		for _, factory := range rolloutFactories {
			factory.Shutdown()
		}
	})
	g.Add(func() error { return reload.run(ctx) }, func(error) { cancel() })
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

// clients are the daemon's Kubernetes clients, each with its own
// client-side rate limiter, so that no kind of work waits behind another's
// tokens. One kube.Priority puts the acting client's requests, and those
// intake sends, ahead of the records and verifying clients' others.
type clients struct {
	// acting sends the actions and the reads right before them, and
	// nothing else: a burst of alerts must never queue behind record
	// writes, Events or verification's polling.
	acting kubeclient.Interface
	// actingConfig is acting's configuration, for a dynamic client sharing
	// its limiter.
	actingConfig *rest.Config
	// records writes alert records and incidents, and decides.
	records kubeclient.Interface
	// verifying verifies, pages by Event and records Events.
	verifying kubeclient.Interface
	// electing renews the lease on its own, as kube-controller-manager's
	// does, so that load cannot cost the lease.
	electing kubeclient.Interface
	// priority puts acting and intake first; its metric is served.
	priority *kube.Priority
	// requests times each client's requests; served.
	requests *kube.Requests
}

func newClients(rc *rest.Config, k config.Kubernetes) (clients, error) {
	c := clients{priority: kube.NewPriority(k.BackgroundInFlight), requests: kube.NewRequests()}
	for _, x := range []struct {
		into  *kubeclient.Interface
		agent string
		name  string // the client label of autorollbackd_kube_request_duration_seconds
		qps   float64
		burst int
	}{
		{&c.acting, "autorollbackd-act", "act", k.ActQPS, k.ActBurst},
		{&c.records, "autorollbackd", "records", k.QPS, k.Burst},
		{&c.verifying, "autorollbackd-verify", "verify", k.QPS, k.Burst},
		{&c.electing, "autorollbackd-leader-election", "election", k.QPS, k.Burst},
	} {
		cfg := rest.AddUserAgent(rest.CopyConfig(rc), x.agent)
		// A limiter set on rc would be shared by every copy of it.
		cfg.RateLimiter = nil
		cfg.QPS, cfg.Burst = float32(x.qps), x.burst
		// First, so that the priority's wait is not timed.
		c.requests.Time(cfg, x.name)
		switch x.into {
		case &c.acting:
			// One limiter for the typed and the dynamic acting client.
			cfg.RateLimiter = flowcontrol.NewTokenBucketRateLimiter(cfg.QPS, cfg.Burst)
			c.priority.Foreground(cfg)
			c.actingConfig = cfg
		case &c.records, &c.verifying:
			c.priority.Background(cfg)
		}
		cs, err := kubeclient.NewForConfig(cfg)
		if err != nil {
			return clients{}, fmt.Errorf("create Kubernetes client %s: %w", x.agent, err)
		}
		*x.into = cs
	}
	return c, nil
}

// actedWorkloads lists, from the informer caches, the workloads that carry
// kinds.AnnotationActed: rollbacks taken before any record of them.
func actedWorkloads(caches workload.Caches) func() ([]engine.ActedWorkload, error) {
	return func() ([]engine.ActedWorkload, error) {
		var out []engine.ActedWorkload
		// Each cache holds its namespace, or every namespace.
		for _, c := range caches {
			acted, err := c.Acted()
			if err != nil {
				return nil, err
			}
			for _, a := range acted {
				out = append(out, engine.ActedWorkload{Ref: policy.Ref{Kind: a.Kind, Namespace: a.Meta.GetNamespace(), Name: a.Meta.GetName()},
					Annotations: a.Meta.GetAnnotations()})
			}
		}
		return out, nil
	}
}
