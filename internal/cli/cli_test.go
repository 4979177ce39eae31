package cli

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/prometheus/common/version"
)

func execute(t *testing.T, environ []string, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errOut bytes.Buffer
	code = Execute(context.Background(), args, Env{Stdout: &out, Stderr: &errOut, Environ: environ})
	return code, out.String(), errOut.String()
}

func writeFile(t *testing.T, body string) string {
	t.Helper()
	f := filepath.Join(t.TempDir(), "config.yaml")
	if err := os.WriteFile(f, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	return f
}

func TestCheckConfigRejects(t *testing.T) {
	for _, tc := range []struct {
		name, body, want string
	}{
		{"unknown key", "kubernetes:\n  qpss: 5\n", "autorollbackd check-config: kubernetes.qpss: unknown key\n"},
		{"wrong type", "kubernetes:\n  burst: many\n", "autorollbackd check-config: kubernetes.burst: cannot parse value as 'int'"},
		{"bad duration", "server:\n  writeTimeout: soon\n", `autorollbackd check-config: server.writeTimeout: must be a duration such as "30s" or "5m"`},
		{"zero rule window", ruleWithWindow("0s"), "autorollbackd check-config: policy.rules[0].recentRolloutWindow: must be a positive duration, got 0s\n"},
		{"bad rule window", ruleWithWindow("soon"), `autorollbackd check-config: policy.rules[0].recentRolloutWindow: must be a duration such as "30s" or "5m"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, stdout, stderr := execute(t, nil, "check-config", writeFile(t, tc.body))
			if code != ExitError {
				t.Errorf("exit code = %d, want %d", code, ExitError)
			}
			if !strings.HasPrefix(stderr, tc.want) {
				t.Errorf("stderr = %q, want it to start with %q", stderr, tc.want)
			}
			if strings.Count(stderr, "\n") != 1 {
				t.Errorf("stderr has %d lines, want one: %q", strings.Count(stderr, "\n"), stderr)
			}
			if stdout != "" {
				t.Errorf("stdout = %q, want nothing on error", stdout)
			}
		})
	}
}

// ruleWithWindow is a configuration with one rule whose recentRolloutWindow
// is window.
func ruleWithWindow(window string) string {
	return "policy:\n  rules:\n  - name: data-corruption\n    matchers: ['impact=\"data_corruption\"']\n" +
		"    criterion: data_corruption\n    outcome: rollback\n    recentRolloutWindow: " + window + "\n"
}

func TestCheckConfigAcceptsARuleWindow(t *testing.T) {
	code, stdout, stderr := execute(t, nil, "check-config", writeFile(t, ruleWithWindow("24h")))
	if code != ExitOK {
		t.Fatalf("exit code = %d, stderr %q", code, stderr)
	}
	if !strings.Contains(stdout, "    recentRolloutWindow: 24h0m0s\n") {
		t.Errorf("stdout lacks the rule's window:\n%s", stdout)
	}
}

func TestCheckConfigAcceptsAndPrintsEffectiveConfig(t *testing.T) {
	f := writeFile(t, "server:\n  listenAddress: 127.0.0.1:9000\n")
	code, stdout, stderr := execute(t, []string{"AUTOROLLBACKD_LOG_LEVEL=debug"}, "check-config", f)
	if code != ExitOK {
		t.Fatalf("exit code = %d, stderr %q", code, stderr)
	}
	for _, want := range []string{"configuration OK", "listenAddress: 127.0.0.1:9000", "level: debug", "readHeaderTimeout: 5s"} {
		if !strings.Contains(stdout, want) {
			t.Errorf("stdout lacks %q:\n%s", want, stdout)
		}
	}
}

func TestUsageErrors(t *testing.T) {
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"unknown flag", []string{"serve", "--no-such-flag"}, "autorollbackd serve: unknown flag: --no-such-flag (see 'autorollbackd serve --help')\n"},
		{"missing file", []string{"check-config"}, "autorollbackd check-config: accepts 1 arg(s), received 0 (see 'autorollbackd check-config --help')\n"},
		{"unknown command", []string{"rollback-everything"}, "autorollbackd: unknown command \"rollback-everything\" (see 'autorollbackd --help')\n"},
		{"no command", nil, "autorollbackd: a subcommand is required (see 'autorollbackd --help')\n"},
		{"revert-flag without an incident", []string{"incidents", "revert-flag"},
			"autorollbackd incidents revert-flag: accepts 1 arg(s), received 0 (see 'autorollbackd incidents revert-flag --help')\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, _, stderr := execute(t, nil, tc.args...)
			if code != ExitUsage {
				t.Errorf("exit code = %d, want %d", code, ExitUsage)
			}
			if stderr != tc.want {
				t.Errorf("stderr = %q, want %q", stderr, tc.want)
			}
		})
	}
}

func TestVersion(t *testing.T) {
	code, stdout, _ := execute(t, nil, "version")
	if code != ExitOK || !strings.HasPrefix(stdout, "autorollbackd, version") {
		t.Fatalf("version: code %d, stdout %q", code, stdout)
	}
	// The library's own rendering, which the command repeats without a template.
	if want := version.Print("autorollbackd") + "\n"; stdout != want {
		t.Errorf("version printed\n%s\nwant\n%s", stdout, want)
	}
}

func TestCheckConfigRedactsAlertmanagerSecrets(t *testing.T) {
	f := writeFile(t, `verify:
  alertmanager:
    url: https://alertmanager.example.com
    httpConfig:
      authorization:
        credentials: am-bearer-token
      http_headers:
        X-Tenant-Key:
          secrets: [am-header-secret]
`)
	code, stdout, stderr := execute(t, nil, "check-config", f)
	if code != ExitOK {
		t.Fatalf("exit code = %d, stderr %q", code, stderr)
	}
	for _, secret := range []string{"am-bearer-token", "am-header-secret"} {
		if strings.Contains(stdout, secret) {
			t.Errorf("check-config printed the secret %q:\n%s", secret, stdout)
		}
	}
	for _, want := range []string{"credentials: <secret>", "- <secret>", "url: https://alertmanager.example.com"} {
		if !strings.Contains(stdout, want) {
			t.Errorf("stdout lacks %q:\n%s", want, stdout)
		}
	}
}

// A ladder that pages nobody is valid (it is the default) but almost never
// meant: check-config says so on stderr and still exits 0.
func TestCheckConfigWarnsOfLevelsWithoutNotifiers(t *testing.T) {
	const wired = `escalation:
  notifiers:
  - name: hook
    type: webhook
    webhook:
      url: https://hooks.example/autorollbackd
`
	for _, tc := range []struct {
		name, body string
		want       []string // lines on stderr
	}{
		{"defaults", "log:\n  level: info\n", []string{
			"autorollbackd check-config: warning: escalation.ladder[0].notifiers: level oncall has no notifiers: nobody is paged at that level",
			"autorollbackd check-config: warning: escalation.ladder[1].notifiers: level lead has no notifiers: nobody is paged at that level",
			"autorollbackd check-config: warning: escalation.ladder[2].notifiers: level war_room has no notifiers: nobody is paged at that level",
		}},
		{"empty ladder", "escalation:\n  ladder: []\n", []string{
			"autorollbackd check-config: warning: escalation.ladder: empty: nobody is ever paged",
		}},
		{"one level without notifiers", wired + `  ladder:
  - {after: 5m, level: oncall, notifiers: [hook]}
  - {after: 10m, level: lead}
`, []string{
			"autorollbackd check-config: warning: escalation.ladder[1].notifiers: level lead has no notifiers: nobody is paged at that level",
		}},
		{"every level wired", wired + `  ladder:
  - {after: 5m, level: oncall, notifiers: [hook]}
`, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, stdout, stderr := execute(t, nil, "check-config", writeFile(t, tc.body))
			if code != ExitOK {
				t.Fatalf("exit code = %d, want %d; stderr %q", code, ExitOK, stderr)
			}
			want := ""
			for _, l := range tc.want {
				want += l + "\n"
			}
			if stderr != want {
				t.Errorf("stderr\ngot:\n%s\nwant:\n%s", stderr, want)
			}
			if !strings.Contains(stdout, "configuration OK") {
				t.Errorf("stdout = %q, want the effective configuration", stdout)
			}
		})
	}
}
