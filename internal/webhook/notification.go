package webhook

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	jsonv1 "github.com/go-json-experiment/json/v1"
	"github.com/prometheus/alertmanager/template"
)

// payloadVersion is the only webhook payload version Decode accepts.
const payloadVersion = "4"

// Notification is Alertmanager's webhook payload, version "4". It mirrors
// notify/webhook.Message, which is not imported because that package pulls
// every Alertmanager integration into the binary.
type Notification struct {
	template.Data
	Version         string `json:"version"`
	GroupKey        string `json:"groupKey"`
	TruncatedAlerts uint64 `json:"truncatedAlerts"`
	// Sender is who sent the notification, from the credential that
	// authenticated the request; never from the body.
	Sender Sender `json:"-"`
}

// Sender is an authenticated sender of notifications.
type Sender struct {
	// Name is the sender's name in webhook.auth.senders, SenderDefault for
	// the single credential of webhook.auth, SenderAnonymous with
	// authentication off.
	Name string
	// Namespaces are the namespaces the sender may send alerts about; nil
	// or empty means any (SenderDefault, SenderAnonymous, or a sender with
	// namespaces: ["*"]).
	Namespaces []string
}

// Allows reports whether the sender may send alerts about namespace.
func (s Sender) Allows(namespace string) bool {
	return len(s.Namespaces) == 0 || slices.Contains(s.Namespaces, namespace)
}

// Rejection reasons: the values of RequestError.Reason and of the reason
// label of autorollbackd_webhook_rejected_total.
const (
	reasonBadJSON          = "bad_json"
	reasonBadVersion       = "bad_version"
	reasonMissingField     = "missing_field"
	reasonInvalidField     = "invalid_field"
	reasonTooLarge         = "too_large"
	reasonUnsupportedMedia = "unsupported_media_type"
	reasonMethodNotAllowed = "method_not_allowed"
	reasonUnauthorized     = "unauthorized"
	reasonUnavailable      = "unavailable"
	reasonInternal         = "internal"
)

var reasons = []string{
	reasonBadJSON, reasonBadVersion, reasonMissingField, reasonInvalidField, reasonTooLarge,
	reasonUnsupportedMedia, reasonMethodNotAllowed, reasonUnauthorized, reasonUnavailable, reasonInternal,
}

// RequestError is a refused webhook request: the HTTP status to answer, a
// bounded Reason for metrics (bad_json, bad_version, missing_field,
// invalid_field, too_large, unsupported_media_type, method_not_allowed,
// unauthorized, unavailable, internal) and a one-line Msg for the sender.
type RequestError struct {
	Status int
	Reason string
	Msg    string
}

func (e *RequestError) Error() string { return e.Msg }

// maxMsgLen bounds RequestError.Msg: parts of it echo the request.
const maxMsgLen = 200

func requestError(status int, reason, format string, args ...any) *RequestError {
	return &RequestError{Status: status, Reason: reason, Msg: oneLine(fmt.Sprintf(format, args...), maxMsgLen)}
}

// Decode reads and validates one notification from r, which the caller has
// already size-limited (an *http.MaxBytesError from r becomes 413). Every
// error is a *RequestError with a 4xx status whose message names the
// offending field, for example `alerts[2].startsAt: missing`. Unknown fields
// are ignored, as Alertmanager may add some.
func Decode(r io.Reader) (*Notification, error) {
	body, err := io.ReadAll(r)
	if err != nil {
		if mbe, ok := errors.AsType[*http.MaxBytesError](err); ok {
			return nil, requestError(http.StatusRequestEntityTooLarge, reasonTooLarge, "body larger than %d bytes", mbe.Limit)
		}
		return nil, requestError(http.StatusBadRequest, reasonBadJSON, "read body: %v", err)
	}
	return decodeBody(body)
}

// decodeBody is Decode of a body already read.
func decodeBody(body []byte) (*Notification, error) {
	if len(bytes.TrimSpace(body)) == 0 {
		return nil, requestError(http.StatusBadRequest, reasonBadJSON, "empty body")
	}

	if n, ok := decodeValid(body); ok {
		return n, nil
	}
	return decodeExplained(body)
}

// wireAlert is an alert as sent. The times are decoded separately:
// time.Time's own errors do not name the field.
type wireAlert struct {
	template.Alert
	StartsAt json.RawMessage `json:"startsAt"`
	EndsAt   json.RawMessage `json:"endsAt"`
}

// decodeValid decodes and validates body in one pass over it, and reports
// false, without saying why, when body is not a valid notification. Nearly
// every notification is valid, and decodeExplained, which names the
// offending field, reads every alert twice as often.
//
// It accepts what decodeExplained accepts, with the same result, except for
// a body that repeats the top-level "alerts" key: decodeExplained keeps the
// last array, decodeValid merges the arrays element by element, as
// encoding/json does for a repeated object key.
//
// It decodes with encoding/json's semantics on the engine of
// encoding/json/v2 (go-json-experiment/json/v1, the mirror of what the
// standard library adopts): a little over half of encoding/json's time
// for a notification, and half its allocations. FuzzDecodeValid holds the two
// decoders to the same result.
func decodeValid(body []byte) (*Notification, bool) {
	var env struct {
		Notification
		Alerts []wireAlert `json:"alerts"`
	}
	if err := jsonv1.Unmarshal(body, &env); err != nil {
		return nil, false
	}
	n := env.Notification
	if err := n.validateHeader(len(env.Alerts), env.Alerts == nil); err != nil {
		return nil, false
	}
	n.Alerts = make(template.Alerts, len(env.Alerts))
	for i := range env.Alerts {
		// A null element decodes to a zero wireAlert, which has no status,
		// so it fails here as decodeExplained requires.
		if err := env.Alerts[i].check(&n.Alerts[i], ""); err != nil {
			return nil, false
		}
	}
	return &n, true
}

// decodeExplained decodes and validates body, with an error that names the
// offending field when it is not a valid notification.
func decodeExplained(body []byte) (*Notification, error) {
	// Alerts are decoded one by one so that errors can name the index.
	var env struct {
		Notification
		Alerts []json.RawMessage `json:"alerts"`
	}
	if err := json.Unmarshal(body, &env); err != nil {
		return nil, jsonError("", err)
	}
	n := env.Notification
	if err := n.validateHeader(len(env.Alerts), env.Alerts == nil); err != nil {
		return nil, err
	}
	n.Alerts = make(template.Alerts, len(env.Alerts))
	for i, raw := range env.Alerts {
		if err := decodeAlert(raw, &n.Alerts[i], fmt.Sprintf("alerts[%d]", i)); err != nil {
			return nil, err
		}
	}
	return &n, nil
}

func (n *Notification) validateHeader(alerts int, alertsNull bool) error {
	switch {
	case n.Version == "":
		return missing("version")
	case n.Version != payloadVersion:
		return requestError(http.StatusBadRequest, reasonBadVersion, "version: got %q, want %q", n.Version, payloadVersion)
	}
	if err := checkStatus("status", n.Status); err != nil {
		return err
	}
	switch {
	case alertsNull:
		return missing("alerts")
	case alerts == 0:
		return requestError(http.StatusBadRequest, reasonMissingField, "alerts: must not be empty")
	}
	return nil
}

func decodeAlert(raw json.RawMessage, a *template.Alert, path string) error {
	if isNull(raw) {
		return requestError(http.StatusBadRequest, reasonInvalidField, "%s: got null, want object", path)
	}
	var w wireAlert
	if err := json.Unmarshal(raw, &w); err != nil {
		return jsonError(path, err)
	}
	return w.check(a, path)
}

// check validates w and stores it in a; path names w in errors.
func (w *wireAlert) check(a *template.Alert, path string) error {
	*a = w.Alert
	if err := checkStatus(path+".status", a.Status); err != nil {
		return err
	}
	switch {
	case a.Labels == nil:
		return missing(path + ".labels")
	case len(a.Labels) == 0:
		return requestError(http.StatusBadRequest, reasonMissingField, "%s.labels: must not be empty", path)
	}
	var err error
	if a.StartsAt, err = decodeTime(w.StartsAt, path+".startsAt"); err != nil {
		return err
	}
	if a.StartsAt.IsZero() {
		return missing(path + ".startsAt")
	}
	if a.EndsAt, err = decodeTime(w.EndsAt, path+".endsAt"); err != nil {
		return err
	}
	if a.Fingerprint == "" {
		return missing(path + ".fingerprint")
	}
	return nil
}

// decodeTime decodes an RFC 3339 time; absent and null are the zero time,
// which Alertmanager also sends for "no end".
func decodeTime(raw json.RawMessage, path string) (time.Time, error) {
	var t time.Time
	if len(raw) == 0 || isNull(raw) {
		return t, nil
	}
	if raw[0] != '"' {
		return t, requestError(http.StatusBadRequest, reasonInvalidField, "%s: got %s, want an RFC 3339 time string", path, jsonKindOf(raw))
	}
	if err := t.UnmarshalJSON(raw); err != nil {
		return t, requestError(http.StatusBadRequest, reasonInvalidField, "%s: got %s, want an RFC 3339 time", path, clip(string(raw), 40))
	}
	return t, nil
}

func checkStatus(path, s string) error {
	switch s {
	case "":
		return missing(path)
	case "firing", "resolved":
		return nil
	}
	return requestError(http.StatusBadRequest, reasonInvalidField, "%s: got %s, want firing or resolved", path, strconv.Quote(clip(s, 40)))
}

func missing(path string) error {
	return requestError(http.StatusBadRequest, reasonMissingField, "%s: missing", path)
}

// jsonError turns an encoding/json error into a RequestError; path prefixes
// field names when decoding an element of a larger document.
func jsonError(path string, err error) error {
	if se, ok := errors.AsType[*json.SyntaxError](err); ok {
		return requestError(http.StatusBadRequest, reasonBadJSON, "invalid JSON at offset %d: %v", se.Offset, se)
	}
	if te, ok := errors.AsType[*json.UnmarshalTypeError](err); ok {
		field := jsonPath(te.Field)
		switch {
		case path == "" && field == "":
			return requestError(http.StatusBadRequest, reasonBadJSON, "invalid JSON: got %s, want object", clip(te.Value, 40))
		case path != "" && field != "":
			field = path + "." + field
		case path != "":
			field = path
		}
		return requestError(http.StatusBadRequest, reasonInvalidField, "%s: got %s, want %s", field, clip(te.Value, 40), kindName(te.Type))
	}
	return requestError(http.StatusBadRequest, reasonBadJSON, "invalid JSON: %v", err)
}

// jsonPath drops the Go names of embedded structs from an
// UnmarshalTypeError's field path, leaving the JSON keys.
func jsonPath(field string) string {
	parts := strings.Split(field, ".")
	out := parts[:0]
	for _, p := range parts {
		switch p {
		case "", "Notification", "Data", "Alert":
			continue
		}
		out = append(out, p)
	}
	return strings.Join(out, ".")
}

func kindName(t reflect.Type) string {
	if t == nil {
		return "a different type"
	}
	switch t.Kind() {
	case reflect.String:
		return "string"
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return "non-negative integer"
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		return "integer"
	case reflect.Float32, reflect.Float64:
		return "number"
	case reflect.Bool:
		return "boolean"
	case reflect.Map, reflect.Struct:
		return "object"
	case reflect.Slice, reflect.Array:
		return "array"
	}
	return t.String()
}

func jsonKindOf(raw []byte) string {
	switch raw[0] {
	case '{':
		return "object"
	case '[':
		return "array"
	case 't', 'f':
		return "boolean"
	}
	return "number"
}

func isNull(raw []byte) bool { return bytes.Equal(raw, []byte("null")) }

// clip shortens s to at most n bytes on a rune boundary.
func clip(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n] + "..."
}

// oneLine escapes control characters so that s stays one log and response
// line, and bounds its length.
func oneLine(s string, n int) string {
	if strings.IndexFunc(s, func(r rune) bool { return r < ' ' || r == 0x7f || r == utf8.RuneError }) >= 0 {
		q := strconv.Quote(s)
		s = q[1 : len(q)-1]
	}
	return clip(s, n)
}
