package policy

import (
	"fmt"
	"strings"
	"sync"
	"testing"

	"github.com/autorollbackd/autorollbackd/internal/kinds"
	"github.com/prometheus/alertmanager/pkg/labels"
)

// TestAlertMatchersCacheIsBounded parses more distinct annotation values
// than the cache holds, and one longer than it keeps; the cache stays
// within its bound and every answer is the parser's.
func TestAlertMatchersCacheIsBounded(t *testing.T) {
	p, err := Compile(DefaultConfig())
	if err != nil {
		t.Fatal(err)
	}
	for i := range 2 * matchersCacheSize {
		v := fmt.Sprintf(`{team="t%d"}`, i)
		if i%2 == 1 {
			v = fmt.Sprintf(`{team=~"(%d"}`, i) // a parse error is cached too
		}
		ms, err := p.alertMatchers(v)
		want, wantErr := labels.ParseMatchers(v)
		if fmt.Sprint(ms) != fmt.Sprint(want) || fmt.Sprint(err) != fmt.Sprint(wantErr) {
			t.Fatalf("alertMatchers(%q) = %v, %v; want %v, %v", v, ms, err, want, wantErr)
		}
	}
	if n := p.matchers.Len(); n != matchersCacheSize {
		t.Errorf("the cache holds %d values, want %d", n, matchersCacheSize)
	}

	long := `{team="` + strings.Repeat("x", matchersCacheMaxBytes) + `"}`
	if _, err := p.alertMatchers(long); err != nil {
		t.Fatal(err)
	}
	if _, ok := p.matchers.Get(long); ok {
		t.Errorf("a value of %d bytes was cached, the limit is %d", len(long), matchersCacheMaxBytes)
	}
}

// TestAlertMatchersConcurrent screens alerts against a few annotation
// values from many goroutines at once, as intake does; run with -race.
func TestAlertMatchersConcurrent(t *testing.T) {
	p, err := Compile(DefaultConfig())
	if err != nil {
		t.Fatal(err)
	}
	values := []string{`{team="payments"}`, `team=~"pay.*",severity!="info"`, `{team=~"("}`, `{}`}
	admits := []bool{true, true, false, false}
	ref := Ref{Kind: KindDeployment, Namespace: "production", Name: "event-service"}
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			for i := range 200 {
				k := (g + i) % len(values)
				d := p.Screen(Input{
					Alert:  Alert{Status: "firing", Labels: map[string]string{"team": "payments", "severity": "critical"}},
					Target: ref,
					Workload: &Workload{Ref: ref, Revision: 1,
						Labels:      map[string]string{DefaultOptInLabel: "true"},
						Annotations: map[string]string{kinds.AnnotationAlertMatchers: values[k]}},
				})
				if admitted := d.Outcome == ""; admitted != admits[k] {
					t.Errorf("annotation %q: admitted %v, want %v\n%s", values[k], admitted, admits[k], d)
					return
				}
			}
		})
	}
	wg.Wait()
}

// BenchmarkAlertMatchers compares a cached annotation value with parsing
// it, in one run, since timings on a busy machine vary between runs.
func BenchmarkAlertMatchers(b *testing.B) {
	p, err := Compile(DefaultConfig())
	if err != nil {
		b.Fatal(err)
	}
	const v = `{team="payments", severity=~"critical|page"}`
	b.Run("cached", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := p.alertMatchers(v); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("parsed", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := labels.ParseMatchers(v); err != nil {
				b.Fatal(err)
			}
		}
	})
}
