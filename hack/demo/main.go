// Command demo starts the local control plane and autorollbackd against it,
// prints where to look, and stops everything on Ctrl-C (or at once with
// --once).
package main

import (
	"context"
	"flag"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"syscall"
	"time"

	"k8s.io/apimachinery/pkg/util/wait"

	"github.com/autorollbackd/autorollbackd/internal/testenv"
)

func main() {
	once := flag.Bool("once", false, "Exit as soon as the daemon is ready instead of running until Ctrl-C (default false).")
	listen := flag.String("listen-address", "127.0.0.1:8080", "Address for autorollbackd to listen on (default 127.0.0.1:8080).")
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, *listen, *once); err != nil {
		fmt.Fprintf(os.Stderr, "demo: %v\n", err)
		os.Exit(1)
	}
}

func say(format string, args ...any) {
	fmt.Printf("[%s] %s\n", time.Now().Format("15:04:05.000"), fmt.Sprintf(format, args...))
}

func run(ctx context.Context, listen string, once bool) error {
	say("starting the local control plane (etcd, kube-apiserver, kube-controller-manager, kube-scheduler, kwok)")
	startCtx, cancel := context.WithTimeout(ctx, 5*time.Minute)
	c, err := testenv.Start(startCtx)
	cancel()
	if err != nil {
		return err
	}
	defer func() {
		say("deleting the local control plane")
		c.Stop()
	}()
	say("control plane ready; kubeconfig %s", c.Kubeconfig)

	daemon := exec.Command("bin/autorollbackd", "serve", "--kubeconfig", c.Kubeconfig, "--listen-address", listen, "--log-format", "text")
	daemon.Stdout, daemon.Stderr = os.Stdout, os.Stderr
	if err := daemon.Start(); err != nil {
		return fmt.Errorf("start bin/autorollbackd (run make build): %w", err)
	}
	exited := make(chan error, 1)
	go func() { exited <- daemon.Wait() }()
	defer func() {
		if daemon.ProcessState == nil {
			_ = daemon.Process.Signal(syscall.SIGTERM)
			<-exited
		}
	}()

	say("waiting for autorollbackd to turn ready")
	err = wait.PollUntilContextTimeout(ctx, 200*time.Millisecond, time.Minute, true, func(ctx context.Context) (bool, error) {
		select {
		case err := <-exited:
			return false, fmt.Errorf("autorollbackd exited: %v", err)
		default:
		}
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+listen+"/readyz", nil)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return false, nil
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK, nil
	})
	if err != nil {
		return fmt.Errorf("wait for autorollbackd to be ready: %w", err)
	}
	say("autorollbackd is ready:")
	fmt.Printf("    metrics    http://%s/metrics\n    readiness  http://%s/readyz\n    kubectl    %s/kubectl --kubeconfig %s get deployments -A\n", listen, listen, c.BinDir, c.Kubeconfig)
	if once {
		return nil
	}
	say("running until Ctrl-C")
	select {
	case <-ctx.Done():
	case err := <-exited:
		return fmt.Errorf("autorollbackd exited: %v", err)
	}
	return nil
}
