package workload

import (
	"context"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes/fake"
	metadatafake "k8s.io/client-go/metadata/fake"
)

// fakeInformers returns informers of namespace ns over fake clients holding
// objs, typed for the clientset and, for the ReplicaSets among them, as
// metadata for the metadata client, as the API server serves them.
func fakeInformers(t testing.TB, ns string, objs ...runtime.Object) (*Informers, *fake.Clientset) {
	t.Helper()
	var metas []runtime.Object
	for _, o := range objs {
		if rs, ok := o.(*appsv1.ReplicaSet); ok {
			metas = append(metas, &metav1.PartialObjectMetadata{
				TypeMeta:   metav1.TypeMeta{APIVersion: "apps/v1", Kind: "ReplicaSet"},
				ObjectMeta: *rs.ObjectMeta.DeepCopy(),
			})
		}
	}
	scheme := metadatafake.NewTestScheme()
	scheme.AddKnownTypeWithName(appsv1.SchemeGroupVersion.WithKind("ReplicaSet"), &metav1.PartialObjectMetadata{})
	client := fake.NewClientset(objs...)
	inf, err := NewInformers(client, metadatafake.NewSimpleMetadataClient(scheme, metas...), ns)
	if err != nil {
		t.Fatal(err)
	}
	return inf, client
}

// runInformers runs inf until t ends, and waits for them to sync.
func runInformers(t testing.TB, inf *Informers) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(func() { cancel(); inf.Shutdown() })
	inf.Run(ctx)
	syncCtx, cancelSync := context.WithTimeout(ctx, 30*time.Second)
	defer cancelSync()
	if unsynced := inf.WaitForCacheSync(syncCtx); len(unsynced) > 0 {
		t.Fatalf("sync the cache of %v", unsynced)
	}
}

// TestInformersRunAfterShutdown: once shut down (the daemon stopping before
// its caches started), Run starts nothing, so a second Shutdown has nothing
// to wait for even while Run's context lives.
func TestInformersRunAfterShutdown(t *testing.T) {
	inf, _ := fakeInformers(t, "n")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	inf.Shutdown()
	inf.Run(ctx)
	done := make(chan struct{})
	go func() { inf.Shutdown(); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		cancel()
		<-done
		t.Fatal("Run started informers after Shutdown")
	}
}

// TestInformersIndexSeparately: each informer has its own indexers, so the
// controller index NewCached adds to ReplicaSets and ControllerRevisions is
// neither refused on the second as a conflict nor computed for the
// workloads themselves.
func TestInformersIndexSeparately(t *testing.T) {
	inf, _ := fakeInformers(t, "ns")
	NewCached(inf)
	for i, in := range inf.all() {
		_, indexed := in.GetIndexer().GetIndexers()[controllerIndex]
		want := in == inf.ReplicaSets || in == inf.ControllerRevisions
		if indexed != want {
			t.Errorf("%s indexed by controller: %v, want %v", informerKinds[i], indexed, want)
		}
	}
}
