package engine

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/prometheus/client_golang/prometheus/testutil"
	admissionv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/utils/ptr"

	"github.com/autorollbackd/autorollbackd/internal/escalate"
	"github.com/autorollbackd/autorollbackd/internal/incident"
	"github.com/autorollbackd/autorollbackd/internal/kinds"
	"github.com/autorollbackd/autorollbackd/internal/policy"
	"github.com/autorollbackd/autorollbackd/internal/testenv"
	"github.com/autorollbackd/autorollbackd/internal/verify"
	"github.com/autorollbackd/autorollbackd/internal/webhook"
)

var serviceDown = map[string]string{"impact": "service_down"}

// keyOf is the key of n's first alert.
func keyOf(n *webhook.Notification) string {
	a := n.Alerts[0]
	return AlertKey(policy.Alert{Fingerprint: a.Fingerprint, StartsAt: a.StartsAt})
}

// recordSize is what a record's ConfigMap holds: its data, labels and
// annotations.
func recordSize(cm *corev1.ConfigMap) int {
	n := 0
	for _, m := range []map[string]string{cm.Data, cm.Labels, cm.Annotations} {
		for k, v := range m {
			n += len(k) + len(v)
		}
	}
	return n
}

// TestRecordKeepsAlertWithinBounds: an alert with a 900 KB annotation is
// recorded in a small record, its annotations cut and the cut marked, its
// labels exactly as sent, and it is still decided.
func TestRecordKeepsAlertWithinBounds(t *testing.T) {
	f := newFixture(t, optedIn, nil)
	e := f.startEngine(t, policy.DefaultConfig(), 1)
	ctx := context.Background()
	n := firing(f.ns, "large-annotations", time.Now(), map[string]string{"impact": "service_down", "team": strings.Repeat("t", 2000)})
	a := &n.Alerts[0]
	a.Annotations["description"] = strings.Repeat("d", 900<<10)
	a.Annotations["runbook_url"] = "https://runbooks.example.com/service-rollback"
	a.Annotations["zz_notes"] = strings.Repeat("é", 3000) // 6,000 bytes, two to a character
	a.GeneratorURL = "http://prometheus.local/graph?g0.expr=" + strings.Repeat("x", 8<<10)
	n.GroupKey = strings.Repeat("g", 10<<10)
	r, err := e.Accept(ctx, n)
	if err != nil || r != (webhook.Receipt{Accepted: 1}) {
		t.Fatalf("receipt = %+v, %v; want one accepted", r, err)
	}
	d := e.waitDecision(t, n)
	if d.Outcome != policy.OutcomeRollback {
		t.Errorf("decision = %s, want rollback", d)
	}

	cm, err := f.c.Client.CoreV1().ConfigMaps(f.ns).Get(ctx, recordName(keyOf(n)), metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	size := recordSize(cm)
	t.Logf("an alert with a 900 KB annotation made a record of %d bytes", size)
	if size > 32<<10 {
		t.Errorf("record holds %d bytes, want under 32 KiB", size)
	}
	rec, _, err := e.store.get(ctx, cm.Name)
	if err != nil {
		t.Fatal(err)
	}
	if got := rec.Alert.Annotations["description"]; len(got) > maxAnnotationValueBytes || !strings.HasSuffix(got, truncationMark) {
		t.Errorf("description kept: %d bytes ending %q; want at most %d, ending in %q", len(got), got[max(len(got)-20, 0):], maxAnnotationValueBytes, truncationMark)
	}
	if got := rec.Alert.Annotations["runbook_url"]; got != "https://runbooks.example.com/service-rollback" {
		t.Errorf("a short annotation was changed to %q", got)
	}
	if got := rec.Alert.Annotations["zz_notes"]; !strings.HasSuffix(got, truncationMark) || !utf8.ValidString(got) {
		t.Errorf("a multi-byte annotation was not cut on a character boundary, with the mark: %q", got[max(len(got)-20, 0):])
	}
	if rec.Alert.GeneratorURL != "" {
		t.Errorf("an 8 KiB generator URL was kept (%d bytes); a cut URL leads nowhere, so it is dropped", len(rec.Alert.GeneratorURL))
	}
	if !strings.HasSuffix(rec.GroupKey, truncationMark) || len(rec.GroupKey) > maxFieldBytes {
		t.Errorf("group key kept: %d bytes", len(rec.GroupKey))
	}
	if rec.Truncated < 900<<10 {
		t.Errorf("truncatedBytes = %d, want at least the 900 KB cut", rec.Truncated)
	}
	if len(rec.Alert.Labels) != len(a.Labels) || rec.Alert.Labels["team"] != a.Labels["team"] {
		t.Errorf("labels were changed: %d kept of %d", len(rec.Alert.Labels), len(a.Labels))
	}
	if got := testutil.ToFloat64(e.m.truncated); got != 1 {
		t.Errorf("alerts_truncated_total = %v, want 1", got)
	}
}

// TestAlertsThatCannotBeRecordedFaithfullyAreRefused: a fingerprint that is
// not one Alertmanager writes, and labels too large to keep exactly, refuse
// the alert (never a 503, which Alertmanager would retry for ever), with a
// reason counted; nothing is recorded.
func TestAlertsThatCannotBeRecordedFaithfullyAreRefused(t *testing.T) {
	f := newFixture(t, optedIn, nil)
	e := f.startEngine(t, policy.DefaultConfig(), 0)
	ctx := context.Background()
	for _, tc := range []struct {
		name   string
		mutate func(*webhook.Notification)
		reason string
	}{
		{"fingerprint not hex", func(n *webhook.Notification) { n.Alerts[0].Fingerprint = "not-a-fingerprint" }, invalidFingerprint},
		{"fingerprint in upper case", func(n *webhook.Notification) { n.Alerts[0].Fingerprint = "53BAD9C6811959EA" }, invalidFingerprint},
		{"fingerprint of 17 digits", func(n *webhook.Notification) { n.Alerts[0].Fingerprint = "53bad9c6811959ea0" }, invalidFingerprint},
		{"300 KB fingerprint", func(n *webhook.Notification) { n.Alerts[0].Fingerprint = strings.Repeat("f", 300<<10) }, invalidFingerprint},
		{"resolved with a bad fingerprint", func(n *webhook.Notification) {
			n.Alerts[0].Fingerprint, n.Alerts[0].Status = "x", "resolved"
		}, invalidFingerprint},
		{"20 KB label", func(n *webhook.Notification) { n.Alerts[0].Labels["detail"] = strings.Repeat("l", 20<<10) }, labelsTooLarge},
		{"2,000 labels", func(n *webhook.Notification) {
			for i := range 2000 {
				n.Alerts[0].Labels[fmt.Sprintf("label_%04d", i)] = "value"
			}
		}, labelsTooLarge},
	} {
		t.Run(tc.name, func(t *testing.T) {
			n := firing(f.ns, "refused-"+tc.name, time.Now(), serviceDown)
			tc.mutate(n)
			before := testutil.ToFloat64(e.m.invalid.WithLabelValues(tc.reason))
			r, err := e.Accept(ctx, n)
			if err != nil || r.Counts() != (webhook.Receipt{Refused: 1}) {
				t.Fatalf("receipt = %+v, %v; want one refused", r, err)
			}
			if got := testutil.ToFloat64(e.m.invalid.WithLabelValues(tc.reason)) - before; got != 1 {
				t.Errorf("alerts_invalid_total{reason=%q} rose by %v, want 1", tc.reason, got)
			}
		})
	}
	recs, err := e.store.list(ctx, nil)
	if err != nil || len(recs) != 0 {
		t.Fatalf("records = %d, %v; want none", len(recs), err)
	}
	// Labels just under the limit are kept.
	n := firing(f.ns, "labels-at-the-limit", time.Now(), serviceDown)
	n.Alerts[0].Labels["detail"] = strings.Repeat("l", maxLabelBytes-labelBytes(n.Alerts[0].Labels)-len("detail"))
	if r, err := e.Accept(ctx, n); err != nil || r != (webhook.Receipt{Accepted: 1}) {
		t.Fatalf("labels of exactly %d bytes: receipt = %+v, %v; want accepted", maxLabelBytes, r, err)
	}
}

// TestRecordsAreCapped: once engine.maxRecords records are kept, an alert
// that would need a record is answered 503 (and counted), one already
// recorded is still a duplicate; a new leader counts the records it finds.
func TestRecordsAreCapped(t *testing.T) {
	f := newFixture(t, optedIn, nil)
	capped := func(_ *verify.Config, _ *escalate.Config, o *Options) { o.MaxRecords = 2 }
	// No workers: nothing is decided or collected, the records stay.
	e := f.startEngine(t, policy.DefaultConfig(), 0, capped)
	ctx := context.Background()
	first := firing(f.ns, "cap-1", time.Now(), serviceDown)
	for _, n := range []*webhook.Notification{first, firing(f.ns, "cap-2", time.Now(), serviceDown)} {
		if r, err := e.Accept(ctx, n); err != nil || r.Accepted != 1 {
			t.Fatalf("Accept = %+v, %v; want accepted", r, err)
		}
	}
	_, err := e.Accept(ctx, firing(f.ns, "cap-3", time.Now(), serviceDown))
	if !errors.Is(err, webhook.ErrRecordsFull) || !strings.Contains(err.Error(), "engine.maxRecords") {
		t.Fatalf("Accept beyond the cap = %v, want ErrRecordsFull naming engine.maxRecords", err)
	}
	if got := testutil.ToFloat64(e.m.recordsFull); got != 1 {
		t.Errorf("intake_records_full_total = %v, want 1", got)
	}
	if got := testutil.ToFloat64(e.m.recordsLimit); got != 2 {
		t.Errorf("alert_records_limit = %v, want engine.maxRecords, 2", got)
	}
	// Another replica, which never saw the first alert, finds it recorded.
	// It runs no workers, so it did not count the records; it is told the
	// count it would have found.
	other := f.startEngine(t, policy.DefaultConfig(), 0, capped)
	other.records.Store(2)
	if r, err := other.Accept(ctx, first); err != nil || r != (webhook.Receipt{Duplicates: 1}) {
		t.Fatalf("a re-send while full: %+v, %v; want a duplicate", r, err)
	}
	recs, err := e.store.list(ctx, nil)
	if err != nil || len(recs) != 2 {
		t.Fatalf("records = %d, %v; want 2", len(recs), err)
	}

	// A new leader counts what it finds when it resumes.
	leader := f.startEngine(t, policy.DefaultConfig(), 1, capped)
	testenv.Eventually(t, 30*time.Second, "the new leader counted the records", func(context.Context) (bool, string) {
		got := testutil.ToFloat64(leader.m.records)
		return got == 2, fmt.Sprintf("alert_records = %v", got)
	})
	if _, err := leader.Accept(ctx, firing(f.ns, "cap-4", time.Now(), serviceDown)); !errors.Is(err, webhook.ErrUnavailable) {
		t.Fatalf("the new leader took an alert beyond the cap: %v", err)
	}
}

// requestLog records the List requests of ConfigMaps a client sends.
type requestLog struct {
	mu    sync.Mutex
	lists []string // their query strings
}

func (l *requestLog) wrap(rt http.RoundTripper) http.RoundTripper {
	return roundTripper(func(req *http.Request) (*http.Response, error) {
		if req.Method == http.MethodGet && strings.HasSuffix(req.URL.Path, "/configmaps") {
			l.mu.Lock()
			l.lists = append(l.lists, req.URL.RawQuery)
			l.mu.Unlock()
		}
		return rt.RoundTrip(req)
	})
}

// paged returns how many of the List requests asked for pages of limit
// and went on from a continue token, and how many asked for no limit.
func (l *requestLog) paged(limit int) (continued, unlimited int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, q := range l.lists {
		switch {
		case !strings.Contains(q, "limit="):
			unlimited++
		case strings.Contains(q, fmt.Sprintf("limit=%d", limit)) && strings.Contains(q, "continue="):
			continued++
		}
	}
	return continued, unlimited
}

type roundTripper func(*http.Request) (*http.Response, error)

func (f roundTripper) RoundTrip(req *http.Request) (*http.Response, error) { return f(req) }

// TestListsArePaged: resuming, collecting garbage and listing incidents
// read records and incidents a page at a time, never in one unbounded
// List, and find all of them across the pages.
func TestListsArePaged(t *testing.T) {
	f := newFixture(t, optedIn, nil)
	ctx := context.Background()
	// A stopped replica accepted seven alerts; the resolved incidents of
	// five earlier episodes are kept.
	stopped := f.startEngine(t, policy.DefaultConfig(), 0)
	var sent []*webhook.Notification
	for i := range 7 {
		n := firing(f.ns, fmt.Sprintf("paged-%d", i), time.Now(), serviceDown)
		if r, err := stopped.Accept(ctx, n); err != nil || r.Accepted != 1 {
			t.Fatalf("Accept = %+v, %v", r, err)
		}
		sent = append(sent, n)
	}
	target := policy.Ref{Kind: policy.KindDeployment, Namespace: f.ns, Name: "event-service"}
	for i := range 5 {
		// Resolved within the retention, so kept.
		start := time.Now().Add(-time.Duration(i+2) * time.Minute)
		inc := &incident.Incident{ID: incident.NewID(target, 1, start), Target: target, State: incident.StateResolved,
			StartedAt: start, ResolvedAt: start.Add(time.Minute), Decision: policy.Decision{Outcome: policy.OutcomeEscalate}}
		if _, err := stopped.opts.Incidents.Create(ctx, inc); err != nil {
			t.Fatal(err)
		}
	}

	log := &requestLog{}
	cfg := rest.CopyConfig(f.c.REST)
	cfg.WrapTransport = log.wrap
	client, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	const page = 2
	e := f.startEngine(t, policy.DefaultConfig(), 2, func(_ *verify.Config, _ *escalate.Config, o *Options) {
		o.Client, o.PageSize = client, page
		o.Incidents = &incident.Store{Client: client, Namespace: f.ns, PageSize: page}
	})
	for _, n := range sent {
		e.waitDecision(t, n)
	}
	testenv.Eventually(t, 30*time.Second, "the records counted", func(context.Context) (bool, string) {
		got := testutil.ToFloat64(e.m.records)
		return got == 7, fmt.Sprintf("alert_records = %v", got)
	})
	all, err := e.opts.Incidents.List(ctx, false)
	if err != nil {
		t.Fatal(err)
	}
	if len(all) != 6 {
		t.Errorf("incidents listed = %d, want the 5 resolved and the one the alerts opened", len(all))
	}
	continued, unlimited := log.paged(page)
	t.Logf("%d List requests of ConfigMaps, %d of them pages after the first", len(log.lists), continued)
	if unlimited > 0 {
		t.Errorf("%d List requests without a limit: %q", unlimited, log.lists)
	}
	// 7 records and 6 incidents, 2 a page: several pages each.
	if continued < 6 {
		t.Errorf("%d List requests went on from a continue token, want at least 6: %q", continued, log.lists)
	}
}

// quarantined returns the ConfigMaps moved aside in ns, by the name they
// had.
func quarantined(t *testing.T, c kubernetes.Interface, ns string) map[string]corev1.ConfigMap {
	t.Helper()
	list, err := c.CoreV1().ConfigMaps(ns).List(context.Background(), metav1.ListOptions{LabelSelector: kinds.LabelQuarantined + "=true"})
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]corev1.ConfigMap{}
	for _, cm := range list.Items {
		out[cm.Annotations[kinds.AnnotationQuarantinedFrom]] = cm
	}
	return out
}

// TestCorruptRecordsAreQuarantined: records and incidents that cannot be
// decoded are moved aside, counted and kept for people; the daemon resumes
// without them and acts on the next alert. An incident written by a newer
// daemon is left alone.
func TestCorruptRecordsAreQuarantined(t *testing.T) {
	f := newFixture(t, optedIn, nil)
	ctx := context.Background()
	recordLabels := func(state string) map[string]string {
		return map[string]string{managedByLabel: managedBy, kindLabel: kindAlert, stateLabel: state}
	}
	incidentLabels := map[string]string{managedByLabel: managedBy, kindLabel: incident.KindIncident, "autorollback.io/incident-state": "acting"}
	other, err := json.Marshal(Record{Key: "0123456789abcdef@2026-01-01T00:00:00Z"})
	if err != nil {
		t.Fatal(err)
	}
	target := policy.Ref{Kind: policy.KindDeployment, Namespace: f.ns, Name: "other"}
	newerID := incident.NewID(target, 1, time.Now())
	newer, err := json.Marshal(map[string]any{"schemaVersion": incident.SchemaVersion + 1, "id": newerID, "target": target, "state": "acting"})
	if err != nil {
		t.Fatal(err)
	}
	corrupt := map[string]*corev1.ConfigMap{
		"pending record cut short": {ObjectMeta: metav1.ObjectMeta{Name: "autorollbackd-alert-cut-short", Labels: recordLabels(statePending)},
			Data: map[string]string{recordDataKey: `{"key":"0123456789abcdef@2026`}},
		"done record of the wrong type": {ObjectMeta: metav1.ObjectMeta{Name: "autorollbackd-alert-wrong-type", Labels: recordLabels(stateDone)},
			Data: map[string]string{recordDataKey: `[]`}},
		"record under another's name": {ObjectMeta: metav1.ObjectMeta{Name: "autorollbackd-alert-misnamed", Labels: recordLabels(statePending)},
			Data: map[string]string{recordDataKey: string(other)}},
		"incident not JSON": {ObjectMeta: metav1.ObjectMeta{Name: "autorollbackd-incident-not-json", Labels: incidentLabels},
			Data: map[string]string{"incident.json": "not json"}},
	}
	for _, cm := range corrupt {
		if _, err := f.c.Client.CoreV1().ConfigMaps(f.ns).Create(ctx, cm, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	newerCM := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: incident.ObjectName(newerID), Labels: incidentLabels},
		Data: map[string]string{"incident.json": string(newer)}}
	if _, err := f.c.Client.CoreV1().ConfigMaps(f.ns).Create(ctx, newerCM, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}

	e := f.startEngine(t, policy.DefaultConfig(), 1)
	n := firing(f.ns, "after-corruption", time.Now(), serviceDown)
	if r, err := e.Accept(ctx, n); err != nil || r.Accepted != 1 {
		t.Fatalf("Accept = %+v, %v", r, err)
	}
	if d := e.waitDecision(t, n); d.Outcome != policy.OutcomeRollback {
		t.Fatalf("decision = %s, want rollback", d)
	}
	f.waitRevision(t, "3")

	testenv.Eventually(t, 10*time.Second, "the corrupt records quarantined", func(context.Context) (bool, string) {
		a, i := testutil.ToFloat64(e.m.quarantined.WithLabelValues(kindAlert)), testutil.ToFloat64(e.m.quarantined.WithLabelValues(incident.KindIncident))
		return a == 3 && i == 1, fmt.Sprintf("records_quarantined_total: alert %v, incident %v; want 3 and 1", a, i)
	})
	moved := quarantined(t, f.c.Client, f.ns)
	for what, cm := range corrupt {
		q, ok := moved[cm.Name]
		if !ok {
			t.Errorf("%s: no quarantined copy of %s", what, cm.Name)
			continue
		}
		if q.Data[recordDataKey]+q.Data["incident.json"] != cm.Data[recordDataKey]+cm.Data["incident.json"] {
			t.Errorf("%s: the quarantined copy holds %q, want what was there", what, q.Data)
		}
		if q.Annotations[kinds.AnnotationQuarantineReason] == "" {
			t.Errorf("%s: the quarantined copy says not why", what)
		}
		if q.Labels[kindLabel] != "" || q.Labels[stateLabel] != "" {
			t.Errorf("%s: the quarantined copy keeps the labels that select records: %v", what, q.Labels)
		}
		if _, err := f.c.Client.CoreV1().ConfigMaps(f.ns).Get(ctx, cm.Name, metav1.GetOptions{}); !apierrors.IsNotFound(err) {
			t.Errorf("%s: the original %s is still there (%v)", what, cm.Name, err)
		}
	}
	if _, err := f.c.Client.CoreV1().ConfigMaps(f.ns).Get(ctx, newerCM.Name, metav1.GetOptions{}); err != nil {
		t.Errorf("the incident a newer daemon wrote was not left alone: %v", err)
	}
	if incs, err := e.opts.Incidents.List(ctx, false); err != nil || len(incs) != 1 {
		t.Errorf("incidents listed = %d, %v; want the one the alert opened", len(incs), err)
	}
}

// denyUpdates makes the API server refuse every update of the ConfigMap
// name in ns, with reason, through a ValidatingAdmissionPolicy, and waits
// until it does.
func denyUpdates(t *testing.T, c *testenv.Cluster, ns, name string, reason metav1.StatusReason) {
	t.Helper()
	ctx := context.Background()
	policyName := "deny-" + ns + "-" + strings.ToLower(string(reason))
	inNamespace := &metav1.LabelSelector{MatchLabels: map[string]string{corev1.LabelMetadataName: ns}}
	vap := &admissionv1.ValidatingAdmissionPolicy{
		ObjectMeta: metav1.ObjectMeta{Name: policyName},
		Spec: admissionv1.ValidatingAdmissionPolicySpec{
			FailurePolicy: ptr.To(admissionv1.Fail),
			MatchConstraints: &admissionv1.MatchResources{
				NamespaceSelector: inNamespace,
				ResourceRules: []admissionv1.NamedRuleWithOperations{{
					ResourceNames: []string{name},
					RuleWithOperations: admissionv1.RuleWithOperations{
						Operations: []admissionv1.OperationType{admissionv1.Update},
						Rule:       admissionv1.Rule{APIGroups: []string{""}, APIVersions: []string{"v1"}, Resources: []string{"configmaps"}},
					},
				}},
			},
			Validations: []admissionv1.Validation{{Expression: "false", Message: "updates of this record are denied by the test", Reason: &reason}},
		},
	}
	binding := &admissionv1.ValidatingAdmissionPolicyBinding{
		ObjectMeta: metav1.ObjectMeta{Name: policyName},
		Spec: admissionv1.ValidatingAdmissionPolicyBindingSpec{
			PolicyName: policyName, ValidationActions: []admissionv1.ValidationAction{admissionv1.Deny},
			MatchResources: &admissionv1.MatchResources{NamespaceSelector: inNamespace},
		},
	}
	adm := c.Client.AdmissionregistrationV1()
	if _, err := adm.ValidatingAdmissionPolicies().Create(ctx, vap, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = adm.ValidatingAdmissionPolicies().Delete(context.Background(), policyName, metav1.DeleteOptions{})
	})
	if _, err := adm.ValidatingAdmissionPolicyBindings().Create(ctx, binding, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = adm.ValidatingAdmissionPolicyBindings().Delete(context.Background(), policyName, metav1.DeleteOptions{})
	})
	testenv.Eventually(t, 30*time.Second, "the API server refuses updates of "+name, func(ctx context.Context) (bool, string) {
		cm, err := c.Client.CoreV1().ConfigMaps(ns).Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return false, err.Error()
		}
		// Should it pass, before the policy is in force, it changes
		// nothing the record holds.
		cm.Annotations["autorollback.io/probe"] = time.Now().String()
		_, err = c.Client.CoreV1().ConfigMaps(ns).Update(ctx, cm, metav1.UpdateOptions{})
		return apierrors.ReasonForError(err) == reason, fmt.Sprintf("update: %v", err)
	})
}

// TestResolutionThatCannotBeRecordedIsGivenUp: a resolved alert whose
// record cannot be written never turns its notifications into 503s for
// ever. When retrying cannot help (the record is corrupt, or the API server
// refuses the write for what it holds) the resolution is given up at once;
// for any other failure after maxResolveAttempts 503s. Either way it is
// logged and counted, and the other alerts of the notification are taken.
func TestResolutionThatCannotBeRecordedIsGivenUp(t *testing.T) {
	f := newFixture(t, optedIn, nil)
	ctx := context.Background()
	e := f.startEngine(t, policy.DefaultConfig(), 0)
	resolved := func(n *webhook.Notification) *webhook.Notification {
		r := *n
		r.Alerts = append(r.Alerts[:0:0], n.Alerts...)
		r.Status, r.Alerts[0].Status, r.Alerts[0].EndsAt = "resolved", "resolved", time.Now()
		return &r
	}
	dropped := func(reason string) float64 { return testutil.ToFloat64(e.m.resolutionsDropped.WithLabelValues(reason)) }

	t.Run("corrupt record", func(t *testing.T) {
		n := firing(f.ns, "resolve-corrupt", time.Now(), serviceDown)
		cm := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: recordName(keyOf(n)),
			Labels: map[string]string{managedByLabel: managedBy, kindLabel: kindAlert, stateLabel: stateDone}},
			Data: map[string]string{recordDataKey: "{"}}
		if _, err := f.c.Client.CoreV1().ConfigMaps(f.ns).Create(ctx, cm, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		// With it, a firing alert of another workload's episode.
		both := resolved(n)
		both.Alerts = append(both.Alerts, firing(f.ns, "resolve-corrupt-other", time.Now(), serviceDown).Alerts[0])
		r, err := e.Accept(ctx, both)
		if err != nil || r != (webhook.Receipt{Resolved: 1, Accepted: 1}) {
			t.Fatalf("receipt = %+v, %v; want one resolved, one accepted, and no 503", r, err)
		}
		if got := dropped(resolutionCorrupt); got != 1 {
			t.Errorf("alert_resolutions_dropped_total{reason=%q} = %v, want 1", resolutionCorrupt, got)
		}
	})

	t.Run("refused by the API server for what it holds", func(t *testing.T) {
		n := firing(f.ns, "resolve-invalid", time.Now(), serviceDown)
		if r, err := e.Accept(ctx, n); err != nil || r.Accepted != 1 {
			t.Fatalf("Accept = %+v, %v", r, err)
		}
		denyUpdates(t, f.c, f.ns, recordName(keyOf(n)), metav1.StatusReasonInvalid)
		r, err := e.Accept(ctx, resolved(n))
		if err != nil || r != (webhook.Receipt{Resolved: 1}) {
			t.Fatalf("receipt = %+v, %v; want one resolved and no 503", r, err)
		}
		if got := dropped(resolutionRejected); got != 1 {
			t.Errorf("alert_resolutions_dropped_total{reason=%q} = %v, want 1", resolutionRejected, got)
		}
	})

	t.Run("failing for another reason", func(t *testing.T) {
		n := firing(f.ns, "resolve-forbidden", time.Now(), serviceDown)
		if r, err := e.Accept(ctx, n); err != nil || r.Accepted != 1 {
			t.Fatalf("Accept = %+v, %v", r, err)
		}
		denyUpdates(t, f.c, f.ns, recordName(keyOf(n)), metav1.StatusReasonForbidden)
		for attempt := 1; attempt < maxResolveAttempts; attempt++ {
			if _, err := e.Accept(ctx, resolved(n)); !errors.Is(err, webhook.ErrUnavailable) || errors.Is(err, webhook.ErrClusterUnavailable) {
				t.Fatalf("attempt %d: %v, want a 503 (ErrUnavailable) while it may still pass, not one saying the API server is down", attempt, err)
			}
		}
		r, err := e.Accept(ctx, resolved(n))
		if err != nil || r != (webhook.Receipt{Resolved: 1}) {
			t.Fatalf("attempt %d: receipt = %+v, %v; want it given up, without a 503", maxResolveAttempts, r, err)
		}
		if got := dropped(resolutionRetriesExhausted); got != 1 {
			t.Errorf("alert_resolutions_dropped_total{reason=%q} = %v, want 1", resolutionRetriesExhausted, got)
		}
	})
}

// waitRunning waits until r's Run decides alerts: its resume is over and
// its workers run. The probe alert matches no rule, so it opens no
// incident.
func (r *running) waitRunning(t *testing.T, f *fixture, name string) {
	t.Helper()
	probe := firing(f.ns, name, time.Now(), map[string]string{"impact": "informational"})
	if res, err := r.Accept(context.Background(), probe); err != nil || res.Accepted != 1 {
		t.Fatalf("probe: %+v, %v", res, err)
	}
	if d := r.waitDecision(t, probe); d.Outcome != policy.OutcomeIgnore {
		t.Fatalf("probe decision = %s, want ignore", d)
	}
}

// TestLeaderTakesUpAlertRecordedAfterItResumed: the replica that led before
// may still finish a webhook request it took then, and record its alert
// after the new leader listed the records when it resumed. Alertmanager got
// a 2xx and will not re-send it soon; the new leader still decides it.
func TestLeaderTakesUpAlertRecordedAfterItResumed(t *testing.T) {
	f := newFixture(t, optedIn, nil)
	leader := f.startEngine(t, policy.DefaultConfig(), 1, func(_ *verify.Config, _ *escalate.Config, o *Options) {
		o.Resync = 200 * time.Millisecond
	})
	leader.waitRunning(t, f, "probe")
	// The old leader: its Run is over, its HTTP server drains.
	old := f.startEngine(t, policy.DefaultConfig(), 0)
	n := firing(f.ns, "late", time.Now(), serviceDown)
	if r, err := old.Accept(context.Background(), n); err != nil || r.Accepted != 1 {
		t.Fatalf("Accept = %+v, %v", r, err)
	}
	if d := leader.waitDecision(t, n); d.Outcome != policy.OutcomeRollback {
		t.Fatalf("decision = %s, want rollback", d)
	}
	f.waitRevision(t, "3")
}

// TestLeaderTakesUpIncidentOpenedAfterItResumed: likewise an incident the
// old leader opened after the new one resumed is worked on.
func TestLeaderTakesUpIncidentOpenedAfterItResumed(t *testing.T) {
	f := newFixture(t, optedIn, nil)
	ctx := context.Background()
	leader := f.startEngine(t, policy.DefaultConfig(), 1, func(_ *verify.Config, _ *escalate.Config, o *Options) {
		o.Resync = 200 * time.Millisecond
	})
	leader.waitRunning(t, f, "probe")
	n := firing(f.ns, "opened-late", time.Now(), serviceDown)
	target := policy.Ref{Kind: policy.KindDeployment, Namespace: f.ns, Name: "event-service"}
	inc := leader.newIncident(&Record{Key: keyOf(n), Target: target, ReceivedAt: time.Now(),
		Alert:    policy.Alert{Fingerprint: n.Alerts[0].Fingerprint, StartsAt: n.Alerts[0].StartsAt, Labels: map[string]string{"alertname": "EventServiceDown"}},
		Decision: &policy.Decision{Outcome: policy.OutcomeRollback, Reason: policy.ReasonCriterionMet}},
		&policy.Workload{Revision: 2, Older: []int64{1}}, time.Now())
	if _, err := leader.opts.Incidents.Create(ctx, inc); err != nil {
		t.Fatal(err)
	}
	f.waitRevision(t, "3")
	leader.waitResolved(t, inc.ID)
}

// gatedFacts holds the first Facts call after it is armed until released.
type gatedFacts struct {
	FactSource
	armed            atomic.Bool
	entered, release chan struct{}
}

func (g *gatedFacts) Facts(ctx context.Context, ref policy.Ref) (*policy.Workload, error) {
	if g.armed.CompareAndSwap(true, false) {
		close(g.entered)
		<-g.release
	}
	return g.FactSource.Facts(ctx, ref)
}

// TestResentAlertIsQueuedAgainAfterATermEnded: a replica loses its lease
// and wins it again (an API server hiccup) while a webhook request is
// between reading the queue and recording its alert. The record lands after
// the new term resumed, and is queued on the ended term's queue, which
// drops it. A re-send must queue it again, although the replica remembers
// the alert as seen.
func TestResentAlertIsQueuedAgainAfterATermEnded(t *testing.T) {
	f := newFixture(t, optedIn, nil)
	gate := &gatedFacts{entered: make(chan struct{}), release: make(chan struct{})}
	// Only the re-send may save it here: no resync in the test's time.
	e := f.startEngine(t, policy.DefaultConfig(), 0, func(_ *verify.Config, _ *escalate.Config, o *Options) {
		gate.FactSource = o.Cache
		o.Cache, o.Resync = gate, time.Hour
	})
	term := func() (stop func()) {
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- e.Run(ctx, 1) }()
		var once sync.Once
		stop = func() {
			once.Do(func() {
				cancel()
				if err := <-done; err != nil {
					t.Errorf("Run: %v", err)
				}
			})
		}
		t.Cleanup(stop)
		return stop
	}
	endFirst := term()
	e.waitRunning(t, f, "probe-1")

	n := firing(f.ns, "between-terms", time.Now(), serviceDown)
	gate.armed.Store(true)
	accepted := make(chan error, 1)
	go func() {
		r, err := e.Accept(context.Background(), n)
		if err == nil && r.Accepted != 1 {
			err = fmt.Errorf("receipt %+v, want one accepted", r)
		}
		accepted <- err
	}()
	<-gate.entered
	endFirst()
	term()
	e.waitRunning(t, f, "probe-2")
	close(gate.release)
	if err := <-accepted; err != nil {
		t.Fatalf("the alert held between the terms: %v", err)
	}
	// Alertmanager re-sends it at its repeat interval.
	if r, err := e.Accept(context.Background(), n); err != nil || r != (webhook.Receipt{Duplicates: 1}) {
		t.Fatalf("re-send: %+v, %v; want a duplicate", r, err)
	}
	if d := e.waitDecision(t, n); d.Outcome != policy.OutcomeRollback {
		t.Fatalf("decision = %s, want rollback", d)
	}
}

func TestClipMarked(t *testing.T) {
	for _, tc := range []struct {
		s       string
		n       int
		want    string
		dropped int
	}{
		{"short", 10, "short", 0},
		{strings.Repeat("a", 20), 20, strings.Repeat("a", 20), 0},
		{strings.Repeat("a", 30), 20, strings.Repeat("a", 20-len(truncationMark)) + truncationMark, 30 - (20 - len(truncationMark))},
		// A two-byte character is never split.
		{"a" + strings.Repeat("é", 20), 2 + len(truncationMark), "a" + truncationMark, 40},
		// No room for the mark: nothing of the value is kept.
		{strings.Repeat("a", 30), 3, truncationMark, 30},
	} {
		got, dropped := clipMarked(tc.s, tc.n)
		if got != tc.want || dropped != tc.dropped {
			t.Errorf("clipMarked(%q, %d) = %q, %d; want %q, %d", tc.s, tc.n, got, dropped, tc.want, tc.dropped)
		}
		if !utf8.ValidString(got) {
			t.Errorf("clipMarked(%q, %d) = %q: not UTF-8", tc.s, tc.n, got)
		}
	}
}
