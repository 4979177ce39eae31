package escalate

import (
	"context"
	"time"
)

// WithSleep replaces the wait between retries, so that tests record the
// waits instead of waiting.
func WithSleep(o Options, f func(context.Context, time.Duration) error) Options {
	o.sleep = f
	return o
}

// TypeNames returns the notifier types in the order errors list them, and
// RegisteredTypes the registry's keys, for a test that they agree.
func TypeNames() []string { return typeNames }

func RegisteredTypes() []string {
	var out []string
	for k := range notifierTypes {
		out = append(out, k)
	}
	return out
}
