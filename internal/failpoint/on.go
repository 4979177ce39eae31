//go:build failpoint

package failpoint

import (
	"os"
	"syscall"
)

var armed = os.Getenv(Env)

// Hit kills the process with SIGKILL, as the kernel's OOM killer or a
// node's loss would, when point is the one Env names.
func Hit(point string) {
	if point != "" && point == armed {
		if err := syscall.Kill(os.Getpid(), syscall.SIGKILL); err != nil {
			panic("failpoint " + point + ": kill the process: " + err.Error())
		}
		select {} // the signal is delivered; nothing after it runs
	}
}
