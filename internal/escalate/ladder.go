package escalate

import "time"

// Ladder is the escalation clock: steps in increasing order of After, as
// Config.Validate guarantees. Its methods are pure: the caller passes the
// incident's start, the current time and the levels already paged, so the
// same answers come back after a restart.
type Ladder []Step

// Due returns the steps whose time (start + After) has come at now and
// whose level is not in sent, in ladder order. A step is due at its
// instant exactly: at start+5m the 5m step is due, at start+5m-1ns it is
// not. When the caller was away (a restart, a late first alert), several
// steps can be due at once; the caller pages them all.
func (l Ladder) Due(start, now time.Time, sent map[string]bool) []Step {
	var due []Step
	for _, s := range l {
		if sent[s.Level] {
			continue
		}
		if !now.Before(start.Add(s.After.Duration)) {
			due = append(due, s)
		}
	}
	return due
}

// Next returns when the earliest step not yet sent is due, and false when
// every step has been sent (or the ladder is empty). The time may be in the
// past: the step is overdue and Due returns it now.
func (l Ladder) Next(start time.Time, sent map[string]bool) (time.Time, bool) {
	var next time.Time
	found := false
	for _, s := range l {
		if sent[s.Level] {
			continue
		}
		at := start.Add(s.After.Duration)
		if !found || at.Before(next) {
			next, found = at, true
		}
	}
	return next, found
}

// Step returns the step of a level, and false when the ladder has none.
func (l Ladder) Step(level string) (Step, bool) {
	for _, s := range l {
		if s.Level == level {
			return s, true
		}
	}
	return Step{}, false
}
