package verify

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"maps"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/autorollbackd/autorollbackd/internal/testenv"
)

// alertmanagerConfig routes every alert to a receiver that sends nothing:
// the test only reads Alertmanager's API.
const alertmanagerConfig = `route:
  receiver: nowhere
receivers:
  - name: nowhere
`

// startAlertmanager runs the test environment's Alertmanager. It skips
// under -short; otherwise a missing binary fails the test.
func startAlertmanager(t *testing.T) *testenv.Process {
	t.Helper()
	if testing.Short() {
		t.Skip("needs Alertmanager from the test environment; skipped in -short mode")
	}
	am, err := testenv.StartAlertmanager(t.Context(), t.TempDir(), alertmanagerConfig, "")
	if err != nil {
		t.Fatalf("start Alertmanager (run make testenv): %v", err)
	}
	t.Cleanup(func() {
		am.Stop()
		if t.Failed() {
			t.Logf("Alertmanager output:\n%s", am.Output())
		}
	})
	return am
}

// postJSON posts v to Alertmanager's API and fails t unless it answers 200.
func postJSON(t *testing.T, base, path string, v any) {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.Post(base+path, "application/json", bytes.NewReader(b))
	if err != nil {
		t.Fatalf("POST %s: %v", path, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("POST %s: %s %s", path, resp.Status, body)
	}
}

func postAlert(t *testing.T, base string, labels map[string]string, endsAt time.Time) {
	t.Helper()
	a := map[string]any{
		"labels":      labels,
		"annotations": map[string]string{"summary": "event-service is down"},
		"startsAt":    time.Now().Add(-time.Minute).UTC().Format(time.RFC3339Nano),
	}
	if !endsAt.IsZero() {
		a["endsAt"] = endsAt.UTC().Format(time.RFC3339Nano)
	}
	postJSON(t, base, "/api/v2/alerts", []any{a})
}

// TestAlertStateAlertmanager asks a real Alertmanager about an alert whose
// label values hold matcher syntax, quotes and backslashes: active, then
// silenced, then resolved, then with Alertmanager gone.
func TestAlertStateAlertmanager(t *testing.T) {
	am := startAlertmanager(t)
	base := "http://" + am.Addr

	labels := map[string]string{
		"alertname":  "EventServiceDown",
		"namespace":  "production",
		"deployment": "event-service",
		"severity":   "critical",
		"query":      `sum(rate(http_requests_total{code=~"5.."}[5m])) > 0.5`,
		"note":       `back\slash, {braces}, a "quote" and ünïcode`,
	}
	// The same alert from another instance: its labels include all of the
	// alert's, so the filter selects it too; it stays active throughout and
	// must not count.
	other := maps.Clone(labels)
	other["instance"] = "10.0.0.7:8080"
	postAlert(t, base, other, time.Time{})

	v, _ := alertVerifier(t, nil)
	q := AlertQuery{ExternalURL: base, Alerts: []AlertRef{{Labels: labels}}}
	waitFor := func(what string, want Status, message string) {
		t.Helper()
		testenv.Eventually(t, 30*time.Second, what, func(ctx context.Context) (bool, string) {
			r := v.AlertState(ctx, q)
			return r.Status == want && strings.Contains(r.Message, message), string(r.Status) + ": " + r.Message
		})
	}

	waitFor("the other instance's alert does not count", StatusPass, "No longer active in Alertmanager at "+base)

	postAlert(t, base, labels, time.Time{})
	waitFor("the posted alert is active", StatusFail, "1 of 1 alerts still active")

	// A silence hides the alert from notifications, not the condition.
	postJSON(t, base, "/api/v2/silences", map[string]any{
		"matchers":  []map[string]any{{"name": "alertname", "value": "EventServiceDown", "isRegex": false, "isEqual": true}},
		"startsAt":  time.Now().UTC().Format(time.RFC3339Nano),
		"endsAt":    time.Now().Add(time.Hour).UTC().Format(time.RFC3339Nano),
		"createdBy": "verify test",
		"comment":   "maintenance",
	})
	waitFor("the silenced alert is still active", StatusFail, "(suppressed since")

	postAlert(t, base, labels, time.Now().Add(-time.Second))
	waitFor("the resolved alert is no longer active", StatusPass, "No longer active in Alertmanager at "+base+": EventServiceDown{")

	am.Stop()
	r := v.AlertState(t.Context(), q)
	if r.Status != StatusInconclusive || !strings.Contains(r.Message, "Could not ask Alertmanager at "+base+" about 1 of 1 alerts: GET "+base+"/api/v2/alerts: ") {
		t.Errorf("AlertState() with Alertmanager stopped = %s: %s, want inconclusive", r.Status, r.Message)
	}
}
