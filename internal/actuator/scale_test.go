package actuator

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/autorollbackd/autorollbackd/internal/kinds"
	"github.com/autorollbackd/autorollbackd/internal/policy"
	"github.com/autorollbackd/autorollbackd/internal/testenv"
)

// scaleTestHold is a finalizer on the test pods that keeps them Terminating
// until the test releases them, so that a bounce deterministically waits.
const scaleTestHold = "autorollback.io/test-hold"

// watchDeployment records every state of the Deployment from d on, until the
// returned function is called; that function returns the states.
func (e *flagTestEnv) watchDeployment(t *testing.T, d *appsv1.Deployment) func() []appsv1.Deployment {
	t.Helper()
	w, err := e.c.Client.AppsV1().Deployments(e.ns).Watch(context.Background(), metav1.ListOptions{
		FieldSelector: "metadata.name=" + d.Name, ResourceVersion: d.ResourceVersion,
	})
	if err != nil {
		t.Fatal(err)
	}
	var (
		mu     sync.Mutex
		states []appsv1.Deployment
		done   = make(chan struct{})
	)
	go func() {
		defer close(done)
		for ev := range w.ResultChan() {
			if d, ok := ev.Object.(*appsv1.Deployment); ok {
				mu.Lock()
				states = append(states, *d)
				mu.Unlock()
			}
		}
	}()
	return func() []appsv1.Deployment {
		w.Stop()
		<-done
		mu.Lock()
		defer mu.Unlock()
		return states
	}
}

func scaleAnnotations(ann map[string]string) string {
	var out []string
	for _, k := range []string{kinds.AnnotationScaleRestoreReplicas, kinds.AnnotationScaleIncident, kinds.AnnotationScaleBouncedFor} {
		if v, ok := ann[k]; ok {
			out = append(out, k+"="+v)
		}
	}
	return strings.Join(out, ",")
}

func TestScaleBounceDeployment(t *testing.T) {
	e := newFlagTestEnv(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	d := e.deployment(t, "event-service", 3)
	req := e.request(policy.KindDeployment, "event-service", "inc-bounce")
	states := e.watchDeployment(t, d)

	res, err := e.act.ScaleBounce(ctx, req)
	if err != nil || res.Outcome != OutcomeApplied || res.Kind != KindScaleBounce ||
		!strings.HasPrefix(res.Message, "scaled to 0 and back to 3 replicas") {
		t.Fatalf("ScaleBounce = %+v, %v", res, err)
	}

	// It really went through zero: recorded 3 while at 0 replicas, and the
	// controller reported no pods before the scale back up.
	var recorded, empty bool
	seen := states()
	for _, s := range seen {
		if *s.Spec.Replicas != 0 {
			continue
		}
		if scaleAnnotations(s.Annotations) == kinds.AnnotationScaleRestoreReplicas+"=3,"+kinds.AnnotationScaleIncident+"=inc-bounce" {
			recorded = true
		}
		if s.Status.ObservedGeneration >= s.Generation && s.Status.Replicas == 0 && recorded {
			empty = true
		}
	}
	if !recorded || !empty {
		var trail []string
		for _, s := range seen {
			trail = append(trail, fmt.Sprintf("spec %d status %d [%s]", *s.Spec.Replicas, s.Status.Replicas, scaleAnnotations(s.Annotations)))
		}
		t.Fatalf("not seen at 0 replicas with the record (%t) and no pods (%t): %s", recorded, empty, strings.Join(trail, "; "))
	}

	after := e.waitDeploymentReady(t, "event-service", 3)
	if got := scaleAnnotations(after.Annotations); got != kinds.AnnotationScaleBouncedFor+"=inc-bounce" {
		t.Errorf("annotations after the bounce = %s, want only %s=inc-bounce", got, kinds.AnnotationScaleBouncedFor)
	}
	e.waitEvent(t, "event-service", EventRollback, "scaled to 0 and back to 3 replicas")

	// A repeated call writes nothing.
	res, err = e.act.ScaleBounce(ctx, req)
	if err != nil || res.Outcome != OutcomeNoop || !res.Resumed {
		t.Fatalf("second ScaleBounce = %+v, %v; want a resumed no-op", res, err)
	}
	if got := written(e.mustDeployment(t, "event-service")); got != written(after) {
		t.Errorf("second call wrote: %s -> %s", written(after), got)
	}
	for result, want := range map[string]float64{"applied": 1, "noop": 1, "failed": 0} {
		if got := flagTestCounter(t, e.reg, KindScaleBounce, result, false); got != want {
			t.Errorf("actions_total{scale_bounce,%s} = %v, want %v", result, got, want)
		}
	}
}

// TestScaleBounceResumesAfterDaemonRestart stops the daemon while the
// workload is at zero: a new daemon finishes the bounce at the recorded
// count, and a bounce for another incident is refused meanwhile.
func TestScaleBounceResumesAfterDaemonRestart(t *testing.T) {
	e := newFlagTestEnv(t)
	e.holdPods(t)
	d := e.deployment(t, "event-service", 3, func(d *appsv1.Deployment) {
		d.Spec.Template.Finalizers = []string{scaleTestHold}
	})
	req := e.request(policy.KindDeployment, "event-service", "inc-resume")

	// Given a bounce waiting for the last pods to go,
	ctx1, stop := context.WithCancel(context.Background())
	defer stop()
	done := make(chan error, 1)
	go func() {
		_, err := e.act.ScaleBounce(ctx1, req)
		done <- err
	}()
	testenv.Eventually(t, 60*time.Second, "at 0 replicas with pods terminating", func(ctx context.Context) (bool, string) {
		d, err := e.getDeployment(ctx, "event-service")
		if err != nil {
			return false, err.Error()
		}
		terminating := int32(0)
		if d.Status.TerminatingReplicas != nil {
			terminating = *d.Status.TerminatingReplicas
		}
		return *d.Spec.Replicas == 0 && d.Status.ObservedGeneration >= d.Generation && d.Status.Replicas == 0 && terminating == 3,
			fmt.Sprintf("spec %d, generation %d, observed %d, %d pods, %d terminating", *d.Spec.Replicas, d.Generation, d.Status.ObservedGeneration, d.Status.Replicas, terminating)
	})
	// when the daemon stops,
	stop()
	select {
	case err := <-done:
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("ScaleBounce after its context ended = %v, want context.Canceled", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("ScaleBounce did not return when its context ended")
	}
	// the workload stays at 0 with the count to restore recorded.
	d = e.mustDeployment(t, "event-service")
	if *d.Spec.Replicas != 0 || scaleAnnotations(d.Annotations) != kinds.AnnotationScaleRestoreReplicas+"=3,"+kinds.AnnotationScaleIncident+"=inc-resume" {
		t.Fatalf("after the stop: %d replicas, annotations %s", *d.Spec.Replicas, scaleAnnotations(d.Annotations))
	}
	if got := flagTestCounter(t, e.reg, KindScaleBounce, "failed", false); got != 1 {
		t.Errorf("actions_total{scale_bounce,failed} = %v, want 1", got)
	}

	act2, reg2 := newFlagTestActuator(t, e.c)
	ctx2, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	// A bounce for another incident is refused and writes nothing.
	other := req
	other.Incident = "inc-other"
	if _, err := act2.ScaleBounce(ctx2, other); !errors.Is(err, ErrChanged) || FailureReason(err) != "changed" {
		t.Fatalf("ScaleBounce for another incident = %v, want ErrChanged", err)
	}
	if got := written(e.mustDeployment(t, "event-service")); got != written(d) {
		t.Errorf("refused bounce wrote: %s -> %s", written(d), got)
	}

	// A new daemon resumes without recording again, and keeps waiting while
	// pods are still terminating.
	short, cancelShort := context.WithTimeout(ctx2, 2*time.Second)
	defer cancelShort()
	// The deadline surfaces either from the wait itself or from client-go's
	// rate limiter refusing a request it could not finish in time.
	if _, err := act2.ScaleBounce(short, req); err == nil || short.Err() == nil {
		t.Fatalf("ScaleBounce with pods terminating = %v (deadline passed: %v), want it to wait until its deadline", err, short.Err())
	}
	if got := written(e.mustDeployment(t, "event-service")); got != written(d) {
		t.Errorf("resumed bounce recorded again: %s -> %s", written(d), got)
	}

	// Once the pods are gone it finishes, at exactly 3.
	e.releasePods(t)
	res, err := act2.ScaleBounce(ctx2, req)
	if err != nil || res.Outcome != OutcomeApplied || !strings.Contains(res.Message, "back to 3 replicas") {
		t.Fatalf("resumed ScaleBounce = %+v, %v", res, err)
	}
	after := e.waitDeploymentReady(t, "event-service", 3)
	if got := scaleAnnotations(after.Annotations); got != kinds.AnnotationScaleBouncedFor+"=inc-resume" {
		t.Errorf("annotations after the bounce = %s", got)
	}
	for result, want := range map[string]float64{"applied": 1, "failed": 2} {
		if got := flagTestCounter(t, reg2, KindScaleBounce, result, false); got != want {
			t.Errorf("new daemon's actions_total{scale_bounce,%s} = %v, want %v", result, got, want)
		}
	}
}

// holdPods makes the test release held pods before its namespace is
// deleted.
func (e *flagTestEnv) holdPods(t *testing.T) {
	t.Cleanup(func() {
		ctx := context.Background()
		_, _ = e.c.Client.AppsV1().Deployments(e.ns).Patch(ctx, "event-service", types.MergePatchType,
			[]byte(`{"spec":{"replicas":0,"template":{"metadata":{"finalizers":null}}}}`), metav1.PatchOptions{})
		testenv.Eventually(t, 60*time.Second, "held pods released", func(ctx context.Context) (bool, string) {
			pods, err := e.c.Client.CoreV1().Pods(e.ns).List(ctx, metav1.ListOptions{})
			if err != nil {
				return false, err.Error()
			}
			for _, p := range pods.Items {
				_ = e.releasePod(ctx, p.Name, p.Finalizers)
			}
			return len(pods.Items) == 0, fmt.Sprintf("%d pods", len(pods.Items))
		})
	})
}

// releasePods removes the hold from the pods now terminating.
func (e *flagTestEnv) releasePods(t *testing.T) {
	t.Helper()
	ctx := context.Background()
	pods, err := e.c.Client.CoreV1().Pods(e.ns).List(ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range pods.Items {
		if p.DeletionTimestamp != nil {
			if err := e.releasePod(ctx, p.Name, p.Finalizers); err != nil {
				t.Fatal(err)
			}
		}
	}
}

func (e *flagTestEnv) releasePod(ctx context.Context, name string, finalizers []string) error {
	if len(finalizers) == 0 {
		return nil
	}
	_, err := e.c.Client.CoreV1().Pods(e.ns).Patch(ctx, name, types.MergePatchType, []byte(`{"metadata":{"finalizers":null}}`), metav1.PatchOptions{})
	if apierrors.IsNotFound(err) {
		return nil
	}
	return err
}

func TestScaleBounceStatefulSet(t *testing.T) {
	e := newFlagTestEnv(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	replicas := int32(2)
	sts := &appsv1.StatefulSet{
		ObjectMeta: metav1.ObjectMeta{Name: "event-store", Namespace: e.ns},
		Spec: appsv1.StatefulSetSpec{
			Replicas:            &replicas,
			PodManagementPolicy: appsv1.ParallelPodManagement,
			Selector:            &metav1.LabelSelector{MatchLabels: map[string]string{"app": "event-store"}},
			Template:            flagTestTemplate("event-store"),
		},
	}
	api := e.c.Client.AppsV1().StatefulSets(e.ns)
	if _, err := api.Create(ctx, sts, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	ready := func(what string) *appsv1.StatefulSet {
		var s *appsv1.StatefulSet
		testenv.Eventually(t, 60*time.Second, what, func(ctx context.Context) (bool, string) {
			var err error
			if s, err = api.Get(ctx, "event-store", metav1.GetOptions{}); err != nil {
				return false, err.Error()
			}
			return s.Status.ObservedGeneration >= s.Generation && *s.Spec.Replicas == 2 && s.Status.Replicas == 2 && s.Status.ReadyReplicas == 2,
				fmt.Sprintf("spec %d %+v", *s.Spec.Replicas, s.Status)
		})
		return s
	}
	ready("statefulset with 2 ready pods")
	res, err := e.act.ScaleBounce(ctx, e.request(policy.KindStatefulSet, "event-store", "inc-sts"))
	if err != nil || res.Outcome != OutcomeApplied || !strings.HasPrefix(res.Message, "scaled to 0 and back to 2 replicas") {
		t.Fatalf("ScaleBounce = %+v, %v", res, err)
	}
	s := ready("statefulset back at 2 ready pods")
	if got := scaleAnnotations(s.Annotations); got != kinds.AnnotationScaleBouncedFor+"=inc-sts" {
		t.Errorf("annotations after the bounce = %s", got)
	}
}

func TestScaleBounceDryRunChangesNothing(t *testing.T) {
	e := newFlagTestEnv(t)
	d := e.deployment(t, "event-service", 2)
	req := e.request(policy.KindDeployment, "event-service", "inc-dry")
	req.DryRun = true
	res, err := e.act.ScaleBounce(context.Background(), req)
	if err != nil || res.Outcome != OutcomeDryRun || !strings.HasPrefix(res.Message, "dry run: would scale to 0 and back to 2 replicas") {
		t.Fatalf("dry run = %+v, %v", res, err)
	}
	after := e.mustDeployment(t, "event-service")
	if written(after) != written(d) || *after.Spec.Replicas != 2 || scaleAnnotations(after.Annotations) != "" {
		t.Errorf("dry run changed the deployment: %s -> %s, %d replicas, annotations %s",
			written(d), written(after), *after.Spec.Replicas, scaleAnnotations(after.Annotations))
	}
	if got := flagTestCounter(t, e.reg, KindScaleBounce, "applied", true); got != 1 {
		t.Errorf("actions_total{scale_bounce,applied,dry_run=true} = %v, want 1", got)
	}
}

func TestScaleBounceDaemonSetIsRefused(t *testing.T) {
	e := newFlagTestEnv(t)
	_, err := e.act.ScaleBounce(context.Background(), e.request(policy.KindDaemonSet, "event-agent", "inc-ds"))
	if !errors.Is(err, ErrNotScalable) {
		t.Fatalf("ScaleBounce of a DaemonSet = %v, want ErrNotScalable", err)
	}
	if got := flagTestCounter(t, e.reg, KindScaleBounce, "failed", false); got != 1 {
		t.Errorf("actions_total{scale_bounce,failed} = %v, want 1", got)
	}
}

// TestScaleBounceStaleWriteConflicts shows that the record-and-scale write
// carries the resourceVersion it read: a change in between makes the real
// API server refuse it.
func TestScaleBounceStaleWriteConflicts(t *testing.T) {
	e := newFlagTestEnv(t)
	ctx := context.Background()
	e.deployment(t, "event-service", 2)
	req := e.request(policy.KindDeployment, "event-service", "inc-stale")
	w, err := e.act.readLiveWorkload(ctx, req.Target)
	if err != nil {
		t.Fatal(err)
	}
	// Someone scales it after our read.
	if _, err := e.c.Client.AppsV1().Deployments(e.ns).Patch(ctx, "event-service", types.MergePatchType, []byte(`{"spec":{"replicas":4}}`), metav1.PatchOptions{}); err != nil {
		t.Fatal(err)
	}
	err = e.act.patchLiveWorkload(ctx, req, w, scalePatch(w.meta.ResourceVersion, 0, map[string]*string{
		kinds.AnnotationScaleRestoreReplicas: new("2"), kinds.AnnotationScaleIncident: &req.Incident,
	}))
	if !apierrors.IsConflict(err) {
		t.Fatalf("scale write with a stale resourceVersion = %v, want a Conflict", err)
	}
	if d := e.mustDeployment(t, "event-service"); *d.Spec.Replicas != 4 || scaleAnnotations(d.Annotations) != "" {
		t.Errorf("stale write changed the deployment: %d replicas, annotations %s", *d.Spec.Replicas, scaleAnnotations(d.Annotations))
	}
}
