package workload

import (
	"context"
	"errors"
	"fmt"
	"strings"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"

	"github.com/autorollbackd/autorollbackd/internal/kinds"
	"github.com/autorollbackd/autorollbackd/internal/policy"
)

// ErrNoRevision is returned by Live.RevisionPods when the workload has no
// recorded revision with the number asked for.
var ErrNoRevision = errors.New("no such revision")

// PodSet names the pods of one revision of a workload: those Selector
// selects whose controller is Owner.
type PodSet struct {
	// Owner is the controller of the pods: the ReplicaSet of a Deployment's
	// revision, or the StatefulSet or DaemonSet itself.
	Owner types.UID
	// Selector is the workload's selector plus the revision's label.
	Selector labels.Selector
	// Hash is the value of the revision's label on its pods
	// (pod-template-hash or controller-revision-hash).
	Hash string
}

// Has reports whether p is one of the set's pods.
func (s PodSet) Has(p *corev1.Pod) bool {
	ref := metav1.GetControllerOfNoCopy(p)
	return ref != nil && ref.UID == s.Owner && s.Selector.Matches(labels.Set(p.Labels))
}

// ReplicaSetPods returns the pods of rs, a ReplicaSet of d (whole or its
// metadata): they carry its pod-template-hash and rs is their controller.
func ReplicaSetPods(d *appsv1.Deployment, rs metav1.Object) (PodSet, error) {
	return podSet(d.Spec.Selector, rs.GetUID(), kinds.LabelPodTemplateHash, rs.GetLabels()[kinds.LabelPodTemplateHash])
}

// StatefulSetPods returns the pods of s at the ControllerRevision named
// revision (a status's currentRevision or updateRevision): the StatefulSet
// controller labels its pods with the revision's name.
func StatefulSetPods(s *appsv1.StatefulSet, revision string) (PodSet, error) {
	return podSet(s.Spec.Selector, s.UID, kinds.LabelControllerRevisionHash, revision)
}

// DaemonSetPods returns the pods of ds at cr: the DaemonSet controller
// labels its pods with the revision's hash, which it also puts on the
// ControllerRevision (and at the end of its name).
func DaemonSetPods(ds *appsv1.DaemonSet, cr *appsv1.ControllerRevision) (PodSet, error) {
	hash := cr.Labels[kinds.LabelControllerRevisionHash]
	if hash == "" {
		hash = strings.TrimPrefix(cr.Name, ds.Name+"-")
	}
	return podSet(ds.Spec.Selector, ds.UID, kinds.LabelControllerRevisionHash, hash)
}

func podSet(selector *metav1.LabelSelector, owner types.UID, key, value string) (PodSet, error) {
	sel, err := metav1.LabelSelectorAsSelector(selector)
	if err != nil {
		return PodSet{}, fmt.Errorf("parse selector: %w", err)
	}
	req, err := labels.NewRequirement(key, "=", []string{value})
	if err != nil {
		return PodSet{}, fmt.Errorf("select pods with %s=%s: %w", key, value, err)
	}
	return PodSet{Owner: owner, Selector: sel.Add(*req), Hash: value}, nil
}

// RevisionPods returns the pods of ref at the revision numbered revision
// (the number Facts reports): for a Deployment, the ReplicaSet whose
// revision annotation is that number; for a StatefulSet or DaemonSet, the
// ControllerRevision with that number. A revision the workload does not
// have is ErrNoRevision.
func (l Live) RevisionPods(ctx context.Context, ref policy.Ref, revision int64) (PodSet, error) {
	a, err := For(ref.Kind)
	if err != nil {
		return PodSet{}, fmt.Errorf("pods of %s: %w", ref, err)
	}
	obj, err := a.Get(ctx, l.Client, ref.Namespace, ref.Name)
	if err != nil {
		return PodSet{}, fmt.Errorf("read %s: %w", ref, err)
	}
	history, err := a.History(ctx, l.Client, obj)
	if err != nil {
		return PodSet{}, fmt.Errorf("%s: %w", ref, err)
	}
	return revisionPods(ref, obj, history, revision)
}

// revisionPods returns the pods of obj, ref's object, at the revision of
// history numbered revision.
func revisionPods(ref policy.Ref, obj Object, history []Revision, revision int64) (PodSet, error) {
	rev, ok := Numbered(history, revision)
	if !ok {
		return PodSet{}, fmt.Errorf("pods of %s at revision %d: %w", ref, revision, ErrNoRevision)
	}
	ps, err := obj.Pods(rev)
	if err != nil {
		return PodSet{}, fmt.Errorf("pods of %s: %w", ref, err)
	}
	return ps, nil
}
