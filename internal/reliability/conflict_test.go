package reliability

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/autorollbackd/autorollbackd/internal/testenv"
)

// TestConcurrentWriters runs the rollback against other writers of the
// same Deployment.
//
// Writers that patch an unrelated label every 20ms do not touch what the
// rollback's patch tests (the Deployment's UID, generation and revision), so
// the rollback lands on its first write, exactly once, however busy they
// are. A person who rolls out a new version between the daemon's decision
// and its write must win: the daemon escalates (reason `changed`) instead of
// overwriting the person's rollout.
func TestConcurrentWriters(t *testing.T) {
	c := testenv.Require(t)
	t.Run("label writer every 20ms", func(t *testing.T) { labelWriter(t, c) })
	t.Run("person rolls out between decision and write", func(t *testing.T) { personRollsOut(t, c) })
}

// labelWriters write at once, each every 20ms.
const labelWriters = 2

// labelWriter rolls back a Deployment under label writers and checks that
// the API server refused none of the daemon's patches.
func labelWriter(t *testing.T, c *testenv.Cluster) {
	ctx := context.Background()
	ns := c.Namespace(t)
	dir := t.TempDir()
	d := startDaemon(t, "autorollbackd", c.Kubeconfig, baseConfig(dir, ns, ns).write(t, dir))
	d.waitLeading(t, 60*time.Second)
	if err := twoRevisions(ctx, c.Client, ns, "svc"); err != nil {
		t.Fatal(err)
	}
	before := deploymentPatchRefusals(ctx, t, c.Client)
	patches, took := rollbackUnderLabelWriter(t, c, d, ns, "svc")
	if n := deploymentPatchRefusals(ctx, t, c.Client) - before; n != 0 {
		t.Errorf("the API server refused %d of the daemon's patches: a label write failed the rollback's precondition", n)
	}
	t.Logf("outcome: rolled back exactly once, %s after the alert, on its first write, while %d label patches landed",
		took.Round(time.Millisecond), patches)
}

// rollbackUnderLabelWriter posts the alert about ns/name while a writer
// patches a label of the Deployment every 20ms, and checks that it is
// rolled back exactly once. It returns the writer's patches and the time
// from the alert to the rollback.
func rollbackUnderLabelWriter(t *testing.T, c *testenv.Cluster, d *daemon, ns, name string) (int64, time.Duration) {
	ctx := context.Background()
	// Given writers that patch a label of the Deployment every 20ms each,
	// with no precondition of their own (as a controller's merge patch
	// would), through a client of their own without a rate limit, so that
	// the test's other requests never wait behind them.
	cfg := rest.CopyConfig(c.REST)
	cfg.QPS = -1
	writer, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	wctx, stop := context.WithCancel(ctx)
	var (
		patches, failures atomic.Int64
		wg                sync.WaitGroup
	)
	for w := range labelWriters {
		wg.Go(func() {
			tick := time.NewTicker(20 * time.Millisecond)
			defer tick.Stop()
			for n := 0; ; n++ {
				select {
				case <-wctx.Done():
					return
				case <-tick.C:
				}
				patch := fmt.Sprintf(`{"metadata":{"labels":{"reliability.test/touched-%d":"%d"}}}`, w, n)
				_, err := writer.AppsV1().Deployments(ns).Patch(wctx, name, types.MergePatchType, []byte(patch), metav1.PatchOptions{})
				switch {
				case err == nil:
					patches.Add(1)
				case wctx.Err() == nil:
					failures.Add(1)
				}
			}
		})
	}
	defer func() { stop(); wg.Wait() }()
	testenv.Eventually(t, 10*time.Second, "the label writer is writing", func(context.Context) (bool, string) {
		return patches.Load() >= 5, fmt.Sprint(patches.Load(), " patches")
	})

	// When the alert arrives.
	client := &http.Client{Timeout: 30 * time.Second}
	sent := time.Now()
	body := notification(t, alert{Namespace: ns, Deployment: name, Fingerprint: "labels-" + name, StartsAt: sent.UTC()}, `{}:{alertname="EventServiceDown"}`)
	if a := post(ctx, client, d, body); a.Err != nil || a.Code != http.StatusOK || a.Accepted != 1 {
		t.Fatalf("POST /webhook: %s, want 200 with the alert accepted", a)
	}

	// Then the rollback lands while the writer keeps writing. The writer
	// stops there: the controller manager's status updates conflict with it
	// too, and it would back off from them long enough to hold up the
	// verification, which is not what this test is about.
	testenv.Eventually(t, time.Minute, "the rollback lands under the writer", func(ctx context.Context) (bool, string) {
		dep, err := writer.AppsV1().Deployments(ns).Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return false, err.Error()
		}
		return dep.Annotations["autorollback.io/rolled-back-from"] != "", "no rollback yet"
	})
	stop()
	wg.Wait()
	// And the incident resolves with that one rollback.
	var inc *incident
	testenv.Eventually(t, 2*time.Minute, "the incident resolves", func(ctx context.Context) (bool, string) {
		list, err := incidentsOf(ctx, d, ns, name)
		if err != nil || len(list) != 1 {
			return false, fmt.Sprint(len(list), " incidents ", err)
		}
		inc = list[0]
		return inc.State == "resolved", string(inc.State) + " " + inc.actions()
	})
	if inc.applied() != 1 || len(inc.Actions) != 1 {
		t.Errorf("incident %s actions %s, want exactly one applied rollback", inc.ID, inc.actions())
	}
	if err := rolledBackOnce(ctx, c.Client, ns, name); err != nil {
		t.Error(err)
	}
	if failures.Load() > 0 {
		t.Errorf("%d of the writer's patches failed", failures.Load())
	}
	var took time.Duration
	if len(inc.Actions) > 0 {
		took = inc.Actions[0].At.Sub(sent)
	}
	return patches.Load(), took
}

// deploymentPatchRefusals returns how many PATCHes of Deployments the API
// server has answered 409 Conflict or 422 (a failed JSON patch test), from
// its own metrics. Only the daemon's patches carry preconditions in these
// tests.
func deploymentPatchRefusals(ctx context.Context, t *testing.T, cs kubernetes.Interface) int {
	t.Helper()
	raw, err := cs.CoreV1().RESTClient().Get().AbsPath("/metrics").DoRaw(ctx)
	if err != nil {
		t.Fatalf("read the API server's metrics: %v", err)
	}
	n := 0
	for line := range strings.SplitSeq(string(raw), "\n") {
		if !strings.HasPrefix(line, "apiserver_request_total{") {
			continue
		}
		if !(strings.Contains(line, `code="409"`) || strings.Contains(line, `code="422"`)) || !strings.Contains(line, `resource="deployments"`) ||
			!strings.Contains(line, `verb="PATCH"`) || !strings.Contains(line, `subresource=""`) {
			continue
		}
		fields := strings.Fields(line)
		v, err := strconv.ParseFloat(fields[len(fields)-1], 64)
		if err == nil {
			n += int(v)
		}
	}
	return n
}

// personRollsOut makes the daemon decide on revision 2 and then finds
// revision 3, a person's rollout, when it writes. To put the person's
// write deterministically between the two, the controller manager is
// stopped (SIGSTOP, for a few seconds) after a spec change the controller
// has not observed: the daemon decides from the workload's revision, then
// its rollback waits, as kubectl's would not, until the controller has
// observed the latest spec. Meanwhile the person sets a new image; when
// the controller continues it rolls that out as revision 3, and the
// rollback finds the workload changed.
func personRollsOut(t *testing.T, c *testenv.Cluster) {
	ctx := context.Background()
	ns := c.Namespace(t)
	if err := twoRevisions(ctx, c.Client, ns, "svc"); err != nil {
		t.Fatal(err)
	}
	people := &pager{}
	pagerSrv := httptest.NewServer(people)
	defer pagerSrv.Close()
	dir := t.TempDir()
	cfg := baseConfig(dir, ns, ns).with(config{"escalation": escalation(pagerSrv.URL)})
	d := startDaemon(t, "autorollbackd", c.Kubeconfig, cfg.write(t, dir))
	d.waitLeading(t, 60*time.Second)

	// Given the controller manager stopped and a spec change it has not
	// observed (no new revision: the history limit).
	kcm, err := controlPlaneProcess(c, "kube-controller-manager")
	if err != nil {
		t.Fatal(err)
	}
	stopped, err := pause(kcm)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { stopped.resume() })
	api := c.Client.AppsV1().Deployments(ns)
	if _, err := api.Patch(ctx, "svc", types.MergePatchType, []byte(`{"spec":{"revisionHistoryLimit":9}}`), metav1.PatchOptions{}); err != nil {
		t.Fatal(err)
	}

	// When the alert is decided (incident open, acting, no action yet).
	client := &http.Client{Timeout: 30 * time.Second}
	body := notification(t, alert{Namespace: ns, Deployment: "svc", Fingerprint: "person-" + ns, StartsAt: time.Now().UTC()}, `{}:{alertname="EventServiceDown"}`)
	if a := post(ctx, client, d, body); a.Err != nil || a.Code != http.StatusOK || a.Accepted != 1 {
		t.Fatalf("POST /webhook: %s, want 200 with the alert accepted", a)
	}
	testenv.Eventually(t, 4*time.Second, "the daemon decided to roll back and waits to act", func(ctx context.Context) (bool, string) {
		list, err := incidentsOf(ctx, d, ns, "svc")
		if err != nil || len(list) != 1 {
			return false, fmt.Sprint(len(list), " incidents ", err)
		}
		return list[0].State == "acting" && len(list[0].Actions) == 0, string(list[0].State) + " " + list[0].actions()
	})
	// And a person rolls out a fix, which the controller then picks up.
	fix := "svc:v3-person"
	if err := setImage(ctx, c.Client, ns, "svc", fix); err != nil {
		t.Fatal(err)
	}
	held := stopped.resume()
	if !alive(kcm) {
		t.Fatalf("kube-controller-manager did not survive a %s stop", held)
	}

	// Then the daemon escalates instead of overwriting it.
	var inc *incident
	testenv.Eventually(t, 60*time.Second, "the incident escalates", func(ctx context.Context) (bool, string) {
		list, err := incidentsOf(ctx, d, ns, "svc")
		if err != nil || len(list) != 1 {
			return false, fmt.Sprint(len(list), " incidents ", err)
		}
		inc = list[0]
		return inc.State != "acting", string(inc.State) + " " + inc.actions()
	})
	if inc.State != "escalated" || len(inc.Actions) != 1 || inc.Actions[0].Result != nil || inc.Actions[0].Reason != "changed" {
		t.Errorf("incident %s is %s with actions %s; want escalated after one failed action with reason changed", inc.ID, inc.State, inc.actions())
	}
	if err := waitRevision(ctx, c.Client, ns, "svc", "3", 30*time.Second); err != nil {
		t.Fatal(err)
	}
	got, err := api.Get(ctx, "svc", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if img := got.Spec.Template.Spec.Containers[0].Image; img != fix {
		t.Errorf("image %s, want the person's %s", img, fix)
	}
	if v := got.Annotations["autorollback.io/rolled-back-from"]; v != "" {
		t.Errorf("the Deployment records a rollback from revision %s; the daemon wrote over the person's rollout", v)
	}
	testenv.Eventually(t, 30*time.Second, "on-call is paged", func(context.Context) (bool, string) {
		n := people.count(inc.ID, "page", "oncall")
		return n == 1, fmt.Sprint(n, " pages")
	})
	t.Logf("outcome: controller held for %s; the person's %s stands at revision 3; the incident is %s after %s; on-call paged once",
		held.Round(10*time.Millisecond), fix, inc.State, inc.actions())
}
