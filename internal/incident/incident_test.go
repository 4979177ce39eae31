package incident

import (
	"encoding/json"
	"fmt"
	"slices"
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

// TestAlertLedgerRoundTrip: the counts and the ledger survive the record's
// JSON, so that an alert handed over again after a restart is still told
// apart.
func TestAlertLedgerRoundTrip(t *testing.T) {
	inc := &Incident{SchemaVersion: SchemaVersion, ID: "i", State: StateEscalated}
	for k := range 50 {
		inc.AddAlert(Alert{Key: fmt.Sprintf("k%d", k), Name: "Down"})
	}
	inc.resolveAlert("k3", time.Unix(0, 0))
	inc.resolveAlert("k30", time.Unix(0, 0))
	data, err := json.Marshal(inc)
	if err != nil {
		t.Fatal(err)
	}
	var back Incident
	if err := json.Unmarshal(data, &back); err != nil {
		t.Fatal(err)
	}
	if back.AlertsJoined != 50 || back.AlertsResolved != 2 || !slices.Equal(back.Ledger, inc.Ledger) {
		t.Fatalf("after JSON: %d joined, %d resolved, ledger equal %v", back.AlertsJoined, back.AlertsResolved, slices.Equal(back.Ledger, inc.Ledger))
	}
	for _, key := range []string{"k0", "k30", "k49"} {
		if !back.HasAlert(key) {
			t.Errorf("alert %s lost", key)
		}
	}
	if back.HasAlert("k50") {
		t.Error("an alert that never joined belongs to the incident")
	}
	if added, _ := back.AddAlert(Alert{Key: "k40"}); added {
		t.Error("an alert counted before the JSON was counted again")
	}
	if ok, _ := back.resolveAlert("k30", time.Unix(0, 0)); ok {
		t.Error("a resolution counted before the JSON was counted again")
	}
	for _, bad := range []string{`"alertLedger":"AAAA"`, `"alertLedger":"!"`, `"alertLedger":"AAAAAAAAAAIAAAAAAAAAAQ=="`} {
		if err := json.Unmarshal([]byte(`{"schemaVersion":3,`+bad+`}`), &back); err == nil {
			t.Errorf("%s decoded without error", bad)
		}
	}
}

// TestVersion2RecordIsRead: a record of schema version 2 kept every alert
// whole and no counts; it still answers for its alerts, and is counted
// when next worked on.
func TestVersion2RecordIsRead(t *testing.T) {
	v2 := `{"schemaVersion":2,"id":"deployment-production-event-service-r2-20261202t140000z","rollout":"deployment/production/event-service@2",
		"target":{"kind":"Deployment","namespace":"production","name":"event-service"},"revision":2,"state":"escalated",
		"startedAt":"2026-12-02T14:00:00Z","decision":{"outcome":"escalate","reason":"gitops_managed","target":{"kind":"Deployment","namespace":"production","name":"event-service"},"checks":null,"message":"escalate"},
		"rung":0,"alerts":[{"key":"a@1","fingerprint":"a","alertname":"EventServiceDown","startsAt":"2026-12-02T14:00:00Z","receivedAt":"2026-12-02T14:00:01Z","resolvedAt":"2026-12-02T14:05:00Z"},
		{"key":"b@1","fingerprint":"b","alertname":"EventServiceDown","startsAt":"2026-12-02T14:00:00Z","receivedAt":"2026-12-02T14:00:02Z"}],
		"timeline":[]}`
	var inc Incident
	if err := json.Unmarshal([]byte(v2), &inc); err != nil {
		t.Fatal(err)
	}
	if !inc.HasAlert("a@1") || !inc.HasAlert("b@1") || inc.HasAlert("c@1") {
		t.Error("the alerts of a version-2 record are not its own")
	}
	if inc.AllAlertsResolved() {
		t.Error("b@1 still fires, but every alert counts as resolved")
	}
	after, fx := Next(&inc, Event{Kind: EventAlertResolved, At: time.Date(2026, 12, 2, 14, 6, 0, 0, time.UTC), Key: "b@1"}, Rules{})
	if after.State != StateResolved || after.AlertsJoined != 2 || after.AlertsResolved != 2 || len(fx) == 0 {
		t.Fatalf("state %s, %d joined, %d resolved, effects %v", after.State, after.AlertsJoined, after.AlertsResolved, fx)
	}
	data, err := json.Marshal(after)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(data), `"alertsJoined":2`) {
		t.Errorf("written again without its counts: %s", data)
	}
}
