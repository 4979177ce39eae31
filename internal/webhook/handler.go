package webhook

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"mime"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Intake takes accepted notifications. Accept returns once the notification
// is durably accepted (recorded in the cluster) or acted on, and must be
// quick: Alertmanager waits for it. It returns an error wrapping
// ErrUnavailable, preferably one of its reasons (ErrQueueFull,
// ErrRecordsFull, ErrNotLeader, ErrNotReady, ErrClusterUnavailable), when the
// daemon cannot take work now, which answers 503 so that Alertmanager
// retries; any other error answers 500, which Alertmanager retries too.
// Neither body carries the error's text.
type Intake interface {
	Accept(ctx context.Context, n *Notification) (Receipt, error)
}

// IntakeFunc adapts a function to Intake.
type IntakeFunc func(ctx context.Context, n *Notification) (Receipt, error)

// Accept calls f.
func (f IntakeFunc) Accept(ctx context.Context, n *Notification) (Receipt, error) { return f(ctx, n) }

// ErrUnavailable is wrapped by Intake errors that mean "retry later".
var ErrUnavailable = errors.New("unavailable")

// Reasons the daemon cannot take work now. Each is an ErrUnavailable
// (errors.Is), and its fixed text is all a 503 tells the sender of the error
// that wraps it: the rest of an Intake error can carry the Kubernetes API
// server's messages, which only the log may see.
var (
	ErrNotReady           error = &unavailable{"not ready"}
	ErrNotLeader          error = &unavailable{"not the leader"}
	ErrQueueFull          error = &unavailable{"queue full"}
	ErrRecordsFull        error = &unavailable{"alert records full"}
	ErrClusterUnavailable error = &unavailable{"Kubernetes API unavailable"}
)

type unavailable struct{ reason string }

func (e *unavailable) Error() string        { return e.reason }
func (e *unavailable) Is(target error) bool { return target == ErrUnavailable }

// unavailableMsg is the body of a 503 for err, an ErrUnavailable.
func unavailableMsg(err error) string {
	if u, ok := errors.AsType[*unavailable](err); ok {
		return "cannot take alerts now (" + u.reason + "), retry"
	}
	return "cannot take alerts now, retry"
}

// Receipt summarises what happened to the alerts of a notification, for the
// response body and the notification's log line.
type Receipt struct {
	Accepted, Duplicates, Resolved, Refused int
	// Refusals says why alerts were refused, for the log; nil when Refuse
	// was never called. Compare receipts with Counts: two receipts with
	// refusals differ by this pointer.
	Refusals *Refusals
}

// Counts returns r without its Refusals: the counts alone, comparable with
// ==.
func (r Receipt) Counts() Receipt {
	r.Refusals = nil
	return r
}

// Refuse counts a refused alert: outcome and reason are the decision's (as
// "refuse" and "not_opted_in"), target the workload the alert names, or ""
// when it names none or when WantsTarget reported false.
func (r *Receipt) Refuse(outcome, reason, target string) {
	r.Refused++
	if r.Refusals == nil {
		r.Refusals = &Refusals{}
	}
	r.Refusals.add(outcome, reason, target)
}

// WantsTarget reports whether the next refused alert's target would be
// kept, so that the caller can spare naming it when it would not.
func (r *Receipt) WantsTarget() bool {
	return r.Refusals == nil || len(r.Refusals.targets) < MaxRefusedTargets
}

// MaxRefusedTargets is how many refused alerts' targets the notification's
// log line names; the rest are only counted, and logged one by one at debug
// level.
const MaxRefusedTargets = 3

// Refusals counts a notification's refused alerts by reason, in the order
// the reasons were first seen, and keeps the first MaxRefusedTargets
// targets they named.
type Refusals struct {
	reasons []reasonCount
	targets []string
}

type reasonCount struct {
	outcome, reason string
	n               int
}

func (s *Refusals) add(outcome, reason, target string) {
	// The reasons are a small bounded set: a scan beats a map.
	i := slices.IndexFunc(s.reasons, func(c reasonCount) bool { return c.outcome == outcome && c.reason == reason })
	if i < 0 {
		s.reasons = append(s.reasons, reasonCount{outcome: outcome, reason: reason})
		i = len(s.reasons) - 1
	}
	s.reasons[i].n++
	if target != "" && len(s.targets) < MaxRefusedTargets {
		s.targets = append(s.targets, target)
	}
}

// Count returns how many alerts were refused with outcome and reason.
func (s *Refusals) Count(outcome, reason string) int {
	if s == nil {
		return 0
	}
	for _, c := range s.reasons {
		if c.outcome == outcome && c.reason == reason {
			return c.n
		}
	}
	return 0
}

// Targets returns the first refused alerts' targets, at most
// MaxRefusedTargets.
func (s *Refusals) Targets() []string {
	if s == nil {
		return nil
	}
	return slices.Clone(s.targets)
}

// logAttrs returns the log attributes of s: refused_reasons, a group of
// counts keyed "outcome/reason", and refused_targets.
func (s *Refusals) logAttrs() []slog.Attr {
	if s == nil {
		return nil
	}
	counts := make([]slog.Attr, len(s.reasons))
	for i, c := range s.reasons {
		counts[i] = slog.Int(c.outcome+"/"+c.reason, c.n)
	}
	return []slog.Attr{{Key: "refused_reasons", Value: slog.GroupValue(counts...)},
		slog.String("refused_targets", strings.Join(s.targets, ", "))}
}

// retryAfter is the Retry-After of a 503, in seconds. Alertmanager retries
// on its own backoff; the header is for other senders and for humans.
const retryAfter = "10"

type handler struct {
	maxBody int64
	intake  Intake
	logger  *slog.Logger
	metrics *metrics
	inner   http.Handler
}

// NewHandler returns the handler of POST /webhook: authentication (before
// the body is read), method, content type, body size, decoding and
// validation, then intake. Each refusal is a one-line JSON error with a
// status chosen for Alertmanager, which retries 5xx and drops on 4xx.
// Metrics are registered on reg.
func NewHandler(cfg Config, auth *Authenticator, intake Intake, logger *slog.Logger, reg prometheus.Registerer) (http.Handler, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("new webhook handler: %w", err)
	}
	switch {
	case auth == nil:
		return nil, errors.New("new webhook handler: nil authenticator")
	case intake == nil:
		return nil, errors.New("new webhook handler: nil intake")
	case logger == nil:
		return nil, errors.New("new webhook handler: nil logger")
	case reg == nil:
		return nil, errors.New("new webhook handler: nil registerer")
	}
	m, err := newMetrics(reg, auth)
	if err != nil {
		return nil, fmt.Errorf("new webhook handler: %w", err)
	}
	h := &handler{
		maxBody: cfg.MaxBodyBytes,
		intake:  intake,
		logger:  logger.With("component", "webhook"),
		metrics: m,
	}
	h.inner = auth.Wrap(http.HandlerFunc(h.serve))
	return h, nil
}

func (h *handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	rec := &recorder{ResponseWriter: w}
	h.inner.ServeHTTP(rec, r)
	code := rec.code
	if code == 0 {
		code = http.StatusOK
	}
	h.metrics.requests.WithLabelValues(strconv.Itoa(code)).Inc()
	if rec.reason != "" {
		h.metrics.rejected.WithLabelValues(rec.reason).Inc()
	}
	if rec.sender != "" {
		h.metrics.senders.WithLabelValues(rec.sender, strconv.Itoa(code)).Inc()
	}
	h.metrics.duration.Observe(time.Since(start).Seconds())
}

func (h *handler) serve(w http.ResponseWriter, r *http.Request) {
	if rec, ok := w.(*recorder); ok {
		if s, ok := SenderFromContext(r.Context()); ok {
			rec.sender = s.Name
		}
	}
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		reject(w, r, h.logger, requestError(http.StatusMethodNotAllowed, reasonMethodNotAllowed, "method %s not allowed, want POST", clip(r.Method, 20)), nil)
		return
	}
	if e := checkContentType(r.Header.Get("Content-Type")); e != nil {
		reject(w, r, h.logger, e, nil)
		return
	}
	if r.ContentLength > h.maxBody {
		// Read the head only, to say in the log which group was lost.
		head, _ := io.ReadAll(io.LimitReader(r.Body, min(h.maxBody, maxHead)))
		h.tooLarge(w, r, head, r.Body)
		return
	}
	// MaxBytesReader gets the server's own ResponseWriter so that it can
	// close the connection instead of draining an oversized body.
	rw := w
	if rec, ok := w.(*recorder); ok {
		rw = rec.ResponseWriter
	}
	body, err := readBody(http.MaxBytesReader(rw, r.Body, h.maxBody), r.ContentLength)
	if err != nil {
		if _, ok := errors.AsType[*http.MaxBytesError](err); ok {
			h.tooLarge(w, r, body, r.Body)
			return
		}
		reject(w, r, h.logger, requestError(http.StatusBadRequest, reasonBadJSON, "read body: %v", err), nil)
		return
	}
	n, err := decodeBody(body)
	if err != nil {
		e, ok := errors.AsType[*RequestError](err)
		if !ok {
			e = requestError(http.StatusBadRequest, reasonBadJSON, "%v", err)
		}
		reject(w, r, h.logger, e, nil)
		return
	}

	n.Sender, _ = SenderFromContext(r.Context())
	n.Sender.Namespaces = slices.Clone(n.Sender.Namespaces)

	h.metrics.notifications.WithLabelValues(n.Status).Inc()
	for _, a := range n.Alerts {
		h.metrics.alerts.WithLabelValues(a.Status).Inc()
	}
	if n.TruncatedAlerts > 0 {
		h.logger.Warn("Alertmanager truncated the notification (max_alerts in its webhook_configs); the alerts past the limit are not seen",
			"truncated_alerts", n.TruncatedAlerts, "group_key", n.GroupKey, "remote", r.RemoteAddr)
	}

	receipt, err := h.intake.Accept(r.Context(), n)
	switch {
	case errors.Is(err, ErrUnavailable):
		w.Header().Set("Retry-After", retryAfter)
		reject(w, r, h.logger, requestError(http.StatusServiceUnavailable, reasonUnavailable, "%s", unavailableMsg(err)), err)
		return
	case err != nil:
		// The sender learns nothing of the daemon's insides; the log does.
		reject(w, r, h.logger, requestError(http.StatusInternalServerError, reasonInternal, "internal error"), err)
		return
	}
	// One line per notification, whatever its size: the intake logs each
	// refused alert only at debug level. This line is written for every
	// notification, so it goes to the handler as a record of attributes:
	// the Logger's methods would also take the caller's stack, which the
	// daemon's log does not show.
	if h.logger.Enabled(r.Context(), slog.LevelInfo) {
		line := slog.NewRecord(time.Now(), slog.LevelInfo, "notification accepted", 0)
		line.AddAttrs(slog.String("group_key", n.GroupKey), slog.String("sender", n.Sender.Name), slog.String("status", n.Status),
			slog.Int("alerts", len(n.Alerts)), slog.Int("accepted", receipt.Accepted), slog.Int("duplicates", receipt.Duplicates),
			slog.Int("resolved", receipt.Resolved), slog.Int("refused", receipt.Refused))
		line.AddAttrs(receipt.Refusals.logAttrs()...)
		// As Logger's methods do, a failure to write the log is not the
		// sender's concern.
		_ = h.logger.Handler().Handle(r.Context(), line)
	}
	writeJSON(w, http.StatusOK, acceptedBody{
		Status:     "accepted",
		Accepted:   receipt.Accepted,
		Duplicates: receipt.Duplicates,
		Resolved:   receipt.Resolved,
		Refused:    receipt.Refused,
	})
}

// readBody reads r to its end. A body whose length the request gives, as
// Alertmanager's do, is read into one buffer of that size; io.ReadAll
// would grow its buffer from 512 bytes, allocating about twice the body.
// The buffer made before reading is at most maxPresized: a sender that
// claims a large body must send it before the daemon holds its size.
func readBody(r io.Reader, length int64) ([]byte, error) {
	if length < 0 {
		return io.ReadAll(r)
	}
	// ReadFrom wants bytes.MinRead free bytes for each read, the last one
	// (at the end of the body) included.
	b := bytes.NewBuffer(make([]byte, 0, min(length, maxPresized)+bytes.MinRead))
	_, err := b.ReadFrom(r)
	return b.Bytes(), err
}

// maxPresized bounds the buffer readBody makes before reading: a
// notification of 100 alerts takes about 67 KB.
const maxPresized = 256 << 10

// maxHead bounds what is read of a refused body to describe it.
const maxHead = 64 << 10

// maxGroupKeyScan bounds how much of a refused body is scanned for its
// group key.
const maxGroupKeyScan = 64 << 20

// tooLarge refuses a body over the limit with 413. Alertmanager does not
// retry a 4xx, so the group is lost: the log says which one. The receiver,
// the status and the first alert's labels come from head, the start of the
// body. Alertmanager writes groupKey after the alerts, so the rest of the
// body is scanned for it, up to maxGroupKeyScan bytes in all, in constant
// memory: nothing of it is kept but the key.
func (h *handler) tooLarge(w http.ResponseWriter, r *http.Request, head []byte, rest io.Reader) {
	var attrs []any
	if r.ContentLength >= 0 {
		attrs = append(attrs, "content_length", r.ContentLength)
	}
	described := describeHead(head[:min(len(head), maxHead)])
	attrs = append(attrs, described...)
	if !slices.Contains(described, any("group_key")) {
		budget := max(0, maxGroupKeyScan-int64(len(head)))
		if key, ok := scanGroupKey(io.MultiReader(bytes.NewReader(head), io.LimitReader(rest, budget))); ok {
			attrs = append(attrs, "group_key", clip(key, 200))
		}
	}
	reject(w, r, h.logger, requestError(http.StatusRequestEntityTooLarge, reasonTooLarge, "body larger than %d bytes", h.maxBody), nil, attrs...)
}

// describeHead returns, as log attributes, the groupKey, receiver and status
// of the notification that head starts, and the alertname and namespace of
// its first alert, as far as head has them.
func describeHead(head []byte) []any {
	var attrs []any
	dec := json.NewDecoder(bytes.NewReader(head))
	if t, err := dec.Token(); err != nil || t != json.Delim('{') {
		return nil
	}
	for dec.More() {
		t, err := dec.Token()
		if err != nil {
			return attrs
		}
		key, _ := t.(string)
		switch key {
		case "groupKey", "receiver", "status":
			var v string
			if dec.Decode(&v) != nil {
				return attrs
			}
			name := key
			if key == "groupKey" {
				name = "group_key"
			}
			attrs = append(attrs, name, clip(v, 200))
		case "alerts":
			if t, err := dec.Token(); err != nil || t != json.Delim('[') || !dec.More() {
				return attrs
			}
			var first struct{ Labels map[string]string }
			if dec.Decode(&first) != nil {
				return attrs
			}
			for _, l := range []string{"alertname", "namespace"} {
				if v, ok := first.Labels[l]; ok {
					attrs = append(attrs, l, clip(v, 200))
				}
			}
			// The other alerts are of no interest and likely cut off.
			return attrs
		default:
			var skip json.RawMessage
			if dec.Decode(&skip) != nil {
				return attrs
			}
		}
	}
	return attrs
}

func checkContentType(ct string) *RequestError {
	if ct == "" {
		return requestError(http.StatusUnsupportedMediaType, reasonUnsupportedMedia, "content type: missing, want application/json")
	}
	if mt, _, err := mime.ParseMediaType(ct); err != nil || mt != "application/json" {
		return requestError(http.StatusUnsupportedMediaType, reasonUnsupportedMedia, "content type: got %s, want application/json", strconv.Quote(clip(ct, 60)))
	}
	return nil
}

type acceptedBody struct {
	Status     string `json:"status"`
	Accepted   int    `json:"accepted"`
	Duplicates int    `json:"duplicates"`
	Resolved   int    `json:"resolved"`
	Refused    int    `json:"refused"`
}

type errorBody struct {
	Error string `json:"error"`
}

// reject logs a refused webhook request, with attrs, and answers it with
// e. cause, when not nil, is logged instead of e: it may say more than the
// sender should see.
func reject(w http.ResponseWriter, r *http.Request, logger *slog.Logger, e *RequestError, cause error, attrs ...any) {
	refuse(w, r, logger, "webhook request refused", e, cause, attrs...)
}

// refuse is reject with the log message msg. The log names the sender when
// the request was authenticated.
func refuse(w http.ResponseWriter, r *http.Request, logger *slog.Logger, msg string, e *RequestError, cause error, attrs ...any) {
	if rec, ok := w.(*recorder); ok {
		rec.reason = e.Reason
	}
	level := slog.LevelWarn
	switch {
	case e.Status == http.StatusMethodNotAllowed:
		level = slog.LevelInfo
	case e.Status == http.StatusInternalServerError:
		level = slog.LevelError
	}
	var logged error = e
	if cause != nil {
		logged = cause
	}
	base := []any{"err", logged, "reason", e.Reason, "code", e.Status, "remote", r.RemoteAddr}
	if s, ok := SenderFromContext(r.Context()); ok {
		base = append(base, "sender", s.Name)
	}
	logger.Log(r.Context(), level, msg, append(base, attrs...)...)
	writeJSON(w, e.Status, errorBody{Error: e.Msg})
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		// Unreachable with the package's flat structs of strings and ints.
		code, b = http.StatusInternalServerError, []byte(`{"error":"internal error"}`)
	}
	// Assigned whole, their keys already canonical: every answer sets them.
	h := w.Header()
	h["Content-Type"], h["X-Content-Type-Options"] = jsonContentType, noSniff
	w.WriteHeader(code)
	_, _ = w.Write(append(b, '\n'))
}

// The values of writeJSON's headers; net/http only reads them.
var (
	jsonContentType = []string{"application/json"}
	noSniff         = []string{"nosniff"}
)

// recorder remembers the status code, the refusal reason and the sender
// for metrics.
type recorder struct {
	http.ResponseWriter
	code   int
	reason string
	sender string
}

func (r *recorder) WriteHeader(code int) {
	if r.code == 0 {
		r.code = code
	}
	r.ResponseWriter.WriteHeader(code)
}

func (r *recorder) Write(b []byte) (int, error) {
	if r.code == 0 {
		r.code = http.StatusOK
	}
	return r.ResponseWriter.Write(b)
}

// Unwrap lets http.ResponseController reach the server's ResponseWriter.
func (r *recorder) Unwrap() http.ResponseWriter { return r.ResponseWriter }

// scanGroupKey returns the value of the last "groupKey" key in the JSON
// text r holds, which need not be complete. Inside a JSON string a quote is
// escaped, so the bytes "groupKey":" occur only as a key; the last one is
// the notification's own, which Alertmanager writes after the alerts and
// their labels, where a label of that name could also be.
func scanGroupKey(r io.Reader) (string, bool) {
	const pattern = `"groupKey":"`
	var (
		buf      = make([]byte, 32<<10)
		matched  int  // bytes of pattern matched so far
		inValue  bool // reading a value after pattern
		escaped  bool
		value    []byte
		last     []byte
		found    bool
		maxValue = 1 << 10
	)
	for {
		n, err := r.Read(buf)
		for _, c := range buf[:n] {
			if inValue {
				switch {
				case escaped:
					escaped = false
				case c == '\\':
					escaped = true
				case c == '"':
					inValue = false
					last, found = append(last[:0], value...), true
					continue
				}
				if len(value) < maxValue {
					value = append(value, c)
				}
				continue
			}
			switch {
			case c == pattern[matched]:
				matched++
				if matched == len(pattern) {
					matched, inValue, value = 0, true, value[:0]
				}
			case c == '"':
				matched = 1
			default:
				matched = 0
			}
		}
		if err != nil {
			break
		}
	}
	if !found {
		return "", false
	}
	var key string
	if json.Unmarshal(append(append([]byte{'"'}, last...), '"'), &key) != nil {
		// Cut inside an escape: keep what is readable.
		return strings.ToValidUTF8(string(last), "?"), true
	}
	return key, true
}
