package cli

import (
	"fmt"

	"github.com/spf13/cobra"
	"sigs.k8s.io/yaml"
)

func newCheckConfigCommand(env Env) *cobra.Command {
	return &cobra.Command{
		Use:   "check-config FILE",
		Short: "Validate a configuration file and print the effective configuration, secrets redacted",
		Long: "Validate a configuration file as serve would load it (with the AUTOROLLBACKD_* environment on top)\n" +
			"and print the effective configuration with secrets redacted. Exits 1 and names every bad key on error.\n" +
			"Warns on stderr, and still exits 0, of what is valid but probably a mistake: escalation levels without notifiers page nobody.",
		Args: exactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			cfg, err := loadConfig(cmd, args[0], env)
			if err != nil {
				return err
			}
			out, err := yaml.Marshal(cfg)
			if err != nil {
				return fmt.Errorf("print the effective configuration: %w", err)
			}
			fmt.Fprintf(env.Stdout, "# %s: configuration OK\n%s", args[0], out)
			for _, w := range cfg.Warnings() {
				fmt.Fprintf(env.Stderr, "%s: warning: %v\n", cmd.CommandPath(), w)
			}
			return nil
		},
	}
}
