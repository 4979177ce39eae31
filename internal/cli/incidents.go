package cli

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/cli-runtime/pkg/printers"
	"k8s.io/client-go/rest"

	"github.com/autorollbackd/autorollbackd/internal/config"
	"github.com/autorollbackd/autorollbackd/internal/evidence"
	"github.com/autorollbackd/autorollbackd/internal/incident"
)

// Output formats of -o.
const (
	outputTable = ""
	outputWide  = "wide"
	outputJSON  = "json"
	outputYAML  = "yaml"
)

func newIncidentsCommand(g *globalFlags, env Env) *cobra.Command {
	var (
		open, watchFlag bool
		output          string
	)
	cmd := &cobra.Command{
		Use:   "incidents [list | show ID | revert-flag ID | resume-gitops ID]",
		Short: "List incidents, show one as a readable timeline, or turn back on the feature flag one turned off",
		Long: "Read the incident records from the cluster and list them, newest first, or print one incident's timeline:\n" +
			"alerts, decisions, actions, verification, pages. The records are read in the daemon's namespace: -n/--namespace\n" +
			"if given, else engine.namespace if configured, else the one namespace holding the daemon's records (or, before\n" +
			"its first alert, the chart's Deployment); the kubeconfig context's namespace is not used.\n" +
			"The client flags (--kubeconfig, --context, --cluster, --user, --as, ...) are kubectl's.\n" +
			"revert-flag turns back on the feature flag an incident turned off; see 'incidents revert-flag --help'.\n" +
			"resume-gitops resumes the Argo CD or Flux owner paused before an incident's rollback; see 'incidents resume-gitops --help'.",
		Args: func(cmd *cobra.Command, args []string) error {
			switch {
			case len(args) == 0, len(args) == 1 && args[0] == "list", len(args) == 2 && args[0] == "show":
				return nil
			}
			return usageError{fmt.Errorf("want no argument, list, show ID, revert-flag ID or resume-gitops ID; got %q", args)}
		},
	}
	client := addClientFlags(cmd)
	cmd.PersistentFlags().Lookup("namespace").Usage = "Read the incidents in this namespace, the daemon's (default: the namespace where the daemon is found, see above)."
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		switch output {
		case outputTable, outputWide, outputJSON, outputYAML:
		default:
			return usageError{fmt.Errorf("-o/--output %q: want json, yaml or wide", output)}
		}
		if watchFlag && len(args) == 2 {
			return usageError{errors.New("--watch lists incidents; it does not go with show")}
		}
		cfg, err := loadConfig(cmd, g.configFile, env)
		if err != nil {
			return err
		}
		ctx := cmd.Context()
		s, _, err := client.incidentStore(ctx, cmd, cfg, env)
		if err != nil {
			return err
		}
		if len(args) == 2 {
			v, err := s.Get(ctx, args[1])
			if err != nil {
				return fmt.Errorf("show incident %s in namespace %s: %w", args[1], s.Namespace, err)
			}
			if output == outputJSON || output == outputYAML {
				return printData(env.Stdout, output, v.Incident)
			}
			fmt.Fprint(env.Stdout, terminalSafe(v.Render()))
			return nil
		}
		if watchFlag {
			return watchIncidents(ctx, s, open, output, env.Stdout)
		}
		list, err := s.List(ctx, open)
		if err != nil {
			return err
		}
		incs := make([]*incident.Incident, 0, len(list))
		for _, v := range list {
			incs = append(incs, v.Incident)
		}
		switch output {
		case outputJSON, outputYAML:
			return printData(env.Stdout, output, incs)
		}
		if len(incs) == 0 {
			fmt.Fprintf(env.Stderr, "No incidents in namespace %s.\n", s.Namespace)
			return nil
		}
		t := newTable(env.Stdout, output == outputWide)
		t.header()
		for _, v := range incs {
			t.row(v, time.Now())
		}
		return t.flush()
	}
	cmd.Flags().BoolVar(&open, "open", false, "List only incidents that are not resolved (default false).")
	cmd.Flags().StringVarP(&output, "output", "o", "", "Print as json, yaml or wide (a table with more columns) (default: a table).")
	cmd.Flags().BoolVarP(&watchFlag, "watch", "w", false, "After listing, watch the incidents and print each change as it happens, until interrupted (default false).")
	cmd.AddCommand(newRevertFlagCommand(g, client, env), newResumeGitOpsCommand(g, client, env))
	return cmd
}

// incidentStore connects to the cluster and returns the store of the
// daemon's incidents.
func (f *clientFlags) incidentStore(ctx context.Context, cmd *cobra.Command, cfg *config.Config, env Env) (*incident.Store, *rest.Config, error) {
	rc, cs, err := f.connect(ctx, cfg.Kubernetes)
	if err != nil {
		return nil, nil, err
	}
	ns, err := f.recordsNamespace(ctx, cmd, cfg, rc, func(msg string) {
		fmt.Fprintf(env.Stderr, "%s: warning: %s\n", cmd.CommandPath(), msg)
	})
	if err != nil {
		return nil, nil, err
	}
	return &incident.Store{Client: cs, Namespace: ns}, rc, nil
}

// printData prints v, incident records, with cli-runtime's JSON or YAML
// printer. Records are no Kubernetes objects, so they go to the printer as
// raw JSON.
func printData(w io.Writer, output string, v any) error {
	data, err := json.Marshal(v)
	if err != nil {
		return fmt.Errorf("encode incidents: %w", err)
	}
	data = escapeC1(data)
	var p printers.ResourcePrinter = &printers.JSONPrinter{}
	if output == outputYAML {
		p = &printers.YAMLPrinter{}
	}
	return p.PrintObj(&runtime.Unknown{Raw: data, ContentType: runtime.ContentTypeJSON}, w)
}

// escapeC1 escapes the C1 control characters (U+0080 to U+009F) of JSON
// text, which encoding/json leaves as they are: some terminals act on them
// (U+009B begins a control sequence as ESC [ does), and the YAML printer
// refuses them. In JSON text they can only be inside strings, where the
// escape means the same.
func escapeC1(data []byte) []byte {
	if !bytes.ContainsFunc(data, func(r rune) bool { return r >= 0x80 && r <= 0x9f }) {
		return data
	}
	var out bytes.Buffer
	for _, r := range string(data) {
		if r >= 0x80 && r <= 0x9f {
			fmt.Fprintf(&out, `\u%04x`, r)
			continue
		}
		out.WriteRune(r)
	}
	return out.Bytes()
}

// table is the human listing of incidents; wide adds columns.
type table struct {
	tw   *tabwriter.Writer
	wide bool
}

func newTable(w io.Writer, wide bool) *table {
	return &table{tw: tabwriter.NewWriter(w, 0, 4, 2, ' ', 0), wide: wide}
}

func (t *table) header() {
	h := "ID\tWORKLOAD\tSTATE\tDECISION\tSTARTED\tDURATION"
	if t.wide {
		h += "\tCLUSTER\tREVISION\tALERTS\tACTIONS\tLAST ACTION\tPAGES\tRESOLVED"
	}
	fmt.Fprintln(t.tw, h)
}

func (t *table) row(v *incident.Incident, now time.Time) {
	end := cmp.Or(v.ResolvedAt, now)
	cell := evidence.Clean // one line: a line break or tab would break the table
	fmt.Fprintf(t.tw, "%s\t%s\t%s\t%s (%s)\t%s\t%s", cell(v.ID), cell(v.Target.String()), cell(string(v.State)),
		cell(string(v.Decision.Outcome)), cell(string(v.Decision.Reason)),
		v.StartedAt.UTC().Format(time.RFC3339), end.Sub(v.StartedAt).Round(time.Second))
	if t.wide {
		last := "-"
		if n := len(v.Actions); n > 0 {
			a := v.Actions[n-1]
			last = string(a.Kind)
			switch {
			case a.Error != "":
				last += " (failed)"
			case a.Reason != "":
				last += " (" + a.Reason + ")"
			}
		}
		resolved := "-"
		if !v.ResolvedAt.IsZero() {
			resolved = v.ResolvedAt.UTC().Format(time.RFC3339)
		}
		revision := "-"
		if v.Revision != 0 {
			revision = strconv.FormatInt(v.Revision, 10)
		}
		fmt.Fprintf(t.tw, "\t%s\t%s\t%d\t%d\t%s\t%d\t%s", cell(cmp.Or(v.Cluster, "-")), revision, max(v.AlertsJoined, len(v.Alerts)), len(v.Actions), cell(last), len(v.Pages), resolved)
	}
	fmt.Fprintln(t.tw)
}

func (t *table) flush() error { return t.tw.Flush() }

// watchIncidents lists the incidents, then prints each change of one, as
// `kubectl get --watch` does, until ctx ends: the table's rows (a deleted
// incident's last time), or one JSON or YAML document per change.
func watchIncidents(ctx context.Context, s *incident.Store, open bool, output string, w io.Writer) error {
	sel, err := incident.Selector(open)
	if err != nil {
		return err
	}
	cms := s.Client.CoreV1().ConfigMaps(s.Namespace)
	list, err := cms.List(ctx, metav1.ListOptions{LabelSelector: sel.String()})
	if err != nil {
		return fmt.Errorf("list incidents in namespace %s: %w", s.Namespace, err)
	}
	t := newTable(w, output == outputWide)
	print := func(cm *corev1.ConfigMap) error {
		inc, err := incident.Decode(cm)
		if err != nil {
			fmt.Fprintf(w, "# %v\n", evidence.Clean(err.Error()))
			return nil
		}
		if output == outputJSON || output == outputYAML {
			return printData(w, output, inc)
		}
		t.row(inc, time.Now())
		return t.flush()
	}
	if output != outputJSON && output != outputYAML {
		t.header()
	}
	for i := range list.Items {
		if err := print(&list.Items[i]); err != nil {
			return err
		}
	}
	rv := list.ResourceVersion
	for {
		wi, err := cms.Watch(ctx, metav1.ListOptions{LabelSelector: sel.String(), ResourceVersion: rv, AllowWatchBookmarks: true})
		if ctx.Err() != nil {
			return nil
		}
		if err != nil {
			return fmt.Errorf("watch incidents in namespace %s: %w", s.Namespace, err)
		}
		rv, err = drain(ctx, wi, rv, print)
		wi.Stop()
		if ctx.Err() != nil {
			return nil
		}
		if err != nil {
			return err
		}
	}
}

// drain handles the events of one watch until it closes or ctx ends, and
// returns the resource version to watch again from.
func drain(ctx context.Context, wi watch.Interface, rv string, print func(*corev1.ConfigMap) error) (string, error) {
	for {
		select {
		case <-ctx.Done():
			return rv, nil
		case ev, ok := <-wi.ResultChan():
			if !ok {
				return rv, nil
			}
			if ev.Type == watch.Error {
				err := apierrors.FromObject(ev.Object)
				if apierrors.IsResourceExpired(err) || apierrors.IsGone(err) {
					return rv, fmt.Errorf("watch incidents: the server no longer has their history from version %s; list and watch again: %w", rv, err)
				}
				return rv, fmt.Errorf("watch incidents: %w", err)
			}
			cm, isCM := ev.Object.(*corev1.ConfigMap)
			if !isCM {
				continue
			}
			rv = cm.ResourceVersion
			if ev.Type == watch.Bookmark {
				continue
			}
			if err := print(cm); err != nil {
				return rv, err
			}
		}
	}
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
