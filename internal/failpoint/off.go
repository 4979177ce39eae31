//go:build !failpoint

package failpoint

// Hit does nothing: this binary was built without failpoints.
func Hit(string) {}
