package evidence

import (
	"context"
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"
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
	"github.com/autorollbackd/autorollbackd/internal/workload"
)

// These tests collect evidence on the real local control plane, where kwok
// turns pods scheduled to its node Running and Ready, and pods with a node
// selector no node matches stay Pending.

func TestMain(m *testing.M) { os.Exit(testenv.Run(m)) }

const unschedulableLabel = "autorollback.io/test-unschedulable"

type kubeEnv struct {
	t  *testing.T
	c  *testenv.Cluster
	ns string
}

func newKubeEnv(t *testing.T) *kubeEnv {
	c := testenv.Require(t)
	t.Parallel()
	return &kubeEnv{t: t, c: c, ns: c.Namespace(t)}
}

func (e *kubeEnv) ref(kind policy.Kind, name string) policy.Ref {
	return policy.Ref{Kind: kind, Namespace: e.ns, Name: name}
}

func template(app, image string) corev1.PodTemplateSpec {
	return corev1.PodTemplateSpec{
		ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{"app": app}},
		Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "app", Image: image}}},
	}
}

// unschedulable gives a template a node selector no node matches.
func unschedulable(p *corev1.PodTemplateSpec) {
	p.Spec.NodeSelector = map[string]string{unschedulableLabel: "true"}
}

func image(img string) func(*corev1.PodTemplateSpec) {
	return func(p *corev1.PodTemplateSpec) { p.Spec.Containers[0].Image = img }
}

// update changes the pod template of a workload, retrying on conflict
// with its controller's status writes.
func update[T any](e *kubeEnv, get func(context.Context) (*T, error), put func(context.Context, *T) error, tmpl func(*T) *corev1.PodTemplateSpec, mutate func(*corev1.PodTemplateSpec)) {
	e.t.Helper()
	err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
		o, err := get(e.t.Context())
		if err != nil {
			return err
		}
		mutate(tmpl(o))
		return put(e.t.Context(), o)
	})
	if err != nil {
		e.t.Fatalf("update: %v", err)
	}
}

func (e *kubeEnv) updateDeployment(name string, mutate func(*corev1.PodTemplateSpec)) {
	e.t.Helper()
	api := e.c.Client.AppsV1().Deployments(e.ns)
	update(e, func(ctx context.Context) (*appsv1.Deployment, error) { return api.Get(ctx, name, metav1.GetOptions{}) },
		func(ctx context.Context, d *appsv1.Deployment) error {
			_, err := api.Update(ctx, d, metav1.UpdateOptions{})
			return err
		},
		func(d *appsv1.Deployment) *corev1.PodTemplateSpec { return &d.Spec.Template }, mutate)
}

// waitPods waits until the pods labelled app=app are exactly want, each
// with its phase, and returns them by name.
func (e *kubeEnv) waitPods(app string, want map[string]int, ready func(*corev1.Pod) string) map[string][]string {
	e.t.Helper()
	var byState map[string][]string
	testenv.Eventually(e.t, 60*time.Second, fmt.Sprintf("pods of %s: %v", app, want), func(ctx context.Context) (bool, string) {
		list, err := e.c.Client.CoreV1().Pods(e.ns).List(ctx, metav1.ListOptions{LabelSelector: "app=" + app})
		if err != nil {
			return false, err.Error()
		}
		byState = map[string][]string{}
		for i := range list.Items {
			p := &list.Items[i]
			if p.DeletionTimestamp == nil {
				byState[ready(p)] = append(byState[ready(p)], p.Name)
			}
		}
		if len(byState) != len(want) {
			return false, fmt.Sprint(byState)
		}
		for k, n := range want {
			if len(byState[k]) != n {
				return false, fmt.Sprint(byState)
			}
		}
		return true, ""
	})
	for _, names := range byState {
		slices.Sort(names)
	}
	return byState
}

// phase classifies a pod by its phase, Running only when Ready too.
func phase(p *corev1.Pod) string {
	if p.Status.Phase == corev1.PodRunning && !podReady(p) {
		return "RunningNotReady"
	}
	return string(p.Status.Phase)
}

// byHash classifies a pod by its revision label and phase: "HASH Phase".
func byHash(label string) func(*corev1.Pod) string {
	return func(p *corev1.Pod) string { return p.Labels[label] + " " + phase(p) }
}

func (e *kubeEnv) replicaSetHash(app string, revision int64) string {
	e.t.Helper()
	var hash string
	testenv.Eventually(e.t, 30*time.Second, fmt.Sprintf("ReplicaSet of %s at revision %d", app, revision), func(ctx context.Context) (bool, string) {
		list, err := e.c.Client.AppsV1().ReplicaSets(e.ns).List(ctx, metav1.ListOptions{LabelSelector: "app=" + app})
		if err != nil {
			return false, err.Error()
		}
		for _, rs := range list.Items {
			if rs.Annotations[kinds.AnnotationDeploymentRevision] == fmt.Sprint(revision) {
				hash = rs.Labels[kinds.LabelPodTemplateHash]
				return true, ""
			}
		}
		return false, fmt.Sprintf("%d ReplicaSets", len(list.Items))
	})
	return hash
}

func podNames(s Snapshot) []string {
	var names []string
	for _, p := range s.Pods {
		names = append(names, p.Name)
	}
	slices.Sort(names)
	return names
}

// logsServed asks the API server for the log of a Running pod's
// container, as Collect does, and reports whether it answered with one,
// and the error it gave otherwise.
func (e *kubeEnv) logsServed(pod string) (bool, error) {
	e.t.Helper()
	b, err := e.c.Client.CoreV1().Pods(e.ns).GetLogs(pod, &corev1.PodLogOptions{Container: "app"}).DoRaw(e.t.Context())
	e.t.Logf("GET pods/%s/log: %q, %v", pod, b, err)
	return err == nil, err
}

// checkLogs asserts what the current log of each container holds: for an
// unscheduled pod, that it was not read; else no error where the cluster
// serves logs, and where it does not (kwok without log configuration, as
// in the test environment), the API server's error recorded on that
// container.
func checkLogs(t *testing.T, s Snapshot, served bool) {
	t.Helper()
	for _, p := range s.Pods {
		for _, c := range p.Containers {
			if len(c.Logs) != 1 || c.Logs[0].Previous {
				t.Errorf("pod %s container %s: logs %+v, want the current log alone (no restarts)", p.Name, c.Name, c.Logs)
				continue
			}
			l := c.Logs[0]
			switch {
			case p.Node == "":
				if l.Error != "not read: the pod is not scheduled to a node" {
					t.Errorf("pod %s (unscheduled) container %s: log error %q, want that it is not scheduled", p.Name, c.Name, l.Error)
				}
			case served && l.Error != "":
				t.Errorf("pod %s container %s: log error %q, but the cluster serves logs", p.Name, c.Name, l.Error)
			case !served:
				// kwok answers 400 for a container it has no logs
				// configured for; the API server passes its message on.
				want := fmt.Sprintf(`read log: no logs found for container %q in pod "%s/%s"`, c.Name, s.Target.Namespace, p.Name)
				if l.Error != want || len(l.Lines) != 0 {
					t.Errorf("pod %s container %s: log %+v, want the API server's error recorded: %s", p.Name, c.Name, l, want)
				}
			}
		}
	}
}

// TestCollectDeployment: a Deployment whose revision 2 is Running and
// Ready and whose revision 3 stays Pending, both with pods at once. The
// snapshot of each revision holds exactly its own pods, with their phase
// and node, and never those of the other.
func TestCollectDeployment(t *testing.T) {
	e := newKubeEnv(t)
	replicas := int32(2)
	surge := intstr.FromString("100%")
	none := intstr.FromInt32(0)
	_, err := e.c.Client.AppsV1().Deployments(e.ns).Create(t.Context(), &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: e.ns},
		Spec: appsv1.DeploymentSpec{
			Replicas: &replicas,
			Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "web"}},
			Template: template("web", "event-service:v1"),
			Strategy: appsv1.DeploymentStrategy{Type: appsv1.RollingUpdateDeploymentStrategyType,
				RollingUpdate: &appsv1.RollingUpdateDeployment{MaxSurge: &surge, MaxUnavailable: &none}},
		},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	label := byHash(kinds.LabelPodTemplateHash)
	hash1 := e.replicaSetHash("web", 1)
	e.waitPods("web", map[string]int{hash1 + " Running": 2}, label)

	// Revision 2 rolls out completely (kwok makes its pods Ready), then
	// revision 3 surges two pods that never schedule, beside revision 2's.
	e.updateDeployment("web", image("event-service:v2"))
	hash2 := e.replicaSetHash("web", 2)
	e.waitPods("web", map[string]int{hash2 + " Running": 2}, label)
	e.updateDeployment("web", unschedulable)
	hash3 := e.replicaSetHash("web", 3)
	pods := e.waitPods("web", map[string]int{hash2 + " Running": 2, hash3 + " Pending": 2}, label)
	served, logErr := e.logsServed(pods[hash2+" Running"][0])
	t.Logf("kwok serves container logs: %v (%v)", served, logErr)

	ref := e.ref(policy.KindDeployment, "web")
	before := time.Now()
	bad, err := Collect(t.Context(), e.c.Client, ref, 3, Limits{})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("revision 3, collected in %s:\n%s", time.Since(before).Round(time.Millisecond), bad.Render())
	if got, want := podNames(bad), pods[hash3+" Pending"]; !slices.Equal(got, want) {
		t.Errorf("pods of revision 3 = %v, want exactly the Pending ones %v", got, want)
	}
	if bad.Revision != 3 || bad.Hash != hash3 || bad.PodsFound != 2 || bad.Truncated != nil || bad.TakenAt.Before(before.Add(-time.Second)) {
		t.Errorf("snapshot revision %d hash %s found %d truncated %+v taken %s; want 3, %s, 2, nothing truncated, now",
			bad.Revision, bad.Hash, bad.PodsFound, bad.Truncated, bad.TakenAt, hash3)
	}
	for _, p := range bad.Pods {
		if p.Phase != corev1.PodPending || p.Node != "" || p.Ready || p.Reason != "Unschedulable" || !strings.Contains(p.Message, "node") {
			t.Errorf("pod %s: %+v; want Pending, on no node, not ready, Unschedulable with the scheduler's message", p.Name, p)
		}
		if len(p.Containers) != 1 || p.Containers[0].Name != "app" || p.Containers[0].Image != "event-service:v2" {
			t.Errorf("pod %s containers %+v, want app at event-service:v2", p.Name, p.Containers)
		}
	}
	checkLogs(t, bad, served)

	start := time.Now()
	good, err := Collect(t.Context(), e.c.Client, ref, 2, Limits{})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("revision 2, collected in %s:\n%s", time.Since(start).Round(time.Millisecond), good.Render())
	if got, want := podNames(good), pods[hash2+" Running"]; !slices.Equal(got, want) {
		t.Errorf("pods of revision 2 = %v, want exactly the Running ones %v", got, want)
	}
	for _, p := range good.Pods {
		c := p.Containers[0]
		if p.Phase != corev1.PodRunning || p.Node != "kwok-node-0" || !p.Ready || !c.Ready || c.State != "running" || c.Image != "event-service:v2" {
			t.Errorf("pod %s: %+v; want Running and Ready on kwok-node-0, its container running", p.Name, p)
		}
	}
	checkLogs(t, good, served)

	// Revision 1 has no pods left; revision 9 does not exist.
	old, err := Collect(t.Context(), e.c.Client, ref, 1, Limits{})
	if err != nil || old.PodsFound != 0 || len(old.Pods) != 0 || old.Hash != hash1 {
		t.Errorf("revision 1: %+v, %v; want its hash and no pods", old, err)
	}
	if _, err := Collect(t.Context(), e.c.Client, ref, 9, Limits{}); !errors.Is(err, workload.ErrNoRevision) {
		t.Errorf("revision 9: err = %v, want ErrNoRevision", err)
	}
	if _, err := Collect(t.Context(), e.c.Client, e.ref(policy.KindDeployment, "absent"), 1, Limits{}); err == nil || !strings.Contains(err.Error(), "not found") {
		t.Errorf("absent deployment: err = %v, want not found", err)
	}

	// The limits hold on the real cluster too.
	one, err := Collect(t.Context(), e.c.Client, ref, 2, Limits{Pods: 1})
	if err != nil {
		t.Fatal(err)
	}
	if len(one.Pods) != 1 || one.PodsFound != 2 || one.Truncated == nil || one.Truncated.Pods != 1 {
		t.Errorf("with Limits.Pods 1: %d recorded of %d, truncated %+v; want 1 of 2, 1 counted", len(one.Pods), one.PodsFound, one.Truncated)
	}
}

// TestCollectStatefulSet: a StatefulSet whose revision 2 replaced its
// highest ordinal with a pod that stays Pending; each revision's snapshot
// holds its own pod.
func TestCollectStatefulSet(t *testing.T) {
	e := newKubeEnv(t)
	replicas := int32(2)
	api := e.c.Client.AppsV1().StatefulSets(e.ns)
	_, err := api.Create(t.Context(), &appsv1.StatefulSet{
		ObjectMeta: metav1.ObjectMeta{Name: "db", Namespace: e.ns},
		Spec: appsv1.StatefulSetSpec{
			Replicas:            &replicas,
			Selector:            &metav1.LabelSelector{MatchLabels: map[string]string{"app": "db"}},
			Template:            template("db", "postgres:17"),
			PodManagementPolicy: appsv1.ParallelPodManagement,
		},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	label := byHash(kinds.LabelControllerRevisionHash)
	e.waitPods("db", map[string]int{"Running": 2}, phase)
	update(e, func(ctx context.Context) (*appsv1.StatefulSet, error) { return api.Get(ctx, "db", metav1.GetOptions{}) },
		func(ctx context.Context, s *appsv1.StatefulSet) error {
			_, err := api.Update(ctx, s, metav1.UpdateOptions{})
			return err
		},
		func(s *appsv1.StatefulSet) *corev1.PodTemplateSpec { return &s.Spec.Template }, unschedulable)
	var rev1, rev2 string
	testenv.Eventually(t, 30*time.Second, "the statefulset's revisions", func(ctx context.Context) (bool, string) {
		s, err := api.Get(ctx, "db", metav1.GetOptions{})
		if err != nil {
			return false, err.Error()
		}
		rev1, rev2 = s.Status.CurrentRevision, s.Status.UpdateRevision
		return rev1 != "" && rev2 != "" && rev1 != rev2, rev1 + " " + rev2
	})
	pods := e.waitPods("db", map[string]int{rev1 + " Running": 1, rev2 + " Pending": 1}, label)

	served, _ := e.logsServed(pods[rev1+" Running"][0])
	ref := e.ref(policy.KindStatefulSet, "db")
	for _, tc := range []struct {
		revision int64
		hash     string
		want     []string
		phase    corev1.PodPhase
	}{{2, rev2, pods[rev2+" Pending"], corev1.PodPending}, {1, rev1, pods[rev1+" Running"], corev1.PodRunning}} {
		s, err := Collect(t.Context(), e.c.Client, ref, tc.revision, Limits{})
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("revision %d:\n%s", tc.revision, s.Render())
		if got := podNames(s); !slices.Equal(got, tc.want) || s.Hash != tc.hash || s.Pods[0].Phase != tc.phase {
			t.Errorf("revision %d: pods %v hash %s phase %s; want %v, %s, %s", tc.revision, got, s.Hash, s.Pods[0].Phase, tc.want, tc.hash, tc.phase)
		}
		checkLogs(t, s, served)
	}
}

// TestCollectDaemonSet: a DaemonSet at revision 2 has its one pod at that
// revision's hash, and revision 1 none left.
func TestCollectDaemonSet(t *testing.T) {
	e := newKubeEnv(t)
	api := e.c.Client.AppsV1().DaemonSets(e.ns)
	_, err := api.Create(t.Context(), &appsv1.DaemonSet{
		ObjectMeta: metav1.ObjectMeta{Name: "agent", Namespace: e.ns},
		Spec: appsv1.DaemonSetSpec{
			Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "agent"}},
			Template: template("agent", "agent:v1"),
		},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	// Revision 1 runs before revision 2 replaces it; updated at once, the
	// controller might never record revision 1.
	e.waitPods("agent", map[string]int{"Running": 1}, phase)
	update(e, func(ctx context.Context) (*appsv1.DaemonSet, error) {
		return api.Get(ctx, "agent", metav1.GetOptions{})
	},
		func(ctx context.Context, d *appsv1.DaemonSet) error {
			_, err := api.Update(ctx, d, metav1.UpdateOptions{})
			return err
		},
		func(d *appsv1.DaemonSet) *corev1.PodTemplateSpec { return &d.Spec.Template }, image("agent:v2"))
	hashes := map[int64]string{}
	testenv.Eventually(t, 30*time.Second, "two controller revisions", func(ctx context.Context) (bool, string) {
		list, err := e.c.Client.AppsV1().ControllerRevisions(e.ns).List(ctx, metav1.ListOptions{LabelSelector: "app=agent"})
		if err != nil {
			return false, err.Error()
		}
		for _, cr := range list.Items {
			hashes[cr.Revision] = cr.Labels[kinds.LabelControllerRevisionHash]
		}
		return len(hashes) == 2, fmt.Sprint(hashes)
	})
	pods := e.waitPods("agent", map[string]int{hashes[2] + " Running": 1}, byHash(kinds.LabelControllerRevisionHash))

	served, _ := e.logsServed(pods[hashes[2]+" Running"][0])
	ref := e.ref(policy.KindDaemonSet, "agent")
	s, err := Collect(t.Context(), e.c.Client, ref, 2, Limits{})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("revision 2:\n%s", s.Render())
	if got := podNames(s); !slices.Equal(got, pods[hashes[2]+" Running"]) || s.Hash != hashes[2] || s.Pods[0].Node != "kwok-node-0" {
		t.Errorf("revision 2: pods %v hash %s; want %v, %s, on kwok-node-0", got, s.Hash, pods[hashes[2]+" Running"], hashes[2])
	}
	checkLogs(t, s, served)
	old, err := Collect(t.Context(), e.c.Client, ref, 1, Limits{})
	if err != nil || old.PodsFound != 0 || old.Hash != hashes[1] {
		t.Errorf("revision 1: %+v, %v; want its hash and no pods", old, err)
	}
}
