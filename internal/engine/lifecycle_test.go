package engine

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/autorollbackd/autorollbackd/internal/actuator"
	"github.com/autorollbackd/autorollbackd/internal/escalate"
	"github.com/autorollbackd/autorollbackd/internal/incident"
	"github.com/autorollbackd/autorollbackd/internal/kinds"
	"github.com/autorollbackd/autorollbackd/internal/policy"
	"github.com/autorollbackd/autorollbackd/internal/testenv"
	"github.com/autorollbackd/autorollbackd/internal/verify"
	"github.com/autorollbackd/autorollbackd/internal/webhook"
	"github.com/autorollbackd/autorollbackd/internal/workload"
)

// A non-critical alert opens a fix-forward incident; a service_down alert on
// the same workload minutes later must roll back, not just join it.
func TestRollbackDecisionTakesOverAFixForwardIncident(t *testing.T) {
	f := newFixture(t, optedIn, nil)
	e := f.startEngine(t, policy.DefaultConfig(), 1)
	ctx := context.Background()
	slow := firing(f.ns, "non-critical", time.Now(), map[string]string{"impact": "non_critical", "alertname": "EventServiceSlow"})
	if _, err := e.Accept(ctx, slow); err != nil {
		t.Fatal(err)
	}
	first := e.waitIncident(t, slow, incident.StateEscalated)
	if first.Decision.Outcome != policy.OutcomeFixForward {
		t.Fatalf("first decision %s, want fix_forward", first.Decision.Outcome)
	}
	down := firing(f.ns, "down", time.Now(), map[string]string{"impact": "service_down"})
	if _, err := e.Accept(ctx, down); err != nil {
		t.Fatal(err)
	}
	inc := e.waitIncident(t, down, incident.StateResolved)
	if inc.ID != first.ID {
		t.Fatalf("the service_down alert opened %s; want it to join %s", inc.ID, first.ID)
	}
	if inc.Decision.Outcome != policy.OutcomeRollback || len(inc.Actions) != 1 || inc.Actions[0].Result == nil ||
		inc.Actions[0].Result.Outcome != actuator.OutcomeApplied {
		t.Fatalf("decision %s, actions %+v; want the incident to take the rollback over and apply it\n%s", inc.Decision.Outcome, inc.Actions, inc.Render())
	}
	f.waitRevision(t, "3")
	if image, _ := f.image(t); image != "event-service:v1" {
		t.Fatalf("image = %s, want event-service:v1", image)
	}
}

// A second bad rollout that lands while the incident of the first is still
// open is a new episode: it gets an incident, and a rollback, of its own.
func TestNewerRolloutStartsANewEpisode(t *testing.T) {
	f := newFixture(t, optedIn, nil)
	e := f.startEngine(t, policy.DefaultConfig(), 1)
	ctx := context.Background()
	slow := firing(f.ns, "episode-1", time.Now(), map[string]string{"impact": "non_critical", "alertname": "EventServiceSlow"})
	if _, err := e.Accept(ctx, slow); err != nil {
		t.Fatal(err)
	}
	first := e.waitIncident(t, slow, incident.StateEscalated)
	f.rollout(t, "event-service:v3-bad", "3")
	down := firing(f.ns, "episode-2", time.Now(), map[string]string{"impact": "service_down"})
	if _, err := e.Accept(ctx, down); err != nil {
		t.Fatal(err)
	}
	inc := e.waitIncident(t, down, incident.StateResolved)
	if inc.ID == first.ID || inc.Revision != 3 {
		t.Fatalf("incident %s of revision %d; want a new one about revision 3 (the first is %s)", inc.ID, inc.Revision, first.ID)
	}
	if len(inc.Actions) != 1 || inc.Actions[0].Result == nil || inc.Actions[0].Result.From != 3 || inc.Actions[0].Result.To != 2 {
		t.Fatalf("actions %+v; want a rollback from 3 to 2\n%s", inc.Actions, inc.Render())
	}
}

// An alert back-dated by hours (here: it started before the rollout, which
// the policy escalates) must not page the whole ladder at once: the clock
// starts no earlier than the suspect rollout.
func TestClockStartsNoEarlierThanTheRollout(t *testing.T) {
	f := newFixture(t, optedIn, nil)
	e := f.startEngine(t, policy.DefaultConfig(), 1, func(_ *verify.Config, ec *escalate.Config, _ *Options) {
		ec.Ladder = []escalate.Step{
			{After: metav1.Duration{Duration: time.Second}, Level: "oncall", Notifiers: []string{"people"}},
			{After: metav1.Duration{Duration: 2 * time.Second}, Level: "lead", Notifiers: []string{"people"}},
			{After: metav1.Duration{Duration: time.Hour}, Level: "war_room", Notifiers: []string{"people"}},
		}
	})
	n := firing(f.ns, "back-dated", f.rolloutAt.Add(-3*time.Hour), map[string]string{"impact": "service_down"})
	if _, err := e.Accept(context.Background(), n); err != nil {
		t.Fatal(err)
	}
	var inc *incident.Incident
	testenv.Eventually(t, 30*time.Second, "the lead paged", func(ctx context.Context) (bool, string) {
		var err error
		if inc, err = e.incidentOf(ctx, n); err != nil {
			return false, err.Error()
		}
		return inc.PagedLevels()["lead"], inc.Render()
	})
	if inc.StartedAt.Before(f.rolloutAt.Truncate(time.Second)) {
		t.Errorf("clock started at %s, before the rollout at %s", inc.StartedAt, f.rolloutAt)
	}
	for _, p := range inc.Pages {
		if p.Level == "war_room" {
			t.Fatalf("the war room was paged for an alert back-dated by hours\n%s", inc.Render())
		}
	}
}

// A feature flag rollback arms the cooldown, and the restart it causes is
// not a fresh rollout: a later alert is not blamed on it.
func TestFlagRollbackArmsCooldownAndItsRestartIsNoRollout(t *testing.T) {
	f := newFixture(t, optedIn, map[string]string{kinds.AnnotationFeatureFlagConfigMap: "event-service-config", kinds.AnnotationFeatureFlags: "FEATURE_NEW_PRICING"})
	ctx := context.Background()
	if _, err := f.c.Client.CoreV1().ConfigMaps(f.ns).Create(ctx, &corev1.ConfigMap{
		ObjectMeta: metav1.ObjectMeta{Name: "event-service-config"},
		Data:       map[string]string{"FEATURE_NEW_PRICING": "true"},
	}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	e := f.startEngine(t, policy.DefaultConfig(), 1, allowFeatureFlags)
	n := firing(f.ns, "flag-cooldown", time.Now(), map[string]string{"impact": "critical_flow_broken", LabelFeatureFlag: "FEATURE_NEW_PRICING"})
	if _, err := e.Accept(ctx, n); err != nil {
		t.Fatal(err)
	}
	e.waitIncident(t, n, incident.StateResolved)
	f.waitRevision(t, "3")
	d, err := f.c.Client.AppsV1().Deployments(f.ns).Get(ctx, "event-service", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	rss, err := f.c.Client.AppsV1().ReplicaSets(f.ns).List(ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var owned []*appsv1.ReplicaSet
	for i := range rss.Items {
		owned = append(owned, &rss.Items[i])
	}
	w := workload.DeploymentFacts(d, owned)
	if w.LastAutoRollbackAt.IsZero() {
		t.Errorf("the flag rollback did not arm the cooldown: annotations %v", d.Annotations)
	}
	if w.Revision != 3 || !w.RolloutStartedAt.Equal(f.rolloutAt.Truncate(time.Second)) || !slices.Equal(w.Older, []int64{1}) {
		t.Errorf("facts: revision %d started %s, older %v; want revision 3 seen as the rollout of revision 2 (started %s), going back to 1",
			w.Revision, w.RolloutStartedAt, w.Older, f.rolloutAt)
	}
	again := firing(f.ns, "after-flag", time.Now(), map[string]string{"impact": "service_down"})
	if _, err := e.Accept(ctx, again); err != nil {
		t.Fatal(err)
	}
	if dec := e.waitDecision(t, again); dec.Outcome != policy.OutcomeEscalate || dec.Reason != policy.ReasonCooldown {
		t.Fatalf("decision after the flag rollback %s/%s, want escalate/cooldown\n%s", dec.Outcome, dec.Reason, dec)
	}
}

// A post-rollback task of the default phase runs right after the rollback,
// even when verification then fails: the state a rollback leaves behind
// needs cleaning either way.
func TestAfterActionTaskRunsWhenVerificationFails(t *testing.T) {
	f := newFixture(t, optedIn, map[string]string{kinds.AnnotationPostRollbackTasks: "flush-cache"})
	// The last known good never becomes ready: verification fails.
	f.rollout(t, "event-service:v1.2-unready", "3", unschedulable)
	f.rollout(t, "event-service:v3-bad", "4")
	e := f.startEngine(t, policy.DefaultConfig(), 1, shortClock(3*time.Second), func(_ *verify.Config, _ *escalate.Config, o *Options) {
		o.MaxRollbackDepth = 1
		o.Tasks = map[string]actuator.Task{"flush-cache": {Name: "flush-cache", Timeout: time.Minute, Job: batchv1.JobSpec{
			Template: corev1.PodTemplateSpec{Spec: corev1.PodSpec{RestartPolicy: corev1.RestartPolicyNever,
				Containers: []corev1.Container{{Name: "flush", Image: "redis:7"}}}}}}}
	})
	n := firing(f.ns, "task-on-failure", time.Now(), map[string]string{"impact": "service_down"})
	if _, err := e.Accept(context.Background(), n); err != nil {
		t.Fatal(err)
	}
	inc := e.waitIncident(t, n, incident.StateEscalated)
	if len(inc.Verifications) == 0 || inc.Verifications[0].Overall == verify.StatusPass {
		t.Fatalf("verifications %+v, want a failed one\n%s", inc.Verifications, inc.Render())
	}
	if len(inc.Tasks) != 1 || inc.Tasks[0].Name != "flush-cache" || inc.Tasks[0].Result != "succeeded" {
		t.Fatalf("tasks %+v; want flush-cache run after the rollback though verification failed\n%s", inc.Tasks, inc.Render())
	}
}

// A daemon that stopped right after the second rung's rollback, before
// recording it: the next one finds the rollback on the workload and records
// it applied, never "changed".
func TestLaterRungInterruptedBeforeItsRecordIsRecordedApplied(t *testing.T) {
	f := newFixture(t, optedIn, nil)
	f.rollout(t, "event-service:v3-bad", "3")
	stopped := f.startEngine(t, policy.DefaultConfig(), 0)
	ctx := context.Background()
	target := policy.Ref{Kind: policy.KindDeployment, Namespace: f.ns, Name: "event-service"}
	req := actuator.Request{Target: target, Incident: RolloutID(target, 3), Why: "the stopped attempt"}
	first, err := stopped.opts.Actor.Rollback(ctx, req, 3, 2)
	if err != nil || first.Outcome != actuator.OutcomeApplied {
		t.Fatalf("rung 0 = %+v, %v", first, err)
	}
	f.waitRevision(t, "4")
	if res, err := stopped.opts.Actor.Rollback(ctx, req, 4, 1); err != nil || res.Outcome != actuator.OutcomeApplied {
		t.Fatalf("rung 1 = %+v, %v", res, err)
	}
	f.waitRevision(t, "5")
	_, generation := f.image(t)

	startsAt := time.Now()
	inc := stopped.newIncident(&Record{Key: "interrupted-rung-1@1",
		Alert:  policy.Alert{Fingerprint: "interrupted-rung-1", StartsAt: startsAt, Labels: map[string]string{"alertname": "EventServiceDown"}},
		Target: target, ReceivedAt: startsAt,
		Decision: &policy.Decision{Outcome: policy.OutcomeRollback, Reason: policy.ReasonCriterionMet}},
		&policy.Workload{Revision: 3, Older: []int64{2, 1}}, startsAt)
	// Rung 0 is recorded, and its verification failed; rung 1 is not.
	inc.Actions = []incident.Action{{At: startsAt, Rung: 0, Kind: actuator.KindRollback, Result: &first}}
	inc.Verifications = []incident.Verification{{At: startsAt, Rung: 0, Overall: verify.StatusFail}}
	inc.Rung = 1
	if _, err := stopped.opts.Incidents.Create(ctx, inc); err != nil {
		t.Fatal(err)
	}
	e := f.startEngine(t, policy.DefaultConfig(), 1)
	inc = e.waitResolved(t, inc.ID)
	if len(inc.Actions) != 2 || inc.Actions[1].Result == nil || inc.Actions[1].Result.Outcome != actuator.OutcomeApplied ||
		!inc.Actions[1].Result.Resumed || inc.Actions[1].Result.To != 1 {
		t.Fatalf("actions = %+v; want rung 1's rollback to 1 recorded applied, resumed\n%s", inc.Actions, inc.Render())
	}
	if _, g := f.image(t); g != generation {
		t.Fatalf("the workload was written again: generation %d -> %d", generation, g)
	}
}

// A storm of escalations for one reason pages once, listing the workloads:
// with a budget of one rollback an hour, the first of five workloads rolls
// back and the other four escalate budget_exhausted in one page.
func TestStormOfEscalationsPagesOnce(t *testing.T) {
	f := newFixture(t, optedIn, nil)
	ctx := context.Background()
	names := []string{"event-service"}
	for i := range 4 {
		name := fmt.Sprintf("svc-%d", i)
		names = append(names, name)
		d := f.deployment.DeepCopy()
		d.ObjectMeta = metav1.ObjectMeta{Name: name, Namespace: f.ns, Labels: optedIn}
		d.Spec.Selector.MatchLabels = map[string]string{"app": name}
		d.Spec.Template.Labels = map[string]string{"app": name}
		d.Spec.Template.Spec.Containers[0].Image = "svc:v1"
		if _, err := f.c.Client.AppsV1().Deployments(f.ns).Create(ctx, d, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		testenv.Eventually(t, 30*time.Second, name+" at revision 1", func(ctx context.Context) (bool, string) {
			d, err := f.c.Client.AppsV1().Deployments(f.ns).Get(ctx, name, metav1.GetOptions{})
			return err == nil && d.Annotations[kinds.AnnotationDeploymentRevision] == "1", fmt.Sprint(err)
		})
		if _, err := f.c.Client.AppsV1().Deployments(f.ns).Patch(ctx, name, types.MergePatchType,
			[]byte(`{"spec":{"template":{"spec":{"containers":[{"name":"app","image":"svc:v2-bad"}]}}}}`), metav1.PatchOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	cfg := policy.DefaultConfig()
	cfg.Budget.GlobalPerHour = 1
	e := f.startEngine(t, cfg, 1, func(_ *verify.Config, ec *escalate.Config, o *Options) {
		o.PageGroupWait = 2 * time.Second
		ec.Ladder = []escalate.Step{{After: metav1.Duration{Duration: time.Hour}, Level: "oncall", Notifiers: []string{"people"}}}
	})
	for _, name := range names {
		testenv.Eventually(t, 30*time.Second, name+" at revision 2 in the cache", func(ctx context.Context) (bool, string) {
			w, err := e.opts.Cache.Facts(ctx, policy.Ref{Kind: policy.KindDeployment, Namespace: f.ns, Name: name})
			return err == nil && w != nil && w.Revision == 2, fmt.Sprint(err)
		})
	}
	var storm []*webhook.Notification
	for _, name := range names {
		n := firing(f.ns, "storm-"+name, time.Now(), map[string]string{"impact": "service_down", "deployment": name})
		if _, err := e.Accept(ctx, n); err != nil {
			t.Fatal(err)
		}
		storm = append(storm, n)
	}
	var escalated []*incident.Incident
	for _, n := range storm {
		testenv.Eventually(t, 30*time.Second, "the incident's page recorded", func(ctx context.Context) (bool, string) {
			inc, err := e.incidentOf(ctx, n)
			if err != nil {
				return false, err.Error()
			}
			if inc.Decision.Outcome == policy.OutcomeRollback {
				return true, ""
			}
			if len(inc.Pages) == 1 && !inc.Pages[0].Sending {
				escalated = append(escalated, inc)
				return true, ""
			}
			return false, inc.Render()
		})
	}
	if len(escalated) != 4 {
		t.Fatalf("%d escalations, want 4", len(escalated))
	}
	pages := e.messages.find("page")
	if len(pages) != 1 {
		t.Fatalf("the notifier got %d pages: %v; want one", len(pages), pages)
	}
	// Those that came within the group's wait are listed; the later ones
	// joined the page already sent.
	leaders := 0
	for _, inc := range escalated {
		p := inc.Pages[0]
		if len(p.Receivers) != 1 || p.Error != "" {
			t.Errorf("incident %s: page %+v, want it received by people", inc.ID, p)
		}
		if p.Group == "" {
			leaders++
			if !strings.Contains(fmt.Sprint(pages[0]["summary"]), inc.Target.Name) {
				t.Errorf("the page does not name its own workload %s: %v", inc.Target.Name, pages[0]["summary"])
			}
		}
	}
	if leaders != 1 {
		t.Errorf("%d incidents sent a page of their own, want 1", leaders)
	}
}

// incidentOf reads the incident of n's alert as it is now.
func (r *running) incidentOf(ctx context.Context, n *webhook.Notification) (*incident.Incident, error) {
	a := n.Alerts[0]
	rec, err := r.Record(ctx, AlertKey(policy.Alert{Fingerprint: a.Fingerprint, StartsAt: a.StartsAt}))
	if err != nil {
		return nil, err
	}
	if rec.Incident == "" {
		return nil, fmt.Errorf("no incident yet: %s", rec.state())
	}
	v, err := r.opts.Incidents.Get(ctx, rec.Incident)
	if err != nil {
		return nil, err
	}
	return v.Incident, nil
}

// The bad revision's pods are kept in the incident before the rollback
// replaces them.
func TestEvidenceIsKeptBeforeTheRollback(t *testing.T) {
	f := newFixture(t, optedIn, nil)
	ctx := context.Background()
	testenv.Eventually(t, 30*time.Second, "revision 2's pods available", func(ctx context.Context) (bool, string) {
		d, err := f.c.Client.AppsV1().Deployments(f.ns).Get(ctx, "event-service", metav1.GetOptions{})
		if err != nil {
			return false, err.Error()
		}
		s := d.Status
		return s.ObservedGeneration >= d.Generation && s.UpdatedReplicas == 2 && s.AvailableReplicas == 2 && s.Replicas == 2, fmt.Sprintf("%+v", s)
	})
	e := f.startEngine(t, policy.DefaultConfig(), 1)
	n := firing(f.ns, "evidence", time.Now(), map[string]string{"impact": "service_down"})
	if _, err := e.Accept(ctx, n); err != nil {
		t.Fatal(err)
	}
	inc := e.waitIncident(t, n, incident.StateResolved)
	ev := inc.Evidence
	if ev == nil || ev.Revision != 2 || ev.PodsFound != 2 || len(ev.Pods) != 2 {
		t.Fatalf("evidence %+v; want revision 2's two pods\n%s", ev, inc.Render())
	}
	rss, err := f.c.Client.AppsV1().ReplicaSets(f.ns).List(ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var hash string
	for _, rs := range rss.Items {
		if rs.Spec.Template.Spec.Containers[0].Image == "event-service:v2-bad" {
			hash = rs.Labels["pod-template-hash"]
		}
	}
	for _, p := range ev.Pods {
		if !strings.Contains(p.Name, hash) || p.Phase != corev1.PodRunning {
			t.Errorf("pod %s (%s): want a Running pod of the bad ReplicaSet (hash %s)", p.Name, p.Phase, hash)
		}
	}
	if !strings.Contains(inc.Render(), "evidence") {
		t.Errorf("incidents show does not print the evidence:\n%s", inc.Render())
	}
}

// Fixing forward, only the ladder's first level is paged: the runbook's
// clock is for a service that is down.
func TestFixForwardPagesOnlyTheFirstLevel(t *testing.T) {
	f := newFixture(t, optedIn, nil)
	e := f.startEngine(t, policy.DefaultConfig(), 1, func(_ *verify.Config, ec *escalate.Config, _ *Options) {
		// Both levels are due the moment the incident opens.
		ec.Ladder = []escalate.Step{
			{After: metav1.Duration{Duration: 0}, Level: "oncall", Notifiers: []string{"people"}},
			{After: metav1.Duration{Duration: time.Millisecond}, Level: "lead", Notifiers: []string{"people"}},
		}
	})
	n := firing(f.ns, "fix-forward-ladder", time.Now(), map[string]string{"impact": "non_critical"})
	if _, err := e.Accept(context.Background(), n); err != nil {
		t.Fatal(err)
	}
	var inc *incident.Incident
	testenv.Eventually(t, 30*time.Second, "on-call paged", func(ctx context.Context) (bool, string) {
		var err error
		if inc, err = e.incidentOf(ctx, n); err != nil {
			return false, err.Error()
		}
		return inc.PagedLevels()["oncall"], inc.Render()
	})
	// A page due in the same pass as on-call's would be recorded with it.
	if len(inc.Pages) != 1 || inc.Decision.Outcome != policy.OutcomeFixForward {
		t.Fatalf("pages %+v; want on-call only for a fix forward\n%s", inc.Pages, inc.Render())
	}
}

// Fixing forward under the owners' annotation, then the annotation goes (it
// expired, or they removed it): the next alert that calls for a rollback
// takes the incident over.
func TestRollbackAfterTheFixForwardAnnotationGoes(t *testing.T) {
	f := newFixture(t, optedIn, map[string]string{kinds.AnnotationFixForward: "true"})
	e := f.startEngine(t, policy.DefaultConfig(), 1)
	ctx := context.Background()
	first := firing(f.ns, "annotated", time.Now(), map[string]string{"impact": "service_down"})
	if _, err := e.Accept(ctx, first); err != nil {
		t.Fatal(err)
	}
	inc := e.waitIncident(t, first, incident.StateEscalated)
	if inc.Decision.Reason != policy.ReasonFixForwardAnnotation {
		t.Fatalf("first decision %s/%s, want fix_forward/fix_forward_annotation", inc.Decision.Outcome, inc.Decision.Reason)
	}
	if _, err := f.c.Client.AppsV1().Deployments(f.ns).Patch(ctx, "event-service", types.MergePatchType,
		[]byte(`{"metadata":{"annotations":{"autorollback.io/fix-forward":null}}}`), metav1.PatchOptions{}); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 10*time.Second, "the annotation gone from the cache", func(ctx context.Context) (bool, string) {
		w, err := e.opts.Cache.Facts(ctx, policy.Ref{Kind: policy.KindDeployment, Namespace: f.ns, Name: "event-service"})
		return err == nil && w != nil && w.Annotations[kinds.AnnotationFixForward] == "", fmt.Sprint(err)
	})
	second := firing(f.ns, "after-annotation", time.Now(), map[string]string{"impact": "service_down"})
	if _, err := e.Accept(ctx, second); err != nil {
		t.Fatal(err)
	}
	inc = e.waitIncident(t, second, incident.StateResolved)
	if inc.Decision.Outcome != policy.OutcomeRollback || len(inc.Actions) != 1 || len(inc.Alerts) != 2 {
		t.Fatalf("decision %s, %d actions, %d alerts; want the fix-forward incident taken over by one rollback\n%s",
			inc.Decision.Outcome, len(inc.Actions), len(inc.Alerts), inc.Render())
	}
	f.waitRevision(t, "3")
}

// The owners said they fix forward until a time; the time passes and the
// same alert still fires: the incident rolls back, with no new alert.
func TestRollbackWhenTheFixForwardAnnotationExpires(t *testing.T) {
	until := time.Now().Add(3 * time.Second).UTC().Format(time.RFC3339)
	f := newFixture(t, optedIn, map[string]string{kinds.AnnotationFixForward: until})
	e := f.startEngine(t, policy.DefaultConfig(), 1)
	n := firing(f.ns, "until", time.Now(), map[string]string{"impact": "service_down"})
	if _, err := e.Accept(context.Background(), n); err != nil {
		t.Fatal(err)
	}
	if d := e.waitDecision(t, n); d.Reason != policy.ReasonFixForwardAnnotation {
		t.Fatalf("first decision %s/%s, want fix_forward/fix_forward_annotation", d.Outcome, d.Reason)
	}
	inc := e.waitIncident(t, n, incident.StateResolved)
	if inc.Decision.Outcome != policy.OutcomeRollback || len(inc.Actions) != 1 || len(inc.Alerts) != 1 {
		t.Fatalf("decision %s, %d actions, %d alerts; want the same alert's incident rolled back once the annotation expired\n%s",
			inc.Decision.Outcome, len(inc.Actions), len(inc.Alerts), inc.Render())
	}
	f.waitRevision(t, "3")
}

// An incident whose alert resolves resolves its pages once: the resolution
// and everything it causes are done before the worker looks at the
// incident's state again.
func TestAlertResolvedResolvesPagesOnce(t *testing.T) {
	f := newFixture(t, optedIn, nil)
	e := f.startEngine(t, policy.DefaultConfig(), 1, func(_ *verify.Config, ec *escalate.Config, _ *Options) {
		ec.Ladder = []escalate.Step{{After: metav1.Duration{Duration: 0}, Level: "oncall", Notifiers: []string{"people"}}}
	})
	ctx := context.Background()
	n := firing(f.ns, "resolves", time.Now(), map[string]string{"impact": "non_critical"})
	if _, err := e.Accept(ctx, n); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 30*time.Second, "on-call paged", func(ctx context.Context) (bool, string) {
		inc, err := e.incidentOf(ctx, n)
		if err != nil {
			return false, err.Error()
		}
		return inc.PagedLevels()["oncall"], inc.Render()
	})
	resolved := firing(f.ns, "resolves", n.Alerts[0].StartsAt, map[string]string{"impact": "non_critical"})
	resolved.Alerts[0].Status, resolved.Alerts[0].EndsAt = "resolved", time.Now()
	if _, err := e.Accept(ctx, resolved); err != nil {
		t.Fatal(err)
	}
	inc := e.waitIncident(t, n, incident.StateResolved)
	if got := len(e.messages.find("resolve")); got != 1 {
		t.Fatalf("the notifier got %d resolves, want 1\n%s", got, inc.Render())
	}
}
