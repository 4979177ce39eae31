package evidence

import (
	"fmt"
	"strings"
	"time"
	"unicode"

	"github.com/autorollbackd/autorollbackd/internal/kinds"
	"github.com/autorollbackd/autorollbackd/internal/workload"
)

// Render prints the snapshot for a terminal, as a section of an incident.
// Everything the pods wrote (log lines, messages, reasons) is passed
// through Clean first.
func (s *Snapshot) Render() string {
	var b strings.Builder
	label := kinds.LabelControllerRevisionHash
	if a, err := workload.For(s.Target.Kind); err == nil {
		label = a.RevisionLabel()
	}
	fmt.Fprintf(&b, "evidence: revision %d (%s %s), %d of %d pods, taken %s\n",
		s.Revision, label, Clean(s.Hash), len(s.Pods), s.PodsFound, s.TakenAt.UTC().Format(time.RFC3339))
	for _, p := range s.Pods {
		facts := []string{Clean(string(p.Phase))}
		if p.Node != "" {
			facts[0] += " on " + Clean(p.Node)
		}
		if !p.Ready {
			facts = append(facts, "not ready")
		}
		if p.Restarts > 0 {
			facts = append(facts, plural(int(p.Restarts), "restart"))
		}
		if p.Terminating {
			facts = append(facts, "terminating")
		}
		fmt.Fprintf(&b, "  pod %s: %s\n", Clean(p.Name), strings.Join(facts, ", "))
		if p.Reason != "" || p.Message != "" {
			writeLines(&b, "    ", joinNonEmpty(": ", p.Reason, p.Message))
		}
		for _, c := range p.Containers {
			kind := "container"
			if c.Init {
				kind = "init container"
			}
			facts := []string{cmpOr(Clean(c.State), "no status")}
			if !c.Ready && c.State != "" {
				facts = append(facts, "not ready")
			}
			if c.RestartCount > 0 {
				facts = append(facts, plural(int(c.RestartCount), "restart"))
			}
			fmt.Fprintf(&b, "    %s %s (%s): %s\n", kind, Clean(c.Name), Clean(c.Image), strings.Join(facts, ", "))
			if t := c.LastTermination; t != nil {
				how := fmt.Sprintf("last terminated: %s, exit code %d", cmpOr(Clean(t.Reason), "no reason"), t.ExitCode)
				if t.Signal != 0 {
					how += fmt.Sprintf(", signal %d", t.Signal)
				}
				if !t.FinishedAt.IsZero() {
					how += ", at " + t.FinishedAt.UTC().Format(time.RFC3339)
				}
				fmt.Fprintf(&b, "      %s\n", how)
				if t.Message != "" {
					writeLines(&b, "        ", t.Message)
				}
			}
			for _, l := range c.Logs {
				name := "log"
				if l.Previous {
					name = "previous log"
				}
				switch {
				case len(l.Lines) > 0 && l.Truncated:
					fmt.Fprintf(&b, "      %s (last %s; earlier output cut):\n", name, plural(len(l.Lines), "line"))
				case len(l.Lines) > 0:
					fmt.Fprintf(&b, "      %s (%s):\n", name, plural(len(l.Lines), "line"))
				case l.Error == "":
					fmt.Fprintf(&b, "      %s: empty\n", name)
				}
				for _, line := range l.Lines {
					fmt.Fprintf(&b, "        | %s\n", Clean(line))
				}
				if l.Error != "" {
					fmt.Fprintf(&b, "      %s: %s\n", name, Clean(strings.ReplaceAll(l.Error, "\n", " ")))
				}
			}
		}
	}
	if t := s.Truncated; t != nil {
		var what []string
		if t.Pods > 0 {
			what = append(what, plural(t.Pods, "pod")+" not recorded")
		}
		if t.LogsOmitted > 0 {
			what = append(what, plural(t.LogsOmitted, "log")+" left out")
		}
		if t.LogsCut > 0 {
			what = append(what, plural(t.LogsCut, "log")+" cut to the last lines")
		}
		if t.Messages > 0 {
			what = append(what, plural(t.Messages, "message")+" cut")
		}
		fmt.Fprintf(&b, "  limits: %s\n", strings.Join(what, ", "))
	}
	return b.String()
}

// writeLines writes each line of text, cleaned, after indent.
func writeLines(b *strings.Builder, indent, text string) {
	for line := range strings.SplitSeq(strings.TrimRight(text, "\n"), "\n") {
		fmt.Fprintf(b, "%s%s\n", indent, Clean(line))
	}
}

func plural(n int, noun string) string {
	if n == 1 {
		return "1 " + noun
	}
	return fmt.Sprintf("%d %ss", n, noun)
}

func cmpOr(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

func joinNonEmpty(sep string, parts ...string) string {
	var out []string
	for _, p := range parts {
		if p != "" {
			out = append(out, p)
		}
	}
	return strings.Join(out, sep)
}

// Clean makes one line of untrusted text safe to print on a terminal: it
// removes terminal escape sequences (CSI, OSC and the other string
// sequences, two-character escapes), every other control character
// (a tab becomes a space, a line break too), and the Unicode controls that
// reorder text on screen (bidirectional overrides and isolates), and
// replaces invalid UTF-8.
func Clean(s string) string {
	s = strings.ToValidUTF8(s, "\uFFFD")
	var b strings.Builder
	rs := []rune(s)
	for i := 0; i < len(rs); i++ {
		r := rs[i]
		switch {
		case r == '\x1b' && i+1 < len(rs):
			i = skipEscape(rs, i+1)
		case r == '\u009b': // CSI in one character
			i = skipCSI(rs, i+1)
		case r == '\u0090' || r == '\u009d' || r == '\u0098' || r == '\u009e' || r == '\u009f': // DCS, OSC, SOS, PM, APC
			i = skipString(rs, i+1)
		case r == '\t' || r == '\n' || r == '\r' || r == '\u2028' || r == '\u2029':
			b.WriteByte(' ')
		case unicode.IsControl(r), reorders(r):
		default:
			b.WriteRune(r)
		}
	}
	return b.String()
}

// skipEscape skips the escape sequence whose introducer (the character
// after ESC) is at i, and returns the index of its last character.
func skipEscape(rs []rune, i int) int {
	switch rs[i] {
	case '[':
		return skipCSI(rs, i+1)
	case ']', 'P', 'X', '^', '_':
		return skipString(rs, i+1)
	}
	// Intermediate bytes, then one final byte: ESC ( B, ESC 7, ESC c, ...
	for i < len(rs)-1 && rs[i] >= 0x20 && rs[i] <= 0x2f {
		i++
	}
	return i
}

// skipCSI skips the parameters, intermediates and final byte of a control
// sequence starting at i, and returns the index of its last character.
func skipCSI(rs []rune, i int) int {
	for ; i < len(rs); i++ {
		if rs[i] >= 0x40 && rs[i] <= 0x7e {
			return i
		}
		if rs[i] < 0x20 || rs[i] > 0x3f {
			return i - 1 // malformed: end it here, keep what follows
		}
	}
	return len(rs) - 1
}

// skipString skips a control string starting at i up to its terminator
// (BEL, ESC \ or ST) and returns the index of the terminator's last
// character; an unterminated string runs to the end.
func skipString(rs []rune, i int) int {
	for ; i < len(rs); i++ {
		switch {
		case rs[i] == '\a' || rs[i] == '\u009c':
			return i
		case rs[i] == '\x1b' && i+1 < len(rs) && rs[i+1] == '\\':
			return i + 1
		}
	}
	return len(rs) - 1
}

// reorders reports whether r changes the order in which text is shown.
func reorders(r rune) bool {
	switch {
	case r >= '\u202a' && r <= '\u202e', r >= '\u2066' && r <= '\u2069':
		return true
	}
	return r == '\u200e' || r == '\u200f' || r == '\u061c'
}
