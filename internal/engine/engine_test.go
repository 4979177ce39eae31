package engine

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/alertmanager/template"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/dynamic/dynamicinformer"
	"k8s.io/client-go/kubernetes/scheme"
	typedcorev1 "k8s.io/client-go/kubernetes/typed/core/v1"
	"k8s.io/client-go/metadata"
	"k8s.io/client-go/tools/record"

	"github.com/autorollbackd/autorollbackd/internal/actuator"
	"github.com/autorollbackd/autorollbackd/internal/escalate"
	"github.com/autorollbackd/autorollbackd/internal/helm"
	"github.com/autorollbackd/autorollbackd/internal/incident"
	"github.com/autorollbackd/autorollbackd/internal/kinds"
	"github.com/autorollbackd/autorollbackd/internal/kubeclient"
	"github.com/autorollbackd/autorollbackd/internal/policy"
	"github.com/autorollbackd/autorollbackd/internal/testenv"
	"github.com/autorollbackd/autorollbackd/internal/verify"
	"github.com/autorollbackd/autorollbackd/internal/webhook"
	"github.com/autorollbackd/autorollbackd/internal/workload"
)

func TestMain(m *testing.M) { os.Exit(testenv.Run(m)) }

// fixture is a namespace with a Deployment that has two revisions.
type fixture struct {
	c          *testenv.Cluster
	ns         string
	deployment *appsv1.Deployment
	// rolloutAt is when revision 2 was created, by the API server's clock.
	rolloutAt time.Time
	// clients, when set, is what the engine, actuator and verifier use
	// instead of the clientset, and its Rollouts are watched.
	clients *workload.Clients
	// verifier, when set, wraps the engine's verifier.
	verifier func(Verifier) Verifier
}

func newFixture(t *testing.T, labels, annotations map[string]string) *fixture {
	t.Helper()
	c := testenv.Require(t)
	f := &fixture{c: c, ns: c.Namespace(t)}
	ctx := context.Background()
	replicas := int32(2)
	d := &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: "event-service", Namespace: f.ns, Labels: labels, Annotations: annotations},
		Spec: appsv1.DeploymentSpec{
			Replicas: &replicas,
			Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "event-service"}},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{"app": "event-service"}},
				Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "app", Image: "event-service:v1"}}},
			},
		},
	}
	apps := c.Client.AppsV1().Deployments(f.ns)
	if _, err := apps.Create(ctx, d, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	f.waitRevision(t, "1")
	f.rollout(t, "event-service:v2-bad", "2")
	rss, err := c.Client.AppsV1().ReplicaSets(f.ns).List(ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for _, rs := range rss.Items {
		if rs.Annotations[kinds.AnnotationDeploymentRevision] == "2" {
			f.rolloutAt = rs.CreationTimestamp.Time
		}
	}
	if f.rolloutAt.IsZero() {
		t.Fatal("no ReplicaSet of revision 2")
	}
	f.deployment, err = apps.Get(ctx, d.Name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return f
}

func (f *fixture) waitRevision(t *testing.T, rev string) {
	t.Helper()
	testenv.Eventually(t, 30*time.Second, "deployment revision "+rev, func(ctx context.Context) (bool, string) {
		d, err := f.c.Client.AppsV1().Deployments(f.ns).Get(ctx, "event-service", metav1.GetOptions{})
		if err != nil {
			return false, err.Error()
		}
		// Observed too: a workload still settling is not what the tests
		// are about (a rollback within the webhook request leaves it to
		// the incident's worker).
		return d.Annotations[kinds.AnnotationDeploymentRevision] == rev && d.Status.ObservedGeneration >= d.Generation,
			fmt.Sprintf("revision %q, generation %d observed %d", d.Annotations[kinds.AnnotationDeploymentRevision], d.Generation, d.Status.ObservedGeneration)
	})
}

type running struct {
	*Engine
	reg      *prometheus.Registry
	messages *inbox
}

// inbox is a webhook notifier's receiving end: every message the escalator
// sends, as JSON.
type inbox struct {
	mu   sync.Mutex
	msgs []map[string]any
}

func (b *inbox) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	var m map[string]any
	if err := json.NewDecoder(r.Body).Decode(&m); err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	b.mu.Lock()
	b.msgs = append(b.msgs, m)
	b.mu.Unlock()
}

// find returns the messages of a kind ("page", "announce", "resolve").
func (b *inbox) find(kind string) []map[string]any {
	b.mu.Lock()
	defer b.mu.Unlock()
	var out []map[string]any
	for _, m := range b.msgs {
		if m["kind"] == kind {
			out = append(out, m)
		}
	}
	return out
}

// startEngine runs an engine over the fixture's namespace with cfg, records
// in the same namespace.
// setup adjusts an engine's verification, escalation and options before it
// starts.
type setup func(*verify.Config, *escalate.Config, *Options)

func (f *fixture) startEngine(t *testing.T, cfg policy.Config, workers int, setups ...setup) *running {
	t.Helper()
	p, err := policy.Compile(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	inf, err := workload.NewInformers(f.c.Client, metadata.NewForConfigOrDie(f.c.REST), f.ns)
	if err != nil {
		t.Fatal(err)
	}
	cache := workload.NewCached(inf)
	inf.Run(ctx)
	if unsynced := inf.WaitForCacheSync(ctx); len(unsynced) > 0 {
		t.Fatalf("sync %v", unsynced)
	}
	var client kubeclient.Interface = f.c.Client
	if f.clients != nil {
		client = *f.clients
		rollouts := dynamicinformer.NewFilteredDynamicSharedInformerFactory(f.clients.Dynamic, 0, f.ns, nil)
		cache.Rollouts = rollouts.ForResource(workload.RolloutResource).Lister()
		rollouts.Start(ctx.Done())
		for gvr, ok := range rollouts.WaitForCacheSync(ctx.Done()) {
			if !ok {
				t.Fatalf("sync %v", gvr)
			}
		}
		t.Cleanup(rollouts.Shutdown)
	}
	reg := prometheus.NewRegistry()
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	b := record.NewBroadcaster()
	b.StartRecordingToSink(&typedcorev1.EventSinkImpl{Interface: f.c.Client.CoreV1().Events("")})
	act, err := actuator.New(actuator.Options{
		Client: client, Recorder: b.NewRecorder(scheme.Scheme, corev1.EventSource{Component: "autorollbackd"}),
		Logger: logger, Registry: reg,
		Releases: &helm.Client{REST: f.c.REST, Client: f.c.Client, Logger: logger},
	})
	if err != nil {
		t.Fatal(err)
	}
	vcfg := verify.DefaultConfig()
	vcfg.Rollout.Timeout, vcfg.Pods.Timeout = metav1.Duration{Duration: 30 * time.Second}, metav1.Duration{Duration: 30 * time.Second}
	vcfg.PollInterval = metav1.Duration{Duration: 200 * time.Millisecond}
	box := &inbox{}
	srv := httptest.NewServer(box)
	ecfg := escalate.DefaultConfig()
	ecfg.Notifiers = []escalate.NotifierConfig{{Name: "people", Type: "webhook", Webhook: &escalate.WebhookConfig{URL: srv.URL}}}
	ecfg.Announce = []string{"people"}
	for i := range ecfg.Ladder {
		ecfg.Ladder[i].Notifiers = []string{"people"}
	}
	opts := Options{
		Client: client, Namespace: f.ns, Policy: func() *policy.Policy { return p },
		Cache: cache, Live: workload.Live{Client: client}, Actor: act, MaxRollbackDepth: 2,
		Incidents:  &incident.Store{Client: f.c.Client, Namespace: f.ns},
		MaxPending: 100, Retention: time.Hour, IncidentWorkers: 2,
		// Grouped pages wait for others only briefly in tests.
		PageGroupWait: 200 * time.Millisecond,
		Logger:        logger, Registry: reg,
	}
	for _, s := range setups {
		s(&vcfg, &ecfg, &opts)
	}
	ver, err := verify.New(verify.Options{Config: vcfg, Client: client, Logger: logger, Registry: reg})
	if err != nil {
		t.Fatal(err)
	}
	// As the daemon does: the verifier also asks Alertmanager.
	opts.Verifier, opts.AlertState = ver, ver
	if f.verifier != nil {
		opts.Verifier = f.verifier(ver)
	}
	if opts.Escalator, err = escalate.New(escalate.Options{Config: ecfg, Logger: logger, Registry: reg}); err != nil {
		t.Fatal(err)
	}
	e, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	if workers > 0 {
		go func() { done <- e.Run(ctx, workers) }()
	} else {
		done <- nil
	}
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("engine.Run: %v", err)
		}
		inf.Shutdown()
		b.Shutdown()
		srv.Close()
	})
	return &running{Engine: e, reg: reg, messages: box}
}

// firing is a notification of one firing alert about the fixture's
// Deployment in ns. Its fingerprint is derived from the name given (see
// fingerprintOf).
func firing(ns, name string, startsAt time.Time, labels map[string]string) *webhook.Notification {
	l := template.KV{"alertname": "EventServiceDown", "namespace": ns, "deployment": "event-service"}
	for k, v := range labels {
		l[k] = v
	}
	return &webhook.Notification{
		Version: "4",
		Data: template.Data{
			Receiver: "autorollbackd", Status: "firing",
			Alerts: template.Alerts{{
				Status: "firing", Labels: l, Annotations: template.KV{"summary": "500 on all endpoints"},
				StartsAt: startsAt, Fingerprint: fingerprintOf(name), GeneratorURL: "http://prometheus.local/graph",
			}},
		},
	}
}

// fingerprintOf returns name when it is a fingerprint as Alertmanager
// writes one, else one derived from it, so that tests can name their
// alerts.
func fingerprintOf(name string) string {
	if validFingerprint(name) {
		return name
	}
	sum := sha256.Sum256([]byte(name))
	return hex.EncodeToString(sum[:8])
}

func (r *running) waitDecision(t *testing.T, n *webhook.Notification) policy.Decision {
	t.Helper()
	a := n.Alerts[0]
	key := AlertKey(policy.Alert{Fingerprint: a.Fingerprint, StartsAt: a.StartsAt})
	var d policy.Decision
	testenv.Eventually(t, 30*time.Second, "decision for "+key, func(ctx context.Context) (bool, string) {
		rec, err := r.Record(ctx, key)
		if err != nil {
			return false, err.Error()
		}
		if rec.Decision == nil {
			return false, "pending"
		}
		d = *rec.Decision
		return true, ""
	})
	return d
}

var optedIn = map[string]string{policy.DefaultOptInLabel: "true"}

func TestDecisions(t *testing.T) {
	for _, tc := range []struct {
		name        string
		annotations map[string]string
		labels      map[string]string // of the alert
		startsAt    func(f *fixture) time.Time
		cfg         func(*policy.Config)
		outcome     policy.Outcome
		reason      policy.Reason
	}{
		{
			name:    "fresh alert after the rollout rolls back",
			outcome: policy.OutcomeRollback, reason: policy.ReasonCriterionMet,
		},
		{
			name:     "alert older than the rollout escalates",
			startsAt: func(f *fixture) time.Time { return f.rolloutAt.Add(-time.Hour) },
			outcome:  policy.OutcomeEscalate, reason: policy.ReasonAlertPredatesRollout,
		},
		{
			name:    "workload unchanged for longer than the window escalates",
			cfg:     func(c *policy.Config) { c.RecentRolloutWindow = metav1.Duration{Duration: time.Millisecond} },
			outcome: policy.OutcomeEscalate, reason: policy.ReasonNoRecentRollout,
		},
		{
			name:        "fix-forward annotation fixes forward",
			annotations: map[string]string{kinds.AnnotationFixForward: "true"},
			outcome:     policy.OutcomeFixForward, reason: policy.ReasonFixForwardAnnotation,
		},
		{
			name:        "rollback-unsafe annotation fixes forward",
			annotations: map[string]string{kinds.AnnotationRollbackUnsafe: "true"},
			outcome:     policy.OutcomeFixForward, reason: policy.ReasonRollbackUnsafe,
		},
		{
			name:    "non-critical alert fixes forward",
			labels:  map[string]string{"impact": "non_critical"},
			outcome: policy.OutcomeFixForward, reason: policy.ReasonCriterionMet,
		},
		{
			name:    "dry run decides rollback and marks it",
			cfg:     func(c *policy.Config) { c.DryRun = true },
			outcome: policy.OutcomeRollback, reason: policy.ReasonCriterionMet,
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t, optedIn, tc.annotations)
			cfg := policy.DefaultConfig()
			if tc.cfg != nil {
				tc.cfg(&cfg)
			}
			e := f.startEngine(t, cfg, 1)
			startsAt := time.Now()
			if tc.startsAt != nil {
				startsAt = tc.startsAt(f)
			}
			labels := map[string]string{"impact": "service_down"}
			for k, v := range tc.labels {
				labels[k] = v
			}
			n := firing(f.ns, "f-"+tc.name, startsAt, labels)
			r, err := e.Accept(context.Background(), n)
			if err != nil {
				t.Fatal(err)
			}
			if r != (webhook.Receipt{Accepted: 1}) {
				t.Fatalf("receipt = %+v, want one accepted", r)
			}
			d := e.waitDecision(t, n)
			if d.Outcome != tc.outcome || d.Reason != tc.reason {
				t.Fatalf("decision = %s/%s, want %s/%s\n%s", d.Outcome, d.Reason, tc.outcome, tc.reason, d)
			}
			if d.Target != (policy.Ref{Kind: policy.KindDeployment, Namespace: f.ns, Name: "event-service"}) {
				t.Errorf("target = %v", d.Target)
			}
			if d.DryRun != cfg.DryRun {
				t.Errorf("dry run = %v, want %v", d.DryRun, cfg.DryRun)
			}
			// The decision is counted once its record is written, just
			// after the record shows it.
			testenv.Eventually(t, 10*time.Second, "the decision counted", func(context.Context) (bool, string) {
				got := testutil.ToFloat64(e.m.decisions.WithLabelValues(string(tc.outcome), string(tc.reason)))
				return got == 1, fmt.Sprintf("decisions_total{%s,%s} = %v, want 1", tc.outcome, tc.reason, got)
			})
		})
	}
}

func TestDuplicatesNeverDecideTwice(t *testing.T) {
	f := newFixture(t, optedIn, nil)
	cfg := policy.DefaultConfig()
	first := f.startEngine(t, cfg, 1)
	// A second engine stands for the other replica, or this one restarted:
	// it shares nothing with the first but the cluster.
	second := f.startEngine(t, cfg, 1)
	n := firing(f.ns, "dup-1", time.Now(), map[string]string{"impact": "service_down"})
	ctx := context.Background()

	if r, err := first.Accept(ctx, n); err != nil || r.Accepted != 1 {
		t.Fatalf("first Accept = %+v, %v", r, err)
	}
	for i, e := range []*running{first, first, second, second} {
		r, err := e.Accept(ctx, n)
		if err != nil {
			t.Fatal(err)
		}
		if r != (webhook.Receipt{Duplicates: 1}) {
			t.Fatalf("re-send %d: receipt = %+v, want one duplicate", i, r)
		}
	}
	d := first.waitDecision(t, n)
	if d.Outcome != policy.OutcomeRollback {
		t.Fatalf("decision = %s", d)
	}
	recs, err := first.store.list(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(recs) != 1 {
		t.Fatalf("%d records, want 1", len(recs))
	}
	// A decision counts once its record is written, and the record's
	// resourceVersion lets only one engine write it.
	testenv.Eventually(t, 10*time.Second, "one rollback decision across both engines", func(context.Context) (bool, string) {
		total := 0.0
		for _, e := range []*running{first, second} {
			total += testutil.ToFloat64(e.m.decisions.WithLabelValues("rollback", "criterion_met"))
		}
		return total == 1, fmt.Sprintf("%v decisions", total)
	})
	if incs, err := first.opts.Incidents.List(ctx, false); err != nil || len(incs) != 1 {
		t.Fatalf("incidents = %d, %v; want 1", len(incs), err)
	}
	// A new episode of the same alert (a new start time) is a new alert.
	again := firing(f.ns, "dup-1", time.Now().Add(time.Second), map[string]string{"impact": "service_down"})
	if r, err := second.Accept(ctx, again); err != nil || r.Accepted != 1 {
		t.Fatalf("new episode: receipt = %+v, %v; want accepted", r, err)
	}
}

func TestRefusedAlertsAreNotRecorded(t *testing.T) {
	f := newFixture(t, map[string]string{"team": "events"}, nil) // no opt-in label
	e := f.startEngine(t, policy.DefaultConfig(), 1)
	ctx := context.Background()
	for _, tc := range []struct {
		name   string
		n      *webhook.Notification
		reason policy.Reason
	}{
		{"not opted in", firing(f.ns, "r-1", time.Now(), map[string]string{"impact": "service_down"}), policy.ReasonNotOptedIn},
		{"namespace denied", firing("kube-system", "r-2", time.Now(), map[string]string{"impact": "service_down"}), policy.ReasonNamespaceDenied},
		{"no such workload", firing(f.ns, "r-3", time.Now(), map[string]string{"impact": "service_down", "deployment": "nope"}), policy.ReasonWorkloadNotFound},
		{"no target labels", firing(f.ns, "r-4", time.Now(), map[string]string{"impact": "service_down", "deployment": ""}), policy.ReasonNoTarget},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r, err := e.Accept(ctx, tc.n)
			if err != nil {
				t.Fatal(err)
			}
			if r.Counts() != (webhook.Receipt{Refused: 1}) {
				t.Fatalf("receipt = %+v, want one refused", r)
			}
			if got := testutil.ToFloat64(e.m.decisions.WithLabelValues("refuse", string(tc.reason))); got != 1 {
				t.Errorf("decisions_total{refuse,%s} = %v, want 1", tc.reason, got)
			}
		})
	}
	recs, err := e.store.list(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(recs) != 0 {
		t.Fatalf("refused alerts left %d records", len(recs))
	}
	// The workload was never touched.
	d, err := f.c.Client.AppsV1().Deployments(f.ns).Get(ctx, "event-service", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if d.Generation != f.deployment.Generation || d.Annotations[kinds.AnnotationDeploymentRevision] != "2" {
		t.Fatalf("refused workload changed: generation %d -> %d", f.deployment.Generation, d.Generation)
	}
}

func TestResumeAfterRestart(t *testing.T) {
	f := newFixture(t, optedIn, nil)
	cfg := policy.DefaultConfig()
	// The first daemon accepts the alert and dies before deciding: it runs
	// no workers.
	crashed := f.startEngine(t, cfg, 0)
	n := firing(f.ns, "resume-1", time.Now(), map[string]string{"impact": "service_down"})
	if r, err := crashed.Accept(context.Background(), n); err != nil || r.Accepted != 1 {
		t.Fatalf("Accept = %+v, %v", r, err)
	}
	restarted := f.startEngine(t, cfg, 1)
	d := restarted.waitDecision(t, n)
	if d.Outcome != policy.OutcomeRollback {
		t.Fatalf("resumed decision = %s", d)
	}
	if r, err := restarted.Accept(context.Background(), n); err != nil || r.Duplicates != 1 {
		t.Fatalf("re-send after restart: %+v, %v; want duplicate", r, err)
	}
}

func TestResolvedAlertsAreCountedNotRecorded(t *testing.T) {
	f := newFixture(t, optedIn, nil)
	e := f.startEngine(t, policy.DefaultConfig(), 1)
	n := firing(f.ns, "res-1", time.Now(), map[string]string{"impact": "service_down"})
	n.Alerts[0].Status = "resolved"
	r, err := e.Accept(context.Background(), n)
	if err != nil || r != (webhook.Receipt{Resolved: 1}) {
		t.Fatalf("receipt = %+v, %v; want one resolved", r, err)
	}
	recs, err := e.store.list(context.Background(), nil)
	if err != nil || len(recs) != 0 {
		t.Fatalf("records = %d, %v; want none", len(recs), err)
	}
}

func TestBackpressure(t *testing.T) {
	f := newFixture(t, optedIn, nil)
	e := f.startEngine(t, policy.DefaultConfig(), 0)
	e.opts.MaxPending = 1
	ctx := context.Background()
	if _, err := e.Accept(ctx, firing(f.ns, "bp-1", time.Now(), map[string]string{"impact": "service_down"})); err != nil {
		t.Fatal(err)
	}
	_, err := e.Accept(ctx, firing(f.ns, "bp-2", time.Now(), map[string]string{"impact": "service_down"}))
	if err == nil || !errors.Is(err, webhook.ErrQueueFull) {
		t.Fatalf("Accept over MaxPending = %v, want ErrQueueFull, which the 503 names", err)
	}
}
