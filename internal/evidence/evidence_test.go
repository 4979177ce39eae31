package evidence

import (
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"

	"github.com/autorollbackd/autorollbackd/internal/policy"
)

func TestTail(t *testing.T) {
	tests := []struct {
		name      string
		log       string
		n, max    int
		lines     []string
		truncated bool
	}{
		{name: "empty", log: "", n: 5, max: 100},
		{name: "whole", log: "a\nb\n", n: 5, max: 100, lines: []string{"a", "b"}},
		{name: "no final newline", log: "a\nb", n: 5, max: 100, lines: []string{"a", "b"}},
		{name: "crlf", log: "a\r\nb\r\n", n: 5, max: 100, lines: []string{"a", "b"}},
		{name: "last n lines", log: "1\n2\n3\n4\n5\n", n: 2, max: 100, lines: []string{"4", "5"}, truncated: true},
		{
			name: "last bytes from a line boundary", log: "first line\nsecond\nthird\n", n: 5, max: 14,
			lines: []string{"second", "third"}, truncated: true,
		},
		{
			name: "one line longer than max keeps its end", log: strings.Repeat("x", 50) + "END\n", n: 5, max: 10,
			lines: []string{"xxxxxxEND"}, truncated: true, // and the newline
		},
		{
			name: "a cut never splits a character", log: "ééééé\n", n: 5, max: 4, // 10 bytes, then the newline
			lines: []string{"é"}, truncated: true,
		},
		{
			name: "a large log written in pieces", log: strings.Repeat("line\n", 10000) + "last\n", n: 3, max: 64,
			lines: []string{"line", "line", "last"}, truncated: true,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			l, err := tail(strings.NewReader(tc.log), tc.n, tc.max)
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(l.Lines, tc.lines) || l.Truncated != tc.truncated {
				t.Errorf("tail = %q truncated=%v, want %q truncated=%v", l.Lines, l.Truncated, tc.lines, tc.truncated)
			}
			if size := len(strings.Join(l.Lines, "\n")); size > tc.max {
				t.Errorf("kept %d bytes, more than %d", size, tc.max)
			}
		})
	}
}

func TestTailTooLongToRead(t *testing.T) {
	l, err := tail(strings.NewReader(strings.Repeat("x", maxLogRead+100)), 5, 8)
	if err == nil || !strings.Contains(err.Error(), "longer than") {
		t.Errorf("err = %v, want one saying the log was longer than could be read", err)
	}
	if !l.Truncated || !slices.Equal(l.Lines, []string{"xxxxxxxx"}) {
		t.Errorf("tail = %q truncated=%v, want the last 8 bytes read, truncated", l.Lines, l.Truncated)
	}
}

func TestCutMessage(t *testing.T) {
	var cut Truncation
	if got := cutMessage("short", 10, &cut); got != "short" || cut.Messages != 0 {
		t.Errorf("cutMessage(short) = %q, %d cut", got, cut.Messages)
	}
	if got := cutMessage("panic: aé", 9, &cut); got != "panic: a…" || cut.Messages != 1 {
		t.Errorf("cutMessage = %q, %d cut; want the first 8 bytes (not half of é) and an ellipsis", got, cut.Messages)
	}
}

func pod(name string, ready bool, restarts int32) *corev1.Pod {
	status := corev1.ConditionFalse
	if ready {
		status = corev1.ConditionTrue
	}
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec:       corev1.PodSpec{NodeName: "node-0", Containers: []corev1.Container{{Name: "app", Image: "app:v2"}}},
		Status: corev1.PodStatus{
			Phase:             corev1.PodRunning,
			Conditions:        []corev1.PodCondition{{Type: corev1.PodReady, Status: status}},
			ContainerStatuses: []corev1.ContainerStatus{{Name: "app", Ready: ready, RestartCount: restarts}},
		},
	}
}

func TestChoosePods(t *testing.T) {
	pods := []*corev1.Pod{pod("e", true, 0), pod("d", true, 5), pod("c", false, 0), pod("b", false, 7), pod("a", true, 0)}
	var got []string
	for _, p := range choosePods(pods, 4) {
		got = append(got, p.Name)
	}
	// Not ready first, then the most restarts, then by name.
	if want := []string{"b", "c", "d", "a"}; !slices.Equal(got, want) {
		t.Errorf("choosePods = %v, want %v", got, want)
	}
}

func TestDescribe(t *testing.T) {
	p := pod("web-1", false, 3)
	p.Spec.InitContainers = []corev1.Container{{Name: "migrate", Image: "migrate:v2"}}
	p.Status.InitContainerStatuses = []corev1.ContainerStatus{{Name: "migrate", Ready: true,
		State: corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{Reason: "Completed"}}}}
	finished := time.Date(2026, 12, 2, 14, 0, 0, 0, time.UTC)
	p.Status.ContainerStatuses[0].State = corev1.ContainerState{Waiting: &corev1.ContainerStateWaiting{Reason: "CrashLoopBackOff"}}
	p.Status.ContainerStatuses[0].LastTerminationState = corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{
		Reason: "Error", ExitCode: 2, Message: strings.Repeat("m", 40), FinishedAt: metav1.NewTime(finished)}}
	pending := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "web-2"},
		Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "app", Image: "app:v2"}}},
		Status: corev1.PodStatus{Phase: corev1.PodPending, Conditions: []corev1.PodCondition{{
			Type: corev1.PodScheduled, Status: corev1.ConditionFalse, Reason: "Unschedulable", Message: "0/1 nodes are available"}}},
	}
	var cut Truncation
	limits := Limits{MessageBytes: 30}.withDefaults()
	got := []Pod{describe(p, limits, &cut), describe(pending, limits, &cut)}
	want := []Pod{{
		Name: "web-1", Phase: corev1.PodRunning, Node: "node-0", Restarts: 3,
		Containers: []Container{
			{Name: "migrate", Init: true, Image: "migrate:v2", Ready: true, State: "terminated: Completed",
				LastTermination: &Termination{Reason: "Completed"}},
			{Name: "app", Image: "app:v2", RestartCount: 3, State: "waiting: CrashLoopBackOff",
				LastTermination: &Termination{Reason: "Error", ExitCode: 2, Message: strings.Repeat("m", 30) + "…", FinishedAt: finished}},
		},
	}, {
		Name: "web-2", Phase: corev1.PodPending, Reason: "Unschedulable", Message: "0/1 nodes are available",
		Containers: []Container{{Name: "app", Image: "app:v2"}},
	}}
	if g, w := mustJSON(t, got), mustJSON(t, want); g != w {
		t.Errorf("describe =\n%s\nwant\n%s", g, w)
	}
	if cut.Messages != 1 {
		t.Errorf("messages cut = %d, want 1", cut.Messages)
	}
}

func mustJSON(t *testing.T, v any) string {
	t.Helper()
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// TestFitTotalBytes: the snapshot's JSON never exceeds TotalBytes; the
// first pods' logs are kept whole, a later one is cut to its last lines,
// the rest are left out, and the counts say so.
func TestFitTotalBytes(t *testing.T) {
	const total = 2048
	s := Snapshot{TakenAt: time.Now().UTC(), Target: policy.Ref{Kind: policy.KindDeployment, Namespace: "ns", Name: "web"}, Revision: 2, Hash: "abc", PodsFound: 6}
	logs := map[logRef]Log{}
	for i := range 6 {
		s.Pods = append(s.Pods, Pod{Name: fmt.Sprintf("web-%d", i), Phase: corev1.PodRunning, Containers: []Container{{Name: "app"}}})
		var lines []string
		for j := range 10 {
			lines = append(lines, fmt.Sprintf("pod %d line %d %s", i, j, strings.Repeat(".", 20)))
		}
		logs[logRef{pod: i}] = Log{Lines: lines}
	}
	var cut Truncation
	fit(&s, logs, Limits{TotalBytes: total}.withDefaults(), &cut)
	s.Truncated = &cut
	size := len(mustCompactJSON(t, s))
	if size > total {
		t.Errorf("snapshot is %d bytes of JSON, over the %d limit", size, total)
	}
	var kept []int
	for _, p := range s.Pods {
		n := 0
		for _, l := range p.Containers[0].Logs {
			n = len(l.Lines)
		}
		kept = append(kept, n)
	}
	t.Logf("lines kept per pod: %v; %d bytes; %+v", kept, size, cut)
	if len(s.Pods) != 6 || kept[0] != 10 || kept[len(kept)-1] != 0 {
		t.Errorf("lines kept per pod = %v, want all 6 pods, the first log whole and the last left out", kept)
	}
	cutAt := slices.IndexFunc(kept, func(n int) bool { return n < 10 })
	if kept[cutAt] == 0 || cut.LogsCut != 1 || cut.LogsOmitted != len(kept)-cutAt-1 {
		t.Errorf("lines kept per pod = %v, truncation %+v; want one log cut to its last lines and the later ones counted as left out", kept, cut)
	}
	if cut.LogsCut+cut.LogsOmitted == 0 || size < total-400 {
		t.Errorf("snapshot %d bytes, truncation %+v: the limit was not used up", size, cut)
	}
}

// TestFitPodsOverTotal: pods whose states alone exceed TotalBytes are left
// out and counted.
func TestFitPodsOverTotal(t *testing.T) {
	s := Snapshot{Target: policy.Ref{Kind: policy.KindDeployment, Namespace: "ns", Name: "web"}, PodsFound: 10}
	for i := range 10 {
		s.Pods = append(s.Pods, Pod{Name: fmt.Sprintf("web-%d", i), Message: strings.Repeat("m", 200), Containers: []Container{{Name: "app"}}})
	}
	var cut Truncation
	fit(&s, nil, Limits{TotalBytes: 1024}.withDefaults(), &cut)
	s.Truncated = &cut
	if size := len(mustCompactJSON(t, s)); size > 1024 || len(s.Pods) == 0 || len(s.Pods)+cut.Pods != 10 {
		t.Errorf("%d pods kept, %d counted as left out, %d bytes; want some kept, the rest counted, at most 1024 bytes", len(s.Pods), cut.Pods, size)
	}
}

func podNamesOf(pods []Pod) []string {
	var names []string
	for _, p := range pods {
		names = append(names, p.Name)
	}
	return names
}

func mustCompactJSON(t *testing.T, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestCollectLimits runs Collect over a fake clientset, for the limits
// alone: the fake serves "fake logs" for every container.
func TestCollectLimits(t *testing.T) {
	yes := true
	d := &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: "ns", UID: "d-uid"},
		Spec:       appsv1.DeploymentSpec{Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "web"}}},
	}
	rs := func(name, hash, revision string) *appsv1.ReplicaSet {
		return &appsv1.ReplicaSet{ObjectMeta: metav1.ObjectMeta{
			Name: name, Namespace: "ns", UID: types.UID("rs-" + hash),
			Labels:          map[string]string{"app": "web", "pod-template-hash": hash},
			Annotations:     map[string]string{"deployment.kubernetes.io/revision": revision},
			OwnerReferences: []metav1.OwnerReference{{UID: d.UID, Controller: &yes}},
		}}
	}
	objs := []runtime.Object{d, rs("web-good", "good", "1"), rs("web-bad", "bad", "2")}
	for i := range 25 {
		hash := "bad"
		if i%5 == 0 {
			hash = "good"
		}
		p := pod(fmt.Sprintf("web-%s-%02d", hash, i), i%2 == 0, 0)
		if i == 1 {
			p.Status.ContainerStatuses[0].RestartCount = 2 // the first pod recorded
		}
		if i == 3 {
			p.Spec.NodeName = "" // the second
			p.Status.Phase = corev1.PodPending
		}
		p.Namespace = "ns"
		p.Labels = map[string]string{"app": "web", "pod-template-hash": hash}
		p.OwnerReferences = []metav1.OwnerReference{{UID: types.UID("rs-" + hash), Controller: &yes}}
		objs = append(objs, p)
	}
	client := fake.NewClientset(objs...)
	ref := policy.Ref{Kind: policy.KindDeployment, Namespace: "ns", Name: "web"}

	s, err := Collect(t.Context(), client, ref, 2, Limits{Pods: 4})
	if err != nil {
		t.Fatal(err)
	}
	if s.PodsFound != 20 || len(s.Pods) != 4 || s.Truncated == nil || s.Truncated.Pods != 16 || s.Hash != "bad" {
		t.Fatalf("found %d, kept %d, hash %q, truncation %+v; want 20 found, 4 kept, hash bad, 16 counted as not recorded",
			s.PodsFound, len(s.Pods), s.Hash, s.Truncated)
	}
	if got := podNamesOf(s.Pods); !slices.Equal(got, []string{"web-bad-01", "web-bad-03", "web-bad-07", "web-bad-09"}) {
		t.Errorf("pods recorded = %v, want the restarted one, then the other not ready ones by name", got)
	}
	for i, p := range s.Pods {
		if !strings.HasPrefix(p.Name, "web-bad-") || p.Ready {
			t.Errorf("pod %s (ready %v) recorded; want only the bad revision's, not ready ones first", p.Name, p.Ready)
		}
		want := []Log{{Lines: []string{"fake logs"}}}
		switch i {
		case 0:
			want = []Log{{Previous: true, Lines: []string{"fake logs"}}, {Lines: []string{"fake logs"}}}
		case 1:
			want = []Log{{Error: "not read: the pod is not scheduled to a node"}}
		}
		if got := p.Containers[0].Logs; mustJSON(t, got) != mustJSON(t, want) {
			t.Errorf("pod %s logs = %+v, want %+v", p.Name, got, want)
		}
	}
	// What was asked of the API server: each scheduled pod's log, the
	// previous one of the restarted container, the last 50 lines.
	var asked []string
	for _, a := range client.Actions() {
		if a.GetSubresource() != "log" {
			continue
		}
		opts := a.(k8stesting.GenericAction).GetValue().(*corev1.PodLogOptions)
		asked = append(asked, fmt.Sprintf("%s previous=%v tail=%d limit=%d", opts.Container, opts.Previous, *opts.TailLines, *opts.LimitBytes))
	}
	slices.Sort(asked)
	if want := []string{"app previous=false tail=50 limit=1048576", "app previous=false tail=50 limit=1048576", "app previous=false tail=50 limit=1048576", "app previous=true tail=50 limit=1048576"}; !slices.Equal(asked, want) {
		t.Errorf("log requests = %v, want %v", asked, want)
	}

	s, err = Collect(t.Context(), client, ref, 2, Limits{TotalBytes: 3000})
	if err != nil {
		t.Fatal(err)
	}
	if size := len(mustCompactJSON(t, s)); size > 3000 || s.Truncated == nil || s.Truncated.Pods+len(s.Pods) != 20 {
		t.Errorf("snapshot %d bytes with %d pods, truncation %+v; want at most 3000 bytes and the pods left out counted", size, len(s.Pods), s.Truncated)
	}
}
