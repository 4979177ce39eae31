package app

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/rand"
	"k8s.io/client-go/tools/leaderelection"
	"k8s.io/client-go/tools/leaderelection/resourcelock"

	"github.com/autorollbackd/autorollbackd/internal/config"
	"github.com/autorollbackd/autorollbackd/internal/kubeclient"
)

// leadership runs lead while this replica holds the lease. Only the leader
// acts; the others answer the webhook with 503 so Alertmanager retries and
// reaches the leader.
type leadership struct {
	cfg      config.LeaderElection
	client   kubeclient.Interface
	ns       string
	logger   *slog.Logger
	isLeader atomic.Bool
	gauge    prometheus.Gauge
}

func newLeadership(cfg config.LeaderElection, client kubeclient.Interface, ns string, logger *slog.Logger, reg prometheus.Registerer) *leadership {
	return &leadership{
		cfg: cfg, client: client, ns: ns, logger: logger.With("component", "leader-election"),
		gauge: promauto.With(reg).NewGauge(prometheus.GaugeOpts{
			Namespace: "autorollbackd", Name: "leader",
			Help: "1 while this replica holds the leader lease and acts, 0 otherwise.",
		}),
	}
}

// identity names this replica in the lease: the pod name in a cluster.
func identity() string {
	if name := os.Getenv("POD_NAME"); name != "" {
		return name
	}
	host, _ := os.Hostname()
	return fmt.Sprintf("%s-%d-%s", host, os.Getpid(), rand.String(5))
}

// run stands for election and runs lead while leading. A replica that loses
// the lease (another took over, or the API server was out past the renew
// deadline) stops acting at once: lead's context ends, and run waits for
// lead to return before standing for election again, so two terms never
// overlap. run returns when ctx ends, or with lead's error.
func (l *leadership) run(ctx context.Context, lead func(context.Context) error) error {
	if !l.cfg.Enabled {
		l.isLeader.Store(true)
		l.gauge.Set(1)
		return lead(ctx)
	}
	id := identity()
	l.logger.Info("standing for election", "lease", l.ns+"/"+l.cfg.LeaseName, "identity", id)
	for {
		if err := l.term(ctx, id, lead); err != nil {
			return err
		}
		if ctx.Err() != nil {
			return nil
		}
		l.logger.Warn("lost the leader lease: every action stopped; standing for election again", "identity", id)
	}
}

// term stands for election once and, if elected, leads until the lease is
// lost or ctx ends. It returns after lead has returned.
func (l *leadership) term(ctx context.Context, id string, lead func(context.Context) error) error {
	var (
		mu      sync.Mutex
		over    bool
		leading sync.WaitGroup
		leadErr error
	)
	le, err := leaderelection.NewLeaderElector(leaderelection.LeaderElectionConfig{
		Lock: &resourcelock.LeaseLock{
			LeaseMeta:  metaFor(l.cfg.LeaseName, l.ns),
			Client:     l.client.CoordinationV1(),
			LockConfig: resourcelock.ResourceLockConfig{Identity: id},
		},
		LeaseDuration:   l.cfg.LeaseDuration.Duration,
		RenewDeadline:   l.cfg.RenewDeadline.Duration,
		RetryPeriod:     l.cfg.RetryPeriod.Duration,
		ReleaseOnCancel: true,
		Name:            "autorollbackd",
		Callbacks: leaderelection.LeaderCallbacks{
			// The elector starts this in a goroutine that may run only
			// after its Run returned; such a late start must not lead.
			OnStartedLeading: func(ctx context.Context) {
				mu.Lock()
				if over {
					mu.Unlock()
					return
				}
				leading.Add(1)
				mu.Unlock()
				defer leading.Done()
				l.isLeader.Store(true)
				l.gauge.Set(1)
				l.logger.Info("leading", "identity", id)
				leadErr = lead(ctx)
				l.isLeader.Store(false)
				l.gauge.Set(0)
			},
			OnStoppedLeading: func() {
				l.isLeader.Store(false)
				l.gauge.Set(0)
				l.logger.Info("stopped leading", "identity", id)
			},
			OnNewLeader: func(current string) {
				if current != id {
					l.logger.Info("following", "leader", current)
				}
			},
		},
	})
	if err != nil {
		return fmt.Errorf("set up leader election: %w", err)
	}
	le.Run(ctx)
	mu.Lock()
	over = true
	mu.Unlock()
	leading.Wait()
	return leadErr
}

func metaFor(name, namespace string) metav1.ObjectMeta {
	return metav1.ObjectMeta{Name: name, Namespace: namespace}
}
