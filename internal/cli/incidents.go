package cli

import (
	"cmp"
	"context"
	"fmt"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"k8s.io/client-go/kubernetes"

	"github.com/autorollbackd/autorollbackd/internal/config"
	"github.com/autorollbackd/autorollbackd/internal/evidence"
	"github.com/autorollbackd/autorollbackd/internal/incident"
	"github.com/autorollbackd/autorollbackd/internal/kube"
)

func newIncidentsCommand(g *globalFlags, env Env) *cobra.Command {
	var open bool
	cmd := &cobra.Command{
		Use:   "incidents [list | show ID | revert-flag ID | resume-gitops ID]",
		Short: "List incidents, show one as a readable timeline, or turn back on the feature flag one turned off",
		Long: "Read the incident records from the cluster (the namespace of engine.namespace, else the kubeconfig context's)\n" +
			"and list them, newest first, or print one incident's timeline: alerts, decisions, actions, verification, pages.\n" +
			"revert-flag turns back on the feature flag an incident turned off; see 'incidents revert-flag --help'.\n" +
			"resume-gitops resumes the Argo CD or Flux owner paused before an incident's rollback; see 'incidents resume-gitops --help'.",
		Args: func(cmd *cobra.Command, args []string) error {
			switch {
			case len(args) == 0, len(args) == 1 && args[0] == "list", len(args) == 2 && args[0] == "show":
				return nil
			}
			return usageError{fmt.Errorf("want no argument, list, show ID, revert-flag ID or resume-gitops ID; got %q", args)}
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			cfg, err := loadConfig(cmd, g.configFile, env)
			if err != nil {
				return err
			}
			s, err := incidentStore(cmd.Context(), cfg)
			if err != nil {
				return err
			}
			if len(args) == 2 {
				v, err := s.Get(cmd.Context(), args[1])
				if err != nil {
					return fmt.Errorf("show incident %s: %w", args[1], err)
				}
				fmt.Fprint(env.Stdout, terminalSafe(v.Render()))
				return nil
			}
			list, err := s.List(cmd.Context(), open)
			if err != nil {
				return err
			}
			tw := tabwriter.NewWriter(env.Stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "ID\tWORKLOAD\tSTATE\tDECISION\tSTARTED\tDURATION")
			for _, v := range list {
				end := cmp.Or(v.ResolvedAt, time.Now())
				cell := evidence.Clean // one line: a line break or tab would break the table
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s (%s)\t%s\t%s\n", cell(v.ID), cell(v.Target.String()), cell(string(v.State)),
					cell(string(v.Decision.Outcome)), cell(string(v.Decision.Reason)),
					v.StartedAt.UTC().Format(time.RFC3339), end.Sub(v.StartedAt).Round(time.Second))
			}
			return tw.Flush()
		},
	}
	cmd.Flags().BoolVar(&open, "open", false, "List only incidents that are not resolved (default false).")
	cmd.AddCommand(newRevertFlagCommand(g, env), newResumeGitOpsCommand(g, env))
	return cmd
}

func incidentStore(ctx context.Context, cfg *config.Config) (*incident.Store, error) {
	cs, ns, err := clusterClient(ctx, cfg)
	if err != nil {
		return nil, err
	}
	return &incident.Store{Client: cs, Namespace: cmp.Or(cfg.Engine.Namespace, ns)}, nil
}

// clusterClient returns a client for the configured cluster, checked to
// reach it, and the namespace of the client configuration.
func clusterClient(ctx context.Context, cfg *config.Config) (kubernetes.Interface, string, error) {
	rc, ns, err := kube.RESTConfig(cfg.Kubernetes)
	if err != nil {
		return nil, "", err
	}
	cs, err := kubernetes.NewForConfig(rc)
	if err != nil {
		return nil, "", fmt.Errorf("create Kubernetes client: %w", err)
	}
	pingCtx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if _, err := kube.Ping(pingCtx, cs, rc.Host); err != nil {
		return nil, "", err
	}
	return cs, ns, nil
}

// terminalSafe makes text from an incident record safe to print on a
// terminal. Alert labels, annotations and URLs come from whoever sent the
// alert, and an escape sequence in them (ESC [ ... to clear the screen or
// move the cursor, ESC ] ... BEL to set the title or write to the
// clipboard) would act on the reader's terminal. Each line is cleaned as
// evidence.Clean cleans untrusted text; the line breaks are kept.
func terminalSafe(text string) string {
	lines := strings.Split(text, "\n")
	for i, l := range lines {
		lines[i] = evidence.Clean(l)
	}
	return strings.Join(lines, "\n")
}
