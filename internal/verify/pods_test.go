package verify

import (
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
)

func TestJudgePods(t *testing.T) {
	const owner = types.UID("rs-new")
	pod := func(name string, mutate ...func(*corev1.Pod)) corev1.Pod {
		p := corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Name: name, OwnerReferences: []metav1.OwnerReference{{UID: owner, Controller: ptr(true)}}},
			Status: corev1.PodStatus{
				Phase:      corev1.PodRunning,
				Conditions: []corev1.PodCondition{{Type: corev1.PodReady, Status: corev1.ConditionTrue}},
			},
		}
		for _, m := range mutate {
			m(&p)
		}
		return p
	}
	notReady := func(p *corev1.Pod) {
		p.Status.Conditions = []corev1.PodCondition{{Type: corev1.PodReady, Status: corev1.ConditionFalse, Reason: "ContainersNotReady", Message: "containers with unready status: [app]"}}
	}
	unschedulable := func(p *corev1.Pod) {
		p.Status.Phase = corev1.PodPending
		p.Status.Conditions = []corev1.PodCondition{{Type: corev1.PodScheduled, Status: corev1.ConditionFalse, Reason: "Unschedulable", Message: "0/1 nodes are available"}}
	}
	crashLooping := func(p *corev1.Pod) {
		notReady(p)
		p.Status.ContainerStatuses = []corev1.ContainerStatus{{Name: "app", State: corev1.ContainerState{Waiting: &corev1.ContainerStateWaiting{Reason: "CrashLoopBackOff"}}}}
	}
	terminating := func(p *corev1.Pod) { p.DeletionTimestamp = &metav1.Time{} }
	otherOwner := func(p *corev1.Pod) { p.OwnerReferences[0].UID = "rs-old" }

	tests := []struct {
		name    string
		desired int32
		pods    []corev1.Pod
		msg     string
		ok      bool
	}{
		{
			name: "all ready", desired: 2, pods: []corev1.Pod{pod("b"), pod("a")},
			msg: "All 2 pods of the deployment at revision abc are Running and Ready (2 desired).", ok: true,
		},
		{
			name: "more ready than desired (surge) passes", desired: 1, pods: []corev1.Pod{pod("a"), pod("b")},
			msg: "All 2 pods of the deployment at revision abc are Running and Ready (1 desired).", ok: true,
		},
		{
			name: "zero desired and none exist passes", desired: 0, pods: nil,
			msg: "All 0 pods of the deployment at revision abc are Running and Ready (0 desired).", ok: true,
		},
		{
			name: "too few pods", desired: 3, pods: []corev1.Pod{pod("a")},
			msg: "1 of 3 desired pods of the deployment at revision abc are Running and Ready; no other pods exist at that revision.",
		},
		{
			name: "not ready pods are named with the reason", desired: 3,
			pods: []corev1.Pod{pod("a"), pod("c", crashLooping), pod("b", unschedulable)},
			msg:  "1 of 3 desired pods of the deployment at revision abc are Running and Ready; not ready: b (Pending, Unschedulable: 0/1 nodes are available), c (Running, container app waiting: CrashLoopBackOff).",
		},
		{
			name: "ready condition reason when no container says more", desired: 1, pods: []corev1.Pod{pod("a", notReady)},
			msg: "0 of 1 desired pods of the deployment at revision abc are Running and Ready; not ready: a (Running, ContainersNotReady: containers with unready status: [app]).",
		},
		{
			name: "terminating and foreign pods are left out", desired: 2,
			pods: []corev1.Pod{pod("a"), pod("b", terminating), pod("c", otherOwner, notReady)},
			msg:  "1 of 2 desired pods of the deployment at revision abc are Running and Ready; no other pods exist at that revision.",
		},
		{
			name: "at most five not ready pods are named", desired: 7,
			pods: []corev1.Pod{pod("p1", unschedulable), pod("p2", unschedulable), pod("p3", unschedulable), pod("p4", unschedulable),
				pod("p5", unschedulable), pod("p6", unschedulable), pod("p7", unschedulable)},
			msg: "0 of 7 desired pods of the deployment at revision abc are Running and Ready; not ready: " +
				"p1 (Pending, Unschedulable: 0/1 nodes are available), p2 (Pending, Unschedulable: 0/1 nodes are available), " +
				"p3 (Pending, Unschedulable: 0/1 nodes are available), p4 (Pending, Unschedulable: 0/1 nodes are available), " +
				"p5 (Pending, Unschedulable: 0/1 nodes are available), and 2 more.",
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			msg, ok := judgePods("deployment", "abc", tc.desired, owner, tc.pods)
			if msg != tc.msg || ok != tc.ok {
				t.Errorf("judgePods() = %q, %t\nwant          %q, %t", msg, ok, tc.msg, tc.ok)
			}
		})
	}
}
