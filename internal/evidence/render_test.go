package evidence

import (
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"

	"github.com/autorollbackd/autorollbackd/internal/policy"
)

func TestClean(t *testing.T) {
	tests := []struct{ name, in, want string }{
		{"plain", "GET /api/v1/events 500 in 3ms", "GET /api/v1/events 500 in 3ms"},
		{"unicode kept", "café ✓ 日本", "café ✓ 日本"},
		{"colours", "\x1b[31mERROR\x1b[0m boom", "ERROR boom"},
		{"cursor and erase", "ok\x1b[2K\x1b[1A\x1b[?25lhidden cursor", "okhidden cursor"},
		{"window title, BEL", "\x1b]0;pwned\x07after", "after"},
		{"hyperlink, ST", "\x1b]8;;http://evil.example\x1b\\click\x1b]8;;\x1b\\", "click"},
		{"device control string", "a\x1bPq#0;2;0;0;0\x1b\\b", "ab"},
		{"two-character escapes", "a\x1b7b\x1b(Bc\x1bcd", "abcd"},
		{"C1 CSI", "a\u009b31mb", "ab"},
		{"C1 OSC", "a\u009d0;title\u009cb", "ab"},
		{"carriage return cannot overwrite", "password ok\rFAILED", "password ok FAILED"},
		{"tab and newline become spaces", "a\tb\nc", "a b c"},
		{"other controls dropped", "a\x00b\x08c\x7fd\u0085e", "abcde"},
		{"bidi overrides dropped", "user\u202etxt.exe\u2066x\u2069\u200f", "usertxt.exex"},
		{"invalid UTF-8 replaced", "a\xffb", "a\uFFFDb"},
		{"lone ESC at the end", "a\x1b", "a"},
		{"unterminated OSC swallows the rest", "a\x1b]0;title", "a"},
		{"malformed CSI keeps what follows", "a\x1b[31\x00b", "ab"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := Clean(tc.in); got != tc.want {
				t.Errorf("Clean(%q) = %q, want %q", tc.in, got, tc.want)
			}
		})
	}
}

func TestRender(t *testing.T) {
	at := time.Date(2026, 12, 2, 14, 3, 7, 0, time.UTC)
	s := &Snapshot{
		TakenAt: at, Target: policy.Ref{Kind: policy.KindDeployment, Namespace: "production", Name: "event-service"},
		Revision: 2, Hash: "6b7f9c", PodsFound: 3,
		Pods: []Pod{{
			Name: "event-service-6b7f9c-abcde", Phase: corev1.PodRunning, Node: "node-1", Restarts: 4,
			Containers: []Container{{
				Name: "app", Image: "event-service:v2", RestartCount: 4, State: "waiting: CrashLoopBackOff",
				LastTermination: &Termination{Reason: "Error", ExitCode: 1, FinishedAt: at.Add(-5 * time.Second),
					Message: "panic: nil map\n\x1b]0;owned\x07goroutine 1"},
				Logs: []Log{
					{Previous: true, Truncated: true, Lines: []string{"\x1b[31mERROR\x1b[0m connect db: refused", "panic: nil map"}},
					{Error: `read log: container "app" in pod "event-service-6b7f9c-abcde" is waiting to start: CrashLoopBackOff`},
				},
			}},
		}, {
			Name: "event-service-6b7f9c-fghij", Phase: corev1.PodPending, Reason: "Unschedulable",
			Message:    "0/3 nodes are available: 3 node(s) didn't match Pod's node affinity/selector.",
			Containers: []Container{{Name: "app", Image: "event-service:v2", Logs: []Log{{Error: "not read: the pod is not scheduled to a node"}}}},
		}},
		Truncated: &Truncation{Pods: 1, LogsCut: 1},
	}
	want := `evidence: revision 2 (pod-template-hash 6b7f9c), 2 of 3 pods, taken 2026-12-02T14:03:07Z
  pod event-service-6b7f9c-abcde: Running on node-1, not ready, 4 restarts
    container app (event-service:v2): waiting: CrashLoopBackOff, not ready, 4 restarts
      last terminated: Error, exit code 1, at 2026-12-02T14:03:02Z
        panic: nil map
        goroutine 1
      previous log (last 2 lines; earlier output cut):
        | ERROR connect db: refused
        | panic: nil map
      log: read log: container "app" in pod "event-service-6b7f9c-abcde" is waiting to start: CrashLoopBackOff
  pod event-service-6b7f9c-fghij: Pending, not ready
    Unschedulable: 0/3 nodes are available: 3 node(s) didn't match Pod's node affinity/selector.
    container app (event-service:v2): no status
      log: not read: the pod is not scheduled to a node
  limits: 1 pod not recorded, 1 log cut to the last lines
`
	if got := s.Render(); got != want {
		t.Errorf("Render() =\n%s\nwant\n%s", got, want)
	}
	if strings.ContainsAny(s.Render(), "\x1b\x07") {
		t.Errorf("Render() lets an escape sequence through")
	}
}
