package engine

import (
	"context"
	"fmt"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/autorollbackd/autorollbackd/internal/escalate"
	"github.com/autorollbackd/autorollbackd/internal/incident"
	"github.com/autorollbackd/autorollbackd/internal/policy"
	"github.com/autorollbackd/autorollbackd/internal/testenv"
	"github.com/autorollbackd/autorollbackd/internal/verify"
)

// A level without notifiers is reached on the clock, but nobody is paged:
// the incident must say so, not "paged oncall".
func TestLevelWithoutNotifiersRecordsNoReceiver(t *testing.T) {
	for _, tc := range []struct {
		name  string
		setup setup
		// receivers of each level; nil: no receiver.
		receivers map[string][]string
	}{
		{
			name:      "shipped defaults",
			setup:     func(_ *verify.Config, e *escalate.Config, _ *Options) { *e = escalate.DefaultConfig() },
			receivers: map[string][]string{},
		},
		{
			name: "only the lead has a notifier",
			setup: func(_ *verify.Config, e *escalate.Config, _ *Options) {
				e.Ladder[0].Notifiers, e.Ladder[2].Notifiers = []string{}, []string{}
			},
			receivers: map[string][]string{escalate.LevelLead: {"people"}},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t, optedIn, nil)
			// The ladder's levels and notifiers as set up, on a clock of
			// seconds: the clock starts at the rollout, not before.
			seconds := func(_ *verify.Config, e *escalate.Config, _ *Options) {
				for i := range e.Ladder {
					e.Ladder[i].After = metav1.Duration{Duration: time.Duration(i+1) * time.Second}
				}
			}
			e := f.startEngine(t, policy.DefaultConfig(), 1, tc.setup, seconds)
			// An alert that predates the rollout escalates.
			n := firing(f.ns, "no-receiver", f.rolloutAt.Add(-time.Hour), map[string]string{"impact": "service_down"})
			if _, err := e.Accept(context.Background(), n); err != nil {
				t.Fatal(err)
			}
			inc := e.waitIncident(t, n, incident.StateEscalated)
			testenv.Eventually(t, 30*time.Second, "every level of the ladder reached", func(ctx context.Context) (bool, string) {
				v, err := e.opts.Incidents.Get(ctx, inc.ID)
				if err != nil {
					return false, err.Error()
				}
				inc = v.Incident
				done := len(inc.Pages) == 3 && !slices.ContainsFunc(inc.Pages, func(p incident.Page) bool { return p.Sending })
				return done, fmt.Sprintf("pages %+v\n%s", inc.Pages, inc.Render())
			})

			timeline := inc.Render()
			for _, p := range inc.Pages {
				want := tc.receivers[p.Level]
				if p.Error != "" {
					t.Errorf("page %s failed: %s", p.Level, p.Error)
				}
				if p.NoReceiver != (want == nil) || !slices.Equal(p.Receivers, want) {
					t.Errorf("page %s: receivers %q, no receiver %v; want receivers %q, no receiver %v",
						p.Level, p.Receivers, p.NoReceiver, want, want == nil)
				}
				paged := "paged " + p.Level + ": "
				noReceiver := "no receiver for " + p.Level + ": nobody was paged"
				if want == nil {
					if strings.Contains(timeline, paged) || !strings.Contains(timeline, noReceiver) {
						t.Errorf("timeline says %s was paged, or not that nobody was:\n%s", p.Level, timeline)
					}
					if v := escalations(t, e.reg, p.Level, "no_receiver"); v != 1 {
						t.Errorf("escalations_total{%s,no_receiver} = %v, want 1", p.Level, v)
					}
					continue
				}
				if !containsLine(inc, paged, " (to "+strings.Join(want, ", ")+")") || strings.Contains(timeline, noReceiver) {
					t.Errorf("timeline does not say %s was paged to %v:\n%s", p.Level, want, timeline)
				}
			}
			var levels []string
			for _, m := range e.messages.find("page") {
				levels = append(levels, fmt.Sprint(m["level"]))
			}
			var wantLevels []string
			for _, l := range []string{escalate.LevelOnCall, escalate.LevelLead, escalate.LevelWarRoom} {
				if tc.receivers[l] != nil {
					wantLevels = append(wantLevels, l)
				}
			}
			if !slices.Equal(levels, wantLevels) {
				t.Errorf("the notifier got pages of %v, want %v", levels, wantLevels)
			}
		})
	}
}

// containsLine reports whether a timeline entry starts with prefix and
// ends with suffix.
func containsLine(inc *incident.Incident, prefix, suffix string) bool {
	return slices.ContainsFunc(inc.Timeline, func(e incident.Entry) bool {
		return strings.HasPrefix(e.What, prefix) && strings.HasSuffix(e.What, suffix)
	})
}

// escalations returns autorollbackd_escalations_total{level,result}.
func escalations(t *testing.T, reg *prometheus.Registry, level, result string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != "autorollbackd_escalations_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			labels := map[string]string{}
			for _, lp := range m.GetLabel() {
				labels[lp.GetName()] = lp.GetValue()
			}
			if labels["level"] == level && labels["result"] == result {
				return m.GetCounter().GetValue()
			}
		}
	}
	t.Fatalf("no autorollbackd_escalations_total{level=%q,result=%q}", level, result)
	return 0
}
