package kubeclient_test

import (
	"context"
	"os"
	"strings"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/fake"

	"github.com/autorollbackd/autorollbackd/internal/kubeclient"
	"github.com/autorollbackd/autorollbackd/internal/testenv"
)

func TestMain(m *testing.M) { os.Exit(testenv.Run(m)) }

// The clientset and its fake are Interfaces, so tests may pass either.
var (
	_ kubeclient.Interface = (*kubernetes.Clientset)(nil)
	_ kubeclient.Interface = (*fake.Clientset)(nil)
)

// TestClients: every group the daemon uses reaches the API server, and
// Ping reads its version without a discovery client.
func TestClients(t *testing.T) {
	c := testenv.Require(t)
	ns := c.Namespace(t)
	cs, err := kubeclient.NewForConfig(c.REST)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	v, err := kubeclient.Ping(ctx, cs, c.REST.Host)
	if err != nil || !strings.HasPrefix(v, "v1.") {
		t.Fatalf("Ping = %q, %v; want the server's version", v, err)
	}
	for group, list := range map[string]func() error{
		"core":         func() error { _, err := cs.CoreV1().ConfigMaps(ns).List(ctx, metav1.ListOptions{}); return err },
		"apps":         func() error { _, err := cs.AppsV1().Deployments(ns).List(ctx, metav1.ListOptions{}); return err },
		"batch":        func() error { _, err := cs.BatchV1().Jobs(ns).List(ctx, metav1.ListOptions{}); return err },
		"coordination": func() error { _, err := cs.CoordinationV1().Leases(ns).List(ctx, metav1.ListOptions{}); return err },
	} {
		if err := list(); err != nil {
			t.Errorf("%s: %v", group, err)
		}
	}
}
