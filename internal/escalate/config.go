package escalate

import (
	"errors"
	"fmt"
	"net/url"
	"regexp"
	"slices"
	"strings"
	"time"

	promconfig "github.com/prometheus/common/config"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// Config is the `escalation:` section of the daemon configuration. It is
// decoded by viper/mapstructure and printed as JSON or YAML, hence both tags.
// It holds file names, never secrets.
type Config struct {
	// Ladder is the escalation path: who is paged how long after the
	// incident started, while it is not resolved. The default is the
	// runbook's table with no notifiers: nobody is paged until notifiers
	// are configured.
	Ladder []Step `json:"ladder" mapstructure:"ladder"`
	// Notifiers are the destinations steps and announcements name.
	Notifiers []NotifierConfig `json:"notifiers" mapstructure:"notifiers"`
	// Announce names the notifiers that receive every announcement: what
	// the daemon did and how it turned out (the runbook's "notify
	// stakeholders of rollback" and "update incident ticket/channel").
	Announce []string `json:"announce" mapstructure:"announce"`
	// DashboardURL is linked from every message whose incident names no
	// dashboard of its own; empty adds no link.
	DashboardURL string `json:"dashboardURL" mapstructure:"dashboardURL"`
}

// Step is one rung of the ladder.
type Step struct {
	// After is measured from the start of the incident (the first alert's
	// startsAt), not from the previous step.
	After metav1.Duration `json:"after" mapstructure:"after"`
	// Level names the step, [a-z_]+, unique in the ladder. It is a metric
	// label value and part of the PagerDuty dedup key.
	Level string `json:"level" mapstructure:"level"`
	// Notifiers are names from Config.Notifiers.
	Notifiers []string `json:"notifiers" mapstructure:"notifiers"`
}

// NotifierConfig configures one named destination. Exactly the block of its
// type (pagerduty, slack or webhook; none for events) must be set.
type NotifierConfig struct {
	Name string `json:"name" mapstructure:"name"`
	// Type is alertmanager, pagerduty, slack, webhook or events.
	Type string `json:"type" mapstructure:"type"`
	// Timeout bounds one delivery attempt; zero means DefaultTimeout.
	Timeout metav1.Duration `json:"timeout,omitzero" mapstructure:"timeout"`
	// Retries is how many attempts may follow a failed first one when the
	// failure is transient; nil means DefaultRetries, 0 means no retry.
	Retries *int `json:"retries,omitempty" mapstructure:"retries"`
	// HTTPConfig is Prometheus' http_config block (authorization,
	// basic_auth, oauth2, tls_config, proxy_url, http_headers), for every
	// type that speaks HTTP; nil means Prometheus' defaults.
	HTTPConfig *promconfig.HTTPClientConfig `json:"httpConfig,omitempty" mapstructure:"httpConfig"`
	PagerDuty  *PagerDutyConfig             `json:"pagerduty,omitempty" mapstructure:"pagerduty"`
	Slack      *SlackConfig                 `json:"slack,omitempty" mapstructure:"slack"`
	Webhook    *WebhookConfig               `json:"webhook,omitempty" mapstructure:"webhook"`
	// Alertmanager pages through Alertmanager's routes and receivers.
	Alertmanager *AlertmanagerConfig `json:"alertmanager,omitempty" mapstructure:"alertmanager"`
}

// AlertmanagerConfig configures a notifier of type alertmanager: a page is
// an alert posted to Alertmanager's API v2, routed, silenced and inhibited
// like any other, and its resolution ends the alert.
type AlertmanagerConfig struct {
	// URLs are the Alertmanagers, each member of an HA cluster, as
	// Prometheus is given them; the page is posted to each.
	URLs []string `json:"urls" mapstructure:"urls"`
	// Alertname of the pages; empty means DefaultAlertmanagerAlertname.
	Alertname string `json:"alertname,omitempty" mapstructure:"alertname"`
	// Labels are added to every page, for routing (for example severity:
	// critical, team: sre). The daemon's own labels may not be set here.
	Labels map[string]string `json:"labels,omitempty" mapstructure:"labels"`
	// HoldFor is how long a page stays firing without its resolution
	// (its endsAt); zero means DefaultAlertmanagerHoldFor.
	HoldFor metav1.Duration `json:"holdFor,omitzero" mapstructure:"holdFor"`
}

// PagerDutyConfig configures a notifier of type pagerduty (Events API v2).
type PagerDutyConfig struct {
	// RoutingKeyFile holds the integration key of a PagerDuty service's
	// Events API v2 integration.
	RoutingKeyFile string `json:"routingKeyFile" mapstructure:"routingKeyFile"`
	// Severity of the pages: critical, error, warning or info; empty means
	// critical.
	Severity string `json:"severity,omitempty" mapstructure:"severity"`
	// URL overrides the Events API base URL (default
	// https://events.pagerduty.com); the client appends /v2/enqueue.
	URL string `json:"url,omitempty" mapstructure:"url"`
}

// SlackConfig configures a notifier of type slack (incoming webhook).
type SlackConfig struct {
	// WebhookURLFile holds the incoming webhook URL; the URL is a secret.
	WebhookURLFile string `json:"webhookURLFile" mapstructure:"webhookURLFile"`
	// Channel overrides the webhook's channel where the webhook allows it.
	Channel string `json:"channel,omitempty" mapstructure:"channel"`
}

// WebhookConfig configures a notifier of type webhook: a JSON POST.
type WebhookConfig struct {
	URL string `json:"url" mapstructure:"url"`
	// BearerTokenFile holds a token sent as `Authorization: Bearer`; empty
	// sends none.
	BearerTokenFile string `json:"bearerTokenFile,omitempty" mapstructure:"bearerTokenFile"`
}

// Defaults of the per-notifier keys.
const (
	DefaultTimeout  = 10 * time.Second
	DefaultRetries  = 3
	DefaultSeverity = "critical"
	// MaxRetries bounds NotifierConfig.Retries.
	MaxRetries = 10
)

// Levels of the default ladder, from the runbook's escalation path.
const (
	LevelOnCall  = "oncall"
	LevelLead    = "lead"
	LevelWarRoom = "war_room"
)

// DefaultConfig returns the section used for every key not set: the
// runbook's ladder (on-call SRE at 5 minutes, engineering lead at 10,
// war room at 15) with no notifiers.
func DefaultConfig() Config {
	step := func(after time.Duration, level string) Step {
		return Step{After: metav1.Duration{Duration: after}, Level: level, Notifiers: []string{}}
	}
	return Config{
		Ladder: []Step{
			step(5*time.Minute, LevelOnCall),
			step(10*time.Minute, LevelLead),
			step(15*time.Minute, LevelWarRoom),
		},
		Notifiers: []NotifierConfig{},
		Announce:  []string{},
	}
}

// KeyError is a problem with the value of one key, named relative to the
// section (for example `notifiers[1].type`).
type KeyError struct {
	Key string
	Err error
}

func (e *KeyError) Error() string { return e.Key + ": " + e.Err.Error() }
func (e *KeyError) Unwrap() error { return e.Err }

func keyErr(key, format string, args ...any) error {
	return &KeyError{Key: key, Err: fmt.Errorf(format, args...)}
}

var (
	levelRE = regexp.MustCompile(`^[a-z_]+$`)
	nameRE  = regexp.MustCompile(`^[A-Za-z0-9_.-]+$`)
)

// Validate checks every key of the section and returns all problems at
// once, joined, each a *KeyError whose key is relative to the section. It
// does not read the files it names: New does.
func (c Config) Validate() error {
	var errs []error
	names := map[string]bool{}
	for i, n := range c.Notifiers {
		errs = append(errs, n.validate(fmt.Sprintf("notifiers[%d]", i), names)...)
	}

	levels := map[string]bool{}
	for i, s := range c.Ladder {
		key := fmt.Sprintf("ladder[%d]", i)
		if s.After.Duration < 0 {
			errs = append(errs, keyErr(key+".after", "must not be negative, got %s", s.After.Duration))
		}
		switch {
		case s.Level == "":
			errs = append(errs, keyErr(key+".level", "required"))
		case !levelRE.MatchString(s.Level):
			errs = append(errs, keyErr(key+".level", "must match [a-z_]+, got %q", s.Level))
		case levels[s.Level]:
			errs = append(errs, keyErr(key+".level", "duplicate level %q", s.Level))
		}
		levels[s.Level] = true
		errs = append(errs, checkRefs(key+".notifiers", s.Notifiers, names)...)
	}
	for i := 1; i < len(c.Ladder); i++ {
		if c.Ladder[i].After.Duration <= c.Ladder[i-1].After.Duration {
			errs = append(errs, keyErr("ladder", "steps must be in increasing order of after"))
			break
		}
	}
	errs = append(errs, checkRefs("announce", c.Announce, names)...)
	for i, name := range c.Announce {
		if j := slices.IndexFunc(c.Notifiers, func(n NotifierConfig) bool { return n.Name == name }); j < 0 || c.Notifiers[j].Type != "alertmanager" {
			continue
		}
		errs = append(errs, keyErr(fmt.Sprintf("announce[%d]", i), "notifier %q is of type alertmanager, which pages and resolves; announce through slack, webhook or events", name))
	}
	if c.DashboardURL != "" {
		if err := checkHTTPURL(c.DashboardURL); err != nil {
			errs = append(errs, &KeyError{Key: "dashboardURL", Err: err})
		}
	}
	return errors.Join(errs...)
}

// Warnings returns what is valid but pages nobody: an empty ladder, or
// each step without notifiers. The default configuration is such a ladder.
// They are *KeyError, keys relative to the section, in ladder order.
func (c Config) Warnings() []error {
	if len(c.Ladder) == 0 {
		return []error{keyErr("ladder", "empty: nobody is ever paged")}
	}
	var warns []error
	for i, s := range c.Ladder {
		if len(s.Notifiers) == 0 {
			warns = append(warns, keyErr(fmt.Sprintf("ladder[%d].notifiers", i),
				"level %s has no notifiers: nobody is paged at that level", s.Level))
		}
	}
	return warns
}

// checkRefs checks a list of notifier names.
func checkRefs(key string, refs []string, names map[string]bool) []error {
	var errs []error
	seen := map[string]bool{}
	for j, r := range refs {
		k := fmt.Sprintf("%s[%d]", key, j)
		switch {
		case !names[r]:
			errs = append(errs, keyErr(k, "no notifier named %q", r))
		case seen[r]:
			errs = append(errs, keyErr(k, "duplicate notifier %q", r))
		}
		seen[r] = true
	}
	return errs
}

// validate checks one notifier; names collects the valid names seen so far.
func (n NotifierConfig) validate(key string, names map[string]bool) []error {
	var errs []error
	switch {
	case n.Name == "":
		errs = append(errs, keyErr(key+".name", "required"))
	case !nameRE.MatchString(n.Name):
		errs = append(errs, keyErr(key+".name", "must match [A-Za-z0-9_.-]+, got %q", n.Name))
	case names[n.Name]:
		errs = append(errs, keyErr(key+".name", "duplicate name %q", n.Name))
	default:
		names[n.Name] = true
	}
	if n.Timeout.Duration < 0 {
		errs = append(errs, keyErr(key+".timeout", "must not be negative, got %s", n.Timeout.Duration))
	}
	if n.Retries != nil && (*n.Retries < 0 || *n.Retries > MaxRetries) {
		errs = append(errs, keyErr(key+".retries", "must be between 0 and %d, got %d", MaxRetries, *n.Retries))
	}

	t, ok := notifierTypes[n.Type]
	switch {
	case n.Type == "":
		errs = append(errs, keyErr(key+".type", "required (want %s)", typeList()))
	case !ok:
		errs = append(errs, keyErr(key+".type", "unknown notifier type %q (want %s)", n.Type, typeList()))
	}
	// Type blocks: the block of the type is required, any other is a
	// mistake (often a copy-paste of another notifier) and refused.
	blocks := []struct {
		name string
		set  bool
	}{{"pagerduty", n.PagerDuty != nil}, {"slack", n.Slack != nil}, {"webhook", n.Webhook != nil}, {"alertmanager", n.Alertmanager != nil}}
	for _, b := range blocks {
		switch {
		case b.set && ok && b.name != t.block:
			errs = append(errs, keyErr(key+"."+b.name, "not allowed for type %s", n.Type))
		case !b.set && ok && b.name == t.block:
			errs = append(errs, keyErr(key+"."+b.name, "required for type %s", n.Type))
		}
	}
	if hc := n.HTTPConfig; hc != nil {
		switch {
		case ok && t.block == "":
			errs = append(errs, keyErr(key+".httpConfig", "not allowed for type %s, which makes no HTTP request", n.Type))
		case n.Webhook != nil && n.Webhook.BearerTokenFile != "" && (hc.Authorization != nil || hc.BasicAuth != nil || hc.OAuth2 != nil || hc.BearerToken != "" || hc.BearerTokenFile != ""):
			errs = append(errs, keyErr(key+".webhook.bearerTokenFile", "set either it or httpConfig's authorization, not both"))
		default:
			// Validate normalises (bearer_token becomes authorization),
			// so it runs on a copy.
			cp := *hc
			if err := cp.Validate(); err != nil {
				errs = append(errs, &KeyError{Key: key + ".httpConfig", Err: err})
			}
		}
	}
	if ok && t.check != nil {
		for _, e := range t.check(n) {
			var ke *KeyError
			if errors.As(e, &ke) {
				e = &KeyError{Key: key + "." + ke.Key, Err: ke.Err}
			}
			errs = append(errs, e)
		}
	}
	return errs
}

// checkHTTPURL accepts an absolute http or https URL. The URL is
// configuration, not a secret, so the error may quote it.
func checkHTTPURL(s string) error {
	u, err := url.Parse(s)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return fmt.Errorf("must be an absolute http or https URL, got %q", s)
	}
	return nil
}

// typeList renders the registered types for error messages:
// "pagerduty, slack, webhook or events".
func typeList() string {
	if len(typeNames) < 2 {
		return strings.Join(typeNames, "")
	}
	return strings.Join(typeNames[:len(typeNames)-1], ", ") + " or " + typeNames[len(typeNames)-1]
}

// timeout returns the per-attempt timeout with its default applied.
func (n NotifierConfig) timeout() time.Duration {
	if n.Timeout.Duration == 0 {
		return DefaultTimeout
	}
	return n.Timeout.Duration
}

// retries returns the retry budget with its default applied.
func (n NotifierConfig) retries() int {
	if n.Retries == nil {
		return DefaultRetries
	}
	return *n.Retries
}
