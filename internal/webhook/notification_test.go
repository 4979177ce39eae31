package webhook

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/alertmanager/template"
)

func TestDecodeFixtures(t *testing.T) {
	started := time.Date(2026, 11, 25, 21, 25, 4, 0, time.UTC)
	tests := []struct {
		file   string
		status string
		endsAt time.Time
	}{
		{"firing.json", "firing", time.Time{}},
		{"resolved.json", "resolved", time.Date(2026, 11, 25, 21, 25, 8, 0, time.UTC)},
	}
	for _, tc := range tests {
		t.Run(tc.file, func(t *testing.T) {
			n, err := Decode(bytes.NewReader(fixture(t, tc.file)))
			if err != nil {
				t.Fatalf("Decode: %v", err)
			}
			if n.Version != "4" || n.Status != tc.status || n.Receiver != "autorollbackd" || n.TruncatedAlerts != 0 {
				t.Errorf("got version %q status %q receiver %q truncated %d", n.Version, n.Status, n.Receiver, n.TruncatedAlerts)
			}
			if want := `{}/{impact=~"service_down"}:{alertname="EventServiceDown"}`; n.GroupKey != want {
				t.Errorf("groupKey = %q, want %q", n.GroupKey, want)
			}
			if want := (template.KV{"alertname": "EventServiceDown"}); !equalKV(n.GroupLabels, want) {
				t.Errorf("groupLabels = %v, want %v", n.GroupLabels, want)
			}
			if n.CommonLabels["deployment"] != "event-service" || n.CommonLabels["namespace"] != "events" {
				t.Errorf("commonLabels = %v", n.CommonLabels)
			}
			if n.ExternalURL != "http://alertmanager.monitoring.svc:9093" {
				t.Errorf("externalURL = %q", n.ExternalURL)
			}
			if len(n.Alerts) != 2 {
				t.Fatalf("got %d alerts, want 2", len(n.Alerts))
			}
			var fps []string
			for _, a := range n.Alerts {
				fps = append(fps, a.Fingerprint)
				if a.Status != tc.status {
					t.Errorf("alert %s: status %q, want %q", a.Fingerprint, a.Status, tc.status)
				}
				if !a.StartsAt.Equal(started) || !a.EndsAt.Equal(tc.endsAt) {
					t.Errorf("alert %s: startsAt %s endsAt %s", a.Fingerprint, a.StartsAt, a.EndsAt)
				}
				if !strings.HasPrefix(a.GeneratorURL, "http://prometheus.monitoring.svc:9090/graph?g0.expr=") {
					t.Errorf("alert %s: generatorURL %q", a.Fingerprint, a.GeneratorURL)
				}
				if a.Annotations["runbook_url"] == "" {
					t.Errorf("alert %s: annotations %v", a.Fingerprint, a.Annotations)
				}
			}
			if want := []string{"53bad9c6811959ea", "a8d5d185be14abd9"}; !slices.Equal(fps, want) {
				t.Errorf("fingerprints = %v, want %v", fps, want)
			}
		})
	}
}

func equalKV(a, b template.KV) bool {
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

func TestDecodeAccepts(t *testing.T) {
	tests := []struct {
		name string
		body []byte
	}{
		{"unknown fields", mutated(t, func(m map[string]any) {
			m["someFutureField"] = map[string]any{"x": []any{1, 2}}
			alertOf(m, 0)["silencedBy"] = []any{}
		})},
		{"fields of newer Alertmanagers", mutated(t, func(m map[string]any) {
			m["notification_reason"] = "new_alerts"
			m["routeLabels"] = map[string]any{"team": "events"}
		})},
		{"no endsAt", mutated(t, func(m map[string]any) { delete(alertOf(m, 0), "endsAt") })},
		{"null endsAt", mutated(t, func(m map[string]any) { alertOf(m, 0)["endsAt"] = nil })},
		{"no groupKey or receiver", mutated(t, func(m map[string]any) { delete(m, "groupKey"); delete(m, "receiver") })},
		{"truncated alerts counted", mutated(t, func(m map[string]any) { m["truncatedAlerts"] = json.Number("18446744073709551615") })},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			n, err := Decode(bytes.NewReader(tc.body))
			if err != nil {
				t.Fatalf("Decode: %v", err)
			}
			if len(n.Alerts) != 2 || n.Alerts[0].Fingerprint != "53bad9c6811959ea" {
				t.Errorf("alerts = %+v", n.Alerts)
			}
		})
	}
}

func TestDecodeErrors(t *testing.T) {
	const (
		missingField = "missing_field"
		invalidField = "invalid_field"
		badJSON      = "bad_json"
	)
	long := strings.Repeat("x", 1000)
	tests := []struct {
		name   string
		body   []byte
		reason string
		msg    string
	}{
		{"empty body", nil, badJSON, "empty body"},
		{"only whitespace", []byte(" \n\t"), badJSON, "empty body"},
		{"truncated", []byte(`{"version":"4",`), badJSON, "invalid JSON at offset 15: unexpected end of JSON input"},
		{"truncated fixture", fixture(t, "firing.json")[:100], badJSON, "invalid JSON at offset 100: unexpected end of JSON input"},
		{"syntax", []byte(`{"version":"4",}`), badJSON, "invalid JSON at offset 16: invalid character '}' looking for beginning of object key string"},
		{"trailing data", []byte(`{"version":"4"} x`), badJSON, "invalid JSON at offset 17: invalid character 'x' after top-level value"},
		{"nested too deep", []byte(`{"alerts":` + strings.Repeat("[", 20000)), badJSON, "invalid JSON at offset 10010: invalid character '[' exceeded max depth"},
		{"array", []byte(`[]`), badJSON, "invalid JSON: got array, want object"},
		{"string", []byte(`"4"`), badJSON, "invalid JSON: got string, want object"},
		{"null", []byte(`null`), missingField, "version: missing"},
		{"no version", mutated(t, func(m map[string]any) { delete(m, "version") }), missingField, "version: missing"},
		{"version 3", mutated(t, func(m map[string]any) { m["version"] = "3" }), "bad_version", `version: got "3", want "4"`},
		{"version number", mutated(t, func(m map[string]any) { m["version"] = 4 }), invalidField, "version: got number, want string"},
		{"no status", mutated(t, func(m map[string]any) { delete(m, "status") }), missingField, "status: missing"},
		{"bad status", mutated(t, func(m map[string]any) { m["status"] = "pending" }), invalidField, `status: got "pending", want firing or resolved`},
		{"no alerts", mutated(t, func(m map[string]any) { delete(m, "alerts") }), missingField, "alerts: missing"},
		{"null alerts", mutated(t, func(m map[string]any) { m["alerts"] = nil }), missingField, "alerts: missing"},
		{"empty alerts", mutated(t, func(m map[string]any) { m["alerts"] = []any{} }), missingField, "alerts: must not be empty"},
		{"alerts object", mutated(t, func(m map[string]any) { m["alerts"] = map[string]any{} }), invalidField, "alerts: got object, want array"},
		{"null alert", mutated(t, func(m map[string]any) { m["alerts"].([]any)[1] = nil }), invalidField, "alerts[1]: got null, want object"},
		{"number alert", mutated(t, func(m map[string]any) { m["alerts"].([]any)[1] = 7 }), invalidField, "alerts[1]: got number, want object"},
		{"alert without status", mutated(t, func(m map[string]any) { delete(alertOf(m, 1), "status") }), missingField, "alerts[1].status: missing"},
		{"alert bad status", mutated(t, func(m map[string]any) { alertOf(m, 0)["status"] = "active" }), invalidField, `alerts[0].status: got "active", want firing or resolved`},
		{"alert status number", mutated(t, func(m map[string]any) { alertOf(m, 0)["status"] = 1 }), invalidField, "alerts[0].status: got number, want string"},
		{"no labels", mutated(t, func(m map[string]any) { delete(alertOf(m, 0), "labels") }), missingField, "alerts[0].labels: missing"},
		{"empty labels", mutated(t, func(m map[string]any) { alertOf(m, 0)["labels"] = map[string]any{} }), missingField, "alerts[0].labels: must not be empty"},
		{"label value number", mutated(t, func(m map[string]any) { alertOf(m, 1)["labels"] = map[string]any{"a": 1} }), invalidField, "alerts[1].labels: got number, want string"},
		{"no startsAt", mutated(t, func(m map[string]any) { delete(alertOf(m, 1), "startsAt") }), missingField, "alerts[1].startsAt: missing"},
		{"null startsAt", mutated(t, func(m map[string]any) { alertOf(m, 1)["startsAt"] = nil }), missingField, "alerts[1].startsAt: missing"},
		{"zero startsAt", mutated(t, func(m map[string]any) { alertOf(m, 1)["startsAt"] = "0001-01-01T00:00:00Z" }), missingField, "alerts[1].startsAt: missing"},
		{"bad startsAt", mutated(t, func(m map[string]any) { alertOf(m, 1)["startsAt"] = "yesterday" }), invalidField, `alerts[1].startsAt: got "yesterday", want an RFC 3339 time`},
		{"numeric startsAt", mutated(t, func(m map[string]any) { alertOf(m, 1)["startsAt"] = 1700000000 }), invalidField, "alerts[1].startsAt: got number, want an RFC 3339 time string"},
		{"bad endsAt", mutated(t, func(m map[string]any) { alertOf(m, 0)["endsAt"] = "2026-13-01T00:00:00Z" }), invalidField, `alerts[0].endsAt: got "2026-13-01T00:00:00Z", want an RFC 3339 time`},
		{"no fingerprint", mutated(t, func(m map[string]any) { delete(alertOf(m, 1), "fingerprint") }), missingField, "alerts[1].fingerprint: missing"},
		{"empty fingerprint", mutated(t, func(m map[string]any) { alertOf(m, 0)["fingerprint"] = "" }), missingField, "alerts[0].fingerprint: missing"},
		{"negative truncatedAlerts", mutated(t, func(m map[string]any) { m["truncatedAlerts"] = -1 }), invalidField, "truncatedAlerts: got number -1, want non-negative integer"},
		{"huge truncatedAlerts", bytes.Replace(fixture(t, "firing.json"), []byte(`"truncatedAlerts":0`), []byte(`"truncatedAlerts":1e400`), 1), invalidField, "truncatedAlerts: got number 1e400, want non-negative integer"},
		{"groupLabels array value", mutated(t, func(m map[string]any) { m["groupLabels"] = map[string]any{"a": []any{}} }), invalidField, "groupLabels: got array, want string"},
		{"long status clipped", mutated(t, func(m map[string]any) { m["status"] = long }), invalidField, `status: got "` + long[:40] + `...", want firing or resolved`},
		{"control characters escaped", mutated(t, func(m map[string]any) { m["status"] = "fir\ning" }), invalidField, `status: got "fir\ning", want firing or resolved`},
		{"newline in version", mutated(t, func(m map[string]any) { m["version"] = "4\n" }), "bad_version", `version: got "4\n", want "4"`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			n, err := Decode(bytes.NewReader(tc.body))
			if err == nil {
				t.Fatalf("Decode succeeded: %+v", n)
			}
			re, ok := errors.AsType[*RequestError](err)
			if !ok {
				t.Fatalf("error %T %v, want *RequestError", err, err)
			}
			if re.Status != http.StatusBadRequest || re.Reason != tc.reason || re.Msg != tc.msg {
				t.Errorf("got %d %s %q\nwant 400 %s %q", re.Status, re.Reason, re.Msg, tc.reason, tc.msg)
			}
		})
	}
}

func TestDecodeReadErrors(t *testing.T) {
	body := fixture(t, "firing.json")
	_, err := Decode(http.MaxBytesReader(nil, io.NopCloser(bytes.NewReader(body)), 100))
	if re, ok := errors.AsType[*RequestError](err); !ok || re.Status != 413 || re.Reason != "too_large" || re.Msg != "body larger than 100 bytes" {
		t.Errorf("over the limit: got %#v", err)
	}
	_, err = Decode(io.MultiReader(bytes.NewReader(body[:10]), errReader{errors.New("connection reset")}))
	if re, ok := errors.AsType[*RequestError](err); !ok || re.Status != 400 || re.Reason != "bad_json" || re.Msg != "read body: connection reset" {
		t.Errorf("read error: got %#v", err)
	}
}

type errReader struct{ err error }

func (r errReader) Read([]byte) (int, error) { return 0, r.err }

func FuzzDecode(f *testing.F) {
	for _, name := range []string{"firing.json", "resolved.json"} {
		b := fixture(f, name)
		f.Add(b)
		for _, n := range []int{0, 1, 17, 100, len(b) / 2, len(b) - 2} {
			f.Add(b[:n])
		}
	}
	for _, s := range []string{
		`{"version":"4","status":"firing","alerts":[{"status":"firing","labels":{"a":"b"},"startsAt":"2026-01-01T00:00:00Z","fingerprint":"x"}]}`,
		`{"version":"4","truncatedAlerts":1e999999}`,
		`{"version":"4","truncatedAlerts":184467440737095516150}`,
		`{"version":4,"status":true,"alerts":"x"}`,
		`{"version":"4","status":"firing","alerts":[null,1,"x",[],{}]}`,
		`{"version":"4","status":"firing","alerts":[{"status":"firing","labels":{"a":"b"},"startsAt":1e309,"fingerprint":"x"}]}`,
		`{"alerts":[{"labels":{"\u0000":"\ud800"}}]}`,
		`{"version":"4"}` + "\xff",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		n, err := Decode(bytes.NewReader(body))
		if err != nil {
			re, ok := errors.AsType[*RequestError](err)
			if !ok {
				t.Fatalf("error %T %v, want *RequestError", err, err)
			}
			if re.Status < 400 || re.Status > 499 {
				t.Fatalf("status %d, want 4xx", re.Status)
			}
			if !slices.Contains(reasons, re.Reason) {
				t.Fatalf("reason %q is not one of the bounded reasons", re.Reason)
			}
			if re.Msg == "" || strings.ContainsAny(re.Msg, "\r\n") || len(re.Msg) > maxMsgLen+3 {
				t.Fatalf("message is not one bounded line: %q", re.Msg)
			}
			return
		}
		if n.Version != "4" || (n.Status != "firing" && n.Status != "resolved") || len(n.Alerts) == 0 {
			t.Fatalf("accepted an invalid notification: %+v", n)
		}
		for i, a := range n.Alerts {
			if (a.Status != "firing" && a.Status != "resolved") || len(a.Labels) == 0 || a.StartsAt.IsZero() || a.Fingerprint == "" {
				t.Fatalf("accepted an invalid alert %d: %+v", i, a)
			}
		}
	})
}

// payload returns a valid notification with n alerts, built from the
// fixture's first alert.
func payload(b testing.TB, n int) []byte {
	var m map[string]any
	if err := json.Unmarshal(fixture(b, "firing.json"), &m); err != nil {
		b.Fatal(err)
	}
	first := alertOf(m, 0)
	var alerts []any
	for i := range n {
		a := make(map[string]any, len(first))
		for k, v := range first {
			a[k] = v
		}
		labels := make(map[string]any)
		for k, v := range first["labels"].(map[string]any) {
			labels[k] = v
		}
		labels["pod"] = fmt.Sprintf("event-service-7d9c6b5f4-%05d", i)
		a["labels"] = labels
		a["fingerprint"] = fmt.Sprintf("%016x", i)
		alerts = append(alerts, a)
	}
	m["alerts"] = alerts
	out, err := json.Marshal(m)
	if err != nil {
		b.Fatal(err)
	}
	return out
}

func BenchmarkDecode(b *testing.B) {
	for _, n := range []int{1, 10, 100} {
		body := payload(b, n)
		b.Run(fmt.Sprintf("alerts=%d", n), func(b *testing.B) {
			b.SetBytes(int64(len(body)))
			b.ReportAllocs()
			for b.Loop() {
				if _, err := Decode(bytes.NewReader(body)); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkHandler is the webhook's own cost of a notification whose every
// alert the intake refuses, as the intake benchmark's refused case sends
// them: authentication, decoding, metrics, the notification's info line
// (to a file, as the daemon's log goes to stderr) and the answer. The
// intake itself is left out: it refuses at once.
func BenchmarkHandler(b *testing.B) {
	// Not beside the token: its directory is watched for a new token.
	log, err := os.Create(filepath.Join(b.TempDir(), "log"))
	if err != nil {
		b.Fatal(err)
	}
	defer log.Close()
	h := bearerHandler(b, slog.New(slog.NewJSONHandler(log, nil)), func(_ context.Context, n *Notification) (Receipt, error) {
		var r Receipt
		for range n.Alerts {
			r.Refuse("refuse", "not_opted_in", "Deployment bench/app")
		}
		return r, nil
	})
	for _, n := range []int{1, 10} {
		body := payload(b, n)
		b.Run(fmt.Sprintf("alerts=%d", n), func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				r := httptest.NewRequest(http.MethodPost, "/webhook", bytes.NewReader(body))
				r.Header.Set("Content-Type", "application/json")
				r.Header.Set("Authorization", bearer(testToken))
				w := httptest.NewRecorder()
				h.ServeHTTP(w, r)
				if w.Code != http.StatusOK {
					b.Fatalf("answered %d: %s", w.Code, w.Body)
				}
			}
		})
	}
}
