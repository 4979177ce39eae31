package chart

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"
	"unicode"

	"sigs.k8s.io/yaml"
)

var (
	rulesFile     = filepath.Join(chartDir, "rules", "autorollbackd.rules.yaml")
	rulesTestFile = filepath.Join(chartDir, "rules", "autorollbackd.rules.test.yaml")
	dashboardFile = filepath.Join(chartDir, "dashboards", "autorollbackd.json")
)

// metrics are the names the daemon exports, with their types; rules and the
// dashboard may use these and nothing else. TestMetricsAreDocumented holds
// them to docs/metrics.md, which cmd/autorollbackd's tests hold to what a
// running daemon serves.
var metrics = map[string]string{
	"autorollbackd_build_info":                                   "gauge",
	"autorollbackd_webhook_requests_total":                       "counter",
	"autorollbackd_webhook_rejected_total":                       "counter",
	"autorollbackd_notifications_received_total":                 "counter",
	"autorollbackd_alerts_received_total":                        "counter",
	"autorollbackd_webhook_request_duration_seconds":             "histogram",
	"autorollbackd_webhook_auth_failures_total":                  "counter",
	"autorollbackd_secret_reloads_total":                         "counter",
	"autorollbackd_decisions_total":                              "counter",
	"autorollbackd_alerts_duplicate_total":                       "counter",
	"autorollbackd_intake_backpressure_total":                    "counter",
	"autorollbackd_alert_to_action_seconds":                      "histogram",
	"autorollbackd_action_to_recovery_seconds":                   "histogram",
	"autorollbackd_incidents_open":                               "gauge",
	"autorollbackd_actions_total":                                "counter",
	"autorollbackd_config_last_reload_successful":                "gauge",
	"autorollbackd_config_last_reload_success_timestamp_seconds": "gauge",
	"autorollbackd_verifications_total":                          "counter",
	"autorollbackd_verification_duration_seconds":                "histogram",
	"autorollbackd_notifications_total":                          "counter",
	"autorollbackd_notification_attempts_total":                  "counter",
	"autorollbackd_notification_duration_seconds":                "histogram",
	"autorollbackd_escalations_total":                            "counter",
	"autorollbackd_leader":                                       "gauge",
	"autorollbackd_webhook_sender_requests_total":                "counter",
	"autorollbackd_api_auth_failures_total":                      "counter",
	"autorollbackd_intake_records_full_total":                    "counter",
	"autorollbackd_alerts_invalid_total":                         "counter",
	"autorollbackd_alerts_truncated_total":                       "counter",
	"autorollbackd_alert_resolutions_dropped_total":              "counter",
	"autorollbackd_decision_duration_seconds":                    "histogram",
	"autorollbackd_alert_records":                                "gauge",
	"autorollbackd_alert_records_limit":                          "gauge",
	"autorollbackd_records_quarantined_total":                    "counter",
	"autorollbackd_kube_background_wait_seconds":                 "histogram",
	"autorollbackd_kube_request_duration_seconds":                "histogram",
	"up": "gauge",
}

// TestMetricsAreDocumented: the metrics rules and dashboard may use are
// exactly those docs/metrics.md documents, with the same types.
func TestMetricsAreDocumented(t *testing.T) {
	t.Parallel()
	doc, err := os.ReadFile(filepath.Join("..", "..", "docs", "metrics.md"))
	if err != nil {
		t.Fatal(err)
	}
	documented := map[string]string{}
	for _, m := range regexp.MustCompile("(?m)^\\| `(autorollbackd_[a-z_]+)` \\| ([a-z]+) \\|").FindAllStringSubmatch(string(doc), -1) {
		documented[m[1]] = m[2]
	}
	if len(documented) < 20 {
		t.Fatalf("found only %d metrics in docs/metrics.md's tables", len(documented))
	}
	for name, typ := range metrics {
		if name == "up" {
			continue
		}
		if documented[name] != typ {
			t.Errorf("%s: %q here, %q in docs/metrics.md", name, typ, documented[name])
		}
	}
	for name := range documented {
		if _, ok := metrics[name]; !ok {
			t.Errorf("docs/metrics.md documents %s, missing here", name)
		}
	}
}

var (
	// An identifier followed by a selector, a range, a closing parenthesis
	// or white space: a metric name when it starts with autorollbackd_.
	ownMetricRE = regexp.MustCompile(`\b(autorollbackd_[a-zA-Z0-9_]*)(?:[{\[)\s]|$)`)
	// Any identifier directly followed by a label selector is a metric name.
	selectorRE = regexp.MustCompile(`\b([a-zA-Z_:][a-zA-Z0-9_:]*)\s*\{`)
)

// unknownMetrics returns, sorted, the metric names in a PromQL expression
// that the daemon does not export. A histogram's series are its name with _bucket,
// _sum or _count.
func unknownMetrics(expr string) []string {
	var names []string
	for _, m := range ownMetricRE.FindAllStringSubmatch(expr, -1) {
		names = append(names, m[1])
	}
	for _, m := range selectorRE.FindAllStringSubmatch(expr, -1) {
		names = append(names, m[1])
	}
	var unknown []string
	for _, n := range names {
		if _, ok := metrics[n]; ok && metrics[n] != "histogram" {
			continue
		}
		known := false
		for _, suffix := range []string{"_bucket", "_sum", "_count"} {
			if base, ok := strings.CutSuffix(n, suffix); ok && metrics[base] == "histogram" {
				known = true
			}
		}
		if !known {
			unknown = append(unknown, n)
		}
	}
	slices.Sort(unknown)
	return slices.Compact(unknown)
}

func TestUnknownMetrics(t *testing.T) {
	t.Parallel()
	for expr, want := range map[string][]string{
		`sum(rate(autorollbackd_actions_total{kind="rollback"}[5m]))`:                                    nil,
		`histogram_quantile(0.99, sum by (le) (rate(autorollbackd_alert_to_action_seconds_bucket[5m])))`: nil,
		`up{job="x"} == 0`:                          nil,
		`autorollbackd_actions_total > 0`:           nil,
		`rate(autorollbackd_rollbacks_total[5m])`:   {"autorollbackd_rollbacks_total"},
		`autorollbackd_leader_bucket{}`:             {"autorollbackd_leader_bucket"},
		`rate(http_requests_total{code="500"}[5m])`: {"http_requests_total"},
		`autorollbackd_alert_to_action_seconds > 1`: {"autorollbackd_alert_to_action_seconds"},
	} {
		if got := unknownMetrics(expr); !slices.Equal(got, want) {
			t.Errorf("unknownMetrics(%s) = %q, want %q", expr, got, want)
		}
	}
}

// TestPromtool: the rule file is valid and its unit tests pass.
func TestPromtool(t *testing.T) {
	t.Parallel()
	promtool := tool(t, "promtool")
	for _, args := range [][]string{
		{"check", "rules", rulesFile},
		{"test", "rules", rulesTestFile},
	} {
		out, err := run(t, 2*time.Minute, nil, promtool, args...)
		if err != nil || !strings.Contains(out, "SUCCESS") {
			t.Errorf("promtool %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
}

// loadRules parses the rule file strictly.
func loadRules(t *testing.T) ruleFile {
	t.Helper()
	raw, err := os.ReadFile(rulesFile)
	if err != nil {
		t.Fatal(err)
	}
	var rf ruleFile
	if err := yaml.UnmarshalStrict(raw, &rf); err != nil {
		t.Fatalf("parse %s: %v", rulesFile, err)
	}
	return rf
}

type ruleFile struct {
	Groups []struct {
		Name  string `json:"name"`
		Rules []struct {
			Alert       string            `json:"alert"`
			Expr        string            `json:"expr"`
			For         string            `json:"for"`
			Labels      map[string]string `json:"labels"`
			Annotations map[string]string `json:"annotations"`
		} `json:"rules"`
	} `json:"groups"`
}

// TestRules: the alerts the chart promises, each with a severity, a summary
// and a description, on the daemon's own metrics, and each unit-tested
// firing and not firing.
func TestRules(t *testing.T) {
	t.Parallel()
	rf := loadRules(t)
	want := map[string]string{
		"AutoRollbackFailed":             `increase(autorollbackd_actions_total{result="failed",dry_run="false"}[10m]) > 0`,
		"AutoRollbackVerificationFailed": `increase(autorollbackd_verifications_total{result="fail"}[10m]) > 0`,
		"AutoRollbackEscalated":          `increase(autorollbackd_escalations_total{result="success"}[10m]) > 0`,
		"AutoRollbackPageNoReceiver":     `increase(autorollbackd_escalations_total{result="no_receiver"}[10m]) > 0`,
		"AutoRollbackWebhookRejecting":   `sum by (namespace, job) (rate(autorollbackd_webhook_requests_total{code=~"4..|5.."}[5m])) > 0.1`,
		"AutoRollbackNotReady":           `up{job=~".*autorollbackd.*"} == 0`,
		"AutoRollbackConfigReloadFailed": `autorollbackd_config_last_reload_successful == 0`,
		"AutoRollbackPageFailed":         `increase(autorollbackd_notifications_total{kind="page",result="failure"}[10m]) > 0`,
		"AutoRollbackNoLeader":           `max by (cluster, namespace, job) (autorollbackd_leader) == 0`,
		"AutoRollbackSecretReloadFailed": `increase(autorollbackd_secret_reloads_total{result="failure"}[10m]) > 0`,
		"AutoRollbackRecordsNearLimit":   `max by (cluster, namespace, job) (autorollbackd_alert_records / autorollbackd_alert_records_limit) > 0.8`,
		"AutoRollbackRecordsFull":        `increase(autorollbackd_intake_records_full_total[10m]) > 0`,
	}
	wantFor := map[string]string{
		"AutoRollbackWebhookRejecting":   "10m",
		"AutoRollbackNotReady":           "5m",
		"AutoRollbackConfigReloadFailed": "5m",
		// Longer than a lease (15s) and a scrape: a failover is no alert.
		"AutoRollbackNoLeader":         "1m",
		"AutoRollbackRecordsNearLimit": "15m",
	}
	seen := map[string]bool{}
	for _, g := range rf.Groups {
		for _, r := range g.Rules {
			if r.Alert == "" {
				continue
			}
			seen[r.Alert] = true
			if w, ok := want[r.Alert]; !ok {
				t.Errorf("unexpected alert %s", r.Alert)
			} else if r.Expr != w {
				t.Errorf("%s: expr %q, want %q", r.Alert, r.Expr, w)
			}
			if r.For != wantFor[r.Alert] {
				t.Errorf("%s: for %q, want %q", r.Alert, r.For, wantFor[r.Alert])
			}
			if s := r.Labels["severity"]; s != "critical" && s != "warning" {
				t.Errorf("%s: severity %q, want critical or warning", r.Alert, s)
			}
			if r.Annotations["summary"] == "" || r.Annotations["description"] == "" {
				t.Errorf("%s: needs summary and description annotations", r.Alert)
			}
			if u := unknownMetrics(r.Expr); len(u) != 0 {
				t.Errorf("%s: metrics the daemon does not export: %v", r.Alert, u)
			}
			// Every alert links to its section of docs/alerts.md
			// (TestRunbooks checks the sections).
			if u, w := r.Annotations["runbook_url"], runbookPage+"#"+strings.ToLower(r.Alert); u != w {
				t.Errorf("%s: runbook_url %q, want %q", r.Alert, u, w)
			}
		}
	}
	for name := range want {
		if !seen[name] {
			t.Errorf("alert %s missing", name)
		}
	}

	// Every alert has a unit test where it fires and one where it does not.
	raw, err := os.ReadFile(rulesTestFile)
	if err != nil {
		t.Fatal(err)
	}
	var tf struct {
		RuleFiles []string `json:"rule_files"`
		Tests     []struct {
			AlertRuleTest []struct {
				Alertname string `json:"alertname"`
				ExpAlerts []any  `json:"exp_alerts"`
			} `json:"alert_rule_test"`
		} `json:"tests"`
	}
	if err := yaml.Unmarshal(raw, &tf); err != nil {
		t.Fatalf("parse %s: %v", rulesTestFile, err)
	}
	if !slices.Equal(tf.RuleFiles, []string{filepath.Base(rulesFile)}) {
		t.Errorf("%s tests %v, want %s", rulesTestFile, tf.RuleFiles, filepath.Base(rulesFile))
	}
	firing, quiet := map[string]bool{}, map[string]bool{}
	for _, tc := range tf.Tests {
		for _, a := range tc.AlertRuleTest {
			if len(a.ExpAlerts) > 0 {
				firing[a.Alertname] = true
			} else {
				quiet[a.Alertname] = true
			}
		}
	}
	for name := range want {
		if !firing[name] || !quiet[name] {
			t.Errorf("%s: want unit tests where it fires (%v) and where it does not (%v)", name, firing[name], quiet[name])
		}
	}
}

// runbookPage is where docs/alerts.md of the default branch is published,
// the chart's default prometheusRule.runbookUrl.
const runbookPage = "https://github.com/autorollbackd/autorollbackd/blob/main/docs/alerts.md"

// alertNames returns the alerts of the rule file, in its order.
func alertNames(t *testing.T) []string {
	t.Helper()
	rf := loadRules(t)
	var names []string
	for _, g := range rf.Groups {
		for _, r := range g.Rules {
			if r.Alert != "" {
				names = append(names, r.Alert)
			}
		}
	}
	return names
}

// TestRunbooks: the anchor of every alert's runbook_url is a heading of
// docs/alerts.md, every heading there below the title is an alert, every
// alert is in the table of docs/install.md, and the links of
// docs/alerts.md lead to headings that exist.
func TestRunbooks(t *testing.T) {
	t.Parallel()
	rf := loadRules(t)
	anchors := map[string]bool{}
	for _, g := range rf.Groups {
		for _, r := range g.Rules {
			page, anchor, ok := strings.Cut(r.Annotations["runbook_url"], "#")
			if !ok || page != runbookPage {
				t.Errorf("%s: runbook_url %q is not an anchor of %s", r.Alert, r.Annotations["runbook_url"], runbookPage)
				continue
			}
			checkDocAnchor(t, "alerts.md#"+anchor)
			anchors[anchor] = true
		}
	}
	doc, err := os.ReadFile(filepath.Join("..", "..", "docs", "alerts.md"))
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range regexp.MustCompile(`(?m)^## (.+)$`).FindAllStringSubmatch(string(doc), -1) {
		if !anchors[githubAnchor(m[1])] {
			t.Errorf("docs/alerts.md: section %q is no alert's runbook", m[1])
		}
	}
	install, err := os.ReadFile(filepath.Join("..", "..", "docs", "install.md"))
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range alertNames(t) {
		if !strings.Contains(string(install), "| `"+name+"` |") {
			t.Errorf("docs/install.md: %s is not in the table of alerts", name)
		}
	}
	for _, m := range regexp.MustCompile(`\]\(([a-z-]*\.md)?#([a-z0-9_-]+)\)`).FindAllStringSubmatch(string(doc), -1) {
		page := m[1]
		if page == "" {
			page = "alerts.md"
		}
		checkDocAnchor(t, page+"#"+m[2])
	}
}

// checkDocAnchor fails unless the docs page of ref (page.md#anchor) has a
// heading whose GitHub anchor is anchor.
func checkDocAnchor(t *testing.T, ref string) {
	t.Helper()
	page, anchor, _ := strings.Cut(ref, "#")
	raw, err := os.ReadFile(filepath.Join("..", "..", "docs", page))
	if err != nil {
		t.Errorf("runbook %s: %v", ref, err)
		return
	}
	var anchors []string
	for _, line := range strings.Split(string(raw), "\n") {
		if heading, ok := strings.CutPrefix(strings.TrimLeft(line, "#"), " "); ok && strings.HasPrefix(line, "#") {
			anchors = append(anchors, githubAnchor(heading))
		}
	}
	if !slices.Contains(anchors, anchor) {
		t.Errorf("runbook %s: docs/%s has no heading with anchor %q (has %q)", ref, page, anchor, anchors)
	}
}

// githubAnchor is the anchor GitHub gives a heading: lower case, spaces to
// hyphens, punctuation other than hyphens and underscores dropped.
func githubAnchor(heading string) string {
	var b strings.Builder
	for _, r := range strings.ToLower(strings.TrimSpace(heading)) {
		switch {
		case r == ' ':
			b.WriteRune('-')
		case r == '-' || r == '_' || unicode.IsLetter(r) || unicode.IsDigit(r):
			b.WriteRune(r)
		}
	}
	return b.String()
}

// dashboard is the part of a Grafana dashboard the tests read.
type dashboard struct {
	SchemaVersion int `json:"schemaVersion"`
	Templating    struct {
		List []struct {
			Name       string `json:"name"`
			Type       string `json:"type"`
			Query      any    `json:"query"`
			IncludeAll bool   `json:"includeAll"`
			AllValue   string `json:"allValue"`
			Current    struct {
				Value any `json:"value"`
			} `json:"current"`
		} `json:"list"`
	} `json:"templating"`
	Annotations struct {
		List []struct {
			Name       string          `json:"name"`
			Expr       string          `json:"expr"`
			Datasource json.RawMessage `json:"datasource"`
		} `json:"list"`
	} `json:"annotations"`
	Panels []panel `json:"panels"`
}

type panel struct {
	ID         int             `json:"id"`
	Type       string          `json:"type"`
	Title      string          `json:"title"`
	Datasource json.RawMessage `json:"datasource"`
	Targets    []struct {
		Expr       string          `json:"expr"`
		Datasource json.RawMessage `json:"datasource"`
	} `json:"targets"`
	Panels []panel `json:"panels"`
}

// grafanaVars replaces Grafana's variables by what they stand for in a
// query, so that promtool can parse it.
var grafanaVars = strings.NewReplacer(
	"$__rate_interval", "5m",
	"$__interval", "1m",
	"$__range", "1h",
	"${namespace}", ".*",
	"$namespace", ".*",
	"${cluster}", ".*",
	"$cluster", ".*",
)

// filteredRE finds the metric selectors of a query: a metric name and its
// label matchers.
var filteredRE = regexp.MustCompile(`\b(autorollbackd_[a-z_]+|up)\b(\{[^}]*\})?`)

// checkFiltered fails unless every metric of expr is selected by the
// cluster and namespace variables.
func checkFiltered(t *testing.T, where, expr string) {
	t.Helper()
	for _, m := range filteredRE.FindAllStringSubmatch(expr, -1) {
		if !strings.Contains(m[2], `cluster=~"$cluster"`) || !strings.Contains(m[2], `namespace=~"$namespace"`) {
			t.Errorf("%s: %s%s is not filtered by cluster=~\"$cluster\" and namespace=~\"$namespace\"", where, m[1], m[2])
		}
	}
}

// TestDashboard: the dashboard parses, uses the datasource variable, has the
// panels the chart promises, and every query and annotation parses as
// PromQL (through promtool) and uses only the daemon's metrics.
func TestDashboard(t *testing.T) {
	t.Parallel()
	raw, err := os.ReadFile(dashboardFile)
	if err != nil {
		t.Fatal(err)
	}
	var d dashboard
	if err := json.Unmarshal(raw, &d); err != nil {
		t.Fatalf("parse %s: %v", dashboardFile, err)
	}
	if d.SchemaVersion < 36 {
		t.Errorf("schemaVersion %d, want a current Grafana schema (39)", d.SchemaVersion)
	}
	hasDS := false
	for _, v := range d.Templating.List {
		hasDS = hasDS || (v.Name == "datasource" && v.Type == "datasource" && v.Query == "prometheus")
	}
	if !hasDS {
		t.Errorf("no datasource variable of type prometheus")
	}
	// A cluster variable from the label Prometheus adds, whose All (the
	// default) is .*, which also matches series without the label
	// (TestDashboardWithoutClusterLabel); the namespaces are those of the
	// chosen clusters.
	vars := map[string]int{}
	for i, v := range d.Templating.List {
		vars[v.Name] = i
	}
	if i, ok := vars["cluster"]; !ok {
		t.Errorf("no cluster variable")
	} else {
		v := d.Templating.List[i]
		q, _ := v.Query.(map[string]any)
		if v.Type != "query" || q["query"] != "label_values(autorollbackd_build_info, cluster)" || !v.IncludeAll || v.AllValue != ".*" ||
			!reflect.DeepEqual(v.Current.Value, []any{"$__all"}) {
			t.Errorf("cluster variable: got %+v, want label_values of cluster, All (.*) by default", v)
		}
		if vars["namespace"] < i {
			t.Errorf("the namespace variable comes before the cluster variable it depends on")
		}
	}
	if i, ok := vars["namespace"]; ok {
		q, _ := d.Templating.List[i].Query.(map[string]any)
		if q["query"] != `label_values(autorollbackd_build_info{cluster=~"$cluster"}, namespace)` {
			t.Errorf("namespace variable: query %v, want the namespaces of the chosen clusters", q["query"])
		}
	} else {
		t.Errorf("no namespace variable")
	}
	wantDS := `{"type":"prometheus","uid":"${datasource}"}`
	checkDS := func(what string, ds json.RawMessage) {
		var v any
		if err := json.Unmarshal(ds, &v); err != nil {
			t.Errorf("%s: datasource %s: %v", what, ds, err)
			return
		}
		got, _ := json.Marshal(v)
		if string(got) != wantDS {
			t.Errorf("%s: datasource %s, want %s", what, got, wantDS)
		}
	}

	type query struct{ where, expr string }
	var queries []query
	var walk func([]panel)
	walk = func(ps []panel) {
		for _, p := range ps {
			walk(p.Panels)
			if p.Type == "row" {
				continue
			}
			checkDS(fmt.Sprintf("panel %q", p.Title), p.Datasource)
			if len(p.Targets) == 0 {
				t.Errorf("panel %q has no query", p.Title)
			}
			for i, tg := range p.Targets {
				checkDS(fmt.Sprintf("panel %q target %d", p.Title, i), tg.Datasource)
				queries = append(queries, query{fmt.Sprintf("panel %q target %d", p.Title, i), tg.Expr})
			}
		}
	}
	walk(d.Panels)
	annotations := map[string]string{}
	for _, a := range d.Annotations.List {
		if a.Expr != "" {
			checkDS(fmt.Sprintf("annotation %q", a.Name), a.Datasource)
			queries = append(queries, query{fmt.Sprintf("annotation %q", a.Name), a.Expr})
			annotations[a.Name] = a.Expr
		}
	}
	// Rollbacks, failed actions and escalations on the time axis, each the
	// counter's increase over the annotations' step of one minute, from
	// zero for a series that has no sample a minute earlier: a counter's
	// first rollback, or a Prometheus that started within the minute
	// (TestDashboardAnnotations).
	for name, sel := range map[string]string{
		"Rollbacks":      `autorollbackd_actions_total{kind="rollback",result="applied",dry_run="false",cluster=~"$cluster",namespace=~"$namespace"}`,
		"Failed actions": `autorollbackd_actions_total{result="failed",dry_run="false",cluster=~"$cluster",namespace=~"$namespace"}`,
		"Escalations":    `autorollbackd_escalations_total{cluster=~"$cluster",namespace=~"$namespace"}`,
	} {
		if want := "(" + sel + " - (" + sel + " offset 1m or " + sel + " * 0)) > 0"; annotations[name] != want {
			t.Errorf("annotation %q: got %q, want %q", name, annotations[name], want)
		}
	}
	for _, q := range queries {
		checkFiltered(t, q.where, q.expr)
	}

	// The panels the chart promises, by what they query.
	all := ""
	for _, q := range queries {
		all += q.expr + "\n"
	}
	for _, want := range []string{
		`sum by (outcome, reason) (increase(autorollbackd_decisions_total`,
		`sum by (kind, result, dry_run) (increase(autorollbackd_actions_total`,
		`histogram_quantile(0.99, sum by (le) (rate(autorollbackd_alert_to_action_seconds_bucket`,
		`histogram_quantile(0.5, sum by (le) (rate(autorollbackd_alert_to_action_seconds_bucket`,
		`histogram_quantile(0.99, sum by (le) (rate(autorollbackd_action_to_recovery_seconds_bucket`,
		`sum by (kind, result) (increase(autorollbackd_verifications_total`,
		`sum by (level, result) (increase(autorollbackd_escalations_total`,
		`autorollbackd_incidents_open{`,
		`sum by (code) (rate(autorollbackd_webhook_requests_total`,
		`autorollbackd_webhook_auth_failures_total{`,
		`autorollbackd_config_last_reload_successful{`,
		`autorollbackd_leader{`,
	} {
		if !strings.Contains(all, want) {
			t.Errorf("no dashboard query with %s", want)
		}
	}

	// Every expression: only known metrics, and valid PromQL once Grafana's
	// variables are replaced, proved by promtool on a file of recording rules.
	var rules strings.Builder
	rules.WriteString("groups:\n  - name: dashboard\n    rules:\n")
	for i, q := range queries {
		if q.expr == "" {
			t.Errorf("%s: empty query", q.where)
			continue
		}
		if u := unknownMetrics(q.expr); len(u) != 0 {
			t.Errorf("%s: metrics the daemon does not export: %v in %s", q.where, u, q.expr)
		}
		expr := grafanaVars.Replace(q.expr)
		if strings.Contains(expr, "$") {
			t.Errorf("%s: unknown Grafana variable in %s", q.where, q.expr)
			continue
		}
		quoted, _ := json.Marshal(expr)
		fmt.Fprintf(&rules, "      - record: dashboard:query_%d\n        expr: %s\n", i, quoted)
	}
	path := filepath.Join(t.TempDir(), "dashboard.rules.yaml")
	if err := os.WriteFile(path, []byte(rules.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	out, err := run(t, 2*time.Minute, nil, tool(t, "promtool"), "check", "rules", path)
	if err != nil || !strings.Contains(out, fmt.Sprintf("SUCCESS: %d rules found", len(queries))) {
		t.Errorf("promtool check rules on the dashboard's queries: %v\n%s\n%s", err, out, rules.String())
	}
}

// TestDashboardAnnotations runs the dashboard's own queries in promtool on
// series scraped every 30s, with and without a cluster label. Each rollback
// is annotated once, at the first step of a minute after it, wherever
// between two steps it happened. With the cluster variable at All (its
// default) the series without a cluster label count too, so a Prometheus
// that adds none shows everything; with one cluster chosen, only its
// series.
func TestDashboardAnnotations(t *testing.T) {
	t.Parallel()
	raw, err := os.ReadFile(dashboardFile)
	if err != nil {
		t.Fatal(err)
	}
	var d dashboard
	if err := json.Unmarshal(raw, &d); err != nil {
		t.Fatal(err)
	}
	var rollbacks, leader string
	for _, a := range d.Annotations.List {
		if a.Name == "Rollbacks" {
			rollbacks = a.Expr
		}
	}
	for _, p := range d.Panels {
		if p.Title == "Leader" && len(p.Targets) == 1 {
			leader = p.Targets[0].Expr
		}
	}
	if rollbacks == "" || leader == "" {
		t.Fatalf("no Rollbacks annotation (%q) or Leader panel (%q)", rollbacks, leader)
	}
	// How Grafana writes the variables into a query: All is the
	// variable's allValue, one chosen value is itself.
	with := func(expr, cluster string) string {
		return strings.NewReplacer("$cluster", cluster, "$namespace", ".*").Replace(expr)
	}
	const (
		plain  = `job="autorollbackd",namespace="ops",pod="ard-1"`
		fresh  = `job="autorollbackd",namespace="ops",pod="ard-5"`
		tagged = `cluster="eu-1",job="autorollbackd",namespace="ops",pod="ard-9"`
		action = `dry_run="false",kind="rollback",result="applied"`
	)
	type sample struct {
		Labels string  `json:"labels"`
		Value  float64 `json:"value"`
	}
	type exprTest struct {
		Expr       string   `json:"expr"`
		EvalTime   string   `json:"eval_time"`
		ExpSamples []sample `json:"exp_samples"`
	}
	// ard-1 (no cluster label) rolls back between 1m and 1m30s, ard-9 (in
	// eu-1) between 2m30s and 3m, and again between 3m and 3m30s; ard-5's
	// counter first appears at 2m, with its first rollback.
	tests := []exprTest{
		{with(rollbacks, ".*"), "1m", nil},
		{with(rollbacks, ".*"), "2m", []sample{{"{" + action + "," + plain + "}", 1}, {"{" + action + "," + fresh + "}", 1}}},
		{with(rollbacks, ".*"), "3m", []sample{{"{" + tagged + "," + action + "}", 1}}},
		{with(rollbacks, ".*"), "4m", []sample{{"{" + tagged + "," + action + "}", 1}}},
		{with(rollbacks, ".*"), "5m", nil},
		{with(rollbacks, "eu-1"), "2m", nil},
		{with(rollbacks, "eu-1"), "3m", []sample{{"{" + tagged + "," + action + "}", 1}}},
		{with(leader, ".*"), "3m", []sample{{`{pod="ard-1"}`, 1}, {`{pod="ard-9"}`, 1}}},
		{with(leader, "eu-1"), "3m", []sample{{`{pod="ard-9"}`, 1}}},
	}
	file := map[string]any{
		"rule_files":          []string{},
		"evaluation_interval": "1m",
		"tests": []any{map[string]any{
			"interval": "30s",
			"input_series": []map[string]string{
				// Samples at 0s, 30s, 1m, 1m30s, ...
				{"series": "autorollbackd_actions_total{" + plain + "," + action + "}", "values": "0 0 0 1 1 1 1 1 1 1 1"},
				{"series": "autorollbackd_actions_total{" + tagged + "," + action + "}", "values": "0 0 0 0 0 0 1 2 2 2 2"},
				{"series": "autorollbackd_actions_total{" + fresh + "," + action + "}", "values": "_ _ _ _ 1 1 1 1 1 1 1"},
				{"series": "autorollbackd_leader{" + plain + "}", "values": "1x10"},
				{"series": "autorollbackd_leader{" + tagged + "}", "values": "1x10"},
			},
			"promql_expr_test": tests,
		}},
	}
	out, err := yaml.Marshal(file)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "dashboard.test.yaml")
	if err := os.WriteFile(path, out, 0o600); err != nil {
		t.Fatal(err)
	}
	res, err := run(t, 2*time.Minute, nil, tool(t, "promtool"), "test", "rules", path)
	if err != nil || !strings.Contains(res, "SUCCESS") {
		t.Errorf("promtool test rules on the dashboard's queries: %v\n%s\n%s", err, res, out)
	}
}
