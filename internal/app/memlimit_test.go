package app

import (
	"bytes"
	"errors"
	"log/slog"
	"math"
	"os"
	"runtime/debug"
	"strings"
	"testing"

	"github.com/KimMachineGun/automemlimit/memlimit"
)

// unsetMemoryEnv clears the variables memlimit reads, restored after the test.
func unsetMemoryEnv(t *testing.T) {
	for _, k := range []string{"GOMEMLIMIT", "AUTOMEMLIMIT"} {
		t.Setenv(k, "")
		if err := os.Unsetenv(k); err != nil {
			t.Fatal(err)
		}
	}
	old := debug.SetMemoryLimit(-1)
	t.Cleanup(func() { debug.SetMemoryLimit(old) })
}

func TestMemoryLimitFromTheContainer(t *testing.T) {
	for _, tc := range []struct {
		name      string
		env       map[string]string
		limit     memlimit.Provider
		want      int64
		wantLog   string
		wantError string
	}{
		{name: "90% of the container's limit", limit: memlimit.Limit(1 << 30), want: 1 << 30 * 9 / 10, wantLog: "the Go runtime's memory limit"},
		{name: "AUTOMEMLIMIT sets the fraction", env: map[string]string{"AUTOMEMLIMIT": "0.5"}, limit: memlimit.Limit(1 << 30), want: 1 << 29},
		{name: "not in a container", limit: func() (uint64, error) { return 0, memlimit.ErrNoCgroup }, want: math.MaxInt64, wantLog: "has no memory limit"},
		{name: "no container limit", limit: func() (uint64, error) { return 0, memlimit.ErrNoLimit }, want: math.MaxInt64, wantLog: "has no memory limit"},
		{name: "unreadable limit", limit: func() (uint64, error) { return 0, errors.New("open memory.max: permission denied") }, want: math.MaxInt64,
			wantLog: "level=WARN msg=\"the container's memory limit cannot be read; the Go runtime has none\" err=\"open memory.max: permission denied\""},
		{name: "bad AUTOMEMLIMIT", env: map[string]string{"AUTOMEMLIMIT": "most"}, limit: memlimit.Limit(1 << 30), wantError: "environment AUTOMEMLIMIT, GOMEMLIMIT): cannot parse AUTOMEMLIMIT: most"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			unsetMemoryEnv(t)
			for k, v := range tc.env {
				t.Setenv(k, v)
			}
			var logs bytes.Buffer
			got, err := setMemoryLimit(slog.New(slog.NewTextHandler(&logs, nil)), tc.limit)
			if tc.wantError != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantError) {
					t.Fatalf("error %v, want one containing %q", err, tc.wantError)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got != tc.want {
				t.Errorf("limit %d, want %d", got, tc.want)
			}
			if runtime := debug.SetMemoryLimit(-1); runtime != tc.want {
				t.Errorf("the runtime's limit is %d, want %d", runtime, tc.want)
			}
			if !strings.Contains(logs.String(), tc.wantLog) {
				t.Errorf("logs %q, want %q", logs.String(), tc.wantLog)
			}
		})
	}
}

// GOMEMLIMIT set by the operator wins: the container's limit is not read.
func TestMemoryLimitSetExplicitly(t *testing.T) {
	unsetMemoryEnv(t)
	t.Setenv("GOMEMLIMIT", "200MiB")
	before := debug.SetMemoryLimit(-1)
	got, err := setMemoryLimit(slog.New(slog.DiscardHandler), func() (uint64, error) {
		t.Error("the container's limit was read")
		return 1 << 30, nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if got != before || debug.SetMemoryLimit(-1) != before {
		t.Errorf("limit %d, runtime %d, want the runtime's own %d unchanged", got, debug.SetMemoryLimit(-1), before)
	}
}
