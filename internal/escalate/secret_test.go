package escalate_test

import (
	"context"
	"encoding/json"
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/autorollbackd/autorollbackd/internal/escalate"
	"github.com/autorollbackd/autorollbackd/internal/secretfile/secretfiletest"
)

// TestNotifierSecretsRotate rotates each notifier's secret in a Secret
// volume while the daemon runs: the next page uses the new secret, a broken
// rotation keeps the last good one and counts a failure, and a rotated
// secret stays out of errors and logs like the first one.
func TestNotifierSecretsRotate(t *testing.T) {
	for _, tc := range []struct {
		typ string
		ok  reply
		// secret is the file's content for version v, given the server's
		// URL.
		secret func(srv string, v string) string
		config func(srv, file string) escalate.NotifierConfig
		// seen is the secret as the server received it, in the file's form.
		seen func(srv string, r request) string
	}{
		{
			typ: "pagerduty", ok: accepted,
			secret: func(_, v string) string { return "R0UT1NGKEY-" + v },
			config: func(srv, file string) escalate.NotifierConfig {
				return escalate.NotifierConfig{PagerDuty: &escalate.PagerDutyConfig{RoutingKeyFile: file, URL: srv}}
			},
			seen: func(_ string, r request) string {
				var ev struct {
					RoutingKey string `json:"routing_key"`
				}
				_ = json.Unmarshal(r.body, &ev)
				return ev.RoutingKey
			},
		},
		{
			typ: "slack", ok: reply{status: http.StatusOK, body: "ok"},
			secret: func(srv, v string) string { return srv + "/services/T000/B000/hook-" + v },
			config: func(_, file string) escalate.NotifierConfig {
				return escalate.NotifierConfig{Slack: &escalate.SlackConfig{WebhookURLFile: file}}
			},
			seen: func(srv string, r request) string { return srv + r.path },
		},
		{
			typ: "webhook", ok: reply{status: http.StatusNoContent},
			secret: func(_, v string) string { return "wh-t0ken-" + v },
			config: func(srv, file string) escalate.NotifierConfig {
				return escalate.NotifierConfig{Webhook: &escalate.WebhookConfig{URL: srv + "/hooks", BearerTokenFile: file}}
			},
			seen: func(_ string, r request) string { return strings.TrimPrefix(r.header.Get("Authorization"), "Bearer ") },
		},
	} {
		t.Run(tc.typ, func(t *testing.T) {
			srv := newFakeServer(t, tc.ok)
			secret := func(v string) string { return tc.secret(srv.URL, v) }
			// The fourth page is refused with an answer that quotes the
			// secret it was sent, and its URL-escaped path: both must be
			// redacted.
			srv.answer(tc.ok, tc.ok, tc.ok, reply{
				status: http.StatusBadRequest,
				body:   "invalid secret " + secret("v3") + " " + url.PathEscape(mustPath(t, secret("v3"))),
			})

			vol := secretfiletest.NewVolume(t, map[string][]byte{"secret": []byte(secret("v1") + "\n")})
			cfg := escalate.DefaultConfig()
			nc := tc.config(srv.URL, vol.Path("secret"))
			nc.Name, nc.Type, nc.Retries = "n", tc.typ, intp(0)
			cfg.Notifiers = []escalate.NotifierConfig{nc}
			cfg.Ladder[0].Notifiers = []string{"n"}
			h := newHarness(t, cfg)
			page := func() error {
				_, err := h.Page(context.Background(), h.Ladder()[0], pageMessage())
				return err
			}
			lastSeen := func() string {
				got := srv.got()
				return tc.seen(srv.URL, got[len(got)-1])
			}
			reloads := func(result string) float64 {
				return sample(t, h.reg, "autorollbackd_secret_reloads_total", map[string]string{"result": result})
			}

			if err := page(); err != nil {
				t.Fatalf("first page: %v", err)
			}
			if got := lastSeen(); got != secret("v1") {
				t.Fatalf("first page sent %q, want %q", got, secret("v1"))
			}

			vol.Update(map[string][]byte{"secret": []byte(secret("v2"))})
			if err := page(); err != nil {
				t.Fatalf("page after the rotation: %v", err)
			}
			if got := lastSeen(); got != secret("v2") {
				t.Errorf("page after the rotation sent %q, want the new %q", got, secret("v2"))
			}
			if got := reloads("success"); got != 1 {
				t.Errorf("reloads{success} = %v, want 1", got)
			}

			vol.Update(map[string][]byte{"secret": []byte("\n")})
			if err := page(); err != nil {
				t.Fatalf("page after an empty rotation: %v", err)
			}
			if got := lastSeen(); got != secret("v2") {
				t.Errorf("page after an empty rotation sent %q, want the last good %q", got, secret("v2"))
			}
			if got := reloads("failure"); got != 1 {
				t.Errorf("reloads{failure} = %v, want 1", got)
			}
			if !strings.Contains(h.logs.String(), "cannot re-read a notifier secret") {
				t.Errorf("the failed re-read is not logged:\n%s", h.logs.String())
			}

			vol.Update(map[string][]byte{"secret": []byte(secret("v3"))})
			err := page()
			if err == nil {
				t.Fatal("page refused by the server: no error")
			}
			if got := lastSeen(); got != secret("v3") {
				t.Errorf("page after the second rotation sent %q, want %q", got, secret("v3"))
			}
			if !strings.Contains(err.Error(), "<secret>") {
				t.Errorf("error %q: the server's answer is not quoted with the secret redacted", err)
			}
			for _, v := range []string{"v1", "v2", "v3"} {
				mustNotContain(t, "error", err.Error(), secret(v), mustPath(t, secret(v)))
				mustNotContain(t, "logs", h.logs.String(), secret(v), mustPath(t, secret(v)))
			}
		})
	}
}

// mustPath is the path of a URL, or s itself when it is not one.
func mustPath(t *testing.T, s string) string {
	t.Helper()
	u, err := url.Parse(s)
	if err != nil || u.Host == "" {
		return s
	}
	return u.Path
}
