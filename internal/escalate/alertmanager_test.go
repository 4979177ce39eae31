package escalate_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/alertmanager/template"
	"k8s.io/utils/clock"

	"github.com/autorollbackd/autorollbackd/internal/escalate"
	"github.com/autorollbackd/autorollbackd/internal/testenv"
)

// receiver is a webhook receiver behind Alertmanager: what people's
// pagers would get.
type receiver struct {
	mu  sync.Mutex
	got []template.Data
}

func (r *receiver) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	var d template.Data
	if err := json.NewDecoder(req.Body).Decode(&d); err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	r.mu.Lock()
	r.got = append(r.got, d)
	r.mu.Unlock()
}

// alert returns the last notification's alert of the incident at level,
// with its status.
func (r *receiver) alert(incident, level string) (template.Alert, string, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for i := len(r.got) - 1; i >= 0; i-- {
		for _, a := range r.got[i].Alerts {
			if a.Labels["incident"] == incident && a.Labels["level"] == level {
				return a, r.got[i].Receiver, true
			}
		}
	}
	return template.Alert{}, "", false
}

// startPagedAlertmanager runs the test environment's Alertmanager routing
// severity="critical" to a webhook receiver (the pager) and the rest to
// nowhere, resolved notifications included.
func startPagedAlertmanager(t *testing.T, pager string) *testenv.Process {
	t.Helper()
	if testing.Short() {
		t.Skip("needs Alertmanager from the test environment; skipped in -short mode")
	}
	cfg := fmt.Sprintf(`route:
  receiver: nowhere
  group_by: [incident, level]
  group_wait: 0s
  group_interval: 1s
  routes:
  - matchers: ['severity="critical"']
    receiver: pager
receivers:
- name: nowhere
- name: pager
  webhook_configs:
  - url: %s
    send_resolved: true
`, pager)
	am, err := testenv.StartAlertmanager(t.Context(), t.TempDir(), cfg, "")
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

// A page posted to a real Alertmanager reaches the receiver its routes
// choose, labelled with the incident, workload and level, and its
// resolution resolves it there. One of the two Alertmanagers given is
// down: the other takes the page.
func TestAlertmanagerPagesThroughRoutes(t *testing.T) {
	rcv := &receiver{}
	pager := httptest.NewServer(rcv)
	t.Cleanup(pager.Close)
	am := startPagedAlertmanager(t, pager.URL)
	down := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		http.Error(w, "unavailable", http.StatusServiceUnavailable)
	}))
	t.Cleanup(down.Close)

	cfg := escalate.DefaultConfig()
	cfg.Notifiers = []escalate.NotifierConfig{{
		Name: "alertmanager", Type: "alertmanager", Retries: intp(0),
		Alertmanager: &escalate.AlertmanagerConfig{
			URLs:   []string{down.URL, "http://" + am.Addr},
			Labels: map[string]string{"severity": "critical", "team": "sre"},
		},
	}}
	cfg.Ladder[1].Notifiers = []string{"alertmanager"}
	h := newHarness(t, cfg, func(o *escalate.Options) { o.Clock = clock.RealClock{} })
	m := pageMessage()
	m.Incident.Cluster = "prod-eu-1"
	d, err := h.Page(context.Background(), h.Ladder()[1], m)
	if err != nil || len(d.Receivers) != 1 {
		t.Fatalf("Page = %+v, %v; want delivered to alertmanager", d, err)
	}
	if !h.Deduplicates("alertmanager") {
		t.Error("Deduplicates(alertmanager) = false; Alertmanager folds a page sent again by its labels")
	}

	var a template.Alert
	testenv.Eventually(t, 30*time.Second, "the pager receives the page", func(context.Context) (bool, string) {
		got, recv, ok := rcv.alert(m.Incident.ID, "lead")
		a = got
		return ok && got.Status == "firing" && recv == "pager", fmt.Sprintf("%+v", got)
	})
	for k, want := range map[string]string{
		"alertname": escalate.DefaultAlertmanagerAlertname, "incident": m.Incident.ID, "level": "lead",
		"namespace": "production", "workload": "event-service", "workload_kind": "Deployment",
		"severity": "critical", "team": "sre", "cluster": "prod-eu-1",
	} {
		if a.Labels[k] != want {
			t.Errorf("label %s = %q, want %q (labels %v)", k, a.Labels[k], want, a.Labels)
		}
	}
	if a.Annotations["summary"] != m.Summary || !strings.Contains(a.Annotations["description"], "rolled back from revision 7 to revision 6") ||
		a.Annotations["rule"] != "service-down" || a.Annotations["criterion"] != "service_down" {
		t.Errorf("annotations = %v", a.Annotations)
	}
	if a.GeneratorURL != m.Incident.GeneratorURL || !a.StartsAt.Equal(m.Incident.StartedAt) {
		t.Errorf("generatorURL %q startsAt %s, want %q %s", a.GeneratorURL, a.StartsAt, m.Incident.GeneratorURL, m.Incident.StartedAt)
	}

	if err := h.Resolve(context.Background(), m.Incident, []string{"lead"}); err != nil {
		t.Fatalf("Resolve: %v", err)
	}
	testenv.Eventually(t, 30*time.Second, "the pager receives the resolution", func(context.Context) (bool, string) {
		got, _, ok := rcv.alert(m.Incident.ID, "lead")
		return ok && got.Status == "resolved", fmt.Sprintf("%+v", got)
	})
}

// Every Alertmanager down is a failed page that names each, and is counted.
func TestAlertmanagerAllDownFails(t *testing.T) {
	down := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		http.Error(w, "no cluster", http.StatusServiceUnavailable)
	}))
	t.Cleanup(down.Close)
	cfg := escalate.DefaultConfig()
	cfg.Notifiers = []escalate.NotifierConfig{{
		Name: "alertmanager", Type: "alertmanager", Retries: intp(1),
		Alertmanager: &escalate.AlertmanagerConfig{URLs: []string{down.URL + "/a", down.URL + "/b"}},
	}}
	cfg.Ladder[0].Notifiers = []string{"alertmanager"}
	h := newHarness(t, cfg)
	d, err := h.Page(context.Background(), h.Ladder()[0], pageMessage())
	if err == nil || len(d.Receivers) != 0 {
		t.Fatalf("Page = %+v, %v; want a failure", d, err)
	}
	for _, want := range []string{down.URL + "/a/api/v2/alerts", down.URL + "/b/api/v2/alerts", "503", "gave up after 2 attempts"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not name %q", err, want)
		}
	}
}

// Each Alertmanager of a cluster holds its own alerts, so the page goes to
// every one given, as Prometheus sends alerts, not only to the first that
// takes it.
func TestAlertmanagerPagesEveryAlertmanager(t *testing.T) {
	one, two := newFakeServer(t, reply{status: http.StatusOK}), newFakeServer(t, reply{status: http.StatusOK})
	cfg := escalate.DefaultConfig()
	cfg.Notifiers = []escalate.NotifierConfig{{
		Name: "alertmanager", Type: "alertmanager",
		Alertmanager: &escalate.AlertmanagerConfig{URLs: []string{one.URL, two.URL}},
	}}
	cfg.Ladder[0].Notifiers = []string{"alertmanager"}
	h := newHarness(t, cfg)
	if _, err := h.Page(context.Background(), h.Ladder()[0], pageMessage()); err != nil {
		t.Fatalf("Page: %v", err)
	}
	for i, srv := range []*fakeServer{one, two} {
		if got := srv.got(); len(got) != 1 || got[0].path != "/api/v2/alerts" {
			t.Errorf("Alertmanager %d got %d requests (%+v), want one POST /api/v2/alerts", i+1, len(got), got)
		}
	}
}
