package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes/scheme"
	typedcorev1 "k8s.io/client-go/kubernetes/typed/core/v1"
	"k8s.io/client-go/tools/record"

	"github.com/autorollbackd/autorollbackd/internal/actuator"
	"github.com/autorollbackd/autorollbackd/internal/incident"
	"github.com/autorollbackd/autorollbackd/internal/kinds"
	"github.com/autorollbackd/autorollbackd/internal/policy"
	"github.com/autorollbackd/autorollbackd/internal/testenv"
)

// runCLI runs the binary with args and returns its exit code and output.
func runCLI(t *testing.T, environ []string, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errOut bytes.Buffer
	cmd := exec.Command(binary, args...)
	cmd.Env = append(os.Environ(), environ...)
	cmd.Stdout, cmd.Stderr = &out, &errOut
	err := cmd.Run()
	var exit *exec.ExitError
	switch {
	case err == nil:
	case errors.As(err, &exit):
		code = exit.ExitCode()
	default:
		t.Fatalf("run %v: %v", args, err)
	}
	return code, out.String(), errOut.String()
}

// flagDeployment creates the ConfigMap event-service-config with the flag on
// and a Deployment reading it, and waits until its pod is ready.
func flagDeployment(t *testing.T, c *testenv.Cluster, ns string) {
	t.Helper()
	ctx := context.Background()
	_, err := c.Client.CoreV1().ConfigMaps(ns).Create(ctx, &corev1.ConfigMap{
		ObjectMeta: metav1.ObjectMeta{Name: "event-service-config"},
		Data:       map[string]string{"FEATURE_NEW_PRICING": "true", "LOG_LEVEL": "info"},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	replicas := int32(1)
	_, err = c.Client.AppsV1().Deployments(ns).Create(ctx, &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: "event-service", Namespace: ns, Labels: map[string]string{"autorollback.io/enabled": "true"}},
		Spec: appsv1.DeploymentSpec{
			Replicas: &replicas,
			Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "event-service"}},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{"app": "event-service"}},
				Spec: corev1.PodSpec{Containers: []corev1.Container{{
					Name: "app", Image: "event-service:v1",
					EnvFrom: []corev1.EnvFromSource{{ConfigMapRef: &corev1.ConfigMapEnvSource{
						LocalObjectReference: corev1.LocalObjectReference{Name: "event-service-config"},
					}}},
				}}},
			},
		},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	waitRolledOut(t, c, ns, "")
}

// waitRolledOut waits until event-service has rolled out the pod template
// whose restartedAt annotation is restartedAt and its pod is ready.
func waitRolledOut(t *testing.T, c *testenv.Cluster, ns, restartedAt string) {
	t.Helper()
	testenv.Eventually(t, 60*time.Second, "event-service rolled out with restartedAt "+restartedAt, func(ctx context.Context) (bool, string) {
		d, err := c.Client.AppsV1().Deployments(ns).Get(ctx, "event-service", metav1.GetOptions{})
		if err != nil {
			return false, err.Error()
		}
		list, err := c.Client.AppsV1().ReplicaSets(ns).List(ctx, metav1.ListOptions{LabelSelector: "app=event-service"})
		if err != nil {
			return false, err.Error()
		}
		var current bool
		for _, rs := range list.Items {
			if rs.Spec.Template.Annotations[kinds.AnnotationTemplateRestartedAt] == restartedAt && rs.Status.ReadyReplicas == 1 {
				current = true
			}
		}
		s := d.Status
		return current && s.ObservedGeneration >= d.Generation && s.UpdatedReplicas == 1 && s.ReadyReplicas == 1 && s.Replicas == 1,
			fmt.Sprintf("%+v", s)
	})
}

// rollBackFlag turns FEATURE_NEW_PRICING off the way the daemon does for an
// incident and records the incident, with its flag and the applied action,
// in the store. It returns the incident.
func rollBackFlag(t *testing.T, c *testenv.Cluster, store *incident.Store, target policy.Ref, flag actuator.FlagChange) *incident.Incident {
	t.Helper()
	b := record.NewBroadcaster()
	b.StartRecordingToSink(&typedcorev1.EventSinkImpl{Interface: c.Client.CoreV1().Events("")})
	t.Cleanup(b.Shutdown)
	act, err := actuator.New(actuator.Options{
		Client:   c.Client,
		Recorder: b.NewRecorder(scheme.Scheme, corev1.EventSource{Component: "autorollbackd"}),
		Logger:   slog.New(slog.NewTextHandler(io.Discard, nil)),
		Registry: prometheus.NewRegistry(),
	})
	if err != nil {
		t.Fatal(err)
	}
	inc := flagIncident(target, &flag)
	res, err := act.RollbackFeatureFlag(context.Background(), actuator.Request{Target: target, Incident: inc.Rollout, Why: "alert EventServiceDown"}, flag)
	if err != nil || res.Outcome != actuator.OutcomeApplied {
		t.Fatalf("RollbackFeatureFlag = %+v, %v", res, err)
	}
	inc.Actions = []incident.Action{{At: time.Now(), Kind: actuator.KindFeatureFlag, Result: &res}}
	if _, err := store.Create(context.Background(), inc); err != nil {
		t.Fatal(err)
	}
	return inc
}

func flagIncident(target policy.Ref, flag *actuator.FlagChange) *incident.Incident {
	start := time.Now().Add(-10 * time.Minute)
	inc := &incident.Incident{
		SchemaVersion: incident.SchemaVersion,
		ID:            incident.NewID(target, 1, start),
		Rollout:       fmt.Sprintf("deployment/%s/%s@1", target.Namespace, target.Name),
		Target:        target,
		Revision:      1,
		State:         incident.StateResolved,
		StartedAt:     start,
		Decision:      policy.Decision{Outcome: policy.OutcomeRollback},
		ResolvedAt:    time.Now(),
	}
	inc.FeatureFlag = flag
	return inc
}

func TestIncidentsRevertFlag(t *testing.T) {
	c := testenv.Require(t)
	ns := c.Namespace(t)
	ctx := context.Background()
	cfg := configFile(t, ns, "")
	store := &incident.Store{Client: c.Client, Namespace: ns}
	target := policy.Ref{Kind: policy.KindDeployment, Namespace: ns, Name: "event-service"}
	flag := actuator.FlagChange{ConfigMap: "event-service-config", Key: "FEATURE_NEW_PRICING", Value: "false"}
	flagDeployment(t, c, ns)
	inc := rollBackFlag(t, c, store, target, flag)
	d, err := c.Client.AppsV1().Deployments(ns).Get(ctx, "event-service", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	rolledBackAt := d.Spec.Template.Annotations[kinds.AnnotationTemplateRestartedAt]
	waitRolledOut(t, c, ns, rolledBackAt)
	configMap := func() *corev1.ConfigMap {
		t.Helper()
		cm, err := c.Client.CoreV1().ConfigMaps(ns).Get(ctx, "event-service-config", metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		return cm
	}
	before := configMap()
	args := []string{"incidents", "revert-flag", inc.ID, "--kubeconfig", c.Kubeconfig, "--config", cfg}
	user := []string{"USER=alice"}

	// A dry run says what it would do and changes nothing.
	code, stdout, stderr := runCLI(t, user, append(args, "--dry-run")...)
	want := fmt.Sprintf("dry run: would have restored FEATURE_NEW_PRICING in ConfigMap event-service-config to \"true\", as before incident %s "+
		"and restarted Deployment %s/event-service: reverted by alice with autorollbackd incidents revert-flag %s\n", inc.Rollout, ns, inc.ID)
	if code != 0 || stdout != want || stderr != "" {
		t.Fatalf("revert-flag --dry-run: exit %d\nstdout %q\nwant   %q\nstderr %q", code, stdout, want, stderr)
	}
	if cm := configMap(); cm.ResourceVersion != before.ResourceVersion {
		t.Errorf("the dry run changed the ConfigMap: %v", cm.Data)
	}
	if d2, err := c.Client.AppsV1().Deployments(ns).Get(ctx, "event-service", metav1.GetOptions{}); err != nil || d2.Generation != d.Generation {
		t.Errorf("the dry run changed the Deployment (%v)", err)
	}
	if ev := findEvent(t, c, ns, strings.TrimSuffix(want, "\n")); ev != nil {
		t.Errorf("the dry run recorded an Event: %s %q", ev.Reason, ev.Message)
	}

	// The revert restores the flag, removes the record and restarts.
	code, stdout, stderr = runCLI(t, user, args...)
	want = strings.TrimPrefix(want, "dry run: would have ")
	if code != 0 || stdout != want || stderr != "" {
		t.Fatalf("revert-flag: exit %d\nstdout %q\nwant   %q\nstderr %q", code, stdout, want, stderr)
	}
	cm := configMap()
	if cm.Data["FEATURE_NEW_PRICING"] != "true" || cm.Data["LOG_LEVEL"] != "info" || len(cm.Annotations) != 0 {
		t.Errorf("after the revert: data %v, annotations %v", cm.Data, cm.Annotations)
	}
	d, err = c.Client.AppsV1().Deployments(ns).Get(ctx, "event-service", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if got := d.Annotations[kinds.AnnotationRestartedFor]; got != inc.Rollout+":revert" {
		t.Errorf("%s = %q, want %s:revert", kinds.AnnotationRestartedFor, got, inc.Rollout)
	}
	revertedAt := d.Spec.Template.Annotations[kinds.AnnotationTemplateRestartedAt]
	if revertedAt == rolledBackAt {
		t.Fatalf("the revert did not restart the pods: restartedAt still %s", revertedAt)
	}
	waitRolledOut(t, c, ns, revertedAt)
	// The Event is written before the command exits.
	if ev := findEvent(t, c, ns, strings.TrimSuffix(want, "\n")); ev == nil || ev.Reason != actuator.EventRollback {
		t.Errorf("no Event %s %q on the Deployment: %+v", actuator.EventRollback, want, ev)
	}

	// Once more: nothing to do, and nothing written.
	code, stdout, stderr = runCLI(t, user, args...)
	want = fmt.Sprintf("FEATURE_NEW_PRICING already restored for incident %s\n", inc.Rollout)
	if code != 0 || stdout != want || stderr != "" {
		t.Fatalf("second revert-flag: exit %d\nstdout %q\nwant   %q\nstderr %q", code, stdout, want, stderr)
	}
	if got := configMap().ResourceVersion; got != cm.ResourceVersion {
		t.Errorf("the second revert wrote the ConfigMap")
	}
}

func TestIncidentsRevertFlagRefuses(t *testing.T) {
	c := testenv.Require(t)
	ns := c.Namespace(t)
	cfg := configFile(t, ns, "")
	store := &incident.Store{Client: c.Client, Namespace: ns}
	target := policy.Ref{Kind: policy.KindDeployment, Namespace: ns, Name: "event-service"}
	flag := actuator.FlagChange{ConfigMap: "event-service-config", Key: "FEATURE_NEW_PRICING", Value: "false"}

	// An incident that rolled back a revision, not a flag.
	noFlag := flagIncident(target, nil)
	noFlag.ID += "-revision"
	noFlag.Actions = []incident.Action{{At: time.Now(), Kind: actuator.KindRollback,
		Result: &actuator.Result{Kind: actuator.KindRollback, Outcome: actuator.OutcomeApplied, From: 2, To: 1}}}
	// An incident whose flag rollback was only a dry run.
	dryRun := flagIncident(target, &flag)
	dryRun.ID += "-dry-run"
	dryRun.DryRun = true
	dryRun.Actions = []incident.Action{{At: time.Now(), Kind: actuator.KindFeatureFlag,
		Result: &actuator.Result{Kind: actuator.KindFeatureFlag, Outcome: actuator.OutcomeDryRun}}}
	for _, inc := range []*incident.Incident{noFlag, dryRun} {
		if _, err := store.Create(context.Background(), inc); err != nil {
			t.Fatal(err)
		}
	}
	// An incident whose flag someone turned back on by hand since.
	flagDeployment(t, c, ns)
	changed := rollBackFlag(t, c, store, target, flag)
	cms := c.Client.CoreV1().ConfigMaps(ns)
	patch := []byte(`{"data":{"FEATURE_NEW_PRICING":"true"}}`)
	if _, err := cms.Patch(context.Background(), "event-service-config", types.MergePatchType, patch, metav1.PatchOptions{}); err != nil {
		t.Fatal(err)
	}
	before, err := cms.Get(context.Background(), "event-service-config", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}

	const prefix = "autorollbackd incidents revert-flag: "
	for _, tc := range []struct{ name, id, want string }{
		{"no flag", noFlag.ID, prefix + "incident " + noFlag.ID + " turned no feature flag off: nothing to revert\n"},
		{"not applied", dryRun.ID, prefix + "incident " + dryRun.ID + " never applied its rollback of feature flag FEATURE_NEW_PRICING " +
			"in ConfigMap event-service-config: nothing to revert\n"},
		{"unknown incident", "no-such-incident", prefix + "read incident no-such-incident: no such incident\n"},
		{"changed since", changed.ID, prefix + "revert feature flag " + ns + "/event-service-config FEATURE_NEW_PRICING: workload changed since the decision: " +
			"FEATURE_NEW_PRICING is \"true\" since it was set to \"false\" for incident " + changed.Rollout + "\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, stdout, stderr := runCLI(t, nil, "incidents", "revert-flag", tc.id, "--kubeconfig", c.Kubeconfig, "--config", cfg)
			if code != 1 || stdout != "" || stderr != tc.want {
				t.Errorf("exit %d, stdout %q\nstderr %q\nwant   %q", code, stdout, stderr, tc.want)
			}
		})
	}
	// Their change stands.
	if after, err := cms.Get(context.Background(), "event-service-config", metav1.GetOptions{}); err != nil || after.ResourceVersion != before.ResourceVersion {
		t.Errorf("the refused revert wrote the ConfigMap (%v)", err)
	}
}

// findEvent returns the Event on event-service with message, or nil.
func findEvent(t *testing.T, c *testenv.Cluster, ns, message string) *corev1.Event {
	t.Helper()
	events, err := c.Client.CoreV1().Events(ns).List(context.Background(), metav1.ListOptions{FieldSelector: "involvedObject.name=event-service"})
	if err != nil {
		t.Fatal(err)
	}
	for i, ev := range events.Items {
		if ev.Message == message {
			return &events.Items[i]
		}
	}
	return nil
}
