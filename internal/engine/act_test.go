package engine

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/util/retry"

	"github.com/autorollbackd/autorollbackd/internal/actuator"
	"github.com/autorollbackd/autorollbackd/internal/policy"
	"github.com/autorollbackd/autorollbackd/internal/testenv"
	"github.com/autorollbackd/autorollbackd/internal/webhook"
)

// rollout changes the fixture's image and waits for the new revision.
func (f *fixture) rollout(t *testing.T, image, revision string) {
	t.Helper()
	api := f.c.Client.AppsV1().Deployments(f.ns)
	err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
		d, err := api.Get(context.Background(), "event-service", metav1.GetOptions{})
		if err != nil {
			return err
		}
		d.Spec.Template.Spec.Containers[0].Image = image
		_, err = api.Update(context.Background(), d, metav1.UpdateOptions{})
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	f.waitRevision(t, revision)
}

func (f *fixture) image(t *testing.T) (string, int64) {
	t.Helper()
	d, err := f.c.Client.AppsV1().Deployments(f.ns).Get(context.Background(), "event-service", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return d.Spec.Template.Spec.Containers[0].Image, d.Generation
}

// waitDone waits until the record of n's alert has finished its plan.
func (r *running) waitDone(t *testing.T, n *webhook.Notification) *Record {
	t.Helper()
	a := n.Alerts[0]
	key := AlertKey(policy.Alert{Fingerprint: a.Fingerprint, StartsAt: a.StartsAt})
	var rec *Record
	testenv.Eventually(t, 30*time.Second, "record of "+key+" finished", func(ctx context.Context) (bool, string) {
		var err error
		if rec, err = r.Record(ctx, key); err != nil {
			return false, err.Error()
		}
		return rec.state() == stateDone || rec.state() == stateFailed, rec.state()
	})
	return rec
}

func TestRollbackActsExactlyOnce(t *testing.T) {
	f := newFixture(t, optedIn, nil)
	cfg := policy.DefaultConfig()
	e := f.startEngine(t, cfg, 1)
	ctx := context.Background()
	n := firing(f.ns, "once-1", time.Now(), map[string]string{"impact": "service_down"})
	if _, err := e.Accept(ctx, n); err != nil {
		t.Fatal(err)
	}
	rec := e.waitDone(t, n)
	if rec.state() != stateDone || len(rec.Actions) != 1 || rec.Actions[0].Result == nil || rec.Actions[0].Result.Outcome != actuator.OutcomeApplied {
		t.Fatalf("record = %s, actions %+v; want one applied action", rec.state(), rec.Actions)
	}
	if rec.Plan.From != 2 || !slices.Equal(rec.Plan.Targets, []int64{1}) {
		t.Errorf("plan = %+v, want from 2 to [1]", rec.Plan)
	}
	f.waitRevision(t, "3")
	image, generation := f.image(t)
	if image != "event-service:v1" {
		t.Fatalf("image = %s, want the last good event-service:v1", image)
	}
	if v := testutilCount(t, e, "autorollbackd_alert_to_action_seconds"); v != 1 {
		t.Errorf("alert_to_action_seconds observations = %v, want 1", v)
	}

	// The daemon restarts: the new one resumes nothing and acts on nothing.
	restarted := f.startEngine(t, cfg, 1)
	if r, err := restarted.Accept(ctx, n); err != nil || r.Duplicates != 1 {
		t.Fatalf("re-sent after restart: %+v, %v; want a duplicate", r, err)
	}
	// Another alert about the same bad rollout (another pod's, say).
	other := firing(f.ns, "once-2", time.Now(), map[string]string{"impact": "service_down"})
	if r, err := restarted.Accept(ctx, other); err != nil || r.Accepted != 1 {
		t.Fatalf("second alert: %+v, %v", r, err)
	}
	d := restarted.waitDecision(t, other)
	if d.Outcome == policy.OutcomeRollback {
		t.Fatalf("second alert decided a second rollback:\n%s", d)
	}
	f.waitRevision(t, "3")
	if image2, generation2 := f.image(t); image2 != image || generation2 != generation {
		t.Fatalf("workload changed again: %s gen %d -> %s gen %d", image, generation, image2, generation2)
	}
}

func TestGitOpsManagedWorkloadIsNotTouched(t *testing.T) {
	f := newFixture(t, optedIn, map[string]string{"argocd.argoproj.io/tracking-id": "events:apps/Deployment:ns/event-service"})
	e := f.startEngine(t, policy.DefaultConfig(), 1)
	n := firing(f.ns, "gitops-1", time.Now(), map[string]string{"impact": "service_down"})
	if _, err := e.Accept(context.Background(), n); err != nil {
		t.Fatal(err)
	}
	rec := e.waitDone(t, n)
	if rec.Decision.Outcome != policy.OutcomeEscalate || rec.Decision.Reason != policy.ReasonGitOpsManaged || rec.Plan != nil {
		t.Fatalf("decision %s/%s plan %+v; want escalate/gitops_managed and no plan", rec.Decision.Outcome, rec.Decision.Reason, rec.Plan)
	}
	if image, generation := f.image(t); image != "event-service:v2-bad" || generation != f.deployment.Generation {
		t.Fatalf("GitOps-managed workload changed: %s gen %d", image, generation)
	}
}

func TestDryRunDecidesAndActsInDryRunOnly(t *testing.T) {
	f := newFixture(t, optedIn, nil)
	cfg := policy.DefaultConfig()
	cfg.DryRun = true
	e := f.startEngine(t, cfg, 1)
	n := firing(f.ns, "dry-1", time.Now(), map[string]string{"impact": "service_down"})
	if _, err := e.Accept(context.Background(), n); err != nil {
		t.Fatal(err)
	}
	rec := e.waitDone(t, n)
	if len(rec.Actions) != 1 || rec.Actions[0].Result == nil || rec.Actions[0].Result.Outcome != actuator.OutcomeDryRun {
		t.Fatalf("actions = %+v, want one dry run", rec.Actions)
	}
	if image, generation := f.image(t); image != "event-service:v2-bad" || generation != f.deployment.Generation {
		t.Fatalf("dry run changed the workload: %s gen %d", image, generation)
	}
}

func TestFeatureFlagInsteadOfUndo(t *testing.T) {
	f := newFixture(t, optedIn, map[string]string{AnnotationFeatureFlagConfigMap: "event-service-config"})
	ctx := context.Background()
	if _, err := f.c.Client.CoreV1().ConfigMaps(f.ns).Create(ctx, &corev1.ConfigMap{
		ObjectMeta: metav1.ObjectMeta{Name: "event-service-config"},
		Data:       map[string]string{"FEATURE_NEW_PRICING": "true", "FEATURE_STATE_MACHINE": "true"},
	}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	e := f.startEngine(t, policy.DefaultConfig(), 1)
	n := firing(f.ns, "flag-1", time.Now(), map[string]string{"impact": "critical_flow_broken", LabelFeatureFlag: "FEATURE_NEW_PRICING"})
	if _, err := e.Accept(ctx, n); err != nil {
		t.Fatal(err)
	}
	rec := e.waitDone(t, n)
	if rec.Plan.Kind != actuator.KindFeatureFlag || len(rec.Actions) != 1 || rec.Actions[0].Error != "" {
		t.Fatalf("plan %+v actions %+v; want one successful feature flag rollback", rec.Plan, rec.Actions)
	}
	cm, err := f.c.Client.CoreV1().ConfigMaps(f.ns).Get(ctx, "event-service-config", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if cm.Data["FEATURE_NEW_PRICING"] != "false" || cm.Data["FEATURE_STATE_MACHINE"] != "true" {
		t.Fatalf("flags = %v, want only FEATURE_NEW_PRICING turned off", cm.Data)
	}
	// Pods restart with the flag off; the image is not rolled back.
	f.waitRevision(t, "3")
	if image, _ := f.image(t); image != "event-service:v2-bad" {
		t.Fatalf("image = %s: a flag rollback must not undo the rollout", image)
	}
}

func TestPlanPinsOlderRevisionsWithoutWrapping(t *testing.T) {
	for _, tc := range []struct {
		name  string
		depth int
		extra bool // a third revision
		want  []int64
	}{
		{"two revisions, depth 2: no N-2 to go to", 2, false, []int64{1}},
		{"three revisions, depth 2: last good then N-2", 2, true, []int64{2, 1}},
		{"three revisions, depth 1", 1, true, []int64{2}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t, optedIn, nil)
			from := int64(2)
			if tc.extra {
				f.rollout(t, "event-service:v3-bad", "3")
				from = 3
			}
			e := f.startEngine(t, policy.DefaultConfig(), 0)
			e.opts.MaxRollbackDepth = tc.depth
			facts, err := e.opts.Live.Facts(context.Background(), policy.Ref{Kind: policy.KindDeployment, Namespace: f.ns, Name: "event-service"})
			if err != nil {
				t.Fatal(err)
			}
			p := e.plan(&Record{Target: facts.Ref}, facts)
			if p.From != from || !slices.Equal(p.Targets, tc.want) {
				t.Fatalf("plan from %d targets %v, want from %d targets %v", p.From, p.Targets, from, tc.want)
			}
			if want := fmt.Sprintf("deployment/%s/event-service@%d", f.ns, from); p.Incident != want {
				t.Errorf("incident = %s, want %s", p.Incident, want)
			}
		})
	}
}

// testutilCount returns the sample count of a histogram in the engine's
// registry.
func testutilCount(t *testing.T, r *running, name string) uint64 {
	t.Helper()
	families, err := r.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range families {
		if mf.GetName() == name {
			return mf.GetMetric()[0].GetHistogram().GetSampleCount()
		}
	}
	t.Fatalf("metric %s not found", name)
	return 0
}
