package webhook

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"maps"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/autorollbackd/autorollbackd/internal/testenv"
)

var update = flag.Bool("update", false, "rewrite testdata/firing.json and resolved.json from a live Alertmanager (needs the test environment: make testenv)")

// amConfig routes the test alerts to the daemon the way the chart's example
// does, so that the group key has the shape seen in production.
const amConfig = `route:
  receiver: default
  group_by: [alertname]
  group_wait: 1s
  group_interval: 1s
  repeat_interval: 1h
  routes:
    - matchers: ['impact=~"service_down"']
      receiver: autorollbackd
receivers:
  - name: default
  - name: autorollbackd
    webhook_configs:
      - url: %s
        send_resolved: true
        max_alerts: 1000
        http_config:
          authorization:
            credentials_file: %s
`

// TestAlertmanagerDelivers runs a real Alertmanager (the local test
// environment's, see docs/testing.md) against the handler with bearer
// authentication, fires two alerts and resolves them. With -update it also
// writes what Alertmanager sent to testdata/, which is how the fixtures were
// made.
func TestAlertmanagerDelivers(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a real Alertmanager: skipped in -short mode")
	}
	bin, err := testenv.BinDir()
	if err != nil {
		t.Fatal(err)
	}
	amBin := filepath.Join(bin, "alertmanager")
	if _, err := os.Stat(amBin); err != nil {
		t.Fatalf("the test environment has no alertmanager (run make testenv): %v", err)
	}

	dir := t.TempDir()
	token := filepath.Join(dir, "token")
	writeFile(t, token, []byte(testToken+"\n"))
	cfg := DefaultConfig()
	cfg.Auth.BearerTokenFile = token
	auth, err := NewAuthenticator(cfg.Auth, discard())
	if err != nil {
		t.Fatal(err)
	}
	defer auth.Close()
	got := make(chan *Notification, 10)
	h, err := NewHandler(cfg, auth, IntakeFunc(func(_ context.Context, n *Notification) (Receipt, error) {
		got <- n
		return Receipt{Accepted: len(n.Alerts.Firing()), Resolved: len(n.Alerts.Resolved())}, nil
	}), discard(), prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var bodies [][]byte
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, err := io.ReadAll(r.Body)
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		mu.Lock()
		bodies = append(bodies, b)
		mu.Unlock()
		r.Body = io.NopCloser(bytes.NewReader(b))
		h.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close) // after Alertmanager stops: cleanups run last first

	amAddr := freeAddr(t)
	configFile := filepath.Join(dir, "alertmanager.yml")
	writeFile(t, configFile, fmt.Appendf(nil, amConfig, srv.URL+"/webhook", token))
	var amLog syncBuffer
	cmd := exec.CommandContext(t.Context(), amBin,
		"--config.file="+configFile,
		"--storage.path="+filepath.Join(dir, "data"),
		"--web.listen-address="+amAddr,
		"--web.external-url=http://alertmanager.monitoring.svc:9093",
		"--cluster.listen-address=",
	)
	cmd.Stdout, cmd.Stderr = &amLog, &amLog
	cmd.WaitDelay = 5 * time.Second
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		if t.Failed() {
			t.Logf("alertmanager log:\n%s", amLog.String())
		}
	})
	amURL := "http://" + amAddr
	eventually(t, 30*time.Second, "Alertmanager to be ready", func() bool {
		resp, err := http.Get(amURL + "/-/ready")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	})

	startsAt := time.Now().UTC().Truncate(time.Second)
	postAlerts(t, amURL, startsAt, time.Time{})
	firing := waitNotification(t, got, "firing")
	postAlerts(t, amURL, startsAt, time.Now().UTC().Truncate(time.Second))
	resolved := waitNotification(t, got, "resolved")

	for _, n := range []*Notification{firing, resolved} {
		if want := `{}/{impact=~"service_down"}:{alertname="EventServiceDown"}`; n.GroupKey != want {
			t.Errorf("%s: groupKey %q, want %q", n.Status, n.GroupKey, want)
		}
		if len(n.Alerts) != 2 || n.TruncatedAlerts != 0 || n.Receiver != "autorollbackd" {
			t.Errorf("%s: %d alerts, %d truncated, receiver %q", n.Status, len(n.Alerts), n.TruncatedAlerts, n.Receiver)
		}
		for _, a := range n.Alerts {
			if !a.StartsAt.Equal(startsAt) || !strings.HasPrefix(a.GeneratorURL, "http://prometheus.monitoring.svc:9090/graph") {
				t.Errorf("%s: alert %+v", n.Status, a)
			}
		}
	}
	if firing.Alerts[0].Fingerprint != resolved.Alerts[0].Fingerprint {
		t.Errorf("fingerprints differ between firing and resolved: %s, %s", firing.Alerts[0].Fingerprint, resolved.Alerts[0].Fingerprint)
	}

	mu.Lock()
	defer mu.Unlock()
	if len(bodies) != 2 {
		t.Fatalf("Alertmanager sent %d requests, want 2", len(bodies))
	}
	for i, name := range []string{"firing.json", "resolved.json"} {
		if *update {
			writeFile(t, filepath.Join("testdata", name), bodies[i])
			continue
		}
		// The fixtures must keep the shape of what Alertmanager sends now.
		if g, w := jsonShape(t, bodies[i]), jsonShape(t, fixture(t, name)); !slices.Equal(g, w) {
			t.Errorf("testdata/%s is out of date: Alertmanager sends keys %q, the fixture has %q; rerun with -update", name, g, w)
		}
	}
}

// freeAddr returns a loopback address with a port free a moment ago.
func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// postAlerts sends two EventServiceDown alerts to Alertmanager's API, as
// Prometheus would, resolved when endsAt is not zero.
func postAlerts(t *testing.T, amURL string, startsAt, endsAt time.Time) {
	t.Helper()
	var alerts []map[string]any
	for _, pod := range []string{"event-service-7d9c6b5f4-abcde", "event-service-7d9c6b5f4-fghij"} {
		a := map[string]any{
			"labels": map[string]string{
				"alertname": "EventServiceDown", "impact": "service_down", "severity": "critical",
				"namespace": "events", "deployment": "event-service", "pod": pod,
			},
			"annotations": map[string]string{
				"summary":     "event-service is down",
				"description": "More than 50% of requests to event-service fail.",
				"runbook_url": "https://runbooks.example.com/service-rollback",
			},
			"startsAt":     startsAt,
			"generatorURL": "http://prometheus.monitoring.svc:9090/graph?g0.expr=sum+by+%28namespace%2C+deployment%29+%28rate%28http_requests_total%7Bcode%3D~%225..%22%7D%5B5m%5D%29%29+%3E+0.5&g0.tab=1",
		}
		if !endsAt.IsZero() {
			a["endsAt"] = endsAt
		}
		alerts = append(alerts, a)
	}
	b, err := json.Marshal(alerts)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.Post(amURL+"/api/v2/alerts", "application/json", bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	if body := readAll(t, resp.Body); resp.StatusCode != http.StatusOK {
		t.Fatalf("post alerts: %d %s", resp.StatusCode, body)
	}
}

func waitNotification(t *testing.T, got <-chan *Notification, status string) *Notification {
	t.Helper()
	timeout := time.After(30 * time.Second)
	for {
		select {
		case n := <-got:
			if n.Status == status {
				return n
			}
			t.Logf("skipping a %s notification while waiting for %s", n.Status, status)
		case <-timeout:
			t.Fatalf("no %s notification from Alertmanager within 30s", status)
		}
	}
}

// jsonShape lists the keys of a notification and of its first alert.
func jsonShape(t *testing.T, body []byte) []string {
	t.Helper()
	var n struct {
		Alerts []map[string]json.RawMessage `json:"alerts"`
	}
	var top map[string]json.RawMessage
	if err := json.Unmarshal(body, &top); err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(body, &n); err != nil || len(n.Alerts) == 0 {
		t.Fatalf("no alerts in %s: %v", body, err)
	}
	keys := slices.Sorted(maps.Keys(top))
	for _, k := range slices.Sorted(maps.Keys(n.Alerts[0])) {
		keys = append(keys, "alerts[]."+k)
	}
	return keys
}
