package engine

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/prometheus/alertmanager/template"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/autorollbackd/autorollbackd/internal/escalate"
	"github.com/autorollbackd/autorollbackd/internal/incident"
	"github.com/autorollbackd/autorollbackd/internal/policy"
	"github.com/autorollbackd/autorollbackd/internal/testenv"
	"github.com/autorollbackd/autorollbackd/internal/verify"
	"github.com/autorollbackd/autorollbackd/internal/webhook"
)

// deliver hands the alerts to the engine in notifications of batch alerts,
// sending a notification again when it is turned away, as Alertmanager does.
func (r *running) deliver(t *testing.T, alerts template.Alerts, batch int) {
	t.Helper()
	for len(alerts) > 0 {
		n := &webhook.Notification{Version: "4", Data: template.Data{Receiver: "autorollbackd", Status: alerts[0].Status,
			Alerts: alerts[:min(batch, len(alerts))]}}
		testenv.Eventually(t, time.Minute, "a batch of alerts accepted", func(ctx context.Context) (bool, string) {
			_, err := r.Accept(ctx, n)
			if err != nil && !errors.Is(err, webhook.ErrUnavailable) {
				t.Fatal(err)
			}
			return err == nil, fmt.Sprint(err)
		})
		alerts = alerts[len(n.Alerts):]
	}
}

// Item 8: the per-node alerts of a DaemonSet on thousands of nodes join one
// incident. Its ConfigMap stays far under the API server's 1 MiB, its
// people are paged once, and it resolves when the last alert resolves.
func TestManyAlertsJoinOneIncident(t *testing.T) {
	const (
		alerts = 4000
		// What the incident's ConfigMap may hold: 8 bytes an alert in
		// base64, MaxAlertsKept alerts whole, and the rest.
		bound = alerts*32/3 + 48<<10
	)
	// Managed by Argo CD: every alert escalates, and on-call is paged at
	// once.
	f := newFixture(t, optedIn, map[string]string{"argocd.argoproj.io/tracking-id": "events:apps/Deployment:ns/event-service"})
	// Five API calls an alert: the shared client's rate limit, not the
	// daemon, would set the pace.
	rc := rest.CopyConfig(f.c.REST)
	rc.QPS, rc.Burst = 1000, 2000
	client, err := kubernetes.NewForConfig(rc)
	if err != nil {
		t.Fatal(err)
	}
	fast := &fixture{c: &testenv.Cluster{REST: rc, Client: client}, ns: f.ns, deployment: f.deployment, rolloutAt: f.rolloutAt}
	e := fast.startEngine(t, policy.DefaultConfig(), 2, func(_ *verify.Config, ec *escalate.Config, o *Options) {
		o.MaxPending = 2 * alerts
		ec.Ladder = []escalate.Step{{After: metav1.Duration{Duration: time.Hour}, Level: "oncall", Notifiers: []string{"people"}}}
	})
	ctx := context.Background()
	start := time.Now()
	var firingAlerts template.Alerts
	for k := range alerts {
		node := fmt.Sprintf("node-%04d", k)
		firingAlerts = append(firingAlerts, template.Alert{
			Status: "firing", Fingerprint: fmt.Sprintf("%016x", k), StartsAt: start, GeneratorURL: "http://prometheus.local/graph",
			Labels: template.KV{"alertname": "EventAgentDown", "namespace": f.ns, "deployment": "event-service", "impact": "service_down",
				"node": node, "instance": node + ":9100"},
		})
	}
	e.deliver(t, firingAlerts, 100)
	first := firing(f.ns, fmt.Sprintf("%016x", 0), start, nil)
	var id string
	testenv.Eventually(t, 5*time.Minute, "every alert joined one incident", func(ctx context.Context) (bool, string) {
		inc, err := e.incidentOf(ctx, first)
		if err != nil {
			return false, err.Error()
		}
		id = inc.ID
		return inc.AlertsJoined == alerts, fmt.Sprintf("%d joined", inc.AlertsJoined)
	})
	if list, err := e.opts.Incidents.List(ctx, false); err != nil || len(list) != 1 {
		t.Fatalf("%d incidents, %v; want one", len(list), err)
	}

	resolved := make(template.Alerts, len(firingAlerts))
	for k, a := range firingAlerts {
		a.Status, a.EndsAt = "resolved", time.Now()
		resolved[k] = a
	}
	e.deliver(t, resolved, 100)
	var inc *incident.Incident
	testenv.Eventually(t, time.Minute, "the incident resolved", func(ctx context.Context) (bool, string) {
		v, err := e.opts.Incidents.Get(ctx, id)
		if err != nil {
			return false, err.Error()
		}
		inc = v.Incident
		return inc.State == incident.StateResolved, fmt.Sprintf("%s: %d of %d alerts resolved", inc.State, inc.AlertsResolved, inc.AlertsJoined)
	})
	if inc.AlertsJoined != alerts || inc.AlertsResolved != alerts || len(inc.Alerts) > incident.MaxAlertsKept {
		t.Errorf("%d joined, %d resolved, %d kept whole; want %d, %d, at most %d",
			inc.AlertsJoined, inc.AlertsResolved, len(inc.Alerts), alerts, alerts, incident.MaxAlertsKept)
	}
	if pages := e.messages.find("page"); len(pages) != 1 {
		t.Errorf("%d pages, want on-call paged once: %v", len(pages), pages)
	}
	cm, err := client.CoreV1().ConfigMaps(f.ns).Get(ctx, incident.ObjectName(id), metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	size := 0
	for k, v := range cm.Data {
		size += len(k) + len(v)
	}
	if size > bound {
		t.Errorf("the incident of %d alerts takes %d bytes, over %d", alerts, size, bound)
	}
	t.Logf("%d alerts joined and resolved in %s; the incident takes %d bytes", alerts, time.Since(start).Round(time.Second), size)
}

// A resolution written to the alert's record whose answer was lost (the
// request timed out after the API server stored it) is handed to the
// incident when Alertmanager sends it again.
func TestResolutionWhoseAnswerWasLostIsHandedOver(t *testing.T) {
	f := newFixture(t, optedIn, map[string]string{"argocd.argoproj.io/tracking-id": "events:apps/Deployment:ns/event-service"})
	e := f.startEngine(t, policy.DefaultConfig(), 1)
	ctx := context.Background()
	n := firing(f.ns, "lost-answer", time.Now(), map[string]string{"impact": "service_down"})
	if _, err := e.Accept(ctx, n); err != nil {
		t.Fatal(err)
	}
	e.waitIncident(t, n, incident.StateEscalated)
	key := AlertKey(policy.Alert{Fingerprint: n.Alerts[0].Fingerprint, StartsAt: n.Alerts[0].StartsAt})
	rec, cm, err := e.store.get(ctx, recordName(key))
	if err != nil {
		t.Fatal(err)
	}
	rec.ResolvedAt = time.Now()
	if _, err := e.store.update(ctx, rec, cm); err != nil {
		t.Fatal(err)
	}
	resolved := firing(f.ns, "lost-answer", n.Alerts[0].StartsAt, map[string]string{"impact": "service_down"})
	resolved.Alerts[0].Status, resolved.Alerts[0].EndsAt = "resolved", rec.ResolvedAt
	if r, err := e.Accept(ctx, resolved); err != nil || r.Resolved != 1 {
		t.Fatalf("Accept = %+v, %v", r, err)
	}
	if inc := e.waitIncident(t, n, incident.StateResolved); inc.AlertsResolved != 1 {
		t.Fatalf("%d resolutions counted, want 1\n%s", inc.AlertsResolved, inc.Render())
	}
}
