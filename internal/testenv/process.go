package testenv

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	"k8s.io/apimachinery/pkg/util/wait"
)

// Process is a server started for a test or the demo, on loopback.
type Process struct {
	Name string
	// Addr is host:port it serves on.
	Addr string
	cmd  *exec.Cmd
	done chan struct{}
	mu   sync.Mutex
	out  bytes.Buffer
}

// FreeAddr returns a loopback address with a port that was free a moment
// ago. Servers that cannot listen on :0 and report their port need one.
func FreeAddr() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", fmt.Errorf("find a free port: %w", err)
	}
	defer ln.Close()
	return ln.Addr().String(), nil
}

type syncWriter struct{ p *Process }

func (w syncWriter) Write(b []byte) (int, error) {
	w.p.mu.Lock()
	defer w.p.mu.Unlock()
	return w.p.out.Write(b)
}

// StartProcess runs bin with args, and waits until GET http://addr+ready
// answers 200.
func StartProcess(ctx context.Context, name, addr, ready, bin string, args ...string) (*Process, error) {
	p := &Process{Name: name, Addr: addr, done: make(chan struct{})}
	p.cmd = exec.Command(bin, args...)
	p.cmd.Stdout, p.cmd.Stderr = syncWriter{p}, syncWriter{p}
	// Its own process group, so a stop reaches any children too.
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := p.cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	go func() { _ = p.cmd.Wait(); close(p.done) }()
	err := wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, time.Minute, true, func(ctx context.Context) (bool, error) {
		select {
		case <-p.done:
			return false, fmt.Errorf("%s exited: %s", name, p.Output())
		default:
		}
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+ready, nil)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return false, nil
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK, nil
	})
	if err != nil {
		p.Stop()
		return nil, fmt.Errorf("wait for %s on %s: %w", name, addr, err)
	}
	return p, nil
}

// Output returns what the process printed so far.
func (p *Process) Output() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.out.String()
}

// Stop ends the process (SIGTERM, then SIGKILL after 10s) and waits for it.
func (p *Process) Stop() {
	select {
	case <-p.done:
		return
	default:
	}
	_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(10 * time.Second):
		_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
		<-p.done
	}
}

// Kill ends the process at once, as a crash would.
func (p *Process) Kill() {
	_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
	<-p.done
}

// Exited reports whether the process has ended.
func (p *Process) Exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// StartPrometheus runs the test environment's Prometheus on addr with the
// given configuration (prometheus.yml content) and rule files, storing its
// data under dir.
func StartPrometheus(ctx context.Context, dir, addr, config string, rules map[string]string) (*Process, error) {
	bin, err := BinDir()
	if err != nil {
		return nil, err
	}
	for name, body := range rules {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o600); err != nil {
			return nil, fmt.Errorf("write rule file %s: %w", name, err)
		}
	}
	cfg := filepath.Join(dir, "prometheus.yml")
	if err := os.WriteFile(cfg, []byte(config), 0o600); err != nil {
		return nil, fmt.Errorf("write Prometheus config: %w", err)
	}
	return StartProcess(ctx, "prometheus", addr, "/-/ready", filepath.Join(bin, "prometheus"),
		"--config.file="+cfg, "--storage.tsdb.path="+filepath.Join(dir, "data"), "--web.listen-address="+addr,
		"--web.enable-lifecycle", "--log.level=warn")
}

// StartAlertmanager runs the test environment's Alertmanager with the given
// configuration. peers lists other Alertmanagers' cluster addresses for an HA
// pair; clusterAddr is this one's ("" disables clustering).
func StartAlertmanager(ctx context.Context, dir, config, clusterAddr string, peers ...string) (*Process, error) {
	addr, err := FreeAddr()
	if err != nil {
		return nil, err
	}
	return StartAlertmanagerOn(ctx, addr, dir, config, clusterAddr, peers...)
}

// StartAlertmanagerOn is StartAlertmanager listening on addr, chosen
// beforehand so that what must call Alertmanager can be configured first.
func StartAlertmanagerOn(ctx context.Context, addr, dir, config, clusterAddr string, peers ...string) (*Process, error) {
	bin, err := BinDir()
	if err != nil {
		return nil, err
	}
	cfg := filepath.Join(dir, "alertmanager.yml")
	if err := os.WriteFile(cfg, []byte(config), 0o600); err != nil {
		return nil, fmt.Errorf("write Alertmanager config: %w", err)
	}
	args := []string{"--config.file=" + cfg, "--storage.path=" + filepath.Join(dir, "data"), "--web.listen-address=" + addr, "--log.level=warn"}
	if clusterAddr == "" {
		args = append(args, "--cluster.listen-address=")
	} else {
		args = append(args, "--cluster.listen-address="+clusterAddr, "--cluster.advertise-address="+clusterAddr)
		for _, p := range peers {
			args = append(args, "--cluster.peer="+p)
		}
	}
	return StartProcess(ctx, "alertmanager", addr, "/-/ready", filepath.Join(bin, "alertmanager"), args...)
}
