package escalate

import (
	"errors"
	"log/slog"
	"os"
	"strings"
	"sync"
	"testing"

	"github.com/autorollbackd/autorollbackd/internal/secretfile"
)

// Deliveries through one notifier run at once, one per incident; the list
// of secrets each one redacts must be its own, whatever room the inline
// secrets' slice has left.
func TestDescribeRedactsConcurrently(t *testing.T) {
	path := t.TempDir() + "/token"
	if err := writeFile(path, "file-secret"); err != nil {
		t.Fatal(err)
	}
	fs, err := newFileSecret("notifiers[0].webhook.bearerTokenFile", path, nil,
		buildEnv{reloads: &secretfile.Reloads{}, logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	inline := make([]string, 1, 8)
	inline[0] = "inline-secret"
	n := &notifier{inline: inline, files: []*fileSecret{fs}}
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for range 100 {
				got := n.describe(errors.New("sent inline-secret and file-secret"), &attempt{})
				if strings.Contains(got, "secret and") || strings.Count(got, "<secret>") != 2 {
					t.Errorf("describe = %q, want both secrets redacted", got)
					return
				}
			}
		})
	}
	wg.Wait()
}

func writeFile(path, content string) error { return os.WriteFile(path, []byte(content), 0o600) }
