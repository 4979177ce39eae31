package actuator

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/autorollbackd/autorollbackd/internal/kinds"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
)

// Task is a post-rollback task: a Job run in the workload's namespace after
// a successful rollback, for the runbook's "Rollback Impact Assessment"
// (flush cache keys, clear stuck queue jobs).
type Task struct {
	Name    string
	Job     batchv1.JobSpec
	Timeout time.Duration
	// Phase is when the engine runs the task: "afterAction" (also when
	// empty) or "afterRecovery".
	Phase string
	// FromWorkload runs the Job's containers as the workload's own, the
	// way `kubectl exec deployment/NAME -- CMD` runs a command in the
	// workload's container: see fromWorkload.
	FromWorkload bool
}

// ErrTaskFailed: the task's Job failed or did not finish in time.
var ErrTaskFailed = errors.New("post-rollback task failed")

// RunTask starts the task's Job for the incident, unless it already exists
// (a restarted daemon awaits the same Job instead of starting a second),
// and waits until it completes, fails, or the task's timeout passes. It
// returns the Job's name.
func (a *Actuator) RunTask(ctx context.Context, req Request, t Task) (string, error) {
	name := taskJobName(req.Target.Name, t.Name, req.Incident)
	jobs := a.client.BatchV1().Jobs(req.Target.Namespace)
	job := &batchv1.Job{
		ObjectMeta: metav1.ObjectMeta{
			Name: name, Namespace: req.Target.Namespace,
			Labels:      map[string]string{kinds.LabelManagedBy: kinds.ManagedBy, kinds.LabelTask: t.Name},
			Annotations: map[string]string{kinds.AnnotationIncident: req.Incident, kinds.AnnotationWorkload: req.Target.String()},
		},
		Spec: *t.Job.DeepCopy(),
	}
	if t.FromWorkload {
		w, err := a.readLiveWorkload(ctx, req.Target)
		if err != nil {
			return name, fmt.Errorf("start task %s for %s: read its pod template: %w", t.Name, req.Target, err)
		}
		fromWorkload(&job.Spec.Template.Spec, &w.template.Spec)
	}
	var opts metav1.CreateOptions
	if req.DryRun {
		opts.DryRun = []string{metav1.DryRunAll}
	}
	_, err := jobs.Create(ctx, job, opts)
	switch {
	case apierrors.IsAlreadyExists(err):
	case err != nil:
		return name, fmt.Errorf("start task %s for %s: %w", t.Name, req.Target, err)
	case req.DryRun:
		return name, nil
	}
	waitCtx, cancel := context.WithTimeout(ctx, t.Timeout)
	defer cancel()
	var last string
	err = wait.PollUntilContextCancel(waitCtx, time.Second, true, func(ctx context.Context) (bool, error) {
		j, err := jobs.Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			last = err.Error()
			return false, nil
		}
		for _, c := range j.Status.Conditions {
			if c.Status != corev1.ConditionTrue {
				continue
			}
			switch c.Type {
			case batchv1.JobComplete:
				return true, nil
			case batchv1.JobFailed:
				return false, fmt.Errorf("%w: job %s failed: %s: %s", ErrTaskFailed, name, c.Reason, c.Message)
			}
		}
		last = fmt.Sprintf("%d active, %d succeeded, %d failed", j.Status.Active, j.Status.Succeeded, j.Status.Failed)
		return false, nil
	})
	if err != nil && ctx.Err() == nil && errors.Is(err, context.DeadlineExceeded) {
		return name, fmt.Errorf("%w: job %s not done within %s (%s)", ErrTaskFailed, name, t.Timeout, last)
	}
	if err != nil {
		return name, fmt.Errorf("task %s for %s: %w", t.Name, req.Target, err)
	}
	return name, nil
}

// fromWorkload gives each container of the task's pod that names no image
// the workload's container of the same name, or else its first: its image,
// and its env and envFrom before the task's own (which win). The pod takes
// the workload's service account unless it names one. Only these are taken:
// the workload's probes, ports and volumes are for serving, not for a
// one-off command.
func fromWorkload(task, w *corev1.PodSpec) {
	if len(w.Containers) == 0 {
		return
	}
	for i := range task.Containers {
		c := &task.Containers[i]
		if c.Image != "" {
			continue
		}
		src := w.Containers[0]
		for _, wc := range w.Containers {
			if wc.Name == c.Name {
				src = wc
			}
		}
		c.Image = src.Image
		c.Env = append(slices.Clone(src.Env), c.Env...)
		c.EnvFrom = append(slices.Clone(src.EnvFrom), c.EnvFrom...)
	}
	if task.ServiceAccountName == "" {
		task.ServiceAccountName = w.ServiceAccountName
	}
}

// taskJobName is a valid, stable Job name for a task of an incident.
func taskJobName(workload, task, incident string) string {
	sum := sha256.Sum256([]byte(incident))
	suffix := "-" + hex.EncodeToString(sum[:4])
	base := strings.TrimSuffix(fmt.Sprintf("%s-%s", workload, task), "-")
	if limit := 63 - len(suffix); len(base) > limit {
		base = strings.TrimRight(base[:limit], "-.")
	}
	return base + suffix
}
