//go:build helm

package engine

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/autorollbackd/autorollbackd/internal/actuator"
	"github.com/autorollbackd/autorollbackd/internal/incident"
	"github.com/autorollbackd/autorollbackd/internal/kinds"
	"github.com/autorollbackd/autorollbackd/internal/policy"
	"github.com/autorollbackd/autorollbackd/internal/testenv"
)

// newHelmFixture installs the release event-service with the real helm
// binary at event-service:v1, opted in, and upgrades it to
// event-service:v2-bad: Helm revision 2, Deployment revision 2.
func newHelmFixture(t *testing.T) *fixture {
	t.Helper()
	c := testenv.Require(t)
	f := &fixture{c: c, ns: c.Namespace(t)}
	chart := testenv.HelmChart(t)
	labels, err := json.Marshal(optedIn)
	if err != nil {
		t.Fatal(err)
	}
	for i, image := range []string{"event-service:v1", "event-service:v2-bad"} {
		c.Helm(t, "upgrade", "--install", "event-service", chart, "--namespace", f.ns, "--set", "image="+image, "--set-json", "labels="+string(labels))
		f.waitRevision(t, fmt.Sprint(i+1))
	}
	ctx := context.Background()
	rss, err := c.Client.AppsV1().ReplicaSets(f.ns).List(ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for _, rs := range rss.Items {
		if rs.Annotations[kinds.AnnotationDeploymentRevision] == "2" {
			f.rolloutAt = rs.CreationTimestamp.Time
		}
	}
	if f.deployment, err = c.Client.AppsV1().Deployments(f.ns).Get(ctx, "event-service", metav1.GetOptions{}); err != nil {
		t.Fatal(err)
	}
	return f
}

// An alert on a Deployment of a Helm release, with policy.helm.mode
// rollback-release: the release is rolled back to its first revision, as
// the real helm history shows, the Deployment runs the first template again,
// verification passes, and a second alert rolls back nothing.
func TestHelmRollbackRelease(t *testing.T) {
	f := newHelmFixture(t)
	cfg := policy.DefaultConfig()
	cfg.Helm.Mode = policy.HelmRollbackRelease
	e := f.startEngine(t, cfg, 1)
	ctx := context.Background()

	n := firing(f.ns, "helm-1", time.Now(), map[string]string{"impact": "service_down"})
	if _, err := e.Accept(ctx, n); err != nil {
		t.Fatal(err)
	}
	inc := e.waitIncident(t, n, incident.StateResolved)
	want := actuator.ReleaseRollback{Namespace: f.ns, Name: "event-service", From: 2, To: 1, Revision: 3}
	if len(inc.Actions) != 1 || inc.Actions[0].Result == nil || inc.Actions[0].Result.Outcome != actuator.OutcomeApplied ||
		inc.Actions[0].Result.Release == nil || *inc.Actions[0].Result.Release != want {
		t.Fatalf("actions = %+v; want one applied release rollback %v\n%s", inc.Actions, want, inc.Render())
	}
	if msg := inc.Actions[0].Result.Message; !strings.Contains(msg, "rolled back Helm release "+want.String()) {
		t.Errorf("action message %q does not name the release rollback", msg)
	}
	hist := f.c.HelmHistory(t, f.ns, "event-service")
	if len(hist) != 3 || hist[2].Description != "Rollback to 1" || hist[2].Status != "deployed" || hist[1].Status != "superseded" {
		t.Fatalf("helm history = %+v; want revision 3 deployed as \"Rollback to 1\", revision 2 superseded", hist)
	}
	if image, _ := f.image(t); image != "event-service:v1" {
		t.Fatalf("image %s after the rollback; want event-service:v1", image)
	}

	other := firing(f.ns, "helm-2", time.Now(), map[string]string{"impact": "service_down"})
	if r, err := e.Accept(ctx, other); err != nil || r.Accepted != 1 {
		t.Fatalf("second alert: %+v, %v", r, err)
	}
	if d := e.waitDecision(t, other); d.Outcome == policy.OutcomeRollback {
		t.Fatalf("second alert decided a second rollback:\n%s", d)
	}
	if hist := f.c.HelmHistory(t, f.ns, "event-service"); len(hist) != 3 {
		t.Fatalf("helm history after the second alert = %+v; want still 3 revisions", hist)
	}
	if image, _ := f.image(t); image != "event-service:v1" {
		t.Fatalf("image %s after the second alert; want event-service:v1", image)
	}
}

// With the default policy.helm.mode undo-workload, the workload alone is
// undone, Helm's history is left as it was, and the action's message and
// the announcement say that the release still records the bad version.
func TestHelmUndoWorkloadAnnouncesDrift(t *testing.T) {
	f := newHelmFixture(t)
	e := f.startEngine(t, policy.DefaultConfig(), 1)
	n := firing(f.ns, "helm-drift-1", time.Now(), map[string]string{"impact": "service_down"})
	if _, err := e.Accept(context.Background(), n); err != nil {
		t.Fatal(err)
	}
	inc := e.waitIncident(t, n, incident.StateResolved)
	if len(inc.Actions) != 1 || inc.Actions[0].Result == nil || inc.Actions[0].Result.Outcome != actuator.OutcomeApplied ||
		inc.Actions[0].Result.Release != nil {
		t.Fatalf("actions = %+v; want one applied undo of the workload\n%s", inc.Actions, inc.Render())
	}
	drift := "part of Helm release " + f.ns + "/event-service, whose history still records the rolled-back version as deployed"
	if msg := inc.Actions[0].Result.Message; !strings.Contains(msg, drift) {
		t.Errorf("action message %q does not announce the drift", msg)
	}
	if image, _ := f.image(t); image != "event-service:v1" {
		t.Fatalf("image %s after the undo; want event-service:v1", image)
	}
	if hist := f.c.HelmHistory(t, f.ns, "event-service"); len(hist) != 2 || hist[1].Status != "deployed" {
		t.Fatalf("helm history = %+v; want the 2 revisions as they were", hist)
	}
	testenv.Eventually(t, 30*time.Second, "announcement of the drift", func(context.Context) (bool, string) {
		for _, m := range e.messages.find("announce") {
			if strings.Contains(fmt.Sprint(m), drift) {
				return true, ""
			}
		}
		return false, fmt.Sprint(e.messages.find("announce"))
	})
}
