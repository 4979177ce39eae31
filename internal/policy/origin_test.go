package policy_test

import (
	"encoding/json"
	"testing"

	"github.com/autorollbackd/autorollbackd/internal/policy"
)

// TestOriginJSON pins the form an origin takes in alert records: empty
// fields are left out, so an unknown origin is {}.
func TestOriginJSON(t *testing.T) {
	for _, tc := range []struct {
		origin policy.Origin
		want   string
	}{
		{policy.Origin{}, `{}`},
		{policy.Origin{Sender: "team-a"}, `{"sender":"team-a"}`},
		{policy.Origin{Sender: "team-a", Namespaces: []string{"team-a", "team-a-canary"}}, `{"sender":"team-a","namespaces":["team-a","team-a-canary"]}`},
	} {
		raw, err := json.Marshal(tc.origin)
		if err != nil {
			t.Fatal(err)
		}
		if string(raw) != tc.want {
			t.Errorf("Marshal(%+v) = %s, want %s", tc.origin, raw, tc.want)
		}
		var back policy.Origin
		if err := json.Unmarshal(raw, &back); err != nil {
			t.Fatal(err)
		}
		if back.Sender != tc.origin.Sender || len(back.Namespaces) != len(tc.origin.Namespaces) {
			t.Errorf("round trip of %+v gave %+v", tc.origin, back)
		}
	}
}

// TestSenderNamespaces covers the forms of Origin.Namespaces: nil and empty
// allow any namespace, as does "*" among others; otherwise the target's
// namespace must be listed exactly.
func TestSenderNamespaces(t *testing.T) {
	p, err := policy.Compile(policy.DefaultConfig())
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name       string
		namespaces []string
		refused    bool
	}{
		{"nil", nil, false},
		{"empty", []string{}, false},
		{"listed", []string{"production"}, false},
		{"wildcard among others", []string{"team-a", "*"}, false},
		{"not listed", []string{"team-a"}, true},
		{"a prefix is not a pattern", []string{"prod*"}, true},
		{"case matters", []string{"Production"}, true},
		{"an empty name is not a wildcard", []string{""}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			in := baseInput()
			in.Origin = policy.Origin{Sender: "s", Namespaces: tc.namespaces}
			d := p.Screen(in)
			if refused := d.Outcome == policy.OutcomeRefuse; refused != tc.refused || (refused && d.Reason != policy.ReasonOriginMismatch) {
				t.Errorf("Screen = %s/%s, want refused %v with origin_mismatch:\n%s", d.Outcome, d.Reason, tc.refused, d)
			}
		})
	}
}
