package config

import (
	"os"
	"strings"
	"testing"
)

// TestDocumentationCoversEveryKey keeps docs/configuration.md and the code
// in step: every key is documented, and nothing documented is missing.
func TestDocumentationCoversEveryKey(t *testing.T) {
	doc, err := os.ReadFile("../../docs/configuration.md")
	if err != nil {
		t.Fatal(err)
	}
	leaves, err := flatten(Default())
	if err != nil {
		t.Fatal(err)
	}
	documented := map[string]bool{}
	for _, line := range strings.Split(string(doc), "\n") {
		// Key rows look like: | `server.listenAddress` | ... |
		if rest, ok := strings.CutPrefix(line, "| `"); ok {
			if key, _, ok := strings.Cut(rest, "`"); ok {
				documented[key] = true
			}
		}
	}
	// A documented map or list key covers its entries.
	covered := func(key string) bool {
		for ; key != ""; key = parentKey(key) {
			if documented[key] {
				return true
			}
		}
		return false
	}
	for key := range leaves {
		if !covered(key) {
			t.Errorf("key %s is not documented in docs/configuration.md", key)
		}
	}
	for key := range documented {
		if !isKeyOrParent(leaves, key) {
			t.Errorf("docs/configuration.md documents %s, which is not a configuration key", key)
		}
	}
}

func parentKey(key string) string {
	i := strings.LastIndex(key, ".")
	if i < 0 {
		return ""
	}
	return key[:i]
}

func isKeyOrParent(leaves map[string]any, key string) bool {
	for leaf := range leaves {
		if leaf == key || strings.HasPrefix(leaf, key+".") {
			return true
		}
	}
	return false
}
