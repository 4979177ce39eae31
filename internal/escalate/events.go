package escalate

import (
	"context"
	"errors"
	"fmt"
	"log/slog"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/record"

	"github.com/autorollbackd/autorollbackd/internal/kinds"
	"github.com/autorollbackd/autorollbackd/internal/kubeclient"
	"github.com/autorollbackd/autorollbackd/internal/policy"
	"github.com/autorollbackd/autorollbackd/internal/workload"
)

// Reasons of the Kubernetes Events the events notifier emits on the
// workload.
const (
	ReasonEscalated = "AutoRollbackEscalated" // Warning: a page went out
	ReasonAnnounced = "AutoRollbackAnnounced" // Normal: an announcement
	ReasonResolved  = "AutoRollbackResolved"  // Normal: a page was resolved
)

// The API server accepts Event messages of up to 1024 bytes (events.k8s.io
// note length); keep under it.
const eventMaxMessage = 1024

// eventsNotifier records a Kubernetes Event on the workload, so the story
// shows in `kubectl describe` and `kubectl events`. The recorder sends
// asynchronously: a recorded Event counts as delivered.
//
// The workload's namespace belongs to its team, while a message's summary
// and details may quote API server errors (which name the daemon's service
// account and namespace) and objects of the daemon's namespace. So the
// Event carries a fixed message (eventMessage) and the message itself goes
// to the daemon's log; the incident record keeps it too.
type eventsNotifier struct {
	rec    record.EventRecorder
	cache  WorkloadCache        // optional: looks up the UID first
	client kubeclient.Interface // optional: looks up the UID
	log    *slog.Logger
}

func newEvents(key string, _ NotifierConfig, env buildEnv) (sender, []*fileSecret, error) {
	if env.events == nil {
		return nil, nil, keyErr(key+".type", "type events needs an event recorder, and the daemon has none")
	}
	return &eventsNotifier{rec: env.events, cache: env.cache, client: env.client, log: env.logger}, nil, nil
}

func (e *eventsNotifier) send(ctx context.Context, m Message) error {
	t := m.Incident.Target
	if t.IsZero() {
		return errors.New("the message names no workload to record an Event on")
	}
	ref := &corev1.ObjectReference{
		Kind: string(t.Kind), Namespace: t.Namespace, Name: t.Name, APIVersion: "apps/v1",
		UID: e.uid(ctx, t),
	}
	eventType, reason := corev1.EventTypeNormal, ReasonAnnounced
	switch m.Kind {
	case Page:
		eventType, reason = corev1.EventTypeWarning, ReasonEscalated
	case Resolve:
		reason = ReasonResolved
	}
	ann := map[string]string{kinds.AnnotationIncident: m.Incident.ID}
	if m.Level != "" {
		ann[kinds.AnnotationLevel] = m.Level
	}
	e.log.Info("recording an Event on the workload; the message is here, the Event has a fixed one",
		"namespace", t.Namespace, "workload", t.Name, "incident", m.Incident.ID, "reason", reason,
		"summary", m.Summary, "details", m.Details)
	e.rec.AnnotatedEventf(ref, ann, eventType, reason, "%s", eventMessage(m))
	return nil
}

// uid looks the workload's UID up, because `kubectl describe` lists only
// Events whose involvedObject carries the UID. Without a client, or when the
// lookup fails, the Event is still recorded, without the UID: `kubectl
// events` and `kubectl get events` still show it.
//
// A UID never changes, so the informers answer it without a request when
// they hold the workload.
func (e *eventsNotifier) uid(ctx context.Context, t policy.Ref) types.UID {
	if e.cache != nil {
		if obj, err := e.cache.Lookup(t); err == nil {
			return obj.Meta().UID
		}
	}
	if e.client == nil {
		return ""
	}
	a, err := workload.For(t.Kind)
	if err != nil {
		return ""
	}
	obj, err := a.Get(ctx, e.client, t.Namespace, t.Name)
	if err != nil {
		e.log.Debug("cannot look up the workload for its Event; recording without UID",
			"namespace", t.Namespace, "workload", t.Name, "err", err)
		return ""
	}
	return obj.Meta().UID
}

// eventMessage is the fixed message of the Event of m: what kind of
// message it was, the level and the incident's ID, and nothing of the
// summary, details or links.
func eventMessage(m Message) string {
	id := m.Incident.ID
	var s string
	switch m.Kind {
	case Page:
		s = fmt.Sprintf("Escalated to %s: people were paged for incident %s; the details are in the incident record", m.Level, id)
	case Resolve:
		s = fmt.Sprintf("Incident %s is over; its %s page is resolved", id, m.Level)
	default:
		s = fmt.Sprintf("Incident %s was updated; the details are in the incident record", id)
	}
	return truncate(s, eventMaxMessage)
}
