package actuator

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes/scheme"
	typedcorev1 "k8s.io/client-go/kubernetes/typed/core/v1"
	"k8s.io/client-go/tools/record"
	"k8s.io/client-go/util/retry"

	"github.com/autorollbackd/autorollbackd/internal/kinds"
	"github.com/autorollbackd/autorollbackd/internal/policy"
	"github.com/autorollbackd/autorollbackd/internal/testenv"
)

// flagTestEnv is one namespace of the local control plane and an Actuator
// acting in it, shared by the feature flag and scale bounce tests.
type flagTestEnv struct {
	c   *testenv.Cluster
	ns  string
	act *Actuator
	reg *prometheus.Registry
}

func newFlagTestEnv(t *testing.T) *flagTestEnv {
	t.Helper()
	c := testenv.Require(t)
	e := &flagTestEnv{c: c, ns: c.Namespace(t)}
	e.act, e.reg = newFlagTestActuator(t, c)
	return e
}

// newFlagTestActuator returns a new Actuator, as a restarted daemon would
// have, whose Events reach the API server.
func newFlagTestActuator(t *testing.T, c *testenv.Cluster) (*Actuator, *prometheus.Registry) {
	t.Helper()
	b := record.NewBroadcaster()
	b.StartRecordingToSink(&typedcorev1.EventSinkImpl{Interface: c.Client.CoreV1().Events("")})
	t.Cleanup(b.Shutdown)
	reg := prometheus.NewRegistry()
	a, err := New(Options{
		Client:   c.Client,
		Recorder: b.NewRecorder(scheme.Scheme, corev1.EventSource{Component: "autorollbackd"}),
		Logger:   slog.New(slog.NewTextHandler(io.Discard, nil)),
		Registry: reg,
	})
	if err != nil {
		t.Fatal(err)
	}
	return a, reg
}

func (e *flagTestEnv) request(kind policy.Kind, name, incident string) Request {
	return Request{
		Target:      policy.Ref{Kind: kind, Namespace: e.ns, Name: name},
		Incident:    incident,
		Fingerprint: "fp-" + incident,
		Why:         "alert EventServiceDown (service_down)",
	}
}

func flagTestTemplate(app string) corev1.PodTemplateSpec {
	return corev1.PodTemplateSpec{
		ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{"app": app}},
		Spec: corev1.PodSpec{Containers: []corev1.Container{{
			Name: "app", Image: "event-service:v1",
			EnvFrom: []corev1.EnvFromSource{{ConfigMapRef: &corev1.ConfigMapEnvSource{
				LocalObjectReference: corev1.LocalObjectReference{Name: "event-service-config"},
			}}},
		}}},
	}
}

// deployment creates a Deployment and waits until all its pods are ready.
func (e *flagTestEnv) deployment(t *testing.T, name string, replicas int32, mutate ...func(*appsv1.Deployment)) *appsv1.Deployment {
	t.Helper()
	d := &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: e.ns},
		Spec: appsv1.DeploymentSpec{
			Replicas: &replicas,
			Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": name}},
			Template: flagTestTemplate(name),
		},
	}
	for _, m := range mutate {
		m(d)
	}
	if _, err := e.c.Client.AppsV1().Deployments(e.ns).Create(context.Background(), d, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	return e.waitDeploymentReady(t, name, replicas)
}

func (e *flagTestEnv) waitDeploymentReady(t *testing.T, name string, replicas int32) *appsv1.Deployment {
	t.Helper()
	var d *appsv1.Deployment
	testenv.Eventually(t, 60*time.Second, fmt.Sprintf("deployment %s with %d ready pods", name, replicas), func(ctx context.Context) (bool, string) {
		var err error
		if d, err = e.getDeployment(ctx, name); err != nil {
			return false, err.Error()
		}
		s := d.Status
		return s.ObservedGeneration >= d.Generation && *d.Spec.Replicas == replicas && s.Replicas == replicas &&
				s.UpdatedReplicas == replicas && s.ReadyReplicas == replicas && s.AvailableReplicas == replicas,
			fmt.Sprintf("%+v", s)
	})
	return d
}

func (e *flagTestEnv) getDeployment(ctx context.Context, name string) (*appsv1.Deployment, error) {
	return e.c.Client.AppsV1().Deployments(e.ns).Get(ctx, name, metav1.GetOptions{})
}

func (e *flagTestEnv) mustDeployment(t *testing.T, name string) *appsv1.Deployment {
	t.Helper()
	d, err := e.getDeployment(context.Background(), name)
	if err != nil {
		t.Fatal(err)
	}
	return d
}

func (e *flagTestEnv) configMap(t *testing.T, data map[string]string) *corev1.ConfigMap {
	t.Helper()
	cm, err := e.c.Client.CoreV1().ConfigMaps(e.ns).Create(context.Background(), &corev1.ConfigMap{
		ObjectMeta: metav1.ObjectMeta{Name: "event-service-config", Annotations: map[string]string{"owner": "events-team"}},
		Data:       data,
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return cm
}

func (e *flagTestEnv) mustConfigMap(t *testing.T) *corev1.ConfigMap {
	t.Helper()
	cm, err := e.c.Client.CoreV1().ConfigMaps(e.ns).Get(context.Background(), "event-service-config", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return cm
}

// replicaSets returns the names of the ReplicaSets d controls and the
// restartedAt annotation of each one's template.
func (e *flagTestEnv) replicaSets(ctx context.Context, d *appsv1.Deployment) (map[string]string, error) {
	list, err := e.c.Client.AppsV1().ReplicaSets(e.ns).List(ctx, metav1.ListOptions{LabelSelector: "app=" + d.Name})
	if err != nil {
		return nil, err
	}
	out := map[string]string{}
	for _, rs := range list.Items {
		if metav1.IsControlledBy(&rs, d) {
			out[rs.Name] = rs.Spec.Template.Annotations[kinds.AnnotationTemplateRestartedAt]
		}
	}
	return out, nil
}

// waitNewReplicaSet waits until d has a ReplicaSet not in before whose
// template carries restartedAt, and all its pods are ready again.
func (e *flagTestEnv) waitNewReplicaSet(t *testing.T, d *appsv1.Deployment, before map[string]string, restartedAt string) map[string]string {
	t.Helper()
	var now map[string]string
	testenv.Eventually(t, 60*time.Second, "a new ReplicaSet with restartedAt "+restartedAt, func(ctx context.Context) (bool, string) {
		var err error
		if now, err = e.replicaSets(ctx, d); err != nil {
			return false, err.Error()
		}
		for name, at := range now {
			if _, old := before[name]; !old && at == restartedAt {
				return true, ""
			}
		}
		return false, fmt.Sprint(now)
	})
	e.waitDeploymentReady(t, d.Name, *d.Spec.Replicas)
	return now
}

func (e *flagTestEnv) waitEvent(t *testing.T, object, reason, contains string) corev1.Event {
	t.Helper()
	var found corev1.Event
	testenv.Eventually(t, 30*time.Second, fmt.Sprintf("event %s on %s", reason, object), func(ctx context.Context) (bool, string) {
		list, err := e.c.Client.CoreV1().Events(e.ns).List(ctx, metav1.ListOptions{})
		if err != nil {
			return false, err.Error()
		}
		var seen []string
		for _, ev := range list.Items {
			seen = append(seen, ev.InvolvedObject.Name+"/"+ev.Reason+": "+ev.Message)
			if ev.InvolvedObject.Name == object && ev.Reason == reason && strings.Contains(ev.Message, contains) {
				found = ev
				return true, ""
			}
		}
		return false, strings.Join(seen, "; ")
	})
	return found
}

// flagTestCounter reads autorollbackd_actions_total as the registry exposes
// it.
func flagTestCounter(t *testing.T, reg *prometheus.Registry, kind Kind, result string, dryRun bool) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{"kind": string(kind), "result": result, "dry_run": fmt.Sprint(dryRun)}
	for _, mf := range mfs {
		if mf.GetName() != "autorollbackd_actions_total" {
			continue
		}
	metrics:
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if want[l.GetName()] != l.GetValue() {
					continue metrics
				}
			}
			return m.GetCounter().GetValue()
		}
	}
	t.Fatalf("no series autorollbackd_actions_total%v", want)
	return 0
}

var pricingFlag = FlagChange{ConfigMap: "event-service-config", Key: "FEATURE_NEW_PRICING", Value: "false"}

func TestFeatureFlagRollbackAndRevertDeployment(t *testing.T) {
	e := newFlagTestEnv(t)
	ctx := context.Background()
	e.configMap(t, map[string]string{"FEATURE_NEW_PRICING": "true", "LOG_LEVEL": "info"})
	d := e.deployment(t, "event-service", 2)
	rsBefore, err := e.replicaSets(ctx, d)
	if err != nil {
		t.Fatal(err)
	}
	req := e.request(policy.KindDeployment, "event-service", "inc-1")

	// Given a flag that is on, when it is rolled back,
	res, err := e.act.RollbackFeatureFlag(ctx, req, pricingFlag)
	if err != nil || res.Outcome != OutcomeApplied || res.Kind != KindFeatureFlag {
		t.Fatalf("RollbackFeatureFlag = %+v, %v", res, err)
	}
	// then it is off, with the old value recorded in the same object,
	cm := e.mustConfigMap(t)
	if cm.Data["FEATURE_NEW_PRICING"] != "false" || cm.Data["LOG_LEVEL"] != "info" {
		t.Errorf("data after rollback = %v", cm.Data)
	}
	wantAnn := map[string]string{
		"owner": "events-team",
		"autorollback.io/flag-previous.FEATURE_NEW_PRICING": `"true"`,
		"autorollback.io/flag-incident.FEATURE_NEW_PRICING": "inc-1",
	}
	if fmt.Sprint(cm.Annotations) != fmt.Sprint(wantAnn) {
		t.Errorf("annotations after rollback = %v, want %v", cm.Annotations, wantAnn)
	}
	// and the pods are restarted as by kubectl rollout restart.
	d = e.mustDeployment(t, "event-service")
	at := d.Spec.Template.Annotations[kinds.AnnotationTemplateRestartedAt]
	if _, err := time.Parse(time.RFC3339, at); err != nil {
		t.Errorf("template annotation %s = %q: %v", kinds.AnnotationTemplateRestartedAt, at, err)
	}
	if got := d.Annotations[kinds.AnnotationRestartedFor]; got != "inc-1:flag" {
		t.Errorf("%s = %q, want inc-1:flag", kinds.AnnotationRestartedFor, got)
	}
	rsAfter := e.waitNewReplicaSet(t, d, rsBefore, at)
	e.waitEvent(t, "event-service", EventRollback, "set FEATURE_NEW_PRICING in ConfigMap event-service-config to \"false\" (was \"true\")")

	// A second call writes nothing.
	cmRV, dRV := cm.ResourceVersion, written(e.mustDeployment(t, "event-service"))
	res, err = e.act.RollbackFeatureFlag(ctx, req, pricingFlag)
	if err != nil || res.Outcome != OutcomeNoop || !res.Resumed {
		t.Fatalf("second RollbackFeatureFlag = %+v, %v; want a resumed no-op", res, err)
	}
	if got := e.mustConfigMap(t).ResourceVersion; got != cmRV {
		t.Errorf("second call wrote the ConfigMap: resourceVersion %s -> %s", cmRV, got)
	}
	if got := written(e.mustDeployment(t, "event-service")); got != dRV {
		t.Errorf("second call wrote the Deployment: resourceVersion %s -> %s", dRV, got)
	}

	// Revert restores the value, removes the record and restarts again.
	res, err = e.act.RevertFeatureFlag(ctx, req, pricingFlag)
	if err != nil || res.Outcome != OutcomeApplied {
		t.Fatalf("RevertFeatureFlag = %+v, %v", res, err)
	}
	cm = e.mustConfigMap(t)
	if cm.Data["FEATURE_NEW_PRICING"] != "true" || fmt.Sprint(cm.Annotations) != fmt.Sprint(map[string]string{"owner": "events-team"}) {
		t.Errorf("after revert: data %v, annotations %v", cm.Data, cm.Annotations)
	}
	d = e.mustDeployment(t, "event-service")
	if got := d.Annotations[kinds.AnnotationRestartedFor]; got != "inc-1:revert" {
		t.Errorf("%s = %q, want inc-1:revert", kinds.AnnotationRestartedFor, got)
	}
	at2 := d.Spec.Template.Annotations[kinds.AnnotationTemplateRestartedAt]
	if at2 == at {
		t.Errorf("revert did not change %s (%s)", kinds.AnnotationTemplateRestartedAt, at)
	}
	if _, err := time.Parse(time.RFC3339, at2); err != nil {
		t.Errorf("template annotation %s = %q: %v", kinds.AnnotationTemplateRestartedAt, at2, err)
	}
	e.waitNewReplicaSet(t, d, rsAfter, at2)

	// A repeated revert writes nothing.
	cmRV, dRV = cm.ResourceVersion, written(e.mustDeployment(t, "event-service"))
	res, err = e.act.RevertFeatureFlag(ctx, req, pricingFlag)
	if err != nil || res.Outcome != OutcomeNoop || res.Resumed {
		t.Fatalf("second RevertFeatureFlag = %+v, %v; want a plain no-op", res, err)
	}
	if e.mustConfigMap(t).ResourceVersion != cmRV || written(e.mustDeployment(t, "event-service")) != dRV {
		t.Error("second revert wrote")
	}

	for result, want := range map[string]float64{"applied": 2, "noop": 2, "failed": 0} {
		if got := flagTestCounter(t, e.reg, KindFeatureFlag, result, false); got != want {
			t.Errorf("actions_total{feature_flag,%s} = %v, want %v", result, got, want)
		}
	}
}

// TestFeatureFlagAbsentKey covers the other restartable kinds and a key the
// ConfigMap did not have, which the revert deletes again.
func TestFeatureFlagAbsentKey(t *testing.T) {
	e := newFlagTestEnv(t)
	ctx := context.Background()
	e.configMap(t, map[string]string{"LOG_LEVEL": "info"})
	replicas := int32(1)
	sts := &appsv1.StatefulSet{
		ObjectMeta: metav1.ObjectMeta{Name: "event-store", Namespace: e.ns},
		Spec: appsv1.StatefulSetSpec{
			Replicas: &replicas,
			Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "event-store"}},
			Template: flagTestTemplate("event-store"),
		},
	}
	if _, err := e.c.Client.AppsV1().StatefulSets(e.ns).Create(ctx, sts, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	ds := &appsv1.DaemonSet{
		ObjectMeta: metav1.ObjectMeta{Name: "event-agent", Namespace: e.ns},
		Spec: appsv1.DaemonSetSpec{
			Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "event-agent"}},
			Template: flagTestTemplate("event-agent"),
		},
	}
	if _, err := e.c.Client.AppsV1().DaemonSets(e.ns).Create(ctx, ds, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		kind policy.Kind
		name string
		// template reads the pod template and the revision the controller
		// last rolled out.
		template func(ctx context.Context) (map[string]string, string, error)
	}{
		{policy.KindStatefulSet, "event-store", func(ctx context.Context) (map[string]string, string, error) {
			s, err := e.c.Client.AppsV1().StatefulSets(e.ns).Get(ctx, "event-store", metav1.GetOptions{})
			if err != nil {
				return nil, "", err
			}
			return s.Spec.Template.Annotations, s.Status.UpdateRevision, nil
		}},
		{policy.KindDaemonSet, "event-agent", func(ctx context.Context) (map[string]string, string, error) {
			ds, err := e.c.Client.AppsV1().DaemonSets(e.ns).Get(ctx, "event-agent", metav1.GetOptions{})
			if err != nil {
				return nil, "", err
			}
			revs, err := e.c.Client.AppsV1().ControllerRevisions(e.ns).List(ctx, metav1.ListOptions{LabelSelector: "app=event-agent"})
			if err != nil {
				return nil, "", err
			}
			return ds.Spec.Template.Annotations, fmt.Sprint(len(revs.Items)), nil
		}},
	} {
		t.Run(string(tc.kind), func(t *testing.T) {
			flag := FlagChange{ConfigMap: "event-service-config", Key: "FEATURE_" + strings.ToUpper(strings.ReplaceAll(tc.name, "-", "_")), Value: "false"}
			var revision string
			testenv.Eventually(t, 60*time.Second, tc.name+" rolled out", func(ctx context.Context) (bool, string) {
				_, rev, err := tc.template(ctx)
				if err != nil {
					return false, err.Error()
				}
				revision = rev
				return rev != "" && rev != "0", rev
			})
			req := e.request(tc.kind, tc.name, "inc-absent")
			res, err := e.act.RollbackFeatureFlag(ctx, req, flag)
			if err != nil || res.Outcome != OutcomeApplied {
				t.Fatalf("RollbackFeatureFlag = %+v, %v", res, err)
			}
			cm := e.mustConfigMap(t)
			if cm.Data[flag.Key] != "false" || cm.Annotations[kinds.AnnotationFlagPreviousPrefix+flag.Key] != "null" {
				t.Errorf("after rollback: data %v, annotations %v", cm.Data, cm.Annotations)
			}
			var at string
			testenv.Eventually(t, 60*time.Second, tc.name+" restarted", func(ctx context.Context) (bool, string) {
				ann, rev, err := tc.template(ctx)
				if err != nil {
					return false, err.Error()
				}
				at = ann[kinds.AnnotationTemplateRestartedAt]
				return at != "" && rev != revision, fmt.Sprintf("restartedAt %q, revision %s (was %s)", at, rev, revision)
			})

			res, err = e.act.RevertFeatureFlag(ctx, req, flag)
			if err != nil || res.Outcome != OutcomeApplied {
				t.Fatalf("RevertFeatureFlag = %+v, %v", res, err)
			}
			cm = e.mustConfigMap(t)
			if _, ok := cm.Data[flag.Key]; ok || cm.Data["LOG_LEVEL"] != "info" {
				t.Errorf("revert did not delete %s: %v", flag.Key, cm.Data)
			}
			for _, k := range []string{kinds.AnnotationFlagPreviousPrefix + flag.Key, kinds.AnnotationFlagIncidentPrefix + flag.Key} {
				if v, ok := cm.Annotations[k]; ok {
					t.Errorf("revert left annotation %s=%s", k, v)
				}
			}
			ann, _, err := tc.template(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if ann[kinds.AnnotationTemplateRestartedAt] == at {
				t.Errorf("revert did not restart: %s still %s", kinds.AnnotationTemplateRestartedAt, at)
			}
		})
	}
}

func TestFeatureFlagDryRunChangesNothing(t *testing.T) {
	e := newFlagTestEnv(t)
	ctx := context.Background()
	before := e.configMap(t, map[string]string{"FEATURE_NEW_PRICING": "true"})
	d := e.deployment(t, "event-service", 1)
	req := e.request(policy.KindDeployment, "event-service", "inc-dry")
	req.DryRun = true
	res, err := e.act.RollbackFeatureFlag(ctx, req, pricingFlag)
	if err != nil || res.Outcome != OutcomeDryRun || !strings.HasPrefix(res.Message, "dry run: ") {
		t.Fatalf("dry run = %+v, %v", res, err)
	}
	if cm := e.mustConfigMap(t); cm.ResourceVersion != before.ResourceVersion || cm.Data["FEATURE_NEW_PRICING"] != "true" {
		t.Errorf("dry run changed the ConfigMap: resourceVersion %s -> %s, data %v", before.ResourceVersion, cm.ResourceVersion, cm.Data)
	}
	if after := e.mustDeployment(t, "event-service"); written(after) != written(d) {
		t.Errorf("dry run changed the Deployment: %s -> %s", written(d), written(after))
	}
	if got := flagTestCounter(t, e.reg, KindFeatureFlag, "applied", true); got != 1 {
		t.Errorf("actions_total{feature_flag,applied,dry_run=true} = %v, want 1", got)
	}
}

func TestFeatureFlagFailures(t *testing.T) {
	e := newFlagTestEnv(t)
	ctx := context.Background()
	e.deployment(t, "event-service", 1)
	req := e.request(policy.KindDeployment, "event-service", "inc-fail")

	t.Run("missing ConfigMap", func(t *testing.T) {
		_, err := e.act.RollbackFeatureFlag(ctx, req, pricingFlag)
		if !apierrors.IsNotFound(err) || FailureReason(err) != "not_found" {
			t.Fatalf("RollbackFeatureFlag = %v, want NotFound", err)
		}
		if !strings.HasPrefix(err.Error(), fmt.Sprintf("roll back feature flag %s/event-service-config FEATURE_NEW_PRICING: ", e.ns)) {
			t.Errorf("error lacks context: %v", err)
		}
		ev := e.waitEvent(t, "event-service", EventRollbackFailed, "(not_found)")
		if ev.Type != corev1.EventTypeWarning {
			t.Errorf("event type = %s", ev.Type)
		}
		// The Event is in the tenant's namespace: no API error text.
		if strings.Contains(ev.Message, "configmaps") || strings.Contains(ev.Message, "event-service-config") {
			t.Errorf("event message carries the API error: %q", ev.Message)
		}
		if got := flagTestCounter(t, e.reg, KindFeatureFlag, "failed", false); got != 1 {
			t.Errorf(`exposed actions_total{kind="feature_flag",result="failed"} = %v, want 1`, got)
		}
		if got := testutil.ToFloat64(e.act.actions.WithLabelValues("feature_flag", "failed", "false")); got != 1 {
			t.Errorf(`actions_total{kind="feature_flag",result="failed"} = %v, want 1`, got)
		}
	})

	e.configMap(t, map[string]string{"FEATURE_NEW_PRICING": "true"})

	t.Run("paused", func(t *testing.T) {
		patch := func(paused bool) {
			body := fmt.Sprintf(`{"spec":{"paused":%t}}`, paused)
			if _, err := e.c.Client.AppsV1().Deployments(e.ns).Patch(ctx, "event-service", types.MergePatchType, []byte(body), metav1.PatchOptions{}); err != nil {
				t.Fatal(err)
			}
		}
		patch(true)
		defer patch(false)
		before := e.mustConfigMap(t)
		_, err := e.act.RollbackFeatureFlag(ctx, req, pricingFlag)
		if !errors.Is(err, ErrPaused) {
			t.Fatalf("RollbackFeatureFlag = %v, want ErrPaused", err)
		}
		if after := e.mustConfigMap(t); after.ResourceVersion != before.ResourceVersion {
			t.Errorf("a refused restart still changed the flag: %v", after.Data)
		}
	})

	t.Run("changed by hand", func(t *testing.T) {
		if _, err := e.act.RollbackFeatureFlag(ctx, req, pricingFlag); err != nil {
			t.Fatal(err)
		}
		// Someone turns the feature back on after the rollback.
		if _, err := e.c.Client.CoreV1().ConfigMaps(e.ns).Patch(ctx, "event-service-config", types.MergePatchType,
			[]byte(`{"data":{"FEATURE_NEW_PRICING":"on"}}`), metav1.PatchOptions{}); err != nil {
			t.Fatal(err)
		}
		before := e.mustConfigMap(t)
		for name, call := range map[string]func(context.Context, Request, FlagChange) (Result, error){
			"rollback": e.act.RollbackFeatureFlag, "revert": e.act.RevertFeatureFlag,
		} {
			if _, err := call(ctx, req, pricingFlag); !errors.Is(err, ErrChanged) {
				t.Errorf("%s after a change by hand = %v, want ErrChanged", name, err)
			}
		}
		other := req
		other.Incident = "inc-other"
		if _, err := e.act.RollbackFeatureFlag(ctx, other, pricingFlag); !errors.Is(err, ErrChanged) {
			t.Errorf("rollback for another incident = %v, want ErrChanged", err)
		}
		if after := e.mustConfigMap(t); after.ResourceVersion != before.ResourceVersion {
			t.Errorf("the change by hand was overwritten: %v %v", after.Data, after.Annotations)
		}
	})

	t.Run("invalid key", func(t *testing.T) {
		bad := pricingFlag
		bad.Key = strings.Repeat("K", 60)
		if _, err := e.act.RollbackFeatureFlag(ctx, req, bad); err == nil || !strings.Contains(err.Error(), "cannot be recorded") {
			t.Errorf("RollbackFeatureFlag with a key too long for an annotation = %v", err)
		}
	})
}

// TestFeatureFlagStaleWriteConflicts shows that both writes carry the
// resourceVersion they read: a change in between makes the real API server
// refuse them.
func TestFeatureFlagStaleWriteConflicts(t *testing.T) {
	e := newFlagTestEnv(t)
	ctx := context.Background()
	stale := e.configMap(t, map[string]string{"FEATURE_NEW_PRICING": "true"})
	e.deployment(t, "event-service", 1)
	req := e.request(policy.KindDeployment, "event-service", "inc-stale")
	w, err := e.act.readLiveWorkload(ctx, req.Target)
	if err != nil {
		t.Fatal(err)
	}
	// Someone writes both after our read.
	if _, err := e.c.Client.CoreV1().ConfigMaps(e.ns).Patch(ctx, stale.Name, types.MergePatchType, []byte(`{"data":{"LOG_LEVEL":"debug"}}`), metav1.PatchOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := e.c.Client.AppsV1().Deployments(e.ns).Patch(ctx, "event-service", types.MergePatchType, []byte(`{"metadata":{"labels":{"touched":"yes"}}}`), metav1.PatchOptions{}); err != nil {
		t.Fatal(err)
	}
	off := "false"
	err = e.act.patchFlagConfigMap(ctx, req, stale, map[string]*string{"FEATURE_NEW_PRICING": &off}, nil)
	if !apierrors.IsConflict(err) {
		t.Errorf("ConfigMap write with a stale resourceVersion = %v, want a Conflict", err)
	}
	if err := e.act.restartLiveWorkload(ctx, req, w, "inc-stale:flag"); !apierrors.IsConflict(err) {
		t.Errorf("restart with a stale resourceVersion = %v, want a Conflict", err)
	}
	if cm := e.mustConfigMap(t); cm.Data["FEATURE_NEW_PRICING"] != "true" {
		t.Errorf("stale write changed the flag: %v", cm.Data)
	}
	// The same writes with fresh objects succeed, so the Conflicts above
	// were the preconditions.
	fresh := e.mustConfigMap(t)
	if err := e.act.patchFlagConfigMap(ctx, req, fresh, map[string]*string{"FEATURE_NEW_PRICING": &off}, nil); err != nil {
		t.Errorf("ConfigMap write with a fresh resourceVersion: %v", err)
	}
	if cm := e.mustConfigMap(t); cm.Data["FEATURE_NEW_PRICING"] != "false" || cm.Annotations["owner"] != "events-team" {
		t.Errorf("after the fresh write: data %v, annotations %v", cm.Data, cm.Annotations)
	}
	// The Deployment controller may write status between a fresh read and
	// the restart; as featureFlag does, a Conflict starts over.
	err = retry.RetryOnConflict(retry.DefaultRetry, func() error {
		w, err := e.act.readLiveWorkload(ctx, req.Target)
		if err != nil {
			return err
		}
		return e.act.restartLiveWorkload(ctx, req, w, "inc-stale:flag")
	})
	if err != nil {
		t.Errorf("restart with a fresh resourceVersion: %v", err)
	}
}

// TestFeatureFlagRestartPatchIsKubectls pins the restart to kubectl's: the
// pod template annotation, as a strategic merge patch, plus our record.
func TestFeatureFlagRestartPatchIsKubectls(t *testing.T) {
	e := newFlagTestEnv(t)
	ctx := context.Background()
	e.deployment(t, "event-service", 1, func(d *appsv1.Deployment) {
		d.Spec.Template.Annotations = map[string]string{"team": "events"}
	})
	if out, err := e.c.Kubectl(ctx, "rollout", "restart", "deployment/event-service", "-n", e.ns); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	byKubectl := e.mustDeployment(t, "event-service")
	e.waitDeploymentReady(t, "event-service", 1)
	// The controller may still be writing the status of kubectl's rollout,
	// so the write may conflict; as featureFlag does, a Conflict starts over
	// from a fresh read.
	err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
		w, err := e.act.readLiveWorkload(ctx, e.request(policy.KindDeployment, "event-service", "x").Target)
		if err != nil {
			return err
		}
		return e.act.restartLiveWorkload(ctx, e.request(policy.KindDeployment, "event-service", "x"), w, "x:flag")
	})
	if err != nil {
		t.Fatal(err)
	}
	byUs := e.mustDeployment(t, "event-service")
	for k := range byKubectl.Spec.Template.Annotations {
		if _, ok := byUs.Spec.Template.Annotations[k]; !ok {
			t.Errorf("template annotation %s lost", k)
		}
	}
	if len(byUs.Spec.Template.Annotations) != len(byKubectl.Spec.Template.Annotations) {
		t.Errorf("template annotations: kubectl %v, ours %v", byKubectl.Spec.Template.Annotations, byUs.Spec.Template.Annotations)
	}
	if a, b := byKubectl.Spec.Template.Annotations[kinds.AnnotationTemplateRestartedAt], byUs.Spec.Template.Annotations[kinds.AnnotationTemplateRestartedAt]; a == b {
		t.Errorf("restartedAt unchanged (%s): a second restart within a second would restart nothing", a)
	}
	if byUs.Generation != byKubectl.Generation+1 {
		t.Errorf("generation %d -> %d, want one new rollout", byKubectl.Generation, byUs.Generation)
	}
}

// written is what an action could change on a Deployment: its spec (seen
// through its generation), labels and annotations. The controller keeps
// writing status, so the resourceVersion cannot tell.
func written(d *appsv1.Deployment) string {
	return fmt.Sprint(d.Generation, d.Labels, d.Annotations)
}
