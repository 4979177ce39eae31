package workload

import (
	"context"
	"errors"
	"fmt"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"

	"github.com/autorollbackd/autorollbackd/internal/kinds"
	"github.com/autorollbackd/autorollbackd/internal/kubeclient"
	"github.com/autorollbackd/autorollbackd/internal/policy"
)

// Adapter is what the daemon asks of one kind of workload, in the manner of
// kubectl's polymorphichelpers: how to read it, its history and its cached
// copy, and how to write it. What it asks of one object of the kind is the
// business of the Object the adapter reads. Every kind has one Adapter,
// chosen by For; no other code branches on the kind, so a new kind is one
// new implementation registered there.
type Adapter interface {
	Kind() kinds.Kind
	// Resource is the kind's API resource, for errors.
	Resource() schema.GroupResource
	// HistoryKind names the objects that record the kind's revisions
	// (ReplicaSet, ControllerRevision), for messages.
	HistoryKind() string
	// RevisionLabel is the label that carries a revision's hash on its pods.
	RevisionLabel() string
	// RevisionNeedsHistory reports whether the current revision's number is
	// known only from the history, rather than from the object itself.
	RevisionNeedsHistory() bool
	// ScaleRefusal says why the kind cannot be scaled; empty when it can.
	ScaleRefusal() string

	// Get reads the workload from the API server.
	Get(ctx context.Context, c kubeclient.Interface, namespace, name string) (Object, error)
	// History lists, from the API server, the revisions of obj that obj
	// controls and whose number is known.
	History(ctx context.Context, c kubeclient.Interface, obj Object) ([]Revision, error)
	// WithTemplate returns rev, one of obj's revisions, with the object
	// that holds its pod template: rev itself when it holds it, else the
	// ReplicaSet or ControllerRevision read by name from the API server (a
	// cached revision is its metadata only), checked to be still obj's
	// revision rev.Number (ErrRevisionMoved otherwise).
	WithTemplate(ctx context.Context, c kubeclient.Interface, obj Object, rev Revision) (Revision, error)
	// Patch writes body, a patch of type pt, to the named workload, and
	// returns the workload as written (for a dry run, as it would be).
	Patch(ctx context.Context, c kubeclient.Interface, namespace, name string, pt types.PatchType, body []byte, opts metav1.PatchOptions) (Object, error)

	// Lookup reads the workload from the informer caches; a lister's
	// NotFound when they do not hold it.
	Lookup(c Cached, namespace, name string) (Object, error)
	// CachedHistory is History from the informer caches.
	CachedHistory(c Cached, obj Object) ([]Revision, error)

	// FromCache reads the workload from a DeploymentCache, as the actuator's
	// first attempt at a rollback does, and copies it; NotFound for a kind
	// such a cache does not hold.
	FromCache(c DeploymentCache, namespace, name string) (Object, error)
	// CacheHistory is History from a DeploymentCache, copied.
	CacheHistory(c DeploymentCache, obj Object) ([]Revision, error)
}

// Object is one workload as read, with what the daemon asks of it.
type Object interface {
	// Runtime is the object itself, for Events.
	Runtime() runtime.Object
	Meta() *metav1.ObjectMeta
	Template() *corev1.PodTemplateSpec
	Selector() *metav1.LabelSelector
	// Observed reports whether the controller has observed the latest spec.
	Observed() bool
	// Paused reports whether its rollouts are paused.
	Paused() bool
	// Replicas is spec.replicas; nil when the kind cannot be scaled.
	Replicas() *int32
	// ScaledDown reports whether the controller has observed the latest
	// spec and reports no pods left, terminating ones included where it
	// reports those.
	ScaledDown() bool
	// Progress is one line about the controller's progress, for messages.
	Progress() string
	// PodsWanted is how many pods it wants at its current revision.
	PodsWanted() int32
	// RolloutStatus judges its rollout as `kubectl rollout status` does.
	RolloutStatus() (string, RolloutState)

	// CurrentRevision is the number of its current revision, given its
	// history; 0 when unknown. It is the one place that says which
	// revision is current.
	CurrentRevision(history []Revision) int64
	// Facts are its facts for the policy, given its history.
	Facts(history []Revision) *policy.Workload
	// Pods names the pods of rev, one of its revisions.
	Pods(rev Revision) (PodSet, error)

	// UndoTemplate is what `kubectl rollout undo` to rev writes as the pod
	// template (a JSON value), and whether the current template already is
	// rev's.
	UndoTemplate(rev Revision) (template any, same bool, err error)
	// UndoAnnotations are the annotations the workload has after the undo
	// to rev, before the daemon adds its record.
	UndoAnnotations(rev Revision) map[string]string
	// RevisionAnnotation is the annotation that holds its current
	// revision, which a rollback's precondition tests; empty for kinds
	// that keep their revision in status.
	RevisionAnnotation() string
}

// ErrRevisionMoved: the object read for a revision is no longer that
// revision of the workload (the controller renumbered it, or it changed
// hands).
var ErrRevisionMoved = errors.New("revision moved")

// Revision is one recorded revision of a workload: a ReplicaSet of a
// Deployment or a ControllerRevision of a StatefulSet or DaemonSet.
type Revision struct {
	Number  int64
	Name    string
	Created time.Time
	// Object is the ReplicaSet or ControllerRevision: whole when read from
	// the API server, its metadata only (a ReplicaSet) or without its data
	// (a ControllerRevision) when read from the informers' cache.
	Object metav1.Object
}

// DeploymentCache is a possibly stale view of Deployments and their
// ReplicaSets, such as the daemon's informers. An error, NotFound for an
// object or a namespace it does not hold in particular, means: read the API
// server instead.
type DeploymentCache interface {
	Deployment(namespace, name string) (*appsv1.Deployment, error)
	// ReplicaSets returns the metadata of the ReplicaSets of owner's
	// namespace that selector matches; it may leave out those owner does
	// not control.
	ReplicaSets(owner metav1.Object, selector labels.Selector) ([]*metav1.PartialObjectMetadata, error)
}

// ErrUnsupportedKind is returned by For for a kind the daemon cannot act on.
var ErrUnsupportedKind = errors.New("unsupported kind")

// adapters is the one choice of behaviour by kind.
var adapters = map[kinds.Kind]Adapter{
	kinds.KindDeployment:  deploymentAdapter{},
	kinds.KindStatefulSet: statefulSetAdapter{controllerRevisionHistory{kinds.KindStatefulSet}},
	kinds.KindDaemonSet:   daemonSetAdapter{controllerRevisionHistory{kinds.KindDaemonSet}},
	kinds.KindRollout:     rolloutAdapter{},
}

// For returns the Adapter of kind.
func For(kind kinds.Kind) (Adapter, error) {
	if a, ok := adapters[kind]; ok {
		return a, nil
	}
	return nil, fmt.Errorf("%w %q", ErrUnsupportedKind, kind)
}
