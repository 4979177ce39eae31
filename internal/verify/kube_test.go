package verify

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/util/retry"

	"github.com/autorollbackd/autorollbackd/internal/kinds"
	"github.com/autorollbackd/autorollbackd/internal/policy"
	"github.com/autorollbackd/autorollbackd/internal/testenv"
)

// These tests run the rollout and pods checks against the real local
// control plane, where kwok turns the pods of a workload Running and Ready.

// neverReadyLabel marks pods that must never become Ready.
const neverReadyLabel = "autorollback.io/test-never-ready"

// neverReadyStage is a kwok Stage that catches pending pods with
// neverReadyLabel before kwok's default pod-ready stage does (weight 1 beats
// the default's 0) and leaves them Running but not Ready, their container
// in CrashLoopBackOff. Having moved them out of Pending, no default stage
// matches them again.
const neverReadyStage = `apiVersion: kwok.x-k8s.io/v1alpha1
kind: Stage
metadata:
  name: autorollbackd-test-never-ready
spec:
  resourceRef:
    apiGroup: v1
    kind: Pod
  selector:
    matchLabels:
      ` + neverReadyLabel + `: "true"
    matchExpressions:
    - key: '.metadata.deletionTimestamp'
      operator: 'DoesNotExist'
    - key: '.status.phase'
      operator: 'In'
      values: ['Pending']
  weight: 1
  next:
    statusTemplate: |
      {{ $now := Now }}
      conditions:
      - lastTransitionTime: {{ $now | Quote }}
        status: "True"
        type: PodScheduled
      - lastTransitionTime: {{ $now | Quote }}
        status: "False"
        reason: ContainersNotReady
        type: Ready
      containerStatuses:
      {{ range .spec.containers }}
      - image: {{ .image | Quote }}
        name: {{ .name | Quote }}
        ready: false
        restartCount: 3
        state:
          waiting:
            reason: CrashLoopBackOff
      {{ end }}
      phase: Running
      startTime: {{ $now | Quote }}
`

var (
	neverReadyOnce sync.Once
	neverReadyHow  string // "stage" or "nodeSelector"
	neverReadyWhy  string // the reason the pods check names for such a pod
)

// neverReady makes the pods of a template never become Ready. With kwok's
// Stage CRD in the cluster it uses neverReadyStage; the test cluster of
// internal/testenv (kwokctl create cluster --runtime binary, no
// --enable-crds) has no Stage CRD, and then the pods get a nodeSelector no
// node matches, so that they stay Pending and unschedulable.
func neverReady(t *testing.T, c *testenv.Cluster) func(*corev1.PodTemplateSpec) {
	t.Helper()
	neverReadyOnce.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if _, err := c.Kubectl(ctx, "get", "stages"); err != nil {
			neverReadyHow, neverReadyWhy = "nodeSelector", "Unschedulable"
			return
		}
		f := filepath.Join(t.TempDir(), "stage.yaml")
		if err := os.WriteFile(f, []byte(neverReadyStage), 0o600); err != nil {
			t.Fatal(err)
		}
		if out, err := c.Kubectl(ctx, "apply", "-f", f); err != nil {
			t.Fatalf("create kwok stage: %v\n%s", err, out)
		}
		neverReadyHow, neverReadyWhy = "stage", "CrashLoopBackOff"
	})
	t.Logf("pods that never become ready: kwok %s", neverReadyHow)
	return func(p *corev1.PodTemplateSpec) {
		p.Labels[neverReadyLabel] = "true"
		if neverReadyHow == "nodeSelector" {
			p.Spec.NodeSelector = map[string]string{neverReadyLabel: "true"}
		}
	}
}

type kubeEnv struct {
	t  *testing.T
	c  *testenv.Cluster
	ns string
}

func newKubeEnv(t *testing.T) *kubeEnv {
	c := testenv.Require(t)
	t.Parallel()
	t.Cleanup(func() {
		if t.Failed() {
			diagnoseOnce.Do(func() { diagnose(t, c) })
		}
	})
	return &kubeEnv{t: t, c: c, ns: c.Namespace(t)}
}

var diagnoseOnce sync.Once

// diagnose logs, once per test binary, the node and the tail of the kwok
// controller's log: when the fake node is not Ready (kwok's heartbeats
// lagging on a loaded machine, or another test cluster on the host holding
// one of this cluster's ports), every pod stays Pending and these say why.
func diagnose(t *testing.T, c *testenv.Cluster) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	out, err := c.Kubectl(ctx, "get", "nodes", "-o", "yaml")
	t.Logf("diagnostics: kubectl get nodes (%v):\n%s", err, out)
	logs, _ := filepath.Glob(filepath.Join(filepath.Dir(c.Kubeconfig), "clusters", "*", "logs", "kwok-controller.log"))
	for _, f := range logs {
		b, err := os.ReadFile(f)
		if len(b) > 4000 {
			b = b[len(b)-4000:]
		}
		t.Logf("diagnostics: tail of %s (%v):\n%s", f, err, b)
	}
}

func (e *kubeEnv) ref(kind policy.Kind, name string) policy.Ref {
	return policy.Ref{Kind: kind, Namespace: e.ns, Name: name}
}

// verifier returns a Verifier with the rollout and pods checks only; a zero
// timeout disables a check.
func (e *kubeEnv) verifier(rollout, pods time.Duration) *Verifier {
	e.t.Helper()
	cfg := DefaultConfig()
	cfg.PollInterval = dur(200 * time.Millisecond)
	cfg.Rollout = WaitCheck{Enabled: rollout > 0, Timeout: dur(rollout)}
	cfg.Pods = WaitCheck{Enabled: pods > 0, Timeout: dur(pods)}
	v, err := New(Options{Config: cfg, Client: e.c.Client})
	if err != nil {
		e.t.Fatal(err)
	}
	return v
}

func podTemplate(app, image string) corev1.PodTemplateSpec {
	return corev1.PodTemplateSpec{
		ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{"app": app}},
		Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "app", Image: image}}},
	}
}

func (e *kubeEnv) createDeployment(name string, replicas int32, mutate ...func(*appsv1.Deployment)) *appsv1.Deployment {
	e.t.Helper()
	d := &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: e.ns},
		Spec: appsv1.DeploymentSpec{
			Replicas: &replicas,
			Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": name}},
			Template: podTemplate(name, "event-service:v1"),
		},
	}
	for _, m := range mutate {
		m(d)
	}
	d, err := e.c.Client.AppsV1().Deployments(e.ns).Create(e.t.Context(), d, metav1.CreateOptions{})
	if err != nil {
		e.t.Fatal(err)
	}
	return d
}

// updateDeployment changes the pod template, starting a new rollout. The
// controller writes the status meanwhile, hence the retry on conflict.
func (e *kubeEnv) updateDeployment(name string, mutate func(*corev1.PodTemplateSpec)) {
	e.t.Helper()
	deployments := e.c.Client.AppsV1().Deployments(e.ns)
	err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
		d, err := deployments.Get(e.t.Context(), name, metav1.GetOptions{})
		if err != nil {
			return err
		}
		mutate(&d.Spec.Template)
		_, err = deployments.Update(e.t.Context(), d, metav1.UpdateOptions{})
		return err
	})
	if err != nil {
		e.t.Fatalf("update deployment %s: %v", name, err)
	}
}

// replicaSetHash returns the pod-template-hash of the ReplicaSet with
// the given revision, once it exists.
func (e *kubeEnv) replicaSetHash(app, revision string) string {
	e.t.Helper()
	var hash string
	testenv.Eventually(e.t, 30*time.Second, "replicaset of "+app+" at revision "+revision, func(ctx context.Context) (bool, string) {
		list, err := e.c.Client.AppsV1().ReplicaSets(e.ns).List(ctx, metav1.ListOptions{LabelSelector: "app=" + app})
		if err != nil {
			return false, err.Error()
		}
		var seen []string
		for _, rs := range list.Items {
			seen = append(seen, rs.Name+"@"+rs.Annotations[kinds.AnnotationDeploymentRevision])
			if rs.Annotations[kinds.AnnotationDeploymentRevision] == revision {
				hash = rs.Labels[kinds.LabelPodTemplateHash]
				return true, ""
			}
		}
		return false, strings.Join(seen, ", ")
	})
	return hash
}

// waitPods waits until the pods with the selector number n and each
// satisfies cond, and returns their names.
func (e *kubeEnv) waitPods(selector string, n int, what string, cond func(*corev1.Pod) bool) []string {
	e.t.Helper()
	var names []string
	testenv.Eventually(e.t, 60*time.Second, fmt.Sprintf("%d pods %s %s", n, selector, what), func(ctx context.Context) (bool, string) {
		list, err := e.c.Client.CoreV1().Pods(e.ns).List(ctx, metav1.ListOptions{LabelSelector: selector})
		if err != nil {
			return false, err.Error()
		}
		names = names[:0]
		var seen []string
		for i := range list.Items {
			p := &list.Items[i]
			seen = append(seen, p.Name+" "+whyNotReady(p))
			if p.DeletionTimestamp == nil && cond(p) {
				names = append(names, p.Name)
			}
		}
		return len(names) == n, strings.Join(seen, "; ")
	})
	return names
}

func stuck(p *corev1.Pod) bool {
	return strings.Contains(whyNotReady(p), neverReadyWhy)
}

// results maps a Verify result list by check name.
func byCheck(t *testing.T, results []Result, want ...string) map[string]Result {
	t.Helper()
	m := map[string]Result{}
	var got []string
	for _, r := range results {
		m[r.Check] = r
		got = append(got, r.Check)
		t.Logf("%s: %s: %s", r.Check, r.Status, r.Message)
	}
	if strings.Join(got, ",") != strings.Join(want, ",") {
		t.Fatalf("checks %v, want %v", got, want)
	}
	return m
}

func expect(t *testing.T, r Result, status Status, message string) {
	t.Helper()
	if r.Status != status || r.Message != message {
		t.Errorf("%s = %s %q\nwant %s %q", r.Check, r.Status, r.Message, status, message)
	}
}

func TestKubeHealthyDeployment(t *testing.T) {
	e := newKubeEnv(t)
	v := e.verifier(60*time.Second, 60*time.Second)

	// Given a new Deployment, When verified at once, Then both checks wait
	// for the rollout and pass.
	e.createDeployment("web", 2)
	res := byCheck(t, v.Verify(t.Context(), e.ref(policy.KindDeployment, "web")), "rollout", "pods")
	hash1 := e.replicaSetHash("web", "1")
	expect(t, res["rollout"], StatusPass, `deployment "web" successfully rolled out`)
	expect(t, res["pods"], StatusPass, fmt.Sprintf("All 2 pods of the deployment at revision %s are Running and Ready (2 desired).", hash1))

	// When the template changes (as a rollback changes it), Then the pods
	// check judges the pods of the newest ReplicaSet.
	e.updateDeployment("web", func(p *corev1.PodTemplateSpec) { p.Spec.Containers[0].Image = "event-service:v2" })
	res = byCheck(t, v.Verify(t.Context(), e.ref(policy.KindDeployment, "web")), "rollout", "pods")
	hash2 := e.replicaSetHash("web", "2")
	if hash1 == hash2 {
		t.Fatalf("revisions 1 and 2 share the hash %s", hash1)
	}
	expect(t, res["rollout"], StatusPass, `deployment "web" successfully rolled out`)
	expect(t, res["pods"], StatusPass, fmt.Sprintf("All 2 pods of the deployment at revision %s are Running and Ready (2 desired).", hash2))
}

func TestKubeUnreadyDeploymentTimesOut(t *testing.T) {
	e := newKubeEnv(t)
	mutate := neverReady(t, e.c)
	e.createDeployment("stuck", 2, func(d *appsv1.Deployment) { mutate(&d.Spec.Template) })
	hash := e.replicaSetHash("stuck", "1")
	pods := e.waitPods("app=stuck", 2, "stuck ("+neverReadyWhy+")", stuck)

	const timeout = 3 * time.Second
	v := e.verifier(timeout, timeout)
	start := time.Now()
	res := byCheck(t, v.Verify(t.Context(), e.ref(policy.KindDeployment, "stuck")), "rollout", "pods")
	if took := time.Since(start); took < timeout || took > timeout+10*time.Second {
		t.Errorf("Verify took %s, want the timeout %s", took, timeout)
	}
	expect(t, res["rollout"], StatusFail,
		`Rollout not finished within 3s: Waiting for deployment "stuck" rollout to finish: 0 of 2 updated replicas are available...`)
	expect(t, res["pods"], StatusInconclusive, "Not run: rollout failed first.")

	// The pods check alone names the pods that are not ready.
	res = byCheck(t, e.verifier(0, timeout).Verify(t.Context(), e.ref(policy.KindDeployment, "stuck")), "pods")
	msg := res["pods"].Message
	wantPrefix := fmt.Sprintf("Pods not ready within 3s: 0 of 2 desired pods of the deployment at revision %s are Running and Ready; not ready: ", hash)
	if res["pods"].Status != StatusFail || !strings.HasPrefix(msg, wantPrefix) {
		t.Errorf("pods = %s %q\nwant fail, starting %q", res["pods"].Status, msg, wantPrefix)
	}
	for _, p := range pods {
		if !strings.Contains(msg, p+" (") {
			t.Errorf("pods message does not name not-ready pod %s: %q", p, msg)
		}
	}
	if strings.Count(msg, neverReadyWhy) != 2 {
		t.Errorf("pods message should say %s for both pods: %q", neverReadyWhy, msg)
	}
}

// TestKubeBadRolloutKeepsOldPodsReady is the case of a rollback that did
// not take: the old pods are still Ready (maxUnavailable 0), the new ones
// never become Ready. The pods check counts only the new revision.
func TestKubeBadRolloutKeepsOldPodsReady(t *testing.T) {
	e := newKubeEnv(t)
	mutate := neverReady(t, e.c)
	e.createDeployment("svc", 2, func(d *appsv1.Deployment) {
		zero, one := intstr.FromInt32(0), intstr.FromInt32(1)
		d.Spec.Strategy.RollingUpdate = &appsv1.RollingUpdateDeployment{MaxUnavailable: &zero, MaxSurge: &one}
	})
	hash1 := e.replicaSetHash("svc", "1")
	e.waitPods("app=svc", 2, "ready", podReady)
	e.updateDeployment("svc", mutate)
	hash2 := e.replicaSetHash("svc", "2")
	e.waitPods("app=svc,"+kinds.LabelPodTemplateHash+"="+hash2, 1, "stuck ("+neverReadyWhy+")", stuck)

	v := e.verifier(2*time.Second, 2*time.Second)
	res := byCheck(t, v.Verify(t.Context(), e.ref(policy.KindDeployment, "svc")), "rollout", "pods")
	expect(t, res["rollout"], StatusFail,
		`Rollout not finished within 2s: Waiting for deployment "svc" rollout to finish: 1 out of 2 new replicas have been updated...`)
	expect(t, res["pods"], StatusInconclusive, "Not run: rollout failed first.")

	res = byCheck(t, e.verifier(0, 2*time.Second).Verify(t.Context(), e.ref(policy.KindDeployment, "svc")), "pods")
	msg := res["pods"].Message
	wantPrefix := fmt.Sprintf("Pods not ready within 2s: 0 of 2 desired pods of the deployment at revision %s are Running and Ready; not ready: svc-%s-", hash2, hash2)
	if res["pods"].Status != StatusFail || !strings.HasPrefix(msg, wantPrefix) || strings.Contains(msg, hash1) {
		t.Errorf("pods = %s %q\nwant fail, starting %q, not naming revision %s", res["pods"].Status, msg, wantPrefix, hash1)
	}
}

func TestKubeProgressDeadlineExceededFailsAtOnce(t *testing.T) {
	e := newKubeEnv(t)
	mutate := neverReady(t, e.c)
	e.createDeployment("deadline", 1, func(d *appsv1.Deployment) {
		d.Spec.ProgressDeadlineSeconds = ptr[int32](1)
		mutate(&d.Spec.Template)
	})

	const timeout = 90 * time.Second
	v := e.verifier(timeout, 0)
	start := time.Now()
	res := byCheck(t, v.Verify(t.Context(), e.ref(policy.KindDeployment, "deadline")), "rollout")
	took := time.Since(start)
	expect(t, res["rollout"], StatusFail, `deployment "deadline" exceeded its progress deadline`)
	if took > timeout/3 {
		t.Errorf("Verify took %s; want a verdict well before the timeout %s", took, timeout)
	}
	// And the verdict came as soon as the condition appeared: within a
	// poll or two (the condition's time has one-second resolution).
	d, err := e.c.Client.AppsV1().Deployments(e.ns).Get(t.Context(), "deadline", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range d.Status.Conditions {
		if c.Type == appsv1.DeploymentProgressing {
			if c.Reason != "ProgressDeadlineExceeded" {
				t.Fatalf("Progressing condition reason %s, want %s", c.Reason, "ProgressDeadlineExceeded")
			}
			if lag := res["rollout"].At.Sub(c.LastUpdateTime.Time); lag > 3*time.Second {
				t.Errorf("verdict %s after the condition appeared (at %s), want within 3s", lag, c.LastUpdateTime)
			}
		}
	}
}

func TestKubeStatefulSet(t *testing.T) {
	e := newKubeEnv(t)
	replicas := int32(2)
	s := &appsv1.StatefulSet{
		ObjectMeta: metav1.ObjectMeta{Name: "db", Namespace: e.ns},
		Spec: appsv1.StatefulSetSpec{
			Replicas:            &replicas,
			Selector:            &metav1.LabelSelector{MatchLabels: map[string]string{"app": "db"}},
			Template:            podTemplate("db", "postgres:17"),
			PodManagementPolicy: appsv1.ParallelPodManagement,
		},
	}
	if _, err := e.c.Client.AppsV1().StatefulSets(e.ns).Create(t.Context(), s, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	res := byCheck(t, e.verifier(60*time.Second, 60*time.Second).Verify(t.Context(), e.ref(policy.KindStatefulSet, "db")), "rollout", "pods")
	s, err := e.c.Client.AppsV1().StatefulSets(e.ns).Get(t.Context(), "db", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	expect(t, res["rollout"], StatusPass, "partitioned roll out complete: 2 new pods have been updated...")
	expect(t, res["pods"], StatusPass, fmt.Sprintf("All 2 pods of the statefulset at revision %s are Running and Ready (2 desired).", s.Status.UpdateRevision))
}

func TestKubeDaemonSet(t *testing.T) {
	e := newKubeEnv(t)
	d := &appsv1.DaemonSet{
		ObjectMeta: metav1.ObjectMeta{Name: "agent", Namespace: e.ns},
		Spec: appsv1.DaemonSetSpec{
			Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "agent"}},
			Template: podTemplate("agent", "agent:v1"),
		},
	}
	if _, err := e.c.Client.AppsV1().DaemonSets(e.ns).Create(t.Context(), d, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	res := byCheck(t, e.verifier(60*time.Second, 60*time.Second).Verify(t.Context(), e.ref(policy.KindDaemonSet, "agent")), "rollout", "pods")
	revs, err := e.c.Client.AppsV1().ControllerRevisions(e.ns).List(t.Context(), metav1.ListOptions{LabelSelector: "app=agent"})
	if err != nil || len(revs.Items) != 1 {
		t.Fatalf("controller revisions of the daemonset: %v, %v", revs, err)
	}
	hash := revs.Items[0].Labels[kinds.LabelControllerRevisionHash]
	expect(t, res["rollout"], StatusPass, `daemon set "agent" successfully rolled out`)
	expect(t, res["pods"], StatusPass, fmt.Sprintf("All 1 pods of the daemonset at revision %s are Running and Ready (1 desired).", hash))
}

func TestKubeWorkloadNotFound(t *testing.T) {
	e := newKubeEnv(t)
	v := e.verifier(60*time.Second, 60*time.Second)
	start := time.Now()
	res := byCheck(t, v.Verify(t.Context(), e.ref(policy.KindDeployment, "absent")), "rollout", "pods")
	if took := time.Since(start); took > 10*time.Second {
		t.Errorf("Verify took %s, want an immediate verdict", took)
	}
	ref := e.ref(policy.KindDeployment, "absent")
	expect(t, res["rollout"], StatusFail, fmt.Sprintf(`%s does not exist: get deployment %s/absent: deployments.apps "absent" not found.`, ref, e.ns))
	expect(t, res["pods"], StatusInconclusive, "Not run: rollout failed first.")
	res = byCheck(t, e.verifier(0, time.Minute).Verify(t.Context(), ref), "pods")
	expect(t, res["pods"], StatusFail, fmt.Sprintf(`%s does not exist: get deployment %s/absent: deployments.apps "absent" not found.`, ref, e.ns))
}

func TestKubeCancelledIsInconclusive(t *testing.T) {
	e := newKubeEnv(t)
	mutate := neverReady(t, e.c)
	e.createDeployment("cancel", 1, func(d *appsv1.Deployment) { mutate(&d.Spec.Template) })
	e.waitPods("app=cancel", 1, "stuck ("+neverReadyWhy+")", stuck)
	ctx, cancel := context.WithTimeout(t.Context(), time.Second)
	defer cancel()
	res := byCheck(t, e.verifier(time.Minute, time.Minute).Verify(ctx, e.ref(policy.KindDeployment, "cancel")), "rollout", "pods")
	if r := res["rollout"]; r.Status != StatusInconclusive || !strings.HasPrefix(r.Message, "Verification was cancelled before") {
		t.Errorf("rollout = %s %q, want inconclusive: cancelled", r.Status, r.Message)
	}
	expect(t, res["pods"], StatusInconclusive, "Not run: verification was cancelled.")
}
