package harness

import (
	"context"
	"encoding/json"
	"fmt"
	"github.com/autorollbackd/autorollbackd/internal/kinds"
	"strings"
	"sync"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	listersappsv1 "k8s.io/client-go/listers/apps/v1"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/clientcmd"
)

// SetLabel marks every Deployment a benchmark creates, with the name of the
// set it belongs to; the Watcher watches only those.
const SetLabel = "bench.autorollbackd.io/set"

// RevisionAnnotation is the Deployment controller's revision annotation.
const RevisionAnnotation = "deployment.kubernetes.io/revision"

// Images of the two revisions. A Deployment is rolled back when its
// template's image is GoodImage again.
const (
	GoodTag = "v1"
	BadTag  = "v2-bad"
)

// ClientFor returns a client for a kubeconfig without client-side rate
// limiting, so that the benchmark itself never waits on a token bucket.
func ClientFor(kubeconfig string) (kubernetes.Interface, error) {
	rc, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
	if err != nil {
		return nil, fmt.Errorf("load kubeconfig: %w", err)
	}
	rc.QPS, rc.Burst = 1000, 2000
	return kubernetes.NewForConfig(rc)
}

// Ref names one Deployment.
type Ref struct{ Namespace, Name string }

func (r Ref) String() string { return r.Namespace + "/" + r.Name }

// Refs names n Deployments of a set, spread over namespaces
// <prefix>-0..<prefix>-(namespaces-1), named app-000, app-001, ...
func Refs(prefix string, n, namespaces int) []Ref {
	out := make([]Ref, n)
	for i := range out {
		out[i] = Ref{Namespace: fmt.Sprintf("%s-%d", prefix, i%namespaces), Name: fmt.Sprintf("app-%03d", i)}
	}
	return out
}

// Namespaces returns the distinct namespaces of refs, in order.
func Namespaces(refs []Ref) []string {
	var out []string
	seen := map[string]bool{}
	for _, r := range refs {
		if !seen[r.Namespace] {
			seen[r.Namespace] = true
			out = append(out, r.Namespace)
		}
	}
	return out
}

// Image returns the image of a Deployment at a tag.
func Image(name, tag string) string { return "registry.example/" + name + ":" + tag }

// NewDeployment returns a Deployment of the set at revision GoodTag.
func NewDeployment(set string, r Ref, replicas int32, optIn bool) *appsv1.Deployment {
	l := map[string]string{SetLabel: set}
	if optIn {
		l[kinds.LabelEnabled] = "true"
	}
	return &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: r.Name, Namespace: r.Namespace, Labels: l},
		Spec: appsv1.DeploymentSpec{
			Replicas: &replicas,
			Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": r.Name}},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{"app": r.Name}},
				Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "app", Image: Image(r.Name, GoodTag)}}},
			},
		},
	}
}

// ImageOf returns the image of the first container of d's template.
func ImageOf(d *appsv1.Deployment) string {
	if c := d.Spec.Template.Spec.Containers; len(c) > 0 {
		return c[0].Image
	}
	return ""
}

// Watcher watches the benchmark's Deployments, from before anything is
// rolled back, and notes when it first sees each one's template return to
// GoodTag after having seen it at BadTag: the moment the rollback was
// accepted by the API server, plus the watch's own delivery delay (which
// the PATCH reference measures).
type Watcher struct {
	lister listersappsv1.DeploymentLister

	mu      sync.Mutex
	bad     map[string]bool
	back    map[string]time.Time
	waiters map[string]chan struct{}
}

// NewWatcher starts a watch on every Deployment labelled SetLabel and waits
// for its cache to sync. It stops with ctx.
func NewWatcher(ctx context.Context, cs kubernetes.Interface) (*Watcher, error) {
	f := informers.NewSharedInformerFactoryWithOptions(cs, 0, informers.WithTweakListOptions(func(o *metav1.ListOptions) {
		o.LabelSelector = SetLabel
	}))
	inf := f.Apps().V1().Deployments()
	w := &Watcher{lister: inf.Lister(), bad: map[string]bool{}, back: map[string]time.Time{}, waiters: map[string]chan struct{}{}}
	_, err := inf.Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    func(obj any) { w.observe(obj.(*appsv1.Deployment)) },
		UpdateFunc: func(_, obj any) { w.observe(obj.(*appsv1.Deployment)) },
	})
	if err != nil {
		return nil, fmt.Errorf("watch deployments: %w", err)
	}
	f.Start(ctx.Done())
	for typ, ok := range f.WaitForCacheSync(ctx.Done()) {
		if !ok {
			return nil, fmt.Errorf("sync the cache of %v", typ)
		}
	}
	return w, nil
}

// observe runs on the informer's goroutine; it takes the time first, so
// nothing else it does is counted.
func (w *Watcher) observe(d *appsv1.Deployment) {
	now := time.Now()
	key := d.Namespace + "/" + d.Name
	img := ImageOf(d)
	w.mu.Lock()
	defer w.mu.Unlock()
	switch {
	case strings.HasSuffix(img, ":"+BadTag):
		w.bad[key] = true
	case strings.HasSuffix(img, ":"+GoodTag) && w.bad[key]:
		if _, ok := w.back[key]; !ok {
			w.back[key] = now
			if ch, ok := w.waiters[key]; ok {
				close(ch)
				delete(w.waiters, key)
			}
		}
	}
}

// RolledBack returns when the watcher first saw r back at GoodTag.
func (w *Watcher) RolledBack(r Ref) (time.Time, bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	t, ok := w.back[r.String()]
	return t, ok
}

// WaitRolledBack waits up to timeout for r to be seen back at GoodTag.
func (w *Watcher) WaitRolledBack(ctx context.Context, r Ref, timeout time.Duration) (time.Time, error) {
	w.mu.Lock()
	if t, ok := w.back[r.String()]; ok {
		w.mu.Unlock()
		return t, nil
	}
	ch, ok := w.waiters[r.String()]
	if !ok {
		ch = make(chan struct{})
		w.waiters[r.String()] = ch
	}
	w.mu.Unlock()
	select {
	case <-ch:
		t, _ := w.RolledBack(r)
		return t, nil
	case <-time.After(timeout):
		return time.Time{}, fmt.Errorf("%s not seen rolled back within %s", r, timeout)
	case <-ctx.Done():
		return time.Time{}, ctx.Err()
	}
}

// Get returns the cached Deployment, or nil.
func (w *Watcher) Get(r Ref) *appsv1.Deployment {
	d, err := w.lister.Deployments(r.Namespace).Get(r.Name)
	if err != nil {
		return nil
	}
	return d
}

// WaitAll polls the cache until cond holds for every ref, or fails after
// timeout naming how many do not and one of them.
func (w *Watcher) WaitAll(ctx context.Context, refs []Ref, timeout time.Duration, what string, cond func(*appsv1.Deployment) bool) error {
	var missing int
	var example Ref
	err := wait.PollUntilContextTimeout(ctx, 250*time.Millisecond, timeout, true, func(context.Context) (bool, error) {
		missing = 0
		for _, r := range refs {
			if d := w.Get(r); d == nil || !cond(d) {
				missing++
				example = r
			}
		}
		return missing == 0, nil
	})
	if err != nil {
		return fmt.Errorf("%s: %d of %d Deployments not there within %s (for example %s): %w", what, missing, len(refs), timeout, example, err)
	}
	return nil
}

// AtRevision reports whether the Deployment controller has observed d's
// latest spec and labelled it revision rev.
func AtRevision(rev string) func(*appsv1.Deployment) bool {
	return func(d *appsv1.Deployment) bool {
		return d.Annotations[RevisionAnnotation] == rev && d.Status.ObservedGeneration >= d.Generation
	}
}

// Settled reports whether d's rollout is complete: the latest spec
// observed, every replica updated and available, no old replica left.
func Settled(d *appsv1.Deployment) bool {
	want := int32(1)
	if d.Spec.Replicas != nil {
		want = *d.Spec.Replicas
	}
	s := d.Status
	return s.ObservedGeneration >= d.Generation && s.UpdatedReplicas == want && s.AvailableReplicas == want && s.Replicas == want
}

// PrepareTwoRevisions creates the Deployments of a set at GoodTag (one
// replica each), waits for revision 1, rolls them out to BadTag and waits
// until revision 2 has completely rolled out: the state in which an alert
// blames the rollout.
func PrepareTwoRevisions(ctx context.Context, cs kubernetes.Interface, w *Watcher, set string, refs []Ref, timeout time.Duration) error {
	_, err := PrepareTwoRevisionsWith(ctx, cs, w, set, refs, Preparation{Replicas: 1, Workers: 8, Timeout: timeout})
	return err
}

// Preparation says how PrepareTwoRevisionsWith prepares a set.
type Preparation struct {
	// Replicas of every Deployment.
	Replicas int32
	// Workers is how many API calls are made at once.
	Workers int
	// Timeout bounds each wait for the Deployment controller.
	Timeout time.Duration
	// OnStep, if set, is called as each step ends, with what was done.
	OnStep func(step string)
}

// PreparationTimes says where the time of a preparation went, each
// duration counted from its start.
type PreparationTimes struct {
	// Namespaces: the namespaces exist.
	Namespaces time.Duration
	// Created: every Deployment was created at GoodTag.
	Created time.Duration
	// Revision1: the Deployment controller labelled every one revision 1
	// (and created its ReplicaSet).
	Revision1 time.Duration
	// Patched: every template was patched to BadTag.
	Patched time.Duration
	// Revision2: every one is at revision 2.
	Revision2 time.Duration
	// Settled: every rollout to revision 2 completed.
	Settled time.Duration
}

// PrepareTwoRevisionsWith is PrepareTwoRevisions with the replicas and the
// parallelism chosen, and returns where the time went. The rollout to
// BadTag is one JSON patch of the image per Deployment.
func PrepareTwoRevisionsWith(ctx context.Context, cs kubernetes.Interface, w *Watcher, set string, refs []Ref, p Preparation) (PreparationTimes, error) {
	var t PreparationTimes
	start := time.Now()
	step := func(what string) {
		if p.OnStep != nil {
			p.OnStep(what)
		}
	}
	namespaces := Namespaces(refs)
	err := Parallel(ctx, len(namespaces), p.Workers, func(ctx context.Context, i int) error {
		return EnsureNamespaces(ctx, cs, namespaces[i])
	})
	if err != nil {
		return t, err
	}
	t.Namespaces = time.Since(start)
	step("namespaces created")
	err = Parallel(ctx, len(refs), p.Workers, func(ctx context.Context, i int) error {
		_, err := cs.AppsV1().Deployments(refs[i].Namespace).Create(ctx, NewDeployment(set, refs[i], p.Replicas, true), metav1.CreateOptions{})
		if err != nil {
			return fmt.Errorf("create %s: %w", refs[i], err)
		}
		return nil
	})
	if err != nil {
		return t, err
	}
	t.Created = time.Since(start)
	step("Deployments created at " + GoodTag)
	Logf("%s: %d Deployments in %d namespaces created after %s", set, len(refs), len(namespaces), t.Created.Round(100*time.Millisecond))
	if err := w.WaitAll(ctx, refs, p.Timeout, set+" at revision 1", AtRevision("1")); err != nil {
		return t, err
	}
	t.Revision1 = time.Since(start)
	step("at revision 1")
	Logf("%s: at revision 1 after %s", set, t.Revision1.Round(100*time.Millisecond))
	err = Parallel(ctx, len(refs), p.Workers, func(ctx context.Context, i int) error {
		patch, err := json.Marshal([]map[string]any{
			{"op": "replace", "path": "/spec/template/spec/containers/0/image", "value": Image(refs[i].Name, BadTag)},
		})
		if err != nil {
			return err
		}
		_, err = cs.AppsV1().Deployments(refs[i].Namespace).Patch(ctx, refs[i].Name, types.JSONPatchType, patch, metav1.PatchOptions{})
		if err != nil {
			return fmt.Errorf("roll %s out to %s: %w", refs[i], BadTag, err)
		}
		return nil
	})
	if err != nil {
		return t, err
	}
	t.Patched = time.Since(start)
	step("patched to " + BadTag)
	Logf("%s: patched to %s after %s", set, BadTag, t.Patched.Round(100*time.Millisecond))
	if err := w.WaitAll(ctx, refs, p.Timeout, set+" at revision 2", AtRevision("2")); err != nil {
		return t, err
	}
	t.Revision2 = time.Since(start)
	step("at revision 2")
	Logf("%s: at revision 2 after %s", set, t.Revision2.Round(100*time.Millisecond))
	if err := w.WaitAll(ctx, refs, p.Timeout, set+" settled at revision 2", func(d *appsv1.Deployment) bool {
		return AtRevision("2")(d) && Settled(d)
	}); err != nil {
		return t, err
	}
	t.Settled = time.Since(start)
	step("rollouts to revision 2 complete")
	Logf("%s: revision 2 rolled out after %s", set, t.Settled.Round(100*time.Millisecond))
	return t, nil
}

// SettledAfterRollback waits until every Deployment of refs is back at
// GoodTag and its rollout complete, so that one phase's controller work
// does not run under the next phase's measurement.
func (w *Watcher) SettledAfterRollback(ctx context.Context, refs []Ref, timeout time.Duration) error {
	return w.WaitAll(ctx, refs, timeout, "rollbacks settled", func(d *appsv1.Deployment) bool {
		return strings.HasSuffix(ImageOf(d), ":"+GoodTag) && Settled(d)
	})
}

// ReplicaSetOf returns the ReplicaSet of d at a revision.
func ReplicaSetOf(ctx context.Context, cs kubernetes.Interface, d *appsv1.Deployment, revision string) (*appsv1.ReplicaSet, error) {
	sel, err := metav1.LabelSelectorAsSelector(d.Spec.Selector)
	if err != nil {
		return nil, err
	}
	rss, err := cs.AppsV1().ReplicaSets(d.Namespace).List(ctx, metav1.ListOptions{LabelSelector: sel.String()})
	if err != nil {
		return nil, err
	}
	for i := range rss.Items {
		rs := &rss.Items[i]
		if metav1.IsControlledBy(rs, d) && rs.Annotations[RevisionAnnotation] == revision {
			return rs, nil
		}
	}
	return nil, fmt.Errorf("%s/%s has no ReplicaSet of revision %s", d.Namespace, d.Name, revision)
}
