package workload

import (
	"fmt"

	appsv1 "k8s.io/api/apps/v1"
)

// RolloutState is the verdict of kubectl's status viewers on one status.
type RolloutState int

const (
	RolloutWaiting RolloutState = iota // not finished yet: poll again
	RolloutDone                        // successfully rolled out
	RolloutFailed                      // failed for good: no point waiting
	// RolloutUnsupported: kubectl refuses to judge (an update strategy other
	// than RollingUpdate) and exits with an error. Nothing can be proved
	// either way.
	RolloutUnsupported
)

func (s RolloutState) String() string {
	switch s {
	case RolloutWaiting:
		return "waiting"
	case RolloutDone:
		return "done"
	case RolloutFailed:
		return "failed"
	case RolloutUnsupported:
		return "unsupported"
	}
	return fmt.Sprintf("RolloutState(%d)", int(s))
}

// The judgements below re-implement the status viewers of
// k8s.io/kubectl/pkg/polymorphichelpers/rollout_status.go (v0.37.2), the
// code behind `kubectl rollout status`, rather than import kubectl, which
// would add about 30 MB to the binary. Messages are kubectl's, without the
// trailing newline; kubectl's error cases become RolloutFailed
// (ProgressDeadlineExceeded) or RolloutUnsupported (not RollingUpdate).

// timedOutReason is the reason of a Deployment's Progressing condition once
// its progress deadline passed (deploymentutil.TimedOutReason).
const timedOutReason = "ProgressDeadlineExceeded"

// JudgeDeployment is kubectl's DeploymentStatusViewer.Status without the
// revision argument.
func JudgeDeployment(d *appsv1.Deployment) (string, RolloutState) {
	if d.Generation > d.Status.ObservedGeneration {
		return "Waiting for deployment spec update to be observed...", RolloutWaiting
	}
	for _, c := range d.Status.Conditions {
		if c.Type == appsv1.DeploymentProgressing && c.Reason == timedOutReason {
			return fmt.Sprintf("deployment %q exceeded its progress deadline", d.Name), RolloutFailed
		}
	}
	if d.Spec.Replicas != nil && d.Status.UpdatedReplicas < *d.Spec.Replicas {
		return fmt.Sprintf("Waiting for deployment %q rollout to finish: %d out of %d new replicas have been updated...",
			d.Name, d.Status.UpdatedReplicas, *d.Spec.Replicas), RolloutWaiting
	}
	if d.Status.Replicas > d.Status.UpdatedReplicas {
		return fmt.Sprintf("Waiting for deployment %q rollout to finish: %d old replicas are pending termination...",
			d.Name, d.Status.Replicas-d.Status.UpdatedReplicas), RolloutWaiting
	}
	if d.Status.AvailableReplicas < d.Status.UpdatedReplicas {
		return fmt.Sprintf("Waiting for deployment %q rollout to finish: %d of %d updated replicas are available...",
			d.Name, d.Status.AvailableReplicas, d.Status.UpdatedReplicas), RolloutWaiting
	}
	return fmt.Sprintf("deployment %q successfully rolled out", d.Name), RolloutDone
}

// JudgeStatefulSet is kubectl's StatefulSetStatusViewer.Status. Like
// kubectl, it judges by partition whenever spec.updateStrategy.rollingUpdate
// is set (the API server always sets it for RollingUpdate), and compares
// currentRevision with updateRevision only when it is not.
func JudgeStatefulSet(s *appsv1.StatefulSet) (string, RolloutState) {
	if s.Spec.UpdateStrategy.Type != appsv1.RollingUpdateStatefulSetStrategyType {
		return fmt.Sprintf("rollout status is only available for %s strategy type", appsv1.RollingUpdateStatefulSetStrategyType), RolloutUnsupported
	}
	if s.Status.ObservedGeneration == 0 || s.Generation > s.Status.ObservedGeneration {
		return "Waiting for statefulset spec update to be observed...", RolloutWaiting
	}
	if s.Spec.Replicas != nil && s.Status.ReadyReplicas < *s.Spec.Replicas {
		return fmt.Sprintf("Waiting for %d pods to be ready...", *s.Spec.Replicas-s.Status.ReadyReplicas), RolloutWaiting
	}
	if ru := s.Spec.UpdateStrategy.RollingUpdate; ru != nil {
		if s.Spec.Replicas != nil && ru.Partition != nil {
			if want := *s.Spec.Replicas - *ru.Partition; s.Status.UpdatedReplicas < want {
				return fmt.Sprintf("Waiting for partitioned roll out to finish: %d out of %d new pods have been updated...",
					s.Status.UpdatedReplicas, want), RolloutWaiting
			}
		}
		return fmt.Sprintf("partitioned roll out complete: %d new pods have been updated...", s.Status.UpdatedReplicas), RolloutDone
	}
	if s.Status.UpdateRevision != s.Status.CurrentRevision {
		return fmt.Sprintf("waiting for statefulset rolling update to complete %d pods at revision %s...",
			s.Status.UpdatedReplicas, s.Status.UpdateRevision), RolloutWaiting
	}
	return fmt.Sprintf("statefulset rolling update complete %d pods at revision %s...", s.Status.CurrentReplicas, s.Status.CurrentRevision), RolloutDone
}

// JudgeDaemonSet is kubectl's DaemonSetStatusViewer.Status.
func JudgeDaemonSet(d *appsv1.DaemonSet) (string, RolloutState) {
	if d.Spec.UpdateStrategy.Type != appsv1.RollingUpdateDaemonSetStrategyType {
		// kubectl names the StatefulSet constant here; both are "RollingUpdate".
		return fmt.Sprintf("rollout status is only available for %s strategy type", appsv1.RollingUpdateDaemonSetStrategyType), RolloutUnsupported
	}
	if d.Generation > d.Status.ObservedGeneration {
		return "Waiting for daemon set spec update to be observed...", RolloutWaiting
	}
	if d.Status.UpdatedNumberScheduled < d.Status.DesiredNumberScheduled {
		return fmt.Sprintf("Waiting for daemon set %q rollout to finish: %d out of %d new pods have been updated...",
			d.Name, d.Status.UpdatedNumberScheduled, d.Status.DesiredNumberScheduled), RolloutWaiting
	}
	if d.Status.NumberAvailable < d.Status.DesiredNumberScheduled {
		return fmt.Sprintf("Waiting for daemon set %q rollout to finish: %d of %d updated pods are available...",
			d.Name, d.Status.NumberAvailable, d.Status.DesiredNumberScheduled), RolloutWaiting
	}
	return fmt.Sprintf("daemon set %q successfully rolled out", d.Name), RolloutDone
}
