package app

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/rand"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/leaderelection"
	"k8s.io/client-go/tools/leaderelection/resourcelock"

	"github.com/autorollbackd/autorollbackd/internal/config"
)

// errLostLease ends the process when another replica took over: every
// action stops at once, and the restarted process stands for election again
// with nothing in flight.
var errLostLease = errors.New("lost the leader lease")

// leadership runs lead while this replica holds the lease. Only the leader
// acts; the others answer the webhook with 503 so Alertmanager retries and
// reaches the leader.
type leadership struct {
	cfg      config.LeaderElection
	client   kubernetes.Interface
	ns       string
	logger   *slog.Logger
	isLeader atomic.Bool
	gauge    prometheus.Gauge
}

func newLeadership(cfg config.LeaderElection, client kubernetes.Interface, ns string, logger *slog.Logger, reg prometheus.Registerer) *leadership {
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

// run stands for election and runs lead while leading. It returns nil when
// ctx ends, and errLostLease when the lease was lost while ctx was live.
func (l *leadership) run(ctx context.Context, lead func(context.Context) error) error {
	if !l.cfg.Enabled {
		l.isLeader.Store(true)
		l.gauge.Set(1)
		return lead(ctx)
	}
	id := identity()
	var leadErr error
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
			OnStartedLeading: func(ctx context.Context) {
				l.isLeader.Store(true)
				l.gauge.Set(1)
				l.logger.Info("leading", "identity", id)
				leadErr = lead(ctx)
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
	l.logger.Info("standing for election", "lease", l.ns+"/"+l.cfg.LeaseName, "identity", id)
	le.Run(ctx)
	if leadErr != nil {
		return leadErr
	}
	if ctx.Err() == nil {
		return errLostLease
	}
	return nil
}

func metaFor(name, namespace string) metav1.ObjectMeta {
	return metav1.ObjectMeta{Name: name, Namespace: namespace}
}
