package testenv

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// Helm runs the test environment's helm binary with args against the
// cluster and returns its combined output; it fails t when helm fails.
// helm's configuration, cache and data live in a temporary directory, so
// the tests never read or write the user's. A missing binary fails the test
// under CI=true and skips it elsewhere.
func (c *Cluster) Helm(t testing.TB, args ...string) string {
	t.Helper()
	bin := filepath.Join(c.BinDir, "helm")
	if _, err := os.Stat(bin); err != nil {
		notBuilt(t, "helm is not in the test environment (%v)", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	home := t.TempDir()
	cmd := exec.CommandContext(ctx, bin, append([]string{"--kubeconfig", c.Kubeconfig}, args...)...)
	cmd.Env = append(os.Environ(),
		"HELM_CONFIG_HOME="+filepath.Join(home, "config"),
		"HELM_CACHE_HOME="+filepath.Join(home, "cache"),
		"HELM_DATA_HOME="+filepath.Join(home, "data"),
	)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("helm %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// HelmRevision is one line of `helm history -o json`.
type HelmRevision struct {
	Revision    int    `json:"revision"`
	Status      string `json:"status"`
	Description string `json:"description"`
}

// HelmHistory returns the history of release in namespace as the helm
// binary reports it, oldest first.
func (c *Cluster) HelmHistory(t testing.TB, namespace, release string) []HelmRevision {
	t.Helper()
	out := c.Helm(t, "history", release, "--namespace", namespace, "--max", "100", "-o", "json")
	var revs []HelmRevision
	if err := json.Unmarshal([]byte(out), &revs); err != nil {
		t.Fatalf("decode helm history of %s/%s: %v\n%s", namespace, release, err, out)
	}
	return revs
}

// HelmChart writes a chart of one Deployment, named after the release, to a
// temporary directory and returns it. Its values: image, the container's
// image; labels, more labels on the Deployment; annotations, more pod
// template annotations.
func HelmChart(t testing.TB) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "web")
	files := map[string]string{
		"Chart.yaml":  "apiVersion: v2\nname: web\nversion: 0.1.0\n",
		"values.yaml": "image: web:v1\nlabels: {}\nannotations: {}\n",
		"templates/deployment.yaml": `apiVersion: apps/v1
kind: Deployment
metadata:
  name: {{ .Release.Name }}
  labels:
    app: {{ .Release.Name }}
    {{- with .Values.labels }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
spec:
  replicas: 1
  selector:
    matchLabels:
      app: {{ .Release.Name }}
  template:
    metadata:
      labels:
        app: {{ .Release.Name }}
      {{- with .Values.annotations }}
      annotations:
        {{- toYaml . | nindent 8 }}
      {{- end }}
    spec:
      containers:
      - name: app
        image: {{ .Values.image }}
`,
		"templates/configmap.yaml": `apiVersion: v1
kind: ConfigMap
metadata:
  name: {{ .Release.Name }}-config
data:
  image: {{ .Values.image | quote }}
`,
	}
	for name, body := range files {
		path := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, []byte(body), 0o644); err != nil {
			t.Fatal(fmt.Errorf("write chart file %s: %w", name, err))
		}
	}
	return dir
}
