// Package testenv runs a real local Kubernetes control plane for tests:
// etcd, kube-apiserver, kube-controller-manager and kube-scheduler started by
// kwokctl from binaries built by hack/testenv.sh, with kwok playing the nodes
// so that Deployments get ReplicaSets and Pods that turn Running and Ready.
//
// A package that needs it calls Run from TestMain; each test calls Require
// and then Namespace for an isolated namespace.
package testenv

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
)

// BinEnv names the environment variable that points at the directory of
// test environment binaries. Without it, hack/testenv.sh --print says where.
const BinEnv = "TESTENV_BIN"

// Cluster is a running local control plane.
type Cluster struct {
	Name       string
	BinDir     string
	Kubeconfig string
	REST       *rest.Config
	Client     kubernetes.Interface
	// Dynamic reaches any resource, custom ones included.
	Dynamic dynamic.Interface

	workDir  string
	stopOnce sync.Once
}

var (
	current  *Cluster
	startErr error
)

// Run starts one cluster for the test binary, runs the tests, tears the
// cluster down, also when a test fails or the run is interrupted, and
// returns the exit code for os.Exit. Under -short it starts nothing, and
// Require skips.
func Run(m *testing.M) int {
	flag.Parse()
	if testing.Short() {
		return m.Run()
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	current, startErr = Start(ctx)
	cancel()
	if startErr == nil {
		sig := make(chan os.Signal, 1)
		signal.Notify(sig, os.Interrupt, syscall.SIGTERM)
		go func() {
			s := <-sig
			fmt.Fprintf(os.Stderr, "testenv: %v: deleting cluster %s\n", s, current.Name)
			current.Stop()
			os.Exit(130)
		}()
	}
	code := m.Run()
	if current != nil {
		current.Stop()
	}
	return code
}

// Require returns the cluster started by Run. It skips the test under
// -short and fails it when the cluster could not be started: a test that
// needs the control plane never passes without one.
func Require(t testing.TB) *Cluster {
	t.Helper()
	if testing.Short() {
		t.Skip("needs the local control plane; skipped in -short mode")
	}
	if current == nil {
		if startErr == nil {
			startErr = errors.New("testenv.Run was not called from TestMain")
		}
		t.Fatalf("local control plane unavailable: %v", startErr)
	}
	return current
}

// Eventually polls cond every 100ms until it returns true, and fails t when
// it has not by the deadline. cond returns a description of the state it
// saw, for the failure message.
func Eventually(t testing.TB, timeout time.Duration, what string, cond func(ctx context.Context) (bool, string)) {
	t.Helper()
	var last string
	err := wait.PollUntilContextTimeout(context.Background(), 100*time.Millisecond, timeout, true, func(ctx context.Context) (bool, error) {
		var ok bool
		ok, last = cond(ctx)
		return ok, nil
	})
	if err != nil {
		t.Fatalf("%s: not within %s; last seen: %s", what, timeout, last)
	}
}

// BinDir returns the directory holding the test environment binaries.
func BinDir() (string, error) {
	if dir := os.Getenv(BinEnv); dir != "" {
		return dir, nil
	}
	root, err := moduleRoot()
	if err != nil {
		return "", err
	}
	out, err := exec.Command(filepath.Join(root, "hack", "testenv.sh"), "--print").Output()
	if err != nil {
		return "", fmt.Errorf("locate test environment binaries with hack/testenv.sh --print: %w", err)
	}
	return strings.TrimSpace(string(out)), nil
}

func moduleRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("find the module root: no go.mod above the working directory")
		}
		dir = parent
	}
}

// Binaries the cluster needs, all built by hack/testenv.sh.
var binaries = []string{"etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kwok", "kwokctl", "kubectl"}

// Options changes how StartWith creates a cluster. The zero value is
// what Start does.
type Options struct {
	// ExtraArgs are more arguments to `kwokctl create cluster`, after the
	// ones every cluster gets; for example "--disable-qps-limits", which
	// lifts the client QPS limits of the controller manager, the scheduler
	// and kwok.
	ExtraArgs []string
	// Nodes is how many fake nodes to register, named kwok-node-0,
	// kwok-node-1, ...; each holds up to 1000 pods. Zero or less means one.
	Nodes int
}

// started counts the clusters this process created, to name them apart.
var started atomic.Int32

// Start creates a cluster with one fake node and waits until it serves.
func Start(ctx context.Context) (*Cluster, error) {
	return StartWith(ctx, Options{})
}

// StartWith creates a cluster as Start does, changed by opts, and waits
// until it serves.
func StartWith(ctx context.Context, opts Options) (*Cluster, error) {
	bin, err := BinDir()
	if err != nil {
		return nil, err
	}
	for _, b := range binaries {
		if _, err := os.Stat(filepath.Join(bin, b)); err != nil {
			return nil, fmt.Errorf("test environment incomplete (run make testenv): %w", err)
		}
	}
	work, err := os.MkdirTemp("", "autorollbackd-testenv-")
	if err != nil {
		return nil, fmt.Errorf("create test environment work directory: %w", err)
	}
	name := fmt.Sprintf("ard-%d", os.Getpid())
	if n := started.Add(1); n > 1 {
		// A second control plane of the same process, as a fleet test has.
		name = fmt.Sprintf("%s-%d", name, n)
	}
	c := &Cluster{
		Name:       name,
		BinDir:     bin,
		Kubeconfig: filepath.Join(work, "kubeconfig"),
		workDir:    work,
	}
	start := time.Now()
	// kwokctl picks free ports when it creates a cluster and binds them only
	// later; test binaries run in parallel would race for the same ports.
	// One creation at a time on the machine.
	unlock, err := lockMachine()
	if err != nil {
		c.Stop()
		return nil, err
	}
	args := []string{"create", "cluster",
		"--runtime", "binary",
		"--etcd-binary", filepath.Join(bin, "etcd"),
		"--kube-apiserver-binary", filepath.Join(bin, "kube-apiserver"),
		"--kube-controller-manager-binary", filepath.Join(bin, "kube-controller-manager"),
		"--kube-scheduler-binary", filepath.Join(bin, "kube-scheduler"),
		"--kwok-controller-binary", filepath.Join(bin, "kwok"),
		"--kubeconfig", c.Kubeconfig,
		// kwok's node heartbeats can lag on a loaded 2-core machine; a node
		// marked NotReady is tainted and its pods evicted, which no test
		// wants. The node's health is not what is under test.
		"--extra-args", "kube-controller-manager=node-monitor-grace-period=1h",
		"--wait", "2m",
	}
	err = c.kwokctl(ctx, append(args, opts.ExtraArgs...)...)
	unlock()
	if err != nil {
		c.Stop()
		return nil, err
	}
	if c.REST, err = clientcmd.BuildConfigFromFlags("", c.Kubeconfig); err != nil {
		c.Stop()
		return nil, fmt.Errorf("load kubeconfig of cluster %s: %w", c.Name, err)
	}
	c.REST.QPS, c.REST.Burst = 100, 200
	if c.Client, err = kubernetes.NewForConfig(c.REST); err != nil {
		c.Stop()
		return nil, fmt.Errorf("create client for cluster %s: %w", c.Name, err)
	}
	if c.Dynamic, err = dynamic.NewForConfig(c.REST); err != nil {
		c.Stop()
		return nil, fmt.Errorf("create dynamic client for cluster %s: %w", c.Name, err)
	}
	for i := range max(opts.Nodes, 1) {
		if err := c.addNode(ctx, fmt.Sprintf("kwok-node-%d", i)); err != nil {
			c.Stop()
			return nil, err
		}
	}
	fmt.Fprintf(os.Stderr, "testenv: cluster %s ready in %s (kubeconfig %s)\n", c.Name, time.Since(start).Round(time.Millisecond), c.Kubeconfig)
	return c, nil
}

// lockMachine takes a machine-wide lock for creating a cluster and returns
// its release.
func lockMachine() (func(), error) {
	f, err := os.OpenFile(filepath.Join(os.TempDir(), "autorollbackd-testenv.lock"), os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, fmt.Errorf("open the test environment lock: %w", err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX); err != nil {
		f.Close()
		return nil, fmt.Errorf("take the test environment lock: %w", err)
	}
	return func() {
		_ = syscall.Flock(int(f.Fd()), syscall.LOCK_UN)
		f.Close()
	}, nil
}

// PIDs returns the process ids of the cluster's components (etcd,
// kube-apiserver, kube-controller-manager, kube-scheduler,
// kwok-controller) by name, as kwokctl recorded them.
func (c *Cluster) PIDs() (map[string]int, error) {
	dir := filepath.Join(c.workDir, "clusters", c.Name, "pids")
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("read the process ids of cluster %s: %w", c.Name, err)
	}
	out := map[string]int{}
	for _, e := range entries {
		name, ok := strings.CutSuffix(e.Name(), ".pid")
		if !ok {
			continue
		}
		b, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err != nil {
			return nil, err
		}
		pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
		if err != nil {
			return nil, fmt.Errorf("process id of %s in cluster %s: %w", name, c.Name, err)
		}
		out[name] = pid
	}
	return out, nil
}

// Stop deletes the cluster and its files. It is safe to call more than once.
func (c *Cluster) Stop() {
	c.stopOnce.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if err := c.kwokctl(ctx, "delete", "cluster"); err != nil {
			fmt.Fprintf(os.Stderr, "testenv: %v\n", err)
		}
		_ = os.RemoveAll(c.workDir)
	})
}

func (c *Cluster) kwokctl(ctx context.Context, args ...string) error {
	args = append([]string{"--name", c.Name}, args...)
	cmd := exec.CommandContext(ctx, filepath.Join(c.BinDir, "kwokctl"), args...)
	cmd.Env = append(os.Environ(), "KWOK_WORKDIR="+c.workDir)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("kwokctl %s: %w\n%s", strings.Join(args, " "), err, out.String())
	}
	return nil
}

// addNode registers a node that kwok manages: its pods turn Running and Ready
// without running any container.
func (c *Cluster) addNode(ctx context.Context, name string) error {
	node := &corev1.Node{
		ObjectMeta: metav1.ObjectMeta{
			Name:        name,
			Annotations: map[string]string{"kwok.x-k8s.io/node": "fake"},
			Labels:      map[string]string{"type": "kwok", "kubernetes.io/hostname": name},
		},
		Status: corev1.NodeStatus{
			Allocatable: corev1.ResourceList{
				corev1.ResourceCPU:    resource.MustParse("64"),
				corev1.ResourceMemory: resource.MustParse("256Gi"),
				corev1.ResourcePods:   resource.MustParse("1000"),
			},
			Capacity: corev1.ResourceList{
				corev1.ResourceCPU:    resource.MustParse("64"),
				corev1.ResourceMemory: resource.MustParse("256Gi"),
				corev1.ResourcePods:   resource.MustParse("1000"),
			},
		},
	}
	if _, err := c.Client.CoreV1().Nodes().Create(ctx, node, metav1.CreateOptions{}); err != nil {
		return fmt.Errorf("create fake node %s: %w", name, err)
	}
	return nil
}

// Namespace creates a namespace for t alone and deletes it when t ends.
func (c *Cluster) Namespace(t testing.TB) string {
	t.Helper()
	ns, err := c.Client.CoreV1().Namespaces().Create(context.Background(), &corev1.Namespace{
		ObjectMeta: metav1.ObjectMeta{GenerateName: "t-"},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("create test namespace: %v", err)
	}
	t.Cleanup(func() {
		err := c.Client.CoreV1().Namespaces().Delete(context.Background(), ns.Name, metav1.DeleteOptions{})
		if err != nil {
			t.Logf("delete test namespace %s: %v", ns.Name, err)
		}
	})
	return ns.Name
}

// Kubectl runs the cluster's kubectl with args and returns its combined
// output.
func (c *Cluster) Kubectl(ctx context.Context, args ...string) (string, error) {
	args = append([]string{"--kubeconfig", c.Kubeconfig}, args...)
	out, err := exec.CommandContext(ctx, filepath.Join(c.BinDir, "kubectl"), args...).CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("kubectl %s: %w: %s", strings.Join(args[2:], " "), err, out)
	}
	return string(out), nil
}
