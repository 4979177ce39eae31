package testenv_test

import (
	"context"
	"fmt"
	"os"
	"sort"
	"strings"
	"testing"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/yaml"

	"github.com/autorollbackd/autorollbackd/internal/testenv"
)

func TestMain(m *testing.M) { os.Exit(testenv.Run(m)) }

var (
	rolloutGVR       = schema.GroupVersionResource{Group: "argoproj.io", Version: "v1alpha1", Resource: "rollouts"}
	applicationGVR   = schema.GroupVersionResource{Group: "argoproj.io", Version: "v1alpha1", Resource: "applications"}
	kustomizationGVR = schema.GroupVersionResource{Group: "kustomize.toolkit.fluxcd.io", Version: "v1", Resource: "kustomizations"}
	helmReleaseGVR   = schema.GroupVersionResource{Group: "helm.toolkit.fluxcd.io", Version: "v2", Resource: "helmreleases"}
	crdGVR           = schema.GroupVersionResource{Group: "apiextensions.k8s.io", Version: "v1", Resource: "customresourcedefinitions"}
)

func object(t *testing.T, manifest string) *unstructured.Unstructured {
	t.Helper()
	body, err := yaml.YAMLToJSON([]byte(manifest))
	if err != nil {
		t.Fatalf("parse manifest: %v\n%s", err, manifest)
	}
	u := &unstructured.Unstructured{}
	if err := u.UnmarshalJSON(body); err != nil {
		t.Fatalf("parse manifest: %v\n%s", err, manifest)
	}
	return u
}

const rolloutManifest = `
apiVersion: argoproj.io/v1alpha1
kind: Rollout
metadata: {name: web}
spec:
  replicas: 3
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers: [{name: app, image: "web:v1"}]
  strategy:
    canary:
      steps: [{setWeight: 50}, {pause: {}}]
`

func TestInstallCRDs(t *testing.T) {
	c := testenv.Require(t)
	c.InstallCRDs(t, testenv.ArgoRollouts|testenv.ArgoCD|testenv.Flux)
	ctx := context.Background()

	list, err := c.Dynamic.Resource(crdGVR).List(ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatalf("list CRDs: %v", err)
	}
	var names []string
	for _, crd := range list.Items {
		names = append(names, crd.GetName())
	}
	sort.Strings(names)
	want := []string{
		"analysisruns.argoproj.io", "analysistemplates.argoproj.io", "applications.argoproj.io",
		"appprojects.argoproj.io", "buckets.source.toolkit.fluxcd.io", "clusteranalysistemplates.argoproj.io",
		"experiments.argoproj.io", "gitrepositories.source.toolkit.fluxcd.io", "helmcharts.source.toolkit.fluxcd.io",
		"helmreleases.helm.toolkit.fluxcd.io", "kustomizations.kustomize.toolkit.fluxcd.io", "ocirepositories.source.toolkit.fluxcd.io",
		"rollouts.argoproj.io",
	}
	if strings.Join(names, " ") != strings.Join(want, " ") {
		t.Errorf("CRDs in the cluster:\n %v\nwant\n %v", names, want)
	}

	ns := c.Namespace(t)
	// Each kind: a minimal object is stored, and one that breaks the CRD's
	// schema is refused, which shows the real schema is installed.
	for _, tc := range []struct {
		kind    string
		gvr     schema.GroupVersionResource
		valid   string
		invalid string
		refusal string
	}{{
		kind:    "Rollout",
		gvr:     rolloutGVR,
		valid:   rolloutManifest,
		invalid: `{apiVersion: argoproj.io/v1alpha1, kind: Rollout, metadata: {name: bad}, spec: {replicas: three}}`,
		refusal: `spec.replicas: Invalid value: "string"`,
	}, {
		kind: "Application",
		gvr:  applicationGVR,
		valid: `
apiVersion: argoproj.io/v1alpha1
kind: Application
metadata: {name: web}
spec:
  project: default
  source: {repoURL: "https://git.example.invalid/web.git", path: deploy, targetRevision: HEAD}
  destination: {server: "https://kubernetes.default.svc", namespace: web}
`,
		invalid: `{apiVersion: argoproj.io/v1alpha1, kind: Application, metadata: {name: bad}, spec: {project: default}}`,
		refusal: `spec.destination: Required value`,
	}, {
		kind: "Kustomization",
		gvr:  kustomizationGVR,
		valid: `
apiVersion: kustomize.toolkit.fluxcd.io/v1
kind: Kustomization
metadata: {name: web}
spec:
  interval: 5m
  path: ./deploy
  prune: true
  sourceRef: {kind: GitRepository, name: web}
`,
		invalid: `{apiVersion: kustomize.toolkit.fluxcd.io/v1, kind: Kustomization, metadata: {name: bad}, spec: {interval: 5m, prune: true}}`,
		refusal: `spec.sourceRef: Required value`,
	}, {
		kind: "HelmRelease",
		gvr:  helmReleaseGVR,
		valid: `
apiVersion: helm.toolkit.fluxcd.io/v2
kind: HelmRelease
metadata: {name: web}
spec:
  interval: 5m
  chart:
    spec:
      chart: web
      sourceRef: {kind: HelmRepository, name: charts}
`,
		invalid: `{apiVersion: helm.toolkit.fluxcd.io/v2, kind: HelmRelease, metadata: {name: bad}, spec: {chart: {spec: {chart: web, sourceRef: {kind: HelmRepository, name: charts}}}}}`,
		refusal: `spec.interval: Required value`,
	}} {
		t.Run(tc.kind, func(t *testing.T) {
			res := c.Dynamic.Resource(tc.gvr).Namespace(ns)
			if _, err := res.Create(ctx, object(t, tc.valid), metav1.CreateOptions{}); err != nil {
				t.Fatalf("create a minimal %s: %v", tc.kind, err)
			}
			got, err := res.Get(ctx, "web", metav1.GetOptions{})
			if err != nil {
				t.Fatalf("read the %s back: %v", tc.kind, err)
			}
			if got.GetKind() != tc.kind || got.GetUID() == "" {
				t.Errorf("read back kind %q uid %q", got.GetKind(), got.GetUID())
			}
			_, err = res.Create(ctx, object(t, tc.invalid), metav1.CreateOptions{})
			if !apierrors.IsInvalid(err) || !strings.Contains(err.Error(), tc.refusal) {
				t.Errorf("create an invalid %s: %v; want Invalid with %q", tc.kind, err, tc.refusal)
			}
		})
	}
}

// rolloutState is what the canary test reads of a Rollout and its
// ReplicaSets.
type rolloutState struct {
	phase     string
	step      int64
	available int64
	stable    string
	current   string
	// replicas by pod-template hash, of ReplicaSets that have any.
	replicas map[string]int64
	ready    map[string]int64
}

func (s rolloutState) String() string {
	return fmt.Sprintf("phase %q step %d available %d stableRS %q currentPodHash %q ReplicaSets %v ready %v",
		s.phase, s.step, s.available, s.stable, s.current, s.replicas, s.ready)
}

func readRollout(ctx context.Context, c *testenv.Cluster, ns, name string) (rolloutState, error) {
	ro, err := c.Dynamic.Resource(rolloutGVR).Namespace(ns).Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		return rolloutState{}, err
	}
	var s rolloutState
	s.phase, _, _ = unstructured.NestedString(ro.Object, "status", "phase")
	s.step, _, _ = unstructured.NestedInt64(ro.Object, "status", "currentStepIndex")
	s.available, _, _ = unstructured.NestedInt64(ro.Object, "status", "availableReplicas")
	s.stable, _, _ = unstructured.NestedString(ro.Object, "status", "stableRS")
	s.current, _, _ = unstructured.NestedString(ro.Object, "status", "currentPodHash")
	rss, err := c.Client.AppsV1().ReplicaSets(ns).List(ctx, metav1.ListOptions{})
	if err != nil {
		return s, err
	}
	s.replicas, s.ready = map[string]int64{}, map[string]int64{}
	for _, rs := range rss.Items {
		owner := metav1.GetControllerOf(&rs)
		if owner == nil || owner.UID != ro.GetUID() || rs.Spec.Replicas == nil || *rs.Spec.Replicas == 0 {
			continue
		}
		hash := rs.Labels["rollouts-pod-template-hash"]
		s.replicas[hash] = int64(*rs.Spec.Replicas)
		s.ready[hash] = int64(rs.Status.ReadyReplicas)
	}
	return s, nil
}

func TestArgoRolloutsCanaryPausesAtSecondStep(t *testing.T) {
	c := testenv.Require(t)
	c.StartArgoRollouts(t)
	ns := c.Namespace(t)
	ctx := context.Background()
	rollouts := c.Dynamic.Resource(rolloutGVR).Namespace(ns)
	if _, err := rollouts.Create(ctx, object(t, rolloutManifest), metav1.CreateOptions{}); err != nil {
		t.Fatalf("create Rollout: %v", err)
	}

	var first rolloutState
	testenv.Eventually(t, 2*time.Minute, "Rollout web Healthy with 3 available replicas", func(ctx context.Context) (bool, string) {
		s, err := readRollout(ctx, c, ns, "web")
		if err != nil {
			return false, err.Error()
		}
		first = s
		return s.phase == "Healthy" && s.available == 3 && s.stable != "" &&
			len(s.replicas) == 1 && s.replicas[s.stable] == 3 && s.ready[s.stable] == 3, s.String()
	})
	t.Logf("before the change: %s", first)

	patch := []byte(`{"spec":{"template":{"spec":{"containers":[{"name":"app","image":"web:v2"}]}}}}`)
	if _, err := rollouts.Patch(ctx, "web", types.MergePatchType, patch, metav1.PatchOptions{}); err != nil {
		t.Fatalf("change the Rollout's image: %v", err)
	}
	var paused rolloutState
	testenv.Eventually(t, 2*time.Minute, "canary paused at step 1 beside the stable ReplicaSet", func(ctx context.Context) (bool, string) {
		s, err := readRollout(ctx, c, ns, "web")
		if err != nil {
			return false, err.Error()
		}
		paused = s
		canary := s.current
		return s.phase == "Paused" && s.step == 1 && s.stable == first.stable && canary != first.stable &&
			len(s.replicas) == 2 && s.replicas[s.stable] > 0 && s.replicas[canary] > 0 &&
			s.ready[canary] == s.replicas[canary], s.String()
	})
	t.Logf("after the change: %s", paused)
}
