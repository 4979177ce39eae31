package engine

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strings"
	"time"
	"unicode/utf8"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/selection"

	"github.com/autorollbackd/autorollbackd/internal/incident"
	"github.com/autorollbackd/autorollbackd/internal/kinds"
	"github.com/autorollbackd/autorollbackd/internal/kubeclient"
	"github.com/autorollbackd/autorollbackd/internal/policy"
)

// Labels of alert records. Records are ConfigMaps so that no CRD has to be
// installed before the daemon can keep its promises.
const (
	managedByLabel = kinds.LabelManagedBy
	managedBy      = kinds.ManagedBy
	kindLabel      = kinds.LabelRecord
	kindAlert      = "alert"
	stateLabel     = kinds.LabelAlertState
	outcomeLabel   = kinds.LabelAlertOutcome
	// incidentLabel names the ConfigMap of the incident the record's
	// alert was handed to, so that a leader resuming the incident finds
	// the alerts that joined it after its last save.
	incidentLabel = kinds.LabelIncidentObject
	recordDataKey = "record.json"

	statePending = "pending" // accepted, not yet decided
	stateDecided = "decided" // decided, not yet handed to its incident
	stateDone    = "done"    // decided and handed over (or nothing to hand over)
)

// Record is what the daemon remembers of one accepted firing alert. It is
// written to the cluster before the webhook answers 2xx, so an accepted alert
// survives a crash, and its name is derived from the alert's identity, so a
// second copy of the same alert (a re-send, or the other half of an
// Alertmanager HA pair, to either daemon replica) is refused by the API
// server rather than acted on twice.
type Record struct {
	// Key is the alert's identity: fingerprint and start time.
	Key    string       `json:"key"`
	Alert  policy.Alert `json:"alert"`
	Target policy.Ref   `json:"target"`
	// Origin is who sent the alert, from the webhook's credential: the
	// decision checks it again, and so does every action.
	Origin      policy.Origin    `json:"origin,omitzero"`
	ReceivedAt  time.Time        `json:"receivedAt"`
	Receiver    string           `json:"receiver,omitempty"`
	GroupKey    string           `json:"groupKey,omitempty"`
	ExternalURL string           `json:"externalURL,omitempty"`
	Decision    *policy.Decision `json:"decision,omitempty"`
	DecidedAt   time.Time        `json:"decidedAt,omitzero"`
	// Plan is what a rollback decision pins, from the facts it was taken
	// on, for the incident that carries it out.
	Plan *incident.Plan `json:"plan,omitempty"`
	// Incident is the incident the decision was handed to; empty for
	// decisions that open none (ignore, refuse).
	Incident string `json:"incident,omitempty"`
	// ResolvedAt is when Alertmanager reported the alert resolved.
	ResolvedAt time.Time `json:"resolvedAt,omitzero"`
	// Truncated counts the bytes of annotations, names and URLs left out
	// to keep the record small; each value cut ends in truncationMark.
	Truncated int `json:"truncatedBytes,omitempty"`
}

// Bounds of what a record keeps of an alert, so that a few hundred large
// alerts can neither fill etcd nor make the next leader's List of them
// too big for its memory.
//
// The policy decides on an alert's labels (its rules' matchers, the target
// workload), so a record keeps them exactly, or the alert is refused:
// deciding on cut labels would be deciding on another alert. Annotations
// are prose for people; they are cut to size, and the cut is marked.
const (
	maxLabelBytes           = 16 << 10
	maxAnnotationValueBytes = 4 << 10
	maxAnnotationBytes      = 16 << 10
	// Annotation names longer than this are dropped with their values.
	maxAnnotationNameBytes = 256
	// Receiver and group key are cut to this; a longer URL is dropped,
	// since a cut one would lead nowhere.
	maxFieldBytes = 4 << 10
	// maxRecordBytes bounds a record's encoding, escapes included; a
	// larger one is refused.
	maxRecordBytes = 128 << 10
)

// truncationMark ends a value that was cut.
const truncationMark = "…[truncated]"

// errTooLarge refuses a record whose encoding exceeds maxRecordBytes.
var errTooLarge = errors.New("record too large")

// validFingerprint reports whether fp is a fingerprint as Alertmanager
// writes one: 16 lower-case hex digits.
func validFingerprint(fp string) bool {
	if len(fp) != 16 {
		return false
	}
	for _, c := range []byte(fp) {
		if (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	return true
}

// labelBytes is the size of a label set: names and values.
func labelBytes(m map[string]string) int {
	n := 0
	for k, v := range m {
		n += len(k) + len(v)
	}
	return n
}

// trim cuts what the record keeps of the alert's annotations, and of the
// names and URLs of its notification, to the bounds above, and counts the
// bytes left out in Truncated. Annotations are taken in name order, so the
// same alert is always cut the same way.
func (r *Record) trim() {
	if len(r.Alert.Annotations) > 0 {
		names := make([]string, 0, len(r.Alert.Annotations))
		for k := range r.Alert.Annotations {
			names = append(names, k)
		}
		sort.Strings(names)
		kept := make(map[string]string, len(names))
		room := maxAnnotationBytes
		for _, k := range names {
			v := r.Alert.Annotations[k]
			if len(k) > maxAnnotationNameBytes || (len(k)+len(v) > room && len(k)+len(truncationMark) > room) {
				r.Truncated += len(k) + len(v)
				continue
			}
			cut, n := clipMarked(v, min(maxAnnotationValueBytes, room-len(k)))
			kept[k] = cut
			room -= len(k) + len(cut)
			r.Truncated += n
		}
		r.Alert.Annotations = kept
	}
	var n int
	r.Receiver, n = clipMarked(r.Receiver, maxFieldBytes)
	r.Truncated += n
	r.GroupKey, n = clipMarked(r.GroupKey, maxFieldBytes)
	r.Truncated += n
	for _, u := range []*string{&r.Alert.GeneratorURL, &r.ExternalURL} {
		if len(*u) > maxFieldBytes {
			r.Truncated += len(*u)
			*u = ""
		}
	}
}

// clipMarked returns s cut to at most n bytes, on a character boundary and
// ending in truncationMark when cut, and how many bytes of s it left out.
func clipMarked(s string, n int) (string, int) {
	if len(s) <= n {
		return s, 0
	}
	keep := max(n-len(truncationMark), 0)
	for keep > 0 && !utf8.RuneStart(s[keep]) {
		keep--
	}
	return s[:keep] + truncationMark, len(s) - keep
}

// clip shortens s to at most n bytes for a log line or message.
func clip(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return strings.ToValidUTF8(s[:n], "") + "…"
}

// AlertKey identifies an alert across re-sends: Alertmanager keeps the
// fingerprint and start time of an alert for as long as it fires, and a new
// episode of the same alert gets a new start time.
func AlertKey(a policy.Alert) string {
	return a.Fingerprint + "@" + a.StartsAt.UTC().Format(time.RFC3339Nano)
}

// recordName is a valid ConfigMap name derived from the alert key.
func recordName(key string) string {
	sum := sha256.Sum256([]byte(key))
	return "autorollbackd-alert-" + hex.EncodeToString(sum[:10])
}

// store keeps records in one namespace.
type store struct {
	client    kubeclient.Interface
	namespace string
	// pageSize bounds the records one List request reads.
	pageSize int64
}

var errExists = errors.New("record exists")

// create writes a new pending record and returns the ConfigMap holding it;
// errExists when it is already there.
func (s *store) create(ctx context.Context, rec *Record) (*corev1.ConfigMap, error) {
	cm, err := s.encode(rec, nil)
	if err != nil {
		return nil, err
	}
	out, err := s.client.CoreV1().ConfigMaps(s.namespace).Create(ctx, cm, metav1.CreateOptions{})
	if apierrors.IsAlreadyExists(err) {
		return nil, errExists
	}
	if err != nil {
		return nil, fmt.Errorf("record alert %s: %w", rec.Key, err)
	}
	return out, nil
}

// get reads a record and the ConfigMap holding it. A record that cannot be
// decoded is an error wrapping errCorrupt, returned with its ConfigMap.
func (s *store) get(ctx context.Context, name string) (*Record, *corev1.ConfigMap, error) {
	cm, err := s.client.CoreV1().ConfigMaps(s.namespace).Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		return nil, nil, fmt.Errorf("read record %s: %w", name, err)
	}
	rec, err := decodeRecord(cm)
	if err != nil {
		return nil, cm, err
	}
	return rec, cm, nil
}

// errCorrupt marks a record that cannot be decoded: reading it again
// cannot help.
var errCorrupt = errors.New("record cannot be decoded")

func decodeRecord(cm *corev1.ConfigMap) (*Record, error) {
	var rec Record
	if err := json.Unmarshal([]byte(cm.Data[recordDataKey]), &rec); err != nil {
		return nil, fmt.Errorf("decode record %s: %w: %w", cm.Name, errCorrupt, err)
	}
	if recordName(rec.Key) != cm.Name {
		return nil, fmt.Errorf("decode record %s: %w: it holds alert %q, whose record is another", cm.Name, errCorrupt, clip(rec.Key, 100))
	}
	return &rec, nil
}

// state is where the record stands.
func (r *Record) state() string {
	switch {
	case r.Decision == nil:
		return statePending
	case r.Incident == "" && opensIncident(r.Decision.Outcome):
		return stateDecided
	}
	return stateDone
}

// opensIncident reports whether a decision is handed to an incident: every
// outcome that needs action or people.
func opensIncident(o policy.Outcome) bool {
	return o == policy.OutcomeRollback || o == policy.OutcomeFixForward || o == policy.OutcomeEscalate
}

// update writes rec back over cm and returns the new ConfigMap. The update
// carries cm's resourceVersion, so a concurrent writer makes it fail with a
// conflict instead of being overwritten.
func (s *store) update(ctx context.Context, rec *Record, cm *corev1.ConfigMap) (*corev1.ConfigMap, error) {
	next, err := s.encode(rec, cm)
	if err != nil {
		return nil, err
	}
	out, err := s.client.CoreV1().ConfigMaps(s.namespace).Update(ctx, next, metav1.UpdateOptions{})
	if err != nil {
		return nil, fmt.Errorf("update record %s: %w", cm.Name, err)
	}
	return out, nil
}

func (s *store) encode(rec *Record, base *corev1.ConfigMap) (*corev1.ConfigMap, error) {
	data, err := json.Marshal(rec)
	if err != nil {
		return nil, fmt.Errorf("encode record %s: %w", rec.Key, err)
	}
	if len(data) > maxRecordBytes {
		return nil, fmt.Errorf("encode record %s: %d bytes, over the limit of %d: %w", rec.Key, len(data), maxRecordBytes, errTooLarge)
	}
	cm := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: recordName(rec.Key), Namespace: s.namespace}}
	if base != nil {
		cm = base.DeepCopy()
	}
	state, outcome := rec.state(), ""
	if rec.Decision != nil {
		outcome = string(rec.Decision.Outcome)
	}
	cm.Labels = map[string]string{managedByLabel: managedBy, kindLabel: kindAlert, stateLabel: state}
	if outcome != "" {
		cm.Labels[outcomeLabel] = outcome
	}
	if rec.Incident != "" {
		cm.Labels[incidentLabel] = incident.ObjectName(rec.Incident)
	}
	cm.Annotations = map[string]string{kinds.AnnotationAlertKey: rec.Key, kinds.AnnotationTarget: rec.Target.String()}
	cm.Data = map[string]string{recordDataKey: string(data)}
	return cm, nil
}

// recordSelector selects the alert records whose labels match the given
// ones, and with states, those in one of them.
func recordSelector(match map[string]string, states ...string) labels.Selector {
	set := labels.Set{managedByLabel: managedBy, kindLabel: kindAlert}
	for k, v := range match {
		set[k] = v
	}
	sel := labels.SelectorFromSet(set)
	if len(states) > 0 {
		req, err := labels.NewRequirement(stateLabel, selection.In, states)
		if err != nil {
			panic(fmt.Sprintf("select records in states %v: %v", states, err)) // the states are constants
		}
		sel = sel.Add(*req)
	}
	return sel
}

// each calls fn with each record sel selects, reading them a page at a
// time, and corrupt with each ConfigMap among them that cannot be decoded;
// those never stop the walk.
func (s *store) each(ctx context.Context, sel labels.Selector, fn func(*Record, *corev1.ConfigMap) error, corrupt func(*corev1.ConfigMap, error)) error {
	err := incident.EachConfigMap(ctx, s.client, s.namespace, sel, s.pageSize, func(cm *corev1.ConfigMap) error {
		rec, err := decodeRecord(cm)
		if err != nil {
			corrupt(cm, err)
			return nil
		}
		return fn(rec, cm)
	})
	if err != nil {
		return fmt.Errorf("list records: %w", err)
	}
	return nil
}

// list returns the records whose labels match the given ones, leaving out
// those that cannot be decoded.
func (s *store) list(ctx context.Context, match map[string]string) ([]Record, error) {
	var out []Record
	err := s.each(ctx, recordSelector(match), func(rec *Record, _ *corev1.ConfigMap) error {
		out = append(out, *rec)
		return nil
	}, func(*corev1.ConfigMap, error) {})
	return out, err
}

// delete removes a record.
func (s *store) delete(ctx context.Context, key string) error {
	err := s.client.CoreV1().ConfigMaps(s.namespace).Delete(ctx, recordName(key), metav1.DeleteOptions{})
	if err != nil && !apierrors.IsNotFound(err) {
		return fmt.Errorf("delete record %s: %w", key, err)
	}
	return nil
}
