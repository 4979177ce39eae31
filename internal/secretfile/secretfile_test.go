package secretfile_test

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/autorollbackd/autorollbackd/internal/secretfile"
	"github.com/autorollbackd/autorollbackd/internal/secretfile/secretfiletest"
)

// TestReadDuringVolumeUpdates reads a Secret volume's file while the volume
// is updated over and over. Every read must return one of the versions
// written: a read that resolved the path just before a swap must not fail
// because the swap then removed the old directory.
func TestReadDuringVolumeUpdates(t *testing.T) {
	const updates = 3000
	vol := secretfiletest.NewVolume(t, map[string][]byte{"token": []byte("v0")})
	var stop atomic.Bool
	var reads, fails atomic.Int64
	var firstErr atomic.Pointer[error]
	var wg sync.WaitGroup
	for range 2 {
		wg.Go(func() {
			for !stop.Load() {
				b, err := secretfile.Read(vol.Path("token"))
				reads.Add(1)
				if err == nil && (len(b) < 2 || b[0] != 'v') {
					err = errors.New("read " + strconv.Quote(string(b)) + ", not a version written")
				}
				if err != nil {
					fails.Add(1)
					firstErr.CompareAndSwap(nil, &err)
				}
			}
		})
	}
	for i := 1; i <= updates; i++ {
		vol.Update(map[string][]byte{"token": []byte("v" + strconv.Itoa(i))})
	}
	stop.Store(true)
	wg.Wait()
	if n := fails.Load(); n > 0 {
		t.Errorf("%d of %d reads during %d updates failed, the first: %v", n, reads.Load(), updates, *firstErr.Load())
	}
	t.Logf("%d reads during %d updates", reads.Load(), updates)
}

func TestReadMissingFile(t *testing.T) {
	vol := secretfiletest.NewVolume(t, map[string][]byte{"token": []byte("v0")})
	for _, path := range []string{
		filepath.Join(t.TempDir(), "absent"),
		vol.Path("absent"),
	} {
		_, err := secretfile.Read(path)
		if !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("Read(%s) = %v, want a file-not-found error", path, err)
		}
	}
	// A volume whose ..data is gone: the link is there, its target is not.
	if err := os.Remove(filepath.Join(vol.Dir(), "..data")); err != nil {
		t.Fatal(err)
	}
	if _, err := secretfile.Read(vol.Path("token")); !errors.Is(err, fs.ErrNotExist) || !strings.Contains(err.Error(), vol.Path("token")) {
		t.Errorf("Read of a dangling link = %v, want a file-not-found error that names the path read", err)
	}
}

func TestReadOtherErrors(t *testing.T) {
	dir := t.TempDir()
	if _, err := secretfile.Read(dir); err == nil || errors.Is(err, fs.ErrNotExist) {
		t.Errorf("Read of a directory = %v, want the read's own error", err)
	}
	path := filepath.Join(dir, "token")
	if err := os.WriteFile(path, []byte("plain"), 0o600); err != nil {
		t.Fatal(err)
	}
	if b, err := secretfile.Read(path); err != nil || string(b) != "plain" {
		t.Errorf("Read of a plain file = %q, %v", b, err)
	}
}
