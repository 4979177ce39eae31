// Command autorollbackd rolls back bad Kubernetes rollouts when Alertmanager
// reports them, following the service rollback runbook. Run by the name
// kubectl-autorollback (a symlink), it is the kubectl plugin `kubectl
// autorollback`: the same commands but serve.
package main

import (
	"context"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/autorollbackd/autorollbackd/internal/cli"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := cli.Execute(ctx, os.Args[1:], cli.Env{Stdin: os.Stdin, Stdout: os.Stdout, Stderr: os.Stderr, Environ: os.Environ(),
		Program: strings.TrimSuffix(filepath.Base(os.Args[0]), ".exe")})
	stop()
	os.Exit(code)
}
