package chart

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/util/retry"

	"github.com/autorollbackd/autorollbackd/internal/testenv"
)

// TestDaemonRunsWithOnlyTheChartsPermissions runs the daemon out of
// cluster as the chart's ServiceAccount, with a token of that account and
// nothing more, and has it roll back a bad rollout end to end: every verb
// the daemon uses is one the chart grants.
func TestDaemonRunsWithOnlyTheChartsPermissions(t *testing.T) {
	t.Parallel()
	c := testenv.Require(t)
	ctx := context.Background()
	rel, nsA := c.Namespace(t), c.Namespace(t)
	install(t, c, "ard-sa", rel, "rbac.scope=namespaced", "rbac.namespaces={"+nsA+"}")

	// A workload with a good and a bad revision.
	replicas := int32(2)
	api := c.Client.AppsV1().Deployments(nsA)
	_, err := api.Create(ctx, &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: "event-service", Labels: map[string]string{"autorollback.io/enabled": "true"}},
		Spec: appsv1.DeploymentSpec{
			Replicas: &replicas,
			Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "event-service"}},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{"app": "event-service"}},
				Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "app", Image: "event-service:v1"}}},
			},
		},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	waitRevision := func(rev string) {
		testenv.Eventually(t, 30*time.Second, "revision "+rev, func(ctx context.Context) (bool, string) {
			d, err := api.Get(ctx, "event-service", metav1.GetOptions{})
			if err != nil {
				return false, err.Error()
			}
			return d.Annotations["deployment.kubernetes.io/revision"] == rev, d.Annotations["deployment.kubernetes.io/revision"]
		})
	}
	waitRevision("1")
	err = retry.RetryOnConflict(retry.DefaultRetry, func() error {
		d, err := api.Get(ctx, "event-service", metav1.GetOptions{})
		if err != nil {
			return err
		}
		d.Spec.Template.Spec.Containers[0].Image = "event-service:v2-bad"
		_, err = api.Update(ctx, d, metav1.UpdateOptions{})
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	waitRevision("2")

	// A kubeconfig holding only a token of the chart's ServiceAccount.
	tok, err := c.Client.CoreV1().ServiceAccounts(rel).CreateToken(ctx, "ard-sa-autorollbackd",
		&authenticationv1.TokenRequest{Spec: authenticationv1.TokenRequestSpec{}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	ca := c.REST.CAData
	if len(ca) == 0 && c.REST.CAFile != "" {
		if ca, err = os.ReadFile(c.REST.CAFile); err != nil {
			t.Fatal(err)
		}
	}
	kubeconfig := filepath.Join(dir, "kubeconfig")
	write(t, kubeconfig, fmt.Sprintf(`apiVersion: v1
kind: Config
clusters:
- name: c
  cluster: {server: %q, certificate-authority-data: %s}
users:
- name: sa
  user: {token: %q}
contexts:
- name: sa
  context: {cluster: c, user: sa}
current-context: sa
`, c.REST.Host, base64.StdEncoding.EncodeToString(ca), tok.Status.Token))
	write(t, filepath.Join(dir, "token"), "hook-token\n")
	write(t, filepath.Join(dir, "api-token"), "read-token\n")
	addr, err := testenv.FreeAddr()
	if err != nil {
		t.Fatal(err)
	}
	// The configuration the chart renders, with local paths.
	write(t, filepath.Join(dir, "config.yaml"), fmt.Sprintf(`server: {listenAddress: %q}
webhook: {auth: {bearerTokenFile: %s}}
api: {auth: {bearerTokenFile: %s}}
engine: {namespace: %s}
leaderElection: {leaseName: ard-sa-autorollbackd}
policy: {namespaces: {allow: [%s]}}
`, addr, filepath.Join(dir, "token"), filepath.Join(dir, "api-token"), rel, nsA))
	bin := filepath.Join(dir, "autorollbackd")
	if out, err := exec.Command("go", "build", "-o", bin, "../../cmd/autorollbackd").CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
	startCtx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	d, err := testenv.StartProcess(startCtx, "autorollbackd", addr, "/readyz", bin, "serve", "--config", filepath.Join(dir, "config.yaml"), "--kubeconfig", kubeconfig)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		d.Stop()
		if t.Failed() {
			t.Logf("daemon output:\n%s", d.Output())
		}
	})
	body := fmt.Sprintf(`{"version":"4","status":"firing","receiver":"autorollbackd","groupKey":"{}:{alertname=\"EventServiceDown\"}",
"alerts":[{"status":"firing","labels":{"alertname":"EventServiceDown","impact":"service_down","namespace":%q,"deployment":"event-service"},
"annotations":{},"startsAt":%q,"fingerprint":"0000000000005a01"}]}`, nsA, time.Now().UTC().Format(time.RFC3339Nano))
	var code int
	testenv.Eventually(t, 60*time.Second, "the webhook accepts the alert (once leading)", func(ctx context.Context) (bool, string) {
		req, _ := http.NewRequestWithContext(ctx, http.MethodPost, "http://"+addr+"/webhook", strings.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Authorization", "Bearer hook-token")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return false, err.Error()
		}
		resp.Body.Close()
		code = resp.StatusCode
		return code == http.StatusOK, fmt.Sprint(code)
	})
	testenv.Eventually(t, 60*time.Second, "the incident resolves", func(ctx context.Context) (bool, string) {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+"/api/v1/incidents", nil)
		req.Header.Set("Authorization", "Bearer read-token")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return false, err.Error()
		}
		defer resp.Body.Close()
		var list []map[string]any
		if err := json.NewDecoder(resp.Body).Decode(&list); err != nil {
			return false, err.Error()
		}
		return len(list) == 1 && list[0]["state"] == "resolved", fmt.Sprint(list)
	})
	waitRevision("3")
	got, err := api.Get(ctx, "event-service", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if img := got.Spec.Template.Spec.Containers[0].Image; img != "event-service:v1" {
		t.Fatalf("image = %s, want event-service:v1", img)
	}
	if strings.Contains(d.Output(), "forbidden") {
		t.Errorf("the daemon met a Forbidden:\n%s", d.Output())
	}
}

func write(t *testing.T, file, body string) {
	t.Helper()
	if err := os.WriteFile(file, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
}
