package reliability

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/autorollbackd/autorollbackd/internal/testenv"
)

// outage is how long the API server is stopped.
const outage = 30 * time.Second

// TestAPIServerOutage stops the API server with SIGSTOP for 30s while an
// alert arrives, then continues it. SIGSTOP is a faithful outage from a
// client's point of view (connections open, nothing answers, as in a
// network partition or an overloaded server) and keeps etcd's state. The
// test runs on a cluster of its own so the other tests never see the
// outage; its controller manager and scheduler are stopped with the API
// server, because their own leader election would otherwise make them exit
// and leave nothing to roll the Deployment out afterwards.
//
// While the API server is stopped the webhook must answer 503 (so that
// Alertmanager retries), never 2xx (it could not record the alert) nor 4xx
// (Alertmanager would drop it). Afterwards the re-sent alert is accepted,
// the rollback happens, and the daemon recovered by itself: still running,
// /readyz 200.
func TestAPIServerOutage(t *testing.T) {
	testenv.Require(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	c, err := testenv.Start(ctx)
	cancel()
	if err != nil {
		t.Fatalf("start a cluster for the outage: %v", err)
	}
	t.Cleanup(c.Stop)

	for _, tc := range []struct {
		name string
		// leaderElection is the section of the configuration; nil keeps
		// the default (enabled, 15s lease, 10s renew deadline), as the
		// chart runs two replicas.
		leaderElection map[string]any
	}{
		{name: "leader election as deployed"},
		{name: "one replica without leader election", leaderElection: map[string]any{"enabled": false}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			outageTrial(t, c, tc.leaderElection)
		})
	}
}

// attempt is one delivery attempt during the outage.
type attempt struct {
	at     time.Duration // since the outage began
	answer answer
	alive  bool
}

func outageTrial(t *testing.T, c *testenv.Cluster, leaderElection map[string]any) {
	bg := context.Background()
	ns := c.Namespace(t)
	if err := twoRevisions(bg, c.Client, ns, "svc"); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	cfg := baseConfig(dir, ns, ns)
	delete(cfg, "leaderElection")
	if leaderElection != nil {
		cfg = cfg.with(config{"leaderElection": leaderElection})
	}
	d := startDaemon(t, "autorollbackd", c.Kubeconfig, cfg.write(t, dir))
	d.waitLeading(t, 60*time.Second)

	// Given the control plane stopped.
	var pids []int
	for _, component := range []string{"kube-controller-manager", "kube-scheduler", "kube-apiserver"} {
		pid, err := controlPlaneProcess(c, component)
		if err != nil {
			t.Fatal(err)
		}
		pids = append(pids, pid)
	}
	stopped, err := pause(pids...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { stopped.resume() })
	begin := time.Now()

	// When Alertmanager delivers an alert, retrying each failed attempt a
	// second later with a 5s timeout per attempt, as its webhook notifier
	// would within a group interval.
	body := notification(t, alert{Namespace: ns, Deployment: "svc", Fingerprint: "outage-" + ns, StartsAt: time.Now().UTC()}, `{}:{alertname="EventServiceDown"}`)
	client := &http.Client{Timeout: 5 * time.Second}
	var attempts []attempt
	for time.Since(begin) < outage-5*time.Second {
		a := post(bg, client, d, body)
		attempts = append(attempts, attempt{at: time.Since(begin), answer: a, alive: !d.exited()})
		select {
		case <-time.After(time.Second): // Alertmanager's retry pacing
		case <-d.done:
			// Nothing listens any more; the remaining attempts would be
			// refused connections.
		}
		if d.exited() {
			break
		}
	}
	// Keep the outage at its full length even when the attempts ended early.
	if rest := outage - time.Since(begin); rest > 0 {
		select {
		case <-time.After(rest): // the length of the fault, not a wait for a condition
		case <-d.done:
			if rest := outage - time.Since(begin); rest > 0 {
				<-time.After(rest)
			}
		}
	}
	down := stopped.resume()
	var got codes
	var lines []string
	for _, a := range attempts {
		got.add(a.answer)
		what := a.answer.String()
		if a.answer.Err != nil && isTimeout(a.answer.Err) {
			what = "no answer within 5s"
		}
		lines = append(lines, fmt.Sprintf("+%s %s", a.at.Round(100*time.Millisecond), what))
	}
	t.Logf("fault: control plane stopped for %s; %d delivery attempts: %s", down.Round(100*time.Millisecond), len(attempts), got.String())
	t.Logf("attempts:\n  %s", strings.Join(lines, "\n  "))

	// Then every attempt was answered 503.
	if len(attempts) == 0 {
		t.Fatal("no delivery attempt during the outage")
	}
	for _, a := range attempts {
		if a.answer.Err != nil || a.answer.Code != http.StatusServiceUnavailable {
			t.Errorf("during the outage the webhook answered %s at +%s, want 503 so that Alertmanager retries",
				a.answer, a.at.Round(100*time.Millisecond))
			break
		}
	}

	// And the daemon recovered by itself.
	if d.exited() {
		t.Errorf("the daemon exited during the outage (%s); it did not recover by itself. Its last words:\n%s",
			d.cmd.ProcessState, strings.Join(lastLines(d, 6), "\n"))
		// Go on as Kubernetes would, with a restarted daemon, to check that
		// the alert is still not lost.
		d = startDaemon(t, "restarted autorollbackd", c.Kubeconfig, cfg.write(t, dir))
	}
	recoveredAt := time.Now()
	d.waitLeading(t, 60*time.Second)
	t.Logf("recovery: ready and leading %s after the API server came back", time.Since(recoveredAt).Round(100*time.Millisecond))

	// The re-sent alert is accepted (or found recorded) and rolled back.
	answers := postUntilAccepted(bg, client, d, body, 60*time.Second)
	last := answers[len(answers)-1]
	if last.Err != nil || last.Code != http.StatusOK || last.Accepted+last.Duplicates != 1 {
		t.Fatalf("after the outage the re-sent alert was answered %s, want 200", last)
	}
	var inc *incident
	testenv.Eventually(t, 2*time.Minute, "the incident resolves", func(ctx context.Context) (bool, string) {
		list, err := incidentsOf(ctx, d, ns, "svc")
		if err != nil || len(list) != 1 {
			return false, fmt.Sprint(len(list), err)
		}
		inc = list[0]
		return inc.State == "resolved", string(inc.State) + " " + inc.actions()
	})
	if inc.applied() != 1 || len(inc.Actions) != 1 {
		t.Errorf("incident %s actions %s, want exactly one applied rollback", inc.ID, inc.actions())
	}
	if err := rolledBackOnce(bg, c.Client, ns, "svc"); err != nil {
		t.Error(err)
	}
	if d.exited() || d.probe(bg, "/readyz") != http.StatusOK {
		t.Errorf("the daemon is not ready after the outage")
	}
	t.Logf("outcome: alert accepted after the outage (%s), rolled back once, incident resolved", last)
}

// lastLines returns the daemon's last log lines at level ERROR or about
// leadership and shutdown.
func lastLines(d *daemon, n int) []string {
	var out []string
	for _, l := range strings.Split(d.tail(400), "\n") {
		if strings.Contains(l, `"level":"ERROR"`) || strings.Contains(l, "leading") || strings.Contains(l, "shutting down") || strings.Contains(l, "lease") {
			out = append(out, l)
		}
	}
	return out[max(0, len(out)-n):]
}
