package cli

import (
	"cmp"
	"context"
	"fmt"
	"log/slog"
	"os/user"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/spf13/cobra"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/tools/record"
	"k8s.io/client-go/tools/reference"

	"github.com/autorollbackd/autorollbackd/internal/actuator"
	"github.com/autorollbackd/autorollbackd/internal/incident"
	"github.com/autorollbackd/autorollbackd/internal/kubeclient"
)

func newRevertFlagCommand(g *globalFlags, client *clientFlags, env Env) *cobra.Command {
	var dryRun bool
	cmd := &cobra.Command{
		Use:   "revert-flag ID",
		Short: "Turn back on the feature flag incident ID turned off, and restart the workload",
		Long: "Restore the feature flag that incident ID rolled back to the value it had before, as recorded on its ConfigMap,\n" +
			"and restart the workload so that its pods read it: once the fix is deployed, the flag goes back on.\n" +
			"It refuses an incident that did not turn a flag off, and a flag changed by someone since the rollback.",
		Args: exactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			cfg, err := loadConfig(cmd, g.configFile, env)
			if err != nil {
				return err
			}
			ctx := cmd.Context()
			store, _, err := client.incidentStore(ctx, cmd, cfg, env)
			if err != nil {
				return err
			}
			cs := store.Client
			id := args[0]
			inc, err := store.Get(ctx, id)
			if err != nil {
				return fmt.Errorf("read incident %s: %w", id, err)
			}
			if err := flagRolledBack(inc.Incident); err != nil {
				return err
			}
			rec := &eventWriter{ctx: ctx, client: cs, dryRun: dryRun}
			act, err := actuator.New(actuator.Options{
				Client:   cs,
				Recorder: rec,
				// The result or the error is printed; a log line would
				// repeat it.
				Logger:   slog.New(slog.DiscardHandler),
				Registry: prometheus.NewRegistry(),
			})
			if err != nil {
				return err
			}
			res, err := act.RevertFeatureFlag(ctx, actuator.Request{
				Target:   inc.Target,
				Incident: inc.Rollout,
				Why:      fmt.Sprintf("reverted by %s with autorollbackd incidents revert-flag %s", userName(env.Environ), id),
				DryRun:   dryRun,
			}, *inc.FeatureFlag)
			if err != nil {
				return err
			}
			fmt.Fprintln(env.Stdout, res.Message)
			if rec.err != nil {
				fmt.Fprintf(env.Stderr, "%s: warning: %v\n", cmd.CommandPath(), rec.err)
			}
			return nil
		},
	}
	cmd.Flags().BoolVar(&dryRun, "dry-run", false, "Print what would be done, with the API server checking the writes, without changing anything (default false).")
	return cmd
}

// flagRolledBack returns why inc has no feature flag rollback to revert, or
// nil if it has one.
func flagRolledBack(inc *incident.Incident) error {
	f := inc.FeatureFlag
	if f == nil {
		return fmt.Errorf("incident %s turned no feature flag off: nothing to revert", inc.ID)
	}
	for _, a := range inc.Actions {
		// A resumed action is recorded as applied.
		if a.Kind == actuator.KindFeatureFlag && a.Result != nil && a.Result.Outcome == actuator.OutcomeApplied {
			return nil
		}
	}
	return fmt.Errorf("incident %s never applied its rollback of feature flag %s in ConfigMap %s: nothing to revert", inc.ID, f.Key, f.ConfigMap)
}

// userName names the person running the command, for the record of the
// change.
func userName(environ []string) string {
	for _, key := range []string{"USER=", "LOGNAME="} {
		for _, kv := range environ {
			if v, ok := strings.CutPrefix(kv, key); ok && v != "" {
				return v
			}
		}
	}
	if u, err := user.Current(); err == nil && u.Username != "" {
		return u.Username
	}
	return "an unknown user"
}

// eventWriter is an EventRecorder that writes each Event before it returns.
// client-go's recorder writes in the background, and a command that exits
// right after acting would lose the Event. It keeps the first error.
type eventWriter struct {
	ctx    context.Context
	client kubeclient.Interface
	// dryRun sends the Events as server-side dry runs, like the writes they
	// describe.
	dryRun bool
	err    error
}

var _ record.EventRecorder = (*eventWriter)(nil)

func (w *eventWriter) Event(obj runtime.Object, eventtype, reason, message string) {
	w.AnnotatedEventf(obj, nil, eventtype, reason, "%s", message)
}

func (w *eventWriter) Eventf(obj runtime.Object, eventtype, reason, format string, args ...any) {
	w.AnnotatedEventf(obj, nil, eventtype, reason, format, args...)
}

func (w *eventWriter) AnnotatedEventf(obj runtime.Object, annotations map[string]string, eventtype, reason, format string, args ...any) {
	ref, err := reference.GetReference(scheme.Scheme, obj)
	if err != nil {
		w.err = cmp.Or(w.err, fmt.Errorf("record Event %s: %w", reason, err))
		return
	}
	now := metav1.NewTime(time.Now())
	ev := &corev1.Event{
		ObjectMeta: metav1.ObjectMeta{
			Name:        fmt.Sprintf("%s.%x", ref.Name, now.UnixNano()),
			Namespace:   ref.Namespace,
			Annotations: annotations,
		},
		InvolvedObject: *ref,
		Reason:         reason,
		Message:        fmt.Sprintf(format, args...),
		Source:         corev1.EventSource{Component: "autorollbackd"},
		FirstTimestamp: now,
		LastTimestamp:  now,
		Count:          1,
		Type:           eventtype,
	}
	// Recording must not be cut short by an interrupt that came after the
	// change it records.
	ctx, cancel := context.WithTimeout(context.WithoutCancel(w.ctx), 10*time.Second)
	defer cancel()
	var opts metav1.CreateOptions
	if w.dryRun {
		opts.DryRun = []string{metav1.DryRunAll}
	}
	if _, err := w.client.CoreV1().Events(ref.Namespace).Create(ctx, ev, opts); err != nil {
		w.err = cmp.Or(w.err, fmt.Errorf("record Event %s on %s %s/%s: %w", reason, ref.Kind, ref.Namespace, ref.Name, err))
	}
}
