// Package kubeclient is the Kubernetes client the daemon talks through: the
// typed clients of the API groups it uses, and no other. client-go's
// all-groups clientset would compile in every group's types and methods
// (text/template's reflective calls make the linker keep every exported
// method of a reachable type), megabytes the daemon never runs.
package kubeclient

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"

	apiversion "k8s.io/apimachinery/pkg/version"
	appsv1 "k8s.io/client-go/kubernetes/typed/apps/v1"
	batchv1 "k8s.io/client-go/kubernetes/typed/batch/v1"
	coordinationv1 "k8s.io/client-go/kubernetes/typed/coordination/v1"
	corev1 "k8s.io/client-go/kubernetes/typed/core/v1"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/util/flowcontrol"
)

// Interface is the API groups the daemon uses. client-go's clientset and
// its fake satisfy it, so tests may pass either.
type Interface interface {
	CoreV1() corev1.CoreV1Interface
	AppsV1() appsv1.AppsV1Interface
	BatchV1() batchv1.BatchV1Interface
	CoordinationV1() coordinationv1.CoordinationV1Interface
}

// Clients is an Interface over one HTTP client shared by its groups.
type Clients struct {
	core         *corev1.CoreV1Client
	apps         *appsv1.AppsV1Client
	batch        *batchv1.BatchV1Client
	coordination *coordinationv1.CoordinationV1Client
}

func (c *Clients) CoreV1() corev1.CoreV1Interface                         { return c.core }
func (c *Clients) AppsV1() appsv1.AppsV1Interface                         { return c.apps }
func (c *Clients) BatchV1() batchv1.BatchV1Interface                      { return c.batch }
func (c *Clients) CoordinationV1() coordinationv1.CoordinationV1Interface { return c.coordination }

// NewForConfig returns the clients of rc, which share one HTTP client and
// so one connection pool and one rate limiter, as client-go's clientset
// does.
func NewForConfig(rc *rest.Config) (*Clients, error) {
	rc = rest.CopyConfig(rc)
	if rc.UserAgent == "" {
		rc.UserAgent = rest.DefaultKubernetesUserAgent()
	}
	hc, err := rest.HTTPClientFor(rc)
	if err != nil {
		return nil, fmt.Errorf("create the HTTP client of the Kubernetes client: %w", err)
	}
	return NewForConfigAndClient(rc, hc)
}

// NewForConfigAndClient is NewForConfig over the HTTP client hc.
func NewForConfigAndClient(rc *rest.Config, hc *http.Client) (*Clients, error) {
	if rc.RateLimiter == nil && rc.QPS > 0 {
		if rc.Burst <= 0 {
			return nil, errors.New("kubernetes.burst must be positive when kubernetes.qps is")
		}
		// One limiter for every group, as the clientset has.
		rc = rest.CopyConfig(rc)
		rc.RateLimiter = flowcontrol.NewTokenBucketRateLimiter(rc.QPS, rc.Burst)
	}
	var c Clients
	var err error
	if c.core, err = corev1.NewForConfigAndClient(rc, hc); err != nil {
		return nil, fmt.Errorf("create the core/v1 client: %w", err)
	}
	if c.apps, err = appsv1.NewForConfigAndClient(rc, hc); err != nil {
		return nil, fmt.Errorf("create the apps/v1 client: %w", err)
	}
	if c.batch, err = batchv1.NewForConfigAndClient(rc, hc); err != nil {
		return nil, fmt.Errorf("create the batch/v1 client: %w", err)
	}
	if c.coordination, err = coordinationv1.NewForConfigAndClient(rc, hc); err != nil {
		return nil, fmt.Errorf("create the coordination/v1 client: %w", err)
	}
	return &c, nil
}

// Ping asks the API server for its version, so an unreachable or
// misconfigured server is reported at start rather than as a stuck informer.
func Ping(ctx context.Context, c Interface, host string) (string, error) {
	body, err := c.CoreV1().RESTClient().Get().AbsPath("/version").Do(ctx).Raw()
	if err != nil {
		return "", fmt.Errorf("reach the Kubernetes API server at %s: %w", host, err)
	}
	var info apiversion.Info
	if err := json.Unmarshal(body, &info); err != nil {
		return "", fmt.Errorf("read the version of the Kubernetes API server at %s: %w", host, err)
	}
	return info.GitVersion, nil
}
