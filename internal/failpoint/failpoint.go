// Package failpoint names the moments the reliability suite kills the
// daemon at, deterministically. Only a binary built with the tag
// "failpoint" acts on them; in any other build Hit does nothing.
package failpoint

// The points.
const (
	// AfterRollbackPatch: a rollback taken before any record of it was
	// accepted by the API server; neither the alert record nor the
	// incident is written yet.
	AfterRollbackPatch = "after-rollback-patch"
)

// Env names the point at which a failpoint build kills itself. It is not
// AUTOROLLBACKD_*, which names configuration keys.
const Env = "FAILPOINT_AUTOROLLBACKD"
