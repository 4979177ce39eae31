package escalate

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/PagerDuty/go-pagerduty"
	"k8s.io/utils/clock"
)

// DefaultPagerDutyURL is the base URL of PagerDuty's Events API v2.
const DefaultPagerDutyURL = "https://events.pagerduty.com"

// Limits of PagerDuty's Events API v2, and the bounds kept within them.
// Lengths are in bytes, so that a string within a limit of characters stays
// within it.
const (
	// pagerDutyMaxEvent is the largest event PagerDuty accepts.
	pagerDutyMaxEvent = 512 << 10
	// pagerDutyMaxSummary is PagerDuty's limit of the summary.
	pagerDutyMaxSummary = 1024
	// pagerDutyMaxField bounds every other text field: source, component,
	// group, class, link texts and the incident's facts in custom_details.
	pagerDutyMaxField = 1024
	// pagerDutyMaxDetail bounds one line of custom_details.details.
	pagerDutyMaxDetail = 2048
	// pagerDutyMaxHref bounds a link: a longer one is left out, since a
	// cut URL leads somewhere else.
	pagerDutyMaxHref = 8 << 10
)

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
	routingKey *fileSecret
	severity   string
	clock      clock.PassiveClock
}

func newPagerDuty(key string, n NotifierConfig, env buildEnv) (sender, []*fileSecret, error) {
	c := n.PagerDuty
	rk, err := newFileSecret(key+".pagerduty.routingKeyFile", c.RoutingKeyFile, nil, env)
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
	return &pagerDuty{client: client, routingKey: rk, severity: sev, clock: env.clock}, []*fileSecret{rk}, nil
}

func (p *pagerDuty) send(ctx context.Context, m Message) error {
	rk := p.routingKey.get()
	var err error
	switch m.Kind {
	case Page:
		var ev *pagerduty.V2Event
		if ev, err = p.trigger(rk, m); err == nil {
			_, err = p.client.ManageEventWithContext(ctx, ev)
		}
	case Resolve:
		_, err = p.client.ManageEventWithContext(ctx, &pagerduty.V2Event{
			RoutingKey: rk,
			Action:     "resolve",
			DedupKey:   DedupKey(m.Incident.Cluster, m.Incident.ID, m.Level),
		})
	case Announce:
		var ev pagerduty.ChangeEvent
		if ev, err = p.change(rk, m); err == nil {
			_, err = p.client.CreateChangeEventWithContext(ctx, ev)
		}
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
func (p *pagerDuty) trigger(routingKey string, m Message) (*pagerduty.V2Event, error) {
	in := m.Incident
	ev := &pagerduty.V2Event{
		RoutingKey: routingKey,
		Action:     "trigger",
		DedupKey:   DedupKey(in.Cluster, in.ID, m.Level),
		Client:     "autorollbackd",
		ClientURL:  pagerDutyHref(in.DashboardURL),
		Payload: &pagerduty.V2Payload{
			Summary:   truncate("["+m.Level+"] "+m.Summary, pagerDutyMaxSummary),
			Source:    pagerDutySource(in),
			Severity:  p.severity,
			Timestamp: p.clock.Now().UTC().Format(time.RFC3339),
			Component: truncate(in.Target.Name, pagerDutyMaxField),
			Group:     truncate(in.Target.Namespace, pagerDutyMaxField),
			Class:     truncate(in.Alertname, pagerDutyMaxField),
		},
	}
	for _, l := range pagerDutyLinks(m) {
		ev.Links = append(ev.Links, map[string]string{"href": l.href, "text": l.text})
	}
	d := customDetails(m)
	ev.Payload.Details = d
	if err := fitDetails(d, m.Details, func() ([]byte, error) { return json.Marshal(ev) }); err != nil {
		return nil, err
	}
	return ev, nil
}

// change builds the change event of an announcement.
func (p *pagerDuty) change(routingKey string, m Message) (pagerduty.ChangeEvent, error) {
	ev := pagerduty.ChangeEvent{
		RoutingKey: routingKey,
		Payload: pagerduty.ChangeEventPayload{
			Summary:   truncate(m.Summary, pagerDutyMaxSummary),
			Source:    pagerDutySource(m.Incident),
			Timestamp: p.clock.Now().UTC().Format(time.RFC3339),
		},
	}
	for _, l := range pagerDutyLinks(m) {
		ev.Links = append(ev.Links, pagerduty.ChangeEventLink{Href: l.href, Text: l.text})
	}
	d := customDetails(m)
	ev.Payload.CustomDetails = d
	if err := fitDetails(d, m.Details, func() ([]byte, error) { return json.Marshal(ev) }); err != nil {
		return pagerduty.ChangeEvent{}, err
	}
	return ev, nil
}

func pagerDutySource(in Incident) string {
	src := "autorollbackd"
	if !in.Target.IsZero() {
		src = in.Target.String()
	}
	if in.Cluster != "" {
		src = in.Cluster + ": " + src
	}
	return truncate(src, pagerDutyMaxField)
}

// pagerDutyHref returns href, or "" when it is longer than PagerDuty links
// are kept.
func pagerDutyHref(href string) string {
	if len(href) > pagerDutyMaxHref {
		return ""
	}
	return href
}

// pagerDutyLinks returns the message's links that are not too long.
func pagerDutyLinks(m Message) []link {
	var out []link
	for _, l := range m.links() {
		if href := pagerDutyHref(l.href); href != "" {
			out = append(out, link{href, truncate(l.text, pagerDutyMaxField)})
		}
	}
	return out
}

// customDetails are the incident's facts as PagerDuty shows them under
// "Custom Details"; empty facts are left out. fitDetails adds the details.
func customDetails(m Message) map[string]any {
	in := m.Incident
	d := map[string]any{}
	set := func(k, v string) {
		if v != "" {
			d[k] = truncate(v, pagerDutyMaxField)
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
	return d
}

// fitDetails sets d["details"] to the lines of details, each cut to
// pagerDutyMaxDetail, that fit in an event of pagerDutyMaxEvent bytes;
// encode encodes the event that holds d. Lines are kept in order until the
// next one would not fit; a last line then says how many were left out.
// The result depends on the event alone, so a page sent again is the same
// event. Every other field is bounded, so the details always find room;
// the error is for an event that is too large without any.
func fitDetails(d map[string]any, details []string, encode func() ([]byte, error)) error {
	if len(details) == 0 {
		return checkEventSize(encode)
	}
	d["details"] = []string{}
	base, err := encode()
	if err != nil {
		return fmt.Errorf("encode event: %w", err)
	}
	// Each line adds its JSON string and a comma.
	size := func(line string) int {
		b, _ := json.Marshal(line) // a string always encodes
		return len(b) + 1
	}
	lines := make([]string, len(details))
	total := len(base)
	for i, l := range details {
		lines[i] = truncate(l, pagerDutyMaxDetail)
		total += size(lines[i])
	}
	if total > pagerDutyMaxEvent {
		// Room for the note of what was left out, at its longest.
		total = len(base) + size(leftOut(len(lines)))
		kept := 0
		for kept < len(lines) && total+size(lines[kept]) <= pagerDutyMaxEvent {
			total += size(lines[kept])
			kept++
		}
		lines = append(lines[:kept:kept], leftOut(len(details)-kept))
	}
	d["details"] = lines
	return checkEventSize(encode)
}

func leftOut(n int) string {
	return fmt.Sprintf("… %d more lines left out to fit PagerDuty's event size limit", n)
}

func checkEventSize(encode func() ([]byte, error)) error {
	b, err := encode()
	if err != nil {
		return fmt.Errorf("encode event: %w", err)
	}
	if len(b) > pagerDutyMaxEvent {
		return fmt.Errorf("event of %d bytes is over PagerDuty's limit of %d", len(b), pagerDutyMaxEvent)
	}
	return nil
}
