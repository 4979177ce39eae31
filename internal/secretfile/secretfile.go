// Package secretfile reads secrets mounted as files without losing a read to
// the update of a Kubernetes Secret volume.
package secretfile

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
)

// maxSwaps bounds how many volume updates in a row one Read follows.
const maxSwaps = 8

// Read reads the file at path.
//
// The kubelet updates a Secret or ConfigMap volume by pointing its ..data
// symlink at a new directory and then removing the old directory. A read
// that resolved the path just before the swap finds its file removed: the
// volume is not broken, the read is late. So a read that finds no file is
// made again as long as the path's lookup ends somewhere new each time. A
// missing file fails on the second read, with the error of a plain read.
func Read(path string) ([]byte, error) {
	b, err := os.ReadFile(path)
	var last string
	for swaps := 0; errors.Is(err, fs.ErrNotExist) && swaps < maxSwaps; swaps++ {
		end := lookupEnd(path)
		if swaps > 0 && end == last {
			break
		}
		last = end
		b, err = os.ReadFile(path)
	}
	return b, err
}

// lookupEnd is where a lookup of path ends: the file it resolves to, or the
// link or directory missing on the way.
func lookupEnd(path string) string {
	target, err := filepath.EvalSymlinks(path)
	if missing := (*fs.PathError)(nil); errors.As(err, &missing) {
		return missing.Path
	}
	if err != nil {
		return err.Error()
	}
	return target
}
