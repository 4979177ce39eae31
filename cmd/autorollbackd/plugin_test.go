package main

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"k8s.io/client-go/tools/clientcmd"

	"github.com/autorollbackd/autorollbackd/internal/incident"
	"github.com/autorollbackd/autorollbackd/internal/policy"
	"github.com/autorollbackd/autorollbackd/internal/testenv"
)

// TestKubectlPlugin: the binary linked as kubectl-autorollback on the PATH
// is `kubectl autorollback`, run by the real kubectl, with kubectl's flags
// and without serve.
func TestKubectlPlugin(t *testing.T) {
	c := testenv.Require(t)
	dir := t.TempDir()
	if err := os.Symlink(binary, filepath.Join(dir, "kubectl-autorollback")); err != nil {
		t.Fatal(err)
	}
	kubectl := func(args ...string) (int, string) {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		cmd := exec.CommandContext(ctx, filepath.Join(c.BinDir, "kubectl"), args...)
		cmd.Env = append(os.Environ(), "PATH="+dir+string(os.PathListSeparator)+os.Getenv("PATH"))
		out, err := cmd.CombinedOutput()
		var exit *exec.ExitError
		switch {
		case err == nil:
			return 0, string(out)
		case errors.As(err, &exit):
			return exit.ExitCode(), string(out)
		}
		t.Fatalf("kubectl %v: %v\n%s", args, err, out)
		return 0, ""
	}

	ns := c.Namespace(t)
	start := time.Now().Add(-time.Hour).UTC()
	target := policy.Ref{Kind: policy.KindDeployment, Namespace: ns, Name: "event-service"}
	inc := &incident.Incident{ID: incident.NewID(target, 2, start), Target: target, State: incident.StateEscalated, StartedAt: start,
		Decision: policy.Decision{Outcome: policy.OutcomeEscalate, Reason: "frozen"}}
	if _, err := (&incident.Store{Client: c.Client, Namespace: ns}).Create(context.Background(), inc); err != nil {
		t.Fatal(err)
	}
	kc, err := clientcmd.LoadFromFile(c.Kubeconfig)
	if err != nil {
		t.Fatal(err)
	}

	code, out := kubectl("autorollback", "incidents", "--kubeconfig", c.Kubeconfig, "--context", kc.CurrentContext, "-n", ns)
	if code != 0 || !strings.Contains(out, inc.ID) || !strings.Contains(out, "escalate (frozen)") {
		t.Errorf("kubectl autorollback incidents: exit %d, want the incident:\n%s", code, out)
	}

	twoRevisions(t, c, ns, "event-service")
	file := filepath.Join(t.TempDir(), "payload.json")
	if err := os.WriteFile(file, []byte(payload(t, ns, "event-service", "fp-plugin")), 0o600); err != nil {
		t.Fatal(err)
	}
	code, out = kubectl("autorollback", "explain", "--payload", file, "--kubeconfig", c.Kubeconfig)
	if code != 0 || !strings.Contains(out, "Workload facts read from the cluster") || !strings.Contains(out, "decision: rollback (reason criterion_met)") {
		t.Errorf("kubectl autorollback explain: exit %d:\n%s", code, out)
	}

	code, out = kubectl("autorollback", "serve")
	if want := "kubectl autorollback: unknown command \"serve\" (see 'kubectl autorollback --help')\n"; code != 2 || out != want {
		t.Errorf("kubectl autorollback serve: exit %d, output %q; want 2, %q", code, out, want)
	}
	code, out = kubectl("autorollback", "incidents", "--output", "xml")
	if want := "kubectl autorollback incidents: -o/--output \"xml\": want json, yaml or wide (see 'kubectl autorollback incidents --help')\n"; code != 2 || out != want {
		t.Errorf("kubectl autorollback incidents --output xml: exit %d, output %q; want 2, %q", code, out, want)
	}
	code, out = kubectl("autorollback", "--help")
	if code != 0 || !strings.Contains(out, "kubectl autorollback [command]") || strings.Contains(out, "serve") {
		t.Errorf("kubectl autorollback --help: exit %d, want its usage without serve:\n%s", code, out)
	}
}
