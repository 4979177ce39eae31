package workload

import (
	"slices"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/autorollbackd/autorollbackd/internal/kinds"
	"github.com/autorollbackd/autorollbackd/internal/policy"
)

var t0 = time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)

func owned(owner metav1.Object, kind string) []metav1.OwnerReference {
	yes := true
	return []metav1.OwnerReference{{APIVersion: "apps/v1", Kind: kind, Name: owner.GetName(), UID: owner.GetUID(), Controller: &yes}}
}

func replicaSet(d *appsv1.Deployment, name, revision string, created time.Time, owner bool) *appsv1.ReplicaSet {
	rs := &appsv1.ReplicaSet{ObjectMeta: metav1.ObjectMeta{
		Name: name, Namespace: d.Namespace,
		Annotations:       map[string]string{kinds.AnnotationDeploymentRevision: revision},
		CreationTimestamp: metav1.NewTime(created),
	}}
	if owner {
		rs.OwnerReferences = owned(d, "Deployment")
	}
	return rs
}

func TestDeploymentFacts(t *testing.T) {
	d := &appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{
		Name: "event-service", Namespace: "production", UID: types.UID("d-1"),
		Labels: map[string]string{"autorollback.io/enabled": "true"},
		Annotations: map[string]string{
			kinds.AnnotationDeploymentRevision: "7",
			kinds.AnnotationRolledBackAt:       t0.Add(-time.Hour).Format(time.RFC3339),
		},
	}, Spec: appsv1.DeploymentSpec{Paused: true}}
	rss := []*appsv1.ReplicaSet{
		replicaSet(d, "es-5", "5", t0.Add(-48*time.Hour), true),
		replicaSet(d, "es-7", "7", t0.Add(-3*time.Minute), true),
		replicaSet(d, "es-6", "6", t0.Add(-24*time.Hour), true),
		replicaSet(d, "other-9", "9", t0, false), // not owned: ignored
		replicaSet(d, "es-x", "not-a-number", t0, true),
	}
	got := DeploymentFacts(d, rss)
	want := policy.Workload{
		Ref:                policy.Ref{Kind: policy.KindDeployment, Namespace: "production", Name: "event-service"},
		Paused:             true,
		Revision:           7,
		RolloutStartedAt:   t0.Add(-3 * time.Minute),
		PreviousRevision:   6,
		LastAutoRollbackAt: t0.Add(-time.Hour),
	}
	if got.Ref != want.Ref || got.Paused != want.Paused || got.Revision != want.Revision ||
		!got.RolloutStartedAt.Equal(want.RolloutStartedAt) || got.PreviousRevision != want.PreviousRevision ||
		!got.LastAutoRollbackAt.Equal(want.LastAutoRollbackAt) || got.GitOpsManager != "" || got.FlaggerCanary != "" {
		t.Fatalf("DeploymentFacts =\n%+v\nwant\n%+v", *got, want)
	}
	if !slices.Equal(got.Older, []int64{6, 5}) {
		t.Errorf("Older = %v, want [6 5]", got.Older)
	}
	if got.Labels["autorollback.io/enabled"] != "true" {
		t.Errorf("labels not carried over: %v", got.Labels)
	}
}

func TestDeploymentFactsWithoutHistory(t *testing.T) {
	d := &appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Name: "a", Namespace: "n", UID: "d-2", Annotations: map[string]string{kinds.AnnotationDeploymentRevision: "1"}}}
	got := DeploymentFacts(d, []*appsv1.ReplicaSet{replicaSet(d, "a-1", "1", t0, true)})
	if got.Revision != 1 || got.PreviousRevision != 0 || !got.RolloutStartedAt.Equal(t0) {
		t.Fatalf("got revision %d, previous %d, started %v", got.Revision, got.PreviousRevision, got.RolloutStartedAt)
	}
}

func TestControllerRevisionFacts(t *testing.T) {
	s := &appsv1.StatefulSet{
		ObjectMeta: metav1.ObjectMeta{Name: "db", Namespace: "n", UID: "s-1"},
		Status:     appsv1.StatefulSetStatus{UpdateRevision: "db-b"},
	}
	ds := &appsv1.DaemonSet{ObjectMeta: metav1.ObjectMeta{Name: "agent", Namespace: "n", UID: "ds-1"}}
	cr := func(owner metav1.Object, kind, name string, rev int64, created time.Time) *appsv1.ControllerRevision {
		return &appsv1.ControllerRevision{
			ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "n", OwnerReferences: owned(owner, kind), CreationTimestamp: metav1.NewTime(created)},
			Revision:   rev,
		}
	}
	crs := []*appsv1.ControllerRevision{
		cr(s, "StatefulSet", "db-a", 1, t0.Add(-time.Hour)),
		cr(s, "StatefulSet", "db-b", 2, t0.Add(-time.Minute)),
		cr(ds, "DaemonSet", "agent-a", 3, t0.Add(-2*time.Hour)),
		cr(ds, "DaemonSet", "agent-b", 4, t0.Add(-2*time.Minute)),
	}
	sf := StatefulSetFacts(s, crs)
	if sf.Kind != policy.KindStatefulSet || sf.Revision != 2 || sf.PreviousRevision != 1 || !sf.RolloutStartedAt.Equal(t0.Add(-time.Minute)) {
		t.Errorf("StatefulSetFacts = %+v", *sf)
	}
	df := DaemonSetFacts(ds, crs)
	if df.Kind != policy.KindDaemonSet || df.Revision != 4 || df.PreviousRevision != 3 || !df.RolloutStartedAt.Equal(t0.Add(-2*time.Minute)) {
		t.Errorf("DaemonSetFacts = %+v", *df)
	}
}

func TestGitOpsManager(t *testing.T) {
	for _, tc := range []struct {
		name        string
		labels, ann map[string]string
		want        string
	}{
		{"none", nil, nil, ""},
		{"helm only", map[string]string{"app.kubernetes.io/instance": "x", "app.kubernetes.io/managed-by": "Helm"}, nil, ""},
		{"argo tracking id", nil, map[string]string{"argocd.argoproj.io/tracking-id": "app:apps/Deployment:ns/x"}, "argocd"},
		{"argo instance label", map[string]string{"argocd.argoproj.io/instance": "app"}, nil, "argocd"},
		{"flux kustomize", map[string]string{"kustomize.toolkit.fluxcd.io/name": "apps"}, nil, "flux"},
		{"flux helm", map[string]string{"helm.toolkit.fluxcd.io/name": "event-service"}, nil, "flux"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := GitOpsManager(&metav1.ObjectMeta{Labels: tc.labels, Annotations: tc.ann}); got != tc.want {
				t.Fatalf("GitOpsManager = %q, want %q", got, tc.want)
			}
		})
	}
}

func TestFlaggerCanary(t *testing.T) {
	yes := true
	canary := func(apiVersion, kind string) metav1.OwnerReference {
		// As Flagger writes it on a primary: a controller reference.
		return metav1.OwnerReference{APIVersion: apiVersion, Kind: kind, Name: "event-service", UID: "c-1", Controller: &yes, BlockOwnerDeletion: &yes}
	}
	for _, tc := range []struct {
		name   string
		object string
		refs   []metav1.OwnerReference
		want   string
	}{
		{"no owner", "event-service", nil, ""},
		{"primary owned by a Canary", "event-service-primary", []metav1.OwnerReference{canary("flagger.app/v1beta1", "Canary")}, "event-service"},
		{"an older API version of Flagger", "event-service-primary", []metav1.OwnerReference{canary("flagger.app/v1alpha3", "Canary")}, "event-service"},
		{"among other owners", "event-service-primary", []metav1.OwnerReference{
			{APIVersion: "v1", Kind: "ConfigMap", Name: "x", UID: "x-1"}, canary("flagger.app/v1beta1", "Canary")}, "event-service"},
		{"the name suffix alone", "postgres-primary", nil, ""},
		{"a Canary of another API group", "event-service-primary", []metav1.OwnerReference{canary("example.com/v1", "Canary")}, ""},
		{"another kind of Flagger's", "event-service-primary", []metav1.OwnerReference{canary("flagger.app/v1beta1", "MetricTemplate")}, ""},
		{"a malformed API version", "event-service-primary", []metav1.OwnerReference{canary("flagger.app/v1/x", "Canary")}, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := FlaggerCanary(&metav1.ObjectMeta{Name: tc.object, OwnerReferences: tc.refs}); got != tc.want {
				t.Fatalf("FlaggerCanary = %q, want %q", got, tc.want)
			}
		})
	}

	// The fact reaches the policy from every kind Flagger makes a primary of.
	meta := metav1.ObjectMeta{Name: "event-service-primary", Namespace: "n", UID: "p-1",
		Annotations:     map[string]string{kinds.AnnotationDeploymentRevision: "1"},
		OwnerReferences: []metav1.OwnerReference{canary("flagger.app/v1beta1", "Canary")}}
	d := &appsv1.Deployment{ObjectMeta: meta}
	if got := DeploymentFacts(d, []*appsv1.ReplicaSet{replicaSet(d, "p-1", "1", t0, true)}).FlaggerCanary; got != "event-service" {
		t.Errorf("DeploymentFacts: FlaggerCanary = %q, want event-service", got)
	}
	if got := DaemonSetFacts(&appsv1.DaemonSet{ObjectMeta: meta}, nil).FlaggerCanary; got != "event-service" {
		t.Errorf("DaemonSetFacts: FlaggerCanary = %q, want event-service", got)
	}
}
