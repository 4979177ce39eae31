package verify

import (
	"context"
	"fmt"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/autorollbackd/autorollbackd/internal/policy"
)

// rolloutState is the verdict of kubectl's status viewers on one status.
type rolloutState int

const (
	rolloutWaiting rolloutState = iota // not finished yet: poll again
	rolloutDone                        // successfully rolled out
	rolloutFailed                      // failed for good: no point waiting
	// rolloutUnsupported: kubectl refuses to judge (an update strategy other
	// than RollingUpdate) and exits with an error. Nothing can be proved
	// either way.
	rolloutUnsupported
)

func (s rolloutState) String() string {
	switch s {
	case rolloutWaiting:
		return "waiting"
	case rolloutDone:
		return "done"
	case rolloutFailed:
		return "failed"
	case rolloutUnsupported:
		return "unsupported"
	}
	return fmt.Sprintf("rolloutState(%d)", int(s))
}

// The judgements below re-implement the status viewers of
// k8s.io/kubectl/pkg/polymorphichelpers/rollout_status.go (v0.37.2), the
// code behind `kubectl rollout status`, rather than import kubectl, which
// would add about 30 MB to the binary. Messages are kubectl's, without the
// trailing newline; kubectl's error cases become rolloutFailed
// (ProgressDeadlineExceeded) or rolloutUnsupported (not RollingUpdate).

// timedOutReason is the reason of a Deployment's Progressing condition once
// its progress deadline passed (deploymentutil.TimedOutReason).
const timedOutReason = "ProgressDeadlineExceeded"

// judgeDeployment is kubectl's DeploymentStatusViewer.Status without the
// revision argument.
func judgeDeployment(d *appsv1.Deployment) (string, rolloutState) {
	if d.Generation > d.Status.ObservedGeneration {
		return "Waiting for deployment spec update to be observed...", rolloutWaiting
	}
	for _, c := range d.Status.Conditions {
		if c.Type == appsv1.DeploymentProgressing && c.Reason == timedOutReason {
			return fmt.Sprintf("deployment %q exceeded its progress deadline", d.Name), rolloutFailed
		}
	}
	if d.Spec.Replicas != nil && d.Status.UpdatedReplicas < *d.Spec.Replicas {
		return fmt.Sprintf("Waiting for deployment %q rollout to finish: %d out of %d new replicas have been updated...",
			d.Name, d.Status.UpdatedReplicas, *d.Spec.Replicas), rolloutWaiting
	}
	if d.Status.Replicas > d.Status.UpdatedReplicas {
		return fmt.Sprintf("Waiting for deployment %q rollout to finish: %d old replicas are pending termination...",
			d.Name, d.Status.Replicas-d.Status.UpdatedReplicas), rolloutWaiting
	}
	if d.Status.AvailableReplicas < d.Status.UpdatedReplicas {
		return fmt.Sprintf("Waiting for deployment %q rollout to finish: %d of %d updated replicas are available...",
			d.Name, d.Status.AvailableReplicas, d.Status.UpdatedReplicas), rolloutWaiting
	}
	return fmt.Sprintf("deployment %q successfully rolled out", d.Name), rolloutDone
}

// judgeStatefulSet is kubectl's StatefulSetStatusViewer.Status. Like
// kubectl, it judges by partition whenever spec.updateStrategy.rollingUpdate
// is set (the API server always sets it for RollingUpdate), and compares
// currentRevision with updateRevision only when it is not.
func judgeStatefulSet(s *appsv1.StatefulSet) (string, rolloutState) {
	if s.Spec.UpdateStrategy.Type != appsv1.RollingUpdateStatefulSetStrategyType {
		return fmt.Sprintf("rollout status is only available for %s strategy type", appsv1.RollingUpdateStatefulSetStrategyType), rolloutUnsupported
	}
	if s.Status.ObservedGeneration == 0 || s.Generation > s.Status.ObservedGeneration {
		return "Waiting for statefulset spec update to be observed...", rolloutWaiting
	}
	if s.Spec.Replicas != nil && s.Status.ReadyReplicas < *s.Spec.Replicas {
		return fmt.Sprintf("Waiting for %d pods to be ready...", *s.Spec.Replicas-s.Status.ReadyReplicas), rolloutWaiting
	}
	if ru := s.Spec.UpdateStrategy.RollingUpdate; ru != nil {
		if s.Spec.Replicas != nil && ru.Partition != nil {
			if want := *s.Spec.Replicas - *ru.Partition; s.Status.UpdatedReplicas < want {
				return fmt.Sprintf("Waiting for partitioned roll out to finish: %d out of %d new pods have been updated...",
					s.Status.UpdatedReplicas, want), rolloutWaiting
			}
		}
		return fmt.Sprintf("partitioned roll out complete: %d new pods have been updated...", s.Status.UpdatedReplicas), rolloutDone
	}
	if s.Status.UpdateRevision != s.Status.CurrentRevision {
		return fmt.Sprintf("waiting for statefulset rolling update to complete %d pods at revision %s...",
			s.Status.UpdatedReplicas, s.Status.UpdateRevision), rolloutWaiting
	}
	return fmt.Sprintf("statefulset rolling update complete %d pods at revision %s...", s.Status.CurrentReplicas, s.Status.CurrentRevision), rolloutDone
}

// judgeDaemonSet is kubectl's DaemonSetStatusViewer.Status.
func judgeDaemonSet(d *appsv1.DaemonSet) (string, rolloutState) {
	if d.Spec.UpdateStrategy.Type != appsv1.RollingUpdateDaemonSetStrategyType {
		// kubectl names the StatefulSet constant here; both are "RollingUpdate".
		return fmt.Sprintf("rollout status is only available for %s strategy type", appsv1.RollingUpdateDaemonSetStrategyType), rolloutUnsupported
	}
	if d.Generation > d.Status.ObservedGeneration {
		return "Waiting for daemon set spec update to be observed...", rolloutWaiting
	}
	if d.Status.UpdatedNumberScheduled < d.Status.DesiredNumberScheduled {
		return fmt.Sprintf("Waiting for daemon set %q rollout to finish: %d out of %d new pods have been updated...",
			d.Name, d.Status.UpdatedNumberScheduled, d.Status.DesiredNumberScheduled), rolloutWaiting
	}
	if d.Status.NumberAvailable < d.Status.DesiredNumberScheduled {
		return fmt.Sprintf("Waiting for daemon set %q rollout to finish: %d of %d updated pods are available...",
			d.Name, d.Status.NumberAvailable, d.Status.DesiredNumberScheduled), rolloutWaiting
	}
	return fmt.Sprintf("daemon set %q successfully rolled out", d.Name), rolloutDone
}

// judgeRollout reads the workload and judges its rollout.
func (v *Verifier) judgeRollout(ctx context.Context, target policy.Ref) (string, rolloutState, error) {
	apps := v.client.AppsV1()
	switch target.Kind {
	case policy.KindDeployment:
		d, err := apps.Deployments(target.Namespace).Get(ctx, target.Name, metav1.GetOptions{})
		if err != nil {
			return "", 0, fmt.Errorf("get deployment %s/%s: %w", target.Namespace, target.Name, err)
		}
		msg, state := judgeDeployment(d)
		return msg, state, nil
	case policy.KindStatefulSet:
		s, err := apps.StatefulSets(target.Namespace).Get(ctx, target.Name, metav1.GetOptions{})
		if err != nil {
			return "", 0, fmt.Errorf("get statefulset %s/%s: %w", target.Namespace, target.Name, err)
		}
		msg, state := judgeStatefulSet(s)
		return msg, state, nil
	case policy.KindDaemonSet:
		d, err := apps.DaemonSets(target.Namespace).Get(ctx, target.Name, metav1.GetOptions{})
		if err != nil {
			return "", 0, fmt.Errorf("get daemonset %s/%s: %w", target.Namespace, target.Name, err)
		}
		msg, state := judgeDaemonSet(d)
		return msg, state, nil
	}
	return fmt.Sprintf("cannot judge the rollout of kind %q", target.Kind), rolloutUnsupported, nil
}

// checkRollout polls the rollout status until it is done (pass), failed for
// good (fail), unsupported (inconclusive) or the timeout passes (fail with
// kubectl's last waiting message; inconclusive when the workload could
// never be read).
func (v *Verifier) checkRollout(ctx context.Context, target policy.Ref) (Status, string) {
	return v.wait(ctx, target, v.cfg.Rollout.Timeout.Duration, time.Time{}, rolloutWords, func(ctx context.Context) (string, Status, bool, error) {
		msg, state, err := v.judgeRollout(ctx, target)
		if err != nil {
			return "", "", false, err
		}
		switch state {
		case rolloutDone:
			return msg, StatusPass, true, nil
		case rolloutFailed:
			return msg, StatusFail, true, nil
		case rolloutUnsupported:
			return msg, StatusInconclusive, true, nil
		}
		return msg, "", false, nil
	})
}

var rolloutWords = waitWords{read: "the rollout status", awaited: "the rollout finished", deadline: "Rollout not finished"}
