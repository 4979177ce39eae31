package config

import (
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/spf13/pflag"
)

func TestLoadInvalidFiles(t *testing.T) {
	for file, want := range map[string]string{
		"invalid-unknown-key.yaml":          "server.listenadress: unknown key",
		"invalid-wrong-type.yaml":           "kubernetes.qps: cannot parse value as 'float64'",
		"invalid-bad-duration.yaml":         `server.readTimeout: must be a duration such as "30s" or "5m": time: unknown unit "parsecs"`,
		"invalid-bare-number-duration.yaml": `server.idleTimeout: must be a duration string such as "30s" or "5m", got 120`,
		"invalid-log-level.yaml":            `log.level: must be one of debug, info, warn, error; got "loud"`,
		"invalid-negative-duration.yaml":    "server.shutdownTimeout: must be a positive duration, got -1s",
		"invalid-yaml-syntax.yaml":          "read config file testdata/invalid-yaml-syntax.yaml",
		"invalid-helm-mode.yaml":            `policy.helm.mode: must be undo-workload or rollback-release, got "rollback"`,
	} {
		t.Run(file, func(t *testing.T) {
			_, err := Load(Source{File: filepath.Join("testdata", file)})
			if err == nil {
				t.Fatalf("Load(%s) succeeded, want error containing %q", file, want)
			}
			if !strings.Contains(err.Error(), want) {
				t.Fatalf("Load(%s) error = %q, want it to contain %q", file, err, want)
			}
		})
	}
}

func TestEveryInvalidFileIsTested(t *testing.T) {
	files, err := filepath.Glob("testdata/invalid-*.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if len(files) != 8 {
		t.Fatalf("found %d invalid-*.yaml files, TestLoadInvalidFiles covers 8; add the new ones to its table", len(files))
	}
}

func TestLoadDefaults(t *testing.T) {
	cfg, err := Load(Source{})
	if err != nil {
		t.Fatal(err)
	}
	want := Default()
	if fmt.Sprint(*cfg) != fmt.Sprint(want) {
		t.Fatalf("Load with no sources = %+v, want the defaults %+v", *cfg, want)
	}
}

func TestPrecedence(t *testing.T) {
	flags := pflag.NewFlagSet("test", pflag.ContinueOnError)
	flags.String("listen-address", ":8080", "")
	flags.String("log-level", "info", "")
	if err := flags.Parse([]string{"--listen-address=127.0.0.1:7000"}); err != nil {
		t.Fatal(err)
	}
	cfg, err := Load(Source{
		File:  "testdata/good.yaml",
		Flags: flags,
		FlagKeys: map[string]string{
			"listen-address": "server.listenAddress",
			"log-level":      "log.level",
		},
		Environ: []string{
			"AUTOROLLBACKD_SERVER_LISTENADDRESS=127.0.0.1:6000", // loses to the flag
			"AUTOROLLBACKD_KUBERNETES_QPS=7",                    // beats the file
			"AUTOROLLBACKD_SERVER_WRITETIMEOUT=45s",             // beats the default
			"HOME=/nowhere",                                     // not ours
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	checks := []struct {
		key       string
		got, want any
	}{
		{"server.listenAddress (flag over env and file)", cfg.Server.ListenAddress, "127.0.0.1:7000"},
		{"kubernetes.qps (env over file)", cfg.Kubernetes.QPS, 7.0},
		{"kubernetes.burst (file over default)", cfg.Kubernetes.Burst, 40},
		{"log.level (file; flag not set)", cfg.Log.Level, "debug"},
		{"server.readTimeout (file)", cfg.Server.ReadTimeout.Duration, 10 * time.Second},
		{"server.writeTimeout (env over default)", cfg.Server.WriteTimeout.Duration, 45 * time.Second},
		{"server.idleTimeout (default)", cfg.Server.IdleTimeout.Duration, 2 * time.Minute},
	}
	for _, c := range checks {
		if c.got != c.want {
			t.Errorf("%s = %v, want %v", c.key, c.got, c.want)
		}
	}
}

func TestUnknownEnvironmentVariable(t *testing.T) {
	_, err := Load(Source{Environ: []string{"AUTOROLLBACKD_SERVER_LISTENADRESS=:1"}})
	if err == nil || !strings.Contains(err.Error(), "AUTOROLLBACKD_SERVER_LISTENADRESS: no such configuration key") {
		t.Fatalf("error = %v, want one naming the unknown variable", err)
	}
}

func TestBadEnvironmentValueNamesKey(t *testing.T) {
	_, err := Load(Source{Environ: []string{"AUTOROLLBACKD_KUBERNETES_BURST=lots"}})
	if err == nil || !strings.HasPrefix(err.Error(), "kubernetes.burst: ") {
		t.Fatalf("error = %v, want one naming kubernetes.burst", err)
	}
}

func TestAllProblemsReportedTogether(t *testing.T) {
	f := filepath.Join(t.TempDir(), "c.yaml")
	if err := os.WriteFile(f, []byte("log:\n  level: loud\n  format: xml\nkubernetes:\n  burst: 0\n  backgroundInFlight: -1\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := Load(Source{File: f})
	want := "kubernetes.backgroundInFlight: must be 0 (no priority) or more, got -1\n" +
		"kubernetes.burst: must be at least 1, got 0\n" +
		"log.format: must be json or text, got \"xml\"\n" +
		"log.level: must be one of debug, info, warn, error; got \"loud\""
	if err == nil || err.Error() != want {
		t.Fatalf("error =\n%v\nwant\n%s", err, want)
	}
}

func TestSecretNeverPrinted(t *testing.T) {
	s := Secret("hunter2")
	var logged strings.Builder
	slog.New(slog.NewJSONHandler(&logged, nil)).Info("x", "token", s)
	var js strings.Builder
	enc := json.NewEncoder(&js)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(struct{ Token Secret }{s}); err != nil {
		t.Fatal(err)
	}
	for name, out := range map[string]string{
		"String": s.String(),
		"%v":     fmt.Sprintf("%v", s),
		"%s":     fmt.Sprintf("%s", s),
		"%#v":    fmt.Sprintf("%#v", s),
		"%+v":    fmt.Sprintf("%+v", struct{ T Secret }{s}),
		"json":   js.String(),
		"slog":   logged.String(),
	} {
		if strings.Contains(out, "hunter2") {
			t.Errorf("%s printed the secret: %s", name, out)
		}
		if !strings.Contains(out, "<secret>") {
			t.Errorf("%s = %q, want <secret>", name, out)
		}
	}
	if s.Reveal() != "hunter2" {
		t.Fatalf("Reveal() = %q", s.Reveal())
	}
}
