package verify

import (
	"testing"

	"github.com/autorollbackd/autorollbackd/internal/workload"
	appsv1 "k8s.io/api/apps/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// The rows below include every row of kubectl's own status viewer tests
// (k8s.io/kubectl/pkg/polymorphichelpers/rollout_status_test.go, v0.37.2),
// with kubectl's messages minus the trailing newline, plus the cases kubectl
// turns into errors: ProgressDeadlineExceeded (failed) and a strategy other
// than RollingUpdate (unsupported).

func TestJudgeDeployment(t *testing.T) {
	progressing := func(reason string) []appsv1.DeploymentCondition {
		return []appsv1.DeploymentCondition{{Type: appsv1.DeploymentProgressing, Status: "False", Reason: reason}}
	}
	tests := []struct {
		name         string
		generation   int64
		specReplicas *int32
		status       appsv1.DeploymentStatus
		msg          string
		state        rolloutState
	}{
		{
			name: "kubectl test1: new replicas not updated", generation: 0, specReplicas: ptr[int32](1),
			status: appsv1.DeploymentStatus{ObservedGeneration: 1, Replicas: 1, UpdatedReplicas: 0, AvailableReplicas: 1},
			msg:    `Waiting for deployment "foo" rollout to finish: 0 out of 1 new replicas have been updated...`,
			state:  rolloutWaiting,
		},
		{
			name: "kubectl test2: old replicas pending termination", generation: 1, specReplicas: ptr[int32](1),
			status: appsv1.DeploymentStatus{ObservedGeneration: 1, Replicas: 2, UpdatedReplicas: 1, AvailableReplicas: 2},
			msg:    `Waiting for deployment "foo" rollout to finish: 1 old replicas are pending termination...`,
			state:  rolloutWaiting,
		},
		{
			name: "kubectl test3: updated replicas not available", generation: 1, specReplicas: ptr[int32](2),
			status: appsv1.DeploymentStatus{ObservedGeneration: 1, Replicas: 2, UpdatedReplicas: 2, AvailableReplicas: 1, UnavailableReplicas: 1},
			msg:    `Waiting for deployment "foo" rollout to finish: 1 of 2 updated replicas are available...`,
			state:  rolloutWaiting,
		},
		{
			name: "kubectl test4: rolled out", generation: 1, specReplicas: ptr[int32](2),
			status: appsv1.DeploymentStatus{ObservedGeneration: 1, Replicas: 2, UpdatedReplicas: 2, AvailableReplicas: 2},
			msg:    `deployment "foo" successfully rolled out`,
			state:  rolloutDone,
		},
		{
			name: "kubectl test5: generation not yet observed", generation: 2, specReplicas: ptr[int32](2),
			status: appsv1.DeploymentStatus{ObservedGeneration: 1, Replicas: 2, UpdatedReplicas: 2, AvailableReplicas: 2},
			msg:    "Waiting for deployment spec update to be observed...",
			state:  rolloutWaiting,
		},
		{
			name: "progress deadline exceeded fails at once", generation: 3, specReplicas: ptr[int32](2),
			status: appsv1.DeploymentStatus{ObservedGeneration: 3, Replicas: 3, UpdatedReplicas: 1, AvailableReplicas: 2,
				Conditions: progressing("ProgressDeadlineExceeded")},
			msg:   `deployment "foo" exceeded its progress deadline`,
			state: rolloutFailed,
		},
		{
			name: "progress deadline exceeded of an older generation is not judged", generation: 4, specReplicas: ptr[int32](2),
			status: appsv1.DeploymentStatus{ObservedGeneration: 3, Replicas: 3, UpdatedReplicas: 1, AvailableReplicas: 2,
				Conditions: progressing("ProgressDeadlineExceeded")},
			msg:   "Waiting for deployment spec update to be observed...",
			state: rolloutWaiting,
		},
		{
			name: "progressing condition with another reason does not fail", generation: 1, specReplicas: ptr[int32](2),
			status: appsv1.DeploymentStatus{ObservedGeneration: 1, Replicas: 2, UpdatedReplicas: 2, AvailableReplicas: 2,
				Conditions: progressing("NewReplicaSetAvailable")},
			msg:   `deployment "foo" successfully rolled out`,
			state: rolloutDone,
		},
		{
			name: "nil spec replicas skips the updated-replicas check", generation: 1, specReplicas: nil,
			status: appsv1.DeploymentStatus{ObservedGeneration: 1, Replicas: 1, UpdatedReplicas: 1, AvailableReplicas: 0},
			msg:    `Waiting for deployment "foo" rollout to finish: 0 of 1 updated replicas are available...`,
			state:  rolloutWaiting,
		},
		{
			name: "scaled to zero is rolled out", generation: 5, specReplicas: ptr[int32](0),
			status: appsv1.DeploymentStatus{ObservedGeneration: 5},
			msg:    `deployment "foo" successfully rolled out`,
			state:  rolloutDone,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			d := &appsv1.Deployment{
				ObjectMeta: metav1.ObjectMeta{Namespace: "bar", Name: "foo", Generation: tc.generation},
				Spec:       appsv1.DeploymentSpec{Replicas: tc.specReplicas},
				Status:     tc.status,
			}
			msg, state := workload.JudgeDeployment(d)
			if msg != tc.msg || state != tc.state {
				t.Errorf("workload.JudgeDeployment() = %q, %s; want %q, %s", msg, state, tc.msg, tc.state)
			}
		})
	}
}

func TestJudgeStatefulSet(t *testing.T) {
	rolling := appsv1.StatefulSetUpdateStrategy{Type: appsv1.RollingUpdateStatefulSetStrategyType}
	partitioned := func(p int32) appsv1.StatefulSetUpdateStrategy {
		return appsv1.StatefulSetUpdateStrategy{
			Type:          appsv1.RollingUpdateStatefulSetStrategyType,
			RollingUpdate: &appsv1.RollingUpdateStatefulSetStrategy{Partition: &p},
		}
	}
	tests := []struct {
		name       string
		generation int64
		strategy   appsv1.StatefulSetUpdateStrategy
		status     appsv1.StatefulSetStatus
		msg        string
		state      rolloutState
	}{
		{
			name: "kubectl: on delete cannot be judged", generation: 1,
			strategy: appsv1.StatefulSetUpdateStrategy{Type: appsv1.OnDeleteStatefulSetStrategyType},
			status:   appsv1.StatefulSetStatus{ObservedGeneration: 1, ReadyReplicas: 1},
			msg:      "rollout status is only available for RollingUpdate strategy type",
			state:    rolloutUnsupported,
		},
		{
			name: "kubectl: unobserved update is not complete", generation: 2, strategy: rolling,
			status: appsv1.StatefulSetStatus{ObservedGeneration: 1, Replicas: 3, ReadyReplicas: 3, CurrentReplicas: 3},
			msg:    "Waiting for statefulset spec update to be observed...",
			state:  rolloutWaiting,
		},
		{
			name: "never observed (observedGeneration 0) is not complete", generation: 0, strategy: rolling,
			status: appsv1.StatefulSetStatus{ObservedGeneration: 0, Replicas: 3, ReadyReplicas: 3},
			msg:    "Waiting for statefulset spec update to be observed...",
			state:  rolloutWaiting,
		},
		{
			name: "kubectl: if all pods are not ready the update is not complete", generation: 1, strategy: rolling,
			status: appsv1.StatefulSetStatus{ObservedGeneration: 2, Replicas: 3, ReadyReplicas: 2, CurrentReplicas: 3},
			msg:    "Waiting for 1 pods to be ready...",
			state:  rolloutWaiting,
		},
		{
			name: "kubectl: partition update completes when all replicas above the partition are updated", generation: 1,
			strategy: partitioned(2),
			status:   appsv1.StatefulSetStatus{ObservedGeneration: 2, Replicas: 3, ReadyReplicas: 3, CurrentReplicas: 2, UpdatedReplicas: 1},
			msg:      "partitioned roll out complete: 1 new pods have been updated...",
			state:    rolloutDone,
		},
		{
			// kubectl's table says done=true for this row but its viewer
			// returns false, and its test loop does not compare done.
			name: "kubectl: partition update is in progress if all pods above the partition have not been updated", generation: 1,
			strategy: partitioned(2),
			status:   appsv1.StatefulSetStatus{ObservedGeneration: 2, Replicas: 3, ReadyReplicas: 3, CurrentReplicas: 3},
			msg:      "Waiting for partitioned roll out to finish: 0 out of 1 new pods have been updated...",
			state:    rolloutWaiting,
		},
		{
			name: "partition 0 (the API default) waits for every replica", generation: 4,
			strategy: partitioned(0),
			status:   appsv1.StatefulSetStatus{ObservedGeneration: 4, Replicas: 3, ReadyReplicas: 3, CurrentReplicas: 1, UpdatedReplicas: 2},
			msg:      "Waiting for partitioned roll out to finish: 2 out of 3 new pods have been updated...",
			state:    rolloutWaiting,
		},
		{
			name: "kubectl: update completes when all replicas are current", generation: 1, strategy: rolling,
			status: appsv1.StatefulSetStatus{ObservedGeneration: 2, Replicas: 3, ReadyReplicas: 3, CurrentReplicas: 3, UpdatedReplicas: 3,
				CurrentRevision: "foo", UpdateRevision: "foo"},
			msg:   "statefulset rolling update complete 3 pods at revision foo...",
			state: rolloutDone,
		},
		{
			name: "without rollingUpdate, differing revisions are in progress", generation: 1, strategy: rolling,
			status: appsv1.StatefulSetStatus{ObservedGeneration: 1, Replicas: 3, ReadyReplicas: 3, CurrentReplicas: 2, UpdatedReplicas: 1,
				CurrentRevision: "foo-1", UpdateRevision: "foo-2"},
			msg:   "waiting for statefulset rolling update to complete 1 pods at revision foo-2...",
			state: rolloutWaiting,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := &appsv1.StatefulSet{
				ObjectMeta: metav1.ObjectMeta{Namespace: "bar", Name: "foo", Generation: tc.generation},
				Spec:       appsv1.StatefulSetSpec{Replicas: ptr[int32](3), UpdateStrategy: tc.strategy},
				Status:     tc.status,
			}
			msg, state := workload.JudgeStatefulSet(s)
			if msg != tc.msg || state != tc.state {
				t.Errorf("workload.JudgeStatefulSet() = %q, %s; want %q, %s", msg, state, tc.msg, tc.state)
			}
		})
	}
}

func TestJudgeDaemonSet(t *testing.T) {
	rolling := appsv1.DaemonSetUpdateStrategy{Type: appsv1.RollingUpdateDaemonSetStrategyType}
	tests := []struct {
		name       string
		generation int64
		strategy   appsv1.DaemonSetUpdateStrategy
		status     appsv1.DaemonSetStatus
		msg        string
		state      rolloutState
	}{
		{
			name: "kubectl test1: new pods not updated", generation: 0, strategy: rolling,
			status: appsv1.DaemonSetStatus{ObservedGeneration: 1, DesiredNumberScheduled: 1},
			msg:    `Waiting for daemon set "foo" rollout to finish: 0 out of 1 new pods have been updated...`,
			state:  rolloutWaiting,
		},
		{
			name: "kubectl test2: updated pods not available", generation: 1, strategy: rolling,
			status: appsv1.DaemonSetStatus{ObservedGeneration: 1, UpdatedNumberScheduled: 2, DesiredNumberScheduled: 2, NumberAvailable: 1},
			msg:    `Waiting for daemon set "foo" rollout to finish: 1 of 2 updated pods are available...`,
			state:  rolloutWaiting,
		},
		{
			name: "kubectl test3: rolled out", generation: 1, strategy: rolling,
			status: appsv1.DaemonSetStatus{ObservedGeneration: 1, UpdatedNumberScheduled: 2, DesiredNumberScheduled: 2, NumberAvailable: 2},
			msg:    `daemon set "foo" successfully rolled out`,
			state:  rolloutDone,
		},
		{
			name: "kubectl test4: generation not yet observed", generation: 2, strategy: rolling,
			status: appsv1.DaemonSetStatus{ObservedGeneration: 1, UpdatedNumberScheduled: 2, DesiredNumberScheduled: 2, NumberAvailable: 2},
			msg:    "Waiting for daemon set spec update to be observed...",
			state:  rolloutWaiting,
		},
		{
			name: "on delete cannot be judged", generation: 1,
			strategy: appsv1.DaemonSetUpdateStrategy{Type: appsv1.OnDeleteDaemonSetStrategyType},
			status:   appsv1.DaemonSetStatus{ObservedGeneration: 1},
			msg:      "rollout status is only available for RollingUpdate strategy type",
			state:    rolloutUnsupported,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			d := &appsv1.DaemonSet{
				ObjectMeta: metav1.ObjectMeta{Namespace: "bar", Name: "foo", Generation: tc.generation},
				Spec:       appsv1.DaemonSetSpec{UpdateStrategy: tc.strategy},
				Status:     tc.status,
			}
			msg, state := workload.JudgeDaemonSet(d)
			if msg != tc.msg || state != tc.state {
				t.Errorf("workload.JudgeDaemonSet() = %q, %s; want %q, %s", msg, state, tc.msg, tc.state)
			}
		})
	}
}

func ptr[T any](v T) *T { return &v }
