package verify

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/api"
	v1 "github.com/prometheus/client_golang/api/prometheus/v1"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	promconfig "github.com/prometheus/common/config"
	"github.com/prometheus/common/model"

	"github.com/autorollbackd/autorollbackd/internal/policy"
	"github.com/autorollbackd/autorollbackd/internal/testenv"
)

// promEnv is a real Prometheus from the test environment scraping, every
// second, a gauge the test sets.
type promEnv struct {
	url   string
	api   v1.API
	gauge *prometheus.GaugeVec
}

// The workload whose error ratio the gauge plays.
var promTarget = policy.Ref{Kind: policy.KindDeployment, Namespace: "shop", Name: "web"}

// errorRatioQuery selects the gauge through the template, as a real
// error-ratio query selects a workload's series.
const errorRatioQuery = `test_error_ratio{namespace="{{.Namespace}}",deployment="{{.Name}}"}`

// startPrometheus starts Prometheus on a free port of 127.0.0.1 and waits
// until it has scraped the gauge. It skips under -short; otherwise a missing
// binary fails the test.
func startPrometheus(t *testing.T) *promEnv {
	return startPrometheusWith(t, "", promconfig.DefaultHTTPClientConfig)
}

// startPrometheusWith starts Prometheus with a web config (for example
// basic_auth_users; "" for none) and reaches it with hc.
func startPrometheusWith(t *testing.T, webConfig string, hc promconfig.HTTPClientConfig) *promEnv {
	t.Helper()
	if testing.Short() {
		t.Skip("needs Prometheus from the test environment; skipped in -short mode")
	}
	dir, err := testenv.BinDir()
	if err != nil {
		t.Fatalf("locate the test environment: %v", err)
	}
	bin := filepath.Join(dir, "prometheus")
	if _, err := os.Stat(bin); err != nil {
		t.Fatalf("Prometheus binary missing (run make testenv): %v", err)
	}

	reg := prometheus.NewRegistry()
	gauge := prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "test_error_ratio", Help: "Error ratio set by the test."}, []string{"namespace", "deployment"})
	reg.MustRegister(gauge)
	exporter := httptest.NewServer(promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	t.Cleanup(exporter.Close)

	work := t.TempDir()
	config := fmt.Sprintf(`global:
  scrape_interval: 1s
  evaluation_interval: 1s
scrape_configs:
- job_name: gauge
  scrape_interval: 1s
  scrape_timeout: 1s
  static_configs:
  - targets: [%q]
`, strings.TrimPrefix(exporter.URL, "http://"))
	configFile := filepath.Join(work, "prometheus.yml")
	if err := os.WriteFile(configFile, []byte(config), 0o600); err != nil {
		t.Fatal(err)
	}

	addr := freeAddr(t)
	var out syncBuffer
	args := []string{
		"--config.file=" + configFile,
		"--storage.tsdb.path=" + filepath.Join(work, "data"),
		"--web.listen-address=" + addr,
		"--log.level=warn",
	}
	if webConfig != "" {
		f := filepath.Join(work, "web.yml")
		if err := os.WriteFile(f, []byte(webConfig), 0o600); err != nil {
			t.Fatal(err)
		}
		args = append(args, "--web.config.file="+f)
	}
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatalf("start Prometheus: %v", err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-exited
		if t.Failed() {
			t.Logf("Prometheus output:\n%s", out.String())
		}
	})

	httpClient, err := promconfig.NewClientFromConfig(hc, "test")
	if err != nil {
		t.Fatal(err)
	}
	client, err := api.NewClient(api.Config{Address: "http://" + addr, Client: httpClient})
	if err != nil {
		t.Fatal(err)
	}
	p := &promEnv{url: "http://" + addr, api: v1.NewAPI(client), gauge: gauge}
	testenv.Eventually(t, 60*time.Second, "Prometheus scraping the gauge (up == 1)", func(ctx context.Context) (bool, string) {
		select {
		case err := <-exited:
			exited <- err
			return false, fmt.Sprintf("Prometheus exited: %v\n%s", err, out.String())
		default:
		}
		v, _, _, err := p.api.Query(ctx, `up{job="gauge"} == 1`, time.Now())
		if err != nil {
			return false, err.Error()
		}
		vec, ok := v.(model.Vector)
		return ok && len(vec) == 1, fmt.Sprintf("%v", v)
	})
	return p
}

// freeAddr returns a 127.0.0.1 address with a port nobody listens on now.
func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	_ = l.Close()
	return addr
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// set sets the gauge and waits until Prometheus answers the query with the
// new value, so that the next evaluation sees it.
func (p *promEnv) set(ctx context.Context, value float64) error {
	p.gauge.WithLabelValues(promTarget.Namespace, promTarget.Name).Set(value)
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	query := fmt.Sprintf(`test_error_ratio{namespace=%q,deployment=%q}`, promTarget.Namespace, promTarget.Name)
	var last model.Value
	for {
		v, _, _, err := p.api.Query(ctx, query, time.Now())
		if err == nil {
			last = v
			if vec, ok := v.(model.Vector); ok && len(vec) == 1 && float64(vec[0].Value) == value {
				return nil
			}
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("Prometheus did not report %v: %w; last %v", value, ctx.Err(), last)
		case <-tick.C:
		}
	}
}

// scripted wraps the real API: before evaluation i it sets the gauge to
// values[i] (the last value repeats) and waits until Prometheus has it. It
// records what each evaluation saw.
type scripted struct {
	p      *promEnv
	values []float64
	mu     sync.Mutex
	calls  int
	seen   []string // what each query returned, in order
}

func (s *scripted) Query(ctx context.Context, query string, ts time.Time, opts ...v1.Option) (model.Value, v1.Warnings, v1.Infos, error) {
	s.mu.Lock()
	i := s.calls
	s.calls++
	s.mu.Unlock()
	if len(s.values) > 0 {
		if err := s.p.set(ctx, s.values[min(i, len(s.values)-1)]); err != nil {
			return nil, nil, nil, err
		}
	}
	v, w, info, err := s.p.api.Query(ctx, query, time.Now(), opts...)
	seen := fmt.Sprint(v)
	if err != nil {
		seen = err.Error()
	}
	s.mu.Lock()
	s.seen = append(s.seen, seen)
	s.mu.Unlock()
	return v, w, info, err
}

func (s *scripted) evaluations() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.seen...)
}

func TestPromQLRealPrometheus(t *testing.T) {
	p := startPrometheus(t)
	tests := []struct {
		name        string
		query       string
		values      []float64 // the gauge before each evaluation; none: left alone
		consecutive int
		timeout     time.Duration
		status      Status
		message     string // a prefix; "{{target}}" is replaced with the gauge's instance
		contains    string
		evals       int // 0: count from the message
	}{
		{
			name: "passes after N consecutive passing evaluations", query: errorRatioQuery,
			values: []float64{0.001}, consecutive: 3, timeout: time.Minute,
			status: StatusPass, message: `Condition < 0.01 held in 3 consecutive evaluations: test_error_ratio{deployment="web", instance="{{target}}", job="gauge", namespace="shop"}: 0.001 < 0.01.`,
			evals: 3,
		},
		{
			name: "a value flip resets the streak", query: errorRatioQuery,
			values: []float64{0.001, 0.001, 0.5, 0.001, 0.001, 0.001}, consecutive: 3, timeout: time.Minute,
			status: StatusPass, message: `Condition < 0.01 held in 3 consecutive evaluations: test_error_ratio{deployment="web", instance="{{target}}", job="gauge", namespace="shop"}: 0.001 < 0.01.`,
			evals: 6,
		},
		{
			name: "a condition that never holds fails", query: errorRatioQuery,
			values: []float64{0.5}, consecutive: 1, timeout: 2 * time.Second,
			status: StatusFail, message: `Condition < 0.01 not met within 2s (N evaluations): test_error_ratio{deployment="web", instance="{{target}}", job="gauge", namespace="shop"}: 0.5 is not < 0.01.`,
		},
		{
			name: "no data is inconclusive", query: `test_error_ratio{namespace="{{.Namespace}}",deployment="{{.Name}}-absent"}`,
			consecutive: 3, timeout: 2 * time.Second,
			status: StatusInconclusive, message: "No data within 2s (N evaluations): the query returned no data.",
		},
		{
			name: "a bad query is inconclusive with the error", query: `sum(rate(test_error_ratio{namespace="{{.Namespace}}"}[1m])`,
			consecutive: 3, timeout: 2 * time.Second,
			status:   StatusInconclusive,
			message:  `No data within 2s (N evaluations): the query failed: bad_data: invalid parameter "query": `,
			contains: "parse error: unclosed left parenthesis",
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cfg := httpOnly()
			cfg.PrometheusURL = p.url
			cfg.PromQL = []PromQLCheck{{
				Name: "error-ratio", Query: tc.query, Op: "<", Threshold: 0.01,
				Consecutive: tc.consecutive, Interval: dur(500 * time.Millisecond), Timeout: dur(tc.timeout),
			}}
			s := &scripted{p: p, values: tc.values}
			v, err := New(Options{Config: cfg, Prometheus: s})
			if err != nil {
				t.Fatal(err)
			}
			r := v.Verify(t.Context(), promTarget)[0]
			evals := s.evaluations()
			t.Logf("%s: %s (evaluations saw %q)", r.Status, r.Message, evals)

			want := strings.ReplaceAll(tc.message, "{{target}}", p.exporterTarget(t))
			if tc.evals == 0 {
				// The check counts the evaluations that finished before the
				// timeout; at a 500ms interval there are three or four in 2s.
				m := evaluationsRE.FindStringSubmatch(r.Message)
				if m == nil {
					t.Fatalf("message %q does not count evaluations", r.Message)
				}
				n, _ := strconv.Atoi(m[1])
				if n < 3 || n > len(evals) {
					t.Errorf("%d evaluations counted, want at least 3 and at most the %d queries answered", n, len(evals))
				}
				want = strings.ReplaceAll(want, "(N evaluations)", m[0])
			}
			if r.Status != tc.status || !strings.HasPrefix(r.Message, want) || !strings.Contains(r.Message, tc.contains) {
				t.Errorf("result = %s %q\nwant     %s %q...%q", r.Status, r.Message, tc.status, want, tc.contains)
			}
			if tc.evals > 0 && len(evals) != tc.evals {
				t.Errorf("%d evaluations, want %d: %q", len(evals), tc.evals, evals)
			}
		})
	}
	// New's own client of prometheusURL, against the same Prometheus.
	t.Run("the default client of prometheusURL", func(t *testing.T) {
		if err := p.set(t.Context(), 0.002); err != nil {
			t.Fatal(err)
		}
		cfg := httpOnly()
		cfg.PrometheusURL = p.url
		cfg.PromQL = []PromQLCheck{{
			Name: "error-ratio", Query: errorRatioQuery, Op: "<=", Threshold: 0.01,
			Consecutive: 2, Interval: dur(500 * time.Millisecond), Timeout: dur(30 * time.Second),
		}}
		v, err := New(Options{Config: cfg})
		if err != nil {
			t.Fatal(err)
		}
		r := v.Verify(t.Context(), promTarget)[0]
		if r.Status != StatusPass || !strings.HasPrefix(r.Message, "Condition <= 0.01 held in 2 consecutive evaluations: test_error_ratio{") {
			t.Errorf("result = %s %q, want pass after 2 evaluations of 0.002", r.Status, r.Message)
		}
	})
}

// The promql checks reach a Prometheus behind basic auth with
// prometheusHTTPConfig, Prometheus' own http_config; without it they get
// the 401, as an inconclusive result that says so.
func TestPromQLPrometheusHTTPConfig(t *testing.T) {
	// bcrypt of "verify-pw", as Prometheus' web config takes passwords.
	const web = "basic_auth_users:\n  autorollbackd: $2a$04$g31dxvvCcXiCuLoJ3mqYeehcx/8hZpLGNU7UtpFKF5EgwUDyzxTVS\n"
	auth := promconfig.HTTPClientConfig{BasicAuth: &promconfig.BasicAuth{Username: "autorollbackd", Password: "verify-pw"}, FollowRedirects: true, EnableHTTP2: true}
	p := startPrometheusWith(t, web, auth)
	if err := p.set(t.Context(), 0.002); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name   string
		hc     *promconfig.HTTPClientConfig
		status Status
		msg    string
	}{
		{"with prometheusHTTPConfig", &auth, StatusPass, "Condition <= 0.01 held in 2 consecutive evaluations: test_error_ratio{"},
		{"without", nil, StatusInconclusive, "No data within 3s"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := httpOnly()
			cfg.PrometheusURL = p.url
			cfg.PrometheusHTTPConfig = tc.hc
			cfg.PromQL = []PromQLCheck{{
				Name: "error-ratio", Query: errorRatioQuery, Op: "<=", Threshold: 0.01,
				Consecutive: 2, Interval: dur(500 * time.Millisecond), Timeout: dur(3 * time.Second),
			}}
			if err := cfg.Validate(); err != nil {
				t.Fatal(err)
			}
			v, err := New(Options{Config: cfg})
			if err != nil {
				t.Fatal(err)
			}
			r := v.Verify(t.Context(), promTarget)[0]
			if r.Status != tc.status || !strings.HasPrefix(r.Message, tc.msg) {
				t.Errorf("result = %s %q, want %s %q...", r.Status, r.Message, tc.status, tc.msg)
			}
			if tc.hc == nil && !strings.Contains(r.Message, "401") && !strings.Contains(strings.ToLower(r.Message), "unauthorized") {
				t.Errorf("message %q does not say Prometheus refused the credentials", r.Message)
			}
		})
	}
}

var evaluationsRE = regexp.MustCompile(`\((\d+) evaluations\)`)

// exporterTarget returns the instance label Prometheus gives the gauge.
func (p *promEnv) exporterTarget(t *testing.T) string {
	t.Helper()
	v, _, _, err := p.api.Query(t.Context(), `up{job="gauge"}`, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	vec, ok := v.(model.Vector)
	if !ok || len(vec) != 1 {
		t.Fatalf("up{job=\"gauge\"} = %v", v)
	}
	return string(vec[0].Metric["instance"])
}
