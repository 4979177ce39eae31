package engine

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/autorollbackd/autorollbackd/internal/actuator"
	"github.com/autorollbackd/autorollbackd/internal/escalate"
	"github.com/autorollbackd/autorollbackd/internal/incident"
	"github.com/autorollbackd/autorollbackd/internal/kinds"
	"github.com/autorollbackd/autorollbackd/internal/policy"
	"github.com/autorollbackd/autorollbackd/internal/testenv"
	"github.com/autorollbackd/autorollbackd/internal/verify"
)

// unschedulable gives pods a node selector no node matches, so they never
// become Ready: a last known good that is not good after all.
func unschedulable(spec *corev1.PodSpec) {
	spec.NodeSelector = map[string]string{"autorollback.io/no-such-node": "true"}
}

// shortClock makes the runbook's clock seconds long: on-call after 1s, the
// lead after 2s, the war room after a minute.
func shortClock(timeout time.Duration) setup {
	return func(v *verify.Config, e *escalate.Config, _ *Options) {
		v.Rollout.Timeout, v.Pods.Timeout = metav1.Duration{Duration: timeout}, metav1.Duration{Duration: timeout}
		e.Ladder = []escalate.Step{
			{After: metav1.Duration{Duration: time.Second}, Level: "oncall", Notifiers: []string{"people"}},
			{After: metav1.Duration{Duration: 2 * time.Second}, Level: "lead", Notifiers: []string{"people"}},
			{After: metav1.Duration{Duration: time.Minute}, Level: "war_room", Notifiers: []string{"people"}},
		}
	}
}

// TestFailedVerificationGoesBackFurtherAndPagesOnTheClock is the runbook's
// "If Still Down": the last known good (revision 2) never becomes ready, so
// the incident goes to the revision before it (N-2), which recovers; people
// were paged on the clock meanwhile, and their pages are resolved.
func TestFailedVerificationGoesBackFurtherAndPagesOnTheClock(t *testing.T) {
	f := newFixture(t, optedIn, nil)
	f.rollout(t, "event-service:v1.1", "3")                        // good
	f.rollout(t, "event-service:v1.2-unready", "4", unschedulable) // last known good, yet never ready
	f.rollout(t, "event-service:v3-bad", "5")                      // the suspect
	e := f.startEngine(t, policy.DefaultConfig(), 1, shortClock(4*time.Second))
	n := firing(f.ns, "still-down", time.Now(), map[string]string{"impact": "service_down"})
	if _, err := e.Accept(context.Background(), n); err != nil {
		t.Fatal(err)
	}
	inc := e.waitIncident(t, n, incident.StateResolved)
	if !slices.Equal(inc.Targets, []int64{4, 3}) {
		t.Fatalf("targets = %v, want [4 3]\n%s", inc.Targets, inc.Render())
	}
	if len(inc.Actions) != 2 || inc.Actions[0].Result == nil || inc.Actions[0].Result.To != 4 ||
		inc.Actions[1].Result == nil || inc.Actions[1].Result.From != 6 || inc.Actions[1].Result.To != 3 {
		t.Fatalf("actions = %+v, want a rollback 5->4, then 6->3\n%s", inc.Actions, inc.Render())
	}
	if len(inc.Verifications) != 2 || inc.Verifications[0].Overall != verify.StatusFail || inc.Verifications[1].Overall != verify.StatusPass {
		t.Fatalf("verifications = %+v, want fail then pass\n%s", inc.Verifications, inc.Render())
	}
	var levels []string
	for _, p := range inc.Pages {
		levels = append(levels, p.Level)
		if p.Error != "" {
			t.Errorf("page %s failed: %s", p.Level, p.Error)
		}
		if due := map[string]time.Duration{"oncall": time.Second, "lead": 2 * time.Second}[p.Level]; p.At.Before(inc.StartedAt.Add(due)) {
			t.Errorf("page %s at +%s, before its time +%s", p.Level, p.At.Sub(inc.StartedAt), due)
		}
	}
	if !slices.Equal(levels, []string{"oncall", "lead"}) {
		t.Fatalf("paged %v, want on-call then lead, once each\n%s", levels, inc.Render())
	}
	pages, resolves := e.messages.find("page"), e.messages.find("resolve")
	if len(pages) != 2 || len(resolves) != 2 {
		t.Errorf("notifier received %d pages and %d resolves, want 2 and 2", len(pages), len(resolves))
	}
	f.waitRevision(t, "7")
	if image, _ := f.image(t); image != "event-service:v1.1" {
		t.Fatalf("image = %s, want event-service:v1.1", image)
	}
}

func TestPostRollbackTasks(t *testing.T) {
	job := func(nodeSelector map[string]string) batchv1.JobSpec {
		return batchv1.JobSpec{Template: corev1.PodTemplateSpec{Spec: corev1.PodSpec{
			RestartPolicy: corev1.RestartPolicyNever, NodeSelector: nodeSelector,
			Containers: []corev1.Container{{Name: "flush", Image: "redis:7", Command: []string{"redis-cli", "--scan", "--pattern", "event:*"}}},
		}}}
	}
	tasks := func(_ *verify.Config, _ *escalate.Config, o *Options) {
		o.Tasks = map[string]actuator.Task{
			"flush-cache": {Name: "flush-cache", Job: job(nil), Timeout: time.Minute},
			"stuck":       {Name: "stuck", Job: job(map[string]string{"no-such": "node"}), Timeout: 2 * time.Second, Phase: "afterRecovery"},
			"stuck-early": {Name: "stuck-early", Job: job(map[string]string{"no-such": "node"}), Timeout: 2 * time.Second},
		}
	}
	for _, tc := range []struct {
		name, tasks string
		state       incident.State
		results     []string
	}{
		{"succeeds and resolves", "flush-cache", incident.StateResolved, []string{"succeeded"}},
		{"fails after recovery and escalates", "flush-cache, stuck", incident.StateEscalated, []string{"succeeded", "failed"}},
		{"fails after the action, pages, and the incident still resolves", "stuck-early", incident.StateResolved, []string{"failed"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t, optedIn, map[string]string{kinds.AnnotationPostRollbackTasks: tc.tasks})
			e := f.startEngine(t, policy.DefaultConfig(), 1, tasks)
			n := firing(f.ns, "tasks-"+tc.name, time.Now(), map[string]string{"impact": "service_down"})
			if _, err := e.Accept(context.Background(), n); err != nil {
				t.Fatal(err)
			}
			inc := e.waitIncident(t, n, tc.state)
			var results []string
			for _, task := range inc.Tasks {
				results = append(results, task.Result)
			}
			if !slices.Equal(results, tc.results) {
				t.Fatalf("task results = %v, want %v\n%s", results, tc.results, inc.Render())
			}
			if failed := tc.results[len(tc.results)-1] == "failed"; failed {
				// The page follows the failure's record.
				testenv.Eventually(t, 10*time.Second, "one page about the failed task", func(context.Context) (bool, string) {
					pages := e.messages.find("page")
					return len(pages) == 1 && strings.Contains(fmt.Sprint(pages[0]["summary"]), "post-rollback task stuck"), fmt.Sprint(pages)
				})
			}
		})
	}
}

// A daemon that stopped while paging on-call left the page recorded as
// sending. The next attempt must not page on-call again through a notifier
// that would deliver it twice: it says so in an announcement, and the
// ladder goes on to the lead on its clock.
func TestInterruptedPageIsNotSentTwice(t *testing.T) {
	f := newFixture(t, optedIn, nil)
	e := f.startEngine(t, policy.DefaultConfig(), 1, shortClock(4*time.Second))
	ctx := context.Background()
	target := policy.Ref{Kind: policy.KindDeployment, Namespace: f.ns, Name: "event-service"}
	startsAt := time.Now()
	inc := e.newIncident(&Record{Key: "interrupted-page@1",
		Alert:  policy.Alert{Fingerprint: "interrupted-page", StartsAt: startsAt, Labels: map[string]string{"alertname": "EventServiceDown"}},
		Target: target, ReceivedAt: startsAt,
		Decision: &policy.Decision{Outcome: policy.OutcomeEscalate, Reason: "rule_matched", Message: "people decide"}},
		&policy.Workload{Revision: 2, Older: []int64{1}}, startsAt)
	inc.Pages = []incident.Page{{At: startsAt.Add(time.Second), Level: "oncall", Sending: true}}
	if _, err := e.opts.Incidents.Create(ctx, inc); err != nil {
		t.Fatal(err)
	}
	e.incidents().Add(inc.ID)
	testenv.Eventually(t, 30*time.Second, "the lead paged", func(ctx context.Context) (bool, string) {
		v, err := e.opts.Incidents.Get(ctx, inc.ID)
		if err != nil {
			return false, err.Error()
		}
		inc = v.Incident
		return inc.PagedLevels()["lead"], inc.Render()
	})
	if len(inc.Pages) != 2 || inc.Pages[0].Level != "oncall" || !inc.Pages[0].DeliveryUnknown || inc.Pages[0].Sending ||
		inc.Pages[1].Level != "lead" || inc.Pages[1].Sending || inc.Pages[1].Error != "" {
		t.Fatalf("pages = %+v; want on-call's delivery unknown, then the lead's delivered\n%s", inc.Pages, inc.Render())
	}
	var levels []string
	for _, m := range e.messages.find("page") {
		levels = append(levels, fmt.Sprint(m["level"]))
	}
	if !slices.Equal(levels, []string{"lead"}) {
		t.Fatalf("the notifier was paged for %v; want only the lead (on-call's page is never sent twice)", levels)
	}
	var told bool
	for _, m := range e.messages.find("announce") {
		told = told || strings.Contains(fmt.Sprint(m["summary"]), "the page of oncall was interrupted")
	}
	if !told {
		t.Errorf("no announcement of the interrupted page: %v", e.messages.find("announce"))
	}
}
