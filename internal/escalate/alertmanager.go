package escalate

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/common/model"
)

// Defaults of a notifier of type alertmanager.
const (
	// DefaultAlertmanagerAlertname is the alertname of its pages.
	DefaultAlertmanagerAlertname = "AutoRollbackEscalation"
	// DefaultAlertmanagerHoldFor is how long a page stays firing when no
	// resolution comes: a daemon that is gone cannot hold a page forever.
	DefaultAlertmanagerHoldFor = 24 * time.Hour
)

// The labels of a page posted to Alertmanager. They name what is paged,
// and nothing that changes while it is: a page and its resolution must be
// the same alert (the same labels) for Alertmanager to end it.
const (
	amLabelIncident     = "incident"
	amLabelLevel        = "level"
	amLabelNamespace    = "namespace"
	amLabelWorkload     = "workload"
	amLabelWorkloadKind = "workload_kind"
	amLabelCluster      = "cluster"
)

var amOwnLabels = []string{model.AlertNameLabel, amLabelCluster, amLabelIncident, amLabelLevel, amLabelNamespace, amLabelWorkload, amLabelWorkloadKind}

func checkAlertmanager(n NotifierConfig) []error {
	c := n.Alertmanager
	if c == nil {
		return nil
	}
	var errs []error
	if len(c.URLs) == 0 {
		errs = append(errs, keyErr("alertmanager.urls", "required: the URL of every Alertmanager of the cluster"))
	}
	for i, u := range c.URLs {
		if err := checkHTTPURL(u); err != nil {
			errs = append(errs, &KeyError{Key: fmt.Sprintf("alertmanager.urls[%d]", i), Err: err})
		}
	}
	for _, k := range slices.Sorted(maps.Keys(c.Labels)) {
		switch {
		case !model.UTF8Validation.IsValidLabelName(k):
			errs = append(errs, keyErr("alertmanager.labels", "%q is not a label name", k))
		case slices.Contains(amOwnLabels, k):
			errs = append(errs, keyErr("alertmanager.labels."+k, "set by the daemon on every page (%s)", strings.Join(amOwnLabels, ", ")))
		case strings.HasPrefix(k, model.ReservedLabelPrefix):
			errs = append(errs, keyErr("alertmanager.labels."+k, "names starting with %s are reserved", model.ReservedLabelPrefix))
		}
	}
	if c.Alertname != "" && !model.LabelValue(c.Alertname).IsValid() {
		errs = append(errs, keyErr("alertmanager.alertname", "must be valid UTF-8"))
	}
	if c.HoldFor.Duration < 0 {
		errs = append(errs, keyErr("alertmanager.holdFor", "must not be negative, got %s", c.HoldFor.Duration))
	}
	return errs
}

// alertmanagerNotifier pages by posting an alert to Alertmanager's API v2,
// so that the user's routes, receivers, silences and inhibitions page
// people, and resolves the page by posting it again with endsAt now. It
// posts to every Alertmanager given, as Prometheus does.
type alertmanagerNotifier struct {
	urls      []string
	labels    model.LabelSet
	alertname string
	holdFor   time.Duration
	http      *http.Client
	now       func() time.Time
}

func newAlertmanager(_ string, n NotifierConfig, env buildEnv) (sender, []*fileSecret, error) {
	c := n.Alertmanager
	a := &alertmanagerNotifier{
		alertname: cmp.Or(c.Alertname, DefaultAlertmanagerAlertname),
		holdFor:   c.HoldFor.Duration,
		http:      env.http,
		now:       env.clock.Now,
		labels:    model.LabelSet{},
	}
	if a.holdFor == 0 {
		a.holdFor = DefaultAlertmanagerHoldFor
	}
	for k, v := range c.Labels {
		a.labels[model.LabelName(k)] = model.LabelValue(v)
	}
	for _, u := range c.URLs {
		a.urls = append(a.urls, strings.TrimSuffix(u, "/")+"/api/v2/alerts")
	}
	return a, nil, nil
}

// amAlert is an alert as Alertmanager's API v2 takes it (postableAlert).
// Written here: its generated models bring the go-openapi runtime for five
// fields.
type amAlert struct {
	Labels       model.LabelSet `json:"labels"`
	Annotations  model.LabelSet `json:"annotations"`
	StartsAt     time.Time      `json:"startsAt"`
	EndsAt       time.Time      `json:"endsAt"`
	GeneratorURL string         `json:"generatorURL,omitempty"`
}

func (a *alertmanagerNotifier) send(ctx context.Context, m Message) error {
	alert, err := a.alert(m)
	if err != nil {
		return err
	}
	body, err := json.Marshal([]amAlert{alert})
	if err != nil {
		return fmt.Errorf("encode alert: %w", err)
	}
	// Every Alertmanager holds its own alerts (a cluster shares silences
	// and what it notified, not alerts), so the page goes to each, at
	// once; one that takes it pages people, and the cluster notifies once.
	errs := make([]error, len(a.urls))
	answers := make([]attempt, len(a.urls))
	var wg sync.WaitGroup
	for i, u := range a.urls {
		wg.Go(func() {
			// Each post records its own answer; the attempt is told the
			// one that decides a retry, below, by this goroutine alone.
			actx := withAttempt(ctx, &answers[i])
			errs[i] = a.post(actx, u, body)
		})
	}
	wg.Wait()
	if slices.Contains(errs, nil) {
		return nil
	}
	if at := attemptFrom(ctx); at != nil {
		*at = answers[0]
		for _, ans := range answers {
			if ans.retryable() {
				*at = ans
				break
			}
		}
	}
	return postErrors(errs)
}

// postErrors are the failures of one attempt, one per Alertmanager; each
// names its URL, so the notifier reports them as they are.
type postErrors []error

func (e postErrors) Error() string {
	msgs := make([]string, len(e))
	for i, err := range e {
		msgs[i] = err.Error()
	}
	return strings.Join(msgs, "; ")
}

func (e postErrors) Unwrap() []error { return e }

// alert is the page of m: firing until HoldFor has passed for a page, ended
// now for a resolution.
func (a *alertmanagerNotifier) alert(m Message) (amAlert, error) {
	now := a.now().UTC()
	in := m.Incident
	ls := a.labels.Clone()
	ls[model.AlertNameLabel] = model.LabelValue(a.alertname)
	ls[amLabelIncident] = model.LabelValue(in.ID)
	ls[amLabelLevel] = model.LabelValue(m.Level)
	ls[amLabelNamespace] = model.LabelValue(in.Target.Namespace)
	ls[amLabelWorkload] = model.LabelValue(in.Target.Name)
	ls[amLabelWorkloadKind] = model.LabelValue(string(in.Target.Kind))
	ls[amLabelCluster] = model.LabelValue(in.Cluster)
	for k, v := range ls {
		if v == "" {
			delete(ls, k)
		}
	}
	ann := model.LabelSet{"summary": model.LabelValue(m.Summary)}
	if len(m.Details) > 0 {
		ann["description"] = model.LabelValue(strings.Join(m.Details, "\n"))
	}
	for k, v := range map[model.LabelName]string{"alert": in.Alertname, "rule": in.Rule, "criterion": in.Criterion, "dashboard_url": in.DashboardURL} {
		if v != "" {
			ann[k] = model.LabelValue(v)
		}
	}
	// The start is the incident's, so that the page and its resolution
	// are the same alert whenever they are sent.
	start := in.StartedAt.UTC()
	if start.IsZero() || start.After(now) {
		start = now
	}
	alert := amAlert{Labels: ls, Annotations: ann, StartsAt: start, GeneratorURL: in.GeneratorURL}
	switch m.Kind {
	case Page:
		alert.EndsAt = now.Add(a.holdFor)
	case Resolve:
		alert.EndsAt = now
	default:
		// Config.Validate keeps alertmanager notifiers out of Announce.
		return amAlert{}, fmt.Errorf("a notifier of type alertmanager pages and resolves; it does not take %s messages", m.Kind)
	}
	return alert, nil
}

func (a *alertmanagerNotifier) post(ctx context.Context, url string, body []byte) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		return fmt.Errorf("build request: %w", err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "autorollbackd")
	resp, err := a.http.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	msg, _ := io.ReadAll(io.LimitReader(resp.Body, maxErrorBody))
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return fmt.Errorf("POST %s: HTTP %s: %s", url, resp.Status, oneLine(string(msg)))
	}
	return nil
}
