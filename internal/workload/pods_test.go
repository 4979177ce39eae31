package workload

import (
	"testing"

	"github.com/autorollbackd/autorollbackd/internal/kinds"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
)

func TestPodSets(t *testing.T) {
	selector := &metav1.LabelSelector{MatchLabels: map[string]string{"app": "web"}}
	d := &appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Name: "web", UID: "d"}, Spec: appsv1.DeploymentSpec{Selector: selector}}
	rs := &appsv1.ReplicaSet{ObjectMeta: metav1.ObjectMeta{Name: "web-abc", UID: "rs", Labels: map[string]string{kinds.LabelPodTemplateHash: "abc"}}}
	s := &appsv1.StatefulSet{ObjectMeta: metav1.ObjectMeta{Name: "web", UID: "s"}, Spec: appsv1.StatefulSetSpec{Selector: selector}}
	ds := &appsv1.DaemonSet{ObjectMeta: metav1.ObjectMeta{Name: "web", UID: "ds"}, Spec: appsv1.DaemonSetSpec{Selector: selector}}
	labelled := &appsv1.ControllerRevision{ObjectMeta: metav1.ObjectMeta{Name: "web-xyz", Labels: map[string]string{kinds.LabelControllerRevisionHash: "xyz"}}}
	unlabelled := &appsv1.ControllerRevision{ObjectMeta: metav1.ObjectMeta{Name: "web-uvw"}}

	pod := func(owner string, labels map[string]string) *corev1.Pod {
		yes := true
		return &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Labels: labels, OwnerReferences: []metav1.OwnerReference{{UID: "x", Controller: nil}, {UID: types.UID(owner), Controller: &yes}}}}
	}
	must := func(ps PodSet, err error) PodSet {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		return ps
	}
	tests := []struct {
		name string
		set  PodSet
		hash string
		pod  *corev1.Pod
		has  bool
	}{
		{"replicaset's pod", must(ReplicaSetPods(d, rs)), "abc", pod("rs", map[string]string{"app": "web", kinds.LabelPodTemplateHash: "abc"}), true},
		{"another revision's pod", must(ReplicaSetPods(d, rs)), "abc", pod("rs", map[string]string{"app": "web", kinds.LabelPodTemplateHash: "def"}), false},
		{"pod of another controller", must(ReplicaSetPods(d, rs)), "abc", pod("rs-other", map[string]string{"app": "web", kinds.LabelPodTemplateHash: "abc"}), false},
		{"pod outside the selector", must(ReplicaSetPods(d, rs)), "abc", pod("rs", map[string]string{"app": "api", kinds.LabelPodTemplateHash: "abc"}), false},
		{"statefulset pod, by revision name", must(StatefulSetPods(s, "web-5f")), "web-5f", pod("s", map[string]string{"app": "web", kinds.LabelControllerRevisionHash: "web-5f"}), true},
		{"daemonset pod, by the revision's label", must(DaemonSetPods(ds, labelled)), "xyz", pod("ds", map[string]string{"app": "web", kinds.LabelControllerRevisionHash: "xyz"}), true},
		{"daemonset pod, by the end of the revision's name", must(DaemonSetPods(ds, unlabelled)), "uvw", pod("ds", map[string]string{"app": "web", kinds.LabelControllerRevisionHash: "uvw"}), true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if tc.set.Hash != tc.hash {
				t.Errorf("Hash = %q, want %q", tc.set.Hash, tc.hash)
			}
			if got := tc.set.Has(tc.pod); got != tc.has {
				t.Errorf("Has = %v, want %v (selector %s)", got, tc.has, tc.set.Selector)
			}
		})
	}
}
