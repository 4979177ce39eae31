package reliability

import (
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"

	"github.com/autorollbackd/autorollbackd/internal/testenv"
)

// binary is the daemon under test, built once for the package, with the
// failpoints the crash trials kill it at (see internal/failpoint).
var binary string

func TestMain(m *testing.M) {
	flag.Parse()
	if testing.Short() {
		// Every test here needs the control plane and skips; build nothing.
		os.Exit(testenv.Run(m))
	}
	dir, err := os.MkdirTemp("", "autorollbackd-reliability-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	binary = filepath.Join(dir, "autorollbackd")
	if out, err := exec.Command("go", "build", "-tags", "failpoint", "-o", binary, "../../cmd/autorollbackd").CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "build autorollbackd: %v\n%s", err, out)
		_ = os.RemoveAll(dir)
		os.Exit(1)
	}
	code := testenv.Run(m)
	_ = os.RemoveAll(dir)
	os.Exit(code)
}

// envSeed returns RELIABILITY_SEED, or 0 when it is not set or not a number.
func envSeed() uint64 {
	s, err := strconv.ParseUint(os.Getenv("RELIABILITY_SEED"), 10, 64)
	if err != nil {
		return 0
	}
	return s
}
