package verify

import (
	"encoding/json"
	"errors"
	"math"
	"reflect"
	"strings"
	"testing"
	"time"

	promconfig "github.com/prometheus/common/config"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

func dur(d time.Duration) metav1.Duration { return metav1.Duration{Duration: d} }

func TestDefaultConfig(t *testing.T) {
	c := DefaultConfig()
	if err := c.Validate(); err != nil {
		t.Fatalf("DefaultConfig().Validate() = %v", err)
	}
	got, err := json.Marshal(c)
	if err != nil {
		t.Fatal(err)
	}
	want := `{"rollout":{"enabled":true,"timeout":"2m0s"},"pods":{"enabled":true,"timeout":"2m0s"},"pollInterval":"2s","prometheusURL":"","prometheusHTTPConfig":null,"http":[],"promql":[],"inconclusiveIsPass":false,` +
		`"alertmanager":{"url":"","timeout":"10s","httpConfig":null},"alertResolveGrace":"5m0s"}`
	if string(got) != want {
		t.Errorf("DefaultConfig() as JSON =\n%s\nwant\n%s", got, want)
	}
}

func TestCheckDefaults(t *testing.T) {
	h := HTTPCheck{Name: "live", URL: "http://x/"}.withDefaults()
	if h.Method != "GET" || h.ExpectStatus != 200 || h.Timeout.Duration != 5*time.Second || *h.Retries != 3 || h.Interval.Duration != 2*time.Second {
		t.Errorf("HTTPCheck defaults = %+v (retries %d)", h, *h.Retries)
	}
	if zero := (HTTPCheck{Retries: ptr(0)}).withDefaults(); *zero.Retries != 0 {
		t.Errorf("explicit retries 0 became %d", *zero.Retries)
	}
	p := PromQLCheck{Name: "e", Query: "up", Op: "<"}.withDefaults()
	if p.Consecutive != 3 || p.Interval.Duration != 10*time.Second || p.Timeout.Duration != 5*time.Minute || p.NoData != NoDataInconclusive || p.Threshold != 0 {
		t.Errorf("PromQLCheck defaults = %+v", p)
	}
	c := Config{}.withDefaults()
	if c.Alertmanager.Timeout.Duration != 10*time.Second || c.AlertResolveGrace.Duration != 5*time.Minute {
		t.Errorf("Config defaults: alertmanager.timeout %s, alertResolveGrace %s", c.Alertmanager.Timeout.Duration, c.AlertResolveGrace.Duration)
	}
}

func TestValidate(t *testing.T) {
	valid := func(mutate func(*Config)) Config {
		c := DefaultConfig()
		c.PrometheusURL = "http://prometheus.monitoring.svc:9090"
		c.HTTP = []HTTPCheck{{Name: "live", URL: "http://{{.Name}}.{{.Namespace}}.svc/health/live"}}
		c.PromQL = []PromQLCheck{{Name: "error-ratio", Query: `sum(rate(x{namespace="{{.Namespace}}"}[1m]))`, Op: "<", Threshold: 0.01}}
		if mutate != nil {
			mutate(&c)
		}
		return c
	}
	tests := []struct {
		name string
		cfg  Config
		want []string // one line per error, in the order Validate sorts them
	}{
		{name: "valid", cfg: valid(nil)},
		{name: "defaults", cfg: DefaultConfig()},
		{
			name: "disabled checks need no timeout",
			cfg: valid(func(c *Config) {
				c.Rollout = WaitCheck{}
				c.Pods = WaitCheck{}
				c.PollInterval = dur(0)
			}),
		},
		{
			name: "non-positive durations",
			cfg: valid(func(c *Config) {
				c.Rollout.Timeout = dur(0)
				c.Pods.Timeout = dur(-time.Second)
				c.PollInterval = dur(0)
			}),
			want: []string{
				"pods.timeout: must be a positive duration, got -1s",
				"pollInterval: must be a positive duration, got 0s",
				"rollout.timeout: must be a positive duration, got 0s",
			},
		},
		{
			name: "a disabled rollout check's timeout is still a floor, not negative",
			cfg:  valid(func(c *Config) { c.Rollout = WaitCheck{Timeout: dur(-time.Second)} }),
			want: []string{"rollout.timeout: must not be negative, got -1s"},
		},
		{
			name: "prometheusURL not a URL",
			cfg:  valid(func(c *Config) { c.PrometheusURL = "prometheus:9090" }),
			want: []string{`prometheusURL: must be an http or https URL, got "prometheus:9090"`},
		},
		{
			name: "promql without prometheusURL",
			cfg:  valid(func(c *Config) { c.PrometheusURL = "" }),
			want: []string{"prometheusURL: must be set when promql checks are configured"},
		},
		{
			name: "http check without name and url",
			cfg:  valid(func(c *Config) { c.HTTP = []HTTPCheck{{}} }),
			want: []string{
				`http[0].name: must be letters, digits, '-', '_' or '.', starting and ending with a letter or digit; got ""`,
				"http[0].url: must be set",
			},
		},
		{
			name: "duplicate http names",
			cfg: valid(func(c *Config) {
				c.HTTP = append(c.HTTP, HTTPCheck{Name: "live", URL: "http://x/"})
			}),
			want: []string{`http[1].name: duplicate http check name "live"`},
		},
		{
			name: "url template does not parse",
			cfg:  valid(func(c *Config) { c.HTTP[0].URL = "http://{{.Name}/" }),
			want: []string{`http[0].url: parse template: template: url:1: bad character U+007D '}'`},
		},
		{
			name: "url template names an unknown field",
			cfg:  valid(func(c *Config) { c.HTTP[0].URL = "http://{{.Service}}/" }),
			want: []string{`http[0].url: render template: template: url:1:9: executing "url" at <.Service>: can't evaluate field Service in type verify.templateData`},
		},
		{
			name: "url template uses a construct evaluation does not support",
			cfg:  valid(func(c *Config) { c.HTTP[0].URL = `http://{{ .Name | printf "%s" | urlquery }}/` }),
			want: []string{`http[0].url: parse template: template: url:1:32: the function "urlquery" is not supported`},
		},
		{
			name: "query template declares a variable",
			cfg:  valid(func(c *Config) { c.PromQL[0].Query = `{{ $ns := .Namespace }}up{namespace="{{ $ns }}"}` }),
			want: []string{`promql[0].query: parse template: template: query:1:3: declaring or assigning variables is not supported`},
		},
		{
			name: "url renders to a relative URL",
			cfg:  valid(func(c *Config) { c.HTTP[0].URL = "/health/{{.Name}}" }),
			want: []string{`http[0].url: must be an http or https URL, got "/health/event-service" (rendered for production/event-service)`},
		},
		{
			name: "http keys out of range",
			cfg: valid(func(c *Config) {
				c.HTTP[0].Method = "get"
				c.HTTP[0].ExpectStatus = 99
				c.HTTP[0].BodyRegex = "("
				c.HTTP[0].Timeout = dur(-time.Second)
				c.HTTP[0].Retries = ptr(-1)
				c.HTTP[0].Interval = dur(-time.Millisecond)
			}),
			want: []string{
				"http[0].bodyRegex: error parsing regexp: missing closing ): `(`",
				"http[0].expectStatus: must be an HTTP status code (100-599), got 99",
				"http[0].interval: must be a positive duration, got -1ms",
				`http[0].method: must be one of GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS; got "get"`,
				"http[0].retries: must not be negative, got -1",
				"http[0].timeout: must be a positive duration, got -1s",
			},
		},
		{
			name: "bearer token secret with a bad name and no key",
			cfg: valid(func(c *Config) {
				c.HTTP[0].BearerTokenSecret = SecretKeyRef{Name: "API_Token"}
				c.HTTP[0].Namespaces = []string{"production"}
			}),
			want: []string{
				"http[0].bearerTokenSecret.key: a valid config key must consist of alphanumeric characters, '-', '_' or '.' (e.g. 'key.name',  or 'KEY_NAME',  or 'key-name', regex used for validation is '[-._a-zA-Z0-9]+')",
				"http[0].bearerTokenSecret.name: a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')",
			},
		},
		{
			name: "a check with credentials names its namespaces",
			cfg: valid(func(c *Config) {
				c.HTTP[0].BearerTokenSecret = SecretKeyRef{Name: "api-token", Key: "token"}
				c.HTTP[0].Scope = Scope{Namespaces: []string{"production", "staging"}, Selector: "app.kubernetes.io/part-of=shop"}
			}),
		},
		{
			name: "a check with credentials and no namespaces",
			cfg: valid(func(c *Config) {
				c.HTTP[0].BearerTokenSecret = SecretKeyRef{Name: "api-token", Key: "token"}
				c.HTTP[0].Selector = "team=a"
			}),
			want: []string{"http[0].namespaces: must be set when bearerTokenSecret is: a check with credentials must name the namespaces of the workloads it may send them to (a selector alone does not do, since whoever edits a workload sets its labels)"},
		},
		{
			name: "scope keys out of range",
			cfg: valid(func(c *Config) {
				c.HTTP[0].Scope = Scope{Namespaces: []string{"production", "Team_A"}, Selector: "tier in (web"}
				c.PromQL[0].Scope = Scope{Namespaces: []string{""}, Selector: "tier notin web"}
			}),
			want: []string{
				"http[0].namespaces[1]: a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')",
				`http[0].selector: must be a label selector such as "app=web,tier!=batch": unable to parse requirement: found '', expected: ',' or ')'`,
				"promql[0].namespaces[0]: a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')",
				`promql[0].selector: must be a label selector such as "app=web,tier!=batch": unable to parse requirement: found 'web' expected: '('`,
			},
		},
		{
			name: "promql check without query, op and name",
			cfg:  valid(func(c *Config) { c.PromQL = []PromQLCheck{{}} }),
			want: []string{
				`promql[0].name: must be letters, digits, '-', '_' or '.', starting and ending with a letter or digit; got ""`,
				`promql[0].op: must be one of < <= > >= == !=; got ""`,
				"promql[0].query: must be set",
			},
		},
		{
			name: "promql keys out of range",
			cfg: valid(func(c *Config) {
				c.PromQL = append(c.PromQL, PromQLCheck{
					Name: "error-ratio", Query: "up{job={{.Job}}}", Op: "=<", Threshold: math.NaN(),
					Consecutive: -1, Interval: dur(-time.Second), Timeout: dur(-time.Second), NoData: "ignore",
				})
			}),
			want: []string{
				"promql[1].consecutive: must be at least 1, got -1",
				"promql[1].interval: must be a positive duration, got -1s",
				`promql[1].name: duplicate promql check name "error-ratio"`,
				`promql[1].noData: must be one of inconclusive, pass, fail; got "ignore"`,
				`promql[1].op: must be one of < <= > >= == !=; got "=<"`,
				`promql[1].query: render template: template: query:1:9: executing "query" at <.Job>: can't evaluate field Job in type verify.templateData`,
				"promql[1].threshold: must be a finite number, got NaN",
				"promql[1].timeout: must be a positive duration, got -1s",
			},
		},
		{
			name: "alertmanager keys out of range",
			cfg: valid(func(c *Config) {
				c.Alertmanager.URL = "alertmanager:9093"
				c.Alertmanager.Timeout = dur(-time.Second)
				c.AlertResolveGrace = dur(-time.Minute)
			}),
			want: []string{
				"alertResolveGrace: must be a positive duration, got -1m0s",
				`alertmanager.timeout: must be a positive duration, got -1s`,
				`alertmanager.url: must be an http or https URL, got "alertmanager:9093"`,
			},
		},
		{
			name: "alertmanager keys left at zero take the defaults",
			cfg: valid(func(c *Config) {
				c.Alertmanager = AlertmanagerConfig{}
				c.AlertResolveGrace = dur(0)
			}),
		},
		{
			name: "alertmanager httpConfig with two kinds of authentication",
			cfg: valid(func(c *Config) {
				c.Alertmanager.HTTPConfig = &promconfig.HTTPClientConfig{
					BasicAuth:   &promconfig.BasicAuth{Username: "u", Password: "p"},
					BearerToken: "t",
				}
			}),
			want: []string{"alertmanager.httpConfig: at most one of basic_auth, oauth2, bearer_token & bearer_token_file must be configured"},
		},
		{
			name: "promql timeout too short for the streak",
			cfg: valid(func(c *Config) {
				c.PromQL[0].Consecutive = 3
				c.PromQL[0].Interval = dur(10 * time.Second)
				c.PromQL[0].Timeout = dur(20 * time.Second)
			}),
			want: []string{"promql[0].timeout: must be longer than (consecutive-1) × interval = 20s, or the check can never pass; got 20s"},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.cfg.Validate()
			if len(tc.want) == 0 {
				if err != nil {
					t.Fatalf("Validate() = %v, want nil", err)
				}
				return
			}
			if err == nil {
				t.Fatalf("Validate() = nil, want\n%s", strings.Join(tc.want, "\n"))
			}
			if got := err.Error(); got != strings.Join(tc.want, "\n") {
				t.Errorf("Validate() =\n%s\nwant\n%s", got, strings.Join(tc.want, "\n"))
			}
			var ke *KeyError
			if !errors.As(err, &ke) {
				t.Errorf("Validate() error %T has no *KeyError", err)
			}
		})
	}
}

func TestNewConfigErrors(t *testing.T) {
	cfg := DefaultConfig()
	cfg.Rollout.Enabled, cfg.Pods.Enabled = false, false
	cfg.PromQL = []PromQLCheck{{Name: "e", Query: "up", Op: "=="}}

	if _, err := New(Options{Config: cfg}); err == nil || err.Error() != "new verifier: prometheusURL: must be set when promql checks are configured" {
		t.Errorf("New without Prometheus or prometheusURL: error %v", err)
	}
	if _, err := New(Options{Config: cfg, Prometheus: &fakeProm{}}); err != nil {
		t.Errorf("New with a Prometheus client and no prometheusURL: %v", err)
	}
	cfg.PrometheusURL = "http://127.0.0.1:9090"
	if _, err := New(Options{Config: cfg}); err != nil {
		t.Errorf("New with prometheusURL: %v", err)
	}
	if _, err := New(Options{Config: DefaultConfig()}); err == nil || !strings.Contains(err.Error(), "Options.Client is required") {
		t.Errorf("New with the rollout check and no client: error %v", err)
	}
}

// TestTemplateDataFields: URL and query templates see every field of
// templateData by its Go name.
func TestTemplateDataFields(t *testing.T) {
	v := reflect.ValueOf(sampleData)
	for i := range v.NumField() {
		name := v.Type().Field(i).Name
		if got, ok := sampleData.TemplateField(name); !ok || got != v.Field(i).Interface() {
			t.Errorf("TemplateField(%q) = %v, %t; want %v", name, got, ok, v.Field(i).Interface())
		}
	}
	if got, ok := sampleData.TemplateField("Service"); ok {
		t.Errorf("TemplateField(%q) = %v, true", "Service", got)
	}
}
