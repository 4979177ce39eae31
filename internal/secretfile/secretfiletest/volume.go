// Package secretfiletest lays out files the way the kubelet mounts a Secret
// volume, for tests of code that reads and watches them.
package secretfiletest

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"
)

// Volume is a directory laid out the way the kubelet's atomic writer lays
// out a Secret volume: each file is a symlink through ..data to a
// timestamped directory, and an update swaps ..data in one rename.
type Volume struct {
	t   testing.TB
	dir string
	gen int
}

// NewVolume makes a volume in a temporary directory holding files.
func NewVolume(t testing.TB, files map[string][]byte) *Volume {
	t.Helper()
	v := &Volume{t: t, dir: t.TempDir()}
	v.Update(files)
	for name := range files {
		if err := os.Symlink(filepath.Join("..data", name), filepath.Join(v.dir, name)); err != nil {
			t.Fatal(err)
		}
	}
	return v
}

// Dir is the volume's mount point.
func (v *Volume) Dir() string { return v.dir }

// Path is where a pod sees the file name.
func (v *Volume) Path(name string) string { return filepath.Join(v.dir, name) }

// Update writes a new timestamped directory, points ..data at it atomically
// and removes the previous one, as the kubelet does. It is safe to call from
// one goroutine while others read the volume.
func (v *Volume) Update(files map[string][]byte) {
	t := v.t
	t.Helper()
	v.gen++
	ts := fmt.Sprintf("..2026_01_01_00_00_00.%09d", v.gen)
	if err := os.Mkdir(filepath.Join(v.dir, ts), 0o755); err != nil {
		t.Fatal(err)
	}
	for name, b := range files {
		if err := os.WriteFile(filepath.Join(v.dir, ts, name), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	old, _ := os.Readlink(filepath.Join(v.dir, "..data"))
	tmp := filepath.Join(v.dir, "..data_tmp")
	if err := os.Symlink(ts, tmp); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, filepath.Join(v.dir, "..data")); err != nil {
		t.Fatal(err)
	}
	if old != "" {
		if err := os.RemoveAll(filepath.Join(v.dir, old)); err != nil {
			t.Fatal(err)
		}
	}
}
