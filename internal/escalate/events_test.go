package escalate_test

import (
	"context"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes/fake"
	appslisters "k8s.io/client-go/listers/apps/v1"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/record"

	"github.com/autorollbackd/autorollbackd/internal/escalate"
	"github.com/autorollbackd/autorollbackd/internal/policy"
	"github.com/autorollbackd/autorollbackd/internal/workload"
)

func eventsConfig() escalate.Config {
	cfg := escalate.DefaultConfig()
	cfg.DashboardURL = dashboard
	cfg.Notifiers = []escalate.NotifierConfig{{Name: "k8s", Type: "events"}}
	for i := range cfg.Ladder {
		cfg.Ladder[i].Notifiers = []string{"k8s"}
	}
	cfg.Announce = []string{"k8s"}
	return cfg
}

func TestEventsStrings(t *testing.T) {
	rec := record.NewFakeRecorder(10)
	rec.IncludeObject = true
	h := newHarness(t, eventsConfig(), func(o *escalate.Options) { o.Events = rec })
	ctx := context.Background()

	if _, err := h.Page(ctx, h.Ladder()[0], pageMessage()); err != nil {
		t.Fatalf("Page: %v", err)
	}
	if err := h.Announce(ctx, escalate.Message{Incident: incident(), Summary: "Rolled back Deployment production/event-service from revision 7 to 6"}); err != nil {
		t.Fatalf("Announce: %v", err)
	}
	if err := h.Resolve(ctx, incident(), []string{"oncall"}); err != nil {
		t.Fatalf("Resolve: %v", err)
	}
	const obj = " involvedObject{kind=Deployment,apiVersion=apps/v1}"
	want := []string{
		"Warning AutoRollbackEscalated Escalated to oncall: people were paged for incident inc-7f3a; the details are in the incident record" +
			obj + " map[autorollback.io/incident:inc-7f3a autorollback.io/level:oncall]",
		"Normal AutoRollbackAnnounced Incident inc-7f3a was updated; the details are in the incident record" +
			obj + " map[autorollback.io/incident:inc-7f3a]",
		"Normal AutoRollbackResolved Incident inc-7f3a is over; its oncall page is resolved" +
			obj + " map[autorollback.io/incident:inc-7f3a autorollback.io/level:oncall]",
	}
	for i, w := range want {
		select {
		case got := <-rec.Events:
			if got != w {
				t.Errorf("event %d\ngot:  %s\nwant: %s", i, got, w)
			}
		default:
			t.Fatalf("event %d missing, want %s", i, w)
		}
	}
	select {
	case extra := <-rec.Events:
		t.Errorf("unexpected event %s", extra)
	default:
	}
}

// TestEventsMessageIsFixed: whatever the summary and details, the Event's
// message is the same; they are logged instead.
func TestEventsMessageIsFixed(t *testing.T) {
	rec := record.NewFakeRecorder(2)
	h := newHarness(t, eventsConfig(), func(o *escalate.Options) { o.Events = rec })
	m := pageMessage()
	for _, summary := range []string{m.Summary, strings.Repeat("x", 2000)} {
		m.Summary, m.Details = summary, []string{summary}
		if _, err := h.Page(context.Background(), h.Ladder()[0], m); err != nil {
			t.Fatal(err)
		}
	}
	if a, b := <-rec.Events, <-rec.Events; a != b || strings.Contains(a, "xxxxxxxxxx") {
		t.Errorf("Events differ or carry the summary:\n%s\n%s", a, b)
	}
	if !strings.Contains(h.logs.String(), strings.Repeat("x", 2000)) {
		t.Errorf("the summary is not in the log:\n%.500s", h.logs)
	}
}

// refRecorder keeps the object of each Event.
type refRecorder struct{ refs []*corev1.ObjectReference }

func (r *refRecorder) Event(o runtime.Object, _, _, _ string) {
	r.refs = append(r.refs, o.(*corev1.ObjectReference))
}

func (r *refRecorder) Eventf(o runtime.Object, t, reason, f string, _ ...any) {
	r.Event(o, t, reason, f)
}

func (r *refRecorder) AnnotatedEventf(o runtime.Object, _ map[string]string, t, reason, f string, _ ...any) {
	r.Event(o, t, reason, f)
}

// TestEventsInvolvedObject: with a client, the Event carries the
// workload's UID so that `kubectl describe` lists it; without the workload
// (or without a client) it is still recorded, without the UID.
func TestEventsInvolvedObject(t *testing.T) {
	client := fake.NewClientset(&appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{
		Namespace: "production", Name: "event-service", UID: "0b9a1f4e-uid",
	}})
	rec := &refRecorder{}
	h := newHarness(t, eventsConfig(), func(o *escalate.Options) { o.Events = rec; o.Client = client })
	if _, err := h.Page(context.Background(), h.Ladder()[0], pageMessage()); err != nil {
		t.Fatal(err)
	}
	m := pageMessage()
	m.Incident.Target.Name = "gone"
	if _, err := h.Page(context.Background(), h.Ladder()[0], m); err != nil {
		t.Fatal(err)
	}
	want := []corev1.ObjectReference{
		{Kind: "Deployment", Namespace: "production", Name: "event-service", APIVersion: "apps/v1", UID: "0b9a1f4e-uid"},
		{Kind: "Deployment", Namespace: "production", Name: "gone", APIVersion: "apps/v1"},
	}
	if len(rec.refs) != len(want) {
		t.Fatalf("%d events, want %d", len(rec.refs), len(want))
	}
	for i := range want {
		if *rec.refs[i] != want[i] {
			t.Errorf("event %d on %+v, want %+v", i, *rec.refs[i], want[i])
		}
	}
}

func TestEventsNeedAWorkload(t *testing.T) {
	h := newHarness(t, eventsConfig(), func(o *escalate.Options) { o.Events = record.NewFakeRecorder(1) })
	m := pageMessage()
	m.Incident.Target = policy.Ref{}
	err := h.Announce(context.Background(), m)
	want := `notifier "k8s" (events): the message names no workload to record an Event on (not retried)`
	if err == nil || err.Error() != want {
		t.Errorf("Announce error\ngot:  %v\nwant: %s", err, want)
	}
}

// TestEventsUIDFromTheInformers: a workload the informers hold gets its
// UID from them, without a request; one they do not hold is looked up.
func TestEventsUIDFromTheInformers(t *testing.T) {
	idx := cache.NewIndexer(cache.MetaNamespaceKeyFunc, cache.Indexers{})
	if err := idx.Add(&appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Namespace: "production", Name: "event-service", UID: "cached-uid"}}); err != nil {
		t.Fatal(err)
	}
	caches := workload.Caches{"": workload.Cached{Deployments: appslisters.NewDeploymentLister(idx)}}
	client := fake.NewClientset(&appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Namespace: "production", Name: "other", UID: "live-uid"}})
	rec := &refRecorder{}
	h := newHarness(t, eventsConfig(), func(o *escalate.Options) { o.Events = rec; o.Client = client; o.Workloads = caches })
	if _, err := h.Page(context.Background(), h.Ladder()[0], pageMessage()); err != nil {
		t.Fatal(err)
	}
	if n := len(client.Actions()); n != 0 {
		t.Errorf("%d requests for a workload the informers hold: %v", n, client.Actions())
	}
	m := pageMessage()
	m.Incident.Target.Name = "other"
	if _, err := h.Page(context.Background(), h.Ladder()[0], m); err != nil {
		t.Fatal(err)
	}
	want := []types.UID{"cached-uid", "live-uid"}
	if len(rec.refs) != len(want) {
		t.Fatalf("%d events, want %d", len(rec.refs), len(want))
	}
	for i := range want {
		if rec.refs[i].UID != want[i] {
			t.Errorf("event %d on %+v, want UID %s", i, *rec.refs[i], want[i])
		}
	}
}
