package cli

import (
	"context"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/autorollbackd/autorollbackd/internal/incident"
	"github.com/autorollbackd/autorollbackd/internal/policy"
	"github.com/autorollbackd/autorollbackd/internal/testenv"
)

func TestMain(m *testing.M) { os.Exit(testenv.Run(m)) }

// hostile is alert text as an untrusted sender may write it: an OSC that
// sets the terminal's title, a CSI that clears the screen, a C1 CSI and a
// carriage return that overwrites the line.
const hostile = "pwned\x1b]0;pwned\x07 \x1b[2J \u009b31m \r"

// TestIncidentsShowAndListAreTerminalSafe: `incidents show` and `incidents
// list` print an incident whose alert text carries escape sequences with
// every control character escaped, so that none reaches the terminal.
func TestIncidentsShowAndListAreTerminalSafe(t *testing.T) {
	c := testenv.Require(t)
	ns := c.Namespace(t)
	start := time.Date(2026, 3, 14, 9, 26, 0, 0, time.UTC)
	target := policy.Ref{Kind: policy.KindDeployment, Namespace: "production", Name: "event-service" + hostile}
	inc := &incident.Incident{
		ID:        incident.NewID(target, 7, start),
		Target:    target,
		State:     incident.StateEscalated,
		StartedAt: start,
		Decision: policy.Decision{
			Outcome: policy.OutcomeEscalate, Reason: policy.Reason("budget_exhausted" + hostile),
			Message: "alert summary: " + hostile,
		},
		Alerts: []incident.Alert{{
			Key: "k", Name: "EventServiceDown", StartsAt: start,
			Labels: map[string]string{"alertname": "EventServiceDown", "summary": hostile},
		}},
		GeneratorURL: "http://prometheus.example/graph?" + hostile,
	}
	inc.Log(start, "alert received: description %s", hostile)
	store := &incident.Store{Client: c.Client, Namespace: ns}
	if _, err := store.Create(context.Background(), inc); err != nil {
		t.Fatal(err)
	}
	cfg := writeFile(t, "engine:\n  namespace: "+ns+"\n")

	for _, tc := range []struct {
		name string
		args []string
		want []string
	}{
		{"show", []string{"show", inc.ID}, []string{
			`  decision:  escalate (budget_exhausted` + escaped + `): alert summary: ` + escaped + "\n",
			`  alert:     http://prometheus.example/graph?` + escaped + "\n",
			`alert received: description ` + escaped + "\n",
		}},
		{"list", []string{"list"}, []string{`Deployment production/event-service` + escaped, `escalate (budget_exhausted` + escaped + `)`}},
		{"list wide", []string{"list", "-o", "wide"}, []string{`Deployment production/event-service` + escaped}},
		{"list json", []string{"list", "-o", "json"}, []string{`\u001b]0;pwned\u0007`}},
		{"show yaml", []string{"show", inc.ID, "-o", "yaml"}, []string{`alertname: EventServiceDown`}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			args := append([]string{"incidents", "--config", cfg, "--kubeconfig", c.Kubeconfig}, tc.args...)
			code, stdout, stderr := execute(t, nil, args...)
			if code != ExitOK {
				t.Fatalf("exit code %d, stderr %q", code, stderr)
			}
			for i, r := range stdout {
				if r == 0x1b || r == 0x07 || r == '\r' || r == 0x9b {
					t.Errorf("output holds %U at byte %d:\n%q", r, i, stdout)
					break
				}
			}
			// JSON and YAML escape ESC; what follows it is then plain text.
			structured := slices.Contains(tc.args, "json") || slices.Contains(tc.args, "yaml")
			if !structured && (strings.Contains(stdout, "]0;") || strings.Contains(stdout, "[2J")) {
				t.Errorf("output holds the rest of an escape sequence:\n%q", stdout)
			}
			for _, w := range tc.want {
				if !strings.Contains(stdout, w) {
					t.Errorf("output lacks %q:\n%s", w, stdout)
				}
			}
		})
	}
}

// escaped is hostile as printed: the sequences are removed, the carriage
// return is a space.
const escaped = "pwned    "

func TestTerminalSafeKeepsLines(t *testing.T) {
	in := "incident x\n  decision: " + hostile + "\n\ttimeline:\n"
	want := "incident x\n  decision: " + escaped + "\n timeline:\n"
	if got := terminalSafe(in); got != want {
		t.Errorf("terminalSafe(%q) = %q, want %q", in, got, want)
	}
}
