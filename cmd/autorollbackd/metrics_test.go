package main

import (
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil/promlint"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// checkMetricsDocumented compares what a running daemon serves with
// docs/metrics.md, both ways, and lints it.
func checkMetricsDocumented(t *testing.T, exposition string) {
	t.Helper()
	parser := expfmt.NewTextParser(model.UTF8Validation)
	families, err := parser.TextToMetricFamilies(strings.NewReader(exposition))
	if err != nil {
		t.Fatalf("parse /metrics: %v", err)
	}
	doc, err := os.ReadFile("../../docs/metrics.md")
	if err != nil {
		t.Fatal(err)
	}
	documented := map[string]bool{}
	for _, m := range regexp.MustCompile("(?m)^\\| `(autorollbackd_[a-z_]+)` \\|").FindAllStringSubmatch(string(doc), -1) {
		documented[m[1]] = true
	}
	var ours []*dto.MetricFamily
	for name, mf := range families {
		if !strings.HasPrefix(name, "autorollbackd_") {
			continue
		}
		ours = append(ours, mf)
		if !documented[name] {
			t.Errorf("%s is served but not documented in docs/metrics.md", name)
		}
	}
	for name := range documented {
		if _, ok := families[name]; !ok {
			t.Errorf("docs/metrics.md documents %s, which the daemon does not serve", name)
		}
	}
	problems, err := promlint.NewWithMetricFamilies(ours).Lint()
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("promlint: %s: %s", p.Metric, p.Text)
	}
	if len(ours) < 20 {
		names := make([]string, 0, len(ours))
		for _, mf := range ours {
			names = append(names, mf.GetName())
		}
		slices.Sort(names)
		t.Errorf("only %d autorollbackd metrics served: %v", len(ours), names)
	}
}
