package kube

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/runtime"

	"github.com/autorollbackd/autorollbackd/internal/config"
)

const kubeconfig = `apiVersion: v1
kind: Config
clusters:
- name: c
  cluster: {server: "https://127.0.0.1:6443"}
users:
- name: u
  user: {token: t}
contexts:
- name: x
  context: {cluster: c, user: u, namespace: team-a}
current-context: x
`

func TestRESTConfig(t *testing.T) {
	path := filepath.Join(t.TempDir(), "kubeconfig")
	if err := os.WriteFile(path, []byte(kubeconfig), 0o600); err != nil {
		t.Fatal(err)
	}
	rc, ns, err := RESTConfig(config.Kubernetes{Kubeconfig: path, QPS: 7, Burst: 9})
	if err != nil {
		t.Fatalf("RESTConfig: %v", err)
	}
	if ns != "team-a" {
		t.Errorf("namespace = %q, want the context's, team-a", ns)
	}
	if rc.QPS != 7 || rc.Burst != 9 {
		t.Errorf("QPS, burst = %v, %d, want 7, 9", rc.QPS, rc.Burst)
	}
	// Built-in kinds travel as protobuf, with JSON accepted from servers or
	// proxies that answer only that.
	if rc.ContentType != runtime.ContentTypeProtobuf {
		t.Errorf("ContentType = %q, want %q", rc.ContentType, runtime.ContentTypeProtobuf)
	}
	if want := runtime.ContentTypeProtobuf + "," + runtime.ContentTypeJSON; rc.AcceptContentTypes != want {
		t.Errorf("AcceptContentTypes = %q, want %q", rc.AcceptContentTypes, want)
	}
}

func TestRESTConfigUnreadable(t *testing.T) {
	path := filepath.Join(t.TempDir(), "kubeconfig")
	if err := os.WriteFile(path, []byte("clusters: ["), 0o600); err != nil {
		t.Fatal(err)
	}
	_, _, err := RESTConfig(config.Kubernetes{Kubeconfig: path})
	if err == nil || !strings.Contains(err.Error(), "load Kubernetes client configuration") || !strings.Contains(err.Error(), path) {
		t.Fatalf("RESTConfig of a malformed kubeconfig: error %v, want one saying it could not load %s", err, path)
	}
}
