package helm

import (
	"encoding/json"
	"testing"
)

const manifest = `---
# Source: web/templates/configmap.yaml
apiVersion: v1
kind: ConfigMap
metadata:
  name: web
data:
  a: b
---
# Source: web/templates/rollout.yaml
apiVersion: argoproj.io/v1alpha1
kind: Deployment
metadata:
  name: web
spec:
  template:
    metadata:
      labels: {app: other-group}
---
# Source: web/templates/deployment.yaml
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
spec:
  template:
    metadata:
      labels:
        app: web
    spec:
      containers:
      - name: app
        image: web:v1
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  namespace: elsewhere
spec:
  template:
    metadata:
      labels: {app: elsewhere}
`

// TestPodTemplate: the template is that of the object of the same API
// group, kind, name and namespace, a manifest without a namespace meaning
// the release's.
func TestPodTemplate(t *testing.T) {
	rev := Revision{Number: 1, Manifest: manifest}
	for _, tc := range []struct {
		name     string
		o        Object
		relNS    string
		wantApp  string
		wantSome bool
	}{
		{"in the release's namespace", Object{Group: "apps", Kind: "Deployment", Namespace: "prod", Name: "web"}, "prod", "web", true},
		{"named namespace", Object{Group: "apps", Kind: "Deployment", Namespace: "elsewhere", Name: "web"}, "prod", "elsewhere", true},
		{"other group", Object{Group: "argoproj.io", Kind: "Deployment", Namespace: "prod", Name: "web"}, "prod", "other-group", true},
		{"other namespace", Object{Group: "apps", Kind: "Deployment", Namespace: "staging", Name: "web"}, "prod", "", false},
		{"no template", Object{Group: "", Kind: "ConfigMap", Namespace: "prod", Name: "web"}, "prod", "", false},
		{"absent", Object{Group: "apps", Kind: "StatefulSet", Namespace: "prod", Name: "web"}, "prod", "", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			raw, ok, err := rev.PodTemplate(tc.o, tc.relNS)
			if err != nil || ok != tc.wantSome {
				t.Fatalf("PodTemplate = %s, %v, %v; want found %v", raw, ok, err, tc.wantSome)
			}
			if !ok {
				return
			}
			var tpl struct {
				Metadata struct {
					Labels map[string]string `json:"labels"`
				} `json:"metadata"`
			}
			if err := json.Unmarshal(raw, &tpl); err != nil {
				t.Fatal(err)
			}
			if got := tpl.Metadata.Labels["app"]; got != tc.wantApp {
				t.Errorf("template of app %q, want %q", got, tc.wantApp)
			}
		})
	}
	if _, _, err := (Revision{Number: 2, Manifest: "kind: [unclosed"}).PodTemplate(Object{Kind: "Deployment"}, "prod"); err == nil {
		t.Error("a manifest that is not YAML decoded without error")
	}
}
