package workload

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/wait"

	"github.com/autorollbackd/autorollbackd/internal/kinds"
	"github.com/autorollbackd/autorollbackd/internal/policy"
)

// cachedObjects are workloads whose revisions sit among others the facts
// must leave out: not controlled by the workload, not selected by it, or in
// another namespace under the same controller UID.
func cachedObjects() []runtime.Object {
	d := &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: "n", UID: "d-1", Annotations: map[string]string{kinds.AnnotationDeploymentRevision: "9"}},
		Spec:       appsv1.DeploymentSpec{Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "web"}}},
	}
	rs := func(name, namespace, revision string, created time.Time, labels map[string]string, owner bool) *appsv1.ReplicaSet {
		r := replicaSet(d, name, revision, created, owner)
		r.Namespace, r.Labels = namespace, labels
		return r
	}
	api := &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: "api", Namespace: "n", UID: "d-2", Labels: map[string]string{policy.DefaultOptInLabel: "true"},
			Annotations: map[string]string{kinds.AnnotationDeploymentRevision: "2", kinds.AnnotationRolledBackAt: t0.Format(time.RFC3339)}},
		Spec: appsv1.DeploymentSpec{Paused: true, Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "api"}}},
	}
	apiRS := func(name, revision string, created time.Time) *appsv1.ReplicaSet {
		r := replicaSet(api, name, revision, created, true)
		r.Labels = map[string]string{"app": "api"}
		return r
	}
	web := map[string]string{"app": "web", "pod-template-hash": "x"}
	notController := rs("web-3", "n", "3", t0.Add(-4*time.Hour), web, true)
	notController.OwnerReferences[0].Controller = nil

	s := &appsv1.StatefulSet{
		ObjectMeta: metav1.ObjectMeta{Name: "db", Namespace: "n", UID: "s-1"},
		Spec: appsv1.StatefulSetSpec{Selector: &metav1.LabelSelector{
			MatchLabels:      map[string]string{"app": "db"},
			MatchExpressions: []metav1.LabelSelectorRequirement{{Key: "tier", Operator: metav1.LabelSelectorOpIn, Values: []string{"data", "cache"}}},
		}},
		Status: appsv1.StatefulSetStatus{UpdateRevision: "db-b"},
	}
	ds := &appsv1.DaemonSet{
		ObjectMeta: metav1.ObjectMeta{Name: "agent", Namespace: "n", UID: "ds-1"},
		Spec:       appsv1.DaemonSetSpec{Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "agent"}}},
	}
	cr := func(owner metav1.Object, kind, name string, rev int64, labels map[string]string) *appsv1.ControllerRevision {
		return &appsv1.ControllerRevision{
			ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "n", Labels: labels, OwnerReferences: owned(owner, kind),
				CreationTimestamp: metav1.NewTime(t0.Add(-time.Duration(10-rev) * time.Hour))},
			Revision: rev,
		}
	}
	dbLabels := map[string]string{"app": "db", "tier": "data"}
	return []runtime.Object{
		api, apiRS("api-1", "1", t0.Add(-time.Hour)), apiRS("api-2", "2", t0.Add(-time.Minute)),
		d,
		rs("web-7", "n", "7", t0.Add(-3*time.Hour), web, true),
		rs("web-8", "n", "8", t0.Add(-2*time.Hour), web, true),
		rs("web-9", "n", "9", t0.Add(-time.Hour), web, true),
		rs("web-4", "n", "4", t0, map[string]string{"app": "other"}, true), // not selected
		rs("web-5", "n", "5", t0, web, false),                              // not controlled
		rs("web-6", "other", "6", t0, web, true),                           // another namespace
		notController,
		s, ds,
		cr(s, "StatefulSet", "db-a", 1, dbLabels),
		cr(s, "StatefulSet", "db-b", 5, dbLabels),
		cr(s, "StatefulSet", "db-c", 3, map[string]string{"app": "db", "tier": "web"}), // not selected
		cr(ds, "DaemonSet", "agent-a", 4, map[string]string{"app": "agent"}),
		cr(ds, "DaemonSet", "agent-b", 5, map[string]string{"app": "agent"}),
		cr(s, "DaemonSet", "agent-c", 6, map[string]string{"app": "agent"}), // controlled by the StatefulSet
	}
}

// TestCachedFacts checks the indexed cache against a scan of the cache and
// against the API server.
// inUTC is w with its times in UTC: the cache decodes them from protobuf,
// in the local time zone, and the fake client returns them as given.
func inUTC(w *policy.Workload) *policy.Workload {
	if w == nil {
		return nil
	}
	c := *w
	c.RolloutStartedAt, c.LastAutoRollbackAt = c.RolloutStartedAt.UTC(), c.LastAutoRollbackAt.UTC()
	return &c
}

func TestCachedFacts(t *testing.T) {
	inf, client := fakeInformers(t, "", cachedObjects()...)
	indexed := NewCached(inf)
	again := NewCached(inf) // the index exists already
	runInformers(t, inf)
	afterStart := NewCached(inf)
	scanned := Cached{
		Deployments: indexed.Deployments, ReplicaSets: indexed.ReplicaSets,
		StatefulSets: indexed.StatefulSets, DaemonSets: indexed.DaemonSets, ControllerRevisions: indexed.ControllerRevisions,
	}
	for name, c := range map[string]Cached{"NewCached": indexed, "NewCached again": again, "NewCached after the start": afterStart} {
		if c.replicaSetsByController == nil || c.revisionsByController == nil {
			t.Errorf("%s: no index", name)
		}
	}

	ctx := context.Background()
	for _, tc := range []struct {
		ref      policy.Ref
		revision int64
		older    []int64
	}{
		{policy.Ref{Kind: policy.KindDeployment, Namespace: "n", Name: "web"}, 9, []int64{8, 7}},
		{policy.Ref{Kind: policy.KindStatefulSet, Namespace: "n", Name: "db"}, 5, []int64{1}},
		{policy.Ref{Kind: policy.KindDaemonSet, Namespace: "n", Name: "agent"}, 5, []int64{4}},
	} {
		t.Run(string(tc.ref.Kind), func(t *testing.T) {
			want, err := Live{Client: client}.Facts(ctx, tc.ref)
			if err != nil {
				t.Fatalf("Live: %v", err)
			}
			if want.Revision != tc.revision || !reflect.DeepEqual(want.Older, tc.older) {
				t.Fatalf("Live: revision %d, older %v; want %d, %v", want.Revision, want.Older, tc.revision, tc.older)
			}
			for name, c := range map[string]Cached{"indexed": indexed, "again": again, "after start": afterStart, "scanned": scanned} {
				got, err := c.Facts(ctx, tc.ref)
				if err != nil {
					t.Fatalf("%s: %v", name, err)
				}
				if !reflect.DeepEqual(inUTC(got), inUTC(want)) {
					t.Errorf("%s:\n%+v\nwant (Live)\n%+v", name, *got, *want)
				}
			}
		})
	}

	missing := policy.Ref{Kind: policy.KindDeployment, Namespace: "n", Name: "missing"}
	if w, err := indexed.Facts(ctx, missing); w != nil || err != nil {
		t.Errorf("Facts(%s) = %v, %v; want nil, nil", missing, w, err)
	}
}

func TestLabelSelector(t *testing.T) {
	sets := []map[string]string{
		nil,
		{},
		{"app": "web"},
		{"app": "web", "tier": "data"},
		{"app": ""},
		{"tier": "data"},
	}
	for _, sel := range []*metav1.LabelSelector{
		nil,
		{},
		{MatchLabels: map[string]string{"app": "web"}},
		{MatchLabels: map[string]string{"app": "web", "tier": "data"}},
		{MatchLabels: map[string]string{"app": ""}},
		{MatchExpressions: []metav1.LabelSelectorRequirement{{Key: "tier", Operator: metav1.LabelSelectorOpExists}}},
		{MatchLabels: map[string]string{"app": "web"}, MatchExpressions: []metav1.LabelSelectorRequirement{{Key: "tier", Operator: metav1.LabelSelectorOpDoesNotExist}}},
	} {
		want, err := metav1.LabelSelectorAsSelector(sel)
		if err != nil {
			t.Fatal(err)
		}
		got, err := newLabelSelector(sel)
		if err != nil {
			t.Fatalf("newLabelSelector(%v): %v", sel, err)
		}
		for _, set := range sets {
			if g, w := got.matches(set), want.Matches(labels.Set(set)); g != w {
				t.Errorf("selector %v on %v: matches = %v, want %v", sel, set, g, w)
			}
		}
	}
	if _, err := newLabelSelector(&metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{{Key: "a", Operator: "Near"}}}); err == nil {
		t.Error("newLabelSelector accepted an unknown operator")
	}
}

// TestTargetFacts checks that the target facts from the caches are the full
// facts without a Deployment's revision history, and that the target checks
// of the policy decide the same on either.
func TestTargetFacts(t *testing.T) {
	inf, client := fakeInformers(t, "n", cachedObjects()...)
	cached := NewCached(inf)
	runInformers(t, inf)
	p, err := policy.Compile(policy.DefaultConfig())
	if err != nil {
		t.Fatal(err)
	}
	sources := map[string]interface {
		Facts(context.Context, policy.Ref) (*policy.Workload, error)
	}{"Cached": cached, "Caches": Caches{"n": cached}, "Live": Live{Client: client}}

	ctx := context.Background()
	for _, ref := range []policy.Ref{
		{Kind: policy.KindDeployment, Namespace: "n", Name: "web"},
		{Kind: policy.KindDeployment, Namespace: "n", Name: "api"},
		{Kind: policy.KindStatefulSet, Namespace: "n", Name: "db"},
		{Kind: policy.KindDaemonSet, Namespace: "n", Name: "agent"},
		{Kind: policy.KindDeployment, Namespace: "n", Name: "missing"},
		{Kind: policy.KindDeployment, Namespace: "unwatched", Name: "web"},
	} {
		for name, src := range sources {
			t.Run(name+"/"+ref.String(), func(t *testing.T) {
				want, err := src.Facts(ctx, ref)
				if err != nil {
					t.Fatalf("Facts: %v", err)
				}
				got, err := TargetFacts(ctx, src, ref)
				if err != nil {
					t.Fatalf("TargetFacts: %v", err)
				}
				if want == nil || got == nil {
					if want != nil || got != nil {
						t.Fatalf("TargetFacts = %v, want %v", got, want)
					}
					return
				}
				if ref.Kind == policy.KindDeployment && name != "Live" {
					// What TargetFacts leaves out.
					trimmed := *want
					trimmed.RolloutStartedAt, trimmed.PreviousRevision, trimmed.Older = time.Time{}, 0, nil
					want = &trimmed
				}
				if !reflect.DeepEqual(got, want) {
					t.Errorf("TargetFacts =\n%+v\nwant\n%+v", *got, *want)
				}
				in := policy.Input{
					Alert:  policy.Alert{Fingerprint: "f", Status: "firing", Labels: map[string]string{"impact": "service_down"}, StartsAt: t0},
					Target: ref, Workload: want, Now: t0,
				}
				onFull := p.Screen(in)
				in.Workload = got
				if onTarget := p.Screen(in); !reflect.DeepEqual(onTarget, onFull) {
					t.Errorf("Screen on the target facts =\n%s\nwant, as on the full facts\n%s", onTarget, onFull)
				}
			})
		}
	}
}

// TestCachedRevisionPods checks the pods of a revision found from the cache
// against those found from the API server, and what a cache that does not
// hold the workload or the revision says.
func TestCachedRevisionPods(t *testing.T) {
	inf, client := fakeInformers(t, "", cachedObjects()...)
	cached := NewCached(inf)
	runInformers(t, inf)
	caches := Caches{"n": cached}
	ctx := context.Background()
	for _, tc := range []struct {
		ref      policy.Ref
		revision int64
	}{
		{policy.Ref{Kind: policy.KindDeployment, Namespace: "n", Name: "web"}, 8},
		{policy.Ref{Kind: policy.KindStatefulSet, Namespace: "n", Name: "db"}, 5},
		{policy.Ref{Kind: policy.KindDaemonSet, Namespace: "n", Name: "agent"}, 4},
	} {
		want, err := Live{Client: client}.RevisionPods(ctx, tc.ref, tc.revision)
		if err != nil {
			t.Fatalf("Live %s: %v", tc.ref, err)
		}
		for name, src := range map[string]interface {
			RevisionPods(context.Context, policy.Ref, int64) (PodSet, error)
		}{"Cached": cached, "Caches": caches} {
			got, err := src.RevisionPods(ctx, tc.ref, tc.revision)
			if err != nil || !reflect.DeepEqual(got, want) {
				t.Errorf("%s %s revision %d = %+v, %v; want (Live) %+v", name, tc.ref, tc.revision, got, err, want)
			}
		}
	}
	web := policy.Ref{Kind: policy.KindDeployment, Namespace: "n", Name: "web"}
	if _, err := caches.RevisionPods(ctx, web, 3); !errors.Is(err, ErrNoRevision) {
		t.Errorf("revision 3 (not controlled): %v, want ErrNoRevision", err)
	}
	elsewhere := policy.Ref{Kind: policy.KindDeployment, Namespace: "other", Name: "web"}
	if _, err := caches.Lookup(elsewhere); !apierrors.IsNotFound(err) {
		t.Errorf("Lookup in a namespace no cache covers: %v, want NotFound", err)
	}
	if _, err := caches.RevisionPods(ctx, elsewhere, 9); !apierrors.IsNotFound(err) {
		t.Errorf("RevisionPods in a namespace no cache covers: %v, want NotFound", err)
	}
}

// TargetFacts remembers a workload's target facts while the informer holds
// it at the same resourceVersion, hands each caller a copy of its own, and
// remembers at most targetMemo workloads.
func TestTargetFactsRemembered(t *testing.T) {
	var objs []runtime.Object
	for i := range targetMemo + 8 {
		objs = append(objs, &appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{
			Name: fmt.Sprintf("app-%d", i), Namespace: "n", ResourceVersion: "1",
			Labels: map[string]string{"team": "a"}, Annotations: map[string]string{kinds.AnnotationDeploymentRevision: "3"}}})
	}
	inf, client := fakeInformers(t, "n", objs...)
	cached := NewCached(inf)
	runInformers(t, inf)
	ctx := context.Background()
	ref := policy.Ref{Kind: policy.KindDeployment, Namespace: "n", Name: "app-0"}

	first, err := TargetFacts(ctx, cached, ref)
	if err != nil || first == nil {
		t.Fatalf("TargetFacts = %v, %v", first, err)
	}
	first.Revision = 99
	second, err := TargetFacts(ctx, cached, ref)
	if err != nil || second == nil {
		t.Fatalf("TargetFacts = %v, %v", second, err)
	}
	if second.Revision != 3 || second == first {
		t.Errorf("a write into one answer reached the next: revision %d", second.Revision)
	}
	if !sameMap(first.Labels, second.Labels) {
		t.Error("the second answer was decoded again, not remembered")
	}

	d := objs[0].(*appsv1.Deployment).DeepCopy()
	d.ResourceVersion, d.Labels = "2", map[string]string{"team": "b"}
	if _, err := client.AppsV1().Deployments("n").Update(ctx, d, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := wait.PollUntilContextTimeout(ctx, 10*time.Millisecond, 10*time.Second, true, func(ctx context.Context) (bool, error) {
		w, err := TargetFacts(ctx, cached, ref)
		return err == nil && w != nil && w.Labels["team"] == "b", err
	}); err != nil {
		t.Errorf("the facts of resourceVersion 1 outlived its update: %v", err)
	}

	for i := range targetMemo + 8 {
		if _, err := TargetFacts(ctx, cached, policy.Ref{Kind: policy.KindDeployment, Namespace: "n", Name: fmt.Sprintf("app-%d", i)}); err != nil {
			t.Fatal(err)
		}
	}
	if n := cached.targets.Len(); n != targetMemo {
		t.Errorf("%d workloads remembered, want at most %d", n, targetMemo)
	}
}

// sameMap reports whether a and b are one map, not only equal ones.
func sameMap(a, b map[string]string) bool {
	return a != nil && reflect.ValueOf(a).UnsafePointer() == reflect.ValueOf(b).UnsafePointer()
}
