package engine

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/common/model"

	"github.com/autorollbackd/autorollbackd/internal/escalate"
	"github.com/autorollbackd/autorollbackd/internal/incident"
	"github.com/autorollbackd/autorollbackd/internal/policy"
	"github.com/autorollbackd/autorollbackd/internal/testenv"
	"github.com/autorollbackd/autorollbackd/internal/verify"
	"github.com/autorollbackd/autorollbackd/internal/webhook"
)

// alertmanager runs the test environment's Alertmanager, routing to a
// receiver that sends nothing: the tests read and write its API only.
func alertmanager(t *testing.T) string {
	t.Helper()
	am, err := testenv.StartAlertmanager(t.Context(), t.TempDir(), "route:\n  receiver: nowhere\nreceivers:\n  - name: nowhere\n", "")
	if err != nil {
		t.Fatalf("start Alertmanager (run make testenv): %v", err)
	}
	t.Cleanup(am.Stop)
	return "http://" + am.Addr
}

// holdAlert posts the alert to Alertmanager, resolved when resolved is set.
func holdAlert(t *testing.T, base string, labels map[string]string, startsAt time.Time, resolved bool) {
	t.Helper()
	a := map[string]any{"labels": labels, "startsAt": startsAt.UTC().Format(time.RFC3339Nano)}
	if resolved {
		a["endsAt"] = time.Now().UTC().Format(time.RFC3339Nano)
	}
	b, err := json.Marshal([]any{a})
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.Post(base+"/api/v2/alerts", "application/json", bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("post alert: %s", resp.Status)
	}
}

// heldNotification is the webhook notification Alertmanager would send for
// the alert it holds: its fingerprint, labels and externalURL.
func heldNotification(f *fixture, base, name string, startsAt time.Time) (*webhook.Notification, map[string]string) {
	labels := map[string]string{"alertname": name, "namespace": f.ns, "deployment": "event-service", "impact": "service_down"}
	ls := model.LabelSet{}
	for k, v := range labels {
		ls[model.LabelName(k)] = model.LabelValue(v)
	}
	n := firing(f.ns, ls.Fingerprint().String(), startsAt, labels)
	n.ExternalURL = base
	return n, labels
}

// The runbook's "If Still Down": the rollback's pods are ready, but the
// alert still fires in Alertmanager after its grace, so the service is
// still down and the next rung is taken; and the last rung hands over to
// people.
func TestStillFiringAlertTakesTheNextRung(t *testing.T) {
	base := alertmanager(t)
	f := newFixture(t, optedIn, nil)
	f.rollout(t, "event-service:v3-bad", "3")
	e := f.startEngine(t, policy.DefaultConfig(), 1, func(_ *verify.Config, _ *escalate.Config, o *Options) {
		o.AlertGrace = 2 * time.Second
	})
	startsAt := time.Now()
	n, labels := heldNotification(f, base, "EventServiceStillDown", startsAt)
	holdAlert(t, base, labels, startsAt, false)
	if _, err := e.Accept(context.Background(), n); err != nil {
		t.Fatal(err)
	}
	inc := e.waitIncident(t, n, incident.StateEscalated)
	if len(inc.Actions) != 2 || inc.Actions[0].Result == nil || inc.Actions[0].Result.To != 2 ||
		inc.Actions[1].Result == nil || inc.Actions[1].Result.To != 1 {
		t.Fatalf("actions %+v; want a rollback to 2, then to 1 (N-2)\n%s", inc.Actions, inc.Render())
	}
	stillDown := 0
	for _, l := range inc.Timeline {
		if strings.Contains(l.What, "after the action: still down") {
			stillDown++
		}
	}
	if stillDown != 2 {
		t.Fatalf("the timeline says still down %d times, want after each rung\n%s", stillDown, inc.Render())
	}
	for _, v := range inc.Verifications {
		if v.Overall != verify.StatusFail {
			t.Errorf("verification of rung %d: %s, want fail", v.Rung, v.Overall)
		}
	}
}

// An alert that Alertmanager resolves within the grace is seen without
// waiting for its resolved notification: the rollback is verified.
func TestAlertResolvedInAlertmanagerIsSeen(t *testing.T) {
	base := alertmanager(t)
	f := newFixture(t, optedIn, nil)
	e := f.startEngine(t, policy.DefaultConfig(), 1, func(_ *verify.Config, _ *escalate.Config, o *Options) {
		o.AlertGrace = time.Minute
	})
	startsAt := time.Now()
	n, labels := heldNotification(f, base, "EventServiceRecovers", startsAt)
	holdAlert(t, base, labels, startsAt, false)
	if _, err := e.Accept(context.Background(), n); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 60*time.Second, "waiting on the alert", func(ctx context.Context) (bool, string) {
		inc, err := e.incidentOf(ctx, n)
		if err != nil {
			return false, err.Error()
		}
		return !inc.AlertsFiringSince.IsZero(), inc.Render()
	})
	holdAlert(t, base, labels, startsAt, true)
	inc := e.waitIncident(t, n, incident.StateResolved)
	if len(inc.Actions) != 1 || len(inc.Verifications) != 1 || inc.Verifications[0].Overall != verify.StatusPass {
		t.Fatalf("actions %+v, verifications %+v; want one rollback, verified\n%s", inc.Actions, inc.Verifications, inc.Render())
	}
	if !inc.Alerts[0].ResolvedAt.IsZero() {
		t.Errorf("the alert's resolved notification was never sent, yet it is recorded resolved")
	}
}
