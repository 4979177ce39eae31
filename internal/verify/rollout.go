package verify

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/autorollbackd/autorollbackd/internal/workload"
)

// rolloutState is the verdict of kubectl's status viewers on one status
// (workload.RolloutState).
type rolloutState = workload.RolloutState

const (
	rolloutWaiting     = workload.RolloutWaiting
	rolloutDone        = workload.RolloutDone
	rolloutFailed      = workload.RolloutFailed
	rolloutUnsupported = workload.RolloutUnsupported
)

// judgeRollout reads the workload and judges its rollout.
func (v *Verifier) judgeRollout(ctx context.Context, r *reads) (string, rolloutState, error) {
	target := r.target
	if _, err := workload.For(target.Kind); err != nil {
		return fmt.Sprintf("cannot judge the rollout of kind %q", target.Kind), rolloutUnsupported, nil
	}
	obj, _, err := r.object(ctx)
	if err != nil {
		return "", 0, fmt.Errorf("get %s %s/%s: %w", strings.ToLower(string(target.Kind)), target.Namespace, target.Name, err)
	}
	msg, state := obj.RolloutStatus()
	return msg, state, nil
}

// checkRollout polls the rollout status until it is done (pass), failed for
// good (fail), unsupported (inconclusive) or the timeout passes (fail with
// kubectl's last waiting message; inconclusive when the workload could
// never be read).
func (v *Verifier) checkRollout(ctx context.Context, r *reads) (Status, string) {
	return v.wait(ctx, r.target, v.cfg.Rollout.Timeout.Duration, time.Time{}, rolloutWords, func(ctx context.Context) (string, Status, bool, error) {
		msg, state, err := v.judgeRollout(ctx, r)
		if err != nil {
			return "", "", false, err
		}
		switch state {
		case rolloutDone:
			return msg, StatusPass, true, nil
		case rolloutFailed:
			return msg, StatusFail, true, nil
		case rolloutUnsupported:
			return msg, StatusInconclusive, true, nil
		}
		return msg, "", false, nil
	})
}

var rolloutWords = waitWords{read: "the rollout status", awaited: "the rollout finished", deadline: "Rollout not finished"}
