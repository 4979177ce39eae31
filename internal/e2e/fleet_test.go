package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/autorollbackd/autorollbackd/internal/kinds"
	"github.com/autorollbackd/autorollbackd/internal/loop"
	"github.com/autorollbackd/autorollbackd/internal/policy"
	"github.com/autorollbackd/autorollbackd/internal/testenv"
)

// member is one cluster of the fleet with its daemon.
type member struct {
	name    string
	c       *testenv.Cluster
	daemon  *testenv.Process
	token   string
	records string
}

// TestFleetEachDaemonActsOnItsOwnCluster: two control planes, one daemon
// each (cluster.name east and west, policy.clusterLabel cluster), and one
// Alertmanager routing by the cluster label, as one central Alertmanager
// serves a fleet. Both clusters run the same workload in the same
// namespace at the same bad revision. An alert about east rolls back
// east's workload only; west's daemon, sent east's alert all the same (a
// route that sends everything everywhere), ignores it with other_cluster
// and changes nothing; then west's own alert rolls back west's.
func TestFleetEachDaemonActsOnItsOwnCluster(t *testing.T) {
	east := testenv.Require(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	west, err := testenv.Start(ctx)
	if err != nil {
		t.Fatalf("start a second control plane: %v", err)
	}
	t.Cleanup(west.Stop)

	bin := t.TempDir()
	if err := loop.Build(ctx, "../..", bin); err != nil {
		t.Fatal(err)
	}
	ns := east.Namespace(t)
	members := []*member{{name: "east", c: east}, {name: "west", c: west}}
	for _, m := range members {
		m.records = ns + "-records"
		for _, n := range []string{ns, m.records} {
			_, err := m.c.Client.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: n}}, metav1.CreateOptions{})
			if err != nil && !strings.Contains(err.Error(), "already exists") {
				t.Fatal(err)
			}
		}
		rolloutBad(t, m.c, ns)
		m.start(t, ctx, bin, ns)
	}

	am, err := testenv.StartAlertmanager(ctx, t.TempDir(), fmt.Sprintf(`route:
  receiver: nowhere
  group_by: [cluster, alertname, namespace, deployment]
  group_wait: 1s
  group_interval: 2s
  routes:
  - {matchers: ['cluster="east"'], receiver: east}
  - {matchers: ['cluster="west"'], receiver: west}
receivers:
- name: nowhere
- name: east
  webhook_configs:
  - {url: 'http://%s/webhook', send_resolved: true, http_config: {authorization: {credentials: %q}}}
- name: west
  webhook_configs:
  - {url: 'http://%s/webhook', send_resolved: true, http_config: {authorization: {credentials: %q}}}
`, members[0].daemon.Addr, members[0].token, members[1].daemon.Addr, members[1].token), "")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(am.Stop)

	alert := func(cluster string) map[string]any {
		return map[string]any{
			"labels": map[string]string{"alertname": "CheckoutDown", "cluster": cluster, "namespace": ns,
				"deployment": "checkout", "impact": "service_down", "severity": "critical"},
			"startsAt": time.Now().UTC().Format(time.RFC3339Nano),
		}
	}
	postAlerts(t, "http://"+am.Addr+"/api/v2/alerts", []map[string]any{alert("east")})
	waitImage(t, east, ns, "checkout:v1", "3")

	// West's daemon was never routed east's alert; sent it anyway, it
	// ignores it.
	n := map[string]any{
		"version": "4", "status": "firing", "receiver": "west", "groupKey": "{}:{cluster=\"east\"}",
		"groupLabels": map[string]string{}, "commonLabels": map[string]string{}, "commonAnnotations": map[string]string{},
		"externalURL": "http://alertmanager.example", "truncatedAlerts": 0,
		"alerts": []map[string]any{{
			"status": "firing", "labels": alert("east")["labels"], "annotations": map[string]string{},
			"startsAt": time.Now().UTC().Format(time.RFC3339), "endsAt": "0001-01-01T00:00:00Z",
			"generatorURL": "", "fingerprint": "0123456789abcdef",
		}},
	}
	receipt := members[1].post(t, n)
	if !strings.Contains(receipt, `"refused":1`) {
		t.Errorf("west's receipt for east's alert = %s, want it refused", receipt)
	}
	testenv.Eventually(t, time.Minute, "west counts east's alert as other_cluster", func(ctx context.Context) (bool, string) {
		v := members[1].metric(ctx, `autorollbackd_decisions_total{outcome="ignore",reason="other_cluster"}`)
		return v == "1", v
	})
	if d := deployment(t, west, ns); d.Spec.Template.Spec.Containers[0].Image != "checkout:v2-bad" || d.Annotations[kinds.AnnotationDeploymentRevision] != "2" {
		t.Fatalf("west's checkout was changed by east's alert: %s revision %s", d.Spec.Template.Spec.Containers[0].Image, d.Annotations[kinds.AnnotationDeploymentRevision])
	}

	postAlerts(t, "http://"+am.Addr+"/api/v2/alerts", []map[string]any{alert("west")})
	waitImage(t, west, ns, "checkout:v1", "3")
	if d := deployment(t, east, ns); d.Annotations[kinds.AnnotationDeploymentRevision] != "3" {
		t.Errorf("east's checkout at revision %s after west's alert, want 3 (one rollback)", d.Annotations[kinds.AnnotationDeploymentRevision])
	}
}

// rolloutBad creates the opted-in Deployment checkout at checkout:v1 and
// rolls it out to checkout:v2-bad, revision 2.
func rolloutBad(t *testing.T, c *testenv.Cluster, ns string) {
	t.Helper()
	ctx := t.Context()
	one := int32(1)
	d := &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: "checkout", Namespace: ns, Labels: map[string]string{policy.DefaultOptInLabel: "true"}},
		Spec: appsv1.DeploymentSpec{
			Replicas: &one,
			Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "checkout"}},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{"app": "checkout"}},
				Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "app", Image: "checkout:v1"}}},
			},
		},
	}
	if _, err := c.Client.AppsV1().Deployments(ns).Create(ctx, d, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	waitImage(t, c, ns, "checkout:v1", "1")
	patch := []byte(`{"spec":{"template":{"spec":{"containers":[{"name":"app","image":"checkout:v2-bad"}]}}}}`)
	if _, err := c.Client.AppsV1().Deployments(ns).Patch(ctx, "checkout", "application/strategic-merge-patch+json", patch, metav1.PatchOptions{}); err != nil {
		t.Fatal(err)
	}
	waitImage(t, c, ns, "checkout:v2-bad", "2")
}

func deployment(t *testing.T, c *testenv.Cluster, ns string) *appsv1.Deployment {
	t.Helper()
	d, err := c.Client.AppsV1().Deployments(ns).Get(t.Context(), "checkout", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// waitImage waits until checkout in c runs image at revision, rolled out.
func waitImage(t *testing.T, c *testenv.Cluster, ns, image, revision string) {
	t.Helper()
	testenv.Eventually(t, 2*time.Minute, fmt.Sprintf("checkout in %s at %s, revision %s", c.Name, image, revision), func(ctx context.Context) (bool, string) {
		d, err := c.Client.AppsV1().Deployments(ns).Get(ctx, "checkout", metav1.GetOptions{})
		if err != nil {
			return false, err.Error()
		}
		got, rev := d.Spec.Template.Spec.Containers[0].Image, d.Annotations[kinds.AnnotationDeploymentRevision]
		return got == image && rev == revision && d.Status.ObservedGeneration >= d.Generation && d.Status.UpdatedReplicas == *d.Spec.Replicas,
			fmt.Sprintf("%s revision %s", got, rev)
	})
}

// start runs the member's daemon on its cluster.
func (m *member) start(t *testing.T, ctx context.Context, bin, ns string) {
	t.Helper()
	dir := t.TempDir()
	m.token = "fleet-" + m.name
	files := map[string]string{"webhook-token": m.token, "api-token": "read-" + m.name}
	for f, v := range files {
		if err := os.WriteFile(filepath.Join(dir, f), []byte(v+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	addr, err := testenv.FreeAddr()
	if err != nil {
		t.Fatal(err)
	}
	cfg := fmt.Sprintf(`cluster:
  name: %s
server:
  listenAddress: %q
webhook:
  auth:
    bearerTokenFile: %s
api:
  auth:
    bearerTokenFile: %s
engine:
  namespace: %s
leaderElection:
  leaseDuration: 4s
  renewDeadline: 3s
  retryPeriod: 500ms
policy:
  clusterLabel: cluster
  namespaces:
    allow: [%s]
verify:
  pollInterval: 500ms
  rollout: {timeout: 60s}
  pods: {timeout: 60s}
  alertResolveGrace: 1s
`, m.name, addr, filepath.Join(dir, "webhook-token"), filepath.Join(dir, "api-token"), m.records, ns)
	file := filepath.Join(dir, "autorollbackd.yaml")
	if err := os.WriteFile(file, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	m.daemon, err = testenv.StartProcess(ctx, "autorollbackd-"+m.name, addr, "/readyz", filepath.Join(bin, "autorollbackd"),
		"serve", "--config", file, "--kubeconfig", m.c.Kubeconfig)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		m.daemon.Stop()
		if t.Failed() {
			t.Logf("autorollbackd %s output:\n%s", m.name, m.daemon.Output())
		}
	})
	testenv.Eventually(t, time.Minute, m.name+" leads", func(ctx context.Context) (bool, string) {
		v := m.metric(ctx, "autorollbackd_leader")
		return v == "1", v
	})
}

func (m *member) metric(ctx context.Context, series string) string {
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+m.daemon.Addr+"/metrics", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err.Error()
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	for _, line := range strings.Split(string(body), "\n") {
		if v, ok := strings.CutPrefix(line, series+" "); ok {
			return v
		}
	}
	return ""
}

// post sends a notification to the member's webhook and returns the body
// of its 200 answer.
func (m *member) post(t *testing.T, n any) string {
	t.Helper()
	b, err := json.Marshal(n)
	if err != nil {
		t.Fatal(err)
	}
	req, _ := http.NewRequestWithContext(t.Context(), http.MethodPost, "http://"+m.daemon.Addr+"/webhook", bytes.NewReader(b))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+m.token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("POST /webhook of %s: %s: %s", m.name, resp.Status, body)
	}
	return string(body)
}

func postAlerts(t *testing.T, url string, alerts []map[string]any) {
	t.Helper()
	b, err := json.Marshal(alerts)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.Post(url, "application/json", bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		body, _ := io.ReadAll(resp.Body)
		t.Fatalf("POST %s: %s: %s", url, resp.Status, body)
	}
}
