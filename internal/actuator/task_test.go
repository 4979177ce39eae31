package actuator

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/util/retry"

	"github.com/autorollbackd/autorollbackd/internal/kinds"
	"github.com/autorollbackd/autorollbackd/internal/policy"
)

func flushCacheJob(nodeSelector map[string]string) batchv1.JobSpec {
	return batchv1.JobSpec{
		Template: corev1.PodTemplateSpec{Spec: corev1.PodSpec{
			RestartPolicy: corev1.RestartPolicyNever,
			NodeSelector:  nodeSelector,
			Containers:    []corev1.Container{{Name: "flush", Image: "redis:7", Command: []string{"redis-cli", "--scan", "--pattern", "event:*"}}},
		}},
	}
}

func TestRunTask(t *testing.T) {
	f := newRollbackFixture(t)
	ctx := context.Background()
	req := f.request(policy.KindDeployment, "event-service", "deployment/x/event-service@2")

	name, err := f.act.RunTask(ctx, req, Task{Name: "flush-cache", Job: flushCacheJob(nil), Timeout: time.Minute})
	if err != nil {
		t.Fatalf("RunTask = %v", err)
	}
	job, err := f.c.Client.BatchV1().Jobs(f.ns).Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if job.Status.Succeeded < 1 || job.Annotations[kinds.AnnotationIncident] != req.Incident {
		t.Fatalf("job %s: succeeded %d, incident %q", name, job.Status.Succeeded, job.Annotations[kinds.AnnotationIncident])
	}
	// A restarted daemon awaits the same Job rather than starting another.
	again, err := f.act.RunTask(ctx, req, Task{Name: "flush-cache", Job: flushCacheJob(nil), Timeout: time.Minute})
	if err != nil || again != name {
		t.Fatalf("second RunTask = %s, %v; want the same job %s", again, err, name)
	}
	jobs, err := f.c.Client.BatchV1().Jobs(f.ns).List(ctx, metav1.ListOptions{LabelSelector: "autorollback.io/task=flush-cache"})
	if err != nil || len(jobs.Items) != 1 {
		t.Fatalf("%d jobs (%v), want 1", len(jobs.Items), err)
	}

	// A task that cannot finish in time fails, and says why.
	_, err = f.act.RunTask(ctx, req, Task{Name: "stuck", Job: flushCacheJob(map[string]string{"no-such": "node"}), Timeout: 2 * time.Second})
	if !errors.Is(err, ErrTaskFailed) || FailureReason(err) != "task_failed" || !strings.Contains(err.Error(), "not done within 2s") {
		t.Fatalf("stuck task = %v, want ErrTaskFailed after its timeout", err)
	}
}

func TestTaskJobName(t *testing.T) {
	long := strings.Repeat("a", 80)
	for _, tc := range []struct{ workload, task string }{{"event-service", "flush-cache"}, {long, "flush"}, {"x", long}} {
		n := taskJobName(tc.workload, tc.task, "inc")
		if len(n) > 63 || strings.HasSuffix(strings.TrimSuffix(n, n[len(n)-9:]), "-") {
			t.Errorf("taskJobName(%q, %q) = %q: invalid", tc.workload, tc.task, n)
		}
		if n != taskJobName(tc.workload, tc.task, "inc") || n == taskJobName(tc.workload, tc.task, "other") {
			t.Errorf("taskJobName is not a stable function of the incident")
		}
	}
}

// The runbook's `kubectl exec deployment/event-service -- npm run
// queue:clear` runs in the service's own container: a task that takes the
// workload's pod template runs with its image, env, envFrom and service
// account, the task's own env winning.
func TestRunTaskFromWorkload(t *testing.T) {
	f := newRollbackFixture(t)
	ctx := context.Background()
	f.deployment(t, "event-service", "event-service:v1")
	// The controller writes the Deployment too: retry on its conflicts.
	err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
		d, err := f.c.Client.AppsV1().Deployments(f.ns).Get(ctx, "event-service", metav1.GetOptions{})
		if err != nil {
			return err
		}
		d.Spec.Template.Spec.ServiceAccountName = "default"
		d.Spec.Template.Spec.Containers[0].Env = append(d.Spec.Template.Spec.Containers[0].Env,
			corev1.EnvVar{Name: "REDIS_URL", Value: "redis://redis:6379"}, corev1.EnvVar{Name: "QUEUE", Value: "events"})
		d.Spec.Template.Spec.Containers[0].EnvFrom = []corev1.EnvFromSource{{ConfigMapRef: &corev1.ConfigMapEnvSource{
			LocalObjectReference: corev1.LocalObjectReference{Name: "event-service-config"}, Optional: new(true)}}}
		_, err = f.c.Client.AppsV1().Deployments(f.ns).Update(ctx, d, metav1.UpdateOptions{})
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	req := f.request(policy.KindDeployment, "event-service", "deployment/x/event-service@2")
	task := Task{Name: "queue-clear", Timeout: time.Minute, FromWorkload: true, Job: batchv1.JobSpec{
		Template: corev1.PodTemplateSpec{Spec: corev1.PodSpec{RestartPolicy: corev1.RestartPolicyNever,
			Containers: []corev1.Container{{Name: "app", Command: []string{"npm", "run", "queue:clear"},
				Env: []corev1.EnvVar{{Name: "QUEUE", Value: "stuck"}}}}}}}}
	name, err := f.act.RunTask(ctx, req, task)
	if err != nil {
		t.Fatalf("RunTask = %v", err)
	}
	job, err := f.c.Client.BatchV1().Jobs(f.ns).Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	spec := job.Spec.Template.Spec
	c := spec.Containers[0]
	env := map[string]string{}
	for _, e := range c.Env {
		env[e.Name] = e.Value // later entries win, as in a pod
	}
	if c.Image != "event-service:v1" || env["REDIS_URL"] != "redis://redis:6379" || env["QUEUE"] != "stuck" ||
		len(c.EnvFrom) != 1 || c.EnvFrom[0].ConfigMapRef.Name != "event-service-config" || spec.ServiceAccountName != "default" ||
		strings.Join(c.Command, " ") != "npm run queue:clear" {
		t.Fatalf("job container %+v, service account %q; want the workload's image, env, envFrom and service account with the task's command and env", c, spec.ServiceAccountName)
	}
	if job.Status.Succeeded < 1 {
		t.Fatalf("job %s did not succeed: %+v", name, job.Status)
	}
}
