package reliability

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/autorollbackd/autorollbackd/internal/testenv"
)

// Bounds of the alert storm.
const (
	stormWorkloads     = 50
	stormNotifications = 10000
	// stormBudget bounds the sending; all of the storm must fit in it.
	stormBudget  = 3 * time.Minute
	stormSenders = 8
	// stormMaxRSS bounds the daemon's resident memory after the storm.
	stormMaxRSS = 300 << 10 // KiB
)

// TestAlertStorm sends 10,000 notifications about 50 bad rollouts at once,
// each twice as an Alertmanager HA pair does, plus random re-sends, from 8
// concurrent senders. The daemon answers every one 200 (no 5xx); it stays
// up and within bounded memory; and each workload is rolled back exactly
// once, with one incident and one applied action each.
func TestAlertStorm(t *testing.T) {
	c := testenv.Require(t)
	ctx := context.Background()
	seed := seedFor(t, "storm")

	// Given 50 opted-in Deployments, each rolled out to a bad second revision.
	ns, records := c.Namespace(t), c.Namespace(t)
	names := make([]string, stormWorkloads)
	for i := range names {
		names[i] = fmt.Sprintf("svc-%02d", i)
	}
	start := time.Now()
	manyTwoRevisions(t, c.Client, ns, names, 10)
	t.Logf("given: %d Deployments at revision 2 in %s", len(names), time.Since(start).Round(time.Millisecond))

	// And one daemon, leading, configured as deployed.
	dir := t.TempDir()
	cfg := baseConfig(dir, records, ns)
	d := startDaemon(t, "autorollbackd", c.Kubeconfig, cfg.write(t, dir))
	d.waitLeading(t, 60*time.Second)
	before, err := memoryOf(d.pid())
	if err != nil {
		t.Fatal(err)
	}

	// When the storm comes: every workload's alert fires at once, and each
	// notification goes out twice (the HA pair), sometimes more (group
	// interval re-sends), in random order from concurrent senders.
	startsAt := time.Now().UTC().Truncate(time.Millisecond)
	bodies := make([][]byte, 0, stormNotifications)
	for i := range stormNotifications {
		w := i % stormWorkloads
		a := alert{Namespace: ns, Deployment: names[w], Fingerprint: fmt.Sprintf("storm-%02d", w), StartsAt: startsAt}
		bodies = append(bodies, notification(t, a, fmt.Sprintf(`{}/{impact=~"service_down"}:{alertname="EventServiceDown", deployment=%q, group="%d"}`, names[w], i/stormWorkloads)))
	}
	rng := rand.New(rand.NewPCG(seed, 1))
	rng.Shuffle(len(bodies), func(i, j int) { bodies[i], bodies[j] = bodies[j], bodies[i] })

	var (
		got                           codes
		sent, posts, resends, retried atomic.Int64
		accepted, duplicates, other   atomic.Int64
		gaveUp                        atomic.Int64
		mu                            sync.Mutex
		unexpected                    []string
	)
	client := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: stormSenders * 2}}
	defer client.CloseIdleConnections()
	jobs := make(chan int)
	stopTaking := time.Now().Add(stormBudget)
	sendStart := time.Now()
	var wg sync.WaitGroup
	for s := range stormSenders {
		r := rand.New(rand.NewPCG(seed, uint64(s)+2))
		wg.Go(func() {
			for i := range jobs {
				copies := 2
				if r.Float64() < 0.25 {
					copies += 1 + r.IntN(2)
					resends.Add(int64(copies - 2))
				}
				for range copies {
					answers := postUntilAccepted(ctx, client, d, bodies[i], 30*time.Second)
					posts.Add(int64(len(answers)))
					retried.Add(int64(len(answers) - 1))
					for _, a := range answers {
						got.add(a)
					}
					last := answers[len(answers)-1]
					switch {
					case last.Err == nil && last.Code == http.StatusOK:
						accepted.Add(int64(last.Accepted))
						duplicates.Add(int64(last.Duplicates))
						other.Add(int64(last.Refused + last.Resolved))
					case last.Err == nil && last.Code == http.StatusServiceUnavailable:
						gaveUp.Add(1)
					default:
						mu.Lock()
						unexpected = append(unexpected, last.String())
						mu.Unlock()
					}
				}
				sent.Add(1)
			}
		})
	}
	for i := range bodies {
		if time.Now().After(stopTaking) {
			break
		}
		jobs <- i
	}
	close(jobs)
	wg.Wait()
	sendTime := time.Since(sendStart)

	t.Logf("load: %d notifications (%d re-sends beyond the HA pair) in %s from %d senders: %d POSTs, %.0f/s; answers: %s",
		sent.Load(), resends.Load(), sendTime.Round(time.Millisecond), stormSenders, posts.Load(),
		float64(posts.Load())/sendTime.Seconds(), got.String())
	t.Logf("receipts: %d alerts accepted, %d duplicates, %d refused or resolved; %d re-sends after 503; autorollbackd_intake_backpressure_total %s",
		accepted.Load(), duplicates.Load(), other.Load(), retried.Load(), d.metric(ctx, "autorollbackd_intake_backpressure_total"))

	// Then Alertmanager was answered 200 every time.
	if n := sent.Load(); n < stormNotifications {
		t.Errorf("only %d of %d notifications sent within %s", n, stormNotifications, stormBudget)
	}
	for code, n := range got.all() {
		if code != http.StatusOK {
			t.Errorf("%d answers with status %d (0: transport error); want only 200", n, code)
		}
	}
	if len(unexpected) > 0 {
		t.Errorf("%d notifications ended in an unexpected answer, e.g. %s", len(unexpected), unexpected[0])
	}
	if n := gaveUp.Load(); n > 0 {
		t.Errorf("%d notifications still answered 503 after 30s of re-sending", n)
	}
	if d.exited() {
		t.Fatalf("the daemon exited during the storm: %s", d.cmd.ProcessState)
	}
	// Nothing lost, nothing doubled: each alert accepted exactly once, every
	// other copy recognised as a duplicate.
	if accepted.Load() != stormWorkloads {
		t.Errorf("%d alerts accepted, want exactly %d (one per workload)", accepted.Load(), stormWorkloads)
	}
	if want := got.get(http.StatusOK) - stormWorkloads; duplicates.Load() != int64(want) {
		t.Errorf("%d duplicates in the receipts, want %d (every 200 but the %d first)", duplicates.Load(), want, stormWorkloads)
	}
	if v := d.metric(ctx, "autorollbackd_alerts_duplicate_total"); v != strconv.FormatInt(duplicates.Load(), 10) {
		t.Errorf("autorollbackd_alerts_duplicate_total = %s, want %d", v, duplicates.Load())
	}

	// And every workload is rolled back exactly once, its incident resolved
	// with one applied action.
	list := waitResolved(t, d, stormWorkloads, 3*time.Minute)
	recovered := time.Since(sendStart)
	byTarget := map[string]int{}
	for _, s := range list {
		byTarget[s.Target]++
	}
	if len(list) != stormWorkloads {
		t.Errorf("%d incidents, want exactly %d", len(list), stormWorkloads)
	}
	for _, name := range names {
		target := "Deployment " + ns + "/" + name
		if byTarget[target] != 1 {
			t.Errorf("%s has %d incidents, want 1", target, byTarget[target])
		}
	}
	for _, s := range list {
		var inc incident
		if err := api(ctx, d, "/api/v1/incidents/"+s.ID, &inc); err != nil {
			t.Fatal(err)
		}
		if len(inc.Actions) != 1 || inc.applied() != 1 || len(inc.Alerts) != 1 {
			t.Errorf("incident %s: %d alerts, actions %s; want one alert and exactly one applied action", s.ID, len(inc.Alerts), inc.actions())
		}
	}
	for _, name := range names {
		if err := rolledBackOnce(ctx, c.Client, ns, name); err != nil {
			t.Error(err)
		}
	}

	after, err := memoryOf(d.pid())
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("memory: before the storm %s; after %s", before, after)
	if after.RSS > stormMaxRSS {
		t.Errorf("resident memory after the storm %s, want under %d MiB", after, stormMaxRSS>>10)
	}
	if d.exited() || d.probe(ctx, "/healthz") != http.StatusOK {
		t.Errorf("the daemon is not healthy after the storm")
	}
	t.Logf("outcome: %d workloads rolled back exactly once, %d incidents resolved, %s after the first notification; nothing lost, nothing doubled",
		stormWorkloads, len(list), recovered.Round(time.Millisecond))
}

// seedFor returns the random seed of a test, from RELIABILITY_SEED when set
// (to replay a failure), and logs it.
func seedFor(t testing.TB, what string) uint64 {
	t.Helper()
	seed := rand.Uint64()
	if s := envSeed(); s != 0 {
		seed = s
	}
	t.Logf("%s: random seed %d (replay with RELIABILITY_SEED=%d)", what, seed, seed)
	return seed
}
