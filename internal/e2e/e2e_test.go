// Package e2e proves the whole loop the way users run it: Prometheus
// notices a bad rollout, Alertmanager (an HA pair) calls autorollbackd,
// autorollbackd undoes it and verifies it, and the metrics behind the
// shipped Grafana dashboard are there in a real Prometheus.
package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/alertmanager/template"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/autorollbackd/autorollbackd/internal/escalate"
	"github.com/autorollbackd/autorollbackd/internal/kinds"
	"github.com/autorollbackd/autorollbackd/internal/loop"
	"github.com/autorollbackd/autorollbackd/internal/testenv"
)

func TestMain(m *testing.M) { os.Exit(testenv.Run(m)) }

// given starts the loop with an Alertmanager HA pair.
func given(t *testing.T) *loop.Loop {
	t.Helper()
	c := testenv.Require(t)
	dir := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	if err := loop.Build(ctx, "../..", dir); err != nil {
		t.Fatal(err)
	}
	// Each test has namespaces of its own in the shared cluster.
	ns := c.Namespace(t)
	l, err := loop.Start(ctx, loop.Options{Cluster: c, Dir: dir, Bin: dir, HAPair: true, Logf: t.Logf,
		Namespace: ns + "-prod", RecordsNamespace: ns})
	t.Cleanup(func() {
		l.Stop()
		if t.Failed() && l.Daemon != nil {
			t.Logf("autorollbackd output:\n%s", l.Daemon.Output())
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	return l
}

type incidentJSON struct {
	ID         string    `json:"id"`
	State      string    `json:"state"`
	StartedAt  time.Time `json:"startedAt"`
	ResolvedAt time.Time `json:"resolvedAt"`
	Decision   struct {
		Outcome string `json:"outcome"`
		Reason  string `json:"reason"`
	} `json:"decision"`
	Target struct {
		Name string `json:"name"`
	} `json:"target"`
	Actions []struct {
		At     time.Time `json:"at"`
		Result *struct {
			Outcome  string `json:"outcome"`
			From, To int64
		} `json:"result"`
	} `json:"actions"`
	Verifications []struct {
		At      time.Time `json:"at"`
		Overall string    `json:"overall"`
		Results []struct {
			Check, Status, Message string
		} `json:"results"`
	} `json:"verifications"`
	Alerts []struct {
		ResolvedAt time.Time `json:"resolvedAt"`
	} `json:"alerts"`
	Timeline []struct {
		At   time.Time `json:"at"`
		What string    `json:"what"`
	} `json:"timeline"`
}

func incidents(t *testing.T, l *loop.Loop) []incidentJSON {
	t.Helper()
	var list []struct{ ID string }
	if err := l.API(context.Background(), "/api/v1/incidents", &list); err != nil {
		t.Fatal(err)
	}
	var out []incidentJSON
	for _, s := range list {
		var inc incidentJSON
		if err := l.API(context.Background(), "/api/v1/incidents/"+s.ID, &inc); err != nil {
			t.Fatal(err)
		}
		out = append(out, inc)
	}
	return out
}

func TestBadRolloutIsRolledBackOnce(t *testing.T) {
	l := given(t)
	c := testenv.Require(t)
	ctx := context.Background()

	// When a bad version rolls out.
	rolledOut := time.Now()
	if _, err := l.Deploy(ctx, loop.Service, loop.Service+":v2-bad"); err != nil {
		t.Fatal(err)
	}
	var firingAt time.Time
	testenv.Eventually(t, 2*time.Minute, "Prometheus fires EventServiceDown", func(ctx context.Context) (bool, string) {
		firing, err := l.FiringAlerts(ctx)
		if err != nil {
			return false, err.Error()
		}
		at, ok := firing["EventServiceDown/"+loop.Service]
		firingAt = at
		return ok, fmt.Sprint(firing)
	})
	// Then it is rolled back, verified and resolved.
	var inc incidentJSON
	testenv.Eventually(t, 3*time.Minute, "the incident resolves", func(context.Context) (bool, string) {
		list := incidents(t, l)
		for _, i := range list {
			if i.Target.Name == loop.Service {
				inc = i
			}
		}
		return inc.State == "resolved", fmt.Sprintf("%+v", list)
	})
	if len(inc.Actions) != 1 || inc.Actions[0].Result == nil || inc.Actions[0].Result.Outcome != "applied" {
		t.Fatalf("actions = %+v, want exactly one applied rollback", inc.Actions)
	}
	if n := len(inc.Verifications); n != 1 || inc.Verifications[0].Overall != "pass" {
		t.Fatalf("verifications = %+v, want one pass", inc.Verifications)
	}
	checks := map[string]string{}
	for _, r := range inc.Verifications[0].Results {
		checks[r.Check] = r.Status
	}
	for _, want := range []string{"rollout", "pods", "http:live", "http:ready", "http:list-events", "promql:error-ratio"} {
		if checks[want] != "pass" {
			t.Errorf("check %s = %q, want pass (all: %v)", want, checks[want], checks)
		}
	}
	d, err := c.Client.AppsV1().Deployments(l.Namespace).Get(ctx, loop.Service, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if img := d.Spec.Template.Spec.Containers[0].Image; img != loop.Service+":v1" || d.Annotations["deployment.kubernetes.io/revision"] != "3" {
		t.Fatalf("deployment at %s revision %s, want the last good v1 at revision 3 (one rollback)", img, d.Annotations["deployment.kubernetes.io/revision"])
	}
	if d.Status.AvailableReplicas != *d.Spec.Replicas {
		t.Errorf("deployment has %d of %d replicas available", d.Status.AvailableReplicas, *d.Spec.Replicas)
	}
	// Both Alertmanagers of the pair notified; nothing was done twice.
	testenv.Eventually(t, time.Minute, "the HA pair's second notification is recognised as a duplicate", func(ctx context.Context) (bool, string) {
		v := l.Metric(ctx, "autorollbackd_alerts_duplicate_total")
		return v != "" && v != "0", v
	})
	// People were paged as well: routing to autorollbackd took nothing
	// from the on-call receiver.
	testenv.Eventually(t, time.Minute, "on-call receives EventServiceDown firing", func(context.Context) (bool, string) {
		_, ok := l.OnCall.Received("firing", map[string]string{"alertname": "EventServiceDown", "deployment": loop.Service})
		return ok, "not yet"
	})
	var resolvedAt time.Time
	testenv.Eventually(t, 2*time.Minute, "Alertmanager reports the alert resolved", func(context.Context) (bool, string) {
		list := incidents(t, l)
		for _, i := range list {
			if i.ID == inc.ID && len(i.Alerts) > 0 && !i.Alerts[0].ResolvedAt.IsZero() {
				resolvedAt = i.Alerts[0].ResolvedAt
				return true, ""
			}
		}
		return false, "not yet"
	})
	var received time.Time
	for _, e := range inc.Timeline {
		if strings.Contains(e.What, "webhook received") {
			received = e.At
		}
	}
	t.Logf("measured times, from the bad rollout:")
	t.Logf("  alert firing in Prometheus   +%s", firingAt.Sub(rolledOut).Round(time.Millisecond))
	t.Logf("  notification received        +%s", received.Sub(rolledOut).Round(time.Millisecond))
	t.Logf("  rollback accepted            +%s", inc.Actions[0].At.Sub(rolledOut).Round(time.Millisecond))
	t.Logf("  rollout verified complete    +%s", inc.Verifications[0].At.Sub(rolledOut).Round(time.Millisecond))
	t.Logf("  alert resolved               +%s", resolvedAt.Sub(rolledOut).Round(time.Millisecond))

	// The dashboard's every query returns data from the real Prometheus.
	dashboardQueriesReturnData(t, l)
	chartRulesLoaded(t, l)
}

func TestFixForwardNotifiesAndChangesNothing(t *testing.T) {
	l := given(t)
	c := testenv.Require(t)
	ctx := context.Background()
	if _, err := l.Deploy(ctx, loop.Service, loop.Service+":v2-degraded"); err != nil {
		t.Fatal(err)
	}
	var inc incidentJSON
	testenv.Eventually(t, 3*time.Minute, "a fix-forward incident", func(context.Context) (bool, string) {
		for _, i := range incidents(t, l) {
			if i.Decision.Outcome == "fix_forward" {
				inc = i
				return true, ""
			}
		}
		return false, "none"
	})
	if len(inc.Actions) != 0 {
		t.Fatalf("fix forward took actions: %+v", inc.Actions)
	}
	testenv.Eventually(t, time.Minute, "stakeholders are notified", func(context.Context) (bool, string) {
		for _, m := range l.Messages.All() {
			if m.Kind == "announce" && strings.Contains(m.Summary, "incident opened") && strings.Contains(m.Summary, "fix") {
				return true, ""
			}
		}
		return false, fmt.Sprint(l.Messages.All())
	})
	d, err := c.Client.AppsV1().Deployments(l.Namespace).Get(ctx, loop.Service, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if img := d.Spec.Template.Spec.Containers[0].Image; img != loop.Service+":v2-degraded" || d.Annotations["deployment.kubernetes.io/revision"] != "2" {
		t.Fatalf("fix forward changed the deployment: %s revision %s", img, d.Annotations["deployment.kubernetes.io/revision"])
	}
}

// A rollback the policy refuses (Argo CD manages the Deployment, and
// policy.gitops.mode is escalate) pages on-call at once, through the
// daemon's alertmanager notifier: a real Alertmanager routes the page to
// the on-call receiver beside the alert that caused it.
func TestRefusedRollbackPagesOnCallThroughAlertmanager(t *testing.T) {
	l := given(t)
	c := testenv.Require(t)
	ctx := context.Background()
	patch := fmt.Sprintf(`{"metadata":{"annotations":{%q:"checkout:apps/Deployment:%s/%s"}}}`, kinds.AnnotationArgoTrackingID, l.Namespace, loop.Service)
	if _, err := c.Client.AppsV1().Deployments(l.Namespace).Patch(ctx, loop.Service, types.MergePatchType, []byte(patch), metav1.PatchOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := l.Deploy(ctx, loop.Service, loop.Service+":v2-bad"); err != nil {
		t.Fatal(err)
	}
	var page template.Alert
	testenv.Eventually(t, 3*time.Minute, "on-call is paged through Alertmanager", func(context.Context) (bool, string) {
		a, ok := l.OnCall.Received("firing", map[string]string{
			"alertname": escalate.DefaultAlertmanagerAlertname, "level": escalate.LevelOnCall,
			"namespace": l.Namespace, "workload": loop.Service, "workload_kind": "Deployment",
		})
		page = a
		return ok, "not yet"
	})
	if page.Labels["severity"] != "critical" || page.Labels["incident"] == "" || page.Annotations["summary"] == "" {
		t.Errorf("page labels %v annotations %v", page.Labels, page.Annotations)
	}
	var inc incidentJSON
	for _, i := range incidents(t, l) {
		if i.ID == page.Labels["incident"] {
			inc = i
		}
	}
	if inc.Decision.Reason != "gitops_managed" || len(inc.Actions) != 0 {
		t.Errorf("incident %s: decision %+v, actions %+v; want an escalation for gitops_managed and no action", page.Labels["incident"], inc.Decision, inc.Actions)
	}
	d, err := c.Client.AppsV1().Deployments(l.Namespace).Get(ctx, loop.Service, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if img := d.Spec.Template.Spec.Containers[0].Image; img != loop.Service+":v2-bad" {
		t.Errorf("the refused rollback changed the Deployment: %s", img)
	}
}

func TestNotOptedInIsNeverTouched(t *testing.T) {
	l := given(t)
	c := testenv.Require(t)
	ctx := context.Background()
	if _, err := l.Deploy(ctx, loop.Legacy, loop.Legacy+":v2-bad"); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 3*time.Minute, "the alert about the legacy service is refused", func(ctx context.Context) (bool, string) {
		v := l.Metric(ctx, `autorollbackd_decisions_total{outcome="refuse",reason="not_opted_in"}`)
		return v != "" && v != "0", v
	})
	for _, i := range incidents(t, l) {
		if i.Target.Name == loop.Legacy {
			t.Fatalf("an incident was opened for the legacy service: %+v", i)
		}
	}
	d, err := c.Client.AppsV1().Deployments(l.Namespace).Get(ctx, loop.Legacy, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if img := d.Spec.Template.Spec.Containers[0].Image; img != loop.Legacy+":v2-bad" || d.Annotations["deployment.kubernetes.io/revision"] != "2" {
		t.Fatalf("the legacy service was touched: %s revision %s", img, d.Annotations["deployment.kubernetes.io/revision"])
	}
}

// dashboardQueriesReturnData runs every query of the shipped Grafana
// dashboard against the loop's Prometheus and expects data.
func dashboardQueriesReturnData(t *testing.T, l *loop.Loop) {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join("..", "..", "charts", "autorollbackd", "dashboards", "autorollbackd.json"))
	if err != nil {
		t.Fatal(err)
	}
	exprs := regexp.MustCompile(`"(?:expr|query)":\s*"((?:[^"\\]|\\.)*)"`).FindAllSubmatch(raw, -1)
	if len(exprs) < 10 {
		t.Fatalf("found only %d queries in the dashboard", len(exprs))
	}
	replacer := strings.NewReplacer("$__rate_interval", "1m", "$__interval", "1m", "$__range", "5m", "${datasource}", "")
	// Dashboard variables in label matchers select everything.
	variables := regexp.MustCompile(`"\$\{?[a-z_]+\}?"`)
	for _, m := range exprs {
		var expr string
		if err := json.Unmarshal([]byte(`"`+string(m[1])+`"`), &expr); err != nil {
			t.Fatal(err)
		}
		expr = variables.ReplaceAllString(replacer.Replace(expr), `".*"`)
		// A template variable's query is Grafana's label_values(series,
		// label): what must return data is the series.
		if inner, ok := strings.CutPrefix(expr, "label_values("); ok {
			expr = strings.TrimSpace(inner[:strings.LastIndex(inner, ",")])
		}
		if !strings.Contains(expr, "autorollbackd_") && !strings.Contains(expr, "up") {
			continue
		}
		// An annotation marks events: failed actions and escalations have
		// none in a rollback that works, so what must return data is
		// their increase, zero included. The rollback happened: its
		// annotation must show.
		if inner, ok := strings.CutSuffix(expr, " > 0"); ok && strings.Contains(expr, " offset 1m") && !strings.Contains(expr, `kind="rollback",result="applied"`) {
			expr = inner
		}
		testenv.Eventually(t, 30*time.Second, "dashboard query returns data: "+expr, func(ctx context.Context) (bool, string) {
			n, err := queryCount(ctx, l, expr)
			if err != nil {
				return false, err.Error()
			}
			return n > 0, fmt.Sprintf("%d series", n)
		})
	}
}

func queryCount(ctx context.Context, l *loop.Loop, expr string) (int, error) {
	u := fmt.Sprintf("http://%s/api/v1/query_range?query=%s&start=%d&end=%d&step=5", l.Prometheus.Addr, url.QueryEscape(expr),
		time.Now().Add(-10*time.Minute).Unix(), time.Now().Unix())
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	var out struct {
		Status string `json:"status"`
		Error  string `json:"error"`
		Data   struct {
			Result []json.RawMessage `json:"result"`
		} `json:"data"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil {
		return 0, err
	}
	if out.Status != "success" {
		return 0, fmt.Errorf("query failed: %s", out.Error)
	}
	return len(out.Data.Result), nil
}

// chartRulesLoaded checks that the chart's PrometheusRule groups loaded into
// the real Prometheus.
func chartRulesLoaded(t *testing.T, l *loop.Loop) {
	t.Helper()
	resp, err := http.Get("http://" + l.Prometheus.Addr + "/api/v1/rules")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var out struct {
		Data struct {
			Groups []struct {
				Name  string `json:"name"`
				Rules []struct {
					Name   string `json:"name"`
					Health string `json:"health"`
				} `json:"rules"`
			} `json:"groups"`
		} `json:"data"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil {
		t.Fatal(err)
	}
	loaded := map[string]string{}
	for _, g := range out.Data.Groups {
		for _, r := range g.Rules {
			loaded[r.Name] = r.Health
		}
	}
	for _, name := range []string{"AutoRollbackFailed", "AutoRollbackVerificationFailed", "AutoRollbackEscalated", "AutoRollbackWebhookRejecting", "AutoRollbackNotReady", "AutoRollbackConfigReloadFailed"} {
		if h, ok := loaded[name]; !ok || h == "err" {
			t.Errorf("rule %s: loaded %v, health %q", name, ok, h)
		}
	}
}
