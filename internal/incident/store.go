package incident

import (
	"cmp"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/selection"
	"k8s.io/client-go/tools/pager"

	"github.com/autorollbackd/autorollbackd/internal/kinds"
	"github.com/autorollbackd/autorollbackd/internal/kubeclient"
	"github.com/autorollbackd/autorollbackd/internal/policy"
)

const (
	managedByLabel = kinds.LabelManagedBy
	managedBy      = kinds.ManagedBy
	kindLabel      = kinds.LabelRecord
	kindIncident   = "incident"
	stateLabel     = kinds.LabelIncidentState
	targetLabel    = kinds.LabelTarget
	dataKey        = "incident.json"
)

// KindIncident is the value of the autorollback.io/record label on incident
// ConfigMaps.
const KindIncident = kindIncident

// ErrExists is returned by Create when the incident is already recorded.
var ErrExists = errors.New("incident exists")

// ErrNotFound is returned when no incident has the given id.
var ErrNotFound = errors.New("no such incident")

var errNewerSchema = errors.New("written by a newer daemon")

// Store keeps incidents as ConfigMaps in one namespace.
type Store struct {
	Client    kubeclient.Interface
	Namespace string
	// PageSize bounds the incidents one List request reads; zero means
	// DefaultPageSize.
	PageSize int64
}

// Versioned is an incident as read, with the version that a later Update
// must still find.
type Versioned struct {
	*Incident
	resourceVersion string
	// data is the record as last read or written, to tell a change of
	// the incident by another writer from one of the ConfigMap's metadata.
	data string
}

// targetKey is a label value naming a workload.
func targetKey(r policy.Ref) string {
	sum := sha256.Sum256([]byte(r.String()))
	return hex.EncodeToString(sum[:12])
}

func (s *Store) encode(inc *Incident, rv string) (*corev1.ConfigMap, error) {
	inc.SchemaVersion = SchemaVersion
	data, err := json.Marshal(inc)
	if err != nil {
		return nil, fmt.Errorf("encode incident %s: %w", inc.ID, err)
	}
	return &corev1.ConfigMap{
		ObjectMeta: metav1.ObjectMeta{
			Name: ObjectName(inc.ID), Namespace: s.Namespace, ResourceVersion: rv,
			Labels: map[string]string{
				managedByLabel: managedBy, kindLabel: kindIncident,
				stateLabel: string(inc.State), targetLabel: targetKey(inc.Target),
			},
			Annotations: map[string]string{kinds.AnnotationIncident: inc.ID, kinds.AnnotationTarget: inc.Target.String()},
		},
		Data: map[string]string{dataKey: string(data)},
	}, nil
}

func decode(cm *corev1.ConfigMap) (*Versioned, error) {
	var inc Incident
	if err := json.Unmarshal([]byte(cm.Data[dataKey]), &inc); err != nil {
		return nil, fmt.Errorf("decode incident %s: %w", cm.Name, err)
	}
	if inc.SchemaVersion > SchemaVersion {
		return nil, fmt.Errorf("decode incident %s: schema version %d is newer than this daemon's %d: %w", cm.Name, inc.SchemaVersion, SchemaVersion, errNewerSchema)
	}
	if inc.ID == "" || ObjectName(inc.ID) != cm.Name {
		return nil, fmt.Errorf("decode incident %s: it holds incident %q, whose ConfigMap is another", cm.Name, clip(inc.ID, 100))
	}
	return &Versioned{Incident: &inc, resourceVersion: cm.ResourceVersion, data: cm.Data[dataKey]}, nil
}

// Create records a new incident; ErrExists when it is already there.
func (s *Store) Create(ctx context.Context, inc *Incident) (*Versioned, error) {
	cm, err := s.encode(inc, "")
	if err != nil {
		return nil, err
	}
	out, err := s.Client.CoreV1().ConfigMaps(s.Namespace).Create(ctx, cm, metav1.CreateOptions{})
	if apierrors.IsAlreadyExists(err) {
		return nil, ErrExists
	}
	if err != nil {
		return nil, fmt.Errorf("record incident %s: %w", inc.ID, err)
	}
	return &Versioned{Incident: inc, resourceVersion: out.ResourceVersion, data: cm.Data[dataKey]}, nil
}

// Get reads the incident with id.
func (s *Store) Get(ctx context.Context, id string) (*Versioned, error) {
	return s.getObject(ctx, ObjectName(id))
}

func (s *Store) getObject(ctx context.Context, name string) (*Versioned, error) {
	cm, err := s.Client.CoreV1().ConfigMaps(s.Namespace).Get(ctx, name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return nil, ErrNotFound
	}
	if err != nil {
		return nil, fmt.Errorf("read incident %s: %w", name, err)
	}
	return decode(cm)
}

// Update writes v back. It fails with a Conflict API error when the
// incident changed since v was read: the caller reads it again. A change
// of the ConfigMap alone (a label or annotation somebody added) is no
// conflict: the incident is written over it.
func (s *Store) Update(ctx context.Context, v *Versioned) error {
	cm, err := s.encode(v.Incident, v.resourceVersion)
	if err != nil {
		return err
	}
	cms := s.Client.CoreV1().ConfigMaps(s.Namespace)
	for attempt := 0; ; attempt++ {
		out, err := cms.Update(ctx, cm, metav1.UpdateOptions{})
		if err == nil {
			v.resourceVersion, v.data = out.ResourceVersion, cm.Data[dataKey]
			return nil
		}
		if !apierrors.IsConflict(err) || attempt == maxMetadataConflicts {
			return fmt.Errorf("update incident %s: %w", v.ID, err)
		}
		cur, getErr := cms.Get(ctx, cm.Name, metav1.GetOptions{})
		if getErr != nil {
			return fmt.Errorf("update incident %s: %w (and read it again: %w)", v.ID, err, getErr)
		}
		if cur.Data[dataKey] != v.data {
			return fmt.Errorf("update incident %s: written by another writer: %w", v.ID, err)
		}
		cm.ResourceVersion = cur.ResourceVersion
	}
}

// maxMetadataConflicts bounds the conflicts Update writes over when only
// the ConfigMap's metadata changed.
const maxMetadataConflicts = 5

// List returns the incidents, newest first; open limits them to open ones.
// Incidents it cannot read are left out: see Scan.
func (s *Store) List(ctx context.Context, open bool) ([]*Versioned, error) {
	list, _, err := s.Scan(ctx, open)
	return list, err
}

// Unreadable is an incident ConfigMap that could not be decoded.
type Unreadable struct {
	Object *corev1.ConfigMap
	Err    error
	// Newer is set when a newer daemon wrote it (during a rolling
	// upgrade, say): it is not corrupt, and must be left alone.
	Newer bool
}

// Scan returns the incidents, newest first (open limits them to open ones),
// and apart from them those that cannot be decoded, so that one corrupt
// ConfigMap never hides the others. It reads them PageSize at a time.
func (s *Store) Scan(ctx context.Context, open bool) ([]*Versioned, []Unreadable, error) {
	return s.scan(ctx, open, nil)
}

func (s *Store) scan(ctx context.Context, open bool, match map[string]string) ([]*Versioned, []Unreadable, error) {
	selector, err := Selector(open)
	if err != nil {
		return nil, nil, err
	}
	for k, v := range match {
		req, err := labels.NewRequirement(k, selection.Equals, []string{v})
		if err != nil {
			return nil, nil, fmt.Errorf("select incidents by %s: %w", k, err)
		}
		selector = selector.Add(*req)
	}
	var (
		out []*Versioned
		bad []Unreadable
	)
	err = EachConfigMap(ctx, s.Client, s.Namespace, selector, s.PageSize, func(cm *corev1.ConfigMap) error {
		v, err := decode(cm)
		switch {
		case errors.Is(err, errNewerSchema):
			bad = append(bad, Unreadable{Object: cm, Err: err, Newer: true})
		case err != nil:
			bad = append(bad, Unreadable{Object: cm, Err: err})
		default:
			out = append(out, v)
		}
		return nil
	})
	if err != nil {
		return nil, nil, fmt.Errorf("list incidents: %w", err)
	}
	sort.Slice(out, func(a, b int) bool { return out[a].StartedAt.After(out[b].StartedAt) })
	return out, bad, nil
}

// DefaultPageSize is how many objects one List request reads: a page of
// records at their largest stays a few MiB.
const DefaultPageSize = 100

// EachConfigMap calls fn with each ConfigMap in namespace matching
// selector, reading them pageSize at a time (DefaultPageSize when zero or
// less), so that however many there are, one request and the memory it
// takes stay bounded. When the server expires the continue token of a long
// walk, it fails rather than falling back to one unpaginated List.
func EachConfigMap(ctx context.Context, client kubeclient.Interface, namespace string, selector labels.Selector, pageSize int64, fn func(*corev1.ConfigMap) error) error {
	p := pager.New(pager.SimplePageFunc(func(opts metav1.ListOptions) (runtime.Object, error) {
		return client.CoreV1().ConfigMaps(namespace).List(ctx, opts)
	}))
	p.PageSize = cmp.Or(max(pageSize, 0), DefaultPageSize)
	// The page being handled and the one being read: no more.
	p.PageBufferSize = 0
	p.FullListIfExpired = false
	return p.EachListItem(ctx, metav1.ListOptions{LabelSelector: selector.String()}, func(obj runtime.Object) error {
		cm, ok := obj.(*corev1.ConfigMap)
		if !ok {
			return fmt.Errorf("list ConfigMaps: got %T", obj)
		}
		return fn(cm)
	})
}

// quarantineReasonMax bounds the kinds.AnnotationQuarantineReason of a
// quarantined ConfigMap.
const quarantineReasonMax = 1 << 10

// Quarantine moves cm, a record or incident that cannot be decoded, aside:
// it copies it under a new name, labelled kinds.LabelQuarantined=true and without
// the labels that select records, and deletes the original, so that its
// name is free for the alert or incident it should have held. It returns
// the copy's name. The delete carries cm's UID and resourceVersion: a
// ConfigMap rewritten since it was read is left in place.
func Quarantine(ctx context.Context, client kubeclient.Interface, cm *corev1.ConfigMap, why error) (string, error) {
	sum := sha256.Sum256([]byte(cm.Name + "/" + string(cm.UID)))
	name := "autorollbackd-quarantined-" + hex.EncodeToString(sum[:10])
	reason := clip(why.Error(), quarantineReasonMax)
	annotations := map[string]string{}
	for k, v := range cm.Annotations {
		annotations[k] = v
	}
	annotations[kinds.AnnotationQuarantinedFrom] = cm.Name
	annotations[kinds.AnnotationQuarantineReason] = reason
	moved := &corev1.ConfigMap{
		ObjectMeta: metav1.ObjectMeta{
			Name: name, Namespace: cm.Namespace, Annotations: annotations,
			Labels: map[string]string{managedByLabel: managedBy, kinds.LabelQuarantined: "true"},
		},
		Data: cm.Data, BinaryData: cm.BinaryData,
	}
	cms := client.CoreV1().ConfigMaps(cm.Namespace)
	if _, err := cms.Create(ctx, moved, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		return "", fmt.Errorf("quarantine %s as %s: %w", cm.Name, name, err)
	}
	pre := metav1.Preconditions{UID: &cm.UID, ResourceVersion: &cm.ResourceVersion}
	err := cms.Delete(ctx, cm.Name, metav1.DeleteOptions{Preconditions: &pre})
	if err != nil && !apierrors.IsNotFound(err) && !apierrors.IsConflict(err) {
		return "", fmt.Errorf("quarantine %s: delete the original: %w", cm.Name, err)
	}
	return name, nil
}

// DeleteResolvedBefore deletes incidents resolved before the given time and
// returns how many it deleted, and the resolved ones it could not read.
func (s *Store) DeleteResolvedBefore(ctx context.Context, before time.Time) (int, []Unreadable, error) {
	list, bad, err := s.scan(ctx, false, map[string]string{stateLabel: string(StateResolved)})
	if err != nil {
		return 0, nil, err
	}
	n := 0
	for _, v := range list {
		if v.ResolvedAt.IsZero() || !v.ResolvedAt.Before(before) {
			continue
		}
		err := s.Client.CoreV1().ConfigMaps(s.Namespace).Delete(ctx, ObjectName(v.ID), metav1.DeleteOptions{})
		if err != nil && !apierrors.IsNotFound(err) {
			return n, bad, fmt.Errorf("delete incident %s: %w", v.ID, err)
		}
		n++
	}
	return n, bad, nil
}

// clip shortens s to at most n bytes, on a character boundary.
func clip(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return strings.ToValidUTF8(s[:n], "")
}

// Selector selects the incident ConfigMaps: all of them, or with open only
// those not resolved.
func Selector(open bool) (labels.Selector, error) {
	selector := labels.SelectorFromSet(labels.Set{managedByLabel: managedBy, kindLabel: kindIncident})
	if open {
		req, err := labels.NewRequirement(stateLabel, selection.NotEquals, []string{string(StateResolved)})
		if err != nil {
			return nil, fmt.Errorf("select open incidents: %w", err)
		}
		selector = selector.Add(*req)
	}
	return selector, nil
}

// Decode reads the incident an incident ConfigMap holds, as List and Get
// do; for readers that watch the ConfigMaps themselves.
func Decode(cm *corev1.ConfigMap) (*Incident, error) {
	v, err := decode(cm)
	if err != nil {
		return nil, err
	}
	return v.Incident, nil
}
