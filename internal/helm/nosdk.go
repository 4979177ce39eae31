//go:build !helm

package helm

import (
	"context"
	"log/slog"

	"k8s.io/client-go/rest"

	"github.com/autorollbackd/autorollbackd/internal/kubeclient"
)

// SDK reports that this build rolls releases back with the Helm SDK (the
// helm build tag). The SDK brings kubectl's and cli-runtime's packages and
// every API group's client with it, about 38 MB of the binary, so only the
// helm build carries it; without it policy.helm.mode rollback-release is a
// configuration error.
const SDK = false

// Client stands for the Helm SDK's client in a build without it: every
// call fails with ErrNoSDK. The policy refuses rollback-release in such a
// build, so the daemon never calls it.
type Client struct {
	REST   *rest.Config
	Client kubeclient.Interface
	Logger *slog.Logger
}

// History fails: this build has no Helm SDK.
func (c *Client) History(context.Context, string, string) ([]Revision, error) {
	return nil, ErrNoSDK
}

// Rollback fails: this build has no Helm SDK.
func (c *Client) Rollback(context.Context, string, string, int, int, bool) error {
	return ErrNoSDK
}
