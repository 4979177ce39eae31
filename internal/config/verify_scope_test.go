package config

import (
	"slices"
	"strings"
	"testing"

	"sigs.k8s.io/yaml"
)

// TestLoadVerifyScope: namespaces and selector sit next to the other keys
// of a check, are printed back the same way, and a check with credentials
// that names no namespaces is refused with its key.
func TestLoadVerifyScope(t *testing.T) {
	cfg, err := loadYAML(t, `verify:
  prometheusURL: http://prometheus.monitoring.svc:9090
  http:
  - name: list-events
    url: http://{{.Name}}.{{.Namespace}}.svc/api/v1/events
    namespaces: [production, staging]
    selector: app.kubernetes.io/part-of=events
    bearerTokenSecret: {name: events-smoke-test, key: token}
  promql:
  - name: error-ratio
    query: errors{namespace="{{.Namespace}}"}
    op: '<'
    namespaces: [production]
`)
	if err != nil {
		t.Fatal(err)
	}
	h, p := cfg.Verify.HTTP[0], cfg.Verify.PromQL[0]
	if !slices.Equal(h.Namespaces, []string{"production", "staging"}) || h.Selector != "app.kubernetes.io/part-of=events" || !slices.Equal(p.Namespaces, []string{"production"}) {
		t.Errorf("decoded http scope %+v, promql scope %+v", h.Scope, p.Scope)
	}
	out, err := yaml.Marshal(cfg.Verify.HTTP)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"\n  namespaces:\n  - production\n  - staging\n", "\n  selector: app.kubernetes.io/part-of=events\n"} {
		if !strings.Contains(string(out), want) {
			t.Errorf("printed http checks lack %q:\n%s", want, out)
		}
	}

	_, err = loadYAML(t, `verify:
  http:
  - name: list-events
    url: http://{{.Name}}.{{.Namespace}}.svc/api/v1/events
    selector: app.kubernetes.io/part-of=events
    bearerTokenSecret: {name: events-smoke-test, key: token}
`)
	want := "verify.http[0].namespaces: must be set when bearerTokenSecret is: a check with credentials must name the namespaces of the workloads it may send them to"
	if err == nil || !strings.Contains(err.Error(), want) {
		t.Errorf("Load of a check with credentials and no namespaces: error %v\nwant it to contain %q", err, want)
	}
}
