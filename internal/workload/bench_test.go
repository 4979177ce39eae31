package workload

import (
	"context"
	"fmt"
	"runtime"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	kruntime "k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/cache"

	"github.com/autorollbackd/autorollbackd/internal/kinds"
	"github.com/autorollbackd/autorollbackd/internal/policy"
)

// benchNamespace holds the Deployments of the benchmarks, as the intake
// benchmark's namespace of Deployments that are not opted in.
const benchNamespace = "events"

// benchDeployment is a Deployment as the API server and the Deployment
// controller leave it after three rollouts, not opted in, with its three
// ReplicaSets.
func benchDeployment(name string) (*appsv1.Deployment, []*appsv1.ReplicaSet) {
	selector := map[string]string{"app": name}
	d := &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{
			Name: name, Namespace: benchNamespace, UID: types.UID("uid-" + name), Generation: 3, ResourceVersion: "1",
			Labels: map[string]string{"app": name, "app.kubernetes.io/managed-by": "Helm", "bench-set": "intake-off"},
			Annotations: map[string]string{
				kinds.AnnotationDeploymentRevision: "3",
				"meta.helm.sh/release-name":        name,
				"meta.helm.sh/release-namespace":   benchNamespace,
				"kubectl.kubernetes.io/restartAt":  t0.Format(time.RFC3339),
			},
			CreationTimestamp: metav1.NewTime(t0.Add(-72 * time.Hour)),
		},
		Spec: appsv1.DeploymentSpec{Selector: &metav1.LabelSelector{MatchLabels: selector}},
	}
	var rss []*appsv1.ReplicaSet
	for rev := 1; rev <= 3; rev++ {
		hash := fmt.Sprintf("%s-%d", name, rev)
		rs := replicaSet(d, hash, fmt.Sprint(rev), t0.Add(-time.Duration(4-rev)*24*time.Hour), true)
		rs.Labels = map[string]string{"app": name, appsv1.DefaultDeploymentUniqueLabelKey: fmt.Sprint(rev)}
		rs.Spec.Selector = &metav1.LabelSelector{MatchLabels: rs.Labels}
		rss = append(rss, rs)
	}
	return d, rss
}

// benchCaches returns the informer caches of a namespace holding n such
// Deployments, named app-0 and up, synced.
func benchCaches(b *testing.B, n int) Caches {
	b.Helper()
	var objs []kruntime.Object
	for i := range n {
		d, rss := benchDeployment(fmt.Sprintf("app-%d", i))
		objs = append(objs, d)
		for _, rs := range rss {
			objs = append(objs, rs)
		}
	}
	inf, _ := fakeInformers(b, benchNamespace, objs...)
	caches := Caches{benchNamespace: NewCached(inf)}
	runInformers(b, inf)
	return caches
}

// BenchmarkCachedFacts reads the full facts of one Deployment among n in its
// namespace, as a decision does.
func BenchmarkCachedFacts(b *testing.B) {
	for _, n := range []int{1, 100} {
		b.Run(fmt.Sprintf("deployments=%d", n), func(b *testing.B) {
			caches := benchCaches(b, n)
			ref := policy.Ref{Kind: policy.KindDeployment, Namespace: benchNamespace, Name: "app-0"}
			ctx := context.Background()
			b.ReportAllocs()
			for b.Loop() {
				w, err := caches.Facts(ctx, ref)
				if err != nil || w == nil || w.PreviousRevision != 2 {
					b.Fatalf("Facts = %+v, %v", w, err)
				}
			}
		})
	}
}

// BenchmarkIntakeRefused does for one alert what the webhook intake does
// before it refuses it: resolve the target, read its facts from the informer
// cache and run the policy's checks. The Deployment exists, among n in its
// namespace, and is not opted in. The variants: all the facts and all the
// checks (Evaluate); all the facts and the target checks (Screen); the
// target facts and the target checks (TargetFacts+Screen).
func BenchmarkIntakeRefused(b *testing.B) {
	cfg := policy.DefaultConfig()
	cfg.Namespaces.Allow = []string{benchNamespace}
	p, err := policy.Compile(cfg)
	if err != nil {
		b.Fatal(err)
	}
	alert := policy.Alert{
		Fingerprint: "53bad9c6811959ea",
		Status:      "firing",
		Labels: map[string]string{
			"alertname": "EventServiceDown", "deployment": "app-0", "impact": "service_down",
			"namespace": benchNamespace, "pod": "app-0-7d9c6b5f4-abcde", "severity": "critical",
		},
		Annotations: map[string]string{"summary": "app-0 is down"},
		StartsAt:    t0.Add(-time.Minute),
	}
	for _, n := range []int{1, 100} {
		caches := benchCaches(b, n)
		for _, v := range []struct {
			name  string
			facts func(context.Context, policy.Ref) (*policy.Workload, error)
			check func(policy.Input) policy.Decision
		}{
			{"Evaluate", caches.Facts, p.Evaluate},
			{"Screen", caches.Facts, p.Screen},
			{"TargetFacts+Screen", func(ctx context.Context, ref policy.Ref) (*policy.Workload, error) {
				return TargetFacts(ctx, caches, ref)
			}, p.Screen},
		} {
			b.Run(fmt.Sprintf("deployments=%d/%s", n, v.name), func(b *testing.B) {
				ctx := context.Background()
				b.ReportAllocs()
				for b.Loop() {
					target, err := p.Resolve(alert)
					if err != nil {
						b.Fatal(err)
					}
					w, err := v.facts(ctx, target)
					if err != nil {
						b.Fatal(err)
					}
					if d := v.check(policy.Input{Alert: alert, Target: target, Workload: w, Now: t0}); d.Reason != policy.ReasonNotOptedIn {
						b.Fatalf("decision %s", d)
					}
				}
			})
		}
	}
}

// BenchmarkCachedBytes measures the memory an informer's store holds per
// object, decoded from protobuf as the watch delivers it: a Deployment as
// the scale benchmark's (one container, rolled out twice, its status
// conditions) and the metadata of a ReplicaSet, either kept decoded
// (managed fields dropped, as the cache did before it packed them) or
// packed.
func BenchmarkCachedBytes(b *testing.B) {
	const n = 2000
	d, rss := benchDeployment("app-0")
	d.Spec.Template = corev1.PodTemplateSpec{
		ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{"app": "app-0"}},
		Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "app", Image: "registry.example/app-0:v2-bad"}}},
	}
	d.Spec.Replicas = new(int32(1))
	d.Status = appsv1.DeploymentStatus{ObservedGeneration: 3, Replicas: 1, UpdatedReplicas: 1, ReadyReplicas: 1, AvailableReplicas: 1,
		Conditions: []appsv1.DeploymentCondition{
			{Type: appsv1.DeploymentAvailable, Status: corev1.ConditionTrue, Reason: "MinimumReplicasAvailable", Message: "Deployment has minimum availability.",
				LastUpdateTime: metav1.NewTime(t0), LastTransitionTime: metav1.NewTime(t0)},
			{Type: appsv1.DeploymentProgressing, Status: corev1.ConditionTrue, Reason: "NewReplicaSetAvailable", Message: `ReplicaSet "app-0-3" has successfully progressed.`,
				LastUpdateTime: metav1.NewTime(t0), LastTransitionTime: metav1.NewTime(t0)},
		}}
	wireD, err := d.Marshal()
	if err != nil {
		b.Fatal(err)
	}
	rsMeta := &metav1.PartialObjectMetadata{ObjectMeta: rss[2].ObjectMeta}
	wireRS, err := rsMeta.Marshal()
	if err != nil {
		b.Fatal(err)
	}
	for _, kind := range []struct {
		name   string
		wire   []byte
		unpack func(any) (any, error)
		packed cache.TransformFunc
	}{
		{"Deployment", wireD, unpack[appsv1.Deployment], deploymentTransform},
		{"ReplicaSet", wireRS, unpack[metav1.PartialObjectMetadata], replicaSetTransform},
	} {
		for _, v := range []struct {
			name      string
			transform cache.TransformFunc
		}{{"decoded", Transform}, {"packed", kind.packed}} {
			b.Run(kind.name+"/"+v.name, func(b *testing.B) {
				var perObject float64
				for b.Loop() {
					store := cache.NewIndexer(cache.MetaNamespaceKeyFunc, workloadIndexers())
					before := heapAlloc()
					for i := range n {
						// Decoded as the watch delivers it.
						o, err := kind.unpack(&packed{data: kind.wire})
						if err != nil {
							b.Fatal(err)
						}
						o.(metav1.Object).SetName(fmt.Sprintf("app-%d", i))
						t, err := v.transform(o)
						if err != nil {
							b.Fatal(err)
						}
						if err := store.Add(t); err != nil {
							b.Fatal(err)
						}
					}
					perObject = float64(heapAlloc()-before) / n
					runtime.KeepAlive(store)
				}
				b.ReportMetric(perObject, "B/object")
			})
		}
	}
}

// heapAlloc is the heap's live bytes after a collection.
func heapAlloc() uint64 {
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapAlloc
}
