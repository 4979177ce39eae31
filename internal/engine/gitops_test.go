package engine

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes/scheme"
	typedcorev1 "k8s.io/client-go/kubernetes/typed/core/v1"
	"k8s.io/client-go/tools/record"
	"k8s.io/utils/clock"
	"sigs.k8s.io/yaml"

	"github.com/autorollbackd/autorollbackd/internal/actuator"
	"github.com/autorollbackd/autorollbackd/internal/escalate"
	"github.com/autorollbackd/autorollbackd/internal/gitops"
	"github.com/autorollbackd/autorollbackd/internal/incident"
	"github.com/autorollbackd/autorollbackd/internal/kinds"
	"github.com/autorollbackd/autorollbackd/internal/policy"
	"github.com/autorollbackd/autorollbackd/internal/testenv"
	"github.com/autorollbackd/autorollbackd/internal/verify"
)

// withGitOps gives the engine a Pauser on the test cluster, whose resumer
// runs every 200ms.
func (f *fixture) withGitOps(t *testing.T, cfg policy.GitOps) setup {
	return func(_ *verify.Config, _ *escalate.Config, o *Options) {
		b := record.NewBroadcaster()
		b.StartRecordingToSink(&typedcorev1.EventSinkImpl{Interface: f.c.Client.CoreV1().Events("")})
		t.Cleanup(b.Shutdown)
		o.GitOps = &gitops.Pauser{
			Dynamic: f.c.Dynamic, Recorder: b.NewRecorder(scheme.Scheme, corev1.EventSource{Component: "autorollbackd"}),
			Logger: slog.New(slog.NewTextHandler(io.Discard, nil)), Clock: clock.RealClock{},
			Config: func() policy.GitOps { return cfg },
		}
		o.Resync = 200 * time.Millisecond
	}
}

func (f *fixture) createOwner(t *testing.T, gvr schema.GroupVersionResource, ns, manifest string) {
	t.Helper()
	u := &unstructured.Unstructured{}
	if err := yaml.Unmarshal([]byte(manifest), &u.Object); err != nil {
		t.Fatal(err)
	}
	if _, err := f.c.Dynamic.Resource(gvr).Namespace(ns).Create(context.Background(), u, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
}

func (f *fixture) owner(t *testing.T, gvr schema.GroupVersionResource, ns, name string) *unstructured.Unstructured {
	t.Helper()
	u, err := f.c.Dynamic.Resource(gvr).Namespace(ns).Get(context.Background(), name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return u
}

func (f *fixture) mergePatch(t *testing.T, gvr schema.GroupVersionResource, ns, name, patch string) {
	t.Helper()
	if _, err := f.c.Dynamic.Resource(gvr).Namespace(ns).Patch(context.Background(), name, types.MergePatchType, []byte(patch), metav1.PatchOptions{}); err != nil {
		t.Fatal(err)
	}
}

// annotateWorkload adds annotations to the fixture's Deployment without a
// rollout.
func (f *fixture) annotateWorkload(t *testing.T, key, value string) {
	t.Helper()
	patch := fmt.Sprintf(`{"metadata":{"annotations":{%q:%q}}}`, key, value)
	if _, err := f.c.Client.AppsV1().Deployments(f.ns).Patch(context.Background(), "event-service", types.MergePatchType, []byte(patch), metav1.PatchOptions{}); err != nil {
		t.Fatal(err)
	}
}

// gitopsRollback sends an alert and waits for the incident to resolve with
// one applied rollback that announces the pause.
func (f *fixture) gitopsRollback(t *testing.T, e *running, name string) *incident.Incident {
	t.Helper()
	n := firing(f.ns, name, time.Now(), map[string]string{"impact": "service_down"})
	if _, err := e.Accept(context.Background(), n); err != nil {
		t.Fatal(err)
	}
	inc := e.waitIncident(t, n, incident.StateResolved, incident.StateEscalated)
	if len(inc.Actions) != 1 || inc.Actions[0].Result == nil || inc.Actions[0].Result.Outcome != actuator.OutcomeApplied {
		t.Fatalf("actions = %+v; want one applied rollback\n%s", inc.Actions, inc.Render())
	}
	if image, _ := f.image(t); image != "event-service:v1" {
		t.Fatalf("image %s after the rollback; want event-service:v1", image)
	}
	if msg := inc.Actions[0].Result.Message; !strings.Contains(msg, "Git still points at the bad version") {
		t.Errorf("action message %q does not say Git still points at the bad version", msg)
	}
	if !strings.Contains(inc.Render(), "paused") {
		t.Errorf("timeline does not tell of the pause:\n%s", inc.Render())
	}
	testenv.Eventually(t, 30*time.Second, "announcement of the pause", func(context.Context) (bool, string) {
		for _, m := range e.messages.find("announce") {
			if strings.Contains(fmt.Sprint(m), "Git still points at the bad version") {
				return true, ""
			}
		}
		return false, fmt.Sprint(e.messages.find("announce"))
	})
	testenv.Eventually(t, 30*time.Second, "Event "+gitops.EventPaused+" on the workload", func(ctx context.Context) (bool, string) {
		evs, err := f.c.Client.CoreV1().Events(f.ns).List(ctx, metav1.ListOptions{FieldSelector: "reason=" + gitops.EventPaused})
		if err != nil {
			return false, err.Error()
		}
		return len(evs.Items) == 1 && evs.Items[0].InvolvedObject.Name == "event-service", fmt.Sprint(len(evs.Items))
	})
	return inc
}

func TestGitOpsPauseAndUndoArgoCD(t *testing.T) {
	f := newFixture(t, optedIn, nil)
	f.c.InstallCRDs(t, testenv.ArgoCD)
	argoNS := f.c.Namespace(t)
	f.createOwner(t, gitops.ApplicationGVR, argoNS, `
apiVersion: argoproj.io/v1alpha1
kind: Application
metadata: {name: events}
spec:
  project: default
  source: {repoURL: "https://git.example.invalid/events.git", path: deploy, targetRevision: HEAD}
  destination: {server: "https://kubernetes.default.svc", namespace: events}
  syncPolicy:
    automated: {prune: true, selfHeal: true}
status:
  sync: {status: Synced, revision: aaa111}
`)
	f.annotateWorkload(t, kinds.AnnotationArgoTrackingID, "events:apps/Deployment:"+f.ns+"/event-service")
	cfg := policy.DefaultConfig()
	cfg.GitOps = policy.GitOps{Mode: policy.GitOpsPauseAndUndo, ArgoCD: policy.ArgoCD{Namespace: argoNS}}
	e := f.startEngine(t, cfg, 1, f.withGitOps(t, cfg.GitOps))

	f.gitopsRollback(t, e, "argo-1")
	selfHeal := func() (bool, bool) {
		v, found, _ := unstructured.NestedBool(f.owner(t, gitops.ApplicationGVR, argoNS, "events").Object, "spec", "syncPolicy", "automated", "selfHeal")
		return v, found
	}
	if v, found := selfHeal(); v || !found {
		t.Fatalf("selfHeal %v (set %v) after the rollback; want false", v, found)
	}

	// Playing Argo CD: a fix is committed, automated sync follows it, and
	// the Application's revision changes.
	f.mergePatch(t, gitops.ApplicationGVR, argoNS, "events", `{"status":{"sync":{"status":"Synced","revision":"bbb222"}}}`)
	testenv.Eventually(t, 30*time.Second, "self-heal restored on the revision change", func(context.Context) (bool, string) {
		v, _ := selfHeal()
		_, paused := f.owner(t, gitops.ApplicationGVR, argoNS, "events").GetAnnotations()[kinds.AnnotationGitOpsPause]
		return v && !paused, fmt.Sprintf("selfHeal %v, record left %v", v, paused)
	})
}

func TestGitOpsPauseAndUndoFluxKustomization(t *testing.T) {
	f := newFixture(t, map[string]string{policy.DefaultOptInLabel: "true", kinds.LabelFluxKustomization: "apps"}, nil)
	f.c.InstallCRDs(t, testenv.Flux)
	fluxNS := f.c.Namespace(t)
	f.createOwner(t, gitops.KustomizationGVR, fluxNS, `
apiVersion: kustomize.toolkit.fluxcd.io/v1
kind: Kustomization
metadata: {name: apps}
spec:
  interval: 5m
  path: ./deploy
  prune: true
  sourceRef: {kind: GitRepository, name: apps}
`)
	if _, err := f.c.Client.AppsV1().Deployments(f.ns).Patch(context.Background(), "event-service", types.MergePatchType,
		fmt.Appendf(nil, `{"metadata":{"labels":{%q:%q}}}`, kinds.LabelFluxKustomizationNamespace, fluxNS), metav1.PatchOptions{}); err != nil {
		t.Fatal(err)
	}
	cfg := policy.DefaultConfig()
	cfg.GitOps.Mode = policy.GitOpsPauseAndUndo
	e := f.startEngine(t, cfg, 1, f.withGitOps(t, cfg.GitOps))

	f.gitopsRollback(t, e, "flux-1")
	suspended := func() bool {
		v, _, _ := unstructured.NestedBool(f.owner(t, gitops.KustomizationGVR, fluxNS, "apps").Object, "spec", "suspend")
		return v
	}
	if !suspended() {
		t.Fatal("Kustomization not suspended after the rollback")
	}

	// The operator resumes it.
	f.mergePatch(t, gitops.KustomizationGVR, fluxNS, "apps", fmt.Sprintf(`{"metadata":{"annotations":{%q:"true"}}}`, kinds.AnnotationGitOpsResume))
	testenv.Eventually(t, 30*time.Second, "Kustomization resumed on the operator's annotation", func(context.Context) (bool, string) {
		_, paused := f.owner(t, gitops.KustomizationGVR, fluxNS, "apps").GetAnnotations()[kinds.AnnotationGitOpsPause]
		return !suspended() && !paused, fmt.Sprintf("suspended %v, record left %v", suspended(), paused)
	})
}

// TestGitOpsPauseAndUndoFluxHelmRelease: a Deployment a HelmRelease
// installed is rolled back after the HelmRelease is suspended, and the
// HelmRelease is resumed when its chart's source has a new revision.
func TestGitOpsPauseAndUndoFluxHelmRelease(t *testing.T) {
	f := newFixture(t, map[string]string{policy.DefaultOptInLabel: "true", kinds.LabelFluxHelm: "events"}, nil)
	f.c.InstallCRDs(t, testenv.Flux)
	fluxNS := f.c.Namespace(t)
	ociRepositoryGVR := schema.GroupVersionResource{Group: "source.toolkit.fluxcd.io", Version: "v1", Resource: "ocirepositories"}
	f.createOwner(t, ociRepositoryGVR, fluxNS, `
apiVersion: source.toolkit.fluxcd.io/v1
kind: OCIRepository
metadata: {name: events-chart}
spec: {interval: 5m, url: "oci://registry.example.invalid/charts/events"}
`)
	// Playing source-controller: the chart's artifact.
	setArtifact := func(revision string) {
		t.Helper()
		src := f.owner(t, ociRepositoryGVR, fluxNS, "events-chart")
		src.Object["status"] = map[string]any{"artifact": map[string]any{
			"revision": revision, "digest": "sha256:0000000000000000000000000000000000000000000000000000000000000000",
			"path": "ocirepository/events-chart.tar.gz", "url": "http://source-controller.invalid/events-chart.tar.gz",
			"lastUpdateTime": "2026-12-03T04:00:00Z",
		}}
		if _, err := f.c.Dynamic.Resource(ociRepositoryGVR).Namespace(fluxNS).UpdateStatus(context.Background(), src, metav1.UpdateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	setArtifact("1.0.0@sha256:aaa111")
	f.createOwner(t, gitops.HelmReleaseGVR, fluxNS, `
apiVersion: helm.toolkit.fluxcd.io/v2
kind: HelmRelease
metadata: {name: events}
spec:
  interval: 5m
  chartRef: {kind: OCIRepository, name: events-chart}
`)
	if _, err := f.c.Client.AppsV1().Deployments(f.ns).Patch(context.Background(), "event-service", types.MergePatchType,
		fmt.Appendf(nil, `{"metadata":{"labels":{%q:%q}}}`, kinds.LabelFluxHelmNamespace, fluxNS), metav1.PatchOptions{}); err != nil {
		t.Fatal(err)
	}
	cfg := policy.DefaultConfig()
	cfg.GitOps.Mode = policy.GitOpsPauseAndUndo
	e := f.startEngine(t, cfg, 1, f.withGitOps(t, cfg.GitOps))

	inc := f.gitopsRollback(t, e, "flux-helm-1")
	if msg := inc.Actions[0].Result.Message; !strings.Contains(msg, "HelmRelease "+fluxNS+"/events paused (reconciliation is suspended)") {
		t.Errorf("action message %q does not name the suspended HelmRelease", msg)
	}
	suspended := func() (bool, bool) {
		hr := f.owner(t, gitops.HelmReleaseGVR, fluxNS, "events")
		v, _, _ := unstructured.NestedBool(hr.Object, "spec", "suspend")
		_, recorded := hr.GetAnnotations()[kinds.AnnotationGitOpsPause]
		return v, recorded
	}
	if v, recorded := suspended(); !v || !recorded {
		t.Fatalf("HelmRelease suspend %v, recorded %v after the rollback; want both", v, recorded)
	}

	// A fix is committed and its chart published: a new artifact revision.
	setArtifact("1.0.1@sha256:bbb222")
	testenv.Eventually(t, 30*time.Second, "HelmRelease resumed on the source revision change", func(context.Context) (bool, string) {
		v, recorded := suspended()
		return !v && !recorded, fmt.Sprintf("suspend %v, record left %v", v, recorded)
	})
}

func TestGitOpsPauseAndUndoEscalatesWithoutOwner(t *testing.T) {
	f := newFixture(t, optedIn, nil)
	f.c.InstallCRDs(t, testenv.ArgoCD)
	f.annotateWorkload(t, kinds.AnnotationArgoTrackingID, "events:apps/Deployment:"+f.ns+"/event-service")
	cfg := policy.DefaultConfig()
	cfg.GitOps = policy.GitOps{Mode: policy.GitOpsPauseAndUndo, ArgoCD: policy.ArgoCD{Namespace: f.ns}}
	e := f.startEngine(t, cfg, 1, f.withGitOps(t, cfg.GitOps))
	n := firing(f.ns, "argo-missing-1", time.Now(), map[string]string{"impact": "service_down"})
	if _, err := e.Accept(context.Background(), n); err != nil {
		t.Fatal(err)
	}
	inc := e.waitIncident(t, n, incident.StateEscalated)
	if len(inc.Actions) != 1 || inc.Actions[0].Reason != incident.RefusedPrefix+reasonGitOpsOwnerMissing ||
		!strings.Contains(inc.Actions[0].Error, "Application "+f.ns+"/events, which Deployment "+f.ns+"/event-service names, does not exist") {
		t.Fatalf("actions = %+v; want one refused %s\n%s", inc.Actions, reasonGitOpsOwnerMissing, inc.Render())
	}
	// Annotating the Deployment moved its generation; its image tells.
	if image, _ := f.image(t); image != "event-service:v2-bad" {
		t.Fatalf("the workload was rolled back to %s", image)
	}
}

// TestPauseGitOpsRefuses: at the time of the action, the policy in force
// decides: a GitOps-managed workload is refused when the mode is now
// escalate, and when there is no pauser; a workload no GitOps tool manages
// goes ahead without one.
func TestPauseGitOpsRefuses(t *testing.T) {
	managed := &policy.Workload{Ref: policy.Ref{Kind: policy.KindDeployment, Namespace: "shop", Name: "web"},
		Annotations: map[string]string{kinds.AnnotationArgoTrackingID: "web:apps/Deployment:shop/web"}}
	engineWith := func(mode policy.GitOpsMode) *Engine {
		cfg := policy.DefaultConfig()
		cfg.GitOps.Mode = mode
		p, err := policy.Compile(cfg)
		if err != nil {
			t.Fatal(err)
		}
		return &Engine{opts: Options{Policy: func() *policy.Policy { return p }}}
	}
	managed.GitOpsManager = "argocd"
	inc := &incident.Incident{Rollout: "r-1"}
	for _, tc := range []struct {
		name   string
		mode   policy.GitOpsMode
		w      *policy.Workload
		reason string
		msg    string
	}{
		{"mode changed to escalate", policy.GitOpsEscalate, managed, string(policy.ReasonGitOpsManaged), "managed by argocd, which would undo a rollback; revert in Git instead"},
		{"no pauser", policy.GitOpsPauseAndUndo, managed, string(policy.ReasonGitOpsManaged), "managed by argocd, and this daemon cannot pause it"},
		{"not managed", policy.GitOpsPauseAndUndo, &policy.Workload{Ref: managed.Ref}, "", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			pause, no, err := engineWith(tc.mode).pauseGitOps(context.Background(), inc, tc.w, false)
			if err != nil || pause != nil {
				t.Fatalf("pause %v, err %v", pause, err)
			}
			switch {
			case tc.reason == "" && no != nil:
				t.Fatalf("refused %+v; want no refusal", no)
			case tc.reason != "" && (no == nil || no.reason != tc.reason || no.message != tc.msg):
				t.Fatalf("refusal %+v; want %s: %s", no, tc.reason, tc.msg)
			}
		})
	}
}
