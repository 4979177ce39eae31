// Command demo runs the whole loop locally and narrates it: a real control
// plane (kwok nodes), the stand-in event-service, Prometheus, Alertmanager
// and autorollbackd on loopback. It rolls out a bad version and shows the
// alert, the decision, the rollback, the verification and the recovery;
// then a non-critical alert that is fixed forward. It keeps running until
// Ctrl-C, or exits at once with --once, and removes everything it started.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"k8s.io/apimachinery/pkg/util/wait"

	"github.com/autorollbackd/autorollbackd/internal/loop"
	"github.com/autorollbackd/autorollbackd/internal/testenv"
)

func main() {
	once := flag.Bool("once", false, "Exit when the scenarios are done instead of running until Ctrl-C (default false).")
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, *once); err != nil {
		fmt.Fprintf(os.Stderr, "demo: %v\n", err)
		os.Exit(1)
	}
}

var start = time.Now()

func say(format string, args ...any) {
	fmt.Printf("[%s +%6.1fs] %s\n", time.Now().Format("15:04:05"), time.Since(start).Seconds(), fmt.Sprintf(format, args...))
}

func run(ctx context.Context, once bool) error {
	dir, err := os.MkdirTemp("", "autorollbackd-demo-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)

	say("building autorollbackd and the stand-in event-service")
	if err := loop.Build(ctx, ".", dir); err != nil {
		return err
	}
	say("starting the local control plane: etcd, kube-apiserver, kube-controller-manager, kube-scheduler, kwok")
	startCtx, cancel := context.WithTimeout(ctx, 5*time.Minute)
	c, err := testenv.Start(startCtx)
	cancel()
	if err != nil {
		return err
	}
	defer func() { say("stopping the control plane"); c.Stop() }()

	say("starting event-service (3 replicas of v1), autorollbackd, Alertmanager and Prometheus")
	l, err := loop.Start(ctx, loop.Options{Cluster: c, Dir: dir, Bin: dir, Logf: func(f string, a ...any) { say(f, a...) }})
	defer func() { say("stopping every process"); l.Stop() }()
	if err != nil {
		return err
	}
	l.Messages.OnMessage = func(m loop.Message) {
		switch m.Kind {
		case "announce":
			say("autorollbackd announces: %s", m.Summary)
		case "page":
			say("autorollbackd pages %s: %s", m.Level, m.Summary)
		}
	}
	say("ready. autorollbackd http://%s, Prometheus http://%s, Alertmanager http://%s", l.Daemon.Addr, l.Prometheus.Addr, l.Alertmanagers[0].Addr)

	if err := scenario(ctx, l, loop.Service+":v2-bad", "EventServiceDown", "500 errors on all endpoints: the runbook says roll back"); err != nil {
		return err
	}
	if err := scenario(ctx, l, loop.Service+":v3-degraded", "EventServicePricingDegraded", "a non-critical feature degraded: the runbook says fix forward"); err != nil {
		return err
	}

	cfg := filepath.Join(dir, "autorollbackd.yaml")
	fmt.Printf(`
Where to look:
  incidents   %s incidents list --kubeconfig %s --config %s
              %s incidents show ID --kubeconfig %s --config %s
  API         curl -H "Authorization: Bearer $(cat %s)" http://%s/api/v1/incidents
  metrics     http://%s/metrics
  Prometheus  http://%s/alerts
  kubectl     %s --kubeconfig %s -n %s rollout history deployment/%s
`, filepath.Join(dir, "autorollbackd"), c.Kubeconfig, cfg, filepath.Join(dir, "autorollbackd"), c.Kubeconfig, cfg,
		filepath.Join(dir, "api-token"), l.Daemon.Addr, l.Daemon.Addr, l.Prometheus.Addr, filepath.Join(c.BinDir, "kubectl"), c.Kubeconfig, l.Namespace, loop.Service)
	if once {
		return nil
	}
	say("running until Ctrl-C")
	<-ctx.Done()
	return nil
}

type incident struct {
	ID         string    `json:"id"`
	State      string    `json:"state"`
	StartedAt  time.Time `json:"startedAt"`
	ResolvedAt time.Time `json:"resolvedAt"`
	Decision   struct {
		Outcome, Reason, Message string
	} `json:"decision"`
	Timeline []struct {
		At   time.Time `json:"at"`
		What string    `json:"what"`
	} `json:"timeline"`
}

// scenario rolls out image and narrates what follows until the incident it
// causes is resolved (a rollback) or opened (a fix forward).
func scenario(ctx context.Context, l *loop.Loop, image, alert, why string) error {
	fmt.Println()
	say("=== rolling out %s (%s)", image, why)
	rolled := time.Now()
	rev, err := l.Deploy(ctx, loop.Service, image)
	if err != nil {
		return err
	}
	say("deployment/%s is at revision %s; the stand-in now plays %s", loop.Service, rev, image)
	var firing time.Time
	err = wait.PollUntilContextTimeout(ctx, 250*time.Millisecond, 3*time.Minute, true, func(ctx context.Context) (bool, error) {
		alerts, err := l.FiringAlerts(ctx)
		if err != nil {
			return false, nil
		}
		firing = alerts[alert+"/"+loop.Service]
		return !firing.IsZero(), nil
	})
	if err != nil {
		return fmt.Errorf("wait for %s to fire: %w", alert, err)
	}
	say("Prometheus: alert %s firing (%.1fs after the rollout)", alert, time.Since(rolled).Seconds())

	var inc incident
	err = wait.PollUntilContextTimeout(ctx, 250*time.Millisecond, 3*time.Minute, true, func(ctx context.Context) (bool, error) {
		var list []struct{ ID, State string }
		if err := l.API(ctx, "/api/v1/incidents", &list); err != nil {
			return false, nil
		}
		for _, s := range list {
			if err := l.API(ctx, "/api/v1/incidents/"+s.ID, &inc); err != nil {
				return false, nil
			}
			if inc.StartedAt.After(rolled) && (inc.State == "resolved" || inc.Decision.Outcome == "fix_forward") {
				return true, nil
			}
		}
		return false, nil
	})
	if err != nil {
		return fmt.Errorf("wait for the incident: %w", err)
	}
	say("incident %s: %s", inc.ID, inc.State)
	for _, e := range inc.Timeline {
		fmt.Printf("      %s  +%5.1fs  %s\n", e.At.Format("15:04:05.000"), e.At.Sub(rolled).Seconds(), e.What)
	}
	if inc.State == "resolved" {
		say("recovered %.1fs after the bad rollout (alert firing to resolved: %.1fs)", inc.ResolvedAt.Sub(rolled).Seconds(), inc.ResolvedAt.Sub(firing).Seconds())
	} else {
		say("decision: %s (%s). Nothing was rolled back; people were told, and will be paged on the runbook's clock if it lasts", inc.Decision.Outcome, inc.Decision.Reason)
	}
	return nil
}
