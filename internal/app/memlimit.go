package app

import (
	"errors"
	"fmt"
	"log/slog"
	"math"

	"github.com/KimMachineGun/automemlimit/memlimit"
)

// setMemoryLimit gives the Go runtime a soft memory limit of 90% of the
// container's (AUTOMEMLIMIT sets another fraction, or "off"; GOMEMLIMIT
// set explicitly wins). Without one the heap may grow to twice what is live
// before the collector runs, which during a burst of alerts is more than
// the container's limit leaves; with one the collector runs sooner instead
// of the container being killed. A container limit that cannot be read
// leaves the runtime without a limit, with a warning.
func setMemoryLimit(logger *slog.Logger, limit memlimit.Provider) (int64, error) {
	readable := func() (uint64, error) {
		n, err := limit()
		switch {
		case err == nil, errors.Is(err, memlimit.ErrNoLimit):
			return n, err
		case errors.Is(err, memlimit.ErrNoCgroup), errors.Is(err, memlimit.ErrCgroupsNotSupported):
			return 0, memlimit.ErrNoLimit
		default:
			logger.Warn("the container's memory limit cannot be read; the Go runtime has none", "err", err)
			return 0, memlimit.ErrNoLimit
		}
	}
	set, err := memlimit.Set(memlimit.WithProvider(readable), memlimit.WithLogger(logger))
	if err != nil {
		return 0, fmt.Errorf("set the Go runtime's memory limit (environment AUTOMEMLIMIT, GOMEMLIMIT): %w", err)
	}
	if set == math.MaxInt64 {
		logger.Info("the Go runtime has no memory limit")
	} else {
		logger.Info("the Go runtime's memory limit", "bytes", set)
	}
	return set, nil
}
