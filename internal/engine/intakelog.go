package engine

import (
	"context"
	"log/slog"

	"github.com/prometheus/alertmanager/template"

	"github.com/autorollbackd/autorollbackd/internal/policy"
)

// alertLog writes the log lines about one alert of a notification, each
// with the alert's fingerprint and name. It adds them only to a line that
// is written: a logger built per alert (slog.Logger.With) would cost every
// alert of every notification, logged or not.
type alertLog struct {
	l  *slog.Logger
	wa *template.Alert
}

func (a alertLog) enabled(ctx context.Context, level slog.Level) bool {
	return a.l.Enabled(ctx, level)
}

func (a alertLog) log(level slog.Level, msg string, args ...any) {
	ctx := context.Background()
	if !a.l.Enabled(ctx, level) {
		return
	}
	attrs := make([]any, 0, 4+len(args))
	attrs = append(attrs, "fingerprint", clip(a.wa.Fingerprint, 64), "alertname", clip(a.wa.Labels["alertname"], 256))
	a.l.Log(ctx, level, msg, append(attrs, args...)...)
}

func (a alertLog) Debug(msg string, args ...any) { a.log(slog.LevelDebug, msg, args...) }
func (a alertLog) Info(msg string, args ...any)  { a.log(slog.LevelInfo, msg, args...) }
func (a alertLog) Warn(msg string, args ...any)  { a.log(slog.LevelWarn, msg, args...) }
func (a alertLog) Error(msg string, args ...any) { a.log(slog.LevelError, msg, args...) }

// refuse is the outcome of the alerts intake refuses before the policy
// sees them, as the notification's log line counts them.
const refuse = string(policy.OutcomeRefuse)
