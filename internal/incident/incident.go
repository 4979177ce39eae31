// Package incident keeps the record of each incident: one workload's episode
// of trouble, from its first alert through decisions, actions, verification
// and pages to its resolution. Records live in the cluster, one ConfigMap
// each, so they survive a restart or a failover to another replica, which
// resumes open incidents where they stood.
package incident

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/autorollbackd/autorollbackd/internal/actuator"
	"github.com/autorollbackd/autorollbackd/internal/evidence"
	"github.com/autorollbackd/autorollbackd/internal/policy"
	"github.com/autorollbackd/autorollbackd/internal/verify"
)

// State is where an incident stands.
type State string

// The states of an incident.
const (
	// StateActing: a rollback rung is due (the first, N-2, or the scale
	// bounce).
	StateActing State = "acting"
	// StateVerifying: an action was applied; its verification is due.
	StateVerifying State = "verifying"
	// StateEscalated: nothing automatic is left or allowed; people are paged
	// on the runbook's clock until the alerts resolve.
	StateEscalated State = "escalated"
	// StateResolving: recovered; its pages are being resolved at the
	// notifiers. The clock has stopped.
	StateResolving State = "resolving"
	// StateResolved: verified recovered, or every alert resolved, and its
	// pages resolved.
	StateResolved State = "resolved"
)

// SchemaVersion is the version of the incident record this daemon writes.
// Version 2 added the attempt count, the alert grace, the resolving state
// and the receivers of each page; version 1 records read as version 2.
// Version 3 counts the alerts and keeps only some of them whole (Alerts,
// AlertsJoined, AlertsResolved, alertLedger); a version-2 record, which
// kept every alert whole, is counted when it is next worked on.
const SchemaVersion = 3

// Incident is the record of one incident.
type Incident struct {
	SchemaVersion int    `json:"schemaVersion"`
	ID            string `json:"id"`
	// Rollout identifies the bad rollout (workload and suspect revision);
	// the actuator records it on the workload.
	Rollout string `json:"rollout"`
	// Cluster is the daemon's cluster.name when the incident opened.
	Cluster string     `json:"cluster,omitempty"`
	Target  policy.Ref `json:"target"`
	// Revision is the workload's revision when the incident opened: the
	// suspect rollout.
	Revision int64 `json:"revision,omitempty"`
	State    State `json:"state"`
	// StartedAt is when the runbook's clock starts: the first alert's
	// startsAt, but never before the suspect rollout began.
	StartedAt time.Time `json:"startedAt"`
	// Decision is the decision that opened the incident.
	Decision policy.Decision `json:"decision"`
	Plan
	// Rung is the index of the automatic rung being tried (RungAction).
	Rung   int  `json:"rung"`
	DryRun bool `json:"dryRun,omitempty"`
	// Attempts counts the failed attempts at the current rung whose
	// failure may pass; it survives restarts.
	Attempts int `json:"attempts,omitempty"`
	// AlertsFiringSince is set while every check of the current rung
	// passed but an alert still fires: the alert's grace runs from here.
	AlertsFiringSince time.Time `json:"alertsFiringSince,omitzero"`

	// Alerts are the alerts kept whole: the first to join, then those still
	// firing, up to MaxAlertsKept.
	Alerts []Alert `json:"alerts"`
	// AlertsJoined and AlertsResolved count the alerts that joined the
	// incident and their resolutions by Alertmanager, each once.
	AlertsJoined   int `json:"alertsJoined,omitempty"`
	AlertsResolved int `json:"alertsResolved,omitempty"`
	// Ledger tells the counted alerts apart.
	Ledger ledger `json:"alertLedger,omitempty"`
	// AlertsOverflow: more than MaxAlertsTracked alerts joined. Those
	// beyond were not counted, and the incident no longer resolves from
	// its alerts alone.
	AlertsOverflow bool `json:"alertsOverflow,omitempty"`

	Actions       []Action       `json:"actions,omitempty"`
	Verifications []Verification `json:"verifications,omitempty"`
	Pages         []Page         `json:"pages,omitempty"`
	Tasks         []Task         `json:"tasks,omitempty"`
	Timeline      []Entry        `json:"timeline"`
	// Evidence is what the pods of the suspect revision showed before the
	// first action replaced them.
	Evidence *evidence.Snapshot `json:"evidence,omitempty"`

	ResolvedAt time.Time `json:"resolvedAt,omitzero"`
	// Links for people.
	GeneratorURL string `json:"generatorURL,omitempty"`
}

// Plan is what a rollback decision pins: the revision the decision was
// about and the revisions to go back to, newest first. A feature flag, when
// the alert names one the workload allows, replaces the revisions; the
// scale bounce follows them when allowed.
type Plan struct {
	From        int64                `json:"from,omitempty"`
	Targets     []int64              `json:"targets,omitempty"`
	FeatureFlag *actuator.FlagChange `json:"featureFlag,omitempty"`
	// FeatureFlagSkipped says why the feature flag the alert named is not
	// the first rung.
	FeatureFlagSkipped string `json:"featureFlagSkipped,omitempty"`
	ScaleBounce        bool   `json:"scaleBounce,omitempty"`
}

// LogPlan records in the timeline what of the plan is not plain to see.
func (i *Incident) LogPlan(at time.Time) {
	if i.FeatureFlagSkipped != "" {
		i.Log(at, "no feature flag rung: %s", i.FeatureFlagSkipped)
	}
}

// Alert is an alert that belongs to the incident.
type Alert struct {
	Key         string    `json:"key"`
	Fingerprint string    `json:"fingerprint"`
	Name        string    `json:"alertname"`
	StartsAt    time.Time `json:"startsAt"`
	// ReceivedAt is when the webhook accepted it.
	ReceivedAt time.Time `json:"receivedAt"`
	ResolvedAt time.Time `json:"resolvedAt,omitzero"`
	// Labels identify the alert to Alertmanager's API, which the
	// ExternalURL of its notification names.
	Labels      map[string]string `json:"labels,omitempty"`
	ExternalURL string            `json:"externalURL,omitempty"`
	// Origin is who sent the alert, as the webhook authenticated it; the
	// policy's sender check is asked again before every action.
	Origin policy.Origin `json:"origin,omitzero"`
}

// RefusedPrefix begins the Reason of an action or task the policy in force
// refused when it was due, followed by the policy's reason (for example
// "policy_refused: not_opted_in"): the incident's record is only data, and
// the live workload is checked again before anything changes.
const RefusedPrefix = "policy_refused: "

// Action is one action taken, or refused.
type Action struct {
	At     time.Time        `json:"at"`
	Rung   int              `json:"rung"`
	Kind   actuator.Kind    `json:"kind"`
	Result *actuator.Result `json:"result,omitempty"`
	Error  string           `json:"error,omitempty"`
	Reason string           `json:"reason,omitempty"`
}

// Verification is the outcome of verifying one action.
type Verification struct {
	At      time.Time       `json:"at"`
	Rung    int             `json:"rung"`
	Overall verify.Status   `json:"overall"`
	Results []verify.Result `json:"results"`
}

// Page is one rung of the people ladder, sent.
type Page struct {
	At    time.Time `json:"at"`
	Level string    `json:"level"`
	Error string    `json:"error,omitempty"`
	// Sending is recorded before the page goes out and cleared once it was
	// delivered or failed. A page still sending when its incident is next
	// worked on was interrupted (the daemon stopped): whether anybody got
	// it is unknown, and it is not sent again where that could page twice.
	Sending bool `json:"sending,omitempty"`
	// DeliveryUnknown marks such an interrupted page.
	DeliveryUnknown bool `json:"deliveryUnknown,omitempty"`
	// Receivers are the notifiers that accepted the page.
	Receivers []string `json:"receivers,omitempty"`
	// NoReceiver: the level has no notifier, and nobody was paged.
	NoReceiver bool `json:"noReceiver,omitempty"`
	// Group is the incident whose page this one joined: one page for many
	// escalations of the same reason. The joining incident sent nothing.
	Group string `json:"group,omitempty"`
}

// Task is a post-rollback task (a Job) and its outcome.
type Task struct {
	Name    string    `json:"name"`
	Job     string    `json:"job"`
	Started time.Time `json:"started"`
	Ended   time.Time `json:"ended,omitzero"`
	Result  string    `json:"result"` // running, succeeded, failed, timed_out, refused
	Message string    `json:"message,omitempty"`
}

// TaskRefused is the Result of a task the policy in force refused to run.
const TaskRefused = "refused"

// Refused reports whether the policy in force refused the action.
func (a Action) Refused() bool { return strings.HasPrefix(a.Reason, RefusedPrefix) }

// Entry is one line of the timeline.
type Entry struct {
	At   time.Time `json:"at"`
	What string    `json:"what"`
}

// Log appends a line to the timeline.
func (i *Incident) Log(at time.Time, format string, args ...any) {
	i.Timeline = append(i.Timeline, Entry{At: at, What: fmt.Sprintf(format, args...)})
}

// Open reports whether the incident still needs attention.
func (i *Incident) Open() bool { return i.State != StateResolved }

// Over reports whether the incident is resolved or resolving: it may still
// be resolving its pages, but an alert that joined it now would not be
// weighed.
func (i *Incident) Over() bool { return !i.ResolvedAt.IsZero() }

// PagedLevels returns the ladder levels already paged successfully, or
// perhaps (an interrupted page): resolving a page never sent is harmless.
func (i *Incident) PagedLevels() map[string]bool {
	sent := map[string]bool{}
	for _, p := range i.Pages {
		if p.Error == "" && !p.Sending && !p.NoReceiver && p.Group == "" {
			sent[p.Level] = true
		}
	}
	return sent
}

// AttemptedLevels returns the ladder levels paged, successfully or not. The
// notifiers retry on their own; a page that still failed is recorded and
// not sent again, so a broken notifier cannot turn the ladder into a loop.
func (i *Incident) AttemptedLevels() map[string]bool {
	sent := map[string]bool{}
	for _, p := range i.Pages {
		sent[p.Level] = true
	}
	return sent
}

// NewID names a new incident of a workload at a revision, begun at start.
// The id is safe in a URL path: kind-namespace-name-rREVISION-TIME.
func NewID(target policy.Ref, revision int64, start time.Time) string {
	return fmt.Sprintf("%s-%s-%s-r%d-%s", strings.ToLower(string(target.Kind)), target.Namespace, target.Name, revision,
		strings.ToLower(start.UTC().Format("20060102t150405z")))
}

// ObjectName is the name of the ConfigMap holding the incident with id.
func ObjectName(id string) string {
	sum := sha256.Sum256([]byte(id))
	return "autorollbackd-incident-" + hex.EncodeToString(sum[:10])
}

// Render prints the incident as a readable timeline, followed by the
// evidence kept of the suspect revision's pods, if any.
func (i *Incident) Render() string {
	var b strings.Builder
	fmt.Fprintf(&b, "incident %s\n", i.ID)
	fmt.Fprintf(&b, "  workload:  %s\n", i.Target)
	fmt.Fprintf(&b, "  state:     %s\n", i.State)
	fmt.Fprintf(&b, "  started:   %s\n", i.StartedAt.UTC().Format(time.RFC3339))
	if !i.ResolvedAt.IsZero() {
		fmt.Fprintf(&b, "  resolved:  %s (after %s)\n", i.ResolvedAt.UTC().Format(time.RFC3339), i.ResolvedAt.Sub(i.StartedAt).Round(time.Second))
	}
	fmt.Fprintf(&b, "  decision:  %s (%s): %s\n", i.Decision.Outcome, i.Decision.Reason, i.Decision.Message)
	if i.counted() {
		more := ""
		if i.AlertsOverflow {
			more = fmt.Sprintf(", and more than the %d it can count", MaxAlertsTracked)
		}
		fmt.Fprintf(&b, "  alerts:    %d joined, %d resolved%s (%d kept whole)\n", i.AlertsJoined, i.AlertsResolved, more, len(i.Alerts))
	}
	if i.GeneratorURL != "" {
		fmt.Fprintf(&b, "  alert:     %s\n", i.GeneratorURL)
	}
	b.WriteString("timeline:\n")
	entries := append([]Entry(nil), i.Timeline...)
	sort.SliceStable(entries, func(a, c int) bool { return entries[a].At.Before(entries[c].At) })
	for _, e := range entries {
		fmt.Fprintf(&b, "  %s  +%-8s %s\n", e.At.UTC().Format("15:04:05"), e.At.Sub(i.StartedAt).Round(time.Second), e.What)
	}
	if i.Evidence != nil {
		b.WriteString(i.Evidence.Render())
	}
	return b.String()
}
