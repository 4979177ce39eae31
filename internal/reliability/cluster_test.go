package reliability

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/util/retry"

	"github.com/autorollbackd/autorollbackd/internal/testenv"
)

const (
	revisionAnnotation = "deployment.kubernetes.io/revision"
	optInLabel         = "autorollback.io/enabled"
)

// goodImage and badImage are the two revisions every workload here has.
func goodImage(name string) string { return name + ":v1" }
func badImage(name string) string  { return name + ":v2-bad" }

// twoRevisions creates an opted-in Deployment with one replica at the good
// image, then rolls out the bad one, and waits until it is at revision 2.
// It returns an error rather than failing the test, so that it can run on
// several goroutines.
func twoRevisions(ctx context.Context, cs kubernetes.Interface, ns, name string) error {
	replicas := int32(1)
	api := cs.AppsV1().Deployments(ns)
	_, err := api.Create(ctx, &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns, Labels: map[string]string{optInLabel: "true"}},
		Spec: appsv1.DeploymentSpec{
			Replicas: &replicas,
			Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": name}},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{"app": name}},
				Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "app", Image: goodImage(name)}}},
			},
		},
	}, metav1.CreateOptions{})
	if err != nil {
		return fmt.Errorf("create deployment %s/%s: %w", ns, name, err)
	}
	if err := waitRevision(ctx, cs, ns, name, "1", 60*time.Second); err != nil {
		return err
	}
	if err := setImage(ctx, cs, ns, name, badImage(name)); err != nil {
		return err
	}
	return waitRevision(ctx, cs, ns, name, "2", 60*time.Second)
}

// setImage rolls out image, as a person with kubectl set image would.
func setImage(ctx context.Context, cs kubernetes.Interface, ns, name, image string) error {
	api := cs.AppsV1().Deployments(ns)
	err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
		d, err := api.Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return err
		}
		d.Spec.Template.Spec.Containers[0].Image = image
		_, err = api.Update(ctx, d, metav1.UpdateOptions{})
		return err
	})
	if err != nil {
		return fmt.Errorf("set image of %s/%s to %s: %w", ns, name, image, err)
	}
	return nil
}

// manyTwoRevisions runs twoRevisions for every name, a few at a time.
func manyTwoRevisions(t testing.TB, cs kubernetes.Interface, ns string, names []string, parallel int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	sem := make(chan struct{}, parallel)
	var (
		wg   sync.WaitGroup
		mu   sync.Mutex
		errs []error
	)
	for _, name := range names {
		wg.Go(func() {
			sem <- struct{}{}
			defer func() { <-sem }()
			if err := twoRevisions(ctx, cs, ns, name); err != nil {
				mu.Lock()
				errs = append(errs, err)
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		t.Fatal(err)
	}
}

func waitRevision(ctx context.Context, cs kubernetes.Interface, ns, name, rev string, timeout time.Duration) error {
	var last string
	err := wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, timeout, true, func(ctx context.Context) (bool, error) {
		d, err := cs.AppsV1().Deployments(ns).Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			last = err.Error()
			return false, nil
		}
		last = d.Annotations[revisionAnnotation]
		return last == rev, nil
	})
	if err != nil {
		return fmt.Errorf("deployment %s/%s at revision %s: not within %s; last seen %q", ns, name, rev, timeout, last)
	}
	return nil
}

// rolledBackOnce checks that the Deployment went through exactly one
// rollback from the bad revision to the good one: kubectl's undo of
// revision 2 to 1 makes revision 3 with the good template, and keeps two
// ReplicaSets. A second rollback would make revision 4 with the bad image.
func rolledBackOnce(ctx context.Context, cs kubernetes.Interface, ns, name string) error {
	d, err := cs.AppsV1().Deployments(ns).Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		return err
	}
	var problems []string
	if rev := d.Annotations[revisionAnnotation]; rev != "3" {
		problems = append(problems, fmt.Sprintf("at revision %s, want 3", rev))
	}
	if img := d.Spec.Template.Spec.Containers[0].Image; img != goodImage(name) {
		problems = append(problems, fmt.Sprintf("image %s, want %s", img, goodImage(name)))
	}
	if from, to := d.Annotations["autorollback.io/rolled-back-from"], d.Annotations["autorollback.io/rolled-back-to"]; from != "2" || to != "1" {
		problems = append(problems, fmt.Sprintf("recorded rollback %q -> %q, want 2 -> 1", from, to))
	}
	rss, err := cs.AppsV1().ReplicaSets(ns).List(ctx, metav1.ListOptions{LabelSelector: "app=" + name})
	if err != nil {
		return err
	}
	var revs []string
	for _, rs := range rss.Items {
		revs = append(revs, rs.Annotations[revisionAnnotation])
	}
	if len(revs) != 2 {
		problems = append(problems, fmt.Sprintf("ReplicaSets at revisions %v, want two (1 became 3)", revs))
	}
	if len(problems) > 0 {
		return fmt.Errorf("deployment %s/%s: %s", ns, name, strings.Join(problems, "; "))
	}
	return nil
}

// controlPlaneProcess finds the pid of a component (kube-apiserver,
// kube-controller-manager, kube-scheduler) of cluster c. kwokctl runs each
// from its cluster directory under the work directory that holds c's
// kubeconfig, so the command line names it; the API server is also matched
// by the port of c.REST.Host, so that another cluster's is never taken.
func controlPlaneProcess(c *testenv.Cluster, component string) (int, error) {
	workDir := filepath.Dir(c.Kubeconfig) + string(filepath.Separator)
	u, err := url.Parse(c.REST.Host)
	if err != nil {
		return 0, fmt.Errorf("parse API server address %q: %w", c.REST.Host, err)
	}
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return 0, err
	}
	var found []int
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		raw, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err != nil || len(raw) == 0 {
			continue
		}
		args := strings.Split(string(bytes.TrimRight(raw, "\x00")), "\x00")
		if filepath.Base(args[0]) != component || !strings.HasPrefix(args[0], workDir) {
			continue
		}
		if component == "kube-apiserver" && !slices.Contains(args, "--secure-port="+u.Port()) {
			continue
		}
		found = append(found, pid)
	}
	if len(found) != 1 {
		return 0, fmt.Errorf("find %s of the cluster in %s (port %s): found pids %v, want one", component, workDir, u.Port(), found)
	}
	return found[0], nil
}

// paused is a set of processes stopped with SIGSTOP.
type paused struct {
	mu   sync.Mutex
	pids []int
	at   time.Time
}

// pause stops the processes with SIGSTOP. Call resume, which is also safe
// to call more than once, from t.Cleanup so that they never stay stopped.
func pause(pids ...int) (*paused, error) {
	p := &paused{at: time.Now()}
	for _, pid := range pids {
		if err := syscall.Kill(pid, syscall.SIGSTOP); err != nil {
			p.resume()
			return nil, fmt.Errorf("SIGSTOP %d: %w", pid, err)
		}
		p.pids = append(p.pids, pid)
	}
	return p, nil
}

// resume continues the processes, in the reverse order of pause, and
// returns how long they were stopped.
func (p *paused) resume() time.Duration {
	p.mu.Lock()
	defer p.mu.Unlock()
	for i := len(p.pids) - 1; i >= 0; i-- {
		_ = syscall.Kill(p.pids[i], syscall.SIGCONT)
	}
	stopped := len(p.pids) > 0
	p.pids = nil
	if !stopped {
		return 0
	}
	return time.Since(p.at)
}

// alive reports whether pid is a running process (not a zombie).
func alive(pid int) bool {
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	// The state follows the command name in parentheses.
	i := bytes.LastIndexByte(raw, ')')
	return i > 0 && i+2 < len(raw) && raw[i+2] != 'Z'
}
