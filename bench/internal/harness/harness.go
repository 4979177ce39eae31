// Package harness holds what the benchmark programs share: a local control
// plane with room for many pods, opted-in Deployments with a good and a bad
// revision, a watcher that sees each rollback land, processes run with
// their pid at hand (for RSS), Alertmanager payloads and percentiles.
//
// It is not part of the daemon and not run by make test; bench/run.sh
// builds and runs the programs that use it.
package harness

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"

	"github.com/autorollbackd/autorollbackd/internal/testenv"
)

// Logf reports progress on stderr with a timestamp; the results go to the
// markdown output, never here.
func Logf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "[bench %s] %s\n", time.Now().Format("15:04:05.000"), fmt.Sprintf(format, args...))
}

// Cluster is a local control plane started for a benchmark.
type Cluster struct {
	Name       string
	BinDir     string
	Kubeconfig string
	// Client is not rate limited on the client side (see ClientFor).
	Client kubernetes.Interface
	env    *testenv.Cluster
}

// StartCluster starts the test environment's control plane with
// internal/testenv (the same binaries, kwokctl arguments and machine-wide
// creation lock) with one difference: the components' client QPS limits
// are lifted (kwokctl --disable-qps-limits). With the default limits,
// kube-controller-manager rolls out about 2 one-replica Deployments a
// second here, and preparing and settling the hundreds of Deployments of a
// benchmark would not fit its time budget. No component under test talks
// through those limits: the daemon keeps its own, and the API server's are
// unchanged.
//
// It registers 1+extraNodes kwok nodes, each holding up to 1000 pods: one-
// replica Deployments surge to two pods each while they roll.
func StartCluster(ctx context.Context, extraNodes int) (*Cluster, error) {
	env, err := testenv.StartWith(ctx, testenv.Options{
		ExtraArgs: []string{"--disable-qps-limits"},
		Nodes:     1 + extraNodes,
	})
	if err != nil {
		return nil, err
	}
	c := &Cluster{Name: env.Name, BinDir: env.BinDir, Kubeconfig: env.Kubeconfig, env: env}
	if c.Client, err = ClientFor(c.Kubeconfig); err != nil {
		env.Stop()
		return nil, err
	}
	return c, nil
}

// Stop deletes the cluster and its files. It is safe to call more than once.
func (c *Cluster) Stop() { c.env.Stop() }

// PIDs returns the process ids of the control plane's components by name
// (etcd, kube-apiserver, kube-controller-manager, kube-scheduler,
// kwok-controller).
func (c *Cluster) PIDs() (map[string]int, error) { return c.env.PIDs() }

// EnsureNamespaces creates the namespaces that do not exist yet.
func EnsureNamespaces(ctx context.Context, cs kubernetes.Interface, names ...string) error {
	for _, n := range names {
		_, err := cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: n}}, metav1.CreateOptions{})
		if err != nil && !apierrors.IsAlreadyExists(err) {
			return fmt.Errorf("create namespace %s: %w", n, err)
		}
	}
	return nil
}

// Parallel runs f for 0..n-1 on `workers` goroutines and returns the first
// error; the others still finish.
func Parallel(ctx context.Context, n, workers int, f func(ctx context.Context, i int) error) error {
	var (
		wg   sync.WaitGroup
		once sync.Once
		ferr error
		next = make(chan int)
	)
	for range workers {
		wg.Go(func() {
			for i := range next {
				if err := f(ctx, i); err != nil {
					once.Do(func() { ferr = err })
				}
			}
		})
	}
	for i := range n {
		if ctx.Err() != nil {
			break
		}
		next <- i
	}
	close(next)
	wg.Wait()
	if ferr == nil {
		ferr = ctx.Err()
	}
	return ferr
}

// Proc is a process started by a benchmark, in its own process group, with
// its output in a file.
type Proc struct {
	Name string
	Addr string
	// Started is when the process was started, Ready when its readiness
	// endpoint first answered 200 (polled every 100ms).
	Started, Ready time.Time
	cmd            *exec.Cmd
	done           chan struct{}
	log            *os.File
}

// Start runs bin with args, its output going to logPath ("" discards it),
// and waits until GET http://addr+ready answers 200.
func Start(ctx context.Context, name, addr, ready, logPath, bin string, args ...string) (*Proc, error) {
	p := &Proc{Name: name, Addr: addr, done: make(chan struct{})}
	p.cmd = exec.Command(bin, args...)
	if logPath != "" {
		f, err := os.Create(logPath)
		if err != nil {
			return nil, fmt.Errorf("create log of %s: %w", name, err)
		}
		p.log = f
		p.cmd.Stdout, p.cmd.Stderr = f, f
	}
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	p.Started = time.Now()
	if err := p.cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	go func() { _ = p.cmd.Wait(); close(p.done) }()
	err := wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, 2*time.Minute, true, func(ctx context.Context) (bool, error) {
		if p.Exited() {
			return false, fmt.Errorf("%s exited before it was ready (log: %s)", name, logPath)
		}
		code, _, err := Get(ctx, "http://"+addr+ready, "")
		if err != nil || code != http.StatusOK {
			return false, nil
		}
		p.Ready = time.Now()
		return true, nil
	})
	if err != nil {
		p.Stop()
		return nil, fmt.Errorf("wait for %s on %s: %w", name, addr, err)
	}
	return p, nil
}

// Pid returns the process id.
func (p *Proc) Pid() int { return p.cmd.Process.Pid }

// Exited reports whether the process has ended.
func (p *Proc) Exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// Stop ends the process group (SIGTERM, then SIGKILL after 30s) and waits.
func (p *Proc) Stop() {
	if !p.Exited() {
		_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGTERM)
		select {
		case <-p.done:
		case <-time.After(30 * time.Second):
			_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
			<-p.done
		}
	}
	if p.log != nil {
		_ = p.log.Close()
	}
}

// Get sends GET url, with a bearer token unless it is empty, and returns
// the status and body.
func Get(ctx context.Context, url, token string) (int, []byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return 0, nil, err
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	return resp.StatusCode, body, err
}

// Metric returns the value of one series (name with labels, exactly as
// exposed) from http://addr/metrics, or "" when it is absent.
func Metric(ctx context.Context, addr, series string) (string, error) {
	code, body, err := Get(ctx, "http://"+addr+"/metrics", "")
	if err != nil {
		return "", err
	}
	if code != http.StatusOK {
		return "", fmt.Errorf("GET /metrics: %d", code)
	}
	for line := range strings.SplitSeq(string(body), "\n") {
		if v, ok := strings.CutPrefix(line, series+" "); ok {
			return v, nil
		}
	}
	return "", nil
}

// Token is the webhook bearer token of the benchmark daemons.
const Token = "bench-webhook-token"

// APIToken is the read token of the benchmark daemons' incidents API; the
// daemon refuses one equal to Token.
const APIToken = "bench-read-token"

// DaemonConfig is what a benchmark sets in the daemon's configuration;
// StartDaemon adds the listen address and the two bearer token files.
type DaemonConfig struct {
	// RecordsNamespace holds the alert and incident records and the Lease.
	RecordsNamespace string
	// Engine is more keys of the engine section, each line indented by two
	// spaces.
	Engine string
	// Extra is more top-level sections.
	Extra string
}

// StartDaemon writes the daemon's configuration into dir, runs
// `autorollbackd serve` with its log in dir/daemon.log (the configuration
// in dir/etc),
// and returns once it is ready and leads, so that its webhook accepts
// alerts.
func StartDaemon(ctx context.Context, bin, kubeconfig, dir string, cfg DaemonConfig) (*Proc, error) {
	addr, err := testenv.FreeAddr()
	if err != nil {
		return nil, err
	}
	// The daemon reloads its policy on any change in the configuration
	// file's directory, so the log, which changes all the time, is kept
	// out of it.
	etc := filepath.Join(dir, "etc")
	if err := os.MkdirAll(etc, 0o755); err != nil {
		return nil, err
	}
	token := filepath.Join(etc, "token")
	if err := os.WriteFile(token, []byte(Token+"\n"), 0o600); err != nil {
		return nil, err
	}
	apiToken := filepath.Join(etc, "api-token")
	if err := os.WriteFile(apiToken, []byte(APIToken+"\n"), 0o600); err != nil {
		return nil, err
	}
	file := filepath.Join(etc, "config.yaml")
	body := fmt.Sprintf("server:\n  listenAddress: %q\nwebhook:\n  auth:\n    bearerTokenFile: %s\napi:\n  auth:\n    bearerTokenFile: %s\nengine:\n  namespace: %s\n%s%s",
		addr, token, apiToken, cfg.RecordsNamespace, cfg.Engine, cfg.Extra)
	if err := os.WriteFile(file, []byte(body), 0o600); err != nil {
		return nil, err
	}
	cs, err := ClientFor(kubeconfig)
	if err != nil {
		return nil, err
	}
	if err := EnsureNamespaces(ctx, cs, cfg.RecordsNamespace); err != nil {
		return nil, err
	}
	p, err := Start(ctx, "autorollbackd", addr, "/readyz", filepath.Join(dir, "daemon.log"), bin,
		"serve", "--config", file, "--kubeconfig", kubeconfig)
	if err != nil {
		return nil, err
	}
	err = wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, time.Minute, true, func(ctx context.Context) (bool, error) {
		v, err := Metric(ctx, addr, "autorollbackd_leader")
		return err == nil && v == "1", nil
	})
	if err != nil {
		p.Stop()
		return nil, fmt.Errorf("wait for the daemon to lead: %w", err)
	}
	return p, nil
}

// RSS samples the resident set size of a process (VmRSS in
// /proc/<pid>/status) every interval until Stop, keeping the largest and
// the last sample.
type RSS struct {
	pid       int
	stop      chan struct{}
	done      chan struct{}
	mu        sync.Mutex
	max, last int64 // KiB
}

// SampleRSS starts sampling pid.
func SampleRSS(pid int, interval time.Duration) *RSS {
	r := &RSS{pid: pid, stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(r.done)
		t := time.NewTicker(interval)
		defer t.Stop()
		for {
			if kb, err := ReadRSS(pid); err == nil {
				r.mu.Lock()
				r.last, r.max = kb, max(r.max, kb)
				r.mu.Unlock()
			}
			select {
			case <-r.stop:
				return
			case <-t.C:
			}
		}
	}()
	return r
}

// Stop ends sampling and returns the largest and the last sample, in KiB.
func (r *RSS) Stop() (maxKiB, lastKiB int64) {
	close(r.stop)
	<-r.done
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.max, r.last
}

// ReadRSS returns VmRSS of pid in KiB.
func ReadRSS(pid int) (int64, error) { return readStatusKiB(pid, "VmRSS:") }

// ReadPeakRSS returns VmHWM of pid in KiB: the largest resident set size
// the process has had since it started, kept by the kernel, so that no
// peak between two samples is missed.
func ReadPeakRSS(pid int) (int64, error) { return readStatusKiB(pid, "VmHWM:") }

func readStatusKiB(pid int, field string) (int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	for line := range strings.SplitSeq(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, field); ok {
			f := strings.Fields(v)
			if len(f) == 0 {
				break
			}
			return strconv.ParseInt(f[0], 10, 64)
		}
	}
	return 0, errors.New("no " + strings.TrimSuffix(field, ":") + " in /proc/" + strconv.Itoa(pid) + "/status")
}

// LoadAvg returns the first three fields of /proc/loadavg: other work on
// the machine skews every number, so each part records it.
func LoadAvg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "unknown"
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "unknown"
	}
	return strings.Join(f[:3], " ")
}

// MachineCPU returns the CPU time all cores of the machine have spent busy
// (user, nice, system, irq, softirq, steal) since boot, from /proc/stat.
func MachineCPU() (time.Duration, error) {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0, err
	}
	line, _, _ := strings.Cut(string(b), "\n")
	f := strings.Fields(line)
	if len(f) < 9 || f[0] != "cpu" {
		return 0, errors.New("malformed /proc/stat")
	}
	var ticks int64
	for _, i := range []int{1, 2, 3, 6, 7, 8} {
		n, err := strconv.ParseInt(f[i], 10, 64)
		if err != nil {
			return 0, err
		}
		ticks += n
	}
	return time.Duration(ticks) * 10 * time.Millisecond, nil
}

// Meter counts, from its start, the CPU time the whole machine and some
// processes use.
type Meter struct {
	at      time.Time
	machine time.Duration
	pids    map[string]int
	procs   map[string]procStart
}

type procStart struct {
	pid int
	cpu time.Duration
}

// Usage is what a Meter counted.
type Usage struct {
	Wall, Machine time.Duration
	Procs         map[string]time.Duration
}

// Busy is the share of the machine's CPU time that was in use.
func (u Usage) Busy() float64 {
	if u.Wall <= 0 {
		return 0
	}
	return float64(u.Machine) / float64(u.Wall) / float64(runtime.NumCPU())
}

// StartMeter starts counting the machine's CPU time and that of pids, by
// name. The caller may change pids while the meter runs: a process added,
// or under a name whose process changed, counts from its own start; one it
// cannot read is left out of the usage.
func StartMeter(pids map[string]int) *Meter {
	m := &Meter{at: time.Now(), pids: pids, procs: map[string]procStart{}}
	m.machine, _ = MachineCPU()
	for name, pid := range pids {
		if d, err := CPUTime(pid); err == nil {
			m.procs[name] = procStart{pid: pid, cpu: d}
		}
	}
	return m
}

// Read returns what was used since the start.
func (m *Meter) Read() Usage {
	u := Usage{Wall: time.Since(m.at), Procs: map[string]time.Duration{}}
	if now, err := MachineCPU(); err == nil {
		u.Machine = now - m.machine
	}
	for name, pid := range m.pids {
		d, err := CPUTime(pid)
		if err != nil {
			continue
		}
		if start, ok := m.procs[name]; ok && start.pid == pid {
			d -= start.cpu
		}
		u.Procs[name] = d
	}
	return u
}

// WaitQuiet waits until the machine's CPU was less than busy (a share of
// all cores) in use over a whole window, so that the work a step leaves
// behind (the controllers' Events, written after the fact from a queue, and
// their resyncs) does not run under the next step's measurement. It returns
// how long it waited, and an error when the machine stayed busy for
// timeout.
func WaitQuiet(ctx context.Context, busy float64, window, timeout time.Duration) (time.Duration, error) {
	start := time.Now()
	m := StartMeter(nil)
	tick := time.NewTicker(window / 4)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return time.Since(start), ctx.Err()
		case <-tick.C:
		}
		if u := m.Read(); u.Wall >= window {
			if u.Busy() < busy {
				return time.Since(start), nil
			}
			if time.Since(start) > timeout {
				return time.Since(start), fmt.Errorf("the machine stayed over %.0f%% busy for %s (%.0f%% over the last %s)", 100*busy, timeout, 100*u.Busy(), window)
			}
			m = StartMeter(nil)
		}
	}
}

// CPUTime returns the user and system CPU time pid has used so far, from
// /proc/<pid>/stat (in clock ticks of 1/100 s, the Linux default).
func CPUTime(pid int) (time.Duration, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	// The command name, field 2, may hold spaces; fields count from after it.
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0, errors.New("malformed /proc/" + strconv.Itoa(pid) + "/stat")
	}
	f := strings.Fields(s[i+1:])
	if len(f) < 13 {
		return 0, errors.New("short /proc/" + strconv.Itoa(pid) + "/stat")
	}
	utime, err1 := strconv.ParseInt(f[11], 10, 64)
	stime, err2 := strconv.ParseInt(f[12], 10, 64)
	if err := errors.Join(err1, err2); err != nil {
		return 0, err
	}
	return time.Duration(utime+stime) * 10 * time.Millisecond, nil
}
