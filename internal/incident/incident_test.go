package incident

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"

	"github.com/autorollbackd/autorollbackd/internal/evidence"
	"github.com/autorollbackd/autorollbackd/internal/policy"
)

// TestRenderEvidence: the evidence of the suspect revision is printed after
// the timeline, with the log lines' escape sequences removed, and survives
// the incident's JSON encoding.
func TestRenderEvidence(t *testing.T) {
	start := time.Date(2026, 12, 2, 14, 0, 0, 0, time.UTC)
	target := policy.Ref{Kind: policy.KindDeployment, Namespace: "production", Name: "event-service"}
	inc := &Incident{ID: "deployment-production-event-service-r2-20261202t140000z", Target: target, State: StateActing, StartedAt: start, Plan: Plan{From: 2}}
	inc.Log(start.Add(3*time.Second), "Rolling back from revision 2 to 1.")
	without := inc.Render()
	if strings.Contains(without, "evidence") {
		t.Errorf("an incident without evidence renders an evidence section:\n%s", without)
	}

	inc.Evidence = &evidence.Snapshot{
		TakenAt: start.Add(2 * time.Second), Target: target, Revision: 2, Hash: "6b7f9c", PodsFound: 1,
		Pods: []evidence.Pod{{Name: "event-service-6b7f9c-abcde", Phase: corev1.PodRunning, Node: "node-1", Ready: true,
			Containers: []evidence.Container{{Name: "app", Image: "event-service:v2", Ready: true, State: "running",
				Logs: []evidence.Log{{Lines: []string{"\x1b[31mERROR\x1b[0m 500 GET /api/v1/events\x1b]0;title\x07"}}}}}}},
	}
	data, err := json.Marshal(inc)
	if err != nil {
		t.Fatal(err)
	}
	var back Incident
	if err := json.Unmarshal(data, &back); err != nil {
		t.Fatal(err)
	}
	got := back.Render()
	want := without + `evidence: revision 2 (pod-template-hash 6b7f9c), 1 of 1 pods, taken 2026-12-02T14:00:02Z
  pod event-service-6b7f9c-abcde: Running on node-1
    container app (event-service:v2): running
      log (1 line):
        | ERROR 500 GET /api/v1/events
`
	if got != want {
		t.Errorf("Render() =\n%s\nwant\n%s", got, want)
	}
}
