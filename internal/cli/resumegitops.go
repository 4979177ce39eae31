package cli

import (
	"fmt"
	"log/slog"
	"time"

	"github.com/spf13/cobra"
	"k8s.io/client-go/dynamic"
	"k8s.io/utils/clock"

	"github.com/autorollbackd/autorollbackd/internal/gitops"
	"github.com/autorollbackd/autorollbackd/internal/policy"
	"github.com/autorollbackd/autorollbackd/internal/workload"
)

func newResumeGitOpsCommand(g *globalFlags, client *clientFlags, env Env) *cobra.Command {
	return &cobra.Command{
		Use:   "resume-gitops ID",
		Short: "Resume the Argo CD Application or Flux Kustomization/HelmRelease paused before incident ID's rollback",
		Long: "Restore what the daemon recorded when it paused the GitOps owner of incident ID's workload (policy.gitops.mode\n" +
			"pause-and-undo): an Application's self-heal back to its value, a Kustomization's or HelmRelease's suspend back to\n" +
			"false if the daemon set it. Do it once Git holds a fix, or the owner re-applies the bad version.\n" +
			"It refuses an owner the daemon did not pause.",
		Args: exactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			cfg, err := loadConfig(cmd, g.configFile, env)
			if err != nil {
				return err
			}
			ctx := cmd.Context()
			store, rc, err := client.incidentStore(ctx, cmd, cfg, env)
			if err != nil {
				return err
			}
			cs := store.Client
			id := args[0]
			inc, err := store.Get(ctx, id)
			if err != nil {
				return fmt.Errorf("read incident %s: %w", id, err)
			}
			w, err := workload.Live{Client: cs}.Facts(ctx, inc.Target)
			if err != nil {
				return err
			}
			if w == nil {
				return fmt.Errorf("incident %s: %s does not exist", id, inc.Target)
			}
			owner, err := gitops.FindOwner(w, cfg.Policy.GitOps)
			if err != nil {
				return fmt.Errorf("incident %s: %w", id, err)
			}
			dyn, err := dynamic.NewForConfig(rc)
			if err != nil {
				return fmt.Errorf("create Kubernetes dynamic client: %w", err)
			}
			rec := &eventWriter{ctx: ctx, client: cs}
			p := &gitops.Pauser{Dynamic: dyn, Recorder: rec, Logger: slog.New(slog.DiscardHandler), Clock: clock.RealClock{},
				Config: func() policy.GitOps { return cfg.Policy.GitOps }}
			if err := p.Resume(ctx, owner, fmt.Sprintf("by %s with autorollbackd incidents resume-gitops %s at %s",
				userName(env.Environ), id, time.Now().UTC().Format(time.RFC3339))); err != nil {
				return err
			}
			fmt.Fprintf(env.Stdout, "%s resumed\n", owner)
			if rec.err != nil {
				fmt.Fprintf(env.Stderr, "%s: warning: %v\n", cmd.CommandPath(), rec.err)
			}
			return nil
		},
	}
}
