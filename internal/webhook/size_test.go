package webhook

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"testing"
	"testing/iotest"
	"time"

	"github.com/prometheus/alertmanager/template"
	"github.com/prometheus/client_golang/prometheus"
)

// bigGroup returns a notification of n firing alerts as Alertmanager sends
// it for kube-prometheus-stack's KubePodCrashLooping grouped by alertname:
// the labels of kube-state-metrics' series with the stack's external labels,
// the rule's annotations, and its generator URL. Every alert names its own
// pod, container, instance and uid, so nothing repeats that would not repeat
// in a real group.
// bigGroupKey is the group key of bigGroup's notification.
const bigGroupKey = `{}/{impact=~"service_down"}:{alertname="KubePodCrashLooping"}`

func bigGroup(n int) []byte {
	start := time.Date(2026, 11, 25, 21, 25, 4, 0, time.UTC)
	alerts := make(template.Alerts, n)
	for i := range alerts {
		ns := fmt.Sprintf("team-%02d-payments", i%40)
		deploy := fmt.Sprintf("checkout-api-%03d", i%250)
		pod := fmt.Sprintf("%s-7d9c6b5f4-%05x", deploy, i*7919)
		alerts[i] = template.Alert{
			Status: "firing",
			Labels: template.KV{
				"alertname":          "KubePodCrashLooping",
				"cluster":            "prod-eu-west-1",
				"container":          deploy,
				"endpoint":           "http",
				"impact":             "service_down",
				"instance":           fmt.Sprintf("10.%d.%d.%d:8080", 244+i%8, i/250%256, i%250+2),
				"job":                "kube-state-metrics",
				"namespace":          ns,
				"pod":                pod,
				"prometheus":         "monitoring/kube-prometheus-stack-prometheus",
				"prometheus_replica": "prometheus-kube-prometheus-stack-prometheus-0",
				"reason":             "CrashLoopBackOff",
				"service":            "kube-prometheus-stack-kube-state-metrics",
				"severity":           "warning",
				"uid":                fmt.Sprintf("5f0c2a8e-%04x-4e1b-9c3d-%012x", i%65536, i*104729),
			},
			Annotations: template.KV{
				"description": fmt.Sprintf(`Pod %s/%s (%s) is in waiting state (reason: "CrashLoopBackOff") on cluster prod-eu-west-1.`, ns, pod, deploy),
				"runbook_url": "https://runbooks.prometheus-operator.dev/runbooks/kubernetes/kubepodcrashlooping",
				"summary":     "Pod is crash looping.",
			},
			StartsAt: start.Add(time.Duration(i) * time.Second),
			GeneratorURL: "http://kube-prometheus-stack-prometheus.monitoring:9090/graph?g0.expr=max_over_time%28kube_pod_container_status_waiting_reason%7B" +
				"job%3D%22kube-state-metrics%22%2Cnamespace%3D~%22.%2A%22%2Creason%3D%22CrashLoopBackOff%22%7D%5B5m%5D%29+%3E%3D+1&g0.tab=1",
			Fingerprint: fmt.Sprintf("%016x", uint64(i)*0x9e3779b97f4a7c15),
		}
	}
	n4 := Notification{
		Data: template.Data{
			Receiver:          "autorollbackd",
			Status:            "firing",
			Alerts:            alerts,
			GroupLabels:       template.KV{"alertname": "KubePodCrashLooping"},
			CommonLabels:      template.KV{"alertname": "KubePodCrashLooping", "cluster": "prod-eu-west-1", "endpoint": "http", "impact": "service_down", "job": "kube-state-metrics", "prometheus": "monitoring/kube-prometheus-stack-prometheus", "reason": "CrashLoopBackOff", "service": "kube-prometheus-stack-kube-state-metrics", "severity": "warning"},
			CommonAnnotations: template.KV{"runbook_url": "https://runbooks.prometheus-operator.dev/runbooks/kubernetes/kubepodcrashlooping", "summary": "Pod is crash looping."},
			ExternalURL:       "http://kube-prometheus-stack-alertmanager.monitoring:9093",
		},
		Version:  "4",
		GroupKey: bigGroupKey,
	}
	// Alertmanager's encoder escapes HTML characters, as json.Marshal does.
	b, err := json.Marshal(n4)
	if err != nil {
		panic(err)
	}
	return b
}

// TestDefaultBodyLimitTakesAThousandAlerts: the default webhook.maxBodyBytes
// takes a group of 1,000 realistic alerts with at least twice their size to
// spare, since a 413 loses the whole group (Alertmanager does not retry a
// 4xx). docs/webhook.md quotes the size measured here.
func TestDefaultBodyLimitTakesAThousandAlerts(t *testing.T) {
	body := bigGroup(1000)
	limit := DefaultConfig().MaxBodyBytes
	t.Logf("1,000 alerts: %d bytes (%.0f per alert); default limit %d bytes, %.1f times that", len(body), float64(len(body))/1000, limit, float64(limit)/float64(len(body)))
	if int64(len(body))*2 > limit {
		t.Errorf("1,000 alerts take %d bytes; the default webhook.maxBodyBytes %d leaves less than twice that", len(body), limit)
	}

	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "token"), []byte(testToken))
	cfg := DefaultConfig()
	cfg.Auth.BearerTokenFile = filepath.Join(dir, "token")
	auth, err := NewAuthenticator(cfg.Auth, discard())
	if err != nil {
		t.Fatal(err)
	}
	defer auth.Close()
	var got int
	h, err := NewHandler(cfg, auth, IntakeFunc(func(_ context.Context, n *Notification) (Receipt, error) {
		got = len(n.Alerts)
		return Receipt{Accepted: len(n.Alerts)}, nil
	}), discard(), prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	r := httptest.NewRequest(http.MethodPost, "/webhook", bytes.NewReader(body))
	r.Header.Set("Content-Type", "application/json")
	r.Header.Set("Authorization", bearer(testToken))
	w := httptest.NewRecorder()
	h.ServeHTTP(w, r)
	if w.Code != http.StatusOK || got != 1000 {
		t.Fatalf("got %d %s with %d alerts taken, want 200 with 1000", w.Code, w.Body, got)
	}
}

// TestHandlerLogsTooLarge: a 413 loses the group for good, so its log line
// says which group it was: the group key, which Alertmanager writes after
// the alerts, and the receiver, status and the first alert's name and
// namespace, which come first.
func TestHandlerLogsTooLarge(t *testing.T) {
	const limit = 8192
	big := bigGroup(20)
	// A sender that writes groupKey first gets it logged.
	keyFirst := append([]byte(`{"groupKey":"{}:{alertname=\"KubePodCrashLooping\"}",`), big[1:]...)
	tests := []struct {
		name    string
		body    []byte
		chunked bool
		want    map[string]any
		absent  []string
	}{
		{"declared length over the limit", big, false, map[string]any{
			"content_length": float64(len(big)), "receiver": "autorollbackd", "status": "firing",
			"alertname": "KubePodCrashLooping", "namespace": "team-00-payments", "group_key": bigGroupKey,
		}, nil},
		{"chunked over the limit", big, true, map[string]any{
			"receiver": "autorollbackd", "status": "firing", "alertname": "KubePodCrashLooping", "namespace": "team-00-payments",
			"group_key": bigGroupKey,
		}, []string{"content_length"}},
		{"group key first", keyFirst, true, map[string]any{
			"group_key": `{}:{alertname="KubePodCrashLooping"}`, "receiver": "autorollbackd", "alertname": "KubePodCrashLooping",
		}, nil},
		{"not JSON", bytes.Repeat([]byte("x"), 2*limit), false, map[string]any{
			"content_length": float64(2 * limit),
		}, []string{"group_key", "receiver", "alertname"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var buf syncBuffer
			dir := t.TempDir()
			writeFile(t, filepath.Join(dir, "token"), []byte(testToken))
			cfg := DefaultConfig()
			cfg.MaxBodyBytes = limit
			cfg.Auth.BearerTokenFile = filepath.Join(dir, "token")
			auth, err := NewAuthenticator(cfg.Auth, discard())
			if err != nil {
				t.Fatal(err)
			}
			defer auth.Close()
			h, err := NewHandler(cfg, auth, IntakeFunc(func(context.Context, *Notification) (Receipt, error) {
				t.Error("intake called")
				return Receipt{}, nil
			}), slogTo(&buf), prometheus.NewRegistry())
			if err != nil {
				t.Fatal(err)
			}
			srv := httptest.NewServer(h)
			defer srv.Close()
			e := &testEnv{srv: srv}
			resp := e.do(t, req{body: tc.body, chunked: tc.chunked})
			if body := readAll(t, resp.Body); resp.StatusCode != 413 {
				t.Fatalf("got %d %s, want 413", resp.StatusCode, body)
			}
			line := logLine(t, buf.String(), "webhook request refused")
			want := map[string]any{"level": "WARN", "reason": "too_large", "code": 413.0, "err": "body larger than 8192 bytes", "sender": "default"}
			for k, v := range tc.want {
				want[k] = v
			}
			for k, v := range want {
				if line[k] != v {
					t.Errorf("%s = %v, want %v", k, line[k], v)
				}
			}
			for _, k := range tc.absent {
				if v, ok := line[k]; ok {
					t.Errorf("%s = %v, want it absent", k, v)
				}
			}
			if line["remote"] == nil || line["remote"] == "" {
				t.Error("remote not logged")
			}
		})
	}
}

// logLine returns the one JSON log line with message msg.
func logLine(t *testing.T, logs, msg string) map[string]any {
	t.Helper()
	var found []map[string]any
	for l := range bytes.SplitSeq(bytes.TrimSpace([]byte(logs)), []byte("\n")) {
		var m map[string]any
		if err := json.Unmarshal(l, &m); err != nil {
			t.Fatalf("log line %q: %v", l, err)
		}
		if m["msg"] == msg {
			found = append(found, m)
		}
	}
	if len(found) != 1 {
		t.Fatalf("%d log lines %q, want 1:\n%s", len(found), msg, logs)
	}
	return found[0]
}

// BenchmarkDecodeThousandAlerts is the cost of the largest group the default
// limit is sized for.
func BenchmarkDecodeThousandAlerts(b *testing.B) {
	body := bigGroup(1000)
	b.SetBytes(int64(len(body)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Decode(bytes.NewReader(body)); err != nil {
			b.Fatal(err)
		}
	}
}

// TestAlertmanagerWritesGroupKeyLast is why tooLarge scans past the
// alerts: in what a real Alertmanager sent, groupKey and groupLabels follow
// the alerts, and receiver and status precede them.
func TestAlertmanagerWritesGroupKeyLast(t *testing.T) {
	body := fixture(t, "firing.json")
	at := func(key string) int { return bytes.Index(body, []byte(`"`+key+`":`)) }
	alerts := at("alerts")
	for _, k := range []string{"groupKey", "groupLabels"} {
		if at(k) < alerts {
			t.Errorf("%s at %d, before the alerts at %d", k, at(k), alerts)
		}
	}
	for _, k := range []string{"receiver", "status"} {
		if at(k) < 0 || at(k) > alerts {
			t.Errorf("%s at %d, not before the alerts at %d", k, at(k), alerts)
		}
	}
}

// TestScanGroupKey: the notification's own groupKey is found past any
// label of that name, across read boundaries, and a body cut off before it
// has none.
func TestScanGroupKey(t *testing.T) {
	hostile := []byte(`{"alerts":[{"labels":{"groupKey":"{}:{forged=\"1\"}"}}],"groupKey":"{}/{impact=\"service_down\"}:{alertname=\"A\"}"}`)
	for _, tc := range []struct {
		name string
		body []byte
		want string
		ok   bool
	}{
		{"Alertmanager's order", bigGroup(200), bigGroupKey, true},
		{"a label named groupKey comes first", hostile, `{}/{impact="service_down"}:{alertname="A"}`, true},
		{"cut before the key", bigGroup(200)[:4096], "", false},
		{"not JSON", bytes.Repeat([]byte(`"groupKey"`), 1000), "", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			// One byte at a time, so the key straddles every read boundary.
			got, ok := scanGroupKey(iotest.OneByteReader(bytes.NewReader(tc.body)))
			if got != tc.want || ok != tc.ok {
				t.Errorf("scanGroupKey = %q, %v; want %q, %v", got, ok, tc.want, tc.ok)
			}
		})
	}
}

// readBody reads a body whose length the request gives into one buffer,
// and reads a body of another length, or of none given, whole all the same.
func TestReadBody(t *testing.T) {
	body := payload(t, 10)
	for _, length := range []int64{int64(len(body)), -1, 0, 10, int64(len(body)) * 2} {
		got, err := readBody(bytes.NewReader(body), length)
		if err != nil || !bytes.Equal(got, body) {
			t.Errorf("length %d: read %d bytes, %v; want the %d bytes of the body", length, len(got), err, len(body))
		}
	}
	allocs := testing.AllocsPerRun(100, func() {
		if _, err := readBody(bytes.NewReader(body), int64(len(body))); err != nil {
			t.Fatal(err)
		}
	})
	// The buffer, and the bytes.Reader of the test.
	if allocs > 2 {
		t.Errorf("reading a body of known length took %.0f allocations, want the buffer's alone", allocs)
	}
	// A sender that claims 4 MiB and sends a notification gets no 4 MiB
	// buffer.
	got, err := readBody(bytes.NewReader(body), 4<<20)
	if err != nil || !bytes.Equal(got, body) {
		t.Fatalf("claimed 4 MiB: read %d bytes, %v; want the %d bytes of the body", len(got), err, len(body))
	}
	if c := cap(got); c > maxPresized+bytes.MinRead {
		t.Errorf("claimed 4 MiB, sent %d bytes: a buffer of %d bytes, want at most %d", len(body), c, maxPresized+bytes.MinRead)
	}
}
