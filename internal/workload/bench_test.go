package workload

import (
	"context"
	"fmt"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"

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
			Name: name, Namespace: benchNamespace, UID: types.UID("uid-" + name), Generation: 3,
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
	var objs []runtime.Object
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
