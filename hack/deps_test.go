package hack_test

import (
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// TestDaemonDependencies: the daemon's own packages use only the API groups
// and kinds it needs. The all-groups clientset and informer factory, and
// kubectl's cli-runtime client options (which bring kustomize), each cost
// megabytes of binary: text/template's reflective method calls make the
// linker keep every exported method of every type they reach. The Helm SDK
// brings them all back, so it is only in the helm build: the default
// build depends on no package of Helm, kubectl, kustomize or cli-runtime's
// client options at all, nor on golang.org/x/net/trace, whose init makes
// template execution reachable (third_party/conntrack/README.md).
func TestDaemonDependencies(t *testing.T) {
	const module = "github.com/autorollbackd/autorollbackd/"
	out, err := exec.Command("go", "list", "-deps", "-f", "{{.ImportPath}} {{join .Imports \" \"}}", "../cmd/autorollbackd").CombinedOutput()
	if err != nil {
		t.Fatalf("go list -deps: %v\n%s", err, out)
	}
	banned := []string{
		// Templates of the configuration are evaluated by
		// internal/strtemplate, without reflection (see
		// TestBinaryExecutesNoTemplate); cobra and cel-go import
		// text/template without executing templates in the daemon.
		"text/template",
		"html/template",
		"k8s.io/cli-runtime/pkg/genericclioptions",
		"k8s.io/client-go/informers",
		"k8s.io/client-go/kubernetes",
	}
	ours := 0
	for line := range strings.Lines(string(out)) {
		f := strings.Fields(line)
		if len(f) == 0 {
			continue
		}
		for _, prefix := range []string{"helm.sh/", "k8s.io/kubectl/", "sigs.k8s.io/kustomize/", "k8s.io/cli-runtime/pkg/genericclioptions", "golang.org/x/net/trace"} {
			if strings.HasPrefix(f[0], prefix) {
				t.Errorf("the default build depends on %s", f[0])
			}
		}
		if !strings.HasPrefix(f[0], module) {
			continue
		}
		ours++
		for _, imp := range f[1:] {
			if slices.Contains(banned, imp) {
				t.Errorf("%s imports %s", f[0], imp)
			}
		}
	}
	if ours < 10 {
		t.Fatalf("go list -deps lists %d packages of this module; the listing is not the daemon's:\n%s", ours, out)
	}
}

// TestBinaryExecutesNoTemplate: nothing in the daemon's binary can execute
// a text/template or html/template template. Template execution looks
// methods up by a name known only at run time, so once it is reachable the
// linker keeps every exported method of every type that reaches an
// interface, a quarter of the binary (docs/architecture.md#binary-size).
// Packages may import the template packages (cobra and cel-go do) as long
// as nothing reachable executes one.
func TestBinaryExecutesNoTemplate(t *testing.T) {
	bin := filepath.Join(t.TempDir(), "autorollbackd")
	if out, err := exec.Command("go", "build", "-trimpath", "-o", bin, "../cmd/autorollbackd").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	out, err := exec.Command("go", "tool", "nm", bin).Output()
	if err != nil {
		t.Fatalf("go tool nm: %v", err)
	}
	symbols := 0
	for line := range strings.Lines(string(out)) {
		symbols++
		if strings.HasSuffix(strings.TrimSpace(line), " text/template.(*state).evalField") {
			t.Errorf("the binary links text/template's execution: %s", strings.TrimSpace(line))
		}
	}
	if symbols < 1000 {
		t.Fatalf("go tool nm listed %d symbols; that is not the daemon's binary", symbols)
	}
}
