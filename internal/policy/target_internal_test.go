package policy

import (
	"slices"
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/api/validate/content"
)

// FuzzDNS1123 checks the quick answers of dns1123LabelErrors and
// dns1123SubdomainErrors against the functions they stand in for.
func FuzzDNS1123(f *testing.F) {
	for _, s := range []string{
		"", "a", "-", "a-", "-a", "a-b", "a--b", "0", "event-service", "Event", "a_b", "a.b", ".a", "a.", "a..b",
		"a.-b", "a-.b", "ä", "a b", "a\x00", strings.Repeat("a", 63), strings.Repeat("a", 64),
		strings.Repeat("a.", 126) + "a", strings.Repeat("a.", 126) + "ab", strings.Repeat("a", 254),
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if got, want := dns1123LabelErrors(s), content.IsDNS1123Label(s); !slices.Equal(got, want) {
			t.Errorf("dns1123LabelErrors(%q) = %q, want %q", s, got, want)
		}
		if got, want := dns1123SubdomainErrors(s), content.IsDNS1123Subdomain(s); !slices.Equal(got, want) {
			t.Errorf("dns1123SubdomainErrors(%q) = %q, want %q", s, got, want)
		}
	})
}
