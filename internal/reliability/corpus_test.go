package reliability

import (
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/autorollbackd/autorollbackd/internal/testenv"
)

// unset, as a header value in a corpus entry, leaves the header out.
const unset = "<unset>"

// badInput is one entry of the corpus: a request and the status it must
// get.
type badInput struct {
	name   string
	method string // POST when empty
	path   string // /webhook when empty
	// header overrides the defaults (Authorization: Bearer <token>,
	// Content-Type: application/json); unset removes one.
	header map[string]string
	body   []byte
	// chunked sends the body without a Content-Length.
	chunked bool
	want    int
	// wantBody is a substring the answer must contain.
	wantBody string
}

// TestBadInputCorpus sends malformed, truncated, oversized, wrongly typed
// and hostile requests to the webhook and asserts the status of each: 4xx
// for what re-sending cannot fix, 200 for what is valid but names nothing
// the daemon may touch, and never a 5xx or a crash. A slowloris client that
// trickles its headers is cut off by the read-header timeout. Afterwards
// the daemon is healthy and still accepts a valid alert.
func TestBadInputCorpus(t *testing.T) {
	c := testenv.Require(t)
	ctx := context.Background()
	ns := c.Namespace(t)
	// Opted-in workloads: three that hostile but well-formed alerts name,
	// and one for the valid alert at the end.
	manyTwoRevisions(t, c.Client, ns, []string{"fp-victim", "name-victim", "note-victim", "final"}, 4)
	dir := t.TempDir()
	cfg := baseConfig(dir, ns, ns).with(config{"server": map[string]any{"readHeaderTimeout": "1s", "readTimeout": "3s"}})
	d := startDaemon(t, "autorollbackd", c.Kubeconfig, cfg.write(t, dir))
	d.waitLeading(t, 60*time.Second)

	corpus := badInputs(t, ns)
	client := &http.Client{Timeout: 20 * time.Second}
	var got codes
	for _, tc := range corpus {
		t.Run(tc.name, func(t *testing.T) {
			a := send(ctx, client, d, tc)
			got.add(a)
			if a.Err != nil {
				t.Fatalf("%s: no answer: %v; want %d", tc.name, a.Err, tc.want)
			}
			if a.Code != tc.want {
				t.Errorf("%s: answered %s, want %d", tc.name, clipped(a.String(), 300), tc.want)
			}
			if !strings.Contains(a.Body, tc.wantBody) {
				t.Errorf("%s: answer %q lacks %q", tc.name, clipped(a.Body, 300), tc.wantBody)
			}
			if d.exited() {
				t.Fatalf("the daemon exited after %s: %s", tc.name, d.cmd.ProcessState)
			}
		})
	}
	inputs := len(corpus)

	t.Run("slowloris headers", func(t *testing.T) {
		inputs++
		closed, err := slowHeaders(d.addr, 10*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("the server closed the slow connection after %s", closed.Round(10*time.Millisecond))
		if closed > 3*time.Second {
			t.Errorf("a client trickling its headers was cut off after %s, want within 3s (server.readHeaderTimeout: 1s)", closed)
		}
	})
	t.Run("slow body", func(t *testing.T) {
		inputs++
		code, after, err := slowBody(d.addr, 15*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("a body that stalls was answered %d after %s", code, after.Round(10*time.Millisecond))
		if after > 5*time.Second || (code != 0 && code != http.StatusBadRequest && code != http.StatusRequestTimeout) {
			t.Errorf("a stalled body: answered %d after %s, want 400 or 408 or a closed connection within 5s (server.readTimeout: 3s)", code, after)
		}
	})

	t.Run("15 KB alertname still rolls back", func(t *testing.T) {
		hostileAlertnameRollsBack(t, c, d, ns)
	})
	t.Run("records stay small", func(t *testing.T) {
		recordsStaySmall(t, c, ns)
	})

	// Then the daemon is healthy and still takes a valid alert.
	if d.exited() {
		t.Fatalf("the daemon exited: %s", d.cmd.ProcessState)
	}
	for _, path := range []string{"/healthz", "/readyz"} {
		if code := d.probe(ctx, path); code != http.StatusOK {
			t.Errorf("GET %s = %d after the corpus, want 200", path, code)
		}
	}
	body := notification(t, alert{Namespace: ns, Deployment: "final", Fingerprint: "corpus-final", StartsAt: time.Now().UTC()}, `{}:{alertname="EventServiceDown"}`)
	if a := post(ctx, client, d, body); a.Err != nil || a.Code != http.StatusOK || a.Accepted != 1 {
		t.Errorf("a valid alert after the corpus: %s, want 200 with the alert accepted", a)
	}
	if lines := d.grep("panic"); len(lines) > 0 {
		t.Errorf("the daemon logged a panic: %s", lines[0])
	}
	mem, err := memoryOf(d.pid())
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("inputs: %d tried (%s); the daemon is up, healthy and took a valid alert afterwards; %s", inputs, got.String(), mem)
}

// send sends one corpus entry.
func send(ctx context.Context, client *http.Client, d *daemon, tc badInput) answer {
	method, path := tc.method, tc.path
	if method == "" {
		method = http.MethodPost
	}
	if path == "" {
		path = "/webhook"
	}
	var body io.Reader = bytes.NewReader(tc.body)
	if tc.chunked {
		body = io.MultiReader(body) // hides the length: Transfer-Encoding: chunked
	}
	if tc.body == nil {
		body = nil
	}
	req, err := http.NewRequestWithContext(ctx, method, d.url(path), body)
	if err != nil {
		return answer{Err: err}
	}
	header := map[string]string{"Authorization": "Bearer " + token, "Content-Type": "application/json"}
	for k, v := range tc.header {
		header[k] = v
	}
	for k, v := range header {
		if v != unset {
			req.Header[k] = []string{v}
		}
	}
	resp, err := client.Do(req)
	if err != nil {
		return answer{Err: err}
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	return answer{Code: resp.StatusCode, Body: string(raw), Err: err}
}

// badInputs returns the corpus. Valid notifications in it name workloads
// the daemon may not touch (another namespace) or that do not exist, so
// nothing in the cluster changes.
func badInputs(t *testing.T, ns string) []badInput {
	valid := func(mutate func(n map[string]any, a map[string]any)) []byte {
		var n map[string]any
		if err := json.Unmarshal(notification(t, alert{Namespace: "elsewhere", Deployment: "svc", Fingerprint: "corpus", StartsAt: time.Now().UTC()}, "g"), &n); err != nil {
			t.Fatal(err)
		}
		a := n["alerts"].([]any)[0].(map[string]any)
		mutate(n, a)
		raw, err := json.Marshal(n)
		if err != nil {
			t.Fatal(err)
		}
		return raw
	}
	same := func(map[string]any, map[string]any) {}
	ok := valid(same)
	set := func(key string, v any) []byte {
		return valid(func(n, _ map[string]any) { n[key] = v })
	}
	setAlert := func(key string, v any) []byte {
		return valid(func(_, a map[string]any) { a[key] = v })
	}
	dropAlert := func(key string) []byte {
		return valid(func(_, a map[string]any) { delete(a, key) })
	}
	label := func(key string, v any) []byte {
		return valid(func(_, a map[string]any) { a["labels"].(map[string]any)[key] = v })
	}
	here := func(deployment string, mutate func(a map[string]any)) []byte {
		return valid(func(_, a map[string]any) {
			a["labels"].(map[string]any)["namespace"] = ns
			a["labels"].(map[string]any)["deployment"] = deployment
			a["fingerprint"] = fingerprint("corpus-" + deployment)
			if mutate != nil {
				mutate(a)
			}
		})
	}
	nested := func(depth int) []byte {
		inner := strings.Repeat("[", depth) + strings.Repeat("]", depth)
		return bytes.Replace(ok, []byte(`"version":"4"`), []byte(`"extra":`+inner+`,"version":"4"`), 1)
	}
	manyAlerts := valid(func(n, a map[string]any) {
		// 1,000 alerts, as few fields as Alertmanager sends, for workloads
		// that do not exist in the allowed namespace.
		list := make([]any, 0, 1000)
		for i := range 1000 {
			list = append(list, map[string]any{
				"status": "firing", "startsAt": a["startsAt"], "fingerprint": fingerprint(fmt.Sprintf("ghost-%d", i)),
				"labels": map[string]any{"alertname": "EventServiceDown", "impact": "service_down", "namespace": ns, "deployment": fmt.Sprintf("ghost-%d", i)},
			})
		}
		n["alerts"] = list
	})
	var gz bytes.Buffer
	zw := gzip.NewWriter(&gz)
	_, _ = zw.Write(ok)
	_ = zw.Close()
	invalidUTF8 := bytes.Replace(ok, []byte(`"summary":"`), []byte("\"summary\":\"\xff\xfe\xfd "), 1)
	tenMiB := bytes.Repeat([]byte("A"), 10<<20)

	return []badInput{
		// Credentials, checked before anything else.
		{name: "no Authorization", header: map[string]string{"Authorization": unset}, body: ok, want: 401},
		{name: "wrong bearer token", header: map[string]string{"Authorization": "Bearer not-the-token"}, body: ok, want: 401},
		{name: "Bearer without a token", header: map[string]string{"Authorization": "Bearer"}, body: ok, want: 401},
		{name: "Basic instead of Bearer", header: map[string]string{"Authorization": "Basic YWxlcnRtYW5hZ2VyOnNlY3JldA=="}, body: ok, want: 401},
		{name: "garbled Authorization bytes", header: map[string]string{"Authorization": "Bearer \x80\xfe\xff" + token}, body: ok, want: 401},
		{name: "64 KiB token", header: map[string]string{"Authorization": "Bearer " + strings.Repeat("t", 64<<10)}, body: ok, want: 401},
		{name: "scheme in lower case is fine", header: map[string]string{"Authorization": "bearer " + token}, body: ok, want: 200, wantBody: `"refused":1`},
		{name: "incidents API without credentials", method: "GET", path: "/api/v1/incidents", header: map[string]string{"Authorization": unset}, want: 401},
		// Sending alerts and reading incidents take different credentials.
		{name: "incidents API with the webhook token", method: "GET", path: "/api/v1/incidents", want: 401},
		{name: "webhook with the incidents API's read token", header: map[string]string{"Authorization": "Bearer " + apiToken}, body: ok, want: 401},
		// Method and content type.
		{name: "GET", method: "GET", want: 405},
		{name: "PUT", method: "PUT", body: ok, want: 405},
		{name: "no Content-Type", header: map[string]string{"Content-Type": unset}, body: ok, want: 415},
		{name: "text/plain", header: map[string]string{"Content-Type": "text/plain"}, body: ok, want: 415},
		{name: "form encoded", header: map[string]string{"Content-Type": "application/x-www-form-urlencoded"}, body: ok, want: 415},
		{name: "json-patch content type", header: map[string]string{"Content-Type": "application/json-patch+json"}, body: ok, want: 415},
		{name: "garbled content type", header: map[string]string{"Content-Type": "application/json;;;=&&"}, body: ok, want: 415},
		{name: "charset parameter is fine", header: map[string]string{"Content-Type": "application/json; charset=utf-8"}, body: ok, want: 200, wantBody: `"refused":1`},
		// Size.
		{name: "10 MiB body", body: tenMiB, want: 413},
		{name: "10 MiB body, chunked", body: tenMiB, chunked: true, want: 413},
		{name: "gzip-encoded body", header: map[string]string{"Content-Encoding": "gzip"}, body: gz.Bytes(), want: 400},
		// Not a notification.
		{name: "empty body", body: []byte{}, want: 400, wantBody: "empty body"},
		{name: "whitespace only", body: []byte(" \n\t "), want: 400},
		{name: "null", body: []byte("null"), want: 400},
		{name: "empty array", body: []byte("[]"), want: 400},
		{name: "array of notifications", body: append(append([]byte("["), ok...), ']'), want: 400},
		{name: "a string", body: []byte(`"firing"`), want: 400},
		{name: "a number", body: []byte("42"), want: 400},
		{name: "empty object", body: []byte("{}"), want: 400, wantBody: "version: missing"},
		{name: "truncated", body: ok[:len(ok)/2], want: 400},
		{name: "trailing garbage", body: append(append([]byte{}, ok...), []byte(" x")...), want: 400},
		{name: "byte order mark", body: append([]byte("\xef\xbb\xbf"), ok...), want: 400},
		{name: "invalid UTF-8 outside strings", body: append([]byte{0xff}, ok...), want: 400},
		{name: "nested 100,000 deep", body: nested(100000), want: 400},
		// Wrong version, fields and types.
		{name: "version 3", body: set("version", "3"), want: 400, wantBody: `version: got \"3\", want \"4\"`},
		{name: "version as a number", body: set("version", 4), want: 400},
		{name: "status exploded", body: set("status", "exploded"), want: 400},
		{name: "alerts empty", body: set("alerts", []any{}), want: 400},
		{name: "alerts null", body: set("alerts", nil), want: 400},
		{name: "alerts an object", body: set("alerts", map[string]any{}), want: 400},
		{name: "an alert null", body: set("alerts", []any{nil}), want: 400},
		{name: "alert without fingerprint", body: dropAlert("fingerprint"), want: 400, wantBody: "alerts[0].fingerprint: missing"},
		{name: "alert without startsAt", body: dropAlert("startsAt"), want: 400},
		{name: "startsAt not a time", body: setAlert("startsAt", "yesterday"), want: 400},
		{name: "startsAt a number", body: setAlert("startsAt", 1700000000), want: 400},
		{name: "labels an array", body: setAlert("labels", []any{"a"}), want: 400},
		{name: "labels empty", body: setAlert("labels", map[string]any{}), want: 400},
		{name: "label value a number", body: label("impact", 3), want: 400},
		{name: "truncatedAlerts negative", body: set("truncatedAlerts", -1), want: 400},
		// Valid, and hostile: answered 200, nothing touched.
		{name: "invalid UTF-8 inside a string", body: invalidUTF8, want: 200, wantBody: `"refused":1`},
		{name: "900 KB annotation", body: valid(func(_, a map[string]any) {
			a["annotations"].(map[string]any)["description"] = strings.Repeat("x", 900<<10)
		}), want: 200, wantBody: `"refused":1`},
		{name: "1,000 alerts for workloads that do not exist", body: manyAlerts, want: 200, wantBody: `"refused":1000`},
		{name: "workload name with path traversal and NUL", body: here("../../kube-system/\x00coredns", nil), want: 200, wantBody: `"refused":1`},
		{name: "a denied namespace", body: valid(func(_, a map[string]any) {
			a["labels"].(map[string]any)["namespace"] = "kube-system"
		}), want: 200, wantBody: `"refused":1`},
		// Well-formed but absurd alerts about an opted-in workload. An alert
		// that cannot be recorded as sent must not be answered "retry": it
		// is refused on its own, so the other alerts of the notification
		// still count. A fingerprint is 16 lower-case hex digits, as
		// Alertmanager writes it.
		{name: "300 KB fingerprint for an opted-in workload", body: here("fp-victim", func(a map[string]any) {
			a["fingerprint"] = strings.Repeat("f", 300<<10)
		}), want: 200, wantBody: `"refused":1`},
		{name: "fingerprint that is not hex for an opted-in workload", body: here("fp-victim", func(a map[string]any) {
			a["fingerprint"] = "not-a-fingerprint"
		}), want: 200, wantBody: `"refused":1`},
		{name: "upper-case hex fingerprint for an opted-in workload", body: here("fp-victim", func(a map[string]any) {
			a["fingerprint"] = "53BAD9C6811959EA"
		}), want: 200, wantBody: `"refused":1`},
		// Labels the policy decides on are kept exactly or not at all.
		{name: "400 KB alertname for an opted-in workload", body: here("fp-victim", func(a map[string]any) {
			a["labels"].(map[string]any)["alertname"] = strings.Repeat("N", 400<<10)
		}), want: 200, wantBody: `"refused":1`},
		// A long alert name within the limit is accepted, and must not stop
		// the rollback (see hostileAlertnameRollsBack).
		{name: "15 KB alertname for an opted-in workload", body: here("name-victim", func(a map[string]any) {
			a["labels"].(map[string]any)["alertname"] = strings.Repeat("N", 15<<10)
		}), want: 200, wantBody: `"accepted":1`},
		// Annotations are cut to size; the alert is recorded and acted on
		// (see recordsStaySmall).
		{name: "900 KB annotation for an opted-in workload", body: here("note-victim", func(a map[string]any) {
			a["annotations"].(map[string]any)["description"] = strings.Repeat("x", 900<<10)
		}), want: 200, wantBody: `"accepted":1`},
		{name: "resolved alert never seen", body: valid(func(n, a map[string]any) {
			n["status"], a["status"], a["endsAt"] = "resolved", "resolved", time.Now().UTC().Format(time.RFC3339)
		}), want: 200, wantBody: `"resolved":1`},
	}
}

// slowHeaders is a slowloris client: it sends a request line and then one
// header line every 200ms, and returns how long the server kept the
// connection open, up to limit.
func slowHeaders(addr string, limit time.Duration) (time.Duration, error) {
	conn, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		return 0, err
	}
	defer conn.Close()
	start := time.Now()
	closed := make(chan time.Duration, 1)
	go func() {
		_ = conn.SetReadDeadline(time.Now().Add(limit))
		_, _ = io.Copy(io.Discard, conn) // returns when the server closes
		closed <- time.Since(start)
	}()
	if _, err := io.WriteString(conn, "POST /webhook HTTP/1.1\r\nHost: "+addr+"\r\n"); err != nil {
		return 0, err
	}
	tick := time.NewTicker(200 * time.Millisecond)
	defer tick.Stop()
	for i := 0; time.Since(start) < limit; i++ {
		select {
		case after := <-closed:
			return after, nil
		case <-tick.C:
			// A failed write means the server is gone; the reader says when.
			_, _ = fmt.Fprintf(conn, "X-Slow-%d: %d\r\n", i, i)
		}
	}
	return 0, errors.New("the server never closed a connection whose headers never ended")
}

// slowBody sends headers promising a 1 KiB body, 10 bytes of it, and then
// nothing. It returns the status the server answered (0 when it closed
// the connection without an answer) and when.
func slowBody(addr string, limit time.Duration) (int, time.Duration, error) {
	conn, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		return 0, 0, err
	}
	defer conn.Close()
	start := time.Now()
	req := "POST /webhook HTTP/1.1\r\nHost: " + addr + "\r\nAuthorization: Bearer " + token +
		"\r\nContent-Type: application/json\r\nContent-Length: 1024\r\n\r\n{\"version\""
	if _, err := io.WriteString(conn, req); err != nil {
		return 0, 0, err
	}
	_ = conn.SetReadDeadline(time.Now().Add(limit))
	line, err := readLine(conn)
	after := time.Since(start)
	if err != nil {
		if ne, ok := err.(net.Error); ok && ne.Timeout() {
			return 0, after, fmt.Errorf("no answer and no close within %s", limit)
		}
		return 0, after, nil
	}
	var proto string
	var code int
	if _, err := fmt.Sscanf(line, "%s %d", &proto, &code); err != nil {
		return 0, after, fmt.Errorf("parse status line %q: %w", line, err)
	}
	return code, after, nil
}

// readLine reads one line from r, byte by byte (it is read once).
func readLine(r io.Reader) (string, error) {
	var b strings.Builder
	buf := make([]byte, 1)
	for b.Len() < 1024 {
		if _, err := r.Read(buf); err != nil {
			return b.String(), err
		}
		if buf[0] == '\n' {
			return strings.TrimRight(b.String(), "\r"), nil
		}
		b.WriteByte(buf[0])
	}
	return b.String(), nil
}

// hostileAlertnameRollsBack checks the incident of the corpus' 15 KB
// alert name: the policy says roll back, and the alert's name is no reason
// not to.
func hostileAlertnameRollsBack(t *testing.T, c *testenv.Cluster, d *daemon, ns string) {
	var inc *incident
	testenv.Eventually(t, 60*time.Second, "the incident leaves acting", func(ctx context.Context) (bool, string) {
		list, err := incidentsOf(ctx, d, ns, "name-victim")
		if err != nil || len(list) != 1 {
			return false, fmt.Sprint(len(list), " incidents ", err)
		}
		inc = list[0]
		return inc.State != "acting", string(inc.State) + " " + clipped(inc.actions(), 300)
	})
	if inc.applied() != 1 {
		t.Errorf("incident of the 400 KB alert name is %s with actions %s; want the rollback applied", inc.State, clipped(inc.actions(), 400))
	}
	if err := rolledBackOnce(context.Background(), c.Client, ns, "name-victim"); err != nil {
		t.Error(err)
	}
}

// recordsStaySmall checks the records the corpus left: the 900 KB
// annotation was recorded, cut, in a record of a few KiB, and no record is
// larger than the daemon's bound of 128 KiB.
func recordsStaySmall(t *testing.T, c *testenv.Cluster, ns string) {
	cms, err := c.Client.CoreV1().ConfigMaps(ns).List(context.Background(), metav1.ListOptions{LabelSelector: "autorollback.io/record=alert"})
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, cm := range cms.Items {
		size := 0
		for _, v := range cm.Data {
			size += len(v)
		}
		if size > 128<<10 {
			t.Errorf("record %s holds %d bytes, over 128 KiB", cm.Name, size)
		}
		if strings.Contains(cm.Data["record.json"], `"deployment":"note-victim"`) {
			found = true
			if size > 32<<10 {
				t.Errorf("the record of the 900 KB annotation holds %d bytes, want under 32 KiB", size)
			}
			t.Logf("the record of the 900 KB annotation holds %d bytes", size)
		}
	}
	if !found {
		t.Errorf("no record of the alert with the 900 KB annotation among %d records", len(cms.Items))
	}
}

// clipped shortens s to n bytes for a message.
func clipped(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "..."
}
