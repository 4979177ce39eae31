package chart

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	"github.com/autorollbackd/autorollbackd/internal/testenv"
)

// release is a chart installed on the local control plane.
type release struct {
	c         *testenv.Cluster
	name, ns  string
	sa        string // system:serviceaccount:<ns>:<name>
	kubeflags []string
	notes     string // the NOTES helm printed at install
}

// install installs the chart into ns and uninstalls it when the test ends.
// kwok turns the pods Running and Ready without pulling an image, so the
// Deployment becomes available with any image name.
func install(t *testing.T, c *testenv.Cluster, name, ns string, set ...string) *release {
	t.Helper()
	r := &release{c: c, name: name, ns: ns,
		sa:        fmt.Sprintf("system:serviceaccount:%s:%s-autorollbackd", ns, name),
		kubeflags: []string{"--kubeconfig", c.Kubeconfig, "--namespace", ns}}
	t.Cleanup(func() {
		if out, err := helm(t, 3*time.Minute, append([]string{"uninstall", name, "--wait", "--timeout", "2m"}, r.kubeflags...)...); err != nil {
			t.Errorf("helm uninstall %s: %v\n%s", name, err, out)
		}
	})
	out := r.upgrade(t, set...)
	_, r.notes, _ = strings.Cut(out, "NOTES:")
	return r
}

// upgrade installs or upgrades the release with the given --set values
// (or helm flags, such as --set-json=k=v, as they are), waits until the
// Deployment is available and returns helm's output. It gives no token: a
// real install generates them.
func (r *release) upgrade(t *testing.T, set ...string) string {
	t.Helper()
	args := append([]string{"upgrade", "--install", r.name, chartDir, "--wait", "--timeout", "3m",
		"--set", "image.repository=example.invalid/autorollbackd"}, r.kubeflags...)
	for _, s := range set {
		if strings.HasPrefix(s, "--") {
			args = append(args, s)
		} else {
			args = append(args, "--set", s)
		}
	}
	out, err := helm(t, 4*time.Minute, args...)
	if err != nil {
		t.Fatalf("helm %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	deploy := r.name + "-autorollbackd"
	testenv.Eventually(t, 2*time.Minute, "Deployment "+deploy+" available", func(ctx context.Context) (bool, string) {
		d, err := r.c.Client.AppsV1().Deployments(r.ns).Get(ctx, deploy, metav1.GetOptions{})
		if err != nil {
			return false, err.Error()
		}
		s := d.Status
		done := s.ObservedGeneration >= d.Generation && s.UpdatedReplicas == *d.Spec.Replicas &&
			s.AvailableReplicas == *d.Spec.Replicas && s.Replicas == *d.Spec.Replicas
		return done, fmt.Sprintf("%+v", s)
	})
	return out
}

// can asks the API server whether the release's ServiceAccount may do
// something: `kubectl auth can-i <args> --as <sa>`.
func (r *release) can(t *testing.T, args ...string) bool {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	out, err := r.c.Kubectl(ctx, append([]string{"auth", "can-i", "--as", r.sa}, args...)...)
	lines := strings.Split(strings.TrimSpace(out), "\n")
	switch answer := strings.TrimSpace(lines[len(lines)-1]); {
	case answer == "yes" && err == nil:
		return true
	case strings.HasPrefix(answer, "no"):
		return false // kubectl exits 1 for "no"
	}
	t.Fatalf("kubectl auth can-i %s: %v\n%s", strings.Join(args, " "), err, out)
	return false
}

// check asserts each permission, allowed or denied.
func (r *release) check(t *testing.T, allow bool, cases [][]string) {
	t.Helper()
	for _, args := range cases {
		if got := r.can(t, args...); got != allow {
			verb := "deny"
			if allow {
				verb = "allow"
			}
			t.Errorf("%s: want %s for `kubectl auth can-i %s`, got %v", r.sa, verb, strings.Join(args, " "), got)
		}
	}
}

// TestInstallNamespaced installs with rbac.scope=namespaced for one
// workload namespace and checks the ServiceAccount's permissions against
// the API server, then upgrades with feature flags and tasks and checks
// that they add exactly their permissions, that the generated tokens
// survive and that a config change rolls the pods.
func TestInstallNamespaced(t *testing.T) {
	t.Parallel()
	c := testenv.Require(t)
	rel, nsA, outside := c.Namespace(t), c.Namespace(t), c.Namespace(t)
	r := install(t, c, "ard-ns", rel,
		"rbac.scope=namespaced",
		"rbac.namespaces={"+nsA+"}",
		"rbac.secretNames={probe-token}")

	r.check(t, true, [][]string{
		{"patch", "deployments", "-n", nsA},
		{"get", "statefulsets", "-n", nsA},
		{"watch", "daemonsets", "-n", nsA},
		{"list", "replicasets", "-n", nsA},
		{"list", "controllerrevisions.apps", "-n", nsA},
		{"list", "pods", "-n", nsA},
		{"get", "pods", "--subresource=log", "-n", nsA},
		{"create", "events", "-n", nsA},
		{"patch", "events.events.k8s.io", "-n", nsA},
		{"create", "configmaps", "-n", rel},
		{"delete", "configmaps", "-n", rel},
		{"create", "leases.coordination.k8s.io", "-n", rel},
		{"update", "leases.coordination.k8s.io/ard-ns-autorollbackd", "-n", rel},
		{"get", "secrets/probe-token", "-n", rel},
	})
	r.check(t, false, [][]string{
		{"delete", "deployments", "-n", nsA},
		{"delete", "replicasets", "-n", nsA},
		{"update", "deployments", "-n", nsA},
		{"create", "deployments", "-n", nsA},
		{"delete", "configmaps", "-n", nsA},
		// Neither feature flags nor tasks are configured.
		{"patch", "configmaps", "-n", nsA},
		{"get", "configmaps", "-n", nsA},
		{"create", "jobs.batch", "-n", nsA},
		{"get", "jobs.batch", "-n", nsA},
		{"delete", "pods", "-n", nsA},
		{"get", "secrets", "-n", nsA},
		{"get", "secrets/probe-token", "-n", nsA},
		{"get", "secrets/other", "-n", rel},
		{"list", "secrets", "-n", rel},
		{"list", "secrets", "--all-namespaces"},
		{"patch", "deployments", "-n", outside},
		{"list", "pods", "-n", outside},
		{"get", "pods", "--subresource=log", "-n", outside},
		{"create", "pods", "--subresource=exec", "-n", nsA},
		{"create", "pods", "--subresource=portforward", "-n", nsA},
		{"create", "configmaps", "-n", outside},
		{"list", "deployments", "--all-namespaces"},
		{"update", "leases.coordination.k8s.io/someone-else", "-n", rel},
		{"create", "leases.coordination.k8s.io", "-n", nsA},
		{"patch", "deployments", "--subresource=scale", "-n", nsA},
	})

	// Upgrade with feature flags, a task and a changed configuration: the
	// tokens generated at install are kept (lookup), the pods roll
	// (checksum/config), and the new permissions are exactly the flag
	// ConfigMap by name and Jobs, in nsA only.
	ctx := context.Background()
	secrets := []string{"ard-ns-autorollbackd-webhook", "ard-ns-autorollbackd-api"}
	before := map[string]string{}
	for _, name := range secrets {
		s, err := c.Client.CoreV1().Secrets(rel).Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		before[name] = string(s.Data["token"])
		if len(s.Data["token"]) != 32 {
			t.Errorf("generated token of %s: %d bytes, want 32", name, len(s.Data["token"]))
		}
	}
	if before[secrets[0]] == before[secrets[1]] {
		t.Errorf("the webhook and the API got the same token")
	}
	deploy, err := c.Client.AppsV1().Deployments(rel).Get(ctx, "ard-ns-autorollbackd", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	r.upgrade(t,
		"rbac.scope=namespaced",
		"rbac.namespaces={"+nsA+"}",
		"rbac.secretNames={probe-token}",
		"featureFlags.enabled=true",
		"featureFlags.configMapNames={event-service-flags}",
		"--set-json=config.tasks=["+taskJSON+"]",
		"config.log.level=debug")
	for _, name := range secrets {
		s, err := c.Client.CoreV1().Secrets(rel).Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if string(s.Data["token"]) != before[name] {
			t.Errorf("helm upgrade replaced the generated token of %s; every copy of it would stop working", name)
		}
	}
	rolled, err := c.Client.AppsV1().Deployments(rel).Get(ctx, "ard-ns-autorollbackd", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	oldSum, newSum := deploy.Spec.Template.Annotations["checksum/config"], rolled.Spec.Template.Annotations["checksum/config"]
	if oldSum == newSum || rolled.Generation == deploy.Generation {
		t.Errorf("a config change did not roll the pods: checksum %s -> %s, generation %d -> %d", oldSum, newSum, deploy.Generation, rolled.Generation)
	}
	r.check(t, true, [][]string{
		{"get", "configmaps/event-service-flags", "-n", nsA},
		{"patch", "configmaps/event-service-flags", "-n", nsA},
		{"create", "jobs.batch", "-n", nsA},
		{"get", "jobs.batch", "-n", nsA},
	})
	r.check(t, false, [][]string{
		{"patch", "configmaps/kube-proxy", "-n", nsA},
		{"patch", "configmaps", "-n", nsA},
		{"update", "configmaps/event-service-flags", "-n", nsA},
		{"patch", "configmaps/event-service-flags", "-n", outside},
		{"create", "jobs.batch", "-n", outside},
		{"delete", "jobs.batch", "-n", nsA},
		{"create", "pods", "-n", nsA},
	})
}

// TestInstallCluster installs with rbac.scope=cluster into a namespace
// that --create-namespace creates, after the render: the tokens are
// generated all the same. Workloads in any namespace may be patched, never
// deleted; no ConfigMap outside the release namespace may be written and
// no Job created, without feature flags and tasks; Secrets stay out of
// reach.
func TestInstallCluster(t *testing.T) {
	t.Parallel()
	c := testenv.Require(t)
	anywhere := c.Namespace(t)
	rel := freshNamespace(t, c)
	r := install(t, c, "ard-cl", rel, "rbac.scope=cluster", "--create-namespace")
	want := slices.Concat(receiverSnippet("ard-cl-autorollbackd", rel, "ard-cl-autorollbackd-webhook"), readerSnippet(rel, "ard-cl-autorollbackd-api"))
	for _, w := range want {
		if !strings.Contains(r.notes, w) {
			t.Errorf("NOTES lack %q:\n%s", w, r.notes)
		}
	}
	for _, name := range []string{"ard-cl-autorollbackd-webhook", "ard-cl-autorollbackd-api"} {
		s, err := c.Client.CoreV1().Secrets(rel).Get(context.Background(), name, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if len(s.Data["token"]) != 32 {
			t.Errorf("generated token of %s: %d bytes, want 32", name, len(s.Data["token"]))
		}
	}

	r.check(t, true, [][]string{
		{"patch", "deployments", "-n", anywhere},
		{"patch", "statefulsets", "-n", "default"},
		{"list", "replicasets", "--all-namespaces"},
		{"watch", "deployments", "--all-namespaces"},
		{"list", "pods", "-n", anywhere},
		{"get", "pods", "--subresource=log", "-n", anywhere},
		{"create", "events", "-n", anywhere},
		{"create", "configmaps", "-n", rel},
		{"create", "leases.coordination.k8s.io", "-n", rel},
	})
	r.check(t, false, [][]string{
		{"delete", "deployments", "-n", anywhere},
		{"delete", "daemonsets", "-n", "default"},
		{"deletecollection", "deployments", "-n", anywhere},
		{"get", "secrets", "-n", anywhere},
		{"get", "secrets", "-n", rel},
		{"list", "secrets", "--all-namespaces"},
		{"create", "configmaps", "-n", anywhere},
		{"patch", "configmaps", "-n", anywhere},
		{"patch", "configmaps", "-n", "kube-system"},
		{"get", "configmaps", "-n", anywhere},
		{"create", "jobs.batch", "-n", anywhere},
		{"create", "jobs.batch", "-n", "kube-system"},
		{"create", "leases.coordination.k8s.io", "-n", anywhere},
		{"create", "clusterrolebindings"},
		{"create", "pods", "--subresource=exec", "-n", anywhere},
		{"list", "namespaces"},
	})
}

// freshNamespace names a namespace that does not exist yet and deletes it
// when t ends.
func freshNamespace(t *testing.T, c *testenv.Cluster) string {
	t.Helper()
	ns := fmt.Sprintf("t-fresh-%d", rand.Uint32())
	t.Cleanup(func() {
		err := c.Client.CoreV1().Namespaces().Delete(context.Background(), ns, metav1.DeleteOptions{})
		if err != nil && !apierrors.IsNotFound(err) {
			t.Logf("delete namespace %s: %v", ns, err)
		}
	})
	return ns
}

// TestServerDryRun sends every documented mode to the API server as a
// server-side dry run: validation and admission of each object, field
// values included, which rendering alone does not prove.
func TestServerDryRun(t *testing.T) {
	t.Parallel()
	c := testenv.Require(t)
	rel, a, b := c.Namespace(t), c.Namespace(t), c.Namespace(t)
	for _, m := range modes {
		if len(m.args) != 0 {
			continue // the monitoring.coreos.com APIs: the test cluster has no Prometheus Operator CRDs
		}
		t.Run(m.name, func(t *testing.T) {
			args := append([]string{"template", "ard-" + m.name, chartDir, "--namespace", rel}, m.helmArgs()...)
			if m.name == "namespaced" {
				args = append(args, "--set", "rbac.namespaces={"+a+","+b+"}")
			}
			out, err := helm(t, 2*time.Minute, args...)
			if err != nil {
				t.Fatalf("helm %s: %v\n%s", strings.Join(args, " "), err, out)
			}
			path := filepath.Join(t.TempDir(), "manifests.yaml")
			if err := os.WriteFile(path, []byte(out), 0o600); err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
			defer cancel()
			if out, err := c.Kubectl(ctx, "apply", "--dry-run=server", "-f", path); err != nil {
				t.Errorf("the API server refuses mode %s: %v\n%s", m.name, err, out)
			}
		})
	}
}

// TestInstallOpenShiftSecurityContext installs with the UID, GID and
// fsGroup left to the platform, as on OpenShift (ci/openshift-values.yaml),
// into a namespace that enforces the restricted Pod Security Standard, with
// a proxy in extraEnv, an extra argument and an extraObjects ConfigMap: the
// API server admits the pods, which run without a fixed UID, and creates
// the extra object. A pod the standard refuses is refused there, so the
// namespace does enforce it.
func TestInstallOpenShiftSecurityContext(t *testing.T) {
	t.Parallel()
	c := testenv.Require(t)
	rel := c.Namespace(t)
	ctx := context.Background()
	ns, err := c.Client.CoreV1().Namespaces().Get(ctx, rel, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if ns.Labels == nil {
		ns.Labels = map[string]string{}
	}
	ns.Labels["pod-security.kubernetes.io/enforce"] = "restricted"
	if _, err := c.Client.CoreV1().Namespaces().Update(ctx, ns, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}

	// The standard is enforced: a pod that may escalate its privileges is
	// refused.
	bad := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "escalates", Namespace: rel},
		Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "c", Image: "example.invalid/c",
			SecurityContext: &corev1.SecurityContext{AllowPrivilegeEscalation: ptr.To(true)}}}},
	}
	if _, err := c.Client.CoreV1().Pods(rel).Create(ctx, bad, metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}}); !apierrors.IsForbidden(err) {
		t.Fatalf("namespace %s does not enforce the restricted standard: a pod with allowPrivilegeEscalation got %v, want Forbidden", rel, err)
	}

	install(t, c, "ard-os", rel,
		"--values="+filepath.Join(chartDir, "ci", "openshift-values.yaml"),
		"extraEnv[0].name=HTTPS_PROXY", "extraEnv[0].value=http://proxy.example:3128",
		"extraArgs={--log-level=debug}",
		`--set-json=extraObjects=[{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"{{ .Release.Name }}-extra"},"data":{"namespace":"{{ .Release.Namespace }}"}}]`)

	pods, err := c.Client.CoreV1().Pods(rel).List(ctx, metav1.ListOptions{LabelSelector: "app.kubernetes.io/instance=ard-os"})
	if err != nil {
		t.Fatal(err)
	}
	if len(pods.Items) != 2 {
		t.Fatalf("want the 2 replicas' pods, got %d", len(pods.Items))
	}
	for _, p := range pods.Items {
		checkRestricted(t, p.Spec)
		psc, sc := p.Spec.SecurityContext, p.Spec.Containers[0].SecurityContext
		if psc == nil || sc == nil || psc.RunAsUser != nil || psc.RunAsGroup != nil || psc.FSGroup != nil || sc.RunAsUser != nil || sc.RunAsGroup != nil {
			t.Errorf("pod %s: want no fixed UID, GID or fsGroup, got pod %+v, container %+v", p.Name, psc, sc)
		}
		c0 := p.Spec.Containers[0]
		if !slices.Contains(c0.Args, "--log-level=debug") {
			t.Errorf("pod %s: args %q lack extraArgs", p.Name, c0.Args)
		}
		if !slices.ContainsFunc(c0.Env, func(e corev1.EnvVar) bool { return e.Name == "HTTPS_PROXY" && e.Value == "http://proxy.example:3128" }) {
			t.Errorf("pod %s: env %+v lacks HTTPS_PROXY", p.Name, c0.Env)
		}
	}
	cm, err := c.Client.CoreV1().ConfigMaps(rel).Get(ctx, "ard-os-extra", metav1.GetOptions{})
	if err != nil {
		t.Fatalf("the extraObjects ConfigMap: %v", err)
	}
	if cm.Data["namespace"] != rel {
		t.Errorf("the extraObjects ConfigMap: data %v, want namespace %s (rendered as a template)", cm.Data, rel)
	}
}
