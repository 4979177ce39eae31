package logging

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
)

// gatedWriter holds every write until its gate is opened.
type gatedWriter struct {
	gate chan struct{}
	mu   sync.Mutex
	buf  bytes.Buffer
	n    int // writes
}

func (g *gatedWriter) Write(p []byte) (int, error) {
	<-g.gate
	g.mu.Lock()
	defer g.mu.Unlock()
	g.n++
	return g.buf.Write(p)
}

func (g *gatedWriter) String() string {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.buf.String()
}

// Lines written while the output is busy go out together, in order, in
// the next write.
func TestWriterKeepsEveryLineInOrder(t *testing.T) {
	out := &gatedWriter{gate: make(chan struct{})}
	w := NewWriter(out)
	var want strings.Builder
	for i := range 10000 {
		line := fmt.Sprintf("line %d\n", i)
		want.WriteString(line)
		if n, err := w.Write([]byte(line)); err != nil || n != len(line) {
			t.Fatalf("Write = %d, %v; want %d, nil", n, err, len(line))
		}
	}
	// The writing goroutine holds the first line or lines, stuck at the
	// gate; the rest are buffered and go out in one more write.
	close(out.gate)
	if err := w.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if _, err := w.Write([]byte("after close\n")); err != nil {
		t.Fatalf("Write after Close: %v", err)
	}
	want.WriteString("after close\n")
	if got := out.String(); got != want.String() {
		t.Fatalf("written %d bytes, want %d in order; first difference at byte %d", len(got), want.Len(), firstDiff(got, want.String()))
	}
	if out.n > 3 {
		t.Errorf("%d writes for 10,000 lines buffered behind a stuck one, and one after Close; want at most 3", out.n)
	}
}

// While the output is stuck, the writer takes lines up to maxPending
// and then makes the next caller wait, rather than grow; the lines all come
// out, in order, once the output moves again.
func TestWriterIsBounded(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		out := &gatedWriter{gate: make(chan struct{})}
		w := NewWriter(out)
		line := []byte(strings.Repeat("x", 1023) + "\n")
		var want bytes.Buffer
		write := func() {
			want.Write(line)
			if _, err := w.Write(line); err != nil {
				t.Errorf("Write: %v", err)
			}
		}
		write()
		synctest.Wait() // the first line is being written, and stuck
		for range maxPending / len(line) {
			write()
		}
		returned := make(chan struct{})
		go func() {
			defer close(returned)
			write()
		}()
		synctest.Wait()
		select {
		case <-returned:
			t.Fatalf("a write past %d buffered bytes returned while the output was stuck", maxPending)
		default:
		}
		w.mu.Lock()
		held := len(w.buf)
		w.mu.Unlock()
		if held > maxPending {
			t.Fatalf("%d bytes buffered, bound %d", held, maxPending)
		}
		close(out.gate)
		<-returned
		if err := w.Close(); err != nil {
			t.Fatalf("Close: %v", err)
		}
		if got := out.String(); got != want.String() {
			t.Fatalf("written %d bytes, want %d in order", len(got), want.Len())
		}
	})
}

func firstDiff(a, b string) int {
	for i := range min(len(a), len(b)) {
		if a[i] != b[i] {
			return i
		}
	}
	return min(len(a), len(b))
}

// BenchmarkWriter is the cost of the webhook's line per notification,
// logged by 8 goroutines at once as concurrent notifications do, to a
// file: straight to it, and through a Writer.
func BenchmarkWriter(b *testing.B) {
	for _, behind := range []bool{false, true} {
		b.Run(fmt.Sprintf("behind=%t", behind), func(b *testing.B) {
			f, err := os.Create(filepath.Join(b.TempDir(), "log"))
			if err != nil {
				b.Fatal(err)
			}
			defer f.Close()
			var out io.Writer = f
			if behind {
				w := NewWriter(f)
				defer w.Close()
				out = w
			}
			l := slog.New(slog.NewJSONHandler(out, nil))
			b.ReportAllocs()
			b.SetParallelism(8)
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					l.LogAttrs(context.Background(), slog.LevelInfo, "notification accepted",
						slog.String("group_key", `{}/{impact=~"service_down"}:{alertname="EventServiceDown"}`), slog.String("sender", "default"),
						slog.String("status", "firing"), slog.Int("alerts", 1), slog.Int("accepted", 0), slog.Int("duplicates", 0),
						slog.Int("resolved", 0), slog.Int("refused", 1))
				}
			})
		})
	}
}
