package webhook

import (
	"bytes"
	"encoding/json"
	"fmt"
	"reflect"
	"testing"
)

// TestDecodeValidTakesValidNotifications guards the one-pass decoding of
// valid notifications: the fixtures and notifications of many alerts must
// not need the slower decoding that explains errors.
func TestDecodeValidTakesValidNotifications(t *testing.T) {
	bodies := map[string][]byte{
		"firing.json":   fixture(t, "firing.json"),
		"resolved.json": fixture(t, "resolved.json"),
		"null endsAt":   mutated(t, func(m map[string]any) { alertOf(m, 0)["endsAt"] = nil }),
	}
	for _, n := range []int{1, 10, 100} {
		bodies[fmt.Sprintf("%d alerts", n)] = payload(t, n)
	}
	for name, body := range bodies {
		t.Run(name, func(t *testing.T) {
			fast, ok := decodeValid(body)
			if !ok {
				t.Fatal("decodeValid refused a valid notification")
			}
			slow, err := decodeExplained(body)
			if err != nil {
				t.Fatalf("decodeExplained: %v", err)
			}
			if !reflect.DeepEqual(fast, slow) {
				t.Errorf("decodeValid = %+v\ndecodeExplained = %+v", fast, slow)
			}
		})
	}
}

// FuzzDecodeValid checks that the one-pass decoding accepts exactly what the
// decoding that explains errors accepts, with the same result, for any body
// that does not repeat the top-level "alerts" key.
func FuzzDecodeValid(f *testing.F) {
	for _, name := range []string{"firing.json", "resolved.json"} {
		f.Add(fixture(f, name))
	}
	valid := `{"version":"4","status":"firing","alerts":[%s]}`
	alert := `{"status":"firing","labels":{"a":"b"},"startsAt":"2026-01-01T00:00:00Z","fingerprint":"x"%s}`
	for _, s := range []string{
		fmt.Sprintf(valid, fmt.Sprintf(alert, "")),
		fmt.Sprintf(valid, fmt.Sprintf(alert, `,"endsAt":null`)),
		fmt.Sprintf(valid, fmt.Sprintf(alert, `,"endsAt":"yesterday"`)),
		fmt.Sprintf(valid, fmt.Sprintf(alert, `,"startsAt":null`)),
		fmt.Sprintf(valid, fmt.Sprintf(alert, `,"STARTSAT":"2026-01-02T00:00:00Z"`)),
		fmt.Sprintf(valid, fmt.Sprintf(alert, `,"labels":{}`)),
		fmt.Sprintf(valid, fmt.Sprintf(alert, `,"labels":{"a":1}`)),
		fmt.Sprintf(valid, fmt.Sprintf(alert, "")+",null"),
		fmt.Sprintf(valid, fmt.Sprintf(alert, "")+",{}"),
		fmt.Sprintf(valid, fmt.Sprintf(alert, "")+",7"),
		fmt.Sprintf(valid, ""),
		`{"version":"4","status":"firing","alerts":null}`,
		`{"version":"4","status":"firing","alerts":{}}`,
		`{"version":"4","status":"firing","alerts":[null,1,"x",[],{}]}`,
		`null`,
		`[]`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		if repeatsAlertsKey(body) {
			// decodeValid documents its one difference: a repeated
			// "alerts" key. Such an input proves nothing here.
			return
		}
		fast, ok := decodeValid(body)
		slow, err := decodeExplained(body)
		switch {
		case ok && err != nil:
			t.Fatalf("decodeValid accepted what decodeExplained refuses (%v): %+v", err, fast)
		case !ok && err == nil:
			t.Fatalf("decodeValid refused what decodeExplained accepts: %+v", slow)
		case ok && !reflect.DeepEqual(fast, slow):
			t.Fatalf("decodeValid = %+v\ndecodeExplained = %+v", fast, slow)
		}
	})
}

// repeatsAlertsKey reports whether body is an object with more than one key
// that encoding/json would decode into the field "alerts".
func repeatsAlertsKey(body []byte) bool {
	dec := json.NewDecoder(bytes.NewReader(body))
	if tok, err := dec.Token(); err != nil || tok != json.Delim('{') {
		return false
	}
	seen := 0
	for dec.More() {
		key, err := dec.Token()
		if err != nil {
			return false
		}
		if s, ok := key.(string); ok && bytes.EqualFold([]byte(s), []byte("alerts")) {
			seen++
		}
		var skip json.RawMessage
		if err := dec.Decode(&skip); err != nil {
			return false
		}
	}
	return seen > 1
}
