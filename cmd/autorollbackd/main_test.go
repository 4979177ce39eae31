package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/autorollbackd/autorollbackd/internal/testenv"
)

var binary string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "autorollbackd-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	binary = filepath.Join(dir, "autorollbackd")
	if out, err := exec.Command("go", "build", "-o", binary, ".").CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "build autorollbackd: %v\n%s", err, out)
		os.Exit(1)
	}
	code := testenv.Run(m)
	_ = os.RemoveAll(dir)
	os.Exit(code)
}

// daemon is a running autorollbackd process.
type daemon struct {
	cmd  *exec.Cmd
	addr string
	done chan error

	mu   sync.Mutex
	logs []string
}

// startDaemon runs autorollbackd serve and waits until it logs its listen
// address.
func startDaemon(t *testing.T, args ...string) *daemon {
	t.Helper()
	cmd := exec.Command(binary, append([]string{"serve", "--listen-address", "127.0.0.1:0"}, args...)...)
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	d := &daemon{cmd: cmd, done: make(chan error, 1)}
	addr := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			line := sc.Text()
			d.mu.Lock()
			d.logs = append(d.logs, line)
			d.mu.Unlock()
			var rec struct{ Msg, Address string }
			if json.Unmarshal([]byte(line), &rec) == nil && rec.Msg == "HTTP server listening" {
				addr <- rec.Address
			}
		}
		d.done <- cmd.Wait()
	}()
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			_ = cmd.Process.Kill()
		}
		if t.Failed() {
			t.Logf("daemon logs:\n%s", strings.Join(d.logLines(), "\n"))
		}
	})
	select {
	case d.addr = <-addr:
	case err := <-d.done:
		t.Fatalf("daemon exited before listening: %v\n%s", err, strings.Join(d.logLines(), "\n"))
	case <-time.After(60 * time.Second):
		t.Fatalf("daemon did not log its listen address within 60s\n%s", strings.Join(d.logLines(), "\n"))
	}
	return d
}

func (d *daemon) logLines() []string {
	d.mu.Lock()
	defer d.mu.Unlock()
	return append([]string(nil), d.logs...)
}

func get(ctx context.Context, url string) (int, string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return 0, "", err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body), err
}

const (
	testToken = "s3cret-token-for-tests"
	// testAPIToken reads incidents; the daemon refuses a read token equal
	// to the webhook's.
	testAPIToken = "s3cret-read-token-for-tests"
)

// configFile writes a configuration for a daemon whose records live in ns,
// with a webhook bearer token file and a read token file for the incidents
// API, and returns its path.
func configFile(t *testing.T, ns string, extra string) string {
	t.Helper()
	dir := t.TempDir()
	token := filepath.Join(dir, "token")
	if err := os.WriteFile(token, []byte(testToken+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	apiToken := filepath.Join(dir, "api-token")
	if err := os.WriteFile(apiToken, []byte(testAPIToken+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := filepath.Join(dir, "config.yaml")
	body := fmt.Sprintf("webhook:\n  auth:\n    bearerTokenFile: %s\napi:\n  auth:\n    bearerTokenFile: %s\nengine:\n  namespace: %s\n%s", token, apiToken, ns, extra)
	if err := os.WriteFile(cfg, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	return cfg
}

func TestServeAgainstControlPlane(t *testing.T) {
	c := testenv.Require(t)
	ns := c.Namespace(t)
	for _, sig := range []syscall.Signal{syscall.SIGTERM, syscall.SIGINT} {
		t.Run(sig.String(), func(t *testing.T) {
			// One notifier, so that the notification metrics have label values.
			d := startDaemon(t, "--kubeconfig", c.Kubeconfig, "--config", configFile(t, ns,
				"escalation:\n  notifiers:\n  - {name: people, type: webhook, webhook: {url: 'http://127.0.0.1:1/hook'}}\n  announce: [people]\n"))
			base := "http://" + d.addr

			code, body, err := get(context.Background(), base+"/healthz")
			if err != nil || code != http.StatusOK {
				t.Fatalf("GET /healthz = %d %q, %v; want 200", code, body, err)
			}
			testenv.Eventually(t, 60*time.Second, "/readyz turns ready", func(ctx context.Context) (bool, string) {
				code, body, err := get(ctx, base+"/readyz")
				return err == nil && code == http.StatusOK, fmt.Sprintf("%d %q %v", code, body, err)
			})
			code, body, err = get(context.Background(), base+"/metrics")
			if err != nil || code != http.StatusOK {
				t.Fatalf("GET /metrics = %d, %v", code, err)
			}
			for _, want := range []string{"autorollbackd_build_info{", "go_goroutines ", "process_resident_memory_bytes "} {
				if !strings.Contains(body, want) {
					t.Errorf("/metrics lacks %q", want)
				}
			}
			checkMetricsDocumented(t, body)

			if err := d.cmd.Process.Signal(sig); err != nil {
				t.Fatal(err)
			}
			select {
			case err := <-d.done:
				if err != nil {
					t.Fatalf("daemon exited with %v after %v, want exit 0", err, sig)
				}
			case <-time.After(30 * time.Second):
				t.Fatalf("daemon still running 30s after %v", sig)
			}
			if _, _, err := get(context.Background(), base+"/healthz"); err == nil {
				t.Errorf("daemon still accepts connections after exit")
			}
		})
	}
}

// runToExit runs the binary and returns its exit code and stderr.
func runToExit(t *testing.T, args ...string) (int, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, binary, args...)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	err := cmd.Run()
	if ctx.Err() != nil {
		t.Fatalf("autorollbackd %v did not exit within 60s", args)
	}
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return code, stderr.String()
}

func TestBadFlagIsOneLine(t *testing.T) {
	code, stderr := runToExit(t, "serve", "--listen-adress", ":1")
	if code != 2 {
		t.Errorf("exit code = %d, want 2", code)
	}
	want := "autorollbackd serve: unknown flag: --listen-adress (see 'autorollbackd serve --help')\n"
	if stderr != want {
		t.Errorf("stderr = %q, want %q", stderr, want)
	}
}

func TestUnreachableAPIServerIsOneLine(t *testing.T) {
	kubeconfig := filepath.Join(t.TempDir(), "kubeconfig")
	// Port 1 on loopback: nothing listens there, so the connection is refused.
	err := os.WriteFile(kubeconfig, []byte(`apiVersion: v1
kind: Config
clusters:
- name: nowhere
  cluster: {server: "https://127.0.0.1:1", insecure-skip-tls-verify: true}
users:
- name: nobody
  user: {token: abc}
contexts:
- name: nowhere
  context: {cluster: nowhere, user: nobody}
current-context: nowhere
`), 0o600)
	if err != nil {
		t.Fatal(err)
	}
	code, stderr := runToExit(t, "serve", "--kubeconfig", kubeconfig, "--listen-address", "127.0.0.1:0", "--log-level", "error")
	if code != 1 {
		t.Errorf("exit code = %d, want 1", code)
	}
	lines := strings.Split(strings.TrimSuffix(stderr, "\n"), "\n")
	if len(lines) != 1 {
		t.Fatalf("stderr has %d lines, want 1:\n%s", len(lines), stderr)
	}
	for _, want := range []string{"autorollbackd serve: reach the Kubernetes API server at https://127.0.0.1:1", "connection refused"} {
		if !strings.Contains(lines[0], want) {
			t.Errorf("stderr %q lacks %q", lines[0], want)
		}
	}
	if strings.Contains(stderr, "goroutine ") {
		t.Errorf("stderr holds a stack trace:\n%s", stderr)
	}
}
