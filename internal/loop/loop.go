// Package loop runs the whole loop on loopback, the way users run it:
// the local control plane, the stand-in event-service playing its pods,
// autorollbackd, Prometheus evaluating an alert rule derived from the
// runbook, and Alertmanager (optionally an HA pair) calling the daemon's
// webhook. The demo narrates it; the end-to-end tests assert on it.
package loop

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/util/retry"

	"github.com/prometheus/alertmanager/template"

	"github.com/autorollbackd/autorollbackd/internal/kinds"
	"github.com/autorollbackd/autorollbackd/internal/testenv"
)

// The workloads of the loop.
const (
	// Service is opted in to automatic rollback.
	Service = "event-service"
	// Legacy is the same program, not opted in: never to be touched.
	Legacy = "legacy-service"
)

// Options configures a loop.
type Options struct {
	Cluster *testenv.Cluster
	// Dir holds every file of the loop; the caller removes it.
	Dir string
	// Bin holds the autorollbackd and event-service binaries; Build fills it.
	Bin string
	// HAPair runs two clustered Alertmanagers, both notifying the daemon.
	HAPair bool
	// Namespace holds the workloads (default "production"); RecordsNamespace
	// the daemon's records and Lease (default "autorollbackd").
	Namespace, RecordsNamespace string
	// Logf reports progress; nil is silent.
	Logf func(format string, args ...any)
}

// Loop is a running loop.
type Loop struct {
	opts      Options
	Namespace string
	// Token is the webhook's bearer token, the one Alertmanager sends.
	Token string
	// APIToken is the read token of the incidents API, kept apart from
	// Token: the daemon refuses a read token equal to the webhook's.
	APIToken      string
	Daemon        *testenv.Process
	Services      map[string]*testenv.Process
	Prometheus    *testenv.Process
	Alertmanagers []*testenv.Process
	// Messages receives what the daemon announces and pages.
	Messages *Inbox
	inboxSrv *httptest.Server
	// OnCall is the on-call receiver of the Alertmanagers, routed beside
	// autorollbackd as the docs show: people still get every alert.
	OnCall    *Pages
	onCallSrv *httptest.Server
	stopLoad  context.CancelFunc
	loadDone  chan struct{}
	// prometheusAddr is chosen before the daemon starts, so its PromQL
	// check can name it; the Alertmanagers' addresses too, so that it
	// pages through them.
	prometheusAddr    string
	alertmanagerAddrs []string
}

// Build compiles autorollbackd and the stand-in event-service into dir.
func Build(ctx context.Context, moduleRoot, dir string) error {
	for pkg, out := range map[string]string{"./cmd/autorollbackd": "autorollbackd", "./examples/event-service": "event-service"} {
		cmd := exec.CommandContext(ctx, "go", "build", "-o", filepath.Join(dir, out), pkg)
		cmd.Dir = moduleRoot
		if b, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("build %s: %w\n%s", pkg, err, b)
		}
	}
	return nil
}

func (l *Loop) logf(format string, args ...any) {
	if l.opts.Logf != nil {
		l.opts.Logf(format, args...)
	}
}

// Start brings the loop up: namespaces, the Deployments at their first
// (good) version, the stand-ins, the daemon, Prometheus and Alertmanager.
// Stop it with Stop, also after an error.
func Start(ctx context.Context, opts Options) (*Loop, error) {
	if opts.Namespace == "" {
		opts.Namespace = "production"
	}
	if opts.RecordsNamespace == "" {
		opts.RecordsNamespace = "autorollbackd"
	}
	l := &Loop{opts: opts, Namespace: opts.Namespace, Services: map[string]*testenv.Process{}, Messages: &Inbox{}, OnCall: &Pages{}}
	now := time.Now().UnixNano()
	l.Token = fmt.Sprint("loop-", now)
	l.APIToken = fmt.Sprint("loop-read-", now)
	c := opts.Cluster
	for _, ns := range []string{opts.Namespace, opts.RecordsNamespace} {
		_, err := c.Client.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{})
		if err != nil && !apierrors.IsAlreadyExists(err) {
			return l, fmt.Errorf("create namespace %s: %w", ns, err)
		}
	}
	for _, name := range []string{Service, Legacy} {
		if _, err := l.Deploy(ctx, name, name+":v1"); err != nil {
			return l, err
		}
	}
	for _, name := range []string{Service, Legacy} {
		addr, err := testenv.FreeAddr()
		if err != nil {
			return l, err
		}
		p, err := testenv.StartProcess(ctx, name, addr, "/metrics", filepath.Join(opts.Bin, "event-service"),
			"--kubeconfig", c.Kubeconfig, "--namespace", l.Namespace, "--deployment", name, "--listen-address", addr)
		if err != nil {
			return l, err
		}
		l.Services[name] = p
	}
	l.inboxSrv = httptest.NewServer(l.Messages)
	l.onCallSrv = httptest.NewServer(l.OnCall)
	n := 1
	if opts.HAPair {
		n = 2
	}
	for range n {
		a, err := testenv.FreeAddr()
		if err != nil {
			return l, err
		}
		l.alertmanagerAddrs = append(l.alertmanagerAddrs, a)
	}
	if err := l.startDaemon(ctx); err != nil {
		return l, err
	}
	if err := l.startAlertmanagers(ctx); err != nil {
		return l, err
	}
	if err := l.startPrometheus(ctx); err != nil {
		return l, err
	}
	loadCtx, cancel := context.WithCancel(context.Background())
	l.stopLoad, l.loadDone = cancel, make(chan struct{})
	go l.traffic(loadCtx)
	return l, nil
}

// Stop ends every process of the loop. The cluster is the caller's.
func (l *Loop) Stop() {
	if l.stopLoad != nil {
		l.stopLoad()
		<-l.loadDone
	}
	procs := append([]*testenv.Process{l.Prometheus, l.Daemon}, l.Alertmanagers...)
	for _, p := range l.Services {
		procs = append(procs, p)
	}
	for _, p := range procs {
		if p != nil {
			p.Stop()
		}
	}
	for _, srv := range []*httptest.Server{l.inboxSrv, l.onCallSrv} {
		if srv != nil {
			srv.Close()
		}
	}
}

// Deploy creates or updates a Deployment of the stand-in to run image, and
// waits until the controller has numbered the new revision. It returns the
// revision.
func (l *Loop) Deploy(ctx context.Context, name, image string) (string, error) {
	api := l.opts.Cluster.Client.AppsV1().Deployments(l.Namespace)
	labels := map[string]string{"app": name}
	if name == Service {
		labels[kinds.LabelEnabled] = "true"
	}
	replicas := int32(3)
	var want string
	err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
		d, err := api.Get(ctx, name, metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			d = &appsv1.Deployment{
				ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: l.Namespace, Labels: labels},
				Spec: appsv1.DeploymentSpec{
					Replicas: &replicas,
					Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": name}},
					Template: corev1.PodTemplateSpec{
						ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{"app": name}},
						Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "app", Image: image}}},
					},
				},
			}
			_, err = api.Create(ctx, d, metav1.CreateOptions{})
			want = "1"
			return err
		}
		if err != nil {
			return err
		}
		d.Spec.Template.Spec.Containers[0].Image = image
		if _, err = api.Update(ctx, d, metav1.UpdateOptions{}); err != nil {
			return err
		}
		return nil
	})
	if err != nil {
		return "", fmt.Errorf("deploy %s %s: %w", name, image, err)
	}
	var rev string
	err = wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, time.Minute, true, func(ctx context.Context) (bool, error) {
		d, err := api.Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return false, nil
		}
		rev = d.Annotations[kinds.AnnotationDeploymentRevision]
		return d.Status.ObservedGeneration >= d.Generation && rev != "" && (want == "" || rev == want) &&
			d.Spec.Template.Spec.Containers[0].Image == image, nil
	})
	if err != nil {
		return "", fmt.Errorf("wait for %s to roll out %s: %w", name, image, err)
	}
	return rev, nil
}

func (l *Loop) startDaemon(ctx context.Context) error {
	dir := l.opts.Dir
	token := filepath.Join(dir, "webhook-token")
	if err := os.WriteFile(token, []byte(l.Token+"\n"), 0o600); err != nil {
		return err
	}
	apiToken := filepath.Join(dir, "api-token")
	if err := os.WriteFile(apiToken, []byte(l.APIToken+"\n"), 0o600); err != nil {
		return err
	}
	addr, err := testenv.FreeAddr()
	if err != nil {
		return err
	}
	// Prometheus is not up yet; its address is fixed now so the daemon's
	// PromQL check can name it.
	promAddr, err := testenv.FreeAddr()
	if err != nil {
		return err
	}
	svc := l.Services[Service].Addr
	cfg := fmt.Sprintf(`server:
  listenAddress: %q
webhook:
  auth:
    bearerTokenFile: %s
api:
  auth:
    bearerTokenFile: %s
engine:
  namespace: %s
leaderElection:
  leaseDuration: 4s
  renewDeadline: 3s
  retryPeriod: 500ms
policy:
  namespaces:
    allow: [%s]
verify:
  pollInterval: 500ms
  rollout: {timeout: 60s}
  pods: {timeout: 60s}
  prometheusURL: http://%s
  http:
  - {name: live, url: 'http://%s/health/live', retries: 10, interval: 1s}
  - {name: ready, url: 'http://%s/health/ready', retries: 10, interval: 1s}
  - {name: list-events, url: 'http://%s/api/v1/events?limit=1', retries: 10, interval: 1s}
  promql:
  - name: error-ratio
    query: 'sum(rate(http_requests_total{job="event-service",code=~"5.."}[5s])) / sum(rate(http_requests_total{job="event-service"}[5s]))'
    op: '<'
    threshold: 0.01
    consecutive: 3
    interval: 1s
    timeout: 90s
escalation:
  notifiers:
  - {name: demo, type: webhook, webhook: {url: %q}}
  - {name: events, type: events}
  - {name: alertmanager, type: alertmanager, alertmanager: {urls: [%s], labels: {severity: critical}}}
  announce: [demo, events]
  ladder:
  - {after: 5m, level: oncall, notifiers: [demo, events, alertmanager]}
  - {after: 10m, level: lead, notifiers: [demo, events, alertmanager]}
  - {after: 15m, level: war_room, notifiers: [demo, events, alertmanager]}
`, addr, token, apiToken, l.opts.RecordsNamespace, l.Namespace, promAddr, svc, svc, svc, l.inboxSrv.URL, l.alertmanagerURLs())
	file := filepath.Join(dir, "autorollbackd.yaml")
	if err := os.WriteFile(file, []byte(cfg), 0o600); err != nil {
		return err
	}
	l.prometheusAddr = promAddr
	l.logf("starting autorollbackd on %s", addr)
	l.Daemon, err = testenv.StartProcess(ctx, "autorollbackd", addr, "/readyz", filepath.Join(l.opts.Bin, "autorollbackd"),
		"serve", "--config", file, "--kubeconfig", l.opts.Cluster.Kubeconfig)
	if err != nil {
		return err
	}
	return wait.PollUntilContextTimeout(ctx, 200*time.Millisecond, time.Minute, true, func(ctx context.Context) (bool, error) {
		return l.Metric(ctx, "autorollbackd_leader") == "1", nil
	})
}

func (l *Loop) startAlertmanagers(ctx context.Context) error {
	tokenFile := filepath.Join(l.opts.Dir, "webhook-token")
	// The routes of docs/install.md: autorollbackd's route continues, and
	// a route of its own keeps on-call paged (Alertmanager notifies a
	// parent's receiver only when no child route matched).
	cfg := fmt.Sprintf(`route:
  receiver: oncall
  group_by: [alertname, namespace, deployment]
  group_wait: 1s
  group_interval: 2s
  repeat_interval: 1m
  routes:
  - matchers: ['impact=~"service_down|data_corruption|security_vulnerability|critical_flow_broken|non_critical"']
    receiver: autorollbackd
    continue: true
  - receiver: oncall
receivers:
- name: oncall
  webhook_configs:
  - url: %s
    send_resolved: true
- name: autorollbackd
  webhook_configs:
  - url: http://%s/webhook
    send_resolved: true
    max_alerts: 1000
    http_config:
      authorization:
        credentials_file: %s
`, l.onCallSrv.URL, l.Daemon.Addr, tokenFile)
	n := len(l.alertmanagerAddrs)
	var cluster []string
	for range n {
		a, err := testenv.FreeAddr()
		if err != nil {
			return err
		}
		cluster = append(cluster, a)
	}
	for i := range n {
		dir := filepath.Join(l.opts.Dir, fmt.Sprintf("alertmanager-%d", i))
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return err
		}
		clusterAddr, peers := "", []string(nil)
		if n > 1 {
			clusterAddr = cluster[i]
			for j, p := range cluster {
				if j != i {
					peers = append(peers, p)
				}
			}
		}
		am, err := testenv.StartAlertmanagerOn(ctx, l.alertmanagerAddrs[i], dir, cfg, clusterAddr, peers...)
		if err != nil {
			return err
		}
		l.logf("Alertmanager %d on %s", i+1, am.Addr)
		l.Alertmanagers = append(l.Alertmanagers, am)
	}
	return nil
}

// Rules is the alert rule file derived from the runbook: "500 errors on all
// endpoints" is the service down; a degraded non-critical feature fixes
// forward.
const Rules = `groups:
- name: event-service
  rules:
  - alert: EventServiceDown
    expr: |
      sum by (namespace, deployment) (rate(http_requests_total{job="event-service",code=~"5.."}[5s]))
        / sum by (namespace, deployment) (rate(http_requests_total{job="event-service"}[5s])) > 0.5
    for: 2s
    labels: {severity: critical, impact: service_down}
    annotations:
      summary: '{{ $labels.deployment }} answers 500 on all endpoints'
      runbook_url: https://runbooks.example.com/service-rollback
  - alert: EventServicePricingDegraded
    expr: max by (namespace, deployment) (event_service_pricing_degraded{job="event-service"}) > 0
    for: 2s
    labels: {severity: warning, impact: non_critical}
    annotations:
      summary: '{{ $labels.deployment }}: dynamic pricing degraded'
`

func (l *Loop) startPrometheus(ctx context.Context) error {
	dir := filepath.Join(l.opts.Dir, "prometheus")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	var ams []string
	for _, am := range l.Alertmanagers {
		ams = append(ams, fmt.Sprintf("%q", am.Addr))
	}
	var scrape strings.Builder
	for name, p := range l.Services {
		fmt.Fprintf(&scrape, "  - targets: [%q]\n    labels: {namespace: %s, deployment: %s}\n", p.Addr, l.Namespace, name)
	}
	cfg := fmt.Sprintf(`global:
  scrape_interval: 1s
  evaluation_interval: 1s
rule_files: [rules.yml, autorollbackd.rules.yml]
alerting:
  alertmanagers:
  - static_configs:
    - targets: [%s]
scrape_configs:
- job_name: event-service
  static_configs:
%s- job_name: autorollbackd
  static_configs:
  - targets: [%q]
`, strings.Join(ams, ", "), scrape.String(), l.Daemon.Addr)
	ownRules, err := os.ReadFile(filepath.Join(moduleRoot(), "charts", "autorollbackd", "rules", "autorollbackd.rules.yaml"))
	if err != nil {
		return fmt.Errorf("read the chart's rules: %w", err)
	}
	p, err := testenv.StartPrometheus(ctx, dir, l.prometheusAddr, cfg, map[string]string{"rules.yml": Rules, "autorollbackd.rules.yml": string(ownRules)})
	if err != nil {
		return err
	}
	l.logf("Prometheus on %s", p.Addr)
	l.Prometheus = p
	return nil
}

// traffic sends steady requests to every stand-in, as users would, so that
// error ratios mean something. It stops with ctx.
func (l *Loop) traffic(ctx context.Context) {
	defer close(l.loadDone)
	client := &http.Client{Timeout: 2 * time.Second}
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		for _, p := range l.Services {
			for _, path := range []string{"/api/v1/events", "/api/v1/events/1", "/health/live"} {
				req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+p.Addr+path, nil)
				if resp, err := client.Do(req); err == nil {
					_, _ = io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
				}
			}
		}
	}
}

// Metric returns the value of one series on the daemon's /metrics, or "".
func (l *Loop) Metric(ctx context.Context, series string) string {
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+l.Daemon.Addr+"/metrics", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return ""
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	for _, line := range strings.Split(string(body), "\n") {
		if v, ok := strings.CutPrefix(line, series+" "); ok {
			return v
		}
	}
	return ""
}

// API gets a path of the daemon's incident API into v, with the read
// token.
func (l *Loop) API(ctx context.Context, path string, v any) error {
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+l.Daemon.Addr+path, nil)
	req.Header.Set("Authorization", "Bearer "+l.APIToken)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(resp.Body)
		return fmt.Errorf("GET %s: %d %s", path, resp.StatusCode, b)
	}
	return json.NewDecoder(resp.Body).Decode(v)
}

// FiringAlerts returns the names of the alerts Prometheus has firing.
func (l *Loop) FiringAlerts(ctx context.Context) (map[string]time.Time, error) {
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+l.Prometheus.Addr+"/api/v1/alerts", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	var out struct {
		Data struct {
			Alerts []struct {
				Labels   map[string]string `json:"labels"`
				State    string            `json:"state"`
				ActiveAt time.Time         `json:"activeAt"`
			} `json:"alerts"`
		} `json:"data"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil {
		return nil, err
	}
	firing := map[string]time.Time{}
	for _, a := range out.Data.Alerts {
		if a.State == "firing" {
			firing[a.Labels["alertname"]+"/"+a.Labels["deployment"]] = a.ActiveAt
		}
	}
	return firing, nil
}

// Inbox receives the daemon's messages through its webhook notifier.
type Inbox struct {
	mu   sync.Mutex
	msgs []Message
	// OnMessage, when set, sees each message as it arrives.
	OnMessage func(Message)
}

// Message is one notification from the daemon.
type Message struct {
	At      time.Time
	Kind    string `json:"kind"`
	Level   string `json:"level"`
	Summary string `json:"summary"`
}

func (b *Inbox) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	var m Message
	if err := json.NewDecoder(r.Body).Decode(&m); err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	m.At = time.Now()
	b.mu.Lock()
	b.msgs = append(b.msgs, m)
	on := b.OnMessage
	b.mu.Unlock()
	if on != nil {
		on(m)
	}
}

// All returns every message so far.
func (b *Inbox) All() []Message {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]Message(nil), b.msgs...)
}

// alertmanagerURLs lists the Alertmanagers' URLs, comma-separated.
func (l *Loop) alertmanagerURLs() string {
	urls := make([]string, len(l.alertmanagerAddrs))
	for i, a := range l.alertmanagerAddrs {
		urls[i] = "http://" + a
	}
	return strings.Join(urls, ", ")
}

// Pages receives Alertmanager's notifications to the on-call receiver.
type Pages struct {
	mu    sync.Mutex
	pages []template.Data
}

func (p *Pages) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	var d template.Data
	if err := json.NewDecoder(r.Body).Decode(&d); err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	p.mu.Lock()
	p.pages = append(p.pages, d)
	p.mu.Unlock()
}

// Received returns the last alert on-call was sent with the status given
// ("firing" or "resolved") and every label of labels.
func (p *Pages) Received(status string, labels map[string]string) (template.Alert, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for i := len(p.pages) - 1; i >= 0; i-- {
	alerts:
		for _, a := range p.pages[i].Alerts {
			if a.Status != status {
				continue
			}
			for k, v := range labels {
				if a.Labels[k] != v {
					continue alerts
				}
			}
			return a, true
		}
	}
	return template.Alert{}, false
}

func moduleRoot() string {
	dir, _ := os.Getwd()
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "."
		}
		dir = parent
	}
}
