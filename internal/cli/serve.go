package cli

import (
	"github.com/spf13/cobra"

	"github.com/autorollbackd/autorollbackd/internal/app"
	"github.com/autorollbackd/autorollbackd/internal/config"
	"github.com/autorollbackd/autorollbackd/internal/logging"
)

func newServeCommand(g *globalFlags, env Env) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "serve",
		Short: "Run the daemon: receive Alertmanager webhooks and act on them",
		Args:  exactArgs(0),
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := loadConfig(cmd, g.configFile, env)
			if err != nil {
				return err
			}
			out := logging.NewWriter(env.Stderr)
			defer out.Close()
			logger, err := app.NewLogger(out, cfg.Log)
			if err != nil {
				return err
			}
			return app.Run(cmd.Context(), app.Options{
				Config:     cfg,
				ConfigFile: g.configFile,
				Reload:     func() (*config.Config, error) { return loadConfig(cmd, g.configFile, env) },
				Logger:     logger,
			})
		},
	}
	cmd.Flags().String("kubeconfig", "", "Use this kubeconfig file (default: $KUBECONFIG, then ~/.kube/config, then the in-cluster service account).")
	cmd.Flags().String("listen-address", config.Default().Server.ListenAddress, "Serve the webhook, probes and metrics on this address.")
	return cmd
}
