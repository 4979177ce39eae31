package webhook

import (
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

func discard() *slog.Logger { return slog.New(slog.DiscardHandler) }

func slogTo(w io.Writer) *slog.Logger { return slog.New(slog.NewJSONHandler(w, nil)) }

// fixture returns a payload captured from Alertmanager (see
// TestAlertmanagerDelivers).
func fixture(t testing.TB, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// mutated returns the firing fixture changed by f, which gets it as generic
// JSON.
func mutated(t testing.TB, f func(m map[string]any)) []byte {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(fixture(t, "firing.json"), &m); err != nil {
		t.Fatal(err)
	}
	f(m)
	b, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func alertOf(m map[string]any, i int) map[string]any {
	return m["alerts"].([]any)[i].(map[string]any)
}

func writeFile(t testing.TB, path string, content []byte) {
	t.Helper()
	if err := os.WriteFile(path, content, 0o600); err != nil {
		t.Fatal(err)
	}
}

// eventually waits until cond holds, polling, and fails the test after
// timeout.
func eventually(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", timeout, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// readAll reads and closes r.
func readAll(t testing.TB, r io.ReadCloser) string {
	t.Helper()
	defer r.Close()
	b, err := io.ReadAll(r)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// bearerHandler returns the webhook handler with bearer authentication
// (testToken) and the default configuration otherwise, logging to logger
// and handing notifications to intake.
func bearerHandler(t testing.TB, logger *slog.Logger, intake IntakeFunc) http.Handler {
	t.Helper()
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "token"), []byte(testToken))
	cfg := DefaultConfig()
	cfg.Auth.BearerTokenFile = filepath.Join(dir, "token")
	auth, err := NewAuthenticator(cfg.Auth, logger)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = auth.Close() })
	h, err := NewHandler(cfg, auth, intake, logger, prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	return h
}
