package verify

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/autorollbackd/autorollbackd/internal/policy"
	"github.com/autorollbackd/autorollbackd/internal/testenv"
)

// recorder is an httptest handler that answers from a script and records
// the requests it saw.
type recorder struct {
	mu       sync.Mutex
	paths    []string
	handlers []http.HandlerFunc // one per request; the last repeats
}

func (rec *recorder) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	rec.mu.Lock()
	n := len(rec.paths)
	rec.paths = append(rec.paths, r.Method+" "+r.URL.Path)
	h := rec.handlers[min(n, len(rec.handlers)-1)]
	rec.mu.Unlock()
	h(w, r)
}

func (rec *recorder) requests() []string {
	rec.mu.Lock()
	defer rec.mu.Unlock()
	return append([]string(nil), rec.paths...)
}

func status(code int, body string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(code)
		_, _ = io.WriteString(w, body)
	}
}

func TestHTTPCheck(t *testing.T) {
	// hang answers only once the client gives up (or the server closes).
	hang := func(w http.ResponseWriter, r *http.Request) { <-r.Context().Done() }
	other := httptest.NewServer(status(200, "elsewhere"))
	t.Cleanup(other.Close)

	tests := []struct {
		name     string
		check    HTTPCheck // URL is relative to the server: "{{server}}" is replaced
		handlers []http.HandlerFunc
		status   Status
		message  string   // "{{server}}" is replaced
		requests []string // requests the server saw
	}{
		{
			name:     "expected status passes",
			check:    HTTPCheck{URL: "{{server}}/health/live"},
			handlers: []http.HandlerFunc{status(200, "ok")},
			status:   StatusPass, message: "GET {{server}}/health/live returned 200 (attempt 1 of 4).",
			requests: []string{"GET /health/live"},
		},
		{
			name:     "url template is rendered with the workload",
			check:    HTTPCheck{URL: "{{server}}/{{.Kind}}/{{.Namespace}}/{{.Name}}/health/ready", Method: "HEAD"},
			handlers: []http.HandlerFunc{status(200, "")},
			status:   StatusPass, message: "HEAD {{server}}/Deployment/shop/web/health/ready returned 200 (attempt 1 of 4).",
			requests: []string{"HEAD /Deployment/shop/web/health/ready"},
		},
		{
			name:     "wrong status fails after the retries",
			check:    HTTPCheck{URL: "{{server}}/health/live", Retries: ptr(2), Interval: dur(10 * time.Millisecond)},
			handlers: []http.HandlerFunc{status(503, "down")},
			status:   StatusFail, message: "GET {{server}}/health/live returned 503, want 200 (attempt 3 of 3).",
			requests: []string{"GET /health/live", "GET /health/live", "GET /health/live"},
		},
		{
			name:     "retries until the service answers",
			check:    HTTPCheck{URL: "{{server}}/health/ready", Retries: ptr(3), Interval: dur(10 * time.Millisecond)},
			handlers: []http.HandlerFunc{status(503, ""), status(500, ""), status(200, "")},
			status:   StatusPass, message: "GET {{server}}/health/ready returned 200 (attempt 3 of 4).",
			requests: []string{"GET /health/ready", "GET /health/ready", "GET /health/ready"},
		},
		{
			name:     "body matching the regex passes",
			check:    HTTPCheck{URL: "{{server}}/api/v1/events", BodyRegex: `"events":\s*\[`, Retries: ptr(0)},
			handlers: []http.HandlerFunc{status(200, `{"events": [{"id": 1}]}`)},
			status:   StatusPass, message: `GET {{server}}/api/v1/events returned 200 and the body matches /"events":\s*\[/ (attempt 1 of 1).`,
			requests: []string{"GET /api/v1/events"},
		},
		{
			name:     "body not matching the regex fails",
			check:    HTTPCheck{URL: "{{server}}/api/v1/events", BodyRegex: `"events":\s*\[`, Retries: ptr(0)},
			handlers: []http.HandlerFunc{status(200, `{"error": "database unavailable"}`)},
			status:   StatusFail, message: `GET {{server}}/api/v1/events returned 200 but the body does not match /"events":\s*\[/ (attempt 1 of 1).`,
			requests: []string{"GET /api/v1/events"},
		},
		{
			name:     "another expected status",
			check:    HTTPCheck{URL: "{{server}}/gone", ExpectStatus: 404, Retries: ptr(0)},
			handlers: []http.HandlerFunc{status(404, "")},
			status:   StatusPass, message: "GET {{server}}/gone returned 404 (attempt 1 of 1).",
			requests: []string{"GET /gone"},
		},
		{
			name:     "no answer within the timeout fails",
			check:    HTTPCheck{URL: "{{server}}/slow", Timeout: dur(200 * time.Millisecond), Retries: ptr(1), Interval: dur(10 * time.Millisecond)},
			handlers: []http.HandlerFunc{hang},
			status:   StatusFail, message: "GET {{server}}/slow: no response within 200ms (attempt 2 of 2).",
			requests: []string{"GET /slow", "GET /slow"},
		},
		{
			name:  "redirects within the host are followed",
			check: HTTPCheck{URL: "{{server}}/old", Retries: ptr(0)},
			handlers: []http.HandlerFunc{
				func(w http.ResponseWriter, r *http.Request) { http.Redirect(w, r, "/new", http.StatusFound) },
				status(200, ""),
			},
			status: StatusPass, message: "GET {{server}}/old returned 200 (attempt 1 of 1).",
			requests: []string{"GET /old", "GET /new"},
		},
		{
			name:  "redirects to another host are not followed",
			check: HTTPCheck{URL: "{{server}}/old", Retries: ptr(0)},
			handlers: []http.HandlerFunc{
				func(w http.ResponseWriter, r *http.Request) { http.Redirect(w, r, other.URL+"/new", http.StatusFound) },
			},
			status: StatusFail, message: "GET {{server}}/old returned 302, want 200 (redirect to " + other.URL + "/new not followed) (attempt 1 of 1).",
			requests: []string{"GET /old"},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			rec := &recorder{handlers: tc.handlers}
			srv := httptest.NewServer(rec)
			defer srv.Close()
			check := tc.check
			check.Name = "probe"
			check.URL = strings.ReplaceAll(check.URL, "{{server}}", srv.URL)
			v, err := New(Options{Config: httpOnly(check)})
			if err != nil {
				t.Fatal(err)
			}
			results := v.Verify(t.Context(), policy.Ref{Kind: policy.KindDeployment, Namespace: "shop", Name: "web"})
			if len(results) != 1 {
				t.Fatalf("Verify() returned %d results, want 1", len(results))
			}
			r := results[0]
			want := strings.ReplaceAll(tc.message, "{{server}}", srv.URL)
			if r.Check != "http:probe" || r.Kind != "http" || r.Status != tc.status || r.Message != want {
				t.Errorf("result = %s %s %s %q\nwant     http:probe http %s %q", r.Check, r.Kind, r.Status, r.Message, tc.status, want)
			}
			if got := rec.requests(); strings.Join(got, ", ") != strings.Join(tc.requests, ", ") {
				t.Errorf("server saw %q, want %q", got, tc.requests)
			}
		})
	}
}

func TestHTTPCheckConnectionRefused(t *testing.T) {
	srv := httptest.NewServer(http.NotFoundHandler())
	url := srv.URL
	srv.Close() // nothing listens there any more
	v, err := New(Options{Config: httpOnly(HTTPCheck{Name: "live", URL: url + "/health/live", Retries: ptr(0)})})
	if err != nil {
		t.Fatal(err)
	}
	r := v.Verify(t.Context(), policy.Ref{Kind: policy.KindDeployment, Namespace: "shop", Name: "web"})[0]
	if r.Status != StatusFail || !strings.Contains(r.Message, "connection refused") {
		t.Errorf("result = %s %q, want fail naming the refused connection", r.Status, r.Message)
	}
}

func TestHTTPCheckCancelled(t *testing.T) {
	started := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		close(started)
		<-r.Context().Done()
	}))
	defer srv.Close()
	v, err := New(Options{Config: httpOnly(HTTPCheck{Name: "live", URL: srv.URL, Timeout: dur(time.Minute)})})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	go func() { <-started; cancel() }()
	r := v.Verify(ctx, policy.Ref{Kind: policy.KindDeployment, Namespace: "shop", Name: "web"})[0]
	if r.Status != StatusInconclusive || !strings.HasPrefix(r.Message, "Verification was cancelled during attempt 1 of 4: ") {
		t.Errorf("result = %s %q, want inconclusive: cancelled during attempt 1", r.Status, r.Message)
	}
}

// TestHTTPBearerToken reads the token from a real Secret in the test
// cluster; the server accepts only that token. The token appears in no
// message and no log line.
func TestHTTPBearerToken(t *testing.T) {
	c := testenv.Require(t)
	ns := c.Namespace(t)
	const token = "s3cr3t-t0ken"
	_, err := c.Client.CoreV1().Secrets(ns).Create(t.Context(), &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: "event-service-api"},
		Data:       map[string][]byte{"token": []byte(token + "\n")}, // as from a file: the newline is trimmed
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var authorized atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != "Bearer "+token {
			http.Error(w, "unauthorized", http.StatusUnauthorized)
			return
		}
		if r.URL.Path != "/api/v1/events" || r.URL.Query().Get("limit") != "1" {
			http.NotFound(w, r)
			return
		}
		authorized.Add(1)
		fmt.Fprint(w, `{"events":[{"id":"e1"}]}`)
	}))
	defer srv.Close()

	tests := []struct {
		name    string
		secret  SecretKeyRef
		status  Status
		message string
	}{
		{
			name:    "token from the Secret is sent",
			secret:  SecretKeyRef{Name: "event-service-api", Key: "token"},
			status:  StatusPass,
			message: fmt.Sprintf(`GET %s/api/v1/events?limit=1 returned 200 and the body matches /"events":\[/ (attempt 1 of 1).`, srv.URL),
		},
		{
			name:    "missing key is inconclusive",
			secret:  SecretKeyRef{Name: "event-service-api", Key: "other"},
			status:  StatusInconclusive,
			message: fmt.Sprintf(`GET %s/api/v1/events?limit=1 not sent: read bearer token: Secret %s/event-service-api has no key "other" (attempt 1 of 1).`, srv.URL, ns),
		},
		{
			name:    "missing Secret is inconclusive",
			secret:  SecretKeyRef{Name: "absent", Key: "token"},
			status:  StatusInconclusive,
			message: fmt.Sprintf(`GET %s/api/v1/events?limit=1 not sent: read bearer token from Secret %s/absent: secrets "absent" not found (attempt 1 of 1).`, srv.URL, ns),
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var logs bytes.Buffer
			logger := slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
			cfg := httpOnly(HTTPCheck{
				Name: "api", URL: srv.URL + "/api/v1/events?limit=1", BodyRegex: `"events":\[`,
				Retries: ptr(0), BearerTokenSecret: tc.secret, Scope: Scope{Namespaces: []string{ns}},
			})
			v, err := New(Options{Config: cfg, Client: c.Client, Logger: logger})
			if err != nil {
				t.Fatal(err)
			}
			r := v.Verify(t.Context(), policy.Ref{Kind: policy.KindDeployment, Namespace: ns, Name: "event-service"})[0]
			if r.Status != tc.status || r.Message != tc.message {
				t.Errorf("result = %s %q\nwant     %s %q", r.Status, r.Message, tc.status, tc.message)
			}
			if strings.Contains(r.Message, token) || strings.Contains(logs.String(), token) {
				t.Errorf("the token leaked into the message or the logs:\n%s\n%s", r.Message, logs.String())
			}
			if !strings.Contains(logs.String(), "verification check finished") {
				t.Errorf("no log line for the result:\n%s", logs.String())
			}
		})
	}
	if authorized.Load() != 1 {
		t.Errorf("server authorized %d requests, want 1", authorized.Load())
	}
}
