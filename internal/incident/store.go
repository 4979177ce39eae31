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
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/selection"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/pager"

	"github.com/autorollbackd/autorollbackd/internal/policy"
)

const (
	managedByLabel = "app.kubernetes.io/managed-by"
	managedBy      = "autorollbackd"
	kindLabel      = "autorollback.io/record"
	kindIncident   = "incident"
	stateLabel     = "autorollback.io/incident-state"
	targetLabel    = "autorollback.io/target"
	dataKey        = "incident.json"
)

// ErrExists is returned by Create when the incident is already recorded.
var ErrExists = errors.New("incident exists")

// ErrNotFound is returned when no incident has the given id.
var ErrNotFound = errors.New("no such incident")

// Store keeps incidents as ConfigMaps in one namespace.
type Store struct {
	Client    kubernetes.Interface
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
			Annotations: map[string]string{"autorollback.io/incident": inc.ID, "autorollback.io/target": inc.Target.String()},
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
		return nil, fmt.Errorf("decode incident %s: schema version %d is newer than this daemon's %d", cm.Name, inc.SchemaVersion, SchemaVersion)
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

// List returns incidents, newest first; open limits them to open ones.
func (s *Store) List(ctx context.Context, open bool) ([]*Versioned, error) {
	return s.list(ctx, open, nil)
}

func (s *Store) list(ctx context.Context, open bool, match map[string]string) ([]*Versioned, error) {
	sel := labels.Set{managedByLabel: managedBy, kindLabel: kindIncident}
	for k, v := range match {
		sel[k] = v
	}
	selector := labels.SelectorFromSet(sel)
	if open {
		req, err := labels.NewRequirement(stateLabel, selection.NotEquals, []string{string(StateResolved)})
		if err != nil {
			return nil, fmt.Errorf("select open incidents: %w", err)
		}
		selector = selector.Add(*req)
	}
	var out []*Versioned
	err := EachConfigMap(ctx, s.Client, s.Namespace, selector, s.PageSize, func(cm *corev1.ConfigMap) error {
		v, err := decode(cm)
		if err != nil {
			return err
		}
		out = append(out, v)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("list incidents: %w", err)
	}
	sort.Slice(out, func(a, b int) bool { return out[a].StartedAt.After(out[b].StartedAt) })
	return out, nil
}

// DefaultPageSize is how many objects one List request reads: a page of
// records at their largest stays a few MiB.
const DefaultPageSize = 100

// EachConfigMap calls fn with each ConfigMap in namespace matching
// selector, reading them pageSize at a time (DefaultPageSize when zero or
// less), so that however many there are, one request and the memory it
// takes stay bounded. When the server expires the continue token of a long
// walk, it fails rather than falling back to one unpaginated List.
func EachConfigMap(ctx context.Context, client kubernetes.Interface, namespace string, selector labels.Selector, pageSize int64, fn func(*corev1.ConfigMap) error) error {
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

// DeleteResolvedBefore deletes incidents resolved before the given time and
// returns how many it deleted.
func (s *Store) DeleteResolvedBefore(ctx context.Context, before time.Time) (int, error) {
	list, err := s.list(ctx, false, map[string]string{stateLabel: string(StateResolved)})
	if err != nil {
		return 0, err
	}
	n := 0
	for _, v := range list {
		if v.ResolvedAt.IsZero() || !v.ResolvedAt.Before(before) {
			continue
		}
		err := s.Client.CoreV1().ConfigMaps(s.Namespace).Delete(ctx, ObjectName(v.ID), metav1.DeleteOptions{})
		if err != nil && !apierrors.IsNotFound(err) {
			return n, fmt.Errorf("delete incident %s: %w", v.ID, err)
		}
		n++
	}
	return n, nil
}
