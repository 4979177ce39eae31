package testenv

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/yaml"
)

// CRDSet selects deploy tools whose CustomResourceDefinitions InstallCRDs
// installs; combine them with |.
type CRDSet uint

const (
	// ArgoRollouts is Argo Rollouts' rollouts, analysisruns,
	// analysistemplates, clusteranalysistemplates and experiments
	// (argoproj.io).
	ArgoRollouts CRDSet = 1 << iota
	// ArgoCD is Argo CD's applications and appprojects (argoproj.io).
	ArgoCD
	// Flux is Flux's kustomizations (kustomize.toolkit.fluxcd.io),
	// helmreleases (helm.toolkit.fluxcd.io) and their sources:
	// gitrepositories, ocirepositories, buckets and helmcharts
	// (source.toolkit.fluxcd.io).
	Flux
)

// crdDirs maps each set to its directory under CRDDir, as hack/testenv.sh
// fills it.
var crdDirs = []struct {
	set CRDSet
	dir string
}{{ArgoRollouts, "argo-rollouts"}, {ArgoCD, "argo-cd"}, {Flux, "flux"}, {Flux, "flux-source"}}

var crdGVR = schema.GroupVersionResource{Group: "apiextensions.k8s.io", Version: "v1", Resource: "customresourcedefinitions"}

// ArgoRolloutsNamespace is where the Argo Rollouts controller keeps its
// leader-election Lease.
const ArgoRolloutsNamespace = "argo-rollouts"

// rolloutsLease is the controller's Lease name without an instance ID.
const rolloutsLease = "argo-rollouts-controller-lock"

// CRDDir returns the directory holding the deploy tools' CRD manifests: crds
// beside the bin directory (hack/testenv.sh --print-crds).
func CRDDir() (string, error) {
	bin, err := BinDir()
	if err != nil {
		return "", err
	}
	return filepath.Join(filepath.Dir(bin), "crds"), nil
}

// notBuilt ends t because a part of the test environment is not there: it
// fails under CI=true, where make testenv has run and nothing may be missing,
// and skips elsewhere, saying what is missing.
func notBuilt(t testing.TB, format string, args ...any) {
	t.Helper()
	msg := fmt.Sprintf(format, args...) + "; run make testenv"
	if os.Getenv("CI") == "true" {
		t.Fatal(msg)
	}
	t.Skip(msg)
}

// InstallCRDs installs the CRDs of sets into the cluster by server-side apply
// and waits until each is Established. Installing again is harmless; the CRDs
// stay for the rest of the test binary, as other tests may be using them.
func (c *Cluster) InstallCRDs(t testing.TB, sets CRDSet) {
	t.Helper()
	if sets == 0 || sets&^(ArgoRollouts|ArgoCD|Flux) != 0 {
		t.Fatalf("InstallCRDs: unknown CRD set %b", sets)
	}
	dir, err := CRDDir()
	if err != nil {
		t.Fatalf("locate the CRD manifests: %v", err)
	}
	var files []string
	for _, d := range crdDirs {
		if sets&d.set == 0 {
			continue
		}
		found, err := filepath.Glob(filepath.Join(dir, d.dir, "*.yaml"))
		if err != nil || len(found) == 0 {
			notBuilt(t, "no %s CRDs in %s", d.dir, filepath.Join(dir, d.dir))
		}
		files = append(files, found...)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var names []string
	for _, f := range files {
		n, err := c.applyCRDs(ctx, f)
		if err != nil {
			t.Fatal(err)
		}
		names = append(names, n...)
	}
	for _, name := range names {
		Eventually(t, time.Minute, "CRD "+name+" Established", func(ctx context.Context) (bool, string) {
			return c.crdEstablished(ctx, name)
		})
	}
}

// applyCRDs applies each CustomResourceDefinition in the YAML file and
// returns their names.
func (c *Cluster) applyCRDs(ctx context.Context, file string) ([]string, error) {
	raw, err := os.ReadFile(file)
	if err != nil {
		return nil, fmt.Errorf("read CRD manifest: %w", err)
	}
	var names []string
	r := utilyaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(raw)))
	for {
		doc, err := r.Read()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("read %s: %w", file, err)
		}
		body, err := yaml.YAMLToJSON(doc)
		if err != nil {
			return nil, fmt.Errorf("read %s: %w", file, err)
		}
		if string(body) == "null" {
			continue
		}
		var head struct {
			Kind     string `json:"kind"`
			Metadata struct {
				Name string `json:"name"`
			} `json:"metadata"`
		}
		if err := yaml.Unmarshal(body, &head); err != nil {
			return nil, fmt.Errorf("read %s: %w", file, err)
		}
		if head.Kind != "CustomResourceDefinition" || head.Metadata.Name == "" {
			return nil, fmt.Errorf("%s holds a %q named %q, not a CustomResourceDefinition", file, head.Kind, head.Metadata.Name)
		}
		// Server-side: the largest of these CRDs do not fit in the
		// last-applied annotation a client-side apply writes.
		force := true
		_, err = c.Dynamic.Resource(crdGVR).Patch(ctx, head.Metadata.Name, types.ApplyPatchType, body,
			metav1.PatchOptions{FieldManager: "autorollbackd-testenv", Force: &force})
		if err != nil {
			return nil, fmt.Errorf("apply CRD %s from %s: %w", head.Metadata.Name, file, err)
		}
		names = append(names, head.Metadata.Name)
	}
	return names, nil
}

func (c *Cluster) crdEstablished(ctx context.Context, name string) (bool, string) {
	crd, err := c.Dynamic.Resource(crdGVR).Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		return false, err.Error()
	}
	conds, _, _ := unstructured.NestedSlice(crd.Object, "status", "conditions")
	var seen []string
	for _, cond := range conds {
		m, _ := cond.(map[string]any)
		seen = append(seen, fmt.Sprintf("%v=%v", m["type"], m["status"]))
		if m["type"] == "Established" && m["status"] == "True" {
			return true, ""
		}
	}
	sort.Strings(seen)
	return false, "conditions " + strings.Join(seen, ", ")
}

// StartArgoRollouts installs the Argo Rollouts CRDs and runs the test
// environment's rollouts-controller against the cluster, for all namespaces,
// until t ends. It returns once the controller leads and has started its
// workers. Run one at a time per cluster: a second one would wait for the
// first's Lease.
func (c *Cluster) StartArgoRollouts(t testing.TB) *Process {
	t.Helper()
	bin := filepath.Join(c.BinDir, "rollouts-controller")
	if _, err := os.Stat(bin); err != nil {
		notBuilt(t, "no Argo Rollouts controller: %v", err)
	}
	c.InstallCRDs(t, ArgoRollouts)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	_, err := c.Client.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{
		ObjectMeta: metav1.ObjectMeta{Name: ArgoRolloutsNamespace},
	}, metav1.CreateOptions{})
	if err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatalf("create namespace %s for the Argo Rollouts controller: %v", ArgoRolloutsNamespace, err)
	}
	healthz, err := FreeAddr()
	if err != nil {
		t.Fatal(err)
	}
	metrics, err := FreeAddr()
	if err != nil {
		t.Fatal(err)
	}
	_, healthzPort, _ := net.SplitHostPort(healthz)
	_, metricsPort, _ := net.SplitHostPort(metrics)
	p, err := StartProcess(ctx, "rollouts-controller", healthz, "/healthz", bin,
		"--kubeconfig", c.Kubeconfig, "--namespaced=false",
		"--healthzPort", healthzPort, "--metricsPort", metricsPort)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		p.Stop()
		if t.Failed() {
			t.Logf("rollouts-controller output:\n%s", tail(p.Output(), 8192))
		}
		// The controller does not release its Lease when it stops; without
		// this, the next one would wait out the lease duration.
		err := c.Client.CoordinationV1().Leases(ArgoRolloutsNamespace).Delete(context.Background(), rolloutsLease, metav1.DeleteOptions{})
		if err != nil && !apierrors.IsNotFound(err) {
			t.Errorf("delete the Argo Rollouts controller's Lease: %v", err)
		}
	})
	// Its health endpoint answers before it leads or its caches are synced.
	Eventually(t, 2*time.Minute, "rollouts-controller started", func(context.Context) (bool, string) {
		if p.Exited() {
			t.Fatalf("rollouts-controller exited:\n%s", tail(p.Output(), 8192))
		}
		return strings.Contains(p.Output(), "Started controller"), tail(p.Output(), 1024)
	})
	return p
}

func tail(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return "..." + s[len(s)-n:]
}
