package escalate_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"unicode/utf8"

	"github.com/autorollbackd/autorollbackd/internal/escalate"
	"github.com/autorollbackd/autorollbackd/internal/policy"
)

// The limits of PagerDuty's Events API v2.
const (
	pdMaxEvent    = 512 << 10
	pdMaxDedupKey = 255
	pdMaxSummary  = 1024
)

// strictPagerDuty is an Events API v2 that rejects, as PagerDuty does, an
// event over 512 KB, a dedup_key over 255 characters and a summary over
// 1024 characters, with 400 and the reason. It keeps the events it
// accepted.
type strictPagerDuty struct {
	*httptest.Server
	mu       sync.Mutex
	accepted []pdEvent
	bodies   [][]byte
}

type pdEvent struct {
	path     string
	Action   string `json:"event_action"`
	DedupKey string `json:"dedup_key"`
	Links    []struct {
		Href string `json:"href"`
		Text string `json:"text"`
	} `json:"links"`
	Payload struct {
		Summary       string         `json:"summary"`
		CustomDetails map[string]any `json:"custom_details"`
	} `json:"payload"`
}

func newStrictPagerDuty(t *testing.T) *strictPagerDuty {
	t.Helper()
	s := &strictPagerDuty{}
	s.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(r.Body)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		var ev pdEvent
		var problems []string
		if len(body) > pdMaxEvent {
			problems = append(problems, fmt.Sprintf("event of %d bytes is over %d", len(body), pdMaxEvent))
		}
		if err := json.Unmarshal(body, &ev); err != nil {
			problems = append(problems, "not JSON: "+err.Error())
		}
		if n := utf8.RuneCountInString(ev.DedupKey); n > pdMaxDedupKey {
			problems = append(problems, fmt.Sprintf("dedup_key of %d characters is over %d", n, pdMaxDedupKey))
		}
		if n := utf8.RuneCountInString(ev.Payload.Summary); n > pdMaxSummary {
			problems = append(problems, fmt.Sprintf("summary of %d characters is over %d", n, pdMaxSummary))
		}
		if len(problems) > 0 {
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusBadRequest)
			_ = json.NewEncoder(w).Encode(map[string]any{"status": "invalid event", "message": "Event object is invalid", "errors": problems})
			return
		}
		ev.path = r.URL.Path
		s.mu.Lock()
		s.accepted = append(s.accepted, ev)
		s.bodies = append(s.bodies, body)
		s.mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusAccepted)
		_, _ = io.WriteString(w, `{"status":"success","message":"Event processed"}`)
	}))
	t.Cleanup(s.Close)
	return s
}

func (s *strictPagerDuty) events() ([]pdEvent, [][]byte) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]pdEvent(nil), s.accepted...), append([][]byte(nil), s.bodies...)
}

// longIncident is an incident of a workload whose namespace and name are
// as long as Kubernetes allows, with the ID the engine gives it.
func longIncident(name string) escalate.Incident {
	in := incident()
	in.Target = policy.Ref{Kind: policy.KindDeployment, Namespace: strings.Repeat("n", 63), Name: name}
	in.ID = "deployment-" + in.Target.Namespace + "-" + in.Target.Name + "-r12-20260314t092600z"
	return in
}

// TestPagerDutyLongIncidentIDDedupKey: an incident ID may be far over
// PagerDuty's 255 characters. The page and its resolution still get
// through, with the same dedup key, and incidents that share the first 255
// characters, or levels of one incident, keep distinct keys.
func TestPagerDutyLongIncidentIDDedupKey(t *testing.T) {
	pd := newStrictPagerDuty(t)
	h := newHarness(t, pdConfig(t, pd.URL, intp(0)))
	a := longIncident(strings.Repeat("a", 253))
	b := longIncident(strings.Repeat("a", 252) + "b")
	if len(a.ID) <= pdMaxDedupKey {
		t.Fatalf("incident ID of %d characters does not test the limit", len(a.ID))
	}
	ctx := context.Background()
	for _, in := range []escalate.Incident{a, b} {
		m := pageMessage()
		m.Incident = in
		for _, step := range h.Ladder()[:2] {
			if _, err := h.Page(ctx, step, m); err != nil {
				t.Fatalf("Page %s: %v", step.Level, err)
			}
		}
	}
	if err := h.Resolve(ctx, a, []string{"oncall"}); err != nil {
		t.Fatalf("Resolve: %v", err)
	}
	evs, _ := pd.events()
	if len(evs) != 5 {
		t.Fatalf("PagerDuty accepted %d events, want 5", len(evs))
	}
	keys := map[string]bool{}
	for _, ev := range evs[:4] {
		keys[ev.DedupKey] = true
	}
	if len(keys) != 4 {
		t.Errorf("dedup keys %v: want 4 distinct ones for 2 incidents at 2 levels", keys)
	}
	if trigger, resolve := evs[0], evs[4]; resolve.Action != "resolve" || resolve.DedupKey != trigger.DedupKey {
		t.Errorf("resolve %s %q, want resolve of the page's key %q", resolve.Action, resolve.DedupKey, trigger.DedupKey)
	}
	if k := evs[0].DedupKey; !strings.HasPrefix(k, "autorollbackd/deployment-nnn") || k != escalate.DedupKey("", a.ID, "oncall") {
		t.Errorf("dedup key %q: want DedupKey(%q, oncall) = %q, starting with the incident ID", k, a.ID, escalate.DedupKey("", a.ID, "oncall"))
	}
}

// TestPagerDutyEventWithinLimits: a summary and details far over
// PagerDuty's limits are cut, the same way every time, so that the event
// is accepted; the cut says how many lines were left out.
func TestPagerDutyEventWithinLimits(t *testing.T) {
	big := pageMessage()
	big.Summary = strings.Repeat("summary <&> ", 1000)
	// 3000 lines of 1000 characters, each of which JSON encodes as six.
	big.Details = make([]string, 3000)
	for i := range big.Details {
		big.Details[i] = fmt.Sprintf("line %04d ", i) + strings.Repeat("<", 990)
	}
	big.Incident.Alertname = strings.Repeat("A", 5000)
	big.Incident.GeneratorURL = "http://prometheus.example/graph?g0.expr=" + strings.Repeat("x", 10000)

	for _, tc := range []struct {
		name string
		send func(h *harness) error
		path string
	}{
		{"trigger", func(h *harness) error { _, err := h.Page(context.Background(), h.Ladder()[0], big); return err }, "/v2/enqueue"},
		{"change", func(h *harness) error { return h.Announce(context.Background(), big) }, "/v2/change/enqueue"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			pd := newStrictPagerDuty(t)
			h := newHarness(t, pdConfig(t, pd.URL, intp(0)))
			for range 2 {
				if err := tc.send(h); err != nil {
					t.Fatalf("send: %v", err)
				}
			}
			evs, bodies := pd.events()
			if len(evs) != 2 {
				t.Fatalf("PagerDuty accepted %d events, want 2", len(evs))
			}
			if !bytes.Equal(bodies[0], bodies[1]) {
				t.Errorf("the same message gave two different events")
			}
			ev := evs[0]
			t.Logf("event of %d bytes", len(bodies[0]))
			if ev.path != tc.path {
				t.Errorf("sent to %s, want %s", ev.path, tc.path)
			}
			if !strings.HasSuffix(ev.Payload.Summary, "…") {
				t.Errorf("summary %q… does not show it was cut", ev.Payload.Summary[:40])
			}
			details, _ := ev.Payload.CustomDetails["details"].([]any)
			if len(details) < 2 || len(details) >= len(big.Details) {
				t.Fatalf("%d detail lines, want some but not all %d", len(details), len(big.Details))
			}
			kept := len(details) - 1
			for i, d := range details[:kept] {
				if d != big.Details[i] {
					t.Fatalf("detail %d changed: %.40q…, want %.40q…", i, d, big.Details[i])
				}
			}
			if want := fmt.Sprintf("… %d more lines left out to fit PagerDuty's event size limit", len(big.Details)-kept); details[kept] != want {
				t.Errorf("last detail %q, want %q", details[kept], want)
			}
			if a, _ := ev.Payload.CustomDetails["alertname"].(string); len(a) > 1024 || !strings.HasSuffix(a, "…") {
				t.Errorf("alertname of %d bytes, want it cut to 1024", len(a))
			}
			for _, l := range ev.Links {
				if l.Href == big.Incident.GeneratorURL {
					t.Errorf("link of %d bytes kept, want links over 8 KiB left out", len(l.Href))
				}
			}
		})
	}
}

// Two clusters can hold incidents of the same ID: a named cluster's dedup
// key carries its name, and an unnamed one's stays as it was.
func TestDedupKeyCluster(t *testing.T) {
	for _, tc := range []struct{ cluster, want string }{
		{"", "autorollbackd/inc-1/oncall"},
		{"prod-eu-1", "autorollbackd/prod-eu-1/inc-1/oncall"},
	} {
		if got := escalate.DedupKey(tc.cluster, "inc-1", "oncall"); got != tc.want {
			t.Errorf("DedupKey(%q, inc-1, oncall) = %q, want %q", tc.cluster, got, tc.want)
		}
	}
	if a, b := escalate.DedupKey("eu", "inc-1", "oncall"), escalate.DedupKey("us", "inc-1", "oncall"); a == b {
		t.Errorf("two clusters share the dedup key %q", a)
	}
}
