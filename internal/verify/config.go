package verify

import (
	"errors"
	"fmt"
	"math"
	"net/url"
	"regexp"
	"slices"
	"strings"
	"time"

	promconfig "github.com/prometheus/common/config"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/validation"

	"github.com/autorollbackd/autorollbackd/internal/strtemplate"
)

// Config is the `verify:` section of the daemon configuration. It is decoded
// by viper/mapstructure and printed as JSON or YAML, hence both tags.
// Validate checks it; New applies the per-check defaults documented on
// HTTPCheck and PromQLCheck to the keys left unset.
type Config struct {
	// Rollout judges the workload's status as `kubectl rollout status` does.
	// Its timeout also bounds how early the later checks may give up when
	// the rollout check is off or did not pass: see Verifier.Verify.
	Rollout WaitCheck `json:"rollout" mapstructure:"rollout"`
	// Pods requires every pod of the workload's current revision to be
	// Running and Ready, and at least the desired number of them.
	Pods WaitCheck `json:"pods" mapstructure:"pods"`
	// PollInterval is how often the rollout and pods checks read the
	// cluster.
	PollInterval metav1.Duration `json:"pollInterval" mapstructure:"pollInterval"`
	// PrometheusURL is the Prometheus the promql checks query, for example
	// http://prometheus.monitoring.svc:9090. It is required when a promql
	// check is configured.
	PrometheusURL string `json:"prometheusURL" mapstructure:"prometheusURL"`
	// PrometheusHTTPConfig is Prometheus' http_config block for reaching
	// PrometheusURL (authorization, basic_auth, oauth2, tls_config,
	// proxy_url, http_headers such as X-Scope-OrgID for Mimir or Thanos);
	// nil means Prometheus' defaults.
	PrometheusHTTPConfig *promconfig.HTTPClientConfig `json:"prometheusHTTPConfig" mapstructure:"prometheusHTTPConfig"`
	HTTP                 []HTTPCheck                  `json:"http" mapstructure:"http"`
	PromQL               []PromQLCheck                `json:"promql" mapstructure:"promql"`
	// InconclusiveIsPass lets an inconclusive check count as a pass: the
	// next stage runs after it, and the overall verdict is pass when no
	// check failed and at least one passed. Off by default: the overall
	// verdict is pass only when every check passed, and verification stops
	// at the first check that did not pass.
	InconclusiveIsPass bool `json:"inconclusiveIsPass" mapstructure:"inconclusiveIsPass"`
	// Alertmanager is where the alert check asks whether the alerts that
	// opened an incident are still active.
	Alertmanager AlertmanagerConfig `json:"alertmanager" mapstructure:"alertmanager"`
	// AlertResolveGrace is how long after an action the alerts that opened
	// the incident have to resolve: still active after it, the service is
	// still down. Zero means 5m.
	AlertResolveGrace metav1.Duration `json:"alertResolveGrace" mapstructure:"alertResolveGrace"`
}

// AlertmanagerConfig says where and how the alert check reaches
// Alertmanager's API. Keys left at their zero value take the defaults: the
// externalURL of the notification, timeout 10s, Prometheus' default
// http_config.
type AlertmanagerConfig struct {
	// URL, when set, is asked instead of the externalURL of the
	// notification, for example http://alertmanager.monitoring.svc:9093.
	URL string `json:"url" mapstructure:"url"`
	// Timeout bounds one AlertState call, all its requests together.
	Timeout metav1.Duration `json:"timeout" mapstructure:"timeout"`
	// HTTPConfig is Prometheus' http_config block (authorization,
	// basic_auth, oauth2, tls_config, proxy_url, http_headers, ...), with
	// its snake_case keys. Its secrets print as <secret>. Nil means
	// Prometheus' defaults.
	HTTPConfig *promconfig.HTTPClientConfig `json:"httpConfig" mapstructure:"httpConfig"`
}

// WaitCheck configures a check that polls the cluster until it passes or
// its timeout passes.
type WaitCheck struct {
	Enabled bool            `json:"enabled" mapstructure:"enabled"`
	Timeout metav1.Duration `json:"timeout" mapstructure:"timeout"`
}

// HTTPCheck is one request that must answer as expected, like the runbook's
// `curl -s .../health/live`. Keys left at their zero value take the
// defaults: method GET, expectStatus 200, timeout 5s, retries 3, interval 2s.
type HTTPCheck struct {
	// Name identifies the check; its result is named "http:<name>".
	Name string `json:"name" mapstructure:"name"`
	// Scope chooses the workloads the check runs for; namespaces is
	// required with bearerTokenSecret.
	Scope `mapstructure:",squash"`
	// URL is a template (text/template's syntax, see strtemplate) over
	// {Name, Namespace, Kind} of the workload, for example
	// http://{{.Name}}.{{.Namespace}}.svc/health/live.
	URL    string `json:"url" mapstructure:"url"`
	Method string `json:"method" mapstructure:"method"`
	// ExpectStatus is the one status code that passes.
	ExpectStatus int `json:"expectStatus" mapstructure:"expectStatus"`
	// BodyRegex, when set, must match the response body (its first MiB).
	BodyRegex string `json:"bodyRegex,omitempty" mapstructure:"bodyRegex"`
	// Timeout bounds each attempt.
	Timeout metav1.Duration `json:"timeout" mapstructure:"timeout"`
	// Retries is how many attempts follow a failed first one; nil means 3,
	// 0 means one attempt only.
	Retries *int `json:"retries,omitempty" mapstructure:"retries"`
	// Interval is the pause between attempts.
	Interval metav1.Duration `json:"interval" mapstructure:"interval"`
	// BearerTokenSecret, when set, names a Secret in the daemon's own
	// namespace (Options.SecretNamespace; the workload's when that is empty)
	// whose key holds a token sent as `Authorization: Bearer`. The token is
	// read at check time and never logged.
	BearerTokenSecret SecretKeyRef `json:"bearerTokenSecret,omitzero" mapstructure:"bearerTokenSecret"`
}

// Scope chooses the workloads an http or promql check runs for: those in
// one of Namespaces whose own labels (metadata.labels) match Selector. A
// key left empty selects every workload. For any other workload the check
// is not run and has no result.
type Scope struct {
	// Namespaces lists the namespaces of the workloads the check runs for.
	Namespaces []string `json:"namespaces,omitempty" mapstructure:"namespaces"`
	// Selector is a label selector on the workload's labels, as
	// `kubectl get -l` takes it, for example
	// "app.kubernetes.io/part-of=shop,tier!=batch".
	Selector string `json:"selector,omitempty" mapstructure:"selector"`
}

// SecretKeyRef names one key of a Secret in the workload's namespace.
type SecretKeyRef struct {
	Name string `json:"name" mapstructure:"name"`
	Key  string `json:"key" mapstructure:"key"`
}

// IsZero reports whether r names no Secret.
func (r SecretKeyRef) IsZero() bool { return r == SecretKeyRef{} }

// NoData says what an empty query result means to a promql check.
type NoData string

// The meanings of an empty result.
const (
	NoDataInconclusive NoData = "inconclusive" // neither passes nor fails; resets the streak
	NoDataPass         NoData = "pass"         // counts as a passing evaluation
	NoDataFail         NoData = "fail"         // counts as a failing evaluation
)

// PromQLCheck is a condition on a PromQL query that must hold for several
// evaluations in a row, like the runbook's "check error rates in monitoring
// (should decrease)". Keys left at their zero value take the defaults:
// consecutive 3, interval 10s, timeout 5m, noData inconclusive. Op and
// Threshold have no default: 0 is a meaningful threshold.
type PromQLCheck struct {
	// Name identifies the check; its result is named "promql:<name>".
	Name string `json:"name" mapstructure:"name"`
	// Scope chooses the workloads the check runs for.
	Scope `mapstructure:",squash"`
	// Query is a template (text/template's syntax, see strtemplate) over
	// {Name, Namespace, Kind} of the workload; it must return a scalar or
	// an instant vector.
	Query string `json:"query" mapstructure:"query"`
	// Op compares the value (on the left) with Threshold: < <= > >= == !=.
	Op        string  `json:"op" mapstructure:"op"`
	Threshold float64 `json:"threshold" mapstructure:"threshold"`
	// Consecutive is how many passing evaluations in a row pass the check.
	Consecutive int             `json:"consecutive" mapstructure:"consecutive"`
	Interval    metav1.Duration `json:"interval" mapstructure:"interval"`
	// Timeout bounds the whole check.
	Timeout metav1.Duration `json:"timeout" mapstructure:"timeout"`
	NoData  NoData          `json:"noData" mapstructure:"noData"`
}

// Per-check defaults applied to keys left unset.
const (
	defaultHTTPMethod          = "GET"
	defaultHTTPExpectStatus    = 200
	defaultHTTPTimeout         = 5 * time.Second
	defaultHTTPRetries         = 3
	defaultHTTPInterval        = 2 * time.Second
	defaultPromConsecutive     = 3
	defaultPromInterval        = 10 * time.Second
	defaultPromTimeout         = 5 * time.Minute
	defaultAlertmanagerTimeout = 10 * time.Second
	defaultAlertResolveGrace   = 5 * time.Minute
)

// DefaultConfig returns the verify section used for every key not set: the
// rollout and pods checks on with the runbook's 120s timeout, no HTTP or
// PromQL checks.
func DefaultConfig() Config {
	return Config{
		Rollout:           WaitCheck{Enabled: true, Timeout: metav1.Duration{Duration: 120 * time.Second}},
		Pods:              WaitCheck{Enabled: true, Timeout: metav1.Duration{Duration: 120 * time.Second}},
		PollInterval:      metav1.Duration{Duration: 2 * time.Second},
		HTTP:              []HTTPCheck{},
		PromQL:            []PromQLCheck{},
		Alertmanager:      AlertmanagerConfig{Timeout: metav1.Duration{Duration: defaultAlertmanagerTimeout}},
		AlertResolveGrace: metav1.Duration{Duration: defaultAlertResolveGrace},
	}
}

// withDefaults returns c with the defaults applied to the alert check's
// keys left at their zero value.
func (c Config) withDefaults() Config {
	if c.Alertmanager.Timeout.Duration == 0 {
		c.Alertmanager.Timeout.Duration = defaultAlertmanagerTimeout
	}
	if c.AlertResolveGrace.Duration == 0 {
		c.AlertResolveGrace.Duration = defaultAlertResolveGrace
	}
	return c
}

// withDefaults returns c with the defaults applied to the keys of each check
// left at their zero value. Negative durations are kept so that Validate
// reports them.
func (c HTTPCheck) withDefaults() HTTPCheck {
	if c.Method == "" {
		c.Method = defaultHTTPMethod
	}
	if c.ExpectStatus == 0 {
		c.ExpectStatus = defaultHTTPExpectStatus
	}
	if c.Timeout.Duration == 0 {
		c.Timeout.Duration = defaultHTTPTimeout
	}
	if c.Retries == nil {
		r := defaultHTTPRetries
		c.Retries = &r
	}
	if c.Interval.Duration == 0 {
		c.Interval.Duration = defaultHTTPInterval
	}
	return c
}

func (c PromQLCheck) withDefaults() PromQLCheck {
	if c.Consecutive == 0 {
		c.Consecutive = defaultPromConsecutive
	}
	if c.Interval.Duration == 0 {
		c.Interval.Duration = defaultPromInterval
	}
	if c.Timeout.Duration == 0 {
		c.Timeout.Duration = defaultPromTimeout
	}
	if c.NoData == "" {
		c.NoData = NoDataInconclusive
	}
	return c
}

// KeyError is a problem with the value of one key, named relative to the
// verify section, for example "http[0].url".
type KeyError struct {
	Key string
	Err error
}

func (e *KeyError) Error() string { return e.Key + ": " + e.Err.Error() }
func (e *KeyError) Unwrap() error { return e.Err }

// templateData is what the URL and query templates see.
type templateData struct {
	Name      string
	Namespace string
	Kind      string
}

// TemplateField is the field name of d: templates are evaluated without
// reflection.
func (d templateData) TemplateField(name string) (any, bool) {
	switch name {
	case "Name":
		return d.Name, true
	case "Namespace":
		return d.Namespace, true
	case "Kind":
		return d.Kind, true
	}
	return nil, false
}

// sampleData renders templates at validation time, so that a template
// naming a field that does not exist is a config error, not a failed check
// during an incident.
var sampleData = templateData{Name: "event-service", Namespace: "production", Kind: "Deployment"}

var (
	checkName = regexp.MustCompile(`^[A-Za-z0-9]([A-Za-z0-9_.-]*[A-Za-z0-9])?$`)
	methods   = []string{"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"}
	ops       = []string{"<", "<=", ">", ">=", "==", "!="}
)

// Validate checks every key and returns all problems at once, joined, each a
// *KeyError naming its key relative to the section. Templates and regular
// expressions are parsed here, so a bad one is a config error.
func (c Config) Validate() error { return c.validate(true) }

// validate is Validate; needURL says whether promql checks need
// PrometheusURL (they do not when New is given a Prometheus client).
func (c Config) validate(needURL bool) error {
	var errs []error
	bad := func(key, format string, args ...any) {
		errs = append(errs, &KeyError{Key: key, Err: fmt.Errorf(format, args...)})
	}
	positive := func(key string, d time.Duration) {
		if d <= 0 {
			bad(key, "must be a positive duration, got %s", d)
		}
	}
	if c.Rollout.Enabled {
		positive("rollout.timeout", c.Rollout.Timeout.Duration)
	} else if d := c.Rollout.Timeout.Duration; d < 0 {
		bad("rollout.timeout", "must not be negative, got %s", d)
	}
	if c.Pods.Enabled {
		positive("pods.timeout", c.Pods.Timeout.Duration)
	}
	if c.Rollout.Enabled || c.Pods.Enabled {
		positive("pollInterval", c.PollInterval.Duration)
	}
	if c.PrometheusURL != "" {
		if err := checkURL(c.PrometheusURL); err != nil {
			bad("prometheusURL", "%v", err)
		}
	} else if needURL && len(c.PromQL) > 0 {
		bad("prometheusURL", "must be set when promql checks are configured")
	}
	c = c.withDefaults()
	positive("alertResolveGrace", c.AlertResolveGrace.Duration)
	positive("alertmanager.timeout", c.Alertmanager.Timeout.Duration)
	if c.Alertmanager.URL != "" {
		if err := checkURL(c.Alertmanager.URL); err != nil {
			bad("alertmanager.url", "%v", err)
		}
	}
	for _, b := range []struct {
		key string
		hc  *promconfig.HTTPClientConfig
	}{{"prometheusHTTPConfig", c.PrometheusHTTPConfig}, {"alertmanager.httpConfig", c.Alertmanager.HTTPConfig}} {
		key, hc := b.key, b.hc
		if hc == nil {
			continue
		}
		// Validate normalises (bearer_token becomes authorization), so it
		// runs on a copy.
		cp := *hc
		if err := cp.Validate(); err != nil {
			bad(key, "%v", err)
		}
	}

	seen := map[string]bool{}
	for i, h := range c.HTTP {
		key := func(k string) string { return fmt.Sprintf("http[%d].%s", i, k) }
		h = h.withDefaults()
		switch {
		case !checkName.MatchString(h.Name):
			bad(key("name"), "must be letters, digits, '-', '_' or '.', starting and ending with a letter or digit; got %q", h.Name)
		case seen[h.Name]:
			bad(key("name"), "duplicate http check name %q", h.Name)
		}
		seen[h.Name] = true
		if h.URL == "" {
			bad(key("url"), "must be set")
		} else if out, err := render("url", h.URL, sampleData); err != nil {
			bad(key("url"), "%v", err)
		} else if err := checkURL(out); err != nil {
			bad(key("url"), "%v (rendered for %s/%s)", err, sampleData.Namespace, sampleData.Name)
		}
		if !slices.Contains(methods, h.Method) {
			bad(key("method"), "must be one of %s; got %q", strings.Join(methods, ", "), h.Method)
		}
		if h.ExpectStatus < 100 || h.ExpectStatus > 599 {
			bad(key("expectStatus"), "must be an HTTP status code (100-599), got %d", h.ExpectStatus)
		}
		if h.BodyRegex != "" {
			if _, err := regexp.Compile(h.BodyRegex); err != nil {
				bad(key("bodyRegex"), "%v", err)
			}
		}
		positive(key("timeout"), h.Timeout.Duration)
		if *h.Retries < 0 {
			bad(key("retries"), "must not be negative, got %d", *h.Retries)
		}
		positive(key("interval"), h.Interval.Duration)
		if s := h.BearerTokenSecret; !s.IsZero() {
			for _, msg := range validation.IsDNS1123Subdomain(s.Name) {
				bad(key("bearerTokenSecret.name"), "%s", msg)
			}
			for _, msg := range validation.IsConfigMapKey(s.Key) {
				bad(key("bearerTokenSecret.key"), "%s", msg)
			}
			// Labels do not do: whoever may edit a workload sets its
			// labels, and would get the token. Who may create workloads in
			// a namespace is the cluster's RBAC to say.
			if len(h.Namespaces) == 0 {
				bad(key("namespaces"), "must be set when bearerTokenSecret is: a check with credentials must name the namespaces of the workloads it may send them to (a selector alone does not do, since whoever edits a workload sets its labels)")
			}
		}
		h.Scope.validate(key, bad)
	}

	seen = map[string]bool{}
	for i, p := range c.PromQL {
		key := func(k string) string { return fmt.Sprintf("promql[%d].%s", i, k) }
		p = p.withDefaults()
		switch {
		case !checkName.MatchString(p.Name):
			bad(key("name"), "must be letters, digits, '-', '_' or '.', starting and ending with a letter or digit; got %q", p.Name)
		case seen[p.Name]:
			bad(key("name"), "duplicate promql check name %q", p.Name)
		}
		seen[p.Name] = true
		if strings.TrimSpace(p.Query) == "" {
			bad(key("query"), "must be set")
		} else if _, err := render("query", p.Query, sampleData); err != nil {
			bad(key("query"), "%v", err)
		}
		if !slices.Contains(ops, p.Op) {
			bad(key("op"), "must be one of %s; got %q", strings.Join(ops, " "), p.Op)
		}
		if math.IsNaN(p.Threshold) || math.IsInf(p.Threshold, 0) {
			bad(key("threshold"), "must be a finite number, got %v", p.Threshold)
		}
		if p.Consecutive < 1 {
			bad(key("consecutive"), "must be at least 1, got %d", p.Consecutive)
		}
		positive(key("interval"), p.Interval.Duration)
		positive(key("timeout"), p.Timeout.Duration)
		if p.Consecutive >= 1 && p.Interval.Duration > 0 && p.Timeout.Duration > 0 {
			// The first evaluation is at once, so the streak completes
			// (consecutive-1) intervals later at the earliest.
			if need := time.Duration(p.Consecutive-1) * p.Interval.Duration; p.Timeout.Duration <= need {
				bad(key("timeout"), "must be longer than (consecutive-1) × interval = %s, or the check can never pass; got %s", need, p.Timeout.Duration)
			}
		}
		switch p.NoData {
		case NoDataInconclusive, NoDataPass, NoDataFail:
		default:
			bad(key("noData"), "must be one of inconclusive, pass, fail; got %q", p.NoData)
		}
		p.Scope.validate(key, bad)
	}
	return sortedJoin(errs)
}

// validate reports bad namespace names and a selector that does not
// parse, under the keys key names.
func (s Scope) validate(key func(string) string, bad func(key, format string, args ...any)) {
	for j, ns := range s.Namespaces {
		for _, msg := range validation.IsDNS1123Label(ns) {
			bad(key(fmt.Sprintf("namespaces[%d]", j)), "%s", msg)
		}
	}
	if _, err := s.compile(); err != nil {
		bad(key("selector"), "must be a label selector such as \"app=web,tier!=batch\": %v", err)
	}
}

// checkURL accepts an absolute http or https URL with a host.
func checkURL(s string) error {
	u, err := url.Parse(s)
	if err != nil {
		return fmt.Errorf("must be a URL: %w", err)
	}
	if u.Scheme != "http" && u.Scheme != "https" {
		return fmt.Errorf("must be an http or https URL, got %q", s)
	}
	if u.Host == "" {
		return fmt.Errorf("must name a host, got %q", s)
	}
	return nil
}

// parseTemplate parses a URL or query template. A missing key is an error,
// and so is a field that templateData lacks (at execution).
func parseTemplate(name, text string) (*strtemplate.Template, error) {
	t, err := strtemplate.Parse(name, text, strtemplate.Options{MissingKey: strtemplate.MissingKeyError})
	if err != nil {
		return nil, fmt.Errorf("parse template: %w", err)
	}
	return t, nil
}

// render parses and executes a template once.
func render(name, text string, data templateData) (string, error) {
	t, err := parseTemplate(name, text)
	if err != nil {
		return "", err
	}
	return execute(t, data)
}

func execute(t *strtemplate.Template, data templateData) (string, error) {
	out, err := t.Execute(data)
	if err != nil {
		return "", fmt.Errorf("render template: %w", err)
	}
	return out, nil
}

// sortedJoin joins errors in a stable order so messages are reproducible.
func sortedJoin(errs []error) error {
	slices.SortFunc(errs, func(a, b error) int { return strings.Compare(a.Error(), b.Error()) })
	return errors.Join(errs...)
}
