package reliability

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"os"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/watch"

	"github.com/autorollbackd/autorollbackd/internal/failpoint"
	"github.com/autorollbackd/autorollbackd/internal/kinds"
	"github.com/autorollbackd/autorollbackd/internal/testenv"
)

// crashTrials is how many times TestCrashAnywhere kills a daemon;
// RELIABILITY_CRASH_TRIALS overrides it.
const crashTrials = 20

// Where a kill can land, as crashPhase reads it from the cluster. The two
// "not yet recorded" phases are the windows between an external effect
// and its record in the incident, which TestCrashBetweenEffectAndRecord
// aims at.
const (
	phaseBeforeRecord           = "before the alert was recorded"
	phaseRolledBackFirst        = "rolled back, before any record"
	phaseRolledBackIncidentOpen = "rolled back, incident open, the alert not yet recorded"
	phaseRecorded               = "recorded, not yet decided"
	phaseDecided                = "decided, no incident yet"
	phaseBeforeRollback         = "incident open, before the rollback"
	phaseRollbackUnrecorded     = "rolled back, the action not yet recorded"
	phaseVerifying              = "verifying, on-call not yet paged"
	phasePageInFlight           = "on-call page in flight: recorded as sending, its delivery not yet recorded"
	phaseVerifyingPaged         = "verifying, on-call paged"
)

// TestCrashAnywhere kills the daemon with SIGKILL at a random moment after
// an alert is posted, so that the kill lands while the alert is recorded,
// decided, rolled back or verified, and starts a replacement once the lease
// has expired, as Kubernetes would. Each trial checks the promises that
// must survive any crash: the incident resolves, the workload is rolled
// back exactly once with one applied action recorded, and on-call, paged
// one second into the incident (during verification, which fails for the
// first two seconds), is paged at most once.
func TestCrashAnywhere(t *testing.T) {
	c := testenv.Require(t)
	trials := crashTrials
	if n, err := strconv.Atoi(os.Getenv("RELIABILITY_CRASH_TRIALS")); err == nil && n > 0 {
		trials = n
	}
	seed := seedFor(t, "crash")
	rng := rand.New(rand.NewPCG(seed, 0))
	start := time.Now()
	rig := newCrashRig(t, c)
	namespaces := rig.workloads(t, trials)
	t.Logf("given: %d Deployments at revision 2 in %s", trials, time.Since(start).Round(time.Millisecond))

	phases := map[string]int{}
	var paged, survived int
	for i, ns := range namespaces {
		// A third of the kills fall in the first 20ms (recording, deciding),
		// a third in 300ms (acting), the rest anywhere in 1.5s (mostly
		// verification, and the page at 1s).
		window := []time.Duration{20 * time.Millisecond, 300 * time.Millisecond, 1500 * time.Millisecond}[i%3]
		delay := time.Duration(rng.Int64N(int64(window)))
		// Every fourth kill lands, by the failpoint, right after the
		// rollback patch, which is the first write, before any record.
		point := ""
		if i%4 == 3 {
			point = failpoint.AfterRollbackPatch
		}
		t.Run(fmt.Sprintf("trial-%02d", i), func(t *testing.T) {
			res := rig.trial(t, ns, point, func(first *daemon, post func()) {
				post()
				if point != "" {
					first.waitDied(t, 20*time.Second)
					return
				}
				<-time.After(delay) // the fault's random moment, not a wait for a condition
				first.kill()
			})
			if point != "" {
				t.Logf("killed at failpoint %s: %s; first answer: %s", point, res.phase, res.first)
				if res.phase != phaseRolledBackFirst {
					t.Errorf("the kill at %s landed %s, want %s", point, res.phase, phaseRolledBackFirst)
				}
			} else {
				t.Logf("killed %s after the post: %s; first answer: %s", delay.Round(time.Millisecond), res.phase, res.first)
			}
			phases[res.phase]++
			paged += res.pages
			res.check(t)
			if !t.Failed() {
				survived++
			}
		})
	}
	var where []string
	for p, n := range phases {
		where = append(where, fmt.Sprintf("%s: %d", p, n))
	}
	sort.Strings(where)
	t.Logf("faults: %d SIGKILLs, landed %s", trials, strings.Join(where, "; "))
	t.Logf("outcome: %d of %d trials survived (incident resolved, rolled back exactly once, one action, on-call paged at most once); %d on-call pages in %d incidents; %s in all",
		survived, trials, paged, trials, time.Since(start).Round(time.Second))
}

// TestCrashBetweenEffectAndRecord aims the kill at the two moments where
// the daemon has changed the world but not yet written that down in the
// incident: right after its rollback patch, and while the on-call page is
// being delivered. A replacement daemon must still record the rollback as
// the applied action it was, and must not page on-call a second time.
func TestCrashBetweenEffectAndRecord(t *testing.T) {
	c := testenv.Require(t)
	rig := newCrashRig(t, c)

	t.Run("after the rollback patch", func(t *testing.T) {
		// The rollback patch is the first write: the daemon kills itself
		// the moment the API server accepted it, before any record.
		ns := rig.workloads(t, 1)[0]
		res := rig.trial(t, ns, failpoint.AfterRollbackPatch, func(first *daemon, post func()) {
			post()
			first.waitDied(t, 20*time.Second)
		})
		t.Logf("the kill landed %s", res.phase)
		if res.phase != phaseRolledBackFirst {
			t.Errorf("the kill landed %s, want %s", res.phase, phaseRolledBackFirst)
		}
		res.check(t)
	})

	t.Run("after the action, before its record in the incident", func(t *testing.T) {
		// The kill follows the watch event of the patch; with the patch
		// the first write, it lands before the incident's write of the
		// action, or before the incident and the record.
		ns := rig.workloads(t, 1)[0]
		res := rig.trial(t, ns, "", func(first *daemon, post func()) {
			killOnRollback(t, rig.c, first, ns, post)
		})
		t.Logf("the kill landed %s", res.phase)
		res.check(t)
	})

	t.Run("while on-call is paged", func(t *testing.T) {
		ns := rig.workloads(t, 1)[0]
		res := rig.trial(t, ns, "", func(first *daemon, post func()) {
			// The pager kills the daemon when the page arrives, before
			// answering it: the page reached people, the daemon never
			// learnt that it did.
			rig.people.onPage(func(m message) {
				if m.Kind == "page" && m.Level == "oncall" && strings.Contains(m.Incident.ID, "-"+ns+"-") {
					first.kill()
				}
			})
			defer rig.people.onPage(nil)
			post()
			select {
			case <-first.done:
			case <-time.After(20 * time.Second):
				t.Fatal("on-call was not paged within 20s")
			}
		})
		t.Logf("the kill landed %s", res.phase)
		res.check(t)
	})
}

// killOnRollback posts and kills the daemon as soon as the API server
// reports its rollback patch.
func killOnRollback(t *testing.T, c *testenv.Cluster, first *daemon, ns string, post func()) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	w, err := c.Client.AppsV1().Deployments(ns).Watch(ctx, metav1.ListOptions{FieldSelector: "metadata.name=svc"})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Stop()
	post()
	for ev := range w.ResultChan() {
		if ev.Type != watch.Modified {
			continue
		}
		if m, ok := ev.Object.(metav1.Object); ok && m.GetAnnotations()[kinds.AnnotationRolledBackFor] != "" {
			first.kill()
			return
		}
	}
	first.kill()
	t.Fatal("no rollback patch within 20s")
}

// crashRig is what the crash trials share: the cluster, a service whose
// health check fails for two seconds after the alert, and a pager.
type crashRig struct {
	c         *testenv.Cluster
	svc       *health
	healthURL string
	people    *pager
	pagerURL  string
}

func newCrashRig(t *testing.T, c *testenv.Cluster) *crashRig {
	r := &crashRig{c: c, svc: &health{}, people: &pager{}}
	healthSrv := httptest.NewServer(r.svc)
	t.Cleanup(healthSrv.Close)
	pagerSrv := httptest.NewServer(r.people)
	t.Cleanup(pagerSrv.Close)
	r.healthURL, r.pagerURL = healthSrv.URL, pagerSrv.URL
	return r
}

// workloads makes n namespaces, each with a Deployment svc at a bad second
// revision; each namespace also holds its trial's records and Lease.
func (r *crashRig) workloads(t *testing.T, n int) []string {
	t.Helper()
	namespaces := make([]string, n)
	for i := range namespaces {
		namespaces[i] = r.c.Namespace(t)
	}
	var (
		wg   sync.WaitGroup
		mu   sync.Mutex
		errs []string
	)
	sem := make(chan struct{}, 5)
	for _, ns := range namespaces {
		wg.Go(func() {
			sem <- struct{}{}
			defer func() { <-sem }()
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
			defer cancel()
			if err := twoRevisions(ctx, r.c.Client, ns, "svc"); err != nil {
				mu.Lock()
				errs = append(errs, err.Error())
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	if len(errs) > 0 {
		t.Fatal(strings.Join(errs, "\n"))
	}
	return namespaces
}

// crashResult is what a trial saw.
type crashResult struct {
	phase string
	first answer // the killed daemon's answer to the post, if any
	inc   *incident
	pages int // on-call pages of the incident
	err   error
}

// trial runs one crash in ns: a daemon, the alert posted by kill's call of
// post, the daemon killed by kill, a replacement that takes the re-sent
// alert once the lease expires, and the incident resolved.
func (r *crashRig) trial(t *testing.T, ns, point string, kill func(first *daemon, post func())) crashResult {
	ctx := context.Background()
	dir := t.TempDir()
	cfg := baseConfig(dir, ns, ns).with(config{
		"leaderElection": map[string]any{"leaseDuration": "3s", "renewDeadline": "2s", "retryPeriod": "500ms"},
		"verify":         httpCheck(r.healthURL),
		"escalation":     escalation(r.pagerURL),
	}).write(t, dir)
	first := startDaemonFailing(t, "first daemon", r.c.Kubeconfig, cfg, point)
	first.waitLeading(t, 30*time.Second)
	first.waitLogged(t, "resumed alert records and incidents", 30*time.Second)

	// When the alert is posted and the daemon killed.
	now := time.Now().UTC()
	body := notification(t, alert{Namespace: ns, Deployment: "svc", Fingerprint: "crash-" + ns, StartsAt: now}, `{}:{alertname="EventServiceDown"}`)
	r.svc.healthyAt(ns, now.Add(2*time.Second))
	client := &http.Client{Timeout: 30 * time.Second}
	answered := make(chan answer, 1)
	kill(first, func() { go func() { answered <- post(ctx, client, first, body) }() })
	res := crashResult{first: <-answered}
	res.phase = crashPhase(ctx, t, r.c, ns, r.people)

	// Then a replacement, once the lease has expired, takes the re-sent
	// alert (Alertmanager re-sends until a 200) and finishes the incident.
	second := startDaemon(t, "second daemon", r.c.Kubeconfig, cfg)
	second.waitLeading(t, 30*time.Second)
	answers := postUntilAccepted(ctx, client, second, body, 30*time.Second)
	last := answers[len(answers)-1]
	if last.Err != nil || last.Code != http.StatusOK || last.Accepted+last.Duplicates != 1 {
		t.Fatalf("re-sent alert answered %s, want 200 with the alert accepted or a duplicate", last)
	}
	testenv.Eventually(t, 60*time.Second, "the incident resolves", func(ctx context.Context) (bool, string) {
		if second.exited() {
			t.Fatalf("the second daemon exited: %s", second.cmd.ProcessState)
		}
		list, err := incidentsOf(ctx, second, ns, "svc")
		if err != nil {
			return false, err.Error()
		}
		if len(list) != 1 {
			return false, fmt.Sprintf("%d incidents", len(list))
		}
		res.inc = list[0]
		return res.inc.State == "resolved", string(res.inc.State) + " " + res.inc.actions()
	})
	res.err = rolledBackOnce(ctx, r.c.Client, ns, "svc")
	res.pages = r.people.count(res.inc.ID, "page", "oncall")
	second.stop()
	return res
}

// check asserts the promises of a crash.
func (res crashResult) check(t *testing.T) {
	t.Helper()
	if res.err != nil {
		t.Error(res.err)
	}
	inc := res.inc
	if len(inc.Actions) != 1 || inc.Actions[0].Kind != "rollback" || inc.Actions[0].Result == nil {
		t.Errorf("incident %s actions %s, want exactly one rollback", inc.ID, inc.actions())
		return
	}
	if inc.applied() != 1 {
		t.Errorf("incident %s records its rollback as %s (%q), want applied: the rollback was this incident's, done before the crash",
			inc.ID, inc.Actions[0].Result.Outcome, inc.Actions[0].Result.Message)
	}
	if res.pages > 1 {
		t.Errorf("on-call paged %d times for incident %s, want at most once", res.pages, inc.ID)
	}
}

// crashPhase says how far the incident had got when the daemon was
// killed, from what it had written to the cluster and sent to the pager.
func crashPhase(ctx context.Context, t *testing.T, c *testenv.Cluster, ns string, people *pager) string {
	t.Helper()
	cms, err := c.Client.CoreV1().ConfigMaps(ns).List(ctx, metav1.ListOptions{LabelSelector: "autorollback.io/record"})
	if err != nil {
		t.Fatal(err)
	}
	var record, state string
	var inc incident
	for _, cm := range cms.Items {
		switch cm.Labels["autorollback.io/record"] {
		case "alert":
			record = cm.Labels["autorollback.io/state"]
		case "incident":
			state = cm.Labels["autorollback.io/incident-state"]
			if err := json.Unmarshal([]byte(cm.Data["incident.json"]), &inc); err != nil {
				t.Fatalf("decode incident %s: %v", cm.Name, err)
			}
		}
	}
	d, err := c.Client.AppsV1().Deployments(ns).Get(ctx, "svc", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	patched := d.Annotations[kinds.AnnotationRolledBackFor] != ""
	pageInFlight := false
	for _, p := range inc.Pages {
		pageInFlight = pageInFlight || p.Level == "oncall" && p.Sending
	}
	sentPage := state != "" && people.count(inc.ID, "page", "oncall") > 0
	switch {
	case record == "" && !patched:
		return phaseBeforeRecord
	case record == "" && state == "":
		return phaseRolledBackFirst
	case record == "":
		return phaseRolledBackIncidentOpen
	case state == "" && record == "pending":
		return phaseRecorded
	case state == "":
		return phaseDecided
	case pageInFlight:
		return phasePageInFlight
	case state == "acting" && !patched:
		return phaseBeforeRollback
	case state == "acting":
		return phaseRollbackUnrecorded
	case state == "verifying" && !sentPage:
		return phaseVerifying
	case state == "verifying":
		return phaseVerifyingPaged
	}
	return "incident " + state
}
