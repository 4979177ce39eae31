package escalate_test

import (
	"encoding/json"
	"errors"
	"os"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	promconfig "github.com/prometheus/common/config"
	"sigs.k8s.io/yaml"

	"github.com/autorollbackd/autorollbackd/internal/escalate"
)

func TestDefaultConfigIsTheRunbook(t *testing.T) {
	cfg := escalate.DefaultConfig()
	if err := cfg.Validate(); err != nil {
		t.Fatalf("default config invalid: %v", err)
	}
	// Runbook "Escalation Path": 5-10 min page on-call SRE, 10-15 min page
	// engineering lead, 15+ min incident war room.
	b, err := json.Marshal(cfg)
	if err != nil {
		t.Fatal(err)
	}
	want := `{"ladder":[{"after":"5m0s","level":"oncall","notifiers":[]},{"after":"10m0s","level":"lead","notifiers":[]},{"after":"15m0s","level":"war_room","notifiers":[]}],"notifiers":[],"announce":[],"dashboardURL":""}`
	if string(b) != want {
		t.Errorf("default config\ngot:  %s\nwant: %s", b, want)
	}
}

func TestConfigFromYAML(t *testing.T) {
	const doc = `
ladder:
- after: 5m
  level: oncall
  notifiers: [pagerduty-oncall]
- after: 10m
  level: lead
  notifiers: [pagerduty-lead]
- after: 15m
  level: war_room
  notifiers: [slack-incidents]
notifiers:
- name: pagerduty-oncall
  type: pagerduty
  pagerduty: {routingKeyFile: /etc/autorollbackd/pagerduty/oncall}
- name: pagerduty-lead
  type: pagerduty
  timeout: 5s
  retries: 0
  pagerduty: {routingKeyFile: /etc/autorollbackd/pagerduty/lead, severity: error}
- name: slack-incidents
  type: slack
  slack: {webhookURLFile: /etc/autorollbackd/slack/url, channel: "#incidents"}
announce: [slack-incidents]
dashboardURL: https://grafana.example/d/event-service
`
	var cfg escalate.Config
	if err := yaml.UnmarshalStrict([]byte(doc), &cfg); err != nil {
		t.Fatal(err)
	}
	if err := cfg.Validate(); err != nil {
		t.Fatalf("Validate: %v", err)
	}
	lead := cfg.Notifiers[1]
	if lead.Timeout.Duration != 5*time.Second || lead.Retries == nil || *lead.Retries != 0 || lead.PagerDuty.Severity != "error" {
		t.Errorf("pagerduty-lead decoded as %+v", lead)
	}
	if cfg.Notifiers[0].Retries != nil {
		t.Errorf("unset retries decoded as %d, want nil (default 3)", *cfg.Notifiers[0].Retries)
	}
	var levels []string
	for _, s := range cfg.Ladder {
		levels = append(levels, s.Level)
	}
	if !slices.Equal(levels, []string{"oncall", "lead", "war_room"}) {
		t.Errorf("levels %v", levels)
	}
}

// TestTagsAgree: viper decodes with the mapstructure tags, printing uses the
// json tags; both must name every key the same.
func TestTagsAgree(t *testing.T) {
	seen := map[reflect.Type]bool{}
	var walk func(reflect.Type)
	walk = func(typ reflect.Type) {
		for typ.Kind() == reflect.Pointer || typ.Kind() == reflect.Slice {
			typ = typ.Elem()
		}
		if typ.Kind() != reflect.Struct || seen[typ] || typ.PkgPath() != reflect.TypeFor[escalate.Config]().PkgPath() {
			return
		}
		seen[typ] = true
		for f := range typ.Fields() {
			j, _, _ := strings.Cut(f.Tag.Get("json"), ",")
			if m := f.Tag.Get("mapstructure"); j != m || j == "" {
				t.Errorf("%s.%s: json %q, mapstructure %q", typ.Name(), f.Name, j, m)
			}
			walk(f.Type)
		}
	}
	walk(reflect.TypeFor[escalate.Config]())
}

func TestRegistryAndErrorListAgree(t *testing.T) {
	names, reg := escalate.TypeNames(), escalate.RegisteredTypes()
	slices.Sort(reg)
	sorted := slices.Sorted(slices.Values(names))
	if !slices.Equal(sorted, reg) {
		t.Errorf("error messages list %v, registry holds %v", names, reg)
	}
}

func TestValidate(t *testing.T) {
	pd := func(name string) escalate.NotifierConfig {
		return escalate.NotifierConfig{Name: name, Type: "pagerduty", PagerDuty: &escalate.PagerDutyConfig{RoutingKeyFile: "/k"}}
	}
	slack := escalate.NotifierConfig{Name: "chat", Type: "slack", Slack: &escalate.SlackConfig{WebhookURLFile: "/u"}}
	am := func(labels map[string]string) escalate.NotifierConfig {
		return escalate.NotifierConfig{Name: "am", Type: "alertmanager", Alertmanager: &escalate.AlertmanagerConfig{
			URLs: []string{"http://alertmanager-operated.monitoring:9093"}, Labels: labels}}
	}
	for _, tc := range []struct {
		name   string
		mutate func(*escalate.Config)
		want   string // "" for valid
	}{
		{"default", func(*escalate.Config) {}, ""},
		{"every type", func(c *escalate.Config) {
			c.Notifiers = []escalate.NotifierConfig{pd("pd"), slack,
				{Name: "hook", Type: "webhook", Webhook: &escalate.WebhookConfig{URL: "https://hooks.example/x"}},
				{Name: "k8s", Type: "events"}}
			c.Ladder[0].Notifiers = []string{"pd", "k8s"}
			c.Announce = []string{"chat", "hook"}
		}, ""},
		{"empty ladder", func(c *escalate.Config) { c.Ladder = nil }, ""},
		{"page at once", func(c *escalate.Config) { c.Ladder[0].After = d(0) }, ""},
		{"unknown type", func(c *escalate.Config) {
			c.Notifiers = []escalate.NotifierConfig{pd("pd"), {Name: "mail", Type: "email"}}
		}, `notifiers[1].type: unknown notifier type "email" (want alertmanager, pagerduty, slack, webhook or events)`},
		{"missing type", func(c *escalate.Config) { c.Notifiers = []escalate.NotifierConfig{{Name: "x"}} },
			`notifiers[0].type: required (want alertmanager, pagerduty, slack, webhook or events)`},
		{"unknown notifier in step", func(c *escalate.Config) { c.Ladder[2].Notifiers = []string{"x"} },
			`ladder[2].notifiers[0]: no notifier named "x"`},
		{"notifier twice in step", func(c *escalate.Config) {
			c.Notifiers = []escalate.NotifierConfig{pd("pd")}
			c.Ladder[0].Notifiers = []string{"pd", "pd"}
		}, `ladder[0].notifiers[1]: duplicate notifier "pd"`},
		{"out of order", func(c *escalate.Config) { c.Ladder[0].After, c.Ladder[1].After = d(10*time.Minute), d(5*time.Minute) },
			`ladder: steps must be in increasing order of after`},
		{"same time twice", func(c *escalate.Config) { c.Ladder[1].After = d(5 * time.Minute) },
			`ladder: steps must be in increasing order of after`},
		{"negative after", func(c *escalate.Config) { c.Ladder[0].After = d(-time.Minute) },
			`ladder[0].after: must not be negative, got -1m0s`},
		{"level missing", func(c *escalate.Config) { c.Ladder[1].Level = "" }, `ladder[1].level: required`},
		{"level not a label", func(c *escalate.Config) { c.Ladder[1].Level = "On-Call" }, `ladder[1].level: must match [a-z_]+, got "On-Call"`},
		{"level twice", func(c *escalate.Config) { c.Ladder[2].Level = "oncall" }, `ladder[2].level: duplicate level "oncall"`},
		{"duplicate name", func(c *escalate.Config) { c.Notifiers = []escalate.NotifierConfig{pd("pd"), pd("pd")} },
			`notifiers[1].name: duplicate name "pd"`},
		{"missing name", func(c *escalate.Config) { c.Notifiers = []escalate.NotifierConfig{pd("")} }, `notifiers[0].name: required`},
		{"bad name", func(c *escalate.Config) { c.Notifiers = []escalate.NotifierConfig{pd("pd oncall")} },
			`notifiers[0].name: must match [A-Za-z0-9_.-]+, got "pd oncall"`},
		{"negative timeout", func(c *escalate.Config) {
			n := pd("pd")
			n.Timeout = d(-time.Second)
			c.Notifiers = []escalate.NotifierConfig{n}
		}, `notifiers[0].timeout: must not be negative, got -1s`},
		{"too many retries", func(c *escalate.Config) {
			n := pd("pd")
			n.Retries = intp(11)
			c.Notifiers = []escalate.NotifierConfig{n}
		}, `notifiers[0].retries: must be between 0 and 10, got 11`},
		{"negative retries", func(c *escalate.Config) {
			n := pd("pd")
			n.Retries = intp(-1)
			c.Notifiers = []escalate.NotifierConfig{n}
		}, `notifiers[0].retries: must be between 0 and 10, got -1`},
		{"pagerduty block missing", func(c *escalate.Config) { c.Notifiers = []escalate.NotifierConfig{{Name: "pd", Type: "pagerduty"}} },
			`notifiers[0].pagerduty: required for type pagerduty`},
		{"block of another type", func(c *escalate.Config) {
			n := pd("pd")
			n.Slack = &escalate.SlackConfig{WebhookURLFile: "/u"}
			c.Notifiers = []escalate.NotifierConfig{n}
		}, `notifiers[0].slack: not allowed for type pagerduty`},
		{"events with a block", func(c *escalate.Config) {
			c.Notifiers = []escalate.NotifierConfig{{Name: "k8s", Type: "events", Webhook: &escalate.WebhookConfig{URL: "https://x"}}}
		}, `notifiers[0].webhook: not allowed for type events`},
		{"routing key file missing", func(c *escalate.Config) {
			c.Notifiers = []escalate.NotifierConfig{{Name: "pd", Type: "pagerduty", PagerDuty: &escalate.PagerDutyConfig{}}}
		}, `notifiers[0].pagerduty.routingKeyFile: required`},
		{"bad severity", func(c *escalate.Config) {
			n := pd("pd")
			n.PagerDuty.Severity = "high"
			c.Notifiers = []escalate.NotifierConfig{n}
		}, `notifiers[0].pagerduty.severity: must be one of critical, error, warning, info; got "high"`},
		{"bad pagerduty url", func(c *escalate.Config) {
			n := pd("pd")
			n.PagerDuty.URL = "events.pagerduty.com"
			c.Notifiers = []escalate.NotifierConfig{n}
		}, `notifiers[0].pagerduty.url: must be an absolute http or https URL, got "events.pagerduty.com"`},
		{"slack url file missing", func(c *escalate.Config) {
			c.Notifiers = []escalate.NotifierConfig{{Name: "chat", Type: "slack", Slack: &escalate.SlackConfig{Channel: "#x"}}}
		}, `notifiers[0].slack.webhookURLFile: required`},
		{"webhook url missing", func(c *escalate.Config) {
			c.Notifiers = []escalate.NotifierConfig{{Name: "hook", Type: "webhook", Webhook: &escalate.WebhookConfig{}}}
		}, `notifiers[0].webhook.url: required`},
		{"webhook url not http", func(c *escalate.Config) {
			c.Notifiers = []escalate.NotifierConfig{{Name: "hook", Type: "webhook", Webhook: &escalate.WebhookConfig{URL: "ftp://x/y"}}}
		}, `notifiers[0].webhook.url: must be an absolute http or https URL, got "ftp://x/y"`},
		{"alertmanager", func(c *escalate.Config) {
			c.Notifiers = []escalate.NotifierConfig{am(nil)}
			c.Ladder[0].Notifiers = []string{"am"}
		}, ""},
		{"alertmanager urls missing", func(c *escalate.Config) {
			n := am(nil)
			n.Alertmanager.URLs = nil
			c.Notifiers = []escalate.NotifierConfig{n}
		}, `notifiers[0].alertmanager.urls: required: the URL of every Alertmanager of the cluster`},
		{"alertmanager url not absolute", func(c *escalate.Config) {
			n := am(nil)
			n.Alertmanager.URLs = append(n.Alertmanager.URLs, "alertmanager:9093")
			c.Notifiers = []escalate.NotifierConfig{n}
		}, `notifiers[0].alertmanager.urls[1]: must be an absolute http or https URL, got "alertmanager:9093"`},
		{"alertmanager label of the daemon's own", func(c *escalate.Config) {
			c.Notifiers = []escalate.NotifierConfig{am(map[string]string{"level": "p1"})}
		}, `notifiers[0].alertmanager.labels.level: set by the daemon on every page (alertname, cluster, incident, level, namespace, workload, workload_kind)`},
		{"alertmanager reserved label", func(c *escalate.Config) {
			c.Notifiers = []escalate.NotifierConfig{am(map[string]string{"__name__": "x"})}
		}, `notifiers[0].alertmanager.labels.__name__: names starting with __ are reserved`},
		{"alertmanager negative holdFor", func(c *escalate.Config) {
			n := am(nil)
			n.Alertmanager.HoldFor = d(-time.Hour)
			c.Notifiers = []escalate.NotifierConfig{n}
		}, `notifiers[0].alertmanager.holdFor: must not be negative, got -1h0m0s`},
		{"alertmanager announces", func(c *escalate.Config) {
			c.Notifiers = []escalate.NotifierConfig{slack, am(nil)}
			c.Announce = []string{"chat", "am"}
		}, `announce[1]: notifier "am" is of type alertmanager, which pages and resolves; announce through slack, webhook or events`},
		{"httpConfig", func(c *escalate.Config) {
			n := am(nil)
			n.HTTPConfig = &promconfig.HTTPClientConfig{BasicAuth: &promconfig.BasicAuth{Username: "u", PasswordFile: "/p"}}
			c.Notifiers = []escalate.NotifierConfig{n}
		}, ""},
		{"httpConfig on events", func(c *escalate.Config) {
			c.Notifiers = []escalate.NotifierConfig{{Name: "k8s", Type: "events", HTTPConfig: &promconfig.HTTPClientConfig{FollowRedirects: true}}}
		}, `notifiers[0].httpConfig: not allowed for type events, which makes no HTTP request`},
		{"httpConfig invalid", func(c *escalate.Config) {
			n := am(nil)
			n.HTTPConfig = &promconfig.HTTPClientConfig{BearerToken: "a", BearerTokenFile: "/b"}
			c.Notifiers = []escalate.NotifierConfig{n}
		}, `notifiers[0].httpConfig: at most one of bearer_token & bearer_token_file must be configured`},
		{"bearerTokenFile and httpConfig authorization", func(c *escalate.Config) {
			c.Notifiers = []escalate.NotifierConfig{{Name: "hook", Type: "webhook",
				Webhook:    &escalate.WebhookConfig{URL: "https://hooks.example/x", BearerTokenFile: "/t"},
				HTTPConfig: &promconfig.HTTPClientConfig{Authorization: &promconfig.Authorization{CredentialsFile: "/u"}}}}
		}, `notifiers[0].webhook.bearerTokenFile: set either it or httpConfig's authorization, not both`},
		{"unknown announce", func(c *escalate.Config) { c.Announce = []string{"stakeholders"} },
			`announce[0]: no notifier named "stakeholders"`},
		{"announce twice", func(c *escalate.Config) {
			c.Notifiers = []escalate.NotifierConfig{slack}
			c.Announce = []string{"chat", "chat"}
		}, `announce[1]: duplicate notifier "chat"`},
		{"bad dashboard", func(c *escalate.Config) { c.DashboardURL = "grafana/d/x" },
			`dashboardURL: must be an absolute http or https URL, got "grafana/d/x"`},
		{"all problems at once", func(c *escalate.Config) {
			c.Notifiers = []escalate.NotifierConfig{{Name: "mail", Type: "email"}, pd("mail")}
			c.Ladder[0].Notifiers = []string{"pager"}
			c.Ladder[2].After = d(time.Minute)
		}, `notifiers[0].type: unknown notifier type "email" (want alertmanager, pagerduty, slack, webhook or events)
notifiers[1].name: duplicate name "mail"
ladder[0].notifiers[0]: no notifier named "pager"
ladder: steps must be in increasing order of after`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := escalate.DefaultConfig()
			tc.mutate(&cfg)
			err := cfg.Validate()
			if tc.want == "" {
				if err != nil {
					t.Fatalf("Validate: %v", err)
				}
				return
			}
			if err == nil || err.Error() != tc.want {
				t.Fatalf("Validate error\ngot:  %v\nwant: %s", err, tc.want)
			}
			var ke *escalate.KeyError
			if !errors.As(err, &ke) || !strings.HasPrefix(tc.want, ke.Key+": ") {
				t.Errorf("first error is not a *KeyError naming the key: %#v", ke)
			}
		})
	}
}

func TestValidateDoesNotReadFiles(t *testing.T) {
	cfg := escalate.DefaultConfig()
	cfg.Notifiers = []escalate.NotifierConfig{{Name: "pd", Type: "pagerduty", PagerDuty: &escalate.PagerDutyConfig{RoutingKeyFile: "/nonexistent/key"}}}
	if err := cfg.Validate(); err != nil {
		t.Errorf("Validate read a file: %v", err)
	}
}

// TestDocsExample: the example section of docs/escalation.md is valid.
func TestDocsExample(t *testing.T) {
	b, err := os.ReadFile("../../docs/escalation.md")
	if err != nil {
		t.Fatal(err)
	}
	var types [][]string
	rest := string(b)
	for {
		var ok bool
		_, rest, ok = strings.Cut(rest, "```yaml\nescalation:\n")
		if !ok {
			break
		}
		block, _, _ := strings.Cut(rest, "```")
		var doc struct {
			Escalation escalate.Config `json:"escalation"`
		}
		if err := yaml.UnmarshalStrict([]byte("escalation:\n"+block), &doc); err != nil {
			t.Fatalf("example %d does not decode: %v", len(types)+1, err)
		}
		if err := doc.Escalation.Validate(); err != nil {
			t.Fatalf("example %d is invalid: %v", len(types)+1, err)
		}
		if len(doc.Escalation.Ladder) != 3 {
			t.Errorf("example %d decoded as %+v", len(types)+1, doc.Escalation)
		}
		var ts []string
		for _, n := range doc.Escalation.Notifiers {
			ts = append(ts, n.Type)
		}
		types = append(types, ts)
	}
	// The first example is the recommended one: paging through Alertmanager.
	if len(types) != 2 || len(types[0]) == 0 || types[0][0] != "alertmanager" || !slices.Contains(types[1], "pagerduty") {
		t.Errorf("docs/escalation.md examples have notifier types %v; want two, the first paging through alertmanager, the second through pagerduty", types)
	}
}
