package escalate

import (
	"context"
	"errors"
	"slices"
	"strings"
	"time"

	"github.com/PagerDuty/go-pagerduty"
	"k8s.io/utils/clock"
)

// DefaultPagerDutyURL is the base URL of PagerDuty's Events API v2.
const DefaultPagerDutyURL = "https://events.pagerduty.com"

// PagerDuty limits the summary to 1024 characters.
const pagerDutyMaxSummary = 1024

var pagerDutySeverities = []string{"critical", "error", "warning", "info"}

func checkPagerDuty(n NotifierConfig) []error {
	c := n.PagerDuty
	if c == nil {
		return nil
	}
	var errs []error
	if c.RoutingKeyFile == "" {
		errs = append(errs, keyErr("pagerduty.routingKeyFile", "required"))
	}
	if c.Severity != "" && !slices.Contains(pagerDutySeverities, c.Severity) {
		errs = append(errs, keyErr("pagerduty.severity", "must be one of %s; got %q", strings.Join(pagerDutySeverities, ", "), c.Severity))
	}
	if c.URL != "" {
		if err := checkHTTPURL(c.URL); err != nil {
			errs = append(errs, &KeyError{Key: "pagerduty.url", Err: err})
		}
	}
	return errs
}

// pagerDuty sends Events API v2 events: a trigger for a page, a resolve for
// a resolution (same dedup key), and a change event for an announcement, so
// that announcing to PagerDuty records what the daemon did on the service's
// timeline without paging anyone.
type pagerDuty struct {
	client     *pagerduty.Client
	routingKey string
	severity   string
	clock      clock.PassiveClock
}

func newPagerDuty(key string, n NotifierConfig, env buildEnv) (sender, []string, error) {
	c := n.PagerDuty
	rk, err := readSecret(key+".pagerduty.routingKeyFile", c.RoutingKeyFile)
	if err != nil {
		return nil, nil, err
	}
	base := c.URL
	if base == "" {
		base = DefaultPagerDutyURL
	}
	// The client appends /v2/enqueue (and /v2/change/enqueue) to the base;
	// accept a full enqueue URL too, as PagerDuty's documentation gives it.
	base = strings.TrimSuffix(strings.TrimSuffix(base, "/"), "/v2/enqueue")
	client := pagerduty.NewClient("", pagerduty.WithV2EventsAPIEndpoint(base))
	client.HTTPClient = env.http
	sev := c.Severity
	if sev == "" {
		sev = DefaultSeverity
	}
	return &pagerDuty{client: client, routingKey: rk, severity: sev, clock: env.clock}, []string{rk}, nil
}

func (p *pagerDuty) send(ctx context.Context, m Message) error {
	var err error
	switch m.Kind {
	case Page:
		_, err = p.client.ManageEventWithContext(ctx, p.trigger(m))
	case Resolve:
		_, err = p.client.ManageEventWithContext(ctx, &pagerduty.V2Event{
			RoutingKey: p.routingKey,
			Action:     "resolve",
			DedupKey:   DedupKey(m.Incident.ID, m.Level),
		})
	case Announce:
		_, err = p.client.CreateChangeEventWithContext(ctx, p.change(m))
	default:
		return errors.New("unknown message kind " + string(m.Kind))
	}
	// PagerDuty accepted the event (2xx) even if its answer could not be
	// decoded: sending it again would change nothing.
	if a := attemptFrom(ctx); err != nil && a != nil && a.status >= 200 && a.status < 300 {
		return nil
	}
	return err
}

// trigger builds the event of a page. Its dedup key makes a re-sent page
// update the open PagerDuty incident instead of opening another.
func (p *pagerDuty) trigger(m Message) *pagerduty.V2Event {
	in := m.Incident
	source := in.Target.String()
	if in.Target.IsZero() {
		source = "autorollbackd"
	}
	return &pagerduty.V2Event{
		RoutingKey: p.routingKey,
		Action:     "trigger",
		DedupKey:   DedupKey(in.ID, m.Level),
		Client:     "autorollbackd",
		ClientURL:  in.DashboardURL,
		Links:      p.links(m),
		Payload: &pagerduty.V2Payload{
			Summary:   truncate("["+m.Level+"] "+m.Summary, pagerDutyMaxSummary),
			Source:    source,
			Severity:  p.severity,
			Timestamp: p.clock.Now().UTC().Format(time.RFC3339),
			Component: in.Target.Name,
			Group:     in.Target.Namespace,
			Class:     in.Alertname,
			Details:   customDetails(m),
		},
	}
}

// change builds the change event of an announcement.
func (p *pagerDuty) change(m Message) pagerduty.ChangeEvent {
	source := m.Incident.Target.String()
	if m.Incident.Target.IsZero() {
		source = "autorollbackd"
	}
	var links []pagerduty.ChangeEventLink
	for _, l := range m.links() {
		links = append(links, pagerduty.ChangeEventLink{Href: l.href, Text: l.text})
	}
	return pagerduty.ChangeEvent{
		RoutingKey: p.routingKey,
		Payload: pagerduty.ChangeEventPayload{
			Summary:       truncate(m.Summary, pagerDutyMaxSummary),
			Source:        source,
			Timestamp:     p.clock.Now().UTC().Format(time.RFC3339),
			CustomDetails: customDetails(m),
		},
		Links: links,
	}
}

func (p *pagerDuty) links(m Message) []any {
	var out []any
	for _, l := range m.links() {
		out = append(out, map[string]string{"href": l.href, "text": l.text})
	}
	return out
}

// customDetails are the incident's facts as PagerDuty shows them under
// "Custom Details"; empty facts are left out.
func customDetails(m Message) map[string]any {
	in := m.Incident
	d := map[string]any{}
	set := func(k, v string) {
		if v != "" {
			d[k] = v
		}
	}
	set("incident", in.ID)
	set("level", m.Level)
	if !in.Target.IsZero() {
		set("target", in.Target.String())
	}
	set("alertname", in.Alertname)
	set("rule", in.Rule)
	set("criterion", in.Criterion)
	if !in.StartedAt.IsZero() {
		set("started_at", in.StartedAt.UTC().Format(time.RFC3339))
	}
	if len(m.Details) > 0 {
		d["details"] = m.Details
	}
	return d
}
