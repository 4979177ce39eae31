package reliability

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"net/http"
	"os"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/autorollbackd/autorollbackd/internal/actuator"
	incidentpkg "github.com/autorollbackd/autorollbackd/internal/incident"
	"github.com/autorollbackd/autorollbackd/internal/testenv"
)

// fingerprint returns name when it is a fingerprint as Alertmanager writes
// one (16 lower-case hex digits), else one derived from it: the daemon
// refuses any other.
func fingerprint(name string) string {
	if len(name) == 16 && strings.Trim(name, "0123456789abcdef") == "" {
		return name
	}
	sum := sha256.Sum256([]byte(name))
	return hex.EncodeToString(sum[:8])
}

// alert names the one firing alert of a notification: EventServiceDown with
// impact service_down about a Deployment, which the default policy rolls
// back.
type alert struct {
	Namespace, Deployment, Fingerprint string
	StartsAt                           time.Time
}

// notification returns the webhook body Alertmanager sends for a, built
// from the notification captured from a real Alertmanager in
// internal/webhook/testdata, with its first alert retargeted. groupKey
// tells notifications of the same alert apart, as Alertmanager's groups do.
func notification(t testing.TB, a alert, groupKey string) []byte {
	t.Helper()
	raw, err := os.ReadFile("../webhook/testdata/firing.json")
	if err != nil {
		t.Fatal(err)
	}
	var n map[string]any
	if err := json.Unmarshal(raw, &n); err != nil {
		t.Fatal(err)
	}
	first := n["alerts"].([]any)[0].(map[string]any)
	labels := first["labels"].(map[string]any)
	labels["namespace"], labels["deployment"] = a.Namespace, a.Deployment
	labels["pod"] = a.Deployment + "-0"
	first["fingerprint"] = fingerprint(a.Fingerprint)
	first["startsAt"] = a.StartsAt.UTC().Format(time.RFC3339Nano)
	n["alerts"] = []any{first}
	common := n["commonLabels"].(map[string]any)
	common["namespace"], common["deployment"] = a.Namespace, a.Deployment
	n["groupKey"] = groupKey
	out, err := json.Marshal(n)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// answer is the daemon's answer to one POST /webhook, or the transport
// error that took its place.
type answer struct {
	Code int
	Body string
	Err  error
	// The receipt of a 200.
	Accepted, Duplicates, Resolved, Refused int
}

func (a answer) String() string {
	if a.Err != nil {
		return "error: " + a.Err.Error()
	}
	return fmt.Sprintf("%d %s", a.Code, strings.TrimSpace(a.Body))
}

// post sends body to the daemon's webhook as Alertmanager does, with the
// bearer token.
func post(ctx context.Context, client *http.Client, d *daemon, body []byte) answer {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, d.url("/webhook"), bytes.NewReader(body))
	if err != nil {
		return answer{Err: err}
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "Alertmanager/0.31.1")
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := client.Do(req)
	if err != nil {
		return answer{Err: err}
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	a := answer{Code: resp.StatusCode, Body: string(raw), Err: err}
	if a.Code == http.StatusOK {
		var r struct{ Accepted, Duplicates, Resolved, Refused int }
		if err := json.Unmarshal(raw, &r); err == nil {
			a.Accepted, a.Duplicates, a.Resolved, a.Refused = r.Accepted, r.Duplicates, r.Resolved, r.Refused
		}
	}
	return a
}

// postUntilAccepted posts body again after every 503 or transport error, as
// Alertmanager retries, until it is answered otherwise or the deadline
// passes. It returns every answer, the last one deciding.
func postUntilAccepted(ctx context.Context, client *http.Client, d *daemon, body []byte, deadline time.Duration) []answer {
	return postToEither(ctx, client, []*daemon{d}, 0, body, deadline)
}

// postToEither is postUntilAccepted to replicas behind one Service: the
// first attempt goes to replicas[first], each retry to the next replica.
func postToEither(ctx context.Context, client *http.Client, replicas []*daemon, first int, body []byte, deadline time.Duration) []answer {
	ctx, cancel := context.WithTimeout(ctx, deadline)
	defer cancel()
	var answers []answer
	backoff := 50 * time.Millisecond
	for i := first; ; i++ {
		a := post(ctx, client, replicas[i%len(replicas)], body)
		answers = append(answers, a)
		if a.Err == nil && a.Code != http.StatusServiceUnavailable {
			return answers
		}
		select {
		case <-ctx.Done():
			return answers
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, time.Second)
	}
}

// Incidents as GET /api/v1/incidents and /api/v1/incidents/{id} show them.
type (
	summary struct {
		ID      string `json:"id"`
		Target  string `json:"target"`
		State   string `json:"state"`
		Actions int    `json:"actions"`
		Pages   int    `json:"pages"`
	}
	// incident is the daemon's own record type, as the API serves it.
	incident struct{ incidentpkg.Incident }
)

// applied counts the actions that changed the workload.
func (i *incident) applied() int {
	n := 0
	for _, a := range i.Actions {
		if a.Result != nil && a.Result.Outcome == actuator.OutcomeApplied {
			n++
		}
	}
	return n
}

// actions describes the actions in one line, for failure messages.
func (i *incident) actions() string {
	var parts []string
	for _, a := range i.Actions {
		switch {
		case a.Result != nil:
			parts = append(parts, fmt.Sprintf("%s rung %d %s %d->%d", a.Kind, a.Rung, a.Result.Outcome, a.Result.From, a.Result.To))
		default:
			parts = append(parts, fmt.Sprintf("%s rung %d failed (%s): %s", a.Kind, a.Rung, a.Reason, a.Error))
		}
	}
	return "[" + strings.Join(parts, ", ") + "]"
}

// api reads a path of the incidents API into v, with the read token.
func api(ctx context.Context, d *daemon, path string, v any) error {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, d.url(path), nil)
	req.Header.Set("Authorization", "Bearer "+apiToken)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: %d %s", path, resp.StatusCode, body)
	}
	return json.Unmarshal(body, v)
}

// waitResolved waits until d's incidents API lists at least n resolved
// incidents, failing at once if d exits, and returns the list.
func waitResolved(t *testing.T, d *daemon, n int, timeout time.Duration) []summary {
	t.Helper()
	var list []summary
	testenv.Eventually(t, timeout, fmt.Sprintf("%d incidents resolve", n), func(ctx context.Context) (bool, string) {
		if d.exited() {
			t.Fatalf("%s exited: %s", d.name, d.cmd.ProcessState)
		}
		if err := api(ctx, d, "/api/v1/incidents", &list); err != nil {
			return false, err.Error()
		}
		resolved := 0
		for _, s := range list {
			if s.State == "resolved" {
				resolved++
			}
		}
		return resolved >= n, fmt.Sprintf("%d incidents, %d resolved", len(list), resolved)
	})
	return list
}

// incidentsOf returns the incidents of the Deployment ns/name, in full.
func incidentsOf(ctx context.Context, d *daemon, ns, name string) ([]*incident, error) {
	var list []summary
	if err := api(ctx, d, "/api/v1/incidents", &list); err != nil {
		return nil, err
	}
	var out []*incident
	for _, s := range list {
		if s.Target != "Deployment "+ns+"/"+name {
			continue
		}
		var inc incident
		if err := api(ctx, d, "/api/v1/incidents/"+s.ID, &inc); err != nil {
			return nil, err
		}
		out = append(out, &inc)
	}
	return out, nil
}

// pager is an escalation webhook notifier's receiving end: it keeps every
// message, counted by incident, kind and level.
type pager struct {
	mu   sync.Mutex
	msgs []message
	hook func(message)
}

type message struct {
	Kind     string `json:"kind"`
	Level    string `json:"level"`
	Summary  string `json:"summary"`
	Incident struct {
		ID string `json:"id"`
	} `json:"incident"`
	At time.Time `json:"-"`
}

func (p *pager) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	var m message
	if err := json.NewDecoder(r.Body).Decode(&m); err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	m.At = time.Now()
	p.mu.Lock()
	p.msgs = append(p.msgs, m)
	hook := p.hook
	p.mu.Unlock()
	if hook != nil {
		hook(m)
	}
}

// onPage sets a function called with each message once it is counted and
// before it is answered; nil removes it.
func (p *pager) onPage(hook func(message)) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.hook = hook
}

// count returns how many messages of kind and level (any level when
// empty) concern the incident id.
func (p *pager) count(id, kind, level string) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	n := 0
	for _, m := range p.msgs {
		if m.Incident.ID == id && m.Kind == kind && (level == "" || m.Level == level) {
			n++
		}
	}
	return n
}

// escalation is an escalation section paging the pager at url: on-call one
// second after the incident starts, so that the page falls during
// verification, and the lead much later.
func escalation(url string) map[string]any {
	return map[string]any{
		"notifiers": []any{map[string]any{
			"name": "people", "type": "webhook", "retries": 0, "timeout": "5s",
			"webhook": map[string]any{"url": url},
		}},
		"announce": []any{"people"},
		"ladder": []any{
			map[string]any{"after": "1s", "level": "oncall", "notifiers": []any{"people"}},
			map[string]any{"after": "10m", "level": "lead", "notifiers": []any{"people"}},
		},
	}
}

// health is a service health endpoint per namespace, GET /health/{ns}: 500
// until the time set for the namespace, 200 after.
type health struct {
	mu      sync.Mutex
	healthy map[string]time.Time
}

func (h *health) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	ns := strings.TrimPrefix(r.URL.Path, "/health/")
	h.mu.Lock()
	at, ok := h.healthy[ns]
	h.mu.Unlock()
	if !ok || time.Now().Before(at) {
		http.Error(w, "still down", http.StatusInternalServerError)
	}
}

// healthyAt makes the namespace's service healthy from at.
func (h *health) healthyAt(ns string, at time.Time) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.healthy == nil {
		h.healthy = map[string]time.Time{}
	}
	h.healthy[ns] = at
}

// httpCheck is a verify section with an HTTP check against h's server at
// base: verification fails until the namespace's service is healthy.
func httpCheck(base string) map[string]any {
	return map[string]any{
		"pollInterval": "200ms",
		"http": []any{map[string]any{
			"name": "live", "url": base + "/health/{{.Namespace}}",
			"timeout": "1s", "retries": 150, "interval": "200ms",
		}},
	}
}

// codes counts answers by status code, transport errors under 0.
type codes struct {
	mu sync.Mutex
	n  map[int]int
}

func (c *codes) add(a answer) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.n == nil {
		c.n = map[int]int{}
	}
	if a.Err != nil {
		c.n[0]++
		return
	}
	c.n[a.Code]++
}

// all returns the counts.
func (c *codes) all() map[int]int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return maps.Clone(c.n)
}

func (c *codes) get(code int) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.n[code]
}

func (c *codes) String() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	keys := make([]int, 0, len(c.n))
	for k := range c.n {
		keys = append(keys, k)
	}
	sort.Ints(keys)
	var parts []string
	for _, k := range keys {
		name := fmt.Sprint(k)
		if k == 0 {
			name = "transport error"
		}
		parts = append(parts, fmt.Sprintf("%s: %d", name, c.n[k]))
	}
	return strings.Join(parts, ", ")
}

// isTimeout reports whether err is a client-side timeout.
func isTimeout(err error) bool {
	var ne interface{ Timeout() bool }
	return errors.Is(err, context.DeadlineExceeded) || (errors.As(err, &ne) && ne.Timeout())
}
