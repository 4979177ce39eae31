package verify

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"

	"github.com/autorollbackd/autorollbackd/internal/workload"
)

// maxPodsNamed is how many not-ready pods a message names.
const maxPodsNamed = 5

// podSet is what the pods check needs to know about a workload: which pods
// make up its current revision and how many of them it wants.
type podSet struct {
	kind     string          // "deployment", "statefulset", "daemonset", for messages
	owner    types.UID       // the controller of the pods: the new ReplicaSet, or the workload
	selector labels.Selector // the workload's selector plus the revision label
	revision string          // the revision label value, for messages
	desired  int32           // pods wanted at that revision
	waiting  string          // non-empty: the set cannot be judged yet, and why
}

// currentPods finds the pods of the workload's current revision (the
// revision its spec asks for, as workload.Object.CurrentRevision says) and
// how many it wants there. A status whose generation is not yet observed is
// not judged: the newest revision may not exist yet.
func (v *Verifier) currentPods(ctx context.Context, r *reads) (podSet, error) {
	target := r.target
	ns, name := target.Namespace, target.Name
	kind := strings.ToLower(string(target.Kind))
	a, err := workload.For(target.Kind)
	if err != nil {
		return podSet{}, fmt.Errorf("cannot check the pods of kind %q", target.Kind)
	}
	obj, cached, err := r.object(ctx)
	if err != nil {
		return podSet{}, fmt.Errorf("get %s %s/%s: %w", kind, ns, name, err)
	}
	ps := podSet{kind: kind, owner: obj.Meta().UID, desired: obj.PodsWanted()}
	if !obj.Observed() {
		ps.waiting = fmt.Sprintf("the %s's spec update is not observed yet", kind)
		return ps, nil
	}
	history, err := r.history(ctx, obj, cached)
	if err != nil {
		return podSet{}, fmt.Errorf("%s %s/%s: %w", kind, ns, name, err)
	}
	rev, ok := workload.Numbered(history, obj.CurrentRevision(history))
	if !ok {
		ps.waiting = fmt.Sprintf("the %s has no %s of its current revision yet", kind, a.HistoryKind())
		return ps, nil
	}
	return ps.of(obj.Pods(rev))
}

func controlledBy(refs []metav1.OwnerReference, uid types.UID) bool {
	for _, r := range refs {
		if r.Controller != nil && *r.Controller && r.UID == uid {
			return true
		}
	}
	return false
}

// of fills in the owner, selector and revision of ps from set.
func (ps podSet) of(set workload.PodSet, err error) (podSet, error) {
	if err != nil {
		return podSet{}, fmt.Errorf("pods of the %s: %w", ps.kind, err)
	}
	ps.owner, ps.selector, ps.revision = set.Owner, set.Selector, set.Hash
	return ps, nil
}

// judgePods decides whether the pods of one revision are all Running and
// Ready, and at least desired of them. Terminating pods and pods another
// controller owns are left out. The message names the pods that are not
// ready and why.
func judgePods(kind, revision string, desired int32, owner types.UID, pods []corev1.Pod) (string, bool) {
	var ready int32
	var notReady []string
	slices.SortFunc(pods, func(a, b corev1.Pod) int { return strings.Compare(a.Name, b.Name) })
	for i := range pods {
		p := &pods[i]
		if p.DeletionTimestamp != nil || !controlledBy(p.OwnerReferences, owner) {
			continue
		}
		if p.Status.Phase == corev1.PodRunning && podReady(p) {
			ready++
			continue
		}
		notReady = append(notReady, p.Name+" ("+whyNotReady(p)+")")
	}
	if len(notReady) == 0 && ready >= desired {
		return fmt.Sprintf("All %d pods of the %s at revision %s are Running and Ready (%d desired).", ready, kind, revision, desired), true
	}
	msg := fmt.Sprintf("%d of %d desired pods of the %s at revision %s are Running and Ready", ready, desired, kind, revision)
	if len(notReady) == 0 {
		return msg + "; no other pods exist at that revision.", false
	}
	if len(notReady) > maxPodsNamed {
		notReady = append(notReady[:maxPodsNamed], fmt.Sprintf("and %d more", len(notReady)-maxPodsNamed))
	}
	return msg + "; not ready: " + strings.Join(notReady, ", ") + ".", false
}

func podReady(p *corev1.Pod) bool {
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

// whyNotReady describes a pod's phase and what holds it back: an
// unschedulable pod's scheduling condition, containers waiting (for example
// CrashLoopBackOff, ImagePullBackOff) or terminated, or its Ready condition.
func whyNotReady(p *corev1.Pod) string {
	phase := string(p.Status.Phase)
	if phase == "" {
		phase = "no phase"
	}
	var why []string
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodScheduled && c.Status == corev1.ConditionFalse {
			why = append(why, joinNonEmpty(": ", c.Reason, strings.TrimRight(c.Message, ". ")))
		}
	}
	for _, group := range [][]corev1.ContainerStatus{p.Status.InitContainerStatuses, p.Status.ContainerStatuses} {
		for _, cs := range group {
			switch {
			case cs.State.Waiting != nil && cs.State.Waiting.Reason != "":
				why = append(why, fmt.Sprintf("container %s waiting: %s", cs.Name, cs.State.Waiting.Reason))
			case cs.State.Terminated != nil && cs.State.Terminated.ExitCode != 0:
				why = append(why, fmt.Sprintf("container %s terminated: %s (exit code %d)", cs.Name, cs.State.Terminated.Reason, cs.State.Terminated.ExitCode))
			case cs.State.Running != nil && !cs.Ready:
				why = append(why, fmt.Sprintf("container %s running but not ready", cs.Name))
			}
		}
	}
	if len(why) == 0 {
		for _, c := range p.Status.Conditions {
			if c.Type == corev1.PodReady && c.Status != corev1.ConditionTrue && c.Reason != "" {
				why = append(why, joinNonEmpty(": ", c.Reason, strings.TrimRight(c.Message, ". ")))
			}
		}
	}
	if p.Status.Phase == corev1.PodRunning && len(why) == 0 {
		why = append(why, "not Ready")
	}
	return joinNonEmpty(", ", append([]string{phase}, why...)...)
}

func joinNonEmpty(sep string, parts ...string) string {
	var out []string
	for _, s := range parts {
		if s != "" {
			out = append(out, s)
		}
	}
	return strings.Join(out, sep)
}

// checkPods polls the pods of the workload's current revision until they
// are all Running and Ready and at least the desired number (pass), or the
// timeout passes (fail, naming the pods that are not ready and why). It
// does not give up before floor.
func (v *Verifier) checkPods(ctx context.Context, r *reads, floor time.Time) (Status, string) {
	return v.wait(ctx, r.target, v.cfg.Pods.Timeout.Duration, floor, podsWords, func(ctx context.Context) (string, Status, bool, error) {
		msg, ok, err := v.judgeCurrentPods(ctx, r)
		return msg, StatusPass, ok, err
	})
}

var podsWords = waitWords{read: "the pods", awaited: "the pods were ready", deadline: "Pods not ready"}

// judgeCurrentPods reads the workload and its pods once and judges them.
func (v *Verifier) judgeCurrentPods(ctx context.Context, r *reads) (string, bool, error) {
	target := r.target
	ps, err := v.currentPods(ctx, r)
	if err != nil {
		return "", false, err
	}
	if ps.waiting != "" {
		return fmt.Sprintf("Waiting: %s.", ps.waiting), false, nil
	}
	list, err := v.client.CoreV1().Pods(target.Namespace).List(ctx, metav1.ListOptions{LabelSelector: ps.selector.String()})
	if err != nil {
		return "", false, fmt.Errorf("list pods of %s: %w", target, err)
	}
	msg, ok := judgePods(ps.kind, ps.revision, ps.desired, ps.owner, list.Items)
	return msg, ok, nil
}
