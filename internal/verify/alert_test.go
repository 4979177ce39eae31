package verify

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	promconfig "github.com/prometheus/common/config"
	"github.com/prometheus/common/model"
)

// downLabels are the labels of the alert the tests ask about.
var downLabels = map[string]string{
	"alertname": "EventServiceDown",
	"namespace": "production",
	"severity":  "critical",
}

func fingerprint(labels map[string]string) string {
	ls := model.LabelSet{}
	for k, v := range labels {
		ls[model.LabelName(k)] = model.LabelValue(v)
	}
	return ls.Fingerprint().String()
}

// gettable is one alert as Alertmanager's GET /api/v2/alerts returns it.
func gettable(labels map[string]string, state string) map[string]any {
	return map[string]any{
		"labels":      labels,
		"annotations": map[string]string{"summary": "down"},
		"fingerprint": fingerprint(labels),
		"startsAt":    "2026-12-02T14:02:03.000Z",
		"endsAt":      "2026-12-02T14:07:03.000Z",
		"updatedAt":   "2026-12-02T14:02:03.000Z",
		"receivers":   []map[string]string{{"name": "autorollbackd"}},
		"status":      map[string]any{"state": state, "silencedBy": []string{}, "inhibitedBy": []string{}, "mutedBy": []string{}},
	}
}

// fakeAM answers GET /api/v2/alerts with the alerts it holds and records
// the requests.
type fakeAM struct {
	mu       sync.Mutex
	alerts   []map[string]any
	requests []*http.Request
	answer   http.HandlerFunc // when set, answers instead
}

func (f *fakeAM) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	f.requests = append(f.requests, r.Clone(context.Background()))
	alerts, answer := f.alerts, f.answer
	f.mu.Unlock()
	if answer != nil {
		answer(w, r)
		return
	}
	if r.URL.Path != "/api/v2/alerts" && !strings.HasSuffix(r.URL.Path, "/api/v2/alerts") {
		http.NotFound(w, r)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	if alerts == nil {
		alerts = []map[string]any{}
	}
	_ = json.NewEncoder(w).Encode(alerts)
}

func (f *fakeAM) seen() []*http.Request {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.requests)
}

func alertVerifier(t *testing.T, mutate func(*Config)) (*Verifier, *prometheus.Registry) {
	t.Helper()
	cfg := httpOnly()
	if mutate != nil {
		mutate(&cfg)
	}
	reg := prometheus.NewRegistry()
	v, err := New(Options{Config: cfg, Registry: reg})
	if err != nil {
		t.Fatal(err)
	}
	return v, reg
}

func TestAlertFilter(t *testing.T) {
	tests := []struct {
		name   string
		labels map[string]string
		want   []string
	}{
		{
			name:   "sorted by name, exact matches",
			labels: downLabels,
			want:   []string{`alertname="EventServiceDown"`, `namespace="production"`, `severity="critical"`},
		},
		{
			name:   "quotes, backslashes and newlines are escaped",
			labels: map[string]string{"summary": `say "hi" \ bye` + "\nnext"},
			want:   []string{`summary="say \"hi\" \\ bye\nnext"`},
		},
		{
			name:   "matcher syntax inside a value stays inside the quotes",
			labels: map[string]string{"q": `a",b=~".*`, "r": "{x}, y!=z"},
			want:   []string{`q="a\",b=~\".*"`, `r="{x}, y!=z"`},
		},
		{
			name:   "UTF-8 values are kept",
			labels: map[string]string{"team": "équipe ünï"},
			want:   []string{`team="équipe ünï"`},
		},
		{
			name:   "a UTF-8 name with matcher syntax in it is quoted",
			labels: map[string]string{"service name": "web", "k8s.pod": "web-1"},
			want:   []string{`k8s.pod="web-1"`, `"service name"="web"`},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := alertFilter(tc.labels)
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(got, tc.want) {
				t.Errorf("alertFilter(%v) =\n%q\nwant\n%q", tc.labels, got, tc.want)
			}
		})
	}
}

func TestAlertStateRequest(t *testing.T) {
	am := &fakeAM{}
	srv := httptest.NewServer(am)
	t.Cleanup(srv.Close)
	v, _ := alertVerifier(t, nil)

	// The externalURL of a notification from an Alertmanager under a path
	// prefix.
	r := v.AlertState(t.Context(), AlertQuery{ExternalURL: srv.URL + "/alertmanager/", Alerts: []AlertRef{{Labels: downLabels}}})
	if r.Status != StatusPass {
		t.Fatalf("AlertState() = %+v, want pass", r)
	}
	reqs := am.seen()
	if len(reqs) != 1 {
		t.Fatalf("Alertmanager saw %d requests, want 1", len(reqs))
	}
	req := reqs[0]
	if req.Method != http.MethodGet || req.URL.Path != "/alertmanager/api/v2/alerts" {
		t.Errorf("request %s %s, want GET /alertmanager/api/v2/alerts", req.Method, req.URL.Path)
	}
	q := req.URL.Query()
	want := url.Values{
		"filter":      {`alertname="EventServiceDown"`, `namespace="production"`, `severity="critical"`},
		"active":      {"true"},
		"silenced":    {"true"},
		"inhibited":   {"true"},
		"unprocessed": {"true"},
	}
	if q.Encode() != want.Encode() {
		t.Errorf("query %s\nwant  %s", q.Encode(), want.Encode())
	}
	if got := req.Header.Get("Accept"); got != "application/json" {
		t.Errorf("Accept: %q, want application/json", got)
	}
}

func TestAlertStateVerdicts(t *testing.T) {
	withExtra := map[string]string{"instance": "10.0.0.7:8080"}
	for k, v := range downLabels {
		withExtra[k] = v
	}
	other := map[string]string{"alertname": "EventServiceSlow", "namespace": "production"}
	tests := []struct {
		name    string
		alerts  []map[string]any // what Alertmanager holds
		query   []AlertRef
		status  Status
		message string // "{{am}}" is the Alertmanager's URL
	}{
		{
			name:    "no alert left",
			query:   []AlertRef{{Labels: downLabels}},
			status:  StatusPass,
			message: `No longer active in Alertmanager at {{am}}: EventServiceDown{namespace="production", severity="critical"}.`,
		},
		{
			name:    "still active",
			alerts:  []map[string]any{gettable(downLabels, "active")},
			query:   []AlertRef{{Labels: downLabels}},
			status:  StatusFail,
			message: `1 of 1 alerts still active in Alertmanager at {{am}}: EventServiceDown{namespace="production", severity="critical"} (active since 2026-12-02T14:02:03Z).`,
		},
		{
			name:    "silenced counts as active: the condition persists",
			alerts:  []map[string]any{gettable(downLabels, "suppressed")},
			query:   []AlertRef{{Labels: downLabels}},
			status:  StatusFail,
			message: `1 of 1 alerts still active in Alertmanager at {{am}}: EventServiceDown{namespace="production", severity="critical"} (suppressed since 2026-12-02T14:02:03Z).`,
		},
		{
			name:   "an alert with more labels is another alert",
			alerts: []map[string]any{gettable(withExtra, "active")},
			query:  []AlertRef{{Labels: downLabels}},
			status: StatusPass,
		},
		{
			name:   "matched by the caller's fingerprint",
			alerts: []map[string]any{gettable(withExtra, "active")},
			query:  []AlertRef{{Fingerprint: fingerprint(withExtra), Labels: downLabels}},
			status: StatusFail,
		},
		{
			name:    "one of two still active",
			alerts:  []map[string]any{gettable(other, "unprocessed")},
			query:   []AlertRef{{Labels: downLabels}, {Labels: other}},
			status:  StatusFail,
			message: `1 of 2 alerts still active in Alertmanager at {{am}}: EventServiceSlow{namespace="production"} (unprocessed since 2026-12-02T14:02:03Z).`,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			am := &fakeAM{alerts: tc.alerts}
			srv := httptest.NewServer(am)
			t.Cleanup(srv.Close)
			v, _ := alertVerifier(t, nil)
			r := v.AlertState(t.Context(), AlertQuery{ExternalURL: srv.URL, Alerts: tc.query})
			if r.Status != tc.status || r.Check != KindAlert || r.Kind != KindAlert || r.At.IsZero() {
				t.Errorf("AlertState() = %+v, want status %s, check and kind alert", r, tc.status)
			}
			if want := strings.ReplaceAll(tc.message, "{{am}}", srv.URL); tc.message != "" && r.Message != want {
				t.Errorf("message\n%s\nwant\n%s", r.Message, want)
			}
			if got := testutil.ToFloat64(v.metrics.verifications.WithLabelValues(KindAlert, string(tc.status))); got != 1 {
				t.Errorf("autorollbackd_verifications_total{kind=alert,result=%s} = %v, want 1", tc.status, got)
			}
		})
	}
}

func TestAlertStateWhere(t *testing.T) {
	external, override := &fakeAM{}, &fakeAM{}
	extSrv, ovSrv := httptest.NewServer(external), httptest.NewServer(override)
	t.Cleanup(extSrv.Close)
	t.Cleanup(ovSrv.Close)
	q := AlertQuery{ExternalURL: extSrv.URL, Alerts: []AlertRef{{Labels: downLabels}}}

	v, _ := alertVerifier(t, func(c *Config) { c.Alertmanager.URL = ovSrv.URL })
	if r := v.AlertState(t.Context(), q); r.Status != StatusPass || !strings.Contains(r.Message, ovSrv.URL) {
		t.Errorf("with alertmanager.url: %+v, want pass naming %s", r, ovSrv.URL)
	}
	if len(external.seen()) != 0 || len(override.seen()) != 1 {
		t.Errorf("externalURL asked %d times, alertmanager.url %d times; want 0 and 1", len(external.seen()), len(override.seen()))
	}

	v, _ = alertVerifier(t, nil)
	for _, tc := range []struct{ name, external, message string }{
		{"no URL at all", "", "Cannot ask Alertmanager: the notification has no externalURL and verify.alertmanager.url is not set."},
		{"externalURL not a URL", "alertmanager:9093", `Cannot ask Alertmanager: the notification's externalURL must be an http or https URL, got "alertmanager:9093".`},
	} {
		r := v.AlertState(t.Context(), AlertQuery{ExternalURL: tc.external, Alerts: q.Alerts})
		if r.Status != StatusInconclusive || r.Message != tc.message {
			t.Errorf("%s: %+v, want inconclusive: %s", tc.name, r, tc.message)
		}
	}
	if r := v.AlertState(t.Context(), AlertQuery{ExternalURL: extSrv.URL}); r.Status != StatusInconclusive || r.Message != "No alerts to ask Alertmanager about." {
		t.Errorf("no alerts: %+v, want inconclusive", r)
	}
}

func TestAlertStateErrors(t *testing.T) {
	const secret = "s3cret-t0ken"
	closed := httptest.NewServer(http.NotFoundHandler())
	closedURL := closed.URL
	closed.Close()

	tests := []struct {
		name    string
		answer  http.HandlerFunc
		url     string // instead of the server's
		cancel  bool   // the caller's context is cancelled first
		message string // "{{am}}" is the Alertmanager's URL
	}{
		{
			name: "error status",
			answer: func(w http.ResponseWriter, r *http.Request) {
				http.Error(w, "bad matcher\nsecond line", http.StatusBadRequest)
			},
			message: "Could not ask Alertmanager at {{am}} about 1 of 1 alerts: GET {{am}}/api/v2/alerts answered 400 Bad Request: bad matcher second line.",
		},
		{
			name:    "not JSON",
			answer:  func(w http.ResponseWriter, r *http.Request) { _, _ = w.Write([]byte("<html>login</html>")) },
			message: "Could not ask Alertmanager at {{am}} about 1 of 1 alerts: GET {{am}}/api/v2/alerts answered 200 OK with a body that is not a list of alerts: invalid character '<' looking for beginning of value.",
		},
		{
			name:    "no answer within the timeout",
			answer:  func(w http.ResponseWriter, r *http.Request) { <-r.Context().Done() },
			message: "Could not ask Alertmanager at {{am}} about 1 of 1 alerts: GET {{am}}/api/v2/alerts: no answer within 200ms.",
		},
		{
			name:    "connection refused",
			url:     closedURL,
			message: "Could not ask Alertmanager at {{am}} about 1 of 1 alerts: GET {{am}}/api/v2/alerts: dial tcp " + strings.TrimPrefix(closedURL, "http://") + ": connect: connection refused.",
		},
		{
			name:    "cancelled by the caller",
			answer:  func(w http.ResponseWriter, r *http.Request) { <-r.Context().Done() },
			cancel:  true,
			message: "Verification was cancelled before Alertmanager at {{am}} answered.",
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			base := tc.url
			if base == "" {
				srv := httptest.NewServer(&fakeAM{answer: tc.answer})
				t.Cleanup(srv.Close)
				base = srv.URL
			}
			v, _ := alertVerifier(t, func(c *Config) {
				c.Alertmanager.Timeout = dur(200 * time.Millisecond)
				c.Alertmanager.HTTPConfig = &promconfig.HTTPClientConfig{
					Authorization:   &promconfig.Authorization{Type: "Bearer", Credentials: secret},
					FollowRedirects: true,
				}
			})
			ctx := t.Context()
			if tc.cancel {
				var cancel context.CancelFunc
				ctx, cancel = context.WithCancel(ctx)
				cancel()
			}
			r := v.AlertState(ctx, AlertQuery{ExternalURL: base, Alerts: []AlertRef{{Labels: downLabels}}})
			want := strings.ReplaceAll(tc.message, "{{am}}", base)
			if r.Status != StatusInconclusive || r.Message != want {
				t.Errorf("AlertState() = %s: %s\nwant inconclusive: %s", r.Status, r.Message, want)
			}
			if strings.Contains(r.Message, secret) {
				t.Errorf("message leaks the bearer token: %s", r.Message)
			}
		})
	}
}

func TestAlertStateHTTPConfig(t *testing.T) {
	dir := t.TempDir()
	passwordFile := filepath.Join(dir, "password")
	if err := os.WriteFile(passwordFile, []byte("pa55\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name   string
		config promconfig.HTTPClientConfig
		check  func(r *http.Request) string // "" when the request is right
	}{
		{
			name:   "bearer token",
			config: promconfig.HTTPClientConfig{Authorization: &promconfig.Authorization{Credentials: "t0ken"}},
			check: func(r *http.Request) string {
				if got := r.Header.Get("Authorization"); got != "Bearer t0ken" {
					return "Authorization: " + got
				}
				return ""
			},
		},
		{
			name:   "bearer_token as written in Go, not decoded",
			config: promconfig.HTTPClientConfig{BearerToken: "t0ken"},
			check: func(r *http.Request) string {
				if got := r.Header.Get("Authorization"); got != "Bearer t0ken" {
					return "Authorization: " + got
				}
				return ""
			},
		},
		{
			name:   "basic auth with the password from a file",
			config: promconfig.HTTPClientConfig{BasicAuth: &promconfig.BasicAuth{Username: "verify", PasswordFile: passwordFile}},
			check: func(r *http.Request) string {
				if u, p, ok := r.BasicAuth(); !ok || u != "verify" || p != "pa55" {
					return "basic auth: " + u + ":" + p
				}
				return ""
			},
		},
		{
			name: "extra headers",
			config: promconfig.HTTPClientConfig{HTTPHeaders: &promconfig.Headers{Headers: map[string]promconfig.Header{
				"X-Scope-OrgID": {Values: []string{"tenant-1"}},
			}}},
			check: func(r *http.Request) string {
				if got := r.Header.Get("X-Scope-OrgID"); got != "tenant-1" {
					return "X-Scope-OrgID: " + got
				}
				return ""
			},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var problem string
			srv := httptest.NewServer(&fakeAM{answer: func(w http.ResponseWriter, r *http.Request) {
				if problem = tc.check(r); problem != "" {
					http.Error(w, "unauthorized", http.StatusUnauthorized)
					return
				}
				_, _ = w.Write([]byte("[]"))
			}})
			t.Cleanup(srv.Close)
			hc := tc.config
			v, _ := alertVerifier(t, func(c *Config) { c.Alertmanager.URL, c.Alertmanager.HTTPConfig = srv.URL, &hc })
			r := v.AlertState(t.Context(), AlertQuery{Alerts: []AlertRef{{Labels: downLabels}}})
			if r.Status != StatusPass {
				t.Errorf("AlertState() = %+v (server saw %s), want pass", r, problem)
			}
		})
	}
}

// TestAlertStateCancelledAfterEvidence keeps the evidence of an active
// alert when the caller gives up while asking about the next one.
func TestAlertStateCancelledAfterEvidence(t *testing.T) {
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	other := map[string]string{"alertname": "EventServiceSlow", "namespace": "production"}
	srv := httptest.NewServer(&fakeAM{answer: func(w http.ResponseWriter, r *http.Request) {
		if slices.Contains(r.URL.Query()["filter"], `alertname="EventServiceDown"`) {
			_ = json.NewEncoder(w).Encode([]map[string]any{gettable(downLabels, "active")})
			return
		}
		cancel()
		<-r.Context().Done()
	}})
	t.Cleanup(srv.Close)
	v, _ := alertVerifier(t, nil)
	r := v.AlertState(ctx, AlertQuery{ExternalURL: srv.URL, Alerts: []AlertRef{{Labels: downLabels}, {Labels: other}}})
	want := `1 of 2 alerts still active in Alertmanager at ` + srv.URL + `: EventServiceDown{namespace="production", severity="critical"} (active since 2026-12-02T14:02:03Z).`
	if r.Status != StatusFail || r.Message != want {
		t.Errorf("AlertState() = %s: %s\nwant fail: %s", r.Status, r.Message, want)
	}
}
