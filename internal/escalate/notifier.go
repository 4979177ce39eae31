package escalate

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode"

	"k8s.io/client-go/tools/record"
	"k8s.io/utils/clock"

	"github.com/autorollbackd/autorollbackd/internal/kubeclient"
	"github.com/autorollbackd/autorollbackd/internal/secretfile"
)

// Notifier delivers messages. Notify returns nil when the message was
// delivered. It retries transient failures itself, within its retry budget
// and ctx, and its error never contains a secret.
type Notifier interface {
	Notify(ctx context.Context, m Message) error
}

// sender makes one delivery attempt. ctx carries the attempt's deadline and,
// for HTTP senders, the *attempt the transport fills in.
type sender interface {
	send(ctx context.Context, m Message) error
}

// buildEnv is what a notifier type may use to build its sender.
type buildEnv struct {
	http   *http.Client // records each attempt's response (recordingTransport)
	events record.EventRecorder
	cache  WorkloadCache
	client kubeclient.Interface
	clock  clock.PassiveClock
	logger *slog.Logger
	// reloads counts the re-reads of the notifiers' secret files.
	reloads *secretfile.Reloads
}

// notifierType is one entry of the registry of notifier types.
type notifierType struct {
	// block is the config block the type requires ("" for none).
	block string
	// check validates the type's own keys; errors are *KeyError with keys
	// relative to the notifier (for example "pagerduty.severity"). It does
	// not read files.
	check func(NotifierConfig) []error
	// build makes the sender. key names the notifier in errors
	// (notifiers[i]); secrets are the ones it reads from files, whose
	// values are kept out of every error.
	build func(key string, nc NotifierConfig, env buildEnv) (s sender, secrets []*fileSecret, err error)
}

// notifierTypes is the registry of notifier types: an unknown type is a
// configuration error, never a fallback. typeNames lists the same names in
// the order error messages give them.
var (
	notifierTypes = map[string]notifierType{
		"alertmanager": {block: "alertmanager", check: checkAlertmanager, build: newAlertmanager},
		"pagerduty":    {block: "pagerduty", check: checkPagerDuty, build: newPagerDuty},
		"slack":        {block: "slack", check: checkSlack, build: newSlack},
		"webhook":      {block: "webhook", check: checkWebhook, build: newWebhook},
		"events":       {build: newEvents},
	}
	typeNames = []string{"alertmanager", "pagerduty", "slack", "webhook", "events"}
)

// Retry timing. Backoff doubles from backoffBase up to backoffMax; a
// Retry-After header wins over the backoff but is capped at maxRetryAfter so
// that one rate-limited notifier cannot hold a page for long.
const (
	backoffBase   = time.Second
	backoffMax    = 30 * time.Second
	maxRetryAfter = 2 * time.Minute
)

// backoff returns the wait before retry n (1 for the first retry).
func backoff(n int) time.Duration {
	d := backoffBase
	for i := 1; i < n && d < backoffMax; i++ {
		d *= 2
	}
	return min(d, backoffMax)
}

// attempt is what the transport saw of one delivery attempt.
type attempt struct {
	reached    bool   // a request was handed to the transport
	status     int    // HTTP status of the last response, 0 when none
	statusLine string // e.g. "503 Service Unavailable"
	retryAfter string // the Retry-After header of the last response
	body       []byte // the first bytes of an error response's body
}

type attemptKey struct{}

func withAttempt(ctx context.Context, a *attempt) context.Context {
	return context.WithValue(ctx, attemptKey{}, a)
}

func attemptFrom(ctx context.Context) *attempt {
	a, _ := ctx.Value(attemptKey{}).(*attempt)
	return a
}

// maxErrorBody bounds how much of an error response is kept for messages.
const maxErrorBody = 512

// recordingTransport records, in the request context's *attempt, the status,
// Retry-After and start of the body of each response. The client libraries
// (go-pagerduty, slack-go) hide those; retries and error messages need them.
type recordingTransport struct{ base http.RoundTripper }

func (t recordingTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	resp, err := t.base.RoundTrip(req)
	a := attemptFrom(req.Context())
	if a == nil {
		return resp, err
	}
	*a = attempt{reached: true} // the last response wins (redirects)
	if resp == nil {
		return resp, err
	}
	a.status, a.statusLine = resp.StatusCode, resp.Status
	a.retryAfter = resp.Header.Get("Retry-After")
	if resp.StatusCode >= 400 && resp.Body != nil {
		buf := make([]byte, maxErrorBody)
		n, _ := io.ReadFull(resp.Body, buf)
		a.body = buf[:n]
		resp.Body = readCloser{io.MultiReader(bytes.NewReader(buf[:n]), resp.Body), resp.Body}
	}
	return resp, err
}

type readCloser struct {
	io.Reader
	io.Closer
}

// wrapHTTPClient returns a copy of c whose transport records attempts.
func wrapHTTPClient(c *http.Client) *http.Client {
	if c == nil {
		c = &http.Client{}
	}
	out := *c
	base := c.Transport
	if base == nil {
		base = http.DefaultTransport
	}
	out.Transport = recordingTransport{base: base}
	return &out
}

// retryable reports whether the attempt failed transiently: the request went
// out and got no answer (network error, attempt timeout), or the answer was
// 408, 429 or 5xx. Anything else (a 4xx, a request that could not be built)
// would fail the same way again.
func (a *attempt) retryable() bool {
	switch {
	case a.status == 0:
		return a.reached
	case a.status == http.StatusRequestTimeout, a.status == http.StatusTooManyRequests:
		return true
	default:
		return a.status >= 500
	}
}

// wait returns the Retry-After of a 429 or 503 answer, capped at
// maxRetryAfter, and false when there is none.
func (a *attempt) wait(now time.Time) (time.Duration, bool) {
	if a.status != http.StatusTooManyRequests && a.status != http.StatusServiceUnavailable {
		return 0, false
	}
	d, ok := parseRetryAfter(a.retryAfter, now)
	if !ok {
		return 0, false
	}
	return min(d, maxRetryAfter), true
}

// parseRetryAfter reads delay-seconds or an HTTP date (RFC 9110 10.2.3).
func parseRetryAfter(v string, now time.Time) (time.Duration, bool) {
	v = strings.TrimSpace(v)
	if v == "" {
		return 0, false
	}
	if n, err := strconv.ParseInt(v, 10, 64); err == nil {
		if n < 0 {
			return 0, false
		}
		if n > int64(maxRetryAfter/time.Second) {
			return maxRetryAfter, true
		}
		return time.Duration(n) * time.Second, true
	}
	t, err := http.ParseTime(v)
	if err != nil {
		return 0, false
	}
	return max(t.Sub(now), 0), true
}

// DeliveryError is a failed delivery to one notifier. Its message names the
// notifier and the last failure and never contains a secret; it unwraps
// only to context.Canceled or context.DeadlineExceeded when the caller's ctx
// ended the delivery.
type DeliveryError struct {
	Notifier string
	Type     string
	Kind     MessageKind
	Attempts int
	// Status is the HTTP status of the last answer, 0 when there was none.
	Status int
	msg    string
	ctxErr error
}

func (e *DeliveryError) Error() string { return e.msg }
func (e *DeliveryError) Unwrap() error { return e.ctxErr }

// notifier is a Notifier: it wraps one sender with the attempt timeout,
// retries, metrics, logging and secret redaction every type shares.
type notifier struct {
	name, typ string
	s         sender
	timeout   time.Duration
	retries   int
	inline    []string      // secrets written in the configuration
	files     []*fileSecret // secrets read from files
	sleep     func(context.Context, time.Duration) error
	clock     clock.PassiveClock
	m         *metrics
	log       *slog.Logger
}

var _ Notifier = (*notifier)(nil)

// Notify delivers m, retrying transient failures up to n.retries times.
func (n *notifier) Notify(ctx context.Context, m Message) error {
	err := n.deliver(ctx, m)
	result := "success"
	if err != nil {
		result = "failure"
	}
	n.m.notifications.WithLabelValues(n.name, n.typ, string(m.Kind), result).Inc()
	return err
}

func (n *notifier) deliver(ctx context.Context, m Message) error {
	for try := 1; ; try++ {
		a := &attempt{}
		actx, cancel := context.WithTimeout(withAttempt(ctx, a), n.timeout)
		start := time.Now()
		err := n.s.send(actx, m)
		cancel()
		n.m.attempts.WithLabelValues(n.name, n.typ).Inc()
		n.m.duration.WithLabelValues(n.typ).Observe(time.Since(start).Seconds())
		if err == nil {
			return nil
		}
		what := n.describe(err, a)
		fail := func(format string, args ...any) error {
			return &DeliveryError{
				Notifier: n.name, Type: n.typ, Kind: m.Kind, Attempts: try, Status: a.status,
				msg:    fmt.Sprintf("notifier %q (%s): %s (%s)", n.name, n.typ, what, fmt.Sprintf(format, args...)),
				ctxErr: ctx.Err(),
			}
		}
		switch {
		case ctx.Err() != nil:
			return fail("%v after %s", ctx.Err(), plural(try, "attempt"))
		case !a.retryable():
			return fail("not retried")
		case try > n.retries:
			return fail("gave up after %s", plural(try, "attempt"))
		}
		wait, ok := a.wait(n.clock.Now())
		if !ok {
			wait = backoff(try)
		}
		if dl, ok := ctx.Deadline(); ok && time.Until(dl) < wait {
			return fail("next retry in %s would pass the deadline; gave up after %s", wait, plural(try, "attempt"))
		}
		n.log.Warn("notification attempt failed; retrying",
			"kind", string(m.Kind), "level", m.Level, "incident", m.Incident.ID,
			"attempt", try, "retry_in", wait, "err", what)
		if err := n.sleep(ctx, wait); err != nil {
			return fail("%v while waiting to retry after %s", err, plural(try, "attempt"))
		}
	}
}

// describe renders the failure of one attempt without secrets: the HTTP
// answer when there was one (status and the start of the body), else the
// error with any URL removed (net/http quotes the request URL, which for
// Slack is the secret).
func (n *notifier) describe(err error, a *attempt) string {
	var msg string
	_, perURL := errors.AsType[postErrors](err)
	switch {
	case perURL:
		msg = err.Error()
	case a.status >= 300:
		msg = "HTTP " + a.statusLine
		if b := oneLine(string(a.body)); b != "" {
			msg += ": " + b
		}
	case errors.Is(err, context.DeadlineExceeded):
		msg = fmt.Sprintf("attempt timed out after %s", n.timeout)
	default:
		if ue, ok := errors.AsType[*url.Error](err); ok {
			msg = "request failed: " + ue.Err.Error()
		} else {
			msg = err.Error()
		}
	}
	// A copy: deliveries through one notifier run at once.
	secrets := slices.Clone(n.inline)
	for _, f := range n.files {
		secrets = append(secrets, f.secrets()...)
	}
	return redact(msg, secrets)
}

// redact replaces every secret, also in its URL-escaped forms, by <secret>.
func redact(s string, secrets []string) string {
	for _, sec := range secrets {
		if sec == "" {
			continue
		}
		for _, form := range []string{sec, url.QueryEscape(sec), url.PathEscape(sec)} {
			s = strings.ReplaceAll(s, form, "<secret>")
		}
	}
	return s
}

// oneLine makes a response body fit on one log line.
func oneLine(s string) string {
	s = strings.Map(func(r rune) rune {
		if unicode.IsSpace(r) {
			return ' '
		}
		if !unicode.IsPrint(r) {
			return -1
		}
		return r
	}, s)
	return truncate(strings.Join(strings.Fields(s), " "), 200)
}

func plural(n int, word string) string {
	if n == 1 {
		return "1 " + word
	}
	return strconv.Itoa(n) + " " + word + "s"
}

// sleeper waits on c when it can make timers (clock.Clock, for example a
// fake clock in tests), else on the real clock.
func sleeper(c clock.PassiveClock) func(context.Context, time.Duration) error {
	timers, ok := c.(clock.Clock)
	return func(ctx context.Context, d time.Duration) error {
		if d <= 0 {
			return ctx.Err()
		}
		var ch <-chan time.Time
		var stop func() bool
		if ok {
			t := timers.NewTimer(d)
			ch, stop = t.C(), t.Stop
		} else {
			t := time.NewTimer(d)
			ch, stop = t.C, t.Stop
		}
		defer stop()
		select {
		case <-ch:
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}
