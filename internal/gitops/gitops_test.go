package gitops_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/tools/record"
	clocktesting "k8s.io/utils/clock/testing"
	"sigs.k8s.io/yaml"

	"github.com/autorollbackd/autorollbackd/internal/gitops"
	"github.com/autorollbackd/autorollbackd/internal/kinds"
	"github.com/autorollbackd/autorollbackd/internal/policy"
	"github.com/autorollbackd/autorollbackd/internal/testenv"
)

func workload(labels, annotations map[string]string) *policy.Workload {
	return &policy.Workload{Ref: kinds.Ref{Kind: kinds.Kind("Deployment"), Namespace: "shop", Name: "web"}, Labels: labels, Annotations: annotations}
}

func TestFindOwner(t *testing.T) {
	cfg := policy.GitOps{Mode: policy.GitOpsPauseAndUndo, ArgoCD: policy.ArgoCD{Namespace: "argocd"}}
	for _, tc := range []struct {
		name        string
		labels, ann map[string]string
		trackLabel  string
		want        gitops.Owner
		err         string
	}{
		{name: "tracking id", ann: map[string]string{kinds.AnnotationArgoTrackingID: "web:apps/Deployment:shop/web"},
			want: gitops.Owner{Kind: "Application", Namespace: "argocd", Name: "web"}},
		{name: "tracking id, apps in any namespace", ann: map[string]string{kinds.AnnotationArgoTrackingID: "team-a_web:apps/Deployment:shop/web"},
			want: gitops.Owner{Kind: "Application", Namespace: "team-a", Name: "web"}},
		{name: "tracking id of another object", ann: map[string]string{kinds.AnnotationArgoTrackingID: "web:apps/Deployment:shop/api"},
			err: `annotation argocd.argoproj.io/tracking-id="web:apps/Deployment:shop/api" tracks apps/Deployment:shop/api, not this workload (apps/Deployment:shop/web)`},
		{name: "malformed tracking id", ann: map[string]string{kinds.AnnotationArgoTrackingID: "web"},
			err: `annotation argocd.argoproj.io/tracking-id="web" is not <app>:<group>/<kind>:<namespace>/<name>`},
		{name: "instance label", labels: map[string]string{kinds.LabelArgoInstance: "web"},
			want: gitops.Owner{Kind: "Application", Namespace: "argocd", Name: "web"}},
		{name: "configured tracking label", labels: map[string]string{"app.kubernetes.io/instance": "web-prod"}, trackLabel: "app.kubernetes.io/instance",
			want: gitops.Owner{Kind: "Application", Namespace: "argocd", Name: "web-prod"}},
		{name: "tracking label not configured", labels: map[string]string{"app.kubernetes.io/instance": "web-prod"},
			err: "no Argo CD tracking annotation or label, and no Flux label"},
		{name: "Flux Kustomization", labels: map[string]string{kinds.LabelFluxKustomization: "apps", kinds.LabelFluxKustomizationNamespace: "flux-system"},
			want: gitops.Owner{Kind: "Kustomization", Namespace: "flux-system", Name: "apps"}},
		{name: "Flux HelmRelease", labels: map[string]string{kinds.LabelFluxHelm: "web", kinds.LabelFluxHelmNamespace: "shop"},
			want: gitops.Owner{Kind: "HelmRelease", Namespace: "shop", Name: "web"}},
		{name: "Flux without namespace", labels: map[string]string{kinds.LabelFluxKustomization: "apps"},
			err: `label kustomize.toolkit.fluxcd.io/name="apps" without label kustomize.toolkit.fluxcd.io/namespace`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := cfg
			c.ArgoCD.TrackingLabel = tc.trackLabel
			got, err := gitops.FindOwner(workload(tc.labels, tc.ann), c)
			if tc.err != "" {
				if !errors.Is(err, gitops.ErrNoOwner) || !strings.HasSuffix(err.Error(), tc.err) {
					t.Fatalf("err %v; want ErrNoOwner ending %q", err, tc.err)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Fatalf("FindOwner = %v, %v; want %v", got, err, tc.want)
			}
		})
	}
}

// pauser returns a Pauser on the test cluster with the CRDs installed and an
// Argo CD namespace of its own.
func pauser(t *testing.T) (*gitops.Pauser, *testenv.Cluster, string, *record.FakeRecorder) {
	t.Helper()
	c := testenv.Require(t)
	c.InstallCRDs(t, testenv.ArgoCD|testenv.Flux)
	argoNS := c.Namespace(t)
	rec := record.NewFakeRecorder(100)
	return &gitops.Pauser{
		Dynamic: c.Dynamic, Recorder: rec, Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
		Clock: clocktesting.NewFakePassiveClock(time.Date(2026, 12, 3, 4, 0, 0, 0, time.UTC)),
		Config: func() policy.GitOps {
			return policy.GitOps{Mode: policy.GitOpsPauseAndUndo, ArgoCD: policy.ArgoCD{Namespace: argoNS}}
		},
	}, c, argoNS, rec
}

func create(t *testing.T, c *testenv.Cluster, gvr schema.GroupVersionResource, ns, manifest string) *unstructured.Unstructured {
	t.Helper()
	u := &unstructured.Unstructured{}
	if err := yaml.Unmarshal([]byte(manifest), &u.Object); err != nil {
		t.Fatal(err)
	}
	got, err := c.Dynamic.Resource(gvr).Namespace(ns).Create(context.Background(), u, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return got
}

func get(t *testing.T, c *testenv.Cluster, gvr schema.GroupVersionResource, ns, name string) *unstructured.Unstructured {
	t.Helper()
	got, err := c.Dynamic.Resource(gvr).Namespace(ns).Get(context.Background(), name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return got
}

// setStatus plays the controller's part: it writes the status Argo CD
// would. The Application CRD has no status subresource: Argo CD writes the
// status with the object.
func setStatus(t *testing.T, c *testenv.Cluster, gvr schema.GroupVersionResource, ns, name string, status map[string]any) {
	t.Helper()
	u := get(t, c, gvr, ns, name)
	u.Object["status"] = status
	if _, err := c.Dynamic.Resource(gvr).Namespace(ns).Update(context.Background(), u, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
}

const application = `
apiVersion: argoproj.io/v1alpha1
kind: Application
metadata: {name: web}
spec:
  project: default
  source: {repoURL: "https://git.example.invalid/web.git", path: deploy, targetRevision: HEAD}
  destination: {server: "https://kubernetes.default.svc", namespace: shop}
  syncPolicy:
    automated: {prune: true, selfHeal: true}
`

func TestPauseAndResumeApplication(t *testing.T) {
	p, c, argoNS, events := pauser(t)
	ctx := context.Background()
	create(t, c, gitops.ApplicationGVR, argoNS, application)
	setStatus(t, c, gitops.ApplicationGVR, argoNS, "web", map[string]any{"sync": map[string]any{"status": "Synced", "revision": "aaa111"}})
	w := workload(nil, map[string]string{kinds.AnnotationArgoTrackingID: "web:apps/Deployment:shop/web"})

	res, err := p.Pause(ctx, w, "inc-1", false)
	if err != nil || res.Resumed || res.Earlier {
		t.Fatalf("Pause = %+v, %v", res, err)
	}
	app := get(t, c, gitops.ApplicationGVR, argoNS, "web")
	if v, found, _ := unstructured.NestedBool(app.Object, "spec", "syncPolicy", "automated", "selfHeal"); !found || v {
		t.Fatalf("selfHeal %v (found %v) after the pause; want false", v, found)
	}
	if prune, _, _ := unstructured.NestedBool(app.Object, "spec", "syncPolicy", "automated", "prune"); !prune {
		t.Error("the pause changed automated.prune")
	}
	var rec gitops.Record
	if err := json.Unmarshal([]byte(app.GetAnnotations()[kinds.AnnotationGitOpsPause]), &rec); err != nil {
		t.Fatal(err)
	}
	if rec.Incident != "inc-1" || rec.Revision != "aaa111" || !rec.Automated || rec.SelfHeal == nil || !*rec.SelfHeal || app.GetLabels()[kinds.LabelGitOpsPaused] != "true" {
		t.Fatalf("record %+v, labels %v", rec, app.GetLabels())
	}
	if ev := <-events.Events; !strings.Contains(ev, gitops.EventPaused) || !strings.Contains(ev, "Git still points at the bad version") {
		t.Errorf("event %q", ev)
	}

	// A retry recognises its own pause and writes nothing.
	rv := app.GetResourceVersion()
	if res, err := p.Pause(ctx, w, "inc-1", false); err != nil || !res.Resumed {
		t.Fatalf("second Pause = %+v, %v; want Resumed", res, err)
	}
	if got := get(t, c, gitops.ApplicationGVR, argoNS, "web").GetResourceVersion(); got != rv {
		t.Errorf("second Pause wrote the Application: resourceVersion %s to %s", rv, got)
	}

	// The same revision is no reason to resume.
	p.ResumeDue(ctx)
	if _, found := get(t, c, gitops.ApplicationGVR, argoNS, "web").GetAnnotations()[kinds.AnnotationGitOpsPause]; !found {
		t.Fatal("resumed without a reason")
	}
	// Argo CD follows a fix committed to Git: the revision changes.
	setStatus(t, c, gitops.ApplicationGVR, argoNS, "web", map[string]any{"sync": map[string]any{"status": "Synced", "revision": "bbb222"}})
	p.ResumeDue(ctx)
	app = get(t, c, gitops.ApplicationGVR, argoNS, "web")
	if v, _, _ := unstructured.NestedBool(app.Object, "spec", "syncPolicy", "automated", "selfHeal"); !v {
		t.Error("selfHeal not restored to true")
	}
	if _, found := app.GetAnnotations()[kinds.AnnotationGitOpsPause]; found || app.GetLabels()[kinds.LabelGitOpsPaused] != "" {
		t.Errorf("record left: %v %v", app.GetAnnotations(), app.GetLabels())
	}
}

// TestResumeMultiSourceApplicationOnRevisionChange: an Application with
// several sources records their revisions in status.sync.revisions and
// leaves status.sync.revision empty; a new revision of any of them resumes
// it.
func TestResumeMultiSourceApplicationOnRevisionChange(t *testing.T) {
	p, c, argoNS, _ := pauser(t)
	ctx := context.Background()
	create(t, c, gitops.ApplicationGVR, argoNS, `
apiVersion: argoproj.io/v1alpha1
kind: Application
metadata: {name: web}
spec:
  project: default
  sources:
  - {repoURL: "https://git.example.invalid/web.git", path: deploy, targetRevision: HEAD}
  - {repoURL: "https://git.example.invalid/values.git", targetRevision: HEAD, ref: values}
  destination: {server: "https://kubernetes.default.svc", namespace: shop}
  syncPolicy:
    automated: {selfHeal: true}
`)
	setStatus(t, c, gitops.ApplicationGVR, argoNS, "web", map[string]any{"sync": map[string]any{"status": "Synced", "revisions": []any{"aaa111", "ccc333"}}})
	w := workload(map[string]string{kinds.LabelArgoInstance: "web"}, nil)
	res, err := p.Pause(ctx, w, "inc-1", false)
	if err != nil {
		t.Fatal(err)
	}
	if res.Record.Revision == "" {
		t.Fatal("no revision recorded at the pause: only an operator could resume it")
	}
	paused := func() bool {
		_, found := get(t, c, gitops.ApplicationGVR, argoNS, "web").GetAnnotations()[kinds.AnnotationGitOpsPause]
		return found
	}
	p.ResumeDue(ctx)
	if !paused() {
		t.Fatal("resumed without a new revision")
	}
	// A fix is committed to the values repository only.
	setStatus(t, c, gitops.ApplicationGVR, argoNS, "web", map[string]any{"sync": map[string]any{"status": "Synced", "revisions": []any{"aaa111", "ddd444"}}})
	p.ResumeDue(ctx)
	if paused() {
		t.Fatal("still paused after a source's revision changed")
	}
	app := get(t, c, gitops.ApplicationGVR, argoNS, "web")
	if v, _, _ := unstructured.NestedBool(app.Object, "spec", "syncPolicy", "automated", "selfHeal"); !v {
		t.Error("selfHeal not restored to true")
	}
}

func TestResumeApplicationWithoutSelfHealRemovesIt(t *testing.T) {
	p, c, argoNS, _ := pauser(t)
	ctx := context.Background()
	create(t, c, gitops.ApplicationGVR, argoNS, strings.Replace(application, "{prune: true, selfHeal: true}", "{prune: true}", 1))
	w := workload(map[string]string{kinds.LabelArgoInstance: "web"}, nil)
	if _, err := p.Pause(ctx, w, "inc-1", false); err != nil {
		t.Fatal(err)
	}
	if err := p.Resume(ctx, gitops.Owner{Kind: "Application", Namespace: argoNS, Name: "web"}, "test"); err != nil {
		t.Fatal(err)
	}
	automated, _, _ := unstructured.NestedMap(get(t, c, gitops.ApplicationGVR, argoNS, "web").Object, "spec", "syncPolicy", "automated")
	if _, found := automated["selfHeal"]; found || automated["prune"] != true {
		t.Errorf("automated after resume: %v; want prune only, as before", automated)
	}
}

const kustomization = `
apiVersion: kustomize.toolkit.fluxcd.io/v1
kind: Kustomization
metadata: {name: apps}
spec:
  interval: 5m
  path: ./deploy
  prune: true
  sourceRef: {kind: GitRepository, name: apps}
`

func TestPauseAndResumeKustomization(t *testing.T) {
	for _, tc := range []struct {
		name          string
		suspended     bool
		wantAfterStop bool
	}{
		{name: "suspended by the daemon is resumed", suspended: false, wantAfterStop: false},
		{name: "suspended before stays suspended", suspended: true, wantAfterStop: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p, c, _, _ := pauser(t)
			ctx := context.Background()
			ns := c.Namespace(t)
			m := kustomization
			if tc.suspended {
				m += "  suspend: true\n"
			}
			create(t, c, gitops.KustomizationGVR, ns, m)
			w := workload(map[string]string{kinds.LabelFluxKustomization: "apps", kinds.LabelFluxKustomizationNamespace: ns}, nil)
			if _, err := p.Pause(ctx, w, "inc-1", false); err != nil {
				t.Fatal(err)
			}
			if v, _, _ := unstructured.NestedBool(get(t, c, gitops.KustomizationGVR, ns, "apps").Object, "spec", "suspend"); !v {
				t.Fatal("not suspended after the pause")
			}
			// The operator asks for the resume.
			k := get(t, c, gitops.KustomizationGVR, ns, "apps")
			ann := k.GetAnnotations()
			ann[kinds.AnnotationGitOpsResume] = "true"
			k.SetAnnotations(ann)
			if _, err := c.Dynamic.Resource(gitops.KustomizationGVR).Namespace(ns).Update(ctx, k, metav1.UpdateOptions{}); err != nil {
				t.Fatal(err)
			}
			p.ResumeDue(ctx)
			k = get(t, c, gitops.KustomizationGVR, ns, "apps")
			if v, _, _ := unstructured.NestedBool(k.Object, "spec", "suspend"); v != tc.wantAfterStop {
				t.Errorf("suspend %v after resume; want %v", v, tc.wantAfterStop)
			}
			for _, key := range []string{kinds.AnnotationGitOpsPause, kinds.AnnotationGitOpsResume} {
				if _, found := k.GetAnnotations()[key]; found {
					t.Errorf("annotation %s left", key)
				}
			}
		})
	}
}

func TestPauseOwnerMissing(t *testing.T) {
	p, _, _, _ := pauser(t)
	w := workload(map[string]string{kinds.LabelFluxHelm: "web", kinds.LabelFluxHelmNamespace: "nowhere"}, nil)
	_, err := p.Pause(context.Background(), w, "inc-1", false)
	if !errors.Is(err, gitops.ErrNoOwner) || !strings.Contains(err.Error(), "HelmRelease nowhere/web, which Deployment shop/web names, does not exist") {
		t.Fatalf("err %v", err)
	}
}

var (
	gitRepositoryGVR = schema.GroupVersionResource{Group: "source.toolkit.fluxcd.io", Version: "v1", Resource: "gitrepositories"}
	ociRepositoryGVR = schema.GroupVersionResource{Group: "source.toolkit.fluxcd.io", Version: "v1", Resource: "ocirepositories"}
	helmChartGVR     = schema.GroupVersionResource{Group: "source.toolkit.fluxcd.io", Version: "v1", Resource: "helmcharts"}
)

// setArtifactRevision plays source-controller: it writes the revision of a
// source's artifact to its status subresource.
func setArtifactRevision(t *testing.T, c *testenv.Cluster, gvr schema.GroupVersionResource, ns, name, revision string) {
	t.Helper()
	u := get(t, c, gvr, ns, name)
	u.Object["status"] = map[string]any{"artifact": map[string]any{
		"revision": revision, "digest": "sha256:0000000000000000000000000000000000000000000000000000000000000000",
		"path": "source/" + name + ".tar.gz", "url": "http://source-controller.invalid/" + name + ".tar.gz",
		"lastUpdateTime": "2026-12-03T04:00:00Z",
	}}
	if _, err := c.Dynamic.Resource(gvr).Namespace(ns).UpdateStatus(context.Background(), u, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
}

// TestResumeFluxOnSourceRevisionChange: a suspended Kustomization or
// HelmRelease is resumed when the artifact revision of its source moves
// (a fix committed), and not before.
func TestResumeFluxOnSourceRevisionChange(t *testing.T) {
	for _, tc := range []struct {
		name      string
		owner     schema.GroupVersionResource
		ownerName string
		label     [2]string // the workload's name and namespace labels
		// manifest of the owner, with $SOURCE_NS for the source's namespace.
		manifest  string
		source    schema.GroupVersionResource
		srcName   func(ns string) string
		srcObject string // with %[1]s for its name
	}{
		{
			name: "Kustomization, its GitRepository", owner: gitops.KustomizationGVR, ownerName: "apps",
			label:    [2]string{kinds.LabelFluxKustomization, kinds.LabelFluxKustomizationNamespace},
			manifest: kustomization, source: gitRepositoryGVR, srcName: func(string) string { return "apps" },
			srcObject: `{apiVersion: source.toolkit.fluxcd.io/v1, kind: GitRepository, metadata: {name: "%[1]s"}, spec: {interval: 5m, url: "https://git.example.invalid/apps.git"}}`,
		},
		{
			name: "HelmRelease, its chartRef OCIRepository in another namespace", owner: gitops.HelmReleaseGVR, ownerName: "web",
			label: [2]string{kinds.LabelFluxHelm, kinds.LabelFluxHelmNamespace},
			manifest: `{apiVersion: helm.toolkit.fluxcd.io/v2, kind: HelmRelease, metadata: {name: web},
  spec: {interval: 5m, chartRef: {kind: OCIRepository, name: web-chart, namespace: "$SOURCE_NS"}}}`,
			source: ociRepositoryGVR, srcName: func(string) string { return "web-chart" },
			srcObject: `{apiVersion: source.toolkit.fluxcd.io/v1, kind: OCIRepository, metadata: {name: "%[1]s"}, spec: {interval: 5m, url: "oci://registry.example.invalid/charts/web"}}`,
		},
		{
			name: "HelmRelease, the HelmChart made for its spec.chart", owner: gitops.HelmReleaseGVR, ownerName: "web",
			label: [2]string{kinds.LabelFluxHelm, kinds.LabelFluxHelmNamespace},
			manifest: `{apiVersion: helm.toolkit.fluxcd.io/v2, kind: HelmRelease, metadata: {name: web},
  spec: {interval: 5m, chart: {spec: {chart: web, sourceRef: {kind: HelmRepository, name: charts, namespace: "$SOURCE_NS"}}}}}`,
			// helm-controller names it <namespace>-<name> of the HelmRelease.
			source: helmChartGVR, srcName: func(ownerNS string) string { return ownerNS + "-web" },
			srcObject: `{apiVersion: source.toolkit.fluxcd.io/v1, kind: HelmChart, metadata: {name: "%[1]s"}, spec: {interval: 5m, chart: web, sourceRef: {kind: HelmRepository, name: charts}}}`,
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p, c, _, _ := pauser(t)
			ctx := context.Background()
			ns, srcNS := c.Namespace(t), c.Namespace(t)
			if tc.source == gitRepositoryGVR {
				srcNS = ns // a sourceRef without a namespace is in the Kustomization's
			}
			src := tc.srcName(ns)
			create(t, c, tc.source, srcNS, fmt.Sprintf(tc.srcObject, src))
			setArtifactRevision(t, c, tc.source, srcNS, src, "main@sha1:aaa111")
			create(t, c, tc.owner, ns, strings.ReplaceAll(tc.manifest, "$SOURCE_NS", srcNS))
			suspended := func() (bool, bool) {
				o := get(t, c, tc.owner, ns, tc.ownerName)
				v, _, _ := unstructured.NestedBool(o.Object, "spec", "suspend")
				_, recorded := o.GetAnnotations()[kinds.AnnotationGitOpsPause]
				return v, recorded
			}

			w := workload(map[string]string{tc.label[0]: tc.ownerName, tc.label[1]: ns}, nil)
			res, err := p.Pause(ctx, w, "inc-1", false)
			if err != nil {
				t.Fatal(err)
			}
			if res.Record.Revision != "main@sha1:aaa111" {
				t.Fatalf("recorded revision %q; want the source's main@sha1:aaa111", res.Record.Revision)
			}
			if v, recorded := suspended(); !v || !recorded {
				t.Fatalf("suspend %v, recorded %v after the pause", v, recorded)
			}

			p.ResumeDue(ctx)
			if v, recorded := suspended(); !v || !recorded {
				t.Fatalf("resumed without a new revision: suspend %v, recorded %v", v, recorded)
			}

			// A fix is committed: source-controller makes a new artifact.
			setArtifactRevision(t, c, tc.source, srcNS, src, "main@sha1:bbb222")
			p.ResumeDue(ctx)
			if v, recorded := suspended(); v || recorded {
				t.Fatalf("after the revision change: suspend %v, record left %v; want resumed", v, recorded)
			}
		})
	}
}

// TestNoRevisionAtThePauseResumesOnlyOnTheOperatorsWord: when the source
// cannot be read at the pause, no revision is recorded, and one that can
// be read later is no change: it may well be the bad version's.
func TestNoRevisionAtThePauseResumesOnlyOnTheOperatorsWord(t *testing.T) {
	p, c, _, _ := pauser(t)
	ctx := context.Background()
	ns := c.Namespace(t)
	create(t, c, gitops.KustomizationGVR, ns, kustomization)
	w := workload(map[string]string{kinds.LabelFluxKustomization: "apps", kinds.LabelFluxKustomizationNamespace: ns}, nil)
	res, err := p.Pause(ctx, w, "inc-1", false)
	if err != nil {
		t.Fatal(err)
	}
	if res.Record.Revision != "" {
		t.Fatalf("recorded revision %q of a source that does not exist", res.Record.Revision)
	}
	// The source appears (or could not be read for a moment), at the
	// revision that was deployed all along.
	create(t, c, gitRepositoryGVR, ns, `{apiVersion: source.toolkit.fluxcd.io/v1, kind: GitRepository, metadata: {name: apps}, spec: {interval: 5m, url: "https://git.example.invalid/apps.git"}}`)
	setArtifactRevision(t, c, gitRepositoryGVR, ns, "apps", "main@sha1:aaa111")
	p.ResumeDue(ctx)
	k := get(t, c, gitops.KustomizationGVR, ns, "apps")
	if v, _, _ := unstructured.NestedBool(k.Object, "spec", "suspend"); !v {
		t.Fatal("resumed when the source became readable; want suspended until the operator resumes it")
	}
	ann := k.GetAnnotations()
	ann[kinds.AnnotationGitOpsResume] = "true"
	k.SetAnnotations(ann)
	if _, err := c.Dynamic.Resource(gitops.KustomizationGVR).Namespace(ns).Update(ctx, k, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	p.ResumeDue(ctx)
	if v, _, _ := unstructured.NestedBool(get(t, c, gitops.KustomizationGVR, ns, "apps").Object, "spec", "suspend"); v {
		t.Fatal("not resumed on the operator's annotation")
	}
}
