package kinds

import "testing"

// TestKindsChosenOnce: what a kind of workload does is chosen in one place,
// the Adapter factory, never by a switch or comparison on the kind
// elsewhere.
func TestKindsChosenOnce(t *testing.T) {
	for _, v := range violations(t) {
		if v.rule == ruleKind {
			t.Error(v.msg)
		}
	}
}
