package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/util/retry"

	"github.com/autorollbackd/autorollbackd/internal/testenv"
)

// twoRevisions creates an opted-in Deployment in ns and rolls it out twice.
func twoRevisions(t *testing.T, c *testenv.Cluster, ns, name string) {
	t.Helper()
	ctx := context.Background()
	replicas := int32(1)
	d := &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns, Labels: map[string]string{"autorollback.io/enabled": "true"}},
		Spec: appsv1.DeploymentSpec{
			Replicas: &replicas,
			Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": name}},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{"app": name}},
				Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "app", Image: name + ":v1"}}},
			},
		},
	}
	api := c.Client.AppsV1().Deployments(ns)
	if _, err := api.Create(ctx, d, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	waitRevision(t, c, ns, name, "1")
	err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
		live, err := api.Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return err
		}
		live.Spec.Template.Spec.Containers[0].Image = name + ":v2-bad"
		_, err = api.Update(ctx, live, metav1.UpdateOptions{})
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	waitRevision(t, c, ns, name, "2")
}

func waitRevision(t *testing.T, c *testenv.Cluster, ns, name, rev string) {
	t.Helper()
	testenv.Eventually(t, 30*time.Second, name+" at revision "+rev, func(ctx context.Context) (bool, string) {
		d, err := c.Client.AppsV1().Deployments(ns).Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return false, err.Error()
		}
		r := d.Annotations["deployment.kubernetes.io/revision"]
		return r == rev, "revision " + r
	})
}

// payload is a firing notification, as Alertmanager sends it, about the
// deployment `name` in ns, starting now. Its fingerprint is derived from
// the one given, as 16 hex digits like Alertmanager's.
func payload(t *testing.T, ns, name, fingerprint string) string {
	t.Helper()
	raw, err := os.ReadFile("../../internal/webhook/testdata/firing.json")
	if err != nil {
		t.Fatal(err)
	}
	var n map[string]any
	if err := json.Unmarshal(raw, &n); err != nil {
		t.Fatal(err)
	}
	alerts := n["alerts"].([]any)
	a := alerts[0].(map[string]any)
	labels := a["labels"].(map[string]any)
	labels["namespace"], labels["deployment"] = ns, name
	sum := sha256.Sum256([]byte(fingerprint))
	a["fingerprint"] = hex.EncodeToString(sum[:8])
	a["startsAt"] = time.Now().UTC().Format(time.RFC3339Nano)
	n["alerts"] = []any{a}
	out, err := json.Marshal(n)
	if err != nil {
		t.Fatal(err)
	}
	return string(out)
}

func post(t *testing.T, url, token, body string) (int, string) {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// getAuth GETs url with the read token of the incidents API.
func getAuth(t *testing.T, url string) (int, string) {
	t.Helper()
	return getWith(t, url, testAPIToken)
}

func getWith(t *testing.T, url, token string) (int, string) {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// TestWebhookToResolvedIncident is the loop inside one daemon process: an
// Alertmanager notification in, the rollback, verification, the incident
// resolved and visible through the API and the command line.
func TestWebhookToResolvedIncident(t *testing.T) {
	c := testenv.Require(t)
	ns := c.Namespace(t)
	twoRevisions(t, c, ns, "event-service")
	// Namespaced, as the chart's namespaced mode runs it: informers for the
	// allowed namespace only.
	cfgFile := configFile(t, ns, fmt.Sprintf("policy:\n  namespaces:\n    allow: [%s]\n", ns))
	d := startDaemon(t, "--kubeconfig", c.Kubeconfig, "--config", cfgFile)
	url := "http://" + d.addr + "/webhook"
	testenv.Eventually(t, 60*time.Second, "/readyz turns ready", func(ctx context.Context) (bool, string) {
		code, body, err := get(ctx, "http://"+d.addr+"/readyz")
		return err == nil && code == http.StatusOK, fmt.Sprintf("%d %q %v", code, body, err)
	})
	// Ready is not leading: until it leads, the replica answers 503 so that
	// Alertmanager retries.
	testenv.Eventually(t, 30*time.Second, "the replica leads", func(context.Context) (bool, string) {
		v := metricValue(t, d.addr, "autorollbackd_leader")
		return v == "1", v
	})

	body := payload(t, ns, "event-service", "fp-e2e-1")
	if code, resp := post(t, url, "wrong-token", body); code != http.StatusUnauthorized {
		t.Fatalf("wrong token: %d %s, want 401", code, resp)
	}
	code, resp := post(t, url, testToken, body)
	if code != http.StatusOK || !strings.Contains(resp, `"accepted":1`) {
		t.Fatalf("POST /webhook = %d %s, want 200 with one accepted alert", code, resp)
	}
	// Alertmanager sends it again on the next group interval.
	code, resp = post(t, url, testToken, body)
	if code != http.StatusOK || !strings.Contains(resp, `"duplicates":1`) {
		t.Fatalf("re-sent POST /webhook = %d %s, want 200 with one duplicate", code, resp)
	}
	// The incident API, behind its own read credential, shows the
	// rollback verified and the incident resolved.
	api := "http://" + d.addr + "/api/v1/incidents"
	if code, _, _ := get(context.Background(), api); code != http.StatusUnauthorized {
		t.Errorf("GET /api/v1/incidents without credentials = %d, want 401", code)
	}
	if code, resp := getWith(t, api, testToken); code != http.StatusUnauthorized {
		t.Errorf("GET /api/v1/incidents with the webhook token = %d %s, want 401", code, resp)
	}
	if code, resp := post(t, url, testAPIToken, body); code != http.StatusUnauthorized {
		t.Errorf("POST /webhook with the read token = %d %s, want 401", code, resp)
	}
	var list []map[string]any
	testenv.Eventually(t, 60*time.Second, "the incident resolves", func(ctx context.Context) (bool, string) {
		code, body := getAuth(t, api)
		if code != http.StatusOK {
			return false, fmt.Sprint(code, body)
		}
		if err := json.Unmarshal([]byte(body), &list); err != nil {
			return false, err.Error()
		}
		return len(list) == 1 && list[0]["state"] == "resolved", body
	})
	id := fmt.Sprint(list[0]["id"])
	code, body = getAuth(t, api+"/"+id)
	if code != http.StatusOK || !strings.Contains(body, `"outcome":"applied"`) || !strings.Contains(body, `"overall":"pass"`) {
		t.Fatalf("GET /api/v1/incidents/%s = %d %s", id, code, body)
	}
	if code, _ := getAuth(t, api+"/no-such-incident"); code != http.StatusNotFound {
		t.Errorf("unknown incident = %d, want 404", code)
	}
	waitRevision(t, c, ns, "event-service", "3")
	// The command line prints the same incident as a timeline.
	out, err := exec.Command(binary, "incidents", "show", id, "--kubeconfig", c.Kubeconfig, "--config", cfgFile).CombinedOutput()
	if err != nil {
		t.Fatalf("incidents show: %v\n%s", err, out)
	}
	for _, want := range []string{"state:     resolved", "decision:  rollback (criterion_met)", "rolled back from revision 2 to 1", "resolved: verified recovered"} {
		if !strings.Contains(string(out), want) {
			t.Errorf("incidents show lacks %q:\n%s", want, out)
		}
	}
	out, err = exec.Command(binary, "incidents", "list", "--kubeconfig", c.Kubeconfig, "--config", cfgFile).CombinedOutput()
	if err != nil || !strings.Contains(string(out), id) {
		t.Errorf("incidents list: %v\n%s", err, out)
	}
	_, metrics, err := get(context.Background(), "http://"+d.addr+"/metrics")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		`autorollbackd_decisions_total{outcome="rollback",reason="criterion_met"} 1`,
		`autorollbackd_alerts_received_total{status="firing"} 2`,
		// The wrong token and the read token.
		`autorollbackd_webhook_requests_total{code="401"} 2`,
		// No credentials and the webhook token.
		`autorollbackd_api_auth_failures_total 2`,
		`autorollbackd_alerts_duplicate_total 1`,
	} {
		if !strings.Contains(metrics, want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
}

func TestExplainAgainstCluster(t *testing.T) {
	c := testenv.Require(t)
	ns := c.Namespace(t)
	twoRevisions(t, c, ns, "event-service")
	file := t.TempDir() + "/payload.json"
	if err := os.WriteFile(file, []byte(payload(t, ns, "event-service", "fp-explain")), 0o600); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(binary, "explain", "--payload", file, "--kubeconfig", c.Kubeconfig).CombinedOutput()
	if err != nil {
		t.Fatalf("explain: %v\n%s", err, out)
	}
	for _, want := range []string{
		"Workload facts read from the cluster",
		"target:   Deployment " + ns + "/event-service",
		"rule:     service-down (service_down)",
		"✓ previous revision: revision 1 is there to roll back to",
		"decision: rollback (reason criterion_met)",
	} {
		if !strings.Contains(string(out), want) {
			t.Errorf("explain output lacks %q:\n%s", want, out)
		}
	}
	// explain changes nothing: no record, the deployment still at revision 2.
	list, err := c.Client.CoreV1().ConfigMaps(ns).List(context.Background(), metav1.ListOptions{LabelSelector: "autorollback.io/record"})
	if err != nil || len(list.Items) != 0 {
		t.Fatalf("explain left %d records (%v)", len(list.Items), err)
	}
	waitRevision(t, c, ns, "event-service", "2")
}

func TestExplainWithoutCluster(t *testing.T) {
	// An alert that started now: the assumed rollout is then recent.
	file := t.TempDir() + "/payload.json"
	if err := os.WriteFile(file, []byte(payload(t, "events", "event-service", "fp-explain")), 0o600); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(binary, "explain", "--payload", file, "--kubeconfig", "/nonexistent/kubeconfig").CombinedOutput()
	if err != nil {
		t.Fatalf("explain: %v\n%s", err, out)
	}
	for _, want := range []string{"No cluster (", "Workload facts are ASSUMED", "decision: rollback (reason criterion_met)"} {
		if !strings.Contains(string(out), want) {
			t.Errorf("explain output lacks %q:\n%s", want, out)
		}
	}
}

func metricValue(t *testing.T, addr, series string) string {
	t.Helper()
	_, body, err := get(context.Background(), "http://"+addr+"/metrics")
	if err != nil {
		return err.Error()
	}
	for _, line := range strings.Split(body, "\n") {
		if v, ok := strings.CutPrefix(line, series+" "); ok {
			return v
		}
	}
	return "absent"
}

func TestConfigReload(t *testing.T) {
	c := testenv.Require(t)
	ns := c.Namespace(t)
	twoRevisions(t, c, ns, "event-service")
	cfg := configFile(t, ns, "")
	good, err := os.ReadFile(cfg)
	if err != nil {
		t.Fatal(err)
	}
	d := startDaemon(t, "--kubeconfig", c.Kubeconfig, "--config", cfg)
	testenv.Eventually(t, 60*time.Second, "ready", func(ctx context.Context) (bool, string) {
		code, _, err := get(ctx, "http://"+d.addr+"/readyz")
		return err == nil && code == http.StatusOK, fmt.Sprint(code, err)
	})
	const ok = "autorollbackd_config_last_reload_successful"

	// A bad file is rejected on SIGHUP; the running policy stays.
	if err := os.WriteFile(cfg, append(good, []byte("policy:\n  cooldown: soon\n")...), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := d.cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 30*time.Second, "bad reload reported", func(context.Context) (bool, string) {
		v := metricValue(t, d.addr, ok)
		return v == "0", v
	})
	// A good file with a frozen policy is picked up from the file change alone.
	if err := os.WriteFile(cfg, append(good, []byte("policy:\n  freeze: true\n")...), 0o600); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 30*time.Second, "good reload reported", func(context.Context) (bool, string) {
		v := metricValue(t, d.addr, ok)
		return v == "1", v
	})
	if code, resp := post(t, "http://"+d.addr+"/webhook", testToken, payload(t, ns, "event-service", "fp-frozen")); code != http.StatusOK {
		t.Fatalf("POST /webhook = %d %s", code, resp)
	}
	testenv.Eventually(t, 30*time.Second, "the reloaded policy decides: escalate, frozen", func(ctx context.Context) (bool, string) {
		v := metricValue(t, d.addr, `autorollbackd_decisions_total{outcome="escalate",reason="frozen"}`)
		return v == "1", v
	})
}
