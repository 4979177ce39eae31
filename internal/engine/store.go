package engine

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/client-go/kubernetes"

	"github.com/autorollbackd/autorollbackd/internal/incident"
	"github.com/autorollbackd/autorollbackd/internal/policy"
)

// Labels of alert records. Records are ConfigMaps so that no CRD has to be
// installed before the daemon can keep its promises.
const (
	managedByLabel = "app.kubernetes.io/managed-by"
	managedBy      = "autorollbackd"
	kindLabel      = "autorollback.io/record"
	kindAlert      = "alert"
	stateLabel     = "autorollback.io/state"
	outcomeLabel   = "autorollback.io/outcome"
	// incidentLabel names the ConfigMap of the incident the record's
	// alert was handed to, so that a leader resuming the incident finds
	// the alerts that joined it after its last save.
	incidentLabel = "autorollback.io/incident-object"
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
	Key         string           `json:"key"`
	Alert       policy.Alert     `json:"alert"`
	Target      policy.Ref       `json:"target"`
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
	client    kubernetes.Interface
	namespace string
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

// get reads a record and the ConfigMap holding it.
func (s *store) get(ctx context.Context, name string) (*Record, *corev1.ConfigMap, error) {
	cm, err := s.client.CoreV1().ConfigMaps(s.namespace).Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		return nil, nil, fmt.Errorf("read record %s: %w", name, err)
	}
	var rec Record
	if err := json.Unmarshal([]byte(cm.Data[recordDataKey]), &rec); err != nil {
		return nil, nil, fmt.Errorf("decode record %s: %w", name, err)
	}
	return &rec, cm, nil
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
	cm.Annotations = map[string]string{"autorollback.io/alert-key": rec.Key, "autorollback.io/target": rec.Target.String()}
	cm.Data = map[string]string{recordDataKey: string(data)}
	return cm, nil
}

// list returns the records whose labels match the given ones.
func (s *store) list(ctx context.Context, match map[string]string) ([]Record, error) {
	sel := labels.Set{managedByLabel: managedBy, kindLabel: kindAlert}
	for k, v := range match {
		sel[k] = v
	}
	list, err := s.client.CoreV1().ConfigMaps(s.namespace).List(ctx, metav1.ListOptions{LabelSelector: sel.String()})
	if err != nil {
		return nil, fmt.Errorf("list records: %w", err)
	}
	out := make([]Record, 0, len(list.Items))
	for _, cm := range list.Items {
		var rec Record
		if err := json.Unmarshal([]byte(cm.Data[recordDataKey]), &rec); err != nil {
			return nil, fmt.Errorf("decode record %s: %w", cm.Name, err)
		}
		out = append(out, rec)
	}
	return out, nil
}

// delete removes a record.
func (s *store) delete(ctx context.Context, key string) error {
	err := s.client.CoreV1().ConfigMaps(s.namespace).Delete(ctx, recordName(key), metav1.DeleteOptions{})
	if err != nil && !apierrors.IsNotFound(err) {
		return fmt.Errorf("delete record %s: %w", key, err)
	}
	return nil
}
