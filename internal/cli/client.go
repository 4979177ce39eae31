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
	"k8s.io/cli-runtime/pkg/genericclioptions"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/metadata"
	"k8s.io/client-go/rest"

	"github.com/autorollbackd/autorollbackd/internal/config"
	"github.com/autorollbackd/autorollbackd/internal/kinds"
	"github.com/autorollbackd/autorollbackd/internal/kube"
)

// clientFlags are kubectl's client flags (--kubeconfig, --context,
// -n/--namespace, --cluster, --user, --server, --token, --as, ...), for the
// commands that talk to a cluster as a person does.
type clientFlags struct {
	*genericclioptions.ConfigFlags
}

func addClientFlags(cmd *cobra.Command) *clientFlags {
	f := &clientFlags{genericclioptions.NewConfigFlags(false)}
	f.AddFlags(cmd.PersistentFlags())
	return f
}

// restConfig is the client configuration the flags name; a kubeconfig named
// only in the configuration (kubernetes.kubeconfig, or its environment
// variable) is used when --kubeconfig is not given.
func (f *clientFlags) restConfig(cfg config.Kubernetes) (*rest.Config, error) {
	if *f.KubeConfig == "" && cfg.Kubeconfig != "" {
		*f.KubeConfig = cfg.Kubeconfig
	}
	rc, err := f.ToRESTConfig()
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
func (f *clientFlags) connect(ctx context.Context, cfg config.Kubernetes) (*rest.Config, kubernetes.Interface, error) {
	rc, err := f.restConfig(cfg)
	if err != nil {
		return nil, nil, err
	}
	cs, err := kubernetes.NewForConfig(rc)
	if err != nil {
		return nil, nil, fmt.Errorf("create Kubernetes client: %w", err)
	}
	pingCtx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if _, err := kube.Ping(pingCtx, cs, rc.Host); err != nil {
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
		if *f.Namespace == "" {
			return "", usageError{errors.New("-n/--namespace: empty namespace")}
		}
		return *f.Namespace, nil
	}
	if cfg.Engine.Namespace != "" {
		return cfg.Engine.Namespace, nil
	}
	found, err := findDaemons(ctx, rc)
	if apierrors.IsForbidden(err) {
		ns, _, nsErr := f.ToRawKubeConfigLoader().Namespace()
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
