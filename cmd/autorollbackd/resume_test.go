package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/util/retry"
	"k8s.io/utils/ptr"

	"github.com/autorollbackd/autorollbackd/internal/testenv"
)

// pager is an escalation webhook that counts what it receives.
type pager struct {
	mu   sync.Mutex
	msgs []map[string]any
}

func (p *pager) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	var m map[string]any
	if err := json.NewDecoder(r.Body).Decode(&m); err == nil {
		p.mu.Lock()
		p.msgs = append(p.msgs, m)
		p.mu.Unlock()
	}
}

func (p *pager) count(kind, level string) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	n := 0
	for _, m := range p.msgs {
		if m["kind"] == kind && (level == "" || m["level"] == level) {
			n++
		}
	}
	return n
}

// incidentState reads the only incident through the daemon's API.
func incidentState(t *testing.T, addr string) (string, map[string]any) {
	t.Helper()
	code, body := getAuth(t, "http://"+addr+"/api/v1/incidents")
	if code != http.StatusOK {
		return fmt.Sprint(code), nil
	}
	var list []map[string]any
	if err := json.Unmarshal([]byte(body), &list); err != nil || len(list) != 1 {
		return body, nil
	}
	code, body = getAuth(t, "http://"+addr+"/api/v1/incidents/"+fmt.Sprint(list[0]["id"]))
	var inc map[string]any
	if code != http.StatusOK || json.Unmarshal([]byte(body), &inc) != nil {
		return body, nil
	}
	return fmt.Sprint(inc["state"]), inc
}

func waitReady(t *testing.T, d *daemon) {
	t.Helper()
	testenv.Eventually(t, 60*time.Second, "ready", func(ctx context.Context) (bool, string) {
		code, _, err := get(ctx, "http://"+d.addr+"/readyz")
		return err == nil && code == http.StatusOK, fmt.Sprint(code, err)
	})
}

// TestKillDuringVerificationResumes kills the daemon with SIGKILL while it
// verifies a rollback and starts another: the incident resumes where it
// stood, with no second rollback and no second page.
func TestKillDuringVerificationResumes(t *testing.T) {
	c := testenv.Require(t)
	ns := c.Namespace(t)
	twoRevisions(t, c, ns, "event-service")

	var healthy atomic.Bool
	health := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		if !healthy.Load() {
			http.Error(w, "still down", http.StatusInternalServerError)
		}
	}))
	defer health.Close()
	people := &pager{}
	hook := httptest.NewServer(people)
	defer hook.Close()
	extra := fmt.Sprintf(`leaderElection:
  leaseDuration: 3s
  renewDeadline: 2s
  retryPeriod: 500ms
verify:
  pollInterval: 200ms
  http:
  - name: live
    url: %s/health/live
    timeout: 1s
    retries: 600
    interval: 200ms
escalation:
  notifiers:
  - name: people
    type: webhook
    webhook: {url: %s}
  announce: [people]
  ladder:
  - {after: 1s, level: oncall, notifiers: [people]}
  - {after: 10m, level: lead, notifiers: [people]}
`, health.URL, hook.URL)
	cfg := configFile(t, ns, extra)
	first := startDaemon(t, "--kubeconfig", c.Kubeconfig, "--config", cfg)
	waitReady(t, first)
	testenv.Eventually(t, 30*time.Second, "first daemon leads", func(context.Context) (bool, string) {
		v := metricValue(t, first.addr, "autorollbackd_leader")
		return v == "1", v
	})
	if code, resp := post(t, "http://"+first.addr+"/webhook", testToken, payload(t, ns, "event-service", "fp-kill")); code != http.StatusOK {
		t.Fatalf("POST /webhook = %d %s", code, resp)
	}
	testenv.Eventually(t, 30*time.Second, "verifying, with on-call paged", func(context.Context) (bool, string) {
		state, _ := incidentState(t, first.addr)
		return state == "verifying" && people.count("page", "oncall") == 1, fmt.Sprint(state, " pages ", people.count("page", ""))
	})
	if err := first.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	<-first.done
	waitRevision(t, c, ns, "event-service", "3")

	second := startDaemon(t, "--kubeconfig", c.Kubeconfig, "--config", cfg)
	waitReady(t, second)
	testenv.Eventually(t, 30*time.Second, "second daemon leads once the lease expires", func(context.Context) (bool, string) {
		v := metricValue(t, second.addr, "autorollbackd_leader")
		return v == "1", v
	})
	healthy.Store(true)
	var inc map[string]any
	testenv.Eventually(t, 60*time.Second, "the resumed incident resolves", func(context.Context) (bool, string) {
		var state string
		state, inc = incidentState(t, second.addr)
		return state == "resolved", state
	})
	actions, _ := inc["actions"].([]any)
	if len(actions) != 1 {
		t.Fatalf("incident has %d actions, want the one rollback: %v", len(actions), inc["actions"])
	}
	if n := people.count("page", "oncall"); n != 1 {
		t.Fatalf("on-call paged %d times, want once", n)
	}
	waitRevision(t, c, ns, "event-service", "3")
	timeline := fmt.Sprint(inc["timeline"])
	if strings.Count(timeline, "rolled back from revision 2 to 1") != 1 {
		t.Errorf("timeline shows the rollback %d times:\n%s", strings.Count(timeline, "rolled back from revision 2 to 1"), timeline)
	}
}

// TestOnlyTheLeaderActs runs two daemons against the same cluster: one
// leads and takes webhooks; the other answers 503 so Alertmanager retries.
// When the leader dies, the other takes over within the lease and acts.
func TestOnlyTheLeaderActs(t *testing.T) {
	c := testenv.Require(t)
	ns := c.Namespace(t)
	twoRevisions(t, c, ns, "event-service")
	cfg := configFile(t, ns, "leaderElection:\n  leaseDuration: 3s\n  renewDeadline: 2s\n  retryPeriod: 500ms\n")
	a := startDaemon(t, "--kubeconfig", c.Kubeconfig, "--config", cfg)
	b := startDaemon(t, "--kubeconfig", c.Kubeconfig, "--config", cfg)
	waitReady(t, a)
	waitReady(t, b)
	var leader, follower *daemon
	testenv.Eventually(t, 30*time.Second, "exactly one leader", func(context.Context) (bool, string) {
		la, lb := metricValue(t, a.addr, "autorollbackd_leader"), metricValue(t, b.addr, "autorollbackd_leader")
		switch {
		case la == "1" && lb == "0":
			leader, follower = a, b
		case la == "0" && lb == "1":
			leader, follower = b, a
		default:
			return false, la + " " + lb
		}
		return true, ""
	})
	body := payload(t, ns, "event-service", "fp-ha")
	if code, resp := post(t, "http://"+follower.addr+"/webhook", testToken, body); code != http.StatusServiceUnavailable {
		t.Fatalf("follower answered %d %s, want 503 so Alertmanager retries", code, resp)
	}
	if err := leader.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	<-leader.done
	testenv.Eventually(t, 30*time.Second, "the follower takes over within the lease", func(context.Context) (bool, string) {
		v := metricValue(t, follower.addr, "autorollbackd_leader")
		return v == "1", v
	})
	if code, resp := post(t, "http://"+follower.addr+"/webhook", testToken, body); code != http.StatusOK {
		t.Fatalf("new leader answered %d %s", code, resp)
	}
	testenv.Eventually(t, 60*time.Second, "the new leader rolls back and resolves", func(context.Context) (bool, string) {
		state, _ := incidentState(t, follower.addr)
		return state == "resolved", state
	})
	waitRevision(t, c, ns, "event-service", "3")
}

// TestLostLeaseStandsAgain takes the lease away from the only replica, as
// an API server outage past the renew deadline does: the replica stops
// acting (503) without exiting, stands for election again, leads once the
// lease expires and acts on the next alert.
func TestLostLeaseStandsAgain(t *testing.T) {
	c := testenv.Require(t)
	ns := c.Namespace(t)
	twoRevisions(t, c, ns, "event-service")
	cfg := configFile(t, ns, "leaderElection:\n  leaseDuration: 3s\n  renewDeadline: 2s\n  retryPeriod: 500ms\n")
	d := startDaemon(t, "--kubeconfig", c.Kubeconfig, "--config", cfg)
	waitReady(t, d)
	testenv.Eventually(t, 30*time.Second, "the replica leads", func(context.Context) (bool, string) {
		v := metricValue(t, d.addr, "autorollbackd_leader")
		return v == "1", v
	})
	leases := c.Client.CoordinationV1().Leases(ns)
	err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
		l, err := leases.Get(context.Background(), "autorollbackd", metav1.GetOptions{})
		if err != nil {
			return err
		}
		l.Spec.HolderIdentity = ptr.To("another-replica")
		l.Spec.RenewTime = &metav1.MicroTime{Time: time.Now()}
		l.Spec.AcquireTime = l.Spec.RenewTime
		l.Spec.LeaseDurationSeconds = ptr.To[int32](3)
		_, err = leases.Update(context.Background(), l, metav1.UpdateOptions{})
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	body := payload(t, ns, "event-service", "fp-lost-lease")
	testenv.Eventually(t, 30*time.Second, "the replica stops leading and answers 503", func(context.Context) (bool, string) {
		v := metricValue(t, d.addr, "autorollbackd_leader")
		if v != "0" {
			return false, "leader " + v
		}
		code, resp := post(t, "http://"+d.addr+"/webhook", testToken, body)
		return code == http.StatusServiceUnavailable, fmt.Sprintf("%d %s", code, resp)
	})
	testenv.Eventually(t, 30*time.Second, "the replica leads again once the lease expires", func(context.Context) (bool, string) {
		v := metricValue(t, d.addr, "autorollbackd_leader")
		return v == "1", v
	})
	select {
	case err := <-d.done:
		t.Fatalf("the daemon exited: %v", err)
	default:
	}
	if code, resp := post(t, "http://"+d.addr+"/webhook", testToken, body); code != http.StatusOK {
		t.Fatalf("after leading again: %d %s", code, resp)
	}
	testenv.Eventually(t, 60*time.Second, "the rollback resolves", func(context.Context) (bool, string) {
		state, _ := incidentState(t, d.addr)
		return state == "resolved", state
	})
	waitRevision(t, c, ns, "event-service", "3")
	lines := strings.Join(d.logLines(), "\n")
	if !strings.Contains(lines, "standing for election again") {
		t.Errorf("the log does not say the replica stood again:\n%s", lines)
	}
}
