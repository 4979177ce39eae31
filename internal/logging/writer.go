// Package logging writes the daemon's log.
package logging

import (
	"io"
	"sync"
)

// maxPending bounds the log lines a Writer holds before a caller
// waits for them to be written.
const maxPending = 256 << 10

// Writer writes the log behind the code that logs. A line is copied
// into a buffer and its caller goes on; one goroutine writes what has
// gathered, in one write. In a flood of notifications many lines go out in
// one system call instead of one each; when the daemon is quiet, a line is
// written as soon as that goroutine runs. A crash loses the lines gathered
// while the last write was in progress, no more: unlike klog or zap's
// buffered writer, nothing waits for a timer to flush. Past maxPending
// bytes a caller waits, so the buffer stays bounded.
type Writer struct {
	out  io.Writer
	kick chan struct{} // a line is waiting; capacity 1
	done chan struct{} // closed when the writing goroutine returns

	mu     sync.Mutex
	taken  *sync.Cond // the buffer was taken to be written, or Close ran
	buf    []byte
	closed bool
}

// NewWriter starts writing to out; Close stops it.
func NewWriter(out io.Writer) *Writer {
	w := &Writer{out: out, kick: make(chan struct{}, 1), done: make(chan struct{})}
	w.taken = sync.NewCond(&w.mu)
	go w.run()
	return w
}

// Write takes a copy of p to be written. It does not report errors of the
// write itself, which come later; slog drops them anyway.
func (w *Writer) Write(p []byte) (int, error) {
	w.mu.Lock()
	for !w.closed && len(w.buf) > 0 && len(w.buf)+len(p) > maxPending {
		w.taken.Wait()
	}
	if w.closed {
		w.mu.Unlock()
		// After the lines buffered before Close.
		<-w.done
		return w.out.Write(p)
	}
	first := len(w.buf) == 0
	w.buf = append(w.buf, p...)
	w.mu.Unlock()
	// A line added to others is written with them: their kick is waiting,
	// or the writing goroutine has it and is yet to take the buffer.
	if first {
		select {
		case w.kick <- struct{}{}:
		default:
		}
	}
	return len(p), nil
}

func (w *Writer) run() {
	defer close(w.done)
	// The buffer last written, handed back for the next lines.
	var spare []byte
	for range w.kick {
		w.mu.Lock()
		b := w.buf
		w.buf = spare[:0]
		stop := w.closed
		w.taken.Broadcast()
		w.mu.Unlock()
		if len(b) > 0 {
			_, _ = w.out.Write(b)
		}
		spare = b
		if cap(spare) > 2*maxPending {
			// One line that large is not kept for the next ones.
			spare = nil
		}
		if stop {
			return
		}
	}
}

// Close writes what is buffered and returns once it is written; later
// writes go straight to out.
func (w *Writer) Close() error {
	w.mu.Lock()
	if w.closed {
		w.mu.Unlock()
		<-w.done
		return nil
	}
	w.closed = true
	w.taken.Broadcast()
	w.mu.Unlock()
	// A kick already waiting will do: the writing goroutine either takes
	// it, or saw closed already and wrote the rest.
	select {
	case w.kick <- struct{}{}:
	default:
	}
	<-w.done
	return nil
}
