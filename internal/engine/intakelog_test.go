package engine

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/alertmanager/template"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/autorollbackd/autorollbackd/internal/escalate"
	"github.com/autorollbackd/autorollbackd/internal/policy"
	"github.com/autorollbackd/autorollbackd/internal/verify"
	"github.com/autorollbackd/autorollbackd/internal/webhook"
)

// lockedBuffer is a log destination the test reads while the daemon's
// goroutines may write to it.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

// lines returns the JSON log lines written so far whose msg is msg.
func (b *lockedBuffer) lines(t *testing.T, msg string) []map[string]any {
	t.Helper()
	b.mu.Lock()
	defer b.mu.Unlock()
	var out []map[string]any
	sc := bufio.NewScanner(bytes.NewReader(b.buf.Bytes()))
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		var l map[string]any
		if err := json.Unmarshal(sc.Bytes(), &l); err != nil {
			t.Fatalf("log line %q: %v", sc.Text(), err)
		}
		if l["msg"] == msg {
			out = append(out, l)
		}
	}
	return out
}

// all returns every log line written so far, for failure messages.
func (b *lockedBuffer) all() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// TestIntakeLogsOneLinePerNotification sends one notification of 100
// refused alerts through the webhook handler to the engine: at info level
// the daemon writes one line for it, with the counts by outcome and reason
// and the first targets; at debug level it also writes each refusal.
func TestIntakeLogsOneLinePerNotification(t *testing.T) {
	f := newFixture(t, nil, nil) // not opted in
	for _, tc := range []struct {
		level        slog.Level
		wantRefusals int // "alert refused" lines
	}{
		{slog.LevelInfo, 0},
		{slog.LevelDebug, 100},
	} {
		t.Run(tc.level.String(), func(t *testing.T) {
			logs := &lockedBuffer{}
			logger := slog.New(slog.NewJSONHandler(logs, &slog.HandlerOptions{Level: tc.level}))
			e := f.startEngine(t, policy.DefaultConfig(), 0, func(_ *verify.Config, _ *escalate.Config, o *Options) { o.Logger = logger })

			cfg := webhook.DefaultConfig()
			cfg.Auth = webhook.AuthConfig{Credential: webhook.Credential{InsecureDisableAuth: true}}
			auth, err := webhook.NewAuthenticator(cfg.Auth, logger)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = auth.Close() })
			h, err := webhook.NewHandler(cfg, auth, e.Engine, logger, prometheus.NewRegistry())
			if err != nil {
				t.Fatal(err)
			}
			srv := httptest.NewServer(h)
			t.Cleanup(srv.Close)

			// Every fifth alert names a Deployment that does not exist, the
			// others the fixture's, which is not opted in.
			n := firing(f.ns, "refused-"+tc.level.String()+"-0", time.Now(), nil)
			n.Alerts = nil
			var wantTargets []string
			for i := range 100 {
				name := "event-service"
				if i%5 == 0 {
					name = fmt.Sprintf("missing-%d", i)
				}
				n.Alerts = append(n.Alerts, template.Alert{
					Status: "firing", Labels: template.KV{"alertname": "EventServiceDown", "namespace": f.ns, "deployment": name},
					StartsAt: time.Now(), Fingerprint: fingerprintOf(fmt.Sprintf("refused-%s-%d", tc.level, i)),
				})
				if len(wantTargets) < webhook.MaxRefusedTargets {
					wantTargets = append(wantTargets, "Deployment "+f.ns+"/"+name)
				}
			}
			body, err := json.Marshal(n)
			if err != nil {
				t.Fatal(err)
			}
			resp, err := http.Post(srv.URL, "application/json", bytes.NewReader(body))
			if err != nil {
				t.Fatal(err)
			}
			var answer struct {
				Status  string `json:"status"`
				Refused int    `json:"refused"`
			}
			err = json.NewDecoder(resp.Body).Decode(&answer)
			_ = resp.Body.Close()
			if err != nil || resp.StatusCode != http.StatusOK || answer.Status != "accepted" || answer.Refused != 100 {
				t.Fatalf("answer %d %+v (%v), want 200 accepted with 100 refused; log:\n%s", resp.StatusCode, answer, err, logs.all())
			}

			got := logs.lines(t, "notification accepted")
			if len(got) != 1 {
				t.Fatalf("%d lines %q, want 1; log:\n%s", len(got), "notification accepted", logs.all())
			}
			line := got[0]
			if line["level"] != "INFO" || line["alerts"] != 100.0 || line["refused"] != 100.0 || line["accepted"] != 0.0 {
				t.Errorf("notification line %v, want level INFO, 100 alerts, 100 refused, 0 accepted", line)
			}
			wantReasons := map[string]any{"refuse/not_opted_in": 80.0, "refuse/workload_not_found": 20.0}
			if reasons, _ := line["refused_reasons"].(map[string]any); !equalMaps(reasons, wantReasons) {
				t.Errorf("refused_reasons %v, want %v", line["refused_reasons"], wantReasons)
			}
			if targets := line["refused_targets"]; targets != strings.Join(wantTargets, ", ") {
				t.Errorf("refused_targets %q, want %q", targets, strings.Join(wantTargets, ", "))
			}

			// Nothing else about the notification reaches info level.
			for _, msg := range []string{"alert refused", "alert names no workload"} {
				for _, l := range logs.lines(t, msg) {
					if l["level"] != "DEBUG" {
						t.Errorf("%q logged at %v, want DEBUG: %v", msg, l["level"], l)
					}
				}
			}
			refusals := logs.lines(t, "alert refused")
			if len(refusals) != tc.wantRefusals {
				t.Fatalf("%d %q lines, want %d", len(refusals), "alert refused", tc.wantRefusals)
			}
			var fingerprints []string
			for _, l := range refusals {
				fp, _ := l["fingerprint"].(string)
				fingerprints = append(fingerprints, fp)
				if l["alertname"] != "EventServiceDown" || l["namespace"] != f.ns || l["decision"] != "refuse" {
					t.Errorf("refusal line %v, want the alert's name, namespace and decision", l)
				}
			}
			slices.Sort(fingerprints)
			if len(slices.Compact(fingerprints)) != tc.wantRefusals {
				t.Errorf("refusal lines name %d distinct fingerprints, want %d", len(fingerprints), tc.wantRefusals)
			}
		})
	}
}

func equalMaps(a, b map[string]any) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if w, ok := b[k]; !ok || w != v {
			return false
		}
	}
	return true
}

// TestReceiptRefusals checks the engine's receipt: refusals counted by
// outcome and reason, and only the first targets kept.
func TestReceiptRefusals(t *testing.T) {
	f := newFixture(t, nil, nil)
	e := f.startEngine(t, policy.DefaultConfig(), 0)
	n := firing(f.ns, "receipt-0", time.Now(), nil)
	n.Alerts = append(n.Alerts, template.Alert{
		Status: "firing", Labels: template.KV{"alertname": "NoTarget"},
		StartsAt: time.Now(), Fingerprint: fingerprintOf("receipt-1"),
	})
	r, err := e.Accept(context.Background(), n)
	if err != nil {
		t.Fatal(err)
	}
	if r.Refused != 2 || r.Refusals.Count("refuse", "not_opted_in") != 1 || r.Refusals.Count("refuse", "no_target") != 1 {
		t.Fatalf("receipt %+v %+v, want one refusal not_opted_in and one no_target", r, r.Refusals)
	}
	if got, want := r.Refusals.Targets(), []string{"Deployment " + f.ns + "/event-service"}; !slices.Equal(got, want) {
		t.Errorf("targets %q, want %q", got, want)
	}
}
