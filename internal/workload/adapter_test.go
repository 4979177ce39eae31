package workload

import (
	"errors"
	"testing"

	"github.com/autorollbackd/autorollbackd/internal/kinds"
)

// Every kind the policy accepts has an adapter, and the adapter is of that
// kind; any other kind is refused by name.
func TestFor(t *testing.T) {
	for _, k := range kinds.All() {
		a, err := For(k)
		if err != nil {
			t.Fatalf("For(%s) = %v", k, err)
		}
		if a.Kind() != k {
			t.Errorf("For(%s).Kind() = %s", k, a.Kind())
		}
	}
	if _, err := For("CronJob"); !errors.Is(err, ErrUnsupportedKind) || err.Error() != `unsupported kind "CronJob"` {
		t.Errorf("For(CronJob) = %v, want ErrUnsupportedKind naming it", err)
	}
}
