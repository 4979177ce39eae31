package cli

import (
	"context"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/autorollbackd/autorollbackd/internal/config"
	"github.com/autorollbackd/autorollbackd/internal/policy"
	"github.com/autorollbackd/autorollbackd/internal/webhook"
	"github.com/autorollbackd/autorollbackd/internal/workload"
)

func newExplainCommand(g *globalFlags, env Env) *cobra.Command {
	var payload, sender string
	var client *clientFlags
	cmd := &cobra.Command{
		Use:   "explain --payload FILE",
		Short: "Explain what the daemon would decide for an Alertmanager notification, changing nothing",
		Long: "Decode an Alertmanager webhook payload and print, for each alert, the workload it names, the matching rule,\n" +
			"every guard's result and the final decision with its reason. Workload facts are read from the cluster\n" +
			"(kubectl's client flags: --kubeconfig, --context, --cluster, --user, --as, ...; else $KUBECONFIG, ~/.kube/config\n" +
			"or in-cluster); without one, they are assumed and the output says which.\n" +
			"Nothing is ever changed. Use - as FILE to read standard input.",
		Args: exactArgs(0),
		RunE: func(cmd *cobra.Command, _ []string) error {
			if payload == "" {
				return usageError{fmt.Errorf("--payload is required")}
			}
			cfg, err := loadConfig(cmd, g.configFile, env)
			if err != nil {
				return err
			}
			n, err := readPayload(payload, env)
			if err != nil {
				return err
			}
			if sender != "" {
				if n.Sender, err = senderNamed(cfg.Webhook.Auth, sender); err != nil {
					return usageError{err}
				}
			}
			p, err := policy.Compile(cfg.Policy, policy.WithCluster(cfg.Cluster.Name))
			if err != nil {
				return fmt.Errorf("compile policy: %w", err)
			}
			facts, why := explainFacts(cmd.Context(), client, cfg.Kubernetes)
			return explain(cmd.Context(), env.Stdout, n, p, facts, why, time.Now())
		},
	}
	client = addClientFlags(cmd)
	cmd.PersistentFlags().Lookup("namespace").Usage = "Not used by explain: each alert's labels name its workload's namespace."
	cmd.Flags().StringVar(&payload, "payload", "", "Read the Alertmanager webhook payload (JSON, version 4) from this file, or - for standard input (required).")
	cmd.Flags().StringVar(&sender, "sender", "", "Explain the notification as sent with the credential of this sender of webhook.auth.senders, limited to its namespaces (default: a sender that may name any namespace).")
	return cmd
}

// senderNamed returns the sender of webhook.auth.senders called name.
func senderNamed(auth webhook.AuthConfig, name string) (webhook.Sender, error) {
	var names []string
	for _, s := range auth.Senders {
		if s.Name == name {
			ns := s.Namespaces
			if slices.Contains(ns, "*") {
				ns = nil
			}
			return webhook.Sender{Name: s.Name, Namespaces: ns}, nil
		}
		names = append(names, s.Name)
	}
	if len(names) == 0 {
		return webhook.Sender{}, fmt.Errorf("--sender %q: webhook.auth.senders is empty", name)
	}
	return webhook.Sender{}, fmt.Errorf("--sender %q: no such sender in webhook.auth.senders (%s)", name, strings.Join(names, ", "))
}

func readPayload(file string, env Env) (*webhook.Notification, error) {
	var r io.Reader = env.Stdin
	if file != "-" {
		f, err := os.Open(file)
		if err != nil {
			return nil, fmt.Errorf("read payload: %w", err)
		}
		defer f.Close()
		r = f
	}
	n, err := webhook.Decode(r)
	if err != nil {
		return nil, fmt.Errorf("decode payload %s: %w", file, err)
	}
	return n, nil
}

// factSource returns live facts, or nil when no cluster is reachable.
type factSource interface {
	Facts(ctx context.Context, ref policy.Ref) (*policy.Workload, error)
}

// explainFacts connects to the cluster if one is configured and reachable;
// otherwise it returns nil and the reason.
func explainFacts(ctx context.Context, client *clientFlags, cfg config.Kubernetes) (factSource, string) {
	_, cs, err := client.connect(ctx, cfg)
	if err != nil {
		return nil, err.Error()
	}
	return workload.Live{Client: cs}, ""
}

// assumed is the workload explain imagines when it cannot read the real one:
// everything a rollback needs is in place, so the trace shows what the rules
// and the alert alone decide.
func assumed(ref policy.Ref, a policy.Alert, optIn string) *policy.Workload {
	return &policy.Workload{
		Ref:              ref,
		Labels:           map[string]string{optIn: "true"},
		Revision:         2,
		PreviousRevision: 1,
		RolloutStartedAt: a.StartsAt,
	}
}

func explain(ctx context.Context, w io.Writer, n *webhook.Notification, p *policy.Policy, facts factSource, noCluster string, now time.Time) error {
	if facts == nil {
		fmt.Fprintf(w, "No cluster (%s).\nWorkload facts are ASSUMED: the workload exists, is opted in, is not paused, has a previous revision,\n"+
			"its current revision started rolling out when the alert started, it was never rolled back automatically,\n"+
			"and no GitOps controller manages it. Checks on those facts below show the assumption, not the cluster.\n\n", noCluster)
	} else {
		fmt.Fprintf(w, "Workload facts read from the cluster. The rollback budget is not counted here (assumed unused).\n\n")
	}
	for i, wa := range n.Alerts {
		a := policy.Alert{
			Fingerprint: wa.Fingerprint, Status: wa.Status, Labels: wa.Labels, Annotations: wa.Annotations,
			StartsAt: wa.StartsAt, EndsAt: wa.EndsAt, GeneratorURL: wa.GeneratorURL,
		}
		fmt.Fprintf(w, "alert %d: %s (fingerprint %s, %s since %s)\n", i+1, a.Labels["alertname"], a.Fingerprint, a.Status, a.StartsAt.UTC().Format(time.RFC3339))
		if a.Status == "resolved" {
			fmt.Fprintf(w, "decision: none: resolved alerts never trigger an action; they feed verification\n\n")
			continue
		}
		target, err := p.Resolve(a)
		if err != nil {
			fmt.Fprintf(w, "target:   none: %v\n", err)
		}
		var wl *policy.Workload
		switch {
		case target.IsZero():
		case facts == nil:
			wl = assumed(target, a, p.Config().OptInLabel)
		default:
			if wl, err = facts.Facts(ctx, target); err != nil {
				return fmt.Errorf("explain alert %d: %w", i+1, err)
			}
		}
		origin := policy.Origin{Sender: n.Sender.Name, Namespaces: n.Sender.Namespaces}
		d := p.Evaluate(policy.Input{Alert: a, Target: target, Workload: wl, Origin: origin, Now: now})
		fmt.Fprintln(w, d.String())
	}
	return nil
}
