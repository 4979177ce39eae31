package actuator

import (
	"errors"
	"fmt"
	"testing"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/runtime/schema"
)

// The reasons are metric labels and are kept in incident records: their
// strings must not change, and only those that may pass are retried.
func TestFailureReason(t *testing.T) {
	gr := schema.GroupResource{Group: "apps", Resource: "deployments"}
	for _, tc := range []struct {
		err       error
		want      string
		retryable bool
	}{
		{fmt.Errorf("roll back: %w", ErrChanged), "changed", false},
		{ErrNoHistory, "no_history", false},
		{ErrPaused, "paused", false},
		{fmt.Errorf("wrapped: %w", ErrSettling), "settling", true},
		{ErrNotScalable, "not_scalable", false},
		{ErrTaskFailed, "task_failed", false},
		{fmt.Errorf("%w: revision 3 is pending-upgrade", ErrReleaseNotDeployed), "release_not_deployed", false},
		{fmt.Errorf("%w: none of 2 revisions", ErrNoReleaseRevision), "no_release_revision", false},
		{fmt.Errorf("%w: revision 3", ErrReleaseDrifted), "release_drifted", false},
		{apierrors.NewForbidden(gr, "svc", errors.New("no")), "forbidden", false},
		{apierrors.NewNotFound(gr, "svc"), "not_found", false},
		{apierrors.NewConflict(gr, "svc", errors.New("changed")), "conflict", true},
		{errors.New("connection refused"), "error", true},
	} {
		got := FailureReason(tc.err)
		if string(got) != tc.want || got.Retryable() != tc.retryable {
			t.Errorf("FailureReason(%v) = %q, retryable %v; want %q, retryable %v", tc.err, got, got.Retryable(), tc.want, tc.retryable)
		}
	}
}
