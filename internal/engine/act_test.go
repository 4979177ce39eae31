package engine

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/util/retry"

	"github.com/autorollbackd/autorollbackd/internal/actuator"
	"github.com/autorollbackd/autorollbackd/internal/incident"
	"github.com/autorollbackd/autorollbackd/internal/kinds"
	"github.com/autorollbackd/autorollbackd/internal/policy"
	"github.com/autorollbackd/autorollbackd/internal/testenv"
	"github.com/autorollbackd/autorollbackd/internal/webhook"
)

// rollout changes the fixture's image, and anything else in the pod spec
// that change asks for, and waits for the new revision.
func (f *fixture) rollout(t *testing.T, image, revision string, change ...func(*corev1.PodSpec)) {
	t.Helper()
	api := f.c.Client.AppsV1().Deployments(f.ns)
	err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
		d, err := api.Get(context.Background(), "event-service", metav1.GetOptions{})
		if err != nil {
			return err
		}
		d.Spec.Template.Spec.Containers[0].Image = image
		for _, c := range change {
			c(&d.Spec.Template.Spec)
		}
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

// waitResolved waits until the incident with id is resolved, and returns
// it.
func (r *running) waitResolved(t *testing.T, id string) *incident.Incident {
	t.Helper()
	var inc *incident.Incident
	testenv.Eventually(t, 60*time.Second, "incident resolved", func(ctx context.Context) (bool, string) {
		v, err := r.opts.Incidents.Get(ctx, id)
		if err != nil {
			return false, err.Error()
		}
		inc = v.Incident
		return inc.State == incident.StateResolved, string(inc.State) + "\n" + inc.Render()
	})
	return inc
}

// waitIncident waits until the incident of n's alert is in one of the
// given states, and returns it.
func (r *running) waitIncident(t *testing.T, n *webhook.Notification, states ...incident.State) *incident.Incident {
	t.Helper()
	a := n.Alerts[0]
	key := AlertKey(policy.Alert{Fingerprint: a.Fingerprint, StartsAt: a.StartsAt})
	var inc *incident.Incident
	testenv.Eventually(t, 60*time.Second, fmt.Sprintf("incident of %s in %v", key, states), func(ctx context.Context) (bool, string) {
		rec, err := r.Record(ctx, key)
		if err != nil {
			return false, err.Error()
		}
		if rec.Incident == "" {
			return false, "no incident yet: " + rec.state()
		}
		v, err := r.opts.Incidents.Get(ctx, rec.Incident)
		if err != nil {
			return false, err.Error()
		}
		inc = v.Incident
		return slices.Contains(states, inc.State), string(inc.State) + "\n" + inc.Render()
	})
	return inc
}

func TestRollbackVerifiesAndResolvesExactlyOnce(t *testing.T) {
	f := newFixture(t, optedIn, nil)
	cfg := policy.DefaultConfig()
	e := f.startEngine(t, cfg, 1)
	ctx := context.Background()
	n := firing(f.ns, "once-1", time.Now(), map[string]string{"impact": "service_down"})
	if _, err := e.Accept(ctx, n); err != nil {
		t.Fatal(err)
	}
	inc := e.waitIncident(t, n, incident.StateResolved)
	if len(inc.Actions) != 1 || inc.Actions[0].Result == nil || inc.Actions[0].Result.Outcome != actuator.OutcomeApplied {
		t.Fatalf("actions = %+v; want one applied rollback\n%s", inc.Actions, inc.Render())
	}
	if inc.From != 2 || !slices.Equal(inc.Targets, []int64{1}) {
		t.Errorf("plan from %d to %v, want from 2 to [1]", inc.From, inc.Targets)
	}
	if len(inc.Verifications) != 1 || inc.Verifications[0].Overall != "pass" {
		t.Errorf("verifications = %+v, want one pass", inc.Verifications)
	}
	if len(inc.Pages) != 0 {
		t.Errorf("pages = %+v: a verified recovery within minutes pages nobody", inc.Pages)
	}
	f.waitRevision(t, "3")
	image, generation := f.image(t)
	if image != "event-service:v1" {
		t.Fatalf("image = %s, want the last good event-service:v1", image)
	}
	if v := testutilCount(t, e, "autorollbackd_alert_to_action_seconds"); v != 1 {
		t.Errorf("alert_to_action_seconds observations = %v, want 1", v)
	}
	if v := testutilCount(t, e, "autorollbackd_action_to_recovery_seconds"); v != 1 {
		t.Errorf("action_to_recovery_seconds observations = %v, want 1", v)
	}
	// The announcements follow the records they announce.
	testenv.Eventually(t, 10*time.Second, "the rollback and the resolution announced", func(context.Context) (bool, string) {
		var summaries []string
		for _, m := range e.messages.find("announce") {
			summaries = append(summaries, fmt.Sprint(m["summary"]))
		}
		joined := strings.Join(summaries, "\n")
		return strings.Contains(joined, "rolled back from revision 2 to 1") && strings.Contains(joined, "resolved after"), joined
	})

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

// A daemon that stopped between its rollback patch and the incident's
// record of it left the workload rolled back; the next attempt finds this
// incident's rollback on the workload and records it as applied, once.
func TestRollbackInterruptedBeforeItsRecordIsRecordedApplied(t *testing.T) {
	f := newFixture(t, optedIn, nil)
	// The stopped daemon: it ran no workers, and its last acts are done
	// by hand below.
	stopped := f.startEngine(t, policy.DefaultConfig(), 0)
	ctx := context.Background()
	target := policy.Ref{Kind: policy.KindDeployment, Namespace: f.ns, Name: "event-service"}
	req := actuator.Request{Target: target, Incident: RolloutID(target, 2), Why: "the stopped attempt"}
	if res, err := stopped.opts.Actor.Rollback(ctx, req, 2, 1); err != nil || res.Outcome != actuator.OutcomeApplied {
		t.Fatalf("first attempt = %+v, %v", res, err)
	}
	f.waitRevision(t, "3")
	_, generation := f.image(t)

	n := firing(f.ns, "interrupted-1", time.Now(), map[string]string{"impact": "service_down"})
	// The stopped attempt's incident, pinned on revision 2 as it was.
	inc := stopped.newIncident(&Record{Key: AlertKey(policy.Alert{Fingerprint: "interrupted-1", StartsAt: n.Alerts[0].StartsAt}),
		Alert:  policy.Alert{Fingerprint: "interrupted-1", StartsAt: n.Alerts[0].StartsAt, Labels: map[string]string{"alertname": "EventServiceDown"}},
		Target: target, ReceivedAt: time.Now(),
		Decision: &policy.Decision{Outcome: policy.OutcomeRollback, Reason: "rule_matched"}},
		&policy.Workload{Revision: 2, Older: []int64{1}}, time.Now())
	if _, err := stopped.opts.Incidents.Create(ctx, inc); err != nil {
		t.Fatal(err)
	}
	// The next daemon resumes the incident.
	e := f.startEngine(t, policy.DefaultConfig(), 1)
	inc = e.waitResolved(t, inc.ID)
	if len(inc.Actions) != 1 || inc.Actions[0].Result == nil || inc.Actions[0].Result.Outcome != actuator.OutcomeApplied || !inc.Actions[0].Result.Resumed {
		t.Fatalf("actions = %+v; want one applied rollback, resumed\n%s", inc.Actions, inc.Render())
	}
	if _, g := f.image(t); g != generation {
		t.Fatalf("the workload was written again: generation %d -> %d", generation, g)
	}
	// The budget counts it; the alert-to-action histogram does not, since
	// its moment is the stopped attempt's.
	if u := e.budget.usage(target, time.Now()); u.Workload != 1 {
		t.Errorf("budget usage = %+v, want the resumed rollback counted", u)
	}
	if v := testutilCount(t, e, "autorollbackd_alert_to_action_seconds"); v != 0 {
		t.Errorf("alert_to_action_seconds observations = %v, want 0", v)
	}
}

func TestGitOpsManagedWorkloadIsNotTouched(t *testing.T) {
	f := newFixture(t, optedIn, map[string]string{"argocd.argoproj.io/tracking-id": "events:apps/Deployment:ns/event-service"})
	e := f.startEngine(t, policy.DefaultConfig(), 1)
	n := firing(f.ns, "gitops-1", time.Now(), map[string]string{"impact": "service_down"})
	if _, err := e.Accept(context.Background(), n); err != nil {
		t.Fatal(err)
	}
	inc := e.waitIncident(t, n, incident.StateEscalated)
	if inc.Decision.Outcome != policy.OutcomeEscalate || inc.Decision.Reason != policy.ReasonGitOpsManaged || len(inc.Actions) != 0 {
		t.Fatalf("decision %s/%s, %d actions; want escalate/gitops_managed and none", inc.Decision.Outcome, inc.Decision.Reason, len(inc.Actions))
	}
	testenv.Eventually(t, 30*time.Second, "on-call paged at once", func(context.Context) (bool, string) {
		pages := e.messages.find("page")
		return len(pages) == 1 && pages[0]["level"] == "oncall", fmt.Sprint(pages)
	})
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
	inc := e.waitIncident(t, n, incident.StateEscalated)
	if len(inc.Actions) != 1 || inc.Actions[0].Result == nil || inc.Actions[0].Result.Outcome != actuator.OutcomeDryRun {
		t.Fatalf("actions = %+v, want one dry run", inc.Actions)
	}
	if image, generation := f.image(t); image != "event-service:v2-bad" || generation != f.deployment.Generation {
		t.Fatalf("dry run changed the workload: %s gen %d", image, generation)
	}
}

func TestFeatureFlagInsteadOfUndo(t *testing.T) {
	f := newFixture(t, optedIn, map[string]string{kinds.AnnotationFeatureFlagConfigMap: "event-service-config", kinds.AnnotationFeatureFlags: "FEATURE_NEW_PRICING"})
	ctx := context.Background()
	if _, err := f.c.Client.CoreV1().ConfigMaps(f.ns).Create(ctx, &corev1.ConfigMap{
		ObjectMeta: metav1.ObjectMeta{Name: "event-service-config"},
		Data:       map[string]string{"FEATURE_NEW_PRICING": "true", "FEATURE_STATE_MACHINE": "true"},
	}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	e := f.startEngine(t, policy.DefaultConfig(), 1, allowFeatureFlags)
	n := firing(f.ns, "flag-1", time.Now(), map[string]string{"impact": "critical_flow_broken", LabelFeatureFlag: "FEATURE_NEW_PRICING"})
	if _, err := e.Accept(ctx, n); err != nil {
		t.Fatal(err)
	}
	inc := e.waitIncident(t, n, incident.StateResolved)
	if len(inc.Actions) != 1 || inc.Actions[0].Kind != actuator.KindFeatureFlag || inc.Actions[0].Error != "" {
		t.Fatalf("actions %+v; want one successful feature flag rollback", inc.Actions)
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
			d := policy.Decision{Outcome: policy.OutcomeRollback}
			inc := e.newIncident(&Record{Target: facts.Ref, Decision: &d, Alert: policy.Alert{StartsAt: time.Now()}}, facts, time.Now())
			if inc.From != from || !slices.Equal(inc.Targets, tc.want) {
				t.Fatalf("plan from %d targets %v, want from %d targets %v", inc.From, inc.Targets, from, tc.want)
			}
			if want := fmt.Sprintf("deployment/%s/event-service@%d", f.ns, from); inc.Rollout != want {
				t.Errorf("rollout = %s, want %s", inc.Rollout, want)
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
