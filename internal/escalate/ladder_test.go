package escalate_test

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"k8s.io/client-go/tools/record"

	"github.com/autorollbackd/autorollbackd/internal/escalate"
)

func TestLadderDueAndNext(t *testing.T) {
	runbook := escalate.Ladder(escalate.DefaultConfig().Ladder)
	at := func(m, s int) time.Time {
		return start.Add(time.Duration(m)*time.Minute + time.Duration(s)*time.Second)
	}
	sent := func(levels ...string) map[string]bool {
		m := map[string]bool{}
		for _, l := range levels {
			m[l] = true
		}
		return m
	}
	for _, tc := range []struct {
		name     string
		ladder   escalate.Ladder
		now      time.Time
		sent     map[string]bool
		wantDue  []string
		wantNext time.Time // zero: none remains
	}{
		{"at the start", runbook, start, nil, nil, at(5, 0)},
		{"before the start (clock skew)", runbook, at(-1, 0), nil, nil, at(5, 0)},
		{"4:59 rollback still being attempted", runbook, at(4, 59), nil, nil, at(5, 0)},
		{"4:59.999999999", runbook, at(5, 0).Add(-time.Nanosecond), nil, nil, at(5, 0)},
		{"5:00 page on-call", runbook, at(5, 0), nil, []string{"oncall"}, at(5, 0)},
		{"5:00 on-call paged", runbook, at(5, 0), sent("oncall"), nil, at(10, 0)},
		{"9:59 on-call paged", runbook, at(9, 59), sent("oncall"), nil, at(10, 0)},
		{"10:00 page lead", runbook, at(10, 0), sent("oncall"), []string{"lead"}, at(10, 0)},
		{"10:00 nothing paged yet: both, in order", runbook, at(10, 0), nil, []string{"oncall", "lead"}, at(5, 0)},
		{"14:59 lead paged", runbook, at(14, 59), sent("oncall", "lead"), nil, at(15, 0)},
		{"15:00 war room", runbook, at(15, 0), sent("oncall", "lead"), []string{"war_room"}, at(15, 0)},
		{"15:00 after a restart with nothing recorded", runbook, at(15, 0), nil, []string{"oncall", "lead", "war_room"}, at(5, 0)},
		{"16:00 only lead was recorded", runbook, at(16, 0), sent("lead"), []string{"oncall", "war_room"}, at(5, 0)},
		{"20:00 all paged", runbook, at(20, 0), sent("oncall", "lead", "war_room"), nil, time.Time{}},
		{"3h all paged", runbook, at(180, 0), sent("oncall", "lead", "war_room"), nil, time.Time{}},
		{"unknown levels in sent are ignored", runbook, at(5, 0), sent("sev1"), []string{"oncall"}, at(5, 0)},
		{"empty ladder", nil, at(20, 0), nil, nil, time.Time{}},
		{"immediate step", escalate.Ladder{{Level: "now"}}, start, nil, []string{"now"}, start},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var due []string
			for _, s := range tc.ladder.Due(start, tc.now, tc.sent) {
				due = append(due, s.Level)
			}
			if !slices.Equal(due, tc.wantDue) {
				t.Errorf("Due = %v, want %v", due, tc.wantDue)
			}
			next, ok := tc.ladder.Next(start, tc.sent)
			if ok != !tc.wantNext.IsZero() || !next.Equal(tc.wantNext) {
				t.Errorf("Next = %v, %v; want %v, %v", next, ok, tc.wantNext, !tc.wantNext.IsZero())
			}
		})
	}
}

func TestLadderDueKeepsNotifiers(t *testing.T) {
	l := escalate.Ladder{{After: d(time.Minute), Level: "oncall", Notifiers: []string{"pd", "chat"}}}
	due := l.Due(start, start.Add(time.Minute), nil)
	if len(due) != 1 || !slices.Equal(due[0].Notifiers, []string{"pd", "chat"}) {
		t.Errorf("Due = %+v", due)
	}
}

// TestRunbookClock drives the runbook's ladder for 20 simulated minutes
// inside a synctest bubble, the way the engine does: sleep until Next, page
// what is Due, remember the level. Pages must go out at 5, 10 and 15
// minutes exactly, once each. Nothing really waits.
func TestRunbookClock(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		rec := record.NewFakeRecorder(100)
		cfg := eventsConfig()
		cfg.Announce = nil
		e, err := escalate.New(escalate.Options{Config: cfg, Events: rec})
		if err != nil {
			t.Fatal(err)
		}
		begin := time.Now() // the bubble's clock
		pages := runLadder(t, e, begin, begin.Add(20*time.Minute), nil)
		want := []string{"oncall at 5m0s", "lead at 10m0s", "war_room at 15m0s"}
		if !slices.Equal(pages, want) {
			t.Errorf("pages %v, want %v", pages, want)
		}
		if n := len(rec.Events); n != 3 {
			t.Fatalf("%d Events, want 3", n)
		}
		for _, level := range []string{"oncall", "lead", "war_room"} {
			if ev := <-rec.Events; !strings.HasPrefix(ev, "Warning AutoRollbackEscalated Escalated to "+level+": ") {
				t.Errorf("Event %q, want the %s page", ev, level)
			}
		}
		if got := time.Since(begin); got != 20*time.Minute {
			t.Errorf("simulated %s, want 20m", got)
		}
	})
}

// TestRunbookClockResolvedEarly: the incident is over at 12 minutes, so the
// war room is never opened and the two open pages are resolved.
func TestRunbookClockResolvedEarly(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		rec := record.NewFakeRecorder(100)
		cfg := eventsConfig()
		cfg.Announce = nil
		e, err := escalate.New(escalate.Options{Config: cfg, Events: rec})
		if err != nil {
			t.Fatal(err)
		}
		begin := time.Now()
		sent := map[string]bool{}
		pages := runLadder(t, e, begin, begin.Add(12*time.Minute), sent)
		if want := []string{"oncall at 5m0s", "lead at 10m0s"}; !slices.Equal(pages, want) {
			t.Errorf("pages %v, want %v", pages, want)
		}
		in := incident()
		in.StartedAt = begin
		if err := e.Resolve(context.Background(), in, []string{"oncall", "lead"}); err != nil {
			t.Fatal(err)
		}
		if n := len(rec.Events); n != 4 {
			t.Fatalf("%d Events, want 2 pages and 2 resolutions", n)
		}
		<-rec.Events
		<-rec.Events
		for _, level := range []string{"oncall", "lead"} {
			if ev := <-rec.Events; !strings.HasPrefix(ev, "Normal AutoRollbackResolved ") || !strings.Contains(ev, "autorollback.io/level:"+level) {
				t.Errorf("Event %q, want the resolution of %s", ev, level)
			}
		}
	})
}

// runLadder is the engine's loop for one incident until end: it returns
// "level at offset" for each page sent.
func runLadder(t *testing.T, e *escalate.Escalator, begin, end time.Time, sent map[string]bool) []string {
	t.Helper()
	if sent == nil {
		sent = map[string]bool{}
	}
	ladder := e.Ladder()
	in := incident()
	in.StartedAt = begin
	var pages []string
	for {
		next, ok := ladder.Next(begin, sent)
		if !ok || next.After(end) {
			break
		}
		time.Sleep(time.Until(next))
		for _, step := range ladder.Due(begin, time.Now(), sent) {
			m := escalate.Message{Incident: in, Summary: "Deployment production/event-service still failing after rollback"}
			if _, err := e.Page(context.Background(), step, m); err != nil {
				t.Errorf("Page %s: %v", step.Level, err)
			}
			sent[step.Level] = true
			pages = append(pages, fmt.Sprintf("%s at %s", step.Level, time.Since(begin)))
		}
	}
	time.Sleep(time.Until(end))
	return pages
}
