package incident

import (
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"slices"
	"sort"
	"time"
)

// An incident's ConfigMap must stay well under the API server's 1 MiB,
// however many alerts join it: a DaemonSet on thousands of nodes fires one
// alert per node. So an incident counts its alerts, each exactly once, and
// keeps only a few of them whole.
const (
	// alertsKeptFirst is how many of the first alerts to join are kept
	// whole, resolved or not: they name the incident and its action.
	alertsKeptFirst = 5
	// MaxAlertsKept bounds the alerts kept whole: the first ones, then
	// those still firing, which the alert check asks Alertmanager about.
	MaxAlertsKept = 20
	// MaxAlertsTracked bounds the alerts the ledger tells apart, at 8 bytes
	// each (256 KiB, 342 KiB in base64).
	MaxAlertsTracked = 32768
)

// ledger holds the identity of every alert counted by an incident, and
// whether its resolution was counted: a join or a resolution handed over
// twice (after a restart, or a retried decision) is counted once. Each
// alert is the first 8 bytes of the SHA-256 of its key with the lowest bit
// standing for resolved, kept sorted. Two keys of one incident share a hash
// with a chance below 1 in 10^10 at MaxAlertsTracked.
type ledger []uint64

// resolvedBit marks an alert of the ledger resolved.
const resolvedBit = 1

func alertHash(key string) uint64 {
	sum := sha256.Sum256([]byte(key))
	return binary.BigEndian.Uint64(sum[:8]) &^ resolvedBit
}

// find returns where h is or would be, and whether it is there.
func (l ledger) find(h uint64) (int, bool) {
	i := sort.Search(len(l), func(i int) bool { return l[i]&^resolvedBit >= h })
	return i, i < len(l) && l[i]&^resolvedBit == h
}

// MarshalJSON encodes the ledger as one base64 string of its big-endian
// hashes.
func (l ledger) MarshalJSON() ([]byte, error) {
	b := make([]byte, 8*len(l))
	for i, h := range l {
		binary.BigEndian.PutUint64(b[8*i:], h)
	}
	return json.Marshal(base64.StdEncoding.EncodeToString(b))
}

// UnmarshalJSON decodes what MarshalJSON encodes.
func (l *ledger) UnmarshalJSON(data []byte) error {
	var s string
	if err := json.Unmarshal(data, &s); err != nil {
		return fmt.Errorf("alert ledger: %w", err)
	}
	b, err := base64.StdEncoding.DecodeString(s)
	if err != nil {
		return fmt.Errorf("alert ledger: %w", err)
	}
	if len(b)%8 != 0 {
		return fmt.Errorf("alert ledger: %d bytes, not a multiple of 8", len(b))
	}
	out := make(ledger, len(b)/8)
	for i := range out {
		out[i] = binary.BigEndian.Uint64(b[8*i:])
	}
	for i := 1; i < len(out); i++ {
		if out[i-1]&^resolvedBit >= out[i]&^resolvedBit {
			return fmt.Errorf("alert ledger: not sorted, or an alert twice")
		}
	}
	*l = out
	return nil
}

// counted reports whether the incident's alerts are counted: false only for
// a record of schema version 2, which kept every alert whole and counted
// nothing; Next counts them (countAlerts).
func (i *Incident) counted() bool { return i.AlertsJoined > 0 }

// countAlerts counts the alerts of a version-2 record.
func (i *Incident) countAlerts() {
	if i.counted() || len(i.Alerts) == 0 {
		return
	}
	kept := i.Alerts
	i.Alerts = nil
	for _, a := range kept {
		h := alertHash(a.Key)
		k, ok := i.Ledger.find(h)
		if ok {
			continue
		}
		if !a.ResolvedAt.IsZero() {
			h |= resolvedBit
			i.AlertsResolved++
		}
		i.Ledger = slices.Insert(i.Ledger, k, h)
		i.AlertsJoined++
		// A version-2 record holds every alert, within 1 MiB: all of them
		// stay, and the sample shrinks as they resolve.
		i.Alerts = append(i.Alerts, a)
	}
}

// AddAlert counts an alert that joins the incident, and its resolution
// when it comes resolved, and keeps it whole while there is room. It
// returns false for an alert counted already, which it leaves alone, and
// whether the alert is kept whole. Beyond MaxAlertsTracked alerts, a new
// one is not counted and the incident overflows.
func (i *Incident) AddAlert(a Alert) (added, kept bool) {
	i.countAlerts()
	h := alertHash(a.Key)
	k, ok := i.Ledger.find(h)
	if ok {
		return false, false
	}
	if len(i.Ledger) >= MaxAlertsTracked {
		i.AlertsOverflow = true
		return true, false
	}
	resolved := !a.ResolvedAt.IsZero()
	if resolved {
		h |= resolvedBit
		i.AlertsResolved++
	}
	i.Ledger = slices.Insert(i.Ledger, k, h)
	i.AlertsJoined++
	if len(i.Alerts) < alertsKeptFirst || (!resolved && len(i.Alerts) < MaxAlertsKept) {
		i.Alerts = append(i.Alerts, a)
		kept = true
	}
	return true, kept
}

// resolveAlert counts the resolution of the alert with key, once. An alert
// kept whole among the first is marked resolved; another one kept whole
// makes room for alerts still firing. It returns whether the resolution
// was new, and the alert's name when it was kept whole.
func (i *Incident) resolveAlert(key string, at time.Time) (resolved bool, name string) {
	i.countAlerts()
	k, ok := i.Ledger.find(alertHash(key))
	if !ok || i.Ledger[k]&resolvedBit != 0 {
		return false, ""
	}
	i.Ledger[k] |= resolvedBit
	i.AlertsResolved++
	for n := range i.Alerts {
		if i.Alerts[n].Key != key {
			continue
		}
		name = i.Alerts[n].Name
		if n < alertsKeptFirst {
			i.Alerts[n].ResolvedAt = at
		} else {
			i.Alerts = slices.Delete(i.Alerts, n, n+1)
		}
		break
	}
	return true, name
}

// FirstAlert returns the first alert to join the incident, which names it;
// the zero Alert for a record that holds none (one not written by the
// daemon).
func (i *Incident) FirstAlert() Alert {
	if len(i.Alerts) == 0 {
		return Alert{}
	}
	return i.Alerts[0]
}

// HasAlert reports whether the alert with the given key belongs to the
// incident, kept whole or not.
func (i *Incident) HasAlert(key string) bool {
	for _, a := range i.Alerts {
		if a.Key == key {
			return true
		}
	}
	_, ok := i.Ledger.find(alertHash(key))
	return ok
}

// AllAlertsResolved reports whether Alertmanager resolved every alert of
// the incident: as many resolutions counted as alerts joined. Never while
// more alerts joined than the ledger tells apart.
func (i *Incident) AllAlertsResolved() bool {
	if !i.counted() {
		for _, a := range i.Alerts {
			if a.ResolvedAt.IsZero() {
				return false
			}
		}
		return len(i.Alerts) > 0
	}
	return !i.AlertsOverflow && i.AlertsResolved == i.AlertsJoined
}

// FiringNotKept returns how many of the incident's alerts still fire but are
// not kept whole, so that Alertmanager cannot be asked about them; -1 when
// that is unknown, because more alerts joined than the ledger tells apart.
func (i *Incident) FiringNotKept() int {
	if i.AlertsOverflow {
		return -1
	}
	if !i.counted() {
		return 0
	}
	n := i.AlertsJoined - i.AlertsResolved
	for _, a := range i.Alerts {
		if a.ResolvedAt.IsZero() {
			n--
		}
	}
	return n
}

// alertMilestone reports whether n alerts joined is worth a line in the
// timeline, when the alert itself is not kept: 100, 1000, 10000 ...
func alertMilestone(n int) bool {
	for m := 100; m <= n; m *= 10 {
		if n == m {
			return true
		}
	}
	return false
}
