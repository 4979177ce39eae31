package webhook

import (
	"cmp"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/prometheus/alertmanager/pkg/labels"
	"github.com/prometheus/common/model"
	"sigs.k8s.io/yaml"
)

// yamlBlock is a fenced YAML block of a Markdown file.
var yamlBlock = regexp.MustCompile("(?s)```yaml\n(.*?)```")

// amRouteNode and amRouting are the part of Alertmanager's configuration that
// routing reads. Alertmanager's own config package would load them, but it
// brings its cluster and every notifier's SDK into go.mod.
type amRouteNode struct {
	Receiver string        `json:"receiver"`
	Matchers []string      `json:"matchers"`
	Continue bool          `json:"continue"`
	Routes   []amRouteNode `json:"routes"`
}

type amRouting struct {
	Route     *amRouteNode `json:"route"`
	Receivers []struct {
		Name string `json:"name"`
	} `json:"receivers"`
}

// TestDocumentedRoutesKeepOnCallPaged: every Alertmanager configuration the
// docs give sends an alert the daemon acts on to autorollbackd and to the
// on-call receiver. Without the route after autorollbackd's, the same
// configuration would page nobody, as the docs say.
func TestDocumentedRoutesKeepOnCallPaged(t *testing.T) {
	alert := model.LabelSet{"alertname": "EventServiceDown", "impact": "service_down", "severity": "critical", "namespace": "production", "cluster": "prod-eu-1"}
	// daemon is the receiver of autorollbackd in the example: one, or one
	// per cluster.
	daemon := func(got []string) string {
		for _, r := range got {
			if strings.HasPrefix(r, "autorollbackd") {
				return r
			}
		}
		return ""
	}
	var found int
	for _, doc := range []string{"README.md", "docs/install.md", "docs/webhook.md"} {
		body, err := os.ReadFile(filepath.Join("..", "..", doc))
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range yamlBlock.FindAllStringSubmatch(string(body), -1) {
			if !strings.Contains(m[1], "route:") || !strings.Contains(m[1], "receiver: autorollbackd") {
				continue
			}
			found++
			var cfg amRouting
			if err := yaml.Unmarshal([]byte(m[1]), &cfg); err != nil {
				t.Errorf("%s: the route example does not parse: %v\n%s", doc, err, m[1])
				continue
			}
			if err := cfg.check(); err != nil {
				t.Errorf("%s: Alertmanager would refuse the route example: %v\n%s", doc, err, m[1])
				continue
			}
			got := cfg.Route.receivers(t, alert)
			d := daemon(got)
			if len(got) != 2 || d == "" || !slices.Contains(got, "oncall") {
				t.Errorf("%s: %v is sent to %v, want autorollbackd and oncall\n%s", doc, alert, got, m[1])
			}
			cfg.Route.Routes = cfg.Route.Routes[:1]
			if got := cfg.Route.receivers(t, alert); !slices.Equal(got, []string{d}) {
				t.Errorf("%s: without the route after autorollbackd's, %v is sent to %v; the docs say only %s", doc, alert, got, d)
			}
		}
	}
	if found < 4 {
		t.Fatalf("found %d route examples in the docs, want at least 4", found)
	}
}

// check is what Alertmanager checks of routes when it loads them: the
// root names a receiver, and every receiver named is defined.
func (c amRouting) check() error {
	if c.Route == nil || c.Route.Receiver == "" {
		return errors.New("root route must specify a default receiver")
	}
	defined := map[string]bool{}
	for _, r := range c.Receivers {
		defined[r.Name] = true
	}
	var walk func(r amRouteNode) error
	walk = func(r amRouteNode) error {
		if r.Receiver != "" && !defined[r.Receiver] {
			return fmt.Errorf("undefined receiver %q used in route", r.Receiver)
		}
		for _, c := range r.Routes {
			if err := walk(c); err != nil {
				return err
			}
		}
		return nil
	}
	return walk(*c.Route)
}

// receivers are the receivers Alertmanager notifies of ls: children are
// tried in order, a match that does not continue stops them, and a route
// notifies its own receiver (or the one it inherits) only when no child
// matched.
func (r amRouteNode) receivers(t *testing.T, ls model.LabelSet) []string {
	var out []string
	var match func(r amRouteNode, inherited string) bool
	match = func(r amRouteNode, inherited string) bool {
		for _, s := range r.Matchers {
			ms, err := labels.ParseMatchers(s)
			if err != nil {
				t.Fatalf("matcher %s: %v", s, err)
			}
			for _, m := range ms {
				if !m.Matches(string(ls[model.LabelName(m.Name)])) {
					return false
				}
			}
		}
		recv := cmp.Or(r.Receiver, inherited)
		var matched bool
		for _, c := range r.Routes {
			if match(c, recv) {
				matched = true
				if !c.Continue {
					break
				}
			}
		}
		if !matched {
			out = append(out, recv)
		}
		return true
	}
	match(r, "")
	slices.Sort(out)
	return slices.Compact(out)
}
