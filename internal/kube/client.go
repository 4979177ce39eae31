// Package kube builds the Kubernetes client the daemon talks through.
package kube

import (
	"fmt"
	"log/slog"

	"github.com/prometheus/common/version"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/klog/v2"

	"github.com/autorollbackd/autorollbackd/internal/config"
)

// RESTConfig loads the client configuration from the kubeconfig file named in
// cfg, else $KUBECONFIG, else ~/.kube/config, else the in-cluster service
// account, and applies the configured rate limits. It also returns the
// namespace the configuration points at: the pod's own namespace in a
// cluster, else the kubeconfig context's.
func RESTConfig(cfg config.Kubernetes) (*rest.Config, string, error) {
	rules := clientcmd.NewDefaultClientConfigLoadingRules()
	rules.ExplicitPath = cfg.Kubeconfig
	cc := clientcmd.NewNonInteractiveDeferredLoadingClientConfig(rules, &clientcmd.ConfigOverrides{})
	rc, err := cc.ClientConfig()
	if err != nil {
		return nil, "", fmt.Errorf("load Kubernetes client configuration: %w", err)
	}
	ns, _, err := cc.Namespace()
	if err != nil {
		return nil, "", fmt.Errorf("read the namespace of the Kubernetes client configuration: %w", err)
	}
	// Protobuf, as kube-controller-manager talks: it costs the API server
	// and the daemon less CPU than JSON to encode and decode, for every
	// record write and every object the informers list and watch. Clients
	// of custom resources (dynamic ones) ask for JSON whatever this says.
	rc.ContentType = runtime.ContentTypeProtobuf
	rc.AcceptContentTypes = runtime.ContentTypeProtobuf + "," + runtime.ContentTypeJSON
	rc.QPS = float32(cfg.QPS)
	rc.Burst = cfg.Burst
	rc.UserAgent = "autorollbackd/" + version.Version
	return rc, ns, nil
}

// RouteKlog sends client-go's klog output into logger, so the daemon writes
// one stream of structured logs.
func RouteKlog(logger *slog.Logger) {
	klog.SetSlogLogger(logger.With("component", "client-go"))
}
