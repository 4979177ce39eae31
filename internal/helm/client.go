//go:build helm

package helm

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"time"

	"helm.sh/helm/v3/pkg/action"
	"helm.sh/helm/v3/pkg/kube"
	"helm.sh/helm/v3/pkg/release"
	"helm.sh/helm/v3/pkg/storage"
	"helm.sh/helm/v3/pkg/storage/driver"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/client-go/discovery"
	"k8s.io/client-go/discovery/cached/memory"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/restmapper"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"

	"github.com/autorollbackd/autorollbackd/internal/kubeclient"
)

// SDK reports that this build rolls releases back with the Helm SDK (the
// helm build tag).
const SDK = true

// Client reads and rolls back releases with the Helm SDK.
type Client struct {
	// REST reaches the cluster; Helm's rollback applies the objects of the
	// release through it.
	REST *rest.Config
	// Client reads and writes the release records.
	Client kubeclient.Interface
	Logger *slog.Logger
}

// DefaultHookTimeout bounds the release's rollback hooks when the caller's
// context has no deadline; Helm's rollback takes no context.
const DefaultHookTimeout = 5 * time.Minute

// History returns every revision of the release, newest first; ErrNotFound
// when it has none. The SDK's storage takes no context.
func (c *Client) History(_ context.Context, namespace, name string) ([]Revision, error) {
	rels, err := storage.Init(driver.NewSecrets(c.Client.CoreV1().Secrets(namespace))).History(name)
	if errors.Is(err, driver.ErrReleaseNotFound) || err == nil && len(rels) == 0 {
		return nil, fmt.Errorf("read the history of Helm release %s/%s: %w", namespace, name, ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("read the history of Helm release %s/%s: %w", namespace, name, err)
	}
	revs := make([]Revision, 0, len(rels))
	for _, r := range rels {
		rev := Revision{Number: r.Version, Manifest: r.Manifest}
		if r.Info != nil {
			rev.Status, rev.Description = r.Info.Status.String(), r.Info.Description
		}
		revs = append(revs, rev)
	}
	slices.SortFunc(revs, func(a, b Revision) int { return b.Number - a.Number })
	return revs, nil
}

// Rollback rolls the release back to revision `to` as `helm rollback` does,
// provided its newest revision is still `current` and deployed: the new
// revision, current+1, is the one the SDK records. The check is kept
// through the write: the SDK creates the new revision's record before it
// applies anything, and the record is refused unless it is current+1, which
// the API server creates only once (ErrMoved otherwise). Hooks run, bounded
// by ctx's deadline or DefaultHookTimeout; old revisions are never pruned.
// A dry run checks the same and changes nothing.
func (c *Client) Rollback(ctx context.Context, namespace, name string, current, to int, dryRun bool) error {
	cfg := &action.Configuration{}
	logf := func(format string, v ...any) {
		c.Logger.Debug(fmt.Sprintf(format, v...), "component", "helm", "namespace", namespace, "release", name)
	}
	if err := cfg.Init(&restGetter{config: c.REST, namespace: namespace}, namespace, "secret", logf); err != nil {
		return fmt.Errorf("set up the Helm SDK for release %s/%s: %w", namespace, name, err)
	}
	if kc, ok := cfg.KubeClient.(*kube.Client); ok {
		kc.Namespace = namespace
	}
	cfg.Releases = storage.Init(guard{Driver: driver.NewSecrets(c.Client.CoreV1().Secrets(namespace)), name: name, next: current + 1})

	last, err := cfg.Releases.Last(name)
	switch {
	case errors.Is(err, driver.ErrReleaseNotFound):
		return fmt.Errorf("roll back Helm release %s/%s: %w", namespace, name, ErrNotFound)
	case err != nil:
		return fmt.Errorf("roll back Helm release %s/%s: read its newest revision: %w", namespace, name, err)
	case last.Version != current:
		return fmt.Errorf("roll back Helm release %s/%s: %w: now at revision %d, planned on %d", namespace, name, ErrMoved, last.Version, current)
	case last.Info == nil || last.Info.Status != release.StatusDeployed:
		return fmt.Errorf("roll back Helm release %s/%s: %w: revision %d is %s", namespace, name, ErrNotDeployed, last.Version, statusOf(last))
	}

	rb := action.NewRollback(cfg)
	rb.Version = to
	rb.DryRun = dryRun
	rb.Timeout = DefaultHookTimeout
	if dl, ok := ctx.Deadline(); ok {
		rb.Timeout = time.Until(dl)
	}
	if err := rb.Run(name); err != nil {
		return fmt.Errorf("roll back Helm release %s/%s from revision %d to %d: %w", namespace, name, current, to, err)
	}
	return nil
}

func statusOf(r *release.Release) string {
	if r.Info == nil {
		return "without status"
	}
	return r.Info.Status.String()
}

// guard is the release storage of one rollback: it creates no record of the
// release but revision next.
type guard struct {
	driver.Driver
	name string
	next int
}

func (g guard) Create(key string, rls *release.Release) error {
	if rls.Name == g.name && rls.Version != g.next {
		return fmt.Errorf("record revision %d of release %s: %w: planned to record revision %d", rls.Version, rls.Name, ErrMoved, g.next)
	}
	err := g.Driver.Create(key, rls)
	if errors.Is(err, driver.ErrReleaseExists) {
		return fmt.Errorf("record revision %d of release %s: %w: %w", rls.Version, rls.Name, ErrMoved, err)
	}
	return err
}

// restGetter gives the Helm SDK the daemon's REST config, with the release's
// namespace as the default for objects whose manifest names none.
type restGetter struct {
	config    *rest.Config
	namespace string

	mu        sync.Mutex
	discovery discovery.CachedDiscoveryInterface
}

func (g *restGetter) ToRESTConfig() (*rest.Config, error) { return rest.CopyConfig(g.config), nil }

func (g *restGetter) ToDiscoveryClient() (discovery.CachedDiscoveryInterface, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.discovery == nil {
		dc, err := discovery.NewDiscoveryClientForConfig(g.config)
		if err != nil {
			return nil, fmt.Errorf("discovery client: %w", err)
		}
		g.discovery = memory.NewMemCacheClient(dc)
	}
	return g.discovery, nil
}

func (g *restGetter) ToRESTMapper() (meta.RESTMapper, error) {
	dc, err := g.ToDiscoveryClient()
	if err != nil {
		return nil, err
	}
	return restmapper.NewDeferredDiscoveryRESTMapper(dc), nil
}

func (g *restGetter) ToRawKubeConfigLoader() clientcmd.ClientConfig { return namespaced{g} }

// namespaced is the kubeconfig the SDK asks for its default namespace.
type namespaced struct{ g *restGetter }

func (n namespaced) RawConfig() (clientcmdapi.Config, error) { return clientcmdapi.Config{}, nil }
func (n namespaced) ClientConfig() (*rest.Config, error)     { return n.g.ToRESTConfig() }
func (n namespaced) Namespace() (string, bool, error)        { return n.g.namespace, true, nil }
func (n namespaced) ConfigAccess() clientcmd.ConfigAccess {
	return clientcmd.NewDefaultClientConfigLoadingRules()
}
