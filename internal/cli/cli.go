// Package cli is the autorollbackd command line: it turns flags, the
// environment and the config file into options and runs the subcommand.
package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/spf13/cobra"

	"github.com/autorollbackd/autorollbackd/internal/config"
)

// Exit codes.
const (
	ExitOK    = 0
	ExitError = 1
	ExitUsage = 2
)

// usageError marks a mistake on the command line, as opposed to a failure
// while running.
type usageError struct{ err error }

func (e usageError) Error() string { return e.err.Error() }
func (e usageError) Unwrap() error { return e.err }

// Env is the process's surroundings, explicit so tests can supply their own.
type Env struct {
	Stdin          io.Reader
	Stdout, Stderr io.Writer
	// Environ is the environment as KEY=value pairs.
	Environ []string
	// Program is the base name the program was run by. PluginName makes
	// it the kubectl plugin.
	Program string
}

// PluginName is the program's name as a kubectl plugin: kubectl runs an
// executable of that name on its PATH for `kubectl autorollback ...`.
const PluginName = "kubectl-autorollback"

// Execute runs the command line args and returns the process exit code.
// Errors are printed to env.Stderr as one line per problem, never as a stack
// trace.
func Execute(ctx context.Context, args []string, env Env) int {
	root := newRootCommand(env)
	root.SetArgs(args)
	cmd, err := root.ExecuteContextC(ctx)
	if err == nil {
		return ExitOK
	}
	name := root.DisplayName()
	if cmd != nil {
		name = cmd.CommandPath()
	}
	var ue usageError
	if errors.As(err, &ue) {
		fmt.Fprintf(env.Stderr, "%s: %v (see '%s --help')\n", name, ue.err, name)
		return ExitUsage
	}
	for _, line := range strings.Split(err.Error(), "\n") {
		fmt.Fprintf(env.Stderr, "%s: %s\n", name, line)
	}
	return ExitError
}

// globalFlags are shared by every subcommand that reads the configuration.
type globalFlags struct {
	configFile string
}

// flagKeys maps flags to the configuration keys they override.
var flagKeys = map[string]string{
	"kubeconfig":     "kubernetes.kubeconfig",
	"log-level":      "log.level",
	"log-format":     "log.format",
	"listen-address": "server.listenAddress",
}

func newRootCommand(env Env) *cobra.Command {
	var g globalFlags
	root := &cobra.Command{
		Use:           "autorollbackd",
		Short:         "Roll back bad Kubernetes rollouts when Alertmanager says so, by the runbook",
		SilenceUsage:  true,
		SilenceErrors: true,
		Args:          cobra.ArbitraryArgs,
		// Without a subcommand there is nothing to do; say so instead of
		// exiting 0.
		RunE: func(cmd *cobra.Command, args []string) error {
			if len(args) > 0 {
				return usageError{fmt.Errorf("unknown command %q", args[0])}
			}
			return usageError{errors.New("a subcommand is required")}
		},
	}
	root.SetOut(env.Stdout)
	root.SetErr(env.Stderr)
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return usageError{err} })
	root.CompletionOptions.DisableDefaultCmd = true

	def := config.Default()
	pf := root.PersistentFlags()
	pf.StringVar(&g.configFile, "config", "", "Read the configuration from this YAML file (default: none; built-in defaults, environment and flags only).")
	pf.String("log-level", def.Log.Level, "Log at this level: debug, info, warn or error.")
	pf.String("log-format", def.Log.Format, "Write logs as json or text.")

	root.AddCommand(
		newCheckConfigCommand(env),
		newExplainCommand(&g, env),
		newIncidentsCommand(&g, env),
		newVersionCommand(env),
	)
	if env.Program == PluginName {
		// A kubectl plugin reads and explains; running the daemon is no
		// part of it.
		root.Use = PluginName
		root.Annotations = map[string]string{cobra.CommandDisplayNameAnnotation: "kubectl autorollback"}
		root.Short = "Read autorollbackd's incidents and explain its decisions"
	} else {
		root.AddCommand(newServeCommand(&g, env))
	}
	return root
}

// loadConfig reads the configuration with the command's flags on top.
func loadConfig(cmd *cobra.Command, file string, env Env) (*config.Config, error) {
	keys := map[string]string{}
	for name, key := range flagKeys {
		if cmd.Flags().Lookup(name) != nil {
			keys[name] = key
		}
	}
	return config.Load(config.Source{File: file, Flags: cmd.Flags(), FlagKeys: keys, Environ: env.Environ})
}

// exactArgs is cobra.ExactArgs with the mistake marked as a usage error.
func exactArgs(n int) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		if err := cobra.ExactArgs(n)(cmd, args); err != nil {
			return usageError{err}
		}
		return nil
	}
}
