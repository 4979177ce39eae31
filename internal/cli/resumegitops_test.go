package cli

import (
	"context"
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/client-go/tools/record"
	"k8s.io/utils/clock"
	"sigs.k8s.io/yaml"

	"github.com/autorollbackd/autorollbackd/internal/gitops"
	"github.com/autorollbackd/autorollbackd/internal/incident"
	"github.com/autorollbackd/autorollbackd/internal/kinds"
	"github.com/autorollbackd/autorollbackd/internal/policy"
	"github.com/autorollbackd/autorollbackd/internal/testenv"
)

// TestResumeGitOps: `incidents resume-gitops ID` restores the self-heal of
// the Application paused before incident ID's rollback, and refuses once
// there is nothing of the daemon's to restore.
func TestResumeGitOps(t *testing.T) {
	c := testenv.Require(t)
	c.InstallCRDs(t, testenv.ArgoCD)
	ns, argoNS := c.Namespace(t), c.Namespace(t)
	ctx := context.Background()
	replicas := int32(1)
	d := &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: ns,
			Annotations: map[string]string{kinds.AnnotationArgoTrackingID: "web:apps/Deployment:" + ns + "/web"}},
		Spec: appsv1.DeploymentSpec{
			Replicas: &replicas,
			Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "web"}},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{"app": "web"}},
				Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "app", Image: "web:v1"}}},
			},
		},
	}
	if _, err := c.Client.AppsV1().Deployments(ns).Create(ctx, d, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	app := &unstructured.Unstructured{}
	if err := yaml.Unmarshal([]byte(`
apiVersion: argoproj.io/v1alpha1
kind: Application
metadata: {name: web}
spec:
  project: default
  source: {repoURL: "https://git.example.invalid/web.git", path: deploy, targetRevision: HEAD}
  destination: {server: "https://kubernetes.default.svc", namespace: web}
  syncPolicy: {automated: {selfHeal: true}}
`), &app.Object); err != nil {
		t.Fatal(err)
	}
	apps := c.Dynamic.Resource(gitops.ApplicationGVR).Namespace(argoNS)
	if _, err := apps.Create(ctx, app, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	gcfg := policy.GitOps{Mode: policy.GitOpsPauseAndUndo, ArgoCD: policy.ArgoCD{Namespace: argoNS}}
	target := policy.Ref{Kind: policy.KindDeployment, Namespace: ns, Name: "web"}
	p := &gitops.Pauser{Dynamic: c.Dynamic, Recorder: record.NewFakeRecorder(10), Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
		Clock: clock.RealClock{}, Config: func() policy.GitOps { return gcfg }}
	w := &policy.Workload{Ref: target, Annotations: d.Annotations}
	if _, err := p.Pause(ctx, w, "rollout-1", false); err != nil {
		t.Fatal(err)
	}
	start := time.Date(2026, 12, 3, 4, 0, 0, 0, time.UTC)
	inc := &incident.Incident{ID: incident.NewID(target, 2, start), Target: target, State: incident.StateResolved, StartedAt: start, Rollout: "rollout-1"}
	if _, err := (&incident.Store{Client: c.Client, Namespace: ns}).Create(ctx, inc); err != nil {
		t.Fatal(err)
	}
	cfg := writeFile(t, "engine:\n  namespace: "+ns+"\npolicy:\n  gitops:\n    mode: pause-and-undo\n    argocd:\n      namespace: "+argoNS+"\n")
	args := []string{"incidents", "--config", cfg, "--kubeconfig", c.Kubeconfig, "resume-gitops", inc.ID}

	code, stdout, stderr := execute(t, nil, args...)
	if code != ExitOK || stdout != "Application "+argoNS+"/web resumed\n" {
		t.Fatalf("exit code %d, stdout %q, stderr %q", code, stdout, stderr)
	}
	got, err := apps.Get(ctx, "web", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if v, _, _ := unstructured.NestedBool(got.Object, "spec", "syncPolicy", "automated", "selfHeal"); !v {
		t.Error("selfHeal not restored")
	}
	if _, found := got.GetAnnotations()[kinds.AnnotationGitOpsPause]; found {
		t.Error("record left on the Application")
	}

	code, _, stderr = execute(t, nil, args...)
	if code == ExitOK || !strings.Contains(stderr, "not paused by the daemon") {
		t.Fatalf("second resume: exit code %d, stderr %q; want a refusal", code, stderr)
	}
}
