package escalate_test

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/scheme"
	typedcorev1 "k8s.io/client-go/kubernetes/typed/core/v1"
	"k8s.io/client-go/tools/record"

	"github.com/autorollbackd/autorollbackd/internal/escalate"
	"github.com/autorollbackd/autorollbackd/internal/kinds"
	"github.com/autorollbackd/autorollbackd/internal/policy"
	"github.com/autorollbackd/autorollbackd/internal/testenv"
)

// TestEventsInTenantNamespaceCarryNoDaemonText: the Events go to the
// workload's namespace, which belongs to a tenant. Messages built from
// API errors and the daemon's own namespace stay out of them: each Event
// has a fixed message naming the incident and the level, and the details
// go to the daemon's log. Read back from the API server.
func TestEventsInTenantNamespaceCarryNoDaemonText(t *testing.T) {
	c := testenv.Require(t)
	ns := c.Namespace(t)
	ctx := context.Background()
	replicas := int32(1)
	d, err := c.Client.AppsV1().Deployments(ns).Create(ctx, &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: "event-service", Namespace: ns},
		Spec: appsv1.DeploymentSpec{
			Replicas: &replicas,
			Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "event-service"}},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{"app": "event-service"}},
				Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "app", Image: "event-service:v1"}}},
			},
		},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}

	broadcaster := record.NewBroadcaster(record.WithContext(ctx))
	broadcaster.StartRecordingToSink(&typedcorev1.EventSinkImpl{Interface: c.Client.CoreV1().Events("")})
	t.Cleanup(broadcaster.Shutdown)
	rec := broadcaster.NewRecorder(scheme.Scheme, corev1.EventSource{Component: "autorollbackd"})
	h := newHarness(t, eventsConfig(), func(o *escalate.Options) { o.Events = rec; o.Client = c.Client })

	// What the engine writes into a message: API errors of the daemon's
	// service account, a Secret and a ConfigMap of its namespace.
	const (
		daemonNS = "autorollbackd-system"
		apiError = `deployments.apps "event-service" is forbidden: User "system:serviceaccount:autorollbackd-system:autorollbackd" cannot patch resource "deployments"`
	)
	in := incident()
	in.Target = policy.Ref{Kind: policy.KindDeployment, Namespace: ns, Name: "event-service"}
	in.ID = "deployment-" + ns + "-event-service-r2-20260314t092600z"
	m := escalate.Message{
		Incident: in,
		Summary:  "Deployment " + ns + "/event-service: rollback failed: " + apiError,
		Details: []string{
			"action 1: rollback failed (" + apiError + ")",
			"verification http: failed: Get \"http://10.96.0.1/healthz\": secret " + daemonNS + "/probe-token not found",
			"incident record " + daemonNS + "/autorollbackd-incident-0f3a",
		},
	}
	if _, err := h.Page(ctx, h.Ladder()[0], m); err != nil {
		t.Fatalf("Page: %v", err)
	}
	if err := h.Announce(ctx, m); err != nil {
		t.Fatalf("Announce: %v", err)
	}
	if err := h.Resolve(ctx, in, []string{"oncall"}); err != nil {
		t.Fatalf("Resolve: %v", err)
	}

	want := map[string]string{
		escalate.ReasonEscalated: "Escalated to oncall: people were paged for incident " + in.ID + "; the details are in the incident record",
		escalate.ReasonAnnounced: "Incident " + in.ID + " was updated; the details are in the incident record",
		escalate.ReasonResolved:  "Incident " + in.ID + " is over; its oncall page is resolved",
	}
	var events []corev1.Event
	testenv.Eventually(t, 30*time.Second, "the three Events", func(ctx context.Context) (bool, string) {
		l, err := c.Client.CoreV1().Events(ns).List(ctx, metav1.ListOptions{})
		if err != nil {
			return false, err.Error()
		}
		// The Deployment controller records Events in the namespace too.
		events = events[:0]
		var reasons []string
		for _, e := range l.Items {
			if e.Source.Component == "autorollbackd" {
				events = append(events, e)
				reasons = append(reasons, e.Reason)
			}
		}
		sort.Strings(reasons)
		return len(events) == len(want), fmt.Sprintf("reasons %v", reasons)
	})
	for _, e := range events {
		if w, ok := want[e.Reason]; !ok || e.Message != w {
			t.Errorf("Event %s: message %q, want %q", e.Reason, e.Message, w)
		}
		for _, leak := range []string{daemonNS, "forbidden", "serviceaccount", "not found", "10.96.0.1"} {
			if strings.Contains(e.Message, leak) {
				t.Errorf("Event %s carries %q: %s", e.Reason, leak, e.Message)
			}
		}
		if e.InvolvedObject.UID != d.UID || e.InvolvedObject.Namespace != ns {
			t.Errorf("Event %s on %+v, want the Deployment %s/%s (UID %s)", e.Reason, e.InvolvedObject, ns, d.Name, d.UID)
		}
		if e.Annotations[kinds.AnnotationIncident] != in.ID {
			t.Errorf("Event %s annotations %v lack the incident", e.Reason, e.Annotations)
		}
	}
	// The details are in the daemon's log instead.
	for _, w := range []string{"forbidden", daemonNS + "/probe-token", "reason=" + escalate.ReasonEscalated} {
		if !strings.Contains(h.logs.String(), w) {
			t.Errorf("the daemon's log lacks %q:\n%s", w, h.logs)
		}
	}
}
