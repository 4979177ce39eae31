// Command autorollbackd rolls back bad Kubernetes rollouts when Alertmanager
// reports them, following the service rollback runbook.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"github.com/autorollbackd/autorollbackd/internal/cli"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := cli.Execute(ctx, os.Args[1:], cli.Env{Stdin: os.Stdin, Stdout: os.Stdout, Stderr: os.Stderr, Environ: os.Environ()})
	stop()
	os.Exit(code)
}
