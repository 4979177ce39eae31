package cli

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/prometheus/common/version"
	"github.com/spf13/cobra"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/selection"
	"k8s.io/client-go/metadata"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/autorollbackd/autorollbackd/internal/config"
	"github.com/autorollbackd/autorollbackd/internal/kinds"
	"github.com/autorollbackd/autorollbackd/internal/kubeclient"
)

// clientFlags are kubectl's client flags (--kubeconfig, --context,
// -n/--namespace, --cluster, --user, -s/--server, --token, --as, ...), for
// the commands that talk to a cluster as a person does. They are bound with
// client-go's clientcmd, as kubectl bound them before cli-runtime; the
// defaults and meanings are kubectl's.
type clientFlags struct {
	kubeconfig string
	overrides  clientcmd.ConfigOverrides
	// userExtra is --as-user-extra, key=value, repeated.
	userExtra []string
	// cacheDir is --cache-dir, kubectl's discovery cache; accepted so that
	// kubectl's flags work unchanged, and unused: no discovery is made.
	cacheDir string
}

func addClientFlags(cmd *cobra.Command) *clientFlags {
	f := &clientFlags{overrides: clientcmd.ConfigOverrides{ClusterDefaults: clientcmd.ClusterDefaults}}
	fs := cmd.PersistentFlags()
	fs.StringVar(&f.kubeconfig, "kubeconfig", "", "Path to the kubeconfig file to use for CLI requests.")
	fs.StringVar(&f.cacheDir, "cache-dir", "", "Default cache directory (accepted as kubectl's; these commands cache nothing)")
	names := clientcmd.RecommendedConfigOverrideFlags("")
	// kubectl registers neither basic-authentication flag, and gives
	// --server its short form.
	names.AuthOverrideFlags.Username.LongName = ""
	names.AuthOverrideFlags.Password.LongName = ""
	names.ClusterOverrideFlags.APIServer.ShortName = "s"
	clientcmd.BindOverrideFlags(&f.overrides, fs, names)
	fs.StringArrayVar(&f.userExtra, "as-user-extra", nil, "User extras to impersonate for the operation, this flag can be repeated to specify multiple values for the same key.")
	return f
}

// namespaceFlag is -n/--namespace as given (empty when not given).
func (f *clientFlags) namespaceFlag() string { return f.overrides.Context.Namespace }

// loader is the client configuration the flags name, over the kubeconfig
// the loading rules find.
func (f *clientFlags) loader() clientcmd.ClientConfig {
	rules := clientcmd.NewDefaultClientConfigLoadingRules()
	rules.DefaultClientConfig = &clientcmd.DefaultClientConfig
	rules.ExplicitPath = f.kubeconfig
	overrides := f.overrides
	for _, kv := range f.userExtra {
		k, v, ok := strings.Cut(kv, "=")
		if !ok {
			continue
		}
		if overrides.AuthInfo.ImpersonateUserExtra == nil {
			overrides.AuthInfo.ImpersonateUserExtra = map[string][]string{}
		}
		overrides.AuthInfo.ImpersonateUserExtra[k] = append(overrides.AuthInfo.ImpersonateUserExtra[k], v)
	}
	return clientcmd.NewNonInteractiveDeferredLoadingClientConfig(rules, &overrides)
}

// restConfig is the client configuration the flags name; a kubeconfig named
// only in the configuration (kubernetes.kubeconfig, or its environment
// variable) is used when --kubeconfig is not given.
func (f *clientFlags) restConfig(cfg config.Kubernetes) (*rest.Config, error) {
	if f.kubeconfig == "" && cfg.Kubeconfig != "" {
		f.kubeconfig = cfg.Kubeconfig
	}
	rc, err := f.loader().ClientConfig()
	if err != nil {
		return nil, fmt.Errorf("load Kubernetes client configuration: %w", err)
	}
	rc.QPS = float32(cfg.QPS)
	rc.Burst = cfg.Burst
	rc.UserAgent = "autorollbackd/" + version.Version
	return rc, nil
}

// connect returns a client for the cluster the flags name, checked to reach
// it.
func (f *clientFlags) connect(ctx context.Context, cfg config.Kubernetes) (*rest.Config, kubeclient.Interface, error) {
	rc, err := f.restConfig(cfg)
	if err != nil {
		return nil, nil, err
	}
	cs, err := kubeclient.NewForConfig(rc)
	if err != nil {
		return nil, nil, fmt.Errorf("create Kubernetes client: %w", err)
	}
	pingCtx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if _, err := kubeclient.Ping(pingCtx, cs, rc.Host); err != nil {
		return nil, nil, err
	}
	return rc, cs, nil
}

// recordsNamespace is the namespace of the daemon's incident records:
// -n/--namespace when given, else engine.namespace when configured, else
// the one namespace where a daemon is found (findDaemons). The kubeconfig
// context's namespace is not used: it is where the user works, seldom where
// the daemon is installed.
func (f *clientFlags) recordsNamespace(ctx context.Context, cmd *cobra.Command, cfg *config.Config, rc *rest.Config, warn func(string)) (string, error) {
	if fl := cmd.Flags().Lookup("namespace"); fl != nil && fl.Changed {
		if f.namespaceFlag() == "" {
			return "", usageError{errors.New("-n/--namespace: empty namespace")}
		}
		return f.namespaceFlag(), nil
	}
	if cfg.Engine.Namespace != "" {
		return cfg.Engine.Namespace, nil
	}
	found, err := findDaemons(ctx, rc)
	if apierrors.IsForbidden(err) {
		ns, _, nsErr := f.loader().Namespace()
		if nsErr != nil {
			return "", fmt.Errorf("find the daemon's namespace: %w; and read the namespace of the Kubernetes client configuration: %w", err, nsErr)
		}
		warn(fmt.Sprintf("cannot look for the daemon in every namespace (%v); reading namespace %q of the client configuration, give -n to choose another", err, ns))
		return ns, nil
	}
	if err != nil {
		return "", fmt.Errorf("find the daemon's namespace: %w (or give it with -n)", err)
	}
	switch len(found) {
	case 0:
		return "", errors.New("found no autorollbackd in this cluster: no namespace holds its records or the chart's Deployment; give its namespace with -n")
	case 1:
		return found[0], nil
	}
	return "", fmt.Errorf("found autorollbackd in %d namespaces (%s): choose one with -n/--namespace", len(found), strings.Join(found, ", "))
}

var (
	configMaps  = schema.GroupVersionResource{Version: "v1", Resource: "configmaps"}
	deployments = schema.GroupVersionResource{Group: "apps", Version: "v1", Resource: "deployments"}
	namespaces  = schema.GroupVersionResource{Version: "v1", Resource: "namespaces"}
)

// chartNameLabel and chartName are the label and value the chart puts on
// its Deployment (app.kubernetes.io/name of its selector labels).
const (
	chartNameLabel = "app.kubernetes.io/name"
	chartName      = "autorollbackd"
)

// findDaemons returns, sorted, the namespaces where the daemon keeps its
// records: those holding alert or incident records, or, when none does (a
// daemon that has not received an alert yet), those of the chart's
// Deployment. Namespaces being deleted do not count. Only object metadata
// is read, so records of any size cost little.
func findDaemons(ctx context.Context, rc *rest.Config) ([]string, error) {
	mc, err := metadata.NewForConfig(rc)
	if err != nil {
		return nil, fmt.Errorf("create Kubernetes metadata client: %w", err)
	}
	records, err := labels.NewRequirement(kinds.LabelRecord, selection.Exists, nil)
	if err != nil {
		return nil, fmt.Errorf("select records: %w", err)
	}
	sel := labels.SelectorFromSet(labels.Set{kinds.LabelManagedBy: kinds.ManagedBy}).Add(*records)
	found, err := namespacesOf(ctx, mc, configMaps, sel.String())
	if err != nil {
		return nil, err
	}
	if len(found) == 0 {
		if found, err = namespacesOf(ctx, mc, deployments, labels.Set{chartNameLabel: chartName}.String()); err != nil {
			return nil, err
		}
	}
	live := found[:0]
	for _, ns := range found {
		obj, err := mc.Resource(namespaces).Get(ctx, ns, metav1.GetOptions{})
		// A namespace that cannot be read is kept: it may well be live.
		if err == nil && obj.DeletionTimestamp != nil {
			continue
		}
		live = append(live, ns)
	}
	return live, nil
}

// namespacesOf lists the metadata of the objects of resource matching
// selector in every namespace, a page at a time, and returns their
// namespaces, sorted and each once.
func namespacesOf(ctx context.Context, mc metadata.Interface, resource schema.GroupVersionResource, selector string) ([]string, error) {
	var out []string
	opts := metav1.ListOptions{LabelSelector: selector, Limit: 500}
	for {
		list, err := mc.Resource(resource).List(ctx, opts)
		if err != nil {
			return nil, fmt.Errorf("list %s in all namespaces: %w", resource.Resource, err)
		}
		for _, o := range list.Items {
			if !slices.Contains(out, o.Namespace) {
				out = append(out, o.Namespace)
			}
		}
		if list.Continue == "" {
			break
		}
		opts.Continue = list.Continue
	}
	slices.Sort(out)
	return out, nil
}
