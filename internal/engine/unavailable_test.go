package engine

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"syscall"
	"testing"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/runtime/schema"

	"github.com/autorollbackd/autorollbackd/internal/webhook"
)

// The body of a 503 names the reason from the webhook's fixed list when it
// is known, and only then: a refusal by the API server is not an API
// server that is down.
func TestUnavailableNamesTheReason(t *testing.T) {
	cm := schema.GroupResource{Resource: "configmaps"}
	refused := &url.Error{Op: "Post", URL: "https://10.0.0.1:6443/api/v1/namespaces/ops/configmaps", Err: syscall.ECONNREFUSED}
	for _, tc := range []struct {
		name string
		err  error
		want error
	}{
		{"intake deadline", fmt.Errorf("record alert: %w", context.DeadlineExceeded), webhook.ErrClusterUnavailable},
		{"connection refused", fmt.Errorf("record alert: %w", refused), webhook.ErrClusterUnavailable},
		{"503 from the API server", apierrors.NewServiceUnavailable("etcd leader changed"), webhook.ErrClusterUnavailable},
		{"429 from the API server", apierrors.NewTooManyRequests("slow down", 1), webhook.ErrClusterUnavailable},
		{"server timeout", apierrors.NewServerTimeout(cm, "create", 1), webhook.ErrClusterUnavailable},
		{"500 from the API server", apierrors.NewInternalError(errors.New("boom")), webhook.ErrClusterUnavailable},
		{"forbidden", apierrors.NewForbidden(cm, "x", errors.New("RBAC")), webhook.ErrUnavailable},
		{"conflict", apierrors.NewConflict(cm, "x", errors.New("changed")), webhook.ErrUnavailable},
		{"a reason already given", fmt.Errorf("mailbox: %w", webhook.ErrQueueFull), webhook.ErrQueueFull},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := unavailable(tc.err)
			if !errors.Is(err, webhook.ErrUnavailable) || !errors.Is(err, tc.want) || !errors.Is(err, tc.err) {
				t.Errorf("unavailable(%v) = %v, want it to wrap both it and %v", tc.err, err, tc.want)
			}
			if tc.want == webhook.ErrUnavailable && errors.Is(err, webhook.ErrClusterUnavailable) {
				t.Errorf("unavailable(%v) says the API server is unavailable", tc.err)
			}
		})
	}
}
