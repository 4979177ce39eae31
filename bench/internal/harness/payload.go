package harness

import (
	"encoding/json"
	"fmt"
	"math"
	"os"
	"slices"
	"time"
)

// TemplatePath is the notification captured from a real Alertmanager that
// every benchmark payload is derived from, relative to the module root.
const TemplatePath = "internal/webhook/testdata/firing.json"

// Alert is what a benchmark alert varies: the workload it names, its
// identity, its impact label and its start.
type Alert struct {
	Ref         Ref
	Fingerprint string
	Impact      string
	StartsAt    time.Time
}

// Payload returns a firing notification holding the given alerts, each a
// copy of the template's first alert with the namespace, deployment,
// impact, fingerprint and start replaced.
func Payload(template []byte, alerts []Alert) ([]byte, error) {
	var n map[string]any
	if err := json.Unmarshal(template, &n); err != nil {
		return nil, fmt.Errorf("decode payload template: %w", err)
	}
	list, ok := n["alerts"].([]any)
	if !ok || len(list) == 0 {
		return nil, fmt.Errorf("payload template has no alerts")
	}
	first, err := json.Marshal(list[0])
	if err != nil {
		return nil, err
	}
	out := make([]any, 0, len(alerts))
	for _, a := range alerts {
		var m map[string]any
		if err := json.Unmarshal(first, &m); err != nil {
			return nil, err
		}
		l := m["labels"].(map[string]any)
		l["namespace"], l["deployment"], l["impact"] = a.Ref.Namespace, a.Ref.Name, a.Impact
		l["pod"] = a.Ref.Name + "-7d9c6b5f4-abcde"
		m["fingerprint"] = a.Fingerprint
		m["startsAt"] = a.StartsAt.UTC().Format(time.RFC3339Nano)
		out = append(out, m)
	}
	n["alerts"] = out
	if len(alerts) > 0 {
		common := n["commonLabels"].(map[string]any)
		common["impact"] = alerts[0].Impact
		delete(common, "namespace")
		delete(common, "deployment")
		if len(alerts) == 1 {
			common["namespace"], common["deployment"] = alerts[0].Ref.Namespace, alerts[0].Ref.Name
		}
	}
	return json.Marshal(n)
}

// ReadTemplate reads TemplatePath from the module root (the working
// directory of bench/run.sh).
func ReadTemplate() ([]byte, error) {
	b, err := os.ReadFile(TemplatePath)
	if err != nil {
		return nil, fmt.Errorf("read the payload template (run from the module root): %w", err)
	}
	return b, nil
}

// Stats summarises a sample of durations.
type Stats struct {
	N                       int
	Min, P50, P90, P99, Max time.Duration
	Mean                    time.Duration
}

// Summarise returns the nearest-rank percentiles of d: P99 of 200 samples
// is the 198th smallest.
func Summarise(d []time.Duration) Stats {
	if len(d) == 0 {
		return Stats{}
	}
	s := slices.Clone(d)
	slices.Sort(s)
	rank := func(p float64) time.Duration {
		i := int(math.Ceil(p*float64(len(s)))) - 1
		return s[max(0, min(i, len(s)-1))]
	}
	var sum time.Duration
	for _, x := range s {
		sum += x
	}
	return Stats{N: len(s), Min: s[0], P50: rank(0.50), P90: rank(0.90), P99: rank(0.99), Max: s[len(s)-1], Mean: sum / time.Duration(len(s))}
}

// Ms formats a duration in milliseconds with one decimal.
func Ms(d time.Duration) string { return fmt.Sprintf("%.1f", float64(d.Microseconds())/1000) }

// Row is a markdown table row of a Stats, in milliseconds: n, min, p50,
// p90, p99, max, mean.
func (s Stats) Row(name string) string {
	return fmt.Sprintf("| %s | %d | %s | %s | %s | %s | %s | %s |", name, s.N, Ms(s.Min), Ms(s.P50), Ms(s.P90), Ms(s.P99), Ms(s.Max), Ms(s.Mean))
}

// StatsHeader is the header of a table of Stats rows.
const StatsHeader = "| measured | n | min ms | p50 ms | p90 ms | p99 ms | max ms | mean ms |\n|---|---:|---:|---:|---:|---:|---:|---:|"
