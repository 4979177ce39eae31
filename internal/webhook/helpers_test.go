package webhook

import (
	"encoding/json"
	"fmt"
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

// secretVolume lays out a directory the way the kubelet's atomic writer
// does for a Secret volume: each file is a symlink through ..data to a
// timestamped directory, and an update swaps ..data in one rename.
type secretVolume struct {
	t   testing.TB
	dir string
	gen int
}

func newSecretVolume(t testing.TB, files map[string][]byte) *secretVolume {
	v := &secretVolume{t: t, dir: t.TempDir()}
	v.update(files)
	for name := range files {
		if err := os.Symlink(filepath.Join("..data", name), filepath.Join(v.dir, name)); err != nil {
			t.Fatal(err)
		}
	}
	return v
}

func (v *secretVolume) path(name string) string { return filepath.Join(v.dir, name) }

// update writes a new timestamped directory, points ..data at it atomically
// and removes the previous one, as the kubelet does.
func (v *secretVolume) update(files map[string][]byte) {
	t := v.t
	t.Helper()
	v.gen++
	ts := fmt.Sprintf("..2026_01_01_00_00_00.%09d", v.gen)
	if err := os.Mkdir(filepath.Join(v.dir, ts), 0o755); err != nil {
		t.Fatal(err)
	}
	for name, b := range files {
		writeFile(t, filepath.Join(v.dir, ts, name), b)
	}
	old, _ := os.Readlink(filepath.Join(v.dir, "..data"))
	tmp := filepath.Join(v.dir, "..data_tmp")
	if err := os.Symlink(ts, tmp); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, filepath.Join(v.dir, "..data")); err != nil {
		t.Fatal(err)
	}
	if old != "" {
		if err := os.RemoveAll(filepath.Join(v.dir, old)); err != nil {
			t.Fatal(err)
		}
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
