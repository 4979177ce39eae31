package reliability

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/autorollbackd/autorollbackd/internal/testenv"
)

// Bounds of the failover test.
const (
	failoverWorkloads = 24
	failoverSenders   = 4
)

// TestLeaderFailoverUnderLoad runs two replicas behind one "Service" (each
// copy of a notification goes to either replica, and a 503 is re-sent to
// the other, as Alertmanager's retries through a Service do), sends one
// alert per workload for 24 bad rollouts, each twice (the HA pair), and
// kills the leader with SIGKILL once a third of the alerts were accepted.
// The other replica takes the lease and finishes the work. Exactly one
// replica acts at any time: the two are never leaders together, and no
// action of the old leader follows the new one's election. Every workload
// is rolled back exactly once.
func TestLeaderFailoverUnderLoad(t *testing.T) {
	c := testenv.Require(t)
	ctx := context.Background()
	ns, records := c.Namespace(t), c.Namespace(t)
	names := make([]string, failoverWorkloads)
	for i := range names {
		names[i] = fmt.Sprintf("svc-%02d", i)
	}
	manyTwoRevisions(t, c.Client, ns, names, 8)

	dir := t.TempDir()
	cfg := baseConfig(dir, records, ns).write(t, dir)
	replicas := []*daemon{
		startDaemon(t, "replica-a", c.Kubeconfig, cfg),
		startDaemon(t, "replica-b", c.Kubeconfig, cfg),
	}
	var leader, survivor *daemon
	testenv.Eventually(t, 60*time.Second, "one of the two replicas leads", func(ctx context.Context) (bool, string) {
		a, b := replicas[0].metric(ctx, "autorollbackd_leader"), replicas[1].metric(ctx, "autorollbackd_leader")
		switch {
		case a == "1" && b == "0":
			leader, survivor = replicas[0], replicas[1]
		case a == "0" && b == "1":
			leader, survivor = replicas[1], replicas[0]
		default:
			return false, "leader gauges " + a + " " + b
		}
		return true, ""
	})

	// Sample both replicas' leader gauges for the whole test: two leaders
	// at once is the failure this test exists for.
	var (
		samples, both atomic.Int64
		watching      = make(chan struct{})
		watched       sync.WaitGroup
	)
	watched.Go(func() {
		for {
			select {
			case <-watching:
				return
			case <-time.After(50 * time.Millisecond):
			}
			if replicas[0].metric(ctx, "autorollbackd_leader") == "1" && replicas[1].metric(ctx, "autorollbackd_leader") == "1" {
				both.Add(1)
			}
			samples.Add(1)
		}
	})
	defer func() {
		close(watching)
		watched.Wait()
	}()

	startsAt := time.Now().UTC().Truncate(time.Millisecond)
	client := &http.Client{Timeout: 30 * time.Second}
	defer client.CloseIdleConnections()
	var (
		got                  codes
		accepted, duplicates atomic.Int64
		killedAt             atomic.Int64
		mu                   sync.Mutex
		unexpected           []string
	)
	jobs := make(chan int)
	var wg sync.WaitGroup
	for s := range failoverSenders {
		wg.Go(func() {
			for i := range jobs {
				body := notification(t, alert{Namespace: ns, Deployment: names[i], Fingerprint: fmt.Sprintf("failover-%02d", i), StartsAt: startsAt},
					fmt.Sprintf(`{}:{deployment=%q}`, names[i]))
				for copy := range 2 {
					answers := postToEither(ctx, client, replicas, (s+copy+i)%2, body, 60*time.Second)
					for _, a := range answers {
						got.add(a)
					}
					last := answers[len(answers)-1]
					if last.Err != nil || last.Code != http.StatusOK {
						mu.Lock()
						unexpected = append(unexpected, last.String())
						mu.Unlock()
						continue
					}
					accepted.Add(int64(last.Accepted))
					duplicates.Add(int64(last.Duplicates))
				}
				// A third of the way in, the leader dies.
				if accepted.Load() >= failoverWorkloads/3 && killedAt.CompareAndSwap(0, time.Now().UnixNano()) {
					leader.kill()
				}
			}
		})
	}
	for i := range names {
		jobs <- i
	}
	close(jobs)
	wg.Wait()
	if killedAt.Load() == 0 {
		t.Fatal("the leader was never killed")
	}
	t.Logf("load: %d notifications to two replicas from %d senders; answers: %s; the leader (%s) was killed after %d alerts were accepted",
		2*failoverWorkloads, failoverSenders, got.String(), leader.name, failoverWorkloads/3)

	for code, n := range got.all() {
		if code != http.StatusOK && code != http.StatusServiceUnavailable && code != 0 {
			t.Errorf("%d answers with status %d; want 200, 503, or the killed replica's connection errors", n, code)
		}
	}
	if len(unexpected) > 0 {
		t.Errorf("%d notifications never accepted, e.g. %s", len(unexpected), unexpected[0])
	}
	// An alert the old leader recorded but could not answer for is found
	// recorded by the survivor: a duplicate, never a second acceptance.
	if a, d := accepted.Load(), duplicates.Load(); a > failoverWorkloads || a+d != 2*failoverWorkloads {
		t.Errorf("%d alerts accepted and %d duplicates; want at most %d accepted and every one of the %d copies counted once",
			a, d, failoverWorkloads, 2*failoverWorkloads)
	}

	// Then the survivor leads and every workload is rolled back exactly once.
	survivor.waitLeading(t, 60*time.Second)
	list := waitResolved(t, survivor, failoverWorkloads, 3*time.Minute)
	if len(list) != failoverWorkloads {
		t.Errorf("%d incidents, want %d", len(list), failoverWorkloads)
	}
	for _, s := range list {
		var inc incident
		if err := api(ctx, survivor, "/api/v1/incidents/"+s.ID, &inc); err != nil {
			t.Fatal(err)
		}
		if inc.applied() != 1 || len(inc.Actions) != 1 {
			t.Errorf("incident %s: actions %s; want exactly one applied", s.ID, inc.actions())
		}
	}
	for _, name := range names {
		if err := rolledBackOnce(ctx, c.Client, ns, name); err != nil {
			t.Error(err)
		}
	}

	// And one actor at a time: the survivor was elected after the old
	// leader's last action, and the gauges never showed two leaders.
	oldLast, _ := logTimes(leader, "action applied")
	_, newFirst := logTimes(survivor, `"msg":"leading"`)
	newActions := len(survivor.grep("action applied"))
	oldActions := len(leader.grep("action applied"))
	if oldActions > 0 && !newFirst.IsZero() && !oldLast.Before(newFirst) {
		t.Errorf("the old leader acted at %s, after the survivor began leading at %s", oldLast.Format(time.RFC3339Nano), newFirst.Format(time.RFC3339Nano))
	}
	if n := both.Load(); n > 0 {
		t.Errorf("both replicas reported leading in %d of %d samples", n, samples.Load())
	}
	// A rollback the old leader patched but did not record is found on the
	// workload by the survivor, which writes nothing: so at most one patch
	// per workload.
	if oldActions+newActions > failoverWorkloads {
		t.Errorf("%d + %d rollbacks patched by the two replicas, want at most %d", oldActions, newActions, failoverWorkloads)
	}
	t.Logf("outcome: %d workloads rolled back exactly once; the old leader applied %d rollbacks, the survivor %d after it took over %s after the kill; %d samples of the two leader gauges, never both leading",
		failoverWorkloads, oldActions, newActions, newFirst.Sub(time.Unix(0, killedAt.Load())).Round(time.Millisecond), samples.Load())
}

// logTimes returns the times of the last and the first log line of d that
// contain s; zero times when none does.
func logTimes(d *daemon, s string) (last, first time.Time) {
	for _, line := range d.grep(s) {
		var rec struct{ Time time.Time }
		if json.Unmarshal([]byte(line), &rec) != nil {
			continue
		}
		if first.IsZero() || rec.Time.Before(first) {
			first = rec.Time
		}
		if rec.Time.After(last) {
			last = rec.Time
		}
	}
	return last, first
}
