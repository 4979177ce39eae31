package escalate

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"time"
	"unicode/utf8"

	"github.com/autorollbackd/autorollbackd/internal/policy"
)

// MessageKind says what a message is for. The set is bounded: it is a
// metric label value.
type MessageKind string

// The kinds of message.
const (
	// Announce tells stakeholders what the daemon did or found; it never
	// pages anyone.
	Announce MessageKind = "announce"
	// Page asks the people of a ladder level to act.
	Page MessageKind = "page"
	// Resolve closes a page: the incident is over.
	Resolve MessageKind = "resolve"
)

// Kinds returns every kind, for initialising metric labels. The slice is
// fresh on every call.
func Kinds() []MessageKind { return []MessageKind{Announce, Page, Resolve} }

// Message is one notification. The Escalator sets Kind and Level from the
// method called (Announce, Page or Resolve); callers fill in the rest.
type Message struct {
	Kind MessageKind `json:"kind"`
	// Level is the ladder level of a page or resolution, "" for
	// announcements.
	Level    string   `json:"level"`
	Incident Incident `json:"incident"`
	// Summary is one line: what happened.
	Summary string `json:"summary"`
	// Details are lines: why (alert, rule, runbook criterion), the revision
	// rolled back from and to, verification results.
	Details []string `json:"details"`
}

// Incident identifies what a message is about.
type Incident struct {
	// ID is stable for the life of the incident. PagerDuty dedup keys are
	// derived from it (see DedupKey), so re-sending a page never opens a
	// second PagerDuty incident and Resolve closes the one it opened.
	ID string `json:"id"`
	// Cluster is the daemon's cluster.name; empty for an unnamed one.
	Cluster string     `json:"cluster,omitempty"`
	Target  policy.Ref `json:"target"`
	// StartedAt is the first alert's startsAt; the ladder counts from it.
	StartedAt    time.Time `json:"startedAt"`
	Alertname    string    `json:"alertname"`
	Rule         string    `json:"rule"`
	Criterion    string    `json:"criterion"`
	GeneratorURL string    `json:"generatorURL"`
	// DashboardURL links a dashboard; empty means Config.DashboardURL.
	DashboardURL string `json:"dashboardURL"`
}

// PagerDuty accepts dedup keys of up to 255 characters.
const maxDedupKey = 255

// DedupKey is the PagerDuty dedup_key of the page of an incident at a
// level: "autorollbackd/<incident ID>/<level>", or
// "autorollbackd/<cluster>/<incident ID>/<level>" in a named cluster, since
// two clusters can have incidents of the same ID. One incident opens at
// most one PagerDuty incident per level, however often the page is sent.
//
// A key that would be longer than 255 bytes keeps its first 190 bytes and
// ends in "~" and the hex SHA-256 of the whole key, 255 bytes in all. Two
// different incidents or levels keep different keys, and the key of a long
// ID cannot equal that of a short one, since "~" is in no incident ID.
func DedupKey(cluster, incidentID, level string) string {
	k := "autorollbackd/" + incidentID + "/" + level
	if cluster != "" {
		k = "autorollbackd/" + cluster + "/" + incidentID + "/" + level
	}
	if len(k) <= maxDedupKey {
		return k
	}
	sum := sha256.Sum256([]byte(k))
	h := "~" + hex.EncodeToString(sum[:])
	return cut(k, maxDedupKey-len(h)) + h
}

// link is a labelled URL of a message.
type link struct{ href, text string }

// links returns the message's links: the alert's source and the dashboard.
func (m Message) links() []link {
	var out []link
	if m.Incident.GeneratorURL != "" {
		out = append(out, link{m.Incident.GeneratorURL, "Alert source"})
	}
	if m.Incident.DashboardURL != "" {
		out = append(out, link{m.Incident.DashboardURL, "Dashboard"})
	}
	return out
}

// fact is one labelled fact of an incident.
type fact struct{ label, value string }

// facts returns the incident's facts that are known, in a fixed order.
func (m Message) facts() []fact {
	in := m.Incident
	var out []fact
	add := func(label, value string) {
		if value != "" {
			out = append(out, fact{label, value})
		}
	}
	add("Cluster", in.Cluster)
	if !in.Target.IsZero() {
		add("Target", in.Target.String())
	}
	add("Alert", in.Alertname)
	switch {
	case in.Rule != "" && in.Criterion != "":
		add("Rule", in.Rule+" ("+in.Criterion+")")
	default:
		add("Rule", in.Rule)
		add("Criterion", in.Criterion)
	}
	add("Level", m.Level)
	if !in.StartedAt.IsZero() {
		add("Started", in.StartedAt.UTC().Format(time.RFC3339))
	}
	add("Incident", in.ID)
	return out
}

// title is the headline of a message, by kind.
func (m Message) title() string {
	target := m.Incident.Target.String()
	switch m.Kind {
	case Page:
		return fmt.Sprintf("Escalation to %s: %s", m.Level, target)
	case Resolve:
		return fmt.Sprintf("Resolved (%s): %s", m.Level, target)
	default:
		return "autorollbackd: " + target
	}
}

// truncate shortens s to at most n bytes, on a rune boundary, marking the
// cut with "…".
func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	const ellipsis = "…"
	return cut(s, n-len(ellipsis)) + ellipsis
}

// cut returns the longest prefix of s of at most n bytes that ends on a rune
// boundary.
func cut(s string, n int) string {
	if len(s) <= n {
		return s
	}
	n = max(n, 0)
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n]
}
