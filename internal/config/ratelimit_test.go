package config

import (
	"testing"
	"time"

	"k8s.io/client-go/util/flowcontrol"
	testingclock "k8s.io/utils/clock/testing"
)

// The burst the defaults are sized for, and what each of its alerts costs
// the deciding client: requests counted by the scale benchmark (bench/scale,
// "API requests per alert"): the alert record and the incident created, the
// record's decision and the incident's escalation written.
const (
	burstAlerts     = 1000
	requestsByAlert = 5
	answerWithin    = 2 * time.Second
	decideWithin    = 15 * time.Second
)

// admittedAt returns when client-go's token bucket of the default
// configuration admits each of n requests all made at once: the wait the
// client-side rate limit alone puts in front of them.
func admittedAt(t *testing.T, n int) []time.Duration {
	t.Helper()
	d := Default().Kubernetes
	clk := testingclock.NewFakeClock(time.Unix(0, 0))
	rl := flowcontrol.NewTokenBucketRateLimiterWithClock(float32(d.QPS), d.Burst, clk)
	start := clk.Now()
	out := make([]time.Duration, n)
	for i := range out {
		for !rl.TryAccept() {
			clk.Step(time.Millisecond)
		}
		out[i] = clk.Since(start)
	}
	return out
}

// TestDefaultsTakeABurst checks the sizing of the default client rate limit
// and queue: a burst of 1,000 alerts is recorded without waiting for the
// limiter, every request of its decisions is let through within half the
// time the burst has to be decided (the other half is the API server's),
// and the whole burst may wait for a decision without a 503.
func TestDefaultsTakeABurst(t *testing.T) {
	at := admittedAt(t, burstAlerts*requestsByAlert)
	if intake := at[burstAlerts-1]; intake > 0 {
		t.Errorf("the %d record writes of a burst's intake wait %s for the client rate limit, want none (answers are due within %s)", burstAlerts, intake, answerWithin)
	}
	if all := at[len(at)-1]; all > decideWithin/2 {
		t.Errorf("the %d requests of a burst of %d alerts wait up to %s for the client rate limit, want at most %s (decisions are due within %s)",
			len(at), burstAlerts, all, decideWithin/2, decideWithin)
	}
	if p := Default().Engine.MaxPending; p < 2*burstAlerts {
		t.Errorf("engine.maxPending %d, want at least %d: twice a burst may wait for a decision", p, 2*burstAlerts)
	}
}
