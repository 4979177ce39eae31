package chart

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/yaml"

	"github.com/autorollbackd/autorollbackd/internal/testenv"
)

func TestMain(m *testing.M) { os.Exit(testenv.Run(m)) }

// chartDir is the chart under test, from this package's directory.
var chartDir = filepath.Join("..", "..", "charts", "autorollbackd")

// tool returns the path of a test environment binary (helm, promtool). A
// missing binary fails the test; only under -short is it skipped.
func tool(t testing.TB, name string) string {
	t.Helper()
	dir, err := testenv.BinDir()
	if err == nil {
		path := filepath.Join(dir, name)
		if _, err = os.Stat(path); err == nil {
			return path
		}
	}
	if testing.Short() {
		t.Skipf("%s unavailable (%v); skipped in -short mode", name, err)
	}
	t.Fatalf("%s unavailable (run make testenv): %v", name, err)
	return ""
}

// run runs a binary with a deadline and returns its combined output.
func run(t testing.TB, timeout time.Duration, env []string, bin string, args ...string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Env = append(os.Environ(), env...)
	out, err := cmd.CombinedOutput()
	if ctx.Err() != nil {
		err = errors.Join(err, ctx.Err())
	}
	return string(out), err
}

// minKubeVersion is the oldest Kubernetes the chart supports (its
// Chart.yaml kubeVersion), and the version offline renders assume.
const minKubeVersion = "1.27.0"

// helm runs helm with its configuration, cache and data directories in a
// temporary directory, so that the tests never read or write ~/.config/helm.
// Offline renders (template, lint) assume minKubeVersion unless args name a
// --kube-version: a helm built with `go install`, as the test environment's
// is, assumes v1.20 (release builds stamp their client-go's version in),
// which the chart's kubeVersion refuses.
func helm(t testing.TB, timeout time.Duration, args ...string) (string, error) {
	t.Helper()
	if len(args) > 0 && (args[0] == "template" || args[0] == "lint") &&
		!slices.ContainsFunc(args, func(a string) bool { return strings.HasPrefix(a, "--kube-version") }) {
		args = append(slices.Clone(args), "--kube-version", minKubeVersion)
	}
	home := t.TempDir()
	env := []string{
		"HELM_CONFIG_HOME=" + filepath.Join(home, "config"),
		"HELM_CACHE_HOME=" + filepath.Join(home, "cache"),
		"HELM_DATA_HOME=" + filepath.Join(home, "data"),
	}
	return run(t, timeout, env, tool(t, "helm"), args...)
}

// object is one rendered manifest.
type object struct {
	Kind, Name, Namespace string
	// Raw is the manifest as YAML, for a strict decode into its API type.
	Raw []byte
	// Map is the manifest as a generic map.
	Map map[string]any
}

// objects is the output of helm template, in order.
type objects []object

// render runs helm template with the release name ard in namespace ops and
// returns the parsed objects. It gives the webhook and API tokens, which
// an offline render needs (tokenArgs); args may override them.
func render(t testing.TB, args ...string) objects {
	t.Helper()
	args = append(slices.Clone(tokenArgs), args...)
	out, err := helm(t, 2*time.Minute, append([]string{"template", "ard", chartDir, "--namespace", "ops"}, args...)...)
	if err != nil {
		t.Fatalf("helm template %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return parse(t, out)
}

// parse splits multi-document YAML into objects, skipping empty documents.
func parse(t testing.TB, manifests string) objects {
	t.Helper()
	r := utilyaml.NewYAMLReader(bufio.NewReader(strings.NewReader(manifests)))
	var objs objects
	for {
		doc, err := r.Read()
		if errors.Is(err, io.EOF) {
			return objs
		}
		if err != nil {
			t.Fatalf("split rendered manifests: %v", err)
		}
		var m map[string]any
		if err := yaml.Unmarshal(doc, &m); err != nil {
			t.Fatalf("parse rendered manifest: %v\n%s", err, doc)
		}
		if len(m) == 0 {
			continue
		}
		o := object{Raw: bytes.TrimSpace(doc), Map: m}
		o.Kind, _ = m["kind"].(string)
		meta, _ := m["metadata"].(map[string]any)
		o.Name, _ = meta["name"].(string)
		o.Namespace, _ = meta["namespace"].(string)
		objs = append(objs, o)
	}
}

// all returns the objects of a kind.
func (objs objects) all(kind string) objects {
	var out objects
	for _, o := range objs {
		if o.Kind == kind {
			out = append(out, o)
		}
	}
	return out
}

// one returns the only object of a kind and fails when there is not
// exactly one.
func (objs objects) one(t testing.TB, kind string) object {
	t.Helper()
	found := objs.all(kind)
	if len(found) != 1 {
		t.Fatalf("want exactly one %s, got %d", kind, len(found))
	}
	return found[0]
}

// decode decodes an object strictly into its API type: a field the API does
// not know (a typo in a template) is an error.
func decode(t testing.TB, o object, into any) {
	t.Helper()
	if err := yaml.UnmarshalStrict(o.Raw, into); err != nil {
		t.Fatalf("decode %s %s strictly: %v", o.Kind, o.Name, err)
	}
}
