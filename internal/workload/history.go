package workload

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apiequality "k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/autorollbackd/autorollbackd/internal/kinds"
	"github.com/autorollbackd/autorollbackd/internal/kubeclient"
	"github.com/autorollbackd/autorollbackd/internal/policy"
)

// controllerRevisionHistory is what StatefulSets and DaemonSets share: their
// revisions are ControllerRevisions, and the actuator reads them from the
// API server only.
type controllerRevisionHistory struct{ kind kinds.Kind }

func (controllerRevisionHistory) HistoryKind() string        { return "ControllerRevision" }
func (controllerRevisionHistory) RevisionLabel() string      { return kinds.LabelControllerRevisionHash }
func (controllerRevisionHistory) RevisionNeedsHistory() bool { return true }

func (h controllerRevisionHistory) History(ctx context.Context, c kubeclient.Interface, obj Object) ([]Revision, error) {
	sel, err := metav1.LabelSelectorAsSelector(obj.Selector())
	if err != nil {
		return nil, fmt.Errorf("read selector: %w", err)
	}
	list, err := c.AppsV1().ControllerRevisions(obj.Meta().Namespace).List(ctx, metav1.ListOptions{LabelSelector: sel.String()})
	if err != nil {
		return nil, fmt.Errorf("list ControllerRevisions: %w", err)
	}
	return h.revisions(obj.Meta(), pointers(list.Items)), nil
}

func (h controllerRevisionHistory) WithTemplate(ctx context.Context, c kubeclient.Interface, obj Object, rev Revision) (Revision, error) {
	if cr, ok := rev.Object.(*appsv1.ControllerRevision); ok && len(cr.Data.Raw) > 0 {
		return rev, nil
	}
	owner := obj.Meta()
	cr, err := c.AppsV1().ControllerRevisions(owner.Namespace).Get(ctx, rev.Name, metav1.GetOptions{})
	if err != nil {
		return rev, fmt.Errorf("read ControllerRevision %s of revision %d: %w", rev.Name, rev.Number, err)
	}
	if !metav1.IsControlledBy(cr, owner) || cr.Revision != rev.Number {
		return rev, fmt.Errorf("%w: ControllerRevision %s is no longer revision %d of %s", ErrRevisionMoved, rev.Name, rev.Number, owner.Name)
	}
	rev.Object, rev.Created = cr, cr.CreationTimestamp.Time
	return rev, nil
}

func (h controllerRevisionHistory) CachedHistory(c Cached, obj Object) ([]Revision, error) {
	m := obj.Meta()
	ref := policy.Ref{Kind: h.kind, Namespace: m.Namespace, Name: m.Name}
	crs, err := c.revisions(ref, m, obj.Selector())
	if err != nil {
		return nil, err
	}
	return h.revisions(m, crs), nil
}

func (h controllerRevisionHistory) CacheHistory(DeploymentCache, Object) ([]Revision, error) {
	return nil, apierrors.NewNotFound(appsv1.Resource("controllerrevisions"), "")
}

// revisions returns the ControllerRevisions of crs that owner controls.
func (h controllerRevisionHistory) revisions(owner metav1.Object, crs []*appsv1.ControllerRevision) []Revision {
	revs := make([]Revision, 0, len(crs))
	for _, cr := range crs {
		if metav1.IsControlledBy(cr, owner) {
			revs = append(revs, Revision{Number: cr.Revision, Name: cr.Name, Created: cr.CreationTimestamp.Time, Object: cr})
		}
	}
	return revs
}

// historyUndo is kubectl's undo of a StatefulSet or DaemonSet: the target
// ControllerRevision's pod template replaces the workload's. The controller
// stores it as a strategic merge patch that replaces the whole template;
// it is written as it is, without the patch directive.
func historyUndo(rev Revision, current *corev1.PodTemplateSpec) (any, bool, error) {
	cr, ok := rev.Object.(*appsv1.ControllerRevision)
	if !ok || len(cr.Data.Raw) == 0 {
		return nil, false, fmt.Errorf("ControllerRevision %s: %w", rev.Name, errMetadataOnly)
	}
	var typed struct {
		Spec struct {
			Template corev1.PodTemplateSpec `json:"template"`
		} `json:"spec"`
	}
	if err := json.Unmarshal(cr.Data.Raw, &typed); err != nil {
		return nil, false, fmt.Errorf("decode ControllerRevision %s: %w", cr.Name, err)
	}
	if apiequality.Semantic.DeepEqual(&typed.Spec.Template, current) {
		return nil, true, nil
	}
	var data struct {
		Spec struct {
			Template map[string]any `json:"template"`
		} `json:"spec"`
	}
	if err := json.Unmarshal(cr.Data.Raw, &data); err != nil {
		return nil, false, fmt.Errorf("decode ControllerRevision %s: %w", cr.Name, err)
	}
	if data.Spec.Template == nil {
		return nil, false, fmt.Errorf("ControllerRevision %s holds no pod template", cr.Name)
	}
	delete(data.Spec.Template, "$patch")
	return data.Spec.Template, false, nil
}

// historyAnnotations: an undo from history keeps the workload's
// annotations.
func historyAnnotations(meta *metav1.ObjectMeta) map[string]string {
	annotations := maps.Clone(meta.Annotations)
	if annotations == nil {
		annotations = map[string]string{}
	}
	return annotations
}

// newest returns the highest number in revs; 0 when there is none.
func newest(revs []Revision) int64 {
	var n int64
	for _, r := range revs {
		n = max(n, r.Number)
	}
	return n
}

// Numbered returns the revision of revs numbered n, the newest one when
// several are (as a Deployment's ReplicaSets can be for a moment); false
// when there is none.
func Numbered(revs []Revision, n int64) (Revision, bool) {
	var found Revision
	ok := false
	for _, r := range revs {
		if r.Number == n && (!ok || r.Created.After(found.Created)) {
			found, ok = r, true
		}
	}
	return found, ok
}
