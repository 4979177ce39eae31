package workload

import (
	"context"
	"errors"
	"fmt"
	"strconv"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apiequality "k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/dynamic"

	"github.com/autorollbackd/autorollbackd/internal/kinds"
	"github.com/autorollbackd/autorollbackd/internal/kubeclient"
	"github.com/autorollbackd/autorollbackd/internal/policy"
)

// RolloutResource is Argo Rollouts' Rollout resource.
var RolloutResource = schema.GroupVersionResource{Group: "argoproj.io", Version: "v1alpha1", Resource: "rollouts"}

// Clients is a clientset together with a dynamic client, for kinds the
// clientset has no types for (Argo Rollouts' Rollout). It is itself a
// kubeclient.Interface, so it goes wherever the clientset went; the
// adapters of built-in kinds use the clientset only.
type Clients struct {
	kubeclient.Interface
	Dynamic dynamic.Interface
}

// ErrNoDynamicClient: a Rollout was asked for through a plain clientset.
var ErrNoDynamicClient = errors.New("reading Argo Rollouts' Rollouts needs a dynamic client (workload.Clients)")

func dynamicOf(c kubeclient.Interface) (dynamic.Interface, error) {
	switch cs := c.(type) {
	case Clients:
		if cs.Dynamic != nil {
			return cs.Dynamic, nil
		}
	case *Clients:
		if cs != nil && cs.Dynamic != nil {
			return cs.Dynamic, nil
		}
	}
	return nil, ErrNoDynamicClient
}

// Aborter is an Adapter whose kind can stop a rollout midway and return to
// its stable revision, as `kubectl argo rollouts abort` does, rather than
// write an earlier template.
type Aborter interface {
	// AbortsTo reports whether obj is midway through a rollout whose
	// stable revision is rev, so that aborting the rollout restores rev.
	AbortsTo(obj Object, rev Revision) bool
	// AbortPatch is the JSON patch operation, to follow the precondition's
	// tests, that aborts the rollout.
	AbortPatch() any
	// PatchStatus writes body, a patch of type pt, to the named workload's
	// status subresource.
	PatchStatus(ctx context.Context, c kubeclient.Interface, namespace, name string, pt types.PatchType, body []byte, opts metav1.PatchOptions) error
}

// rolloutAdapter: a Rollout's revisions are its ReplicaSets, numbered by the
// revision annotation Argo Rollouts keeps on both, as a Deployment's are.
// Rollouts are read from the API server through a dynamic client, or from a
// dynamic informer's lister in Cached.
type rolloutAdapter struct{}

var rolloutsResource = RolloutResource.GroupResource()

func (rolloutAdapter) Kind() kinds.Kind               { return kinds.KindRollout }
func (rolloutAdapter) Resource() schema.GroupResource { return rolloutsResource }
func (rolloutAdapter) HistoryKind() string            { return "ReplicaSet" }
func (rolloutAdapter) RevisionLabel() string          { return kinds.LabelRolloutPodTemplateHash }
func (rolloutAdapter) RevisionNeedsHistory() bool     { return true }
func (rolloutAdapter) ScaleRefusal() string {
	return "scaling a Rollout to zero and back is not supported: its controller also scales the canary and stable ReplicaSets"
}

func (rolloutAdapter) Get(ctx context.Context, c kubeclient.Interface, namespace, name string) (Object, error) {
	dyn, err := dynamicOf(c)
	if err != nil {
		return nil, err
	}
	u, err := dyn.Resource(RolloutResource).Namespace(namespace).Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		return nil, err
	}
	return rolloutOf(u)
}

func (rolloutAdapter) History(ctx context.Context, c kubeclient.Interface, obj Object) ([]Revision, error) {
	sel, err := metav1.LabelSelectorAsSelector(obj.Selector())
	if err != nil {
		return nil, fmt.Errorf("read selector: %w", err)
	}
	list, err := c.AppsV1().ReplicaSets(obj.Meta().Namespace).List(ctx, metav1.ListOptions{LabelSelector: sel.String()})
	if err != nil {
		return nil, fmt.Errorf("list ReplicaSets: %w", err)
	}
	return numberedReplicaSets(obj.Meta(), pointers(list.Items), kinds.AnnotationRolloutRevision), nil
}

func (rolloutAdapter) WithTemplate(ctx context.Context, c kubeclient.Interface, obj Object, rev Revision) (Revision, error) {
	return replicaSetWithTemplate(ctx, c, obj.Meta(), rev, kinds.AnnotationRolloutRevision)
}

func (rolloutAdapter) Patch(ctx context.Context, c kubeclient.Interface, namespace, name string, pt types.PatchType, body []byte, opts metav1.PatchOptions) (Object, error) {
	dyn, err := dynamicOf(c)
	if err != nil {
		return nil, err
	}
	if pt == types.StrategicMergePatchType {
		// A custom resource takes no strategic merge patch. The daemon's
		// strategic patches (a restart's template annotation) hold maps
		// only, where a JSON merge patch means the same.
		pt = types.MergePatchType
	}
	u, err := dyn.Resource(RolloutResource).Namespace(namespace).Patch(ctx, name, pt, body, opts)
	if err != nil {
		return nil, err
	}
	return rolloutOf(u)
}

func (rolloutAdapter) PatchStatus(ctx context.Context, c kubeclient.Interface, namespace, name string, pt types.PatchType, body []byte, opts metav1.PatchOptions) error {
	dyn, err := dynamicOf(c)
	if err != nil {
		return err
	}
	_, err = dyn.Resource(RolloutResource).Namespace(namespace).Patch(ctx, name, pt, body, opts, "status")
	return err
}

// AbortPatch sets status.abort, as the plugin's abort does.
func (rolloutAdapter) AbortPatch() any {
	return map[string]any{"op": "add", "path": "/status/abort", "value": true}
}

// AbortsTo: midway is a stable ReplicaSet other than the current pod hash,
// which is where a canary or blue-green rollout is until it is promoted.
func (rolloutAdapter) AbortsTo(obj Object, rev Revision) bool {
	r, ok := obj.(rollout)
	if !ok {
		return false
	}
	return rev.Object != nil && r.status.StableRS != "" && r.status.CurrentPodHash != "" && r.status.StableRS != r.status.CurrentPodHash &&
		rev.Object.GetLabels()[kinds.LabelRolloutPodTemplateHash] == r.status.StableRS
}

func (rolloutAdapter) Lookup(c Cached, namespace, name string) (Object, error) {
	if c.Rollouts == nil {
		return nil, fmt.Errorf("read Rollout %s/%s: Rollouts are not watched (Argo Rollouts support is off)", namespace, name)
	}
	o, err := c.Rollouts.ByNamespace(namespace).Get(name)
	if err != nil {
		return nil, err
	}
	u, ok := o.(*unstructured.Unstructured)
	if !ok {
		return nil, fmt.Errorf("read Rollout %s/%s: informer holds a %T", namespace, name, o)
	}
	return rolloutOf(u.DeepCopy())
}

func (rolloutAdapter) CachedHistory(c Cached, obj Object) ([]Revision, error) {
	m := obj.Meta()
	sel, err := newLabelSelector(obj.Selector())
	if err != nil {
		return nil, fmt.Errorf("read selector of Rollout %s/%s: %w", m.Namespace, m.Name, err)
	}
	var rss []*metav1.PartialObjectMetadata
	if c.replicaSetsByController != nil {
		rss, err = byController[*metav1.PartialObjectMetadata](c.replicaSetsByController, m.UID)
	} else {
		rss, err = c.ReplicaSets.Namespace(m.Namespace).List(labels.Everything())
	}
	if err != nil {
		return nil, fmt.Errorf("list ReplicaSets of Rollout %s/%s: %w", m.Namespace, m.Name, err)
	}
	return numberedReplicaSets(m, selected(rss, m.Namespace, sel), kinds.AnnotationRolloutRevision), nil
}

// FromCache: a DeploymentCache holds no Rollouts; they are read live.
func (rolloutAdapter) FromCache(_ DeploymentCache, _, name string) (Object, error) {
	return nil, apierrors.NewNotFound(rolloutsResource, name)
}

func (rolloutAdapter) CacheHistory(DeploymentCache, Object) ([]Revision, error) {
	return nil, apierrors.NewNotFound(appsv1.Resource("replicasets"), "")
}

// rolloutSpec and rolloutStatus are the fields of a Rollout the daemon
// reads; the rest of the object stays in the Unstructured.
type rolloutSpec struct {
	Replicas *int32                 `json:"replicas,omitempty"`
	Selector *metav1.LabelSelector  `json:"selector,omitempty"`
	Template corev1.PodTemplateSpec `json:"template"`
	Paused   bool                   `json:"paused,omitempty"`
}

type rolloutStatus struct {
	Abort             bool   `json:"abort,omitempty"`
	Phase             string `json:"phase,omitempty"`
	Message           string `json:"message,omitempty"`
	StableRS          string `json:"stableRS,omitempty"`
	CurrentPodHash    string `json:"currentPodHash,omitempty"`
	Replicas          int32  `json:"replicas,omitempty"`
	UpdatedReplicas   int32  `json:"updatedReplicas,omitempty"`
	AvailableReplicas int32  `json:"availableReplicas,omitempty"`
}

type rollout struct {
	u    *unstructured.Unstructured
	meta *metav1.ObjectMeta
	spec rolloutSpec
	// status.observedGeneration, which Argo Rollouts writes as a string.
	observedGeneration string
	status             rolloutStatus
}

func rolloutOf(u *unstructured.Unstructured) (rollout, error) {
	r := rollout{u: u, meta: &metav1.ObjectMeta{}}
	if m, ok := u.Object["metadata"].(map[string]any); ok {
		if err := runtime.DefaultUnstructuredConverter.FromUnstructured(m, r.meta); err != nil {
			return rollout{}, fmt.Errorf("decode Rollout %s/%s metadata: %w", u.GetNamespace(), u.GetName(), err)
		}
	}
	if s, ok := u.Object["spec"].(map[string]any); ok {
		if err := runtime.DefaultUnstructuredConverter.FromUnstructured(s, &r.spec); err != nil {
			return rollout{}, fmt.Errorf("decode Rollout %s/%s spec: %w", u.GetNamespace(), u.GetName(), err)
		}
	}
	if s, ok := u.Object["status"].(map[string]any); ok {
		if g, ok := s["observedGeneration"]; ok && g != nil {
			r.observedGeneration = fmt.Sprint(g)
		}
		s = map[string]any{
			"abort": s["abort"], "phase": s["phase"], "message": s["message"], "stableRS": s["stableRS"],
			"currentPodHash": s["currentPodHash"], "replicas": s["replicas"], "updatedReplicas": s["updatedReplicas"],
			"availableReplicas": s["availableReplicas"],
		}
		for k, v := range s {
			if v == nil {
				delete(s, k)
			}
		}
		if err := runtime.DefaultUnstructuredConverter.FromUnstructured(s, &r.status); err != nil {
			return rollout{}, fmt.Errorf("decode Rollout %s/%s status: %w", u.GetNamespace(), u.GetName(), err)
		}
	}
	return r, nil
}

func (r rollout) Runtime() runtime.Object           { return r.u }
func (r rollout) Meta() *metav1.ObjectMeta          { return r.meta }
func (r rollout) Template() *corev1.PodTemplateSpec { return &r.spec.Template }
func (r rollout) Selector() *metav1.LabelSelector   { return r.spec.Selector }
func (r rollout) Paused() bool                      { return r.spec.Paused }
func (r rollout) Replicas() *int32                  { return r.spec.Replicas }
func (r rollout) PodsWanted() int32                 { return ptrOr(r.spec.Replicas, 1) }
func (r rollout) RevisionAnnotation() string        { return kinds.AnnotationRolloutRevision }

func (r rollout) Observed() bool {
	return r.observedGeneration == strconv.FormatInt(r.meta.Generation, 10)
}

func (r rollout) ScaledDown() bool { return r.Observed() && r.status.Replicas == 0 }

func (r rollout) Progress() string {
	return fmt.Sprintf("generation %d, observed %s, phase %q, %d pods", r.meta.Generation, r.observedGeneration, r.status.Phase, r.status.Replicas)
}

// RolloutStatus judges the Rollout by its own status, as `kubectl argo
// rollouts status` does: Healthy is done, Degraded failed. An aborted
// rollout is Degraded by design; it is done once the stable ReplicaSet
// serves every pod again, with the canary or preview scaled away.
func (r rollout) RolloutStatus() (string, RolloutState) {
	name := r.meta.Name
	if !r.Observed() {
		return fmt.Sprintf("Waiting for rollout %q spec update to be observed...", name), RolloutWaiting
	}
	want := r.PodsWanted()
	if r.status.Abort {
		if r.status.Replicas == want && r.status.AvailableReplicas >= want {
			return fmt.Sprintf("rollout %q aborted: stable ReplicaSet %s serves all %d pods", name, r.status.StableRS, want), RolloutDone
		}
		return fmt.Sprintf("Waiting for aborted rollout %q to return to its stable ReplicaSet: %d pods, %d of %d available",
			name, r.status.Replicas, r.status.AvailableReplicas, want), RolloutWaiting
	}
	switch r.status.Phase {
	case "Healthy":
		return fmt.Sprintf("rollout %q is Healthy", name), RolloutDone
	case "Degraded":
		return fmt.Sprintf("rollout %q is Degraded: %s", name, r.status.Message), RolloutFailed
	}
	return fmt.Sprintf("Waiting for rollout %q to finish: %s %s", name, r.status.Phase, r.status.Message), RolloutWaiting
}

// CurrentRevision: Argo Rollouts writes the current revision's number on
// the Rollout, as the Deployment controller does on a Deployment. An
// aborted rollout is back at its stable ReplicaSet, whose pods are the ones
// that serve, though the spec still asks for the aborted revision; so its
// current revision is the stable one, and a rollback pinned to the aborted
// revision finds the Rollout changed.
func (r rollout) CurrentRevision(history []Revision) int64 {
	if r.status.Abort && r.status.StableRS != "" {
		for _, rev := range history {
			if rev.Object != nil && rev.Object.GetLabels()[kinds.LabelRolloutPodTemplateHash] == r.status.StableRS {
				return rev.Number
			}
		}
	}
	n, _ := strconv.ParseInt(r.meta.Annotations[kinds.AnnotationRolloutRevision], 10, 64)
	return n
}

func (r rollout) Facts(history []Revision) *policy.Workload {
	w := facts(kinds.KindRollout, r.meta, &r.spec.Template, r.CurrentRevision(history), history)
	w.Paused = r.spec.Paused
	return w
}

func (r rollout) Pods(rev Revision) (PodSet, error) {
	return podSet(r.spec.Selector, rev.Object.GetUID(), kinds.LabelRolloutPodTemplateHash, rev.Object.GetLabels()[kinds.LabelRolloutPodTemplateHash])
}

// UndoTemplate is the ReplicaSet's pod template without its
// rollouts-pod-template-hash label, as `kubectl argo rollouts undo` writes it.
func (r rollout) UndoTemplate(rev Revision) (any, bool, error) {
	rs, err := wholeReplicaSet(rev)
	if err != nil {
		return nil, false, err
	}
	template := rs.Spec.Template.DeepCopy()
	delete(template.Labels, kinds.LabelRolloutPodTemplateHash)
	// The Rollout's template is as written, the ReplicaSet's defaulted by
	// the API server: fields the Rollout leaves unset are not compared.
	current := r.spec.Template.DeepCopy()
	delete(current.Labels, kinds.LabelRolloutPodTemplateHash)
	return template, apiequality.Semantic.DeepDerivative(current, template), nil
}

// UndoAnnotations: the plugin's undo writes the template only and keeps the
// Rollout's annotations.
func (r rollout) UndoAnnotations(Revision) map[string]string { return historyAnnotations(r.meta) }
