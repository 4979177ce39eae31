package kinds

import "testing"

func TestRolledBackFor(t *testing.T) {
	for _, tc := range []struct {
		name string
		ann  map[string]string
		want string
	}{
		{"none", nil, ""},
		{"recorded", map[string]string{AnnotationRolledBackFor: "r-2"}, "r-2"},
		{"recorded before the key existed", map[string]string{AnnotationIncident: "r-1"}, "r-1"},
		{"the record's key wins", map[string]string{AnnotationRolledBackFor: "r-2", AnnotationIncident: "r-1"}, "r-2"},
		{"recorded empty", map[string]string{AnnotationRolledBackFor: "", AnnotationIncident: "r-1"}, ""},
	} {
		if got := RolledBackFor(tc.ann); got != tc.want {
			t.Errorf("%s: RolledBackFor = %q, want %q", tc.name, got, tc.want)
		}
	}
}
