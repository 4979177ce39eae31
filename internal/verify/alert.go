package verify

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/prometheus/alertmanager/pkg/labels"
	"github.com/prometheus/common/model"
)

// maxAlertsBytes bounds how much of Alertmanager's answer is read. The
// filter selects one alert's label set, so the answer is small.
const maxAlertsBytes = 8 << 20

// AlertQuery asks Alertmanager whether the alerts that opened an incident
// are still active: the runbook's own test of recovery.
type AlertQuery struct {
	// ExternalURL is the externalURL of the notification that carried the
	// alerts: the Alertmanager that sent them. Config.Alertmanager.URL, when
	// set, is asked instead.
	ExternalURL string
	Alerts      []AlertRef
}

// AlertRef names one alert.
type AlertRef struct {
	// Fingerprint is Alertmanager's fingerprint of the alert, as the
	// notification gives it. Empty means the fingerprint of Labels, which
	// is how Alertmanager computes it.
	Fingerprint string
	// Labels are all the alert's labels; the query matches each exactly.
	Labels map[string]string
}

// fingerprint returns r.Fingerprint or, without one, that of r.Labels.
func (r AlertRef) fingerprint() string {
	if r.Fingerprint != "" {
		return r.Fingerprint
	}
	ls := make(model.LabelSet, len(r.Labels))
	for k, v := range r.Labels {
		ls[model.LabelName(k)] = model.LabelValue(v)
	}
	return ls.Fingerprint().String()
}

// String names the alert for messages: its alertname and its other labels,
// for example EventServiceDown{namespace="production"}.
func (r AlertRef) String() string {
	ls := make(model.LabelSet, len(r.Labels))
	for k, v := range r.Labels {
		if k != model.AlertNameLabel {
			ls[model.LabelName(k)] = model.LabelValue(v)
		}
	}
	return r.Labels[model.AlertNameLabel] + ls.String()
}

// gettableAlert is the part of an alert of GET /api/v2/alerts that the
// alert check reads.
type gettableAlert struct {
	Fingerprint string    `json:"fingerprint"`
	StartsAt    time.Time `json:"startsAt"`
	Status      struct {
		// State is unprocessed, active or suppressed (silenced or
		// inhibited). Resolved alerts are not returned.
		State string `json:"state"`
	} `json:"status"`
}

// alertFilter returns one matcher per label, sorted by name, each an exact
// match with the value quoted and escaped as Alertmanager's matcher parsers
// read it.
func alertFilter(ls map[string]string) ([]string, error) {
	names := make([]string, 0, len(ls))
	for name := range ls {
		names = append(names, name)
	}
	slices.Sort(names)
	filter := make([]string, 0, len(names))
	for _, name := range names {
		m, err := labels.NewMatcher(labels.MatchEqual, name, ls[name])
		if err != nil {
			return nil, fmt.Errorf("matcher for label %s: %w", name, err)
		}
		filter = append(filter, m.String())
	}
	return filter, nil
}

// AlertState asks Alertmanager whether any of q.Alerts is still active,
// silenced, inhibited or not yet processed: resolved alerts are gone from
// its API at once, so the answer does not wait for a resolved notification.
// The result, kind and check "alert", passes when none is active and fails
// when any is, naming those; it is inconclusive when there is nothing to
// ask, no URL to ask, or Alertmanager cannot be reached or answers an error
// for an alert none of the others proved active. One call sends one GET
// per distinct alert, all bounded together by alertmanager.timeout and ctx.
func (v *Verifier) AlertState(ctx context.Context, q AlertQuery) Result {
	return v.run(ctx, check{KindAlert, KindAlert, func(ctx context.Context, _ time.Time) (Status, string) {
		return v.checkAlerts(ctx, q)
	}}, time.Time{}, "alerts", len(q.Alerts))
}

// AlertResolveGrace is how long after an action the alerts have to
// resolve (alertResolveGrace, default applied).
func (v *Verifier) AlertResolveGrace() time.Duration { return v.cfg.AlertResolveGrace.Duration }

func (v *Verifier) checkAlerts(ctx context.Context, q AlertQuery) (Status, string) {
	base, err := v.alertmanagerURL(q.ExternalURL)
	if err != nil {
		return StatusInconclusive, fmt.Sprintf("Cannot ask Alertmanager: %v.", err)
	}
	where := base.Redacted()
	refs := distinctAlerts(q.Alerts)
	if len(refs) == 0 {
		return StatusInconclusive, "No alerts to ask Alertmanager about."
	}
	timeout := v.cfg.Alertmanager.Timeout.Duration
	ctx, cancel := v.withTimeout(ctx, timeout)
	defer cancel()

	var (
		active, gone []string
		failed       int
		firstErr     error
	)
	for _, ref := range refs {
		alerts, err := v.getAlerts(ctx, base, ref.Labels)
		if err != nil {
			if ctx.Err() != nil {
				if context.Cause(ctx) != errTimeout {
					if len(active) > 0 {
						break // an active alert is evidence enough
					}
					return StatusInconclusive, fmt.Sprintf("Verification was cancelled before Alertmanager at %s answered.", where)
				}
				err = fmt.Errorf("GET %s: no answer within %s", alertsURL(base, nil).Redacted(), timeout)
			}
			failed++
			firstErr = cmp.Or(firstErr, err)
			continue
		}
		fp := ref.fingerprint()
		i := slices.IndexFunc(alerts, func(a gettableAlert) bool { return a.Fingerprint == fp })
		if i < 0 {
			gone = append(gone, ref.String())
			continue
		}
		a := alerts[i]
		active = append(active, fmt.Sprintf("%s (%s since %s)", ref, a.Status.State, a.StartsAt.UTC().Format(time.RFC3339)))
	}
	switch {
	case len(active) > 0:
		return StatusFail, fmt.Sprintf("%d of %d alerts still active in Alertmanager at %s: %s.", len(active), len(refs), where, list(active))
	case failed > 0:
		return StatusInconclusive, fmt.Sprintf("Could not ask Alertmanager at %s about %d of %d alerts: %v.", where, failed, len(refs), firstErr)
	}
	return StatusPass, fmt.Sprintf("No longer active in Alertmanager at %s: %s.", where, list(gone))
}

// alertmanagerURL is alertmanager.url when set, else the notification's
// externalURL.
func (v *Verifier) alertmanagerURL(external string) (*url.URL, error) {
	raw, what := v.cfg.Alertmanager.URL, "verify.alertmanager.url"
	if raw == "" {
		raw, what = external, "the notification's externalURL"
	}
	if raw == "" {
		return nil, errors.New("the notification has no externalURL and verify.alertmanager.url is not set")
	}
	if err := checkURL(raw); err != nil {
		return nil, fmt.Errorf("%s %w", what, err)
	}
	u, err := url.Parse(raw)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", what, err) // unreachable: checkURL parsed it
	}
	u.RawQuery, u.Fragment = "", ""
	return u, nil
}

// alertsURL is GET /api/v2/alerts under base (which may have a path, as an
// Alertmanager behind a route prefix has) for the filter.
func alertsURL(base *url.URL, filter []string) *url.URL {
	u := base.JoinPath("api", "v2", "alerts")
	if filter != nil {
		q := url.Values{
			"filter":      filter,
			"active":      {"true"},
			"silenced":    {"true"},
			"inhibited":   {"true"},
			"unprocessed": {"true"},
		}
		u.RawQuery = q.Encode()
	}
	return u
}

// getAlerts returns the alerts that Alertmanager holds whose labels include
// ls, whatever their state.
func (v *Verifier) getAlerts(ctx context.Context, base *url.URL, ls map[string]string) ([]gettableAlert, error) {
	filter, err := alertFilter(ls)
	if err != nil {
		return nil, err
	}
	u := alertsURL(base, filter)
	what := "GET " + alertsURL(base, nil).Redacted()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return nil, fmt.Errorf("%s: build request: %w", what, err)
	}
	req.Header.Set("Accept", "application/json")
	req.Header.Set("User-Agent", "autorollbackd-verify")
	resp, err := v.alertmanager.Do(req)
	if err != nil {
		// *url.Error repeats the method and the URL with its query; keep
		// only the cause.
		var uerr *url.Error
		if errors.As(err, &uerr) {
			err = uerr.Err
		}
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxAlertsBytes))
	if err != nil {
		return nil, fmt.Errorf("%s answered %s but reading the body failed: %w", what, resp.Status, err)
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("%s answered %s: %s", what, resp.Status, oneLine(string(body), 200))
	}
	var alerts []gettableAlert
	if err := json.Unmarshal(body, &alerts); err != nil {
		return nil, fmt.Errorf("%s answered %s with a body that is not a list of alerts: %w", what, resp.Status, err)
	}
	return alerts, nil
}

// distinctAlerts leaves out repeats of an alert (the same fingerprint),
// and references that name no alert at all.
func distinctAlerts(refs []AlertRef) []AlertRef {
	seen := map[string]bool{}
	var out []AlertRef
	for _, r := range refs {
		if len(r.Labels) == 0 && r.Fingerprint == "" {
			continue
		}
		fp := r.fingerprint()
		if seen[fp] {
			continue
		}
		seen[fp] = true
		out = append(out, r)
	}
	return out
}

// list joins up to five items for a message.
func list(items []string) string {
	const most = 5
	if len(items) <= most {
		return strings.Join(items, ", ")
	}
	return fmt.Sprintf("%s and %d more", strings.Join(items[:most], ", "), len(items)-most)
}

// oneLine folds s to one line of at most n bytes, for a body in a message.
func oneLine(s string, n int) string {
	s = strings.Join(strings.Fields(s), " ")
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n] + "..."
}
