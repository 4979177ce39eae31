package reliability

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"sigs.k8s.io/yaml"

	"github.com/autorollbackd/autorollbackd/internal/failpoint"
	"github.com/autorollbackd/autorollbackd/internal/testenv"
)

// token is the webhook bearer token every daemon here is configured with.
const token = "reliability-token"

// apiToken is the read token of the incidents API; the daemon refuses one
// equal to the webhook's.
const apiToken = "reliability-read-token"

// maxLogLines bounds the log lines kept per daemon; the storm logs one line
// per request.
const maxLogLines = 20000

// daemon is a running `autorollbackd serve` process. The tests start it
// themselves rather than through testenv.StartProcess because they need
// its pid: to SIGKILL it and to read its resident memory.
type daemon struct {
	name string
	cmd  *exec.Cmd
	addr string
	done chan struct{}

	mu      sync.Mutex
	logs    []string
	dropped int
}

// config is a daemon configuration as nested maps, marshalled to YAML.
// Sections are maps so a test can replace one without repeating the rest.
type config map[string]any

// baseConfig is what every daemon here runs with: the webhook's bearer
// token and the incidents API's read token, its
// records (and Lease) in recordsNS, acting only in the allowed namespaces,
// a short leader lease so a replacement takes over within seconds, and an
// hourly budget high enough for the storm.
func baseConfig(dir, recordsNS string, allow ...string) config {
	return config{
		"webhook": map[string]any{"auth": map[string]any{"bearerTokenFile": filepath.Join(dir, "token")}},
		"api":     map[string]any{"auth": map[string]any{"bearerTokenFile": filepath.Join(dir, "api-token")}},
		"engine":  map[string]any{"namespace": recordsNS},
		"leaderElection": map[string]any{
			"leaseDuration": "4s",
			"renewDeadline": "3s",
			"retryPeriod":   "500ms",
		},
		"policy": map[string]any{
			"namespaces": map[string]any{"allow": allow},
			"budget":     map[string]any{"perWorkloadPerHour": 2, "globalPerHour": 1000},
		},
		"verify": map[string]any{"pollInterval": "250ms"},
	}
}

// with returns a copy of c with the given top-level sections replaced.
func (c config) with(sections config) config {
	out := maps.Clone(c)
	maps.Copy(out, sections)
	return out
}

// write writes the tokens and the configuration into dir and returns the
// configuration's path.
func (c config) write(t testing.TB, dir string) string {
	t.Helper()
	if err := os.WriteFile(filepath.Join(dir, "token"), []byte(token+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "api-token"), []byte(apiToken+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	raw, err := yaml.Marshal(map[string]any(c))
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "config.yaml")
	if err := os.WriteFile(path, raw, 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// startDaemon runs the daemon against kubeconfig with the configuration
// file cfg, on a loopback port of its choosing, and waits until it logs its
// address. It is killed when the test ends, and its log is printed if the
// test failed.
func startDaemon(t testing.TB, name, kubeconfig, cfg string, args ...string) *daemon {
	t.Helper()
	return startDaemonFailing(t, name, kubeconfig, cfg, "", args...)
}

// startDaemonFailing is startDaemon with the daemon killing itself with
// SIGKILL at the failpoint named (none if empty).
func startDaemonFailing(t testing.TB, name, kubeconfig, cfg, point string, args ...string) *daemon {
	t.Helper()
	var env []string
	if point != "" {
		env = []string{failpoint.Env + "=" + point}
	}
	d, err := launch(name, kubeconfig, cfg, env, args...)
	if d != nil {
		t.Cleanup(func() {
			d.kill()
			if t.Failed() {
				t.Logf("%s log (last lines):\n%s", d.name, d.tail(150))
			}
		})
	}
	if err != nil {
		t.Fatal(err)
	}
	return d
}

func launch(name, kubeconfig, cfg string, env []string, args ...string) (*daemon, error) {
	cmd := exec.Command(binary, append([]string{"serve", "--listen-address", "127.0.0.1:0",
		"--kubeconfig", kubeconfig, "--config", cfg}, args...)...)
	if env != nil {
		cmd.Env = append(os.Environ(), env...)
	}
	stderr, err := cmd.StderrPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	d := &daemon{name: name, cmd: cmd, done: make(chan struct{})}
	addr := make(chan string, 1)
	go func() {
		r := bufio.NewReaderSize(stderr, 64<<10)
		for {
			line, err := r.ReadString('\n')
			if line != "" {
				d.record(strings.TrimRight(line, "\n"), addr)
			}
			if err != nil {
				break
			}
		}
		// Keep draining, so the daemon never blocks on a full pipe.
		_, _ = io.Copy(io.Discard, stderr)
		_ = cmd.Wait()
		close(d.done)
	}()
	select {
	case d.addr = <-addr:
		return d, nil
	case <-d.done:
		return d, fmt.Errorf("%s exited before listening: %s\n%s", name, cmd.ProcessState, d.tail(50))
	case <-time.After(60 * time.Second):
		return d, fmt.Errorf("%s did not log its listen address within 60s\n%s", name, d.tail(50))
	}
}

func (d *daemon) record(line string, addr chan<- string) {
	var rec struct{ Msg, Address string }
	if json.Unmarshal([]byte(line), &rec) == nil && rec.Msg == "HTTP server listening" {
		select {
		case addr <- rec.Address:
		default:
		}
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if len(d.logs) >= maxLogLines {
		d.logs = d.logs[1:]
		d.dropped++
	}
	d.logs = append(d.logs, line)
}

// tail returns the last n log lines.
func (d *daemon) tail(n int) string {
	d.mu.Lock()
	defer d.mu.Unlock()
	return strings.Join(d.logs[max(0, len(d.logs)-n):], "\n")
}

// grep returns the log lines containing s.
func (d *daemon) grep(s string) []string {
	d.mu.Lock()
	defer d.mu.Unlock()
	var out []string
	for _, l := range d.logs {
		if strings.Contains(l, s) {
			out = append(out, l)
		}
	}
	return out
}

func (d *daemon) pid() int { return d.cmd.Process.Pid }

// waitLogged waits until the daemon has logged a line with the message msg.
func (d *daemon) waitLogged(t testing.TB, msg string, timeout time.Duration) {
	t.Helper()
	testenv.Eventually(t, timeout, d.name+" logs "+msg, func(context.Context) (bool, string) {
		if d.exited() {
			t.Fatalf("%s exited: %s\n%s", d.name, d.cmd.ProcessState, d.tail(50))
		}
		return len(d.grep(`"msg":"`+msg+`"`)) > 0, "not yet"
	})
}

// waitDied waits until the daemon has ended, as at a failpoint.
func (d *daemon) waitDied(t testing.TB, timeout time.Duration) {
	t.Helper()
	select {
	case <-d.done:
	case <-time.After(timeout):
		t.Fatalf("%s still running after %s\n%s", d.name, timeout, d.tail(50))
	}
}

// exited reports whether the process has ended.
func (d *daemon) exited() bool {
	select {
	case <-d.done:
		return true
	default:
		return false
	}
}

// kill ends the process with SIGKILL, as a crash or an OOM kill would, and
// waits for it.
func (d *daemon) kill() {
	if d.exited() {
		return
	}
	_ = d.cmd.Process.Signal(syscall.SIGKILL)
	<-d.done
}

// stop ends the process with SIGTERM (it releases its lease and drains),
// and SIGKILL after 30s.
func (d *daemon) stop() {
	if d.exited() {
		return
	}
	_ = d.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-d.done:
	case <-time.After(30 * time.Second):
		d.kill()
	}
}

// url returns the daemon's URL for path.
func (d *daemon) url(path string) string { return "http://" + d.addr + path }

// probe returns the status of GET path, or 0 when the request failed.
func (d *daemon) probe(ctx context.Context, path string) int {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, d.url(path), nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, resp.Body)
	return resp.StatusCode
}

// metric returns the value of one series of /metrics, "absent" when the
// daemon does not serve it, or the error.
func (d *daemon) metric(ctx context.Context, series string) string {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, d.url("/metrics"), nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err.Error()
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return err.Error()
	}
	for line := range strings.SplitSeq(string(body), "\n") {
		if v, ok := strings.CutPrefix(line, series+" "); ok {
			return v
		}
	}
	return "absent"
}

// waitLeading waits until the daemon is ready and holds the lease, so that
// its webhook takes alerts.
func (d *daemon) waitLeading(t testing.TB, timeout time.Duration) {
	t.Helper()
	testenv.Eventually(t, timeout, d.name+" ready and leading", func(ctx context.Context) (bool, string) {
		if d.exited() {
			t.Fatalf("%s exited: %s\n%s", d.name, d.cmd.ProcessState, d.tail(50))
		}
		if code := d.probe(ctx, "/readyz"); code != http.StatusOK {
			return false, fmt.Sprintf("/readyz %d", code)
		}
		v := d.metric(ctx, "autorollbackd_leader")
		return v == "1", "autorollbackd_leader " + v
	})
}

// memory is what /proc/<pid>/status says of a process's memory, in KiB.
type memory struct{ RSS, Peak int64 }

func (m memory) String() string {
	return fmt.Sprintf("VmRSS %.1f MiB (VmHWM %.1f MiB)", float64(m.RSS)/1024, float64(m.Peak)/1024)
}

// memoryOf reads VmRSS and VmHWM (the peak resident set) of pid.
func memoryOf(pid int) (memory, error) {
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return memory{}, err
	}
	var m memory
	for line := range strings.SplitSeq(string(raw), "\n") {
		key, rest, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		fields := strings.Fields(rest)
		if len(fields) == 0 {
			continue
		}
		v, err := strconv.ParseInt(fields[0], 10, 64)
		if err != nil {
			continue
		}
		switch key {
		case "VmRSS":
			m.RSS = v
		case "VmHWM":
			m.Peak = v
		}
	}
	if m.RSS == 0 {
		return m, fmt.Errorf("no VmRSS in /proc/%d/status", pid)
	}
	return m, nil
}
