package webhook

import (
	"log/slog"
	"path/filepath"
	"slices"
	"sync"
	"time"

	"github.com/fsnotify/fsnotify"
)

// defaultRefreshInterval is how often secrets are re-read even without a
// file system event.
const defaultRefreshInterval = 30 * time.Second

// watcher calls reload when anything changes in the directory of a watched
// file, and every interval regardless.
//
// The directories are watched rather than the files because a Kubernetes
// Secret volume updates by swapping the ..data symlink: the file's path never
// sees an event of its own, and a watch on the old target dies with it. The
// timer covers what events miss: a directory replaced whole, an inotify limit,
// a network file system.
type watcher struct {
	fsw      *fsnotify.Watcher
	stop     chan struct{}
	done     chan struct{}
	stopOnce sync.Once
}

// watchFiles starts the watcher. A failure to set up fsnotify is logged and
// leaves the timer alone, rather than failing the daemon's start.
func watchFiles(files []string, interval time.Duration, useFSNotify bool, reload func(), logger *slog.Logger) *watcher {
	w := &watcher{stop: make(chan struct{}), done: make(chan struct{})}
	if useFSNotify {
		w.fsw = newFSWatcher(files, logger)
	}
	go w.run(interval, reload, logger)
	return w
}

func newFSWatcher(files []string, logger *slog.Logger) *fsnotify.Watcher {
	fsw, err := fsnotify.NewWatcher()
	if err != nil {
		logger.Warn("cannot watch secret files, re-reading them on a timer only", "err", err)
		return nil
	}
	var dirs []string
	for _, f := range files {
		dirs = append(dirs, filepath.Dir(f))
	}
	slices.Sort(dirs)
	for _, d := range slices.Compact(dirs) {
		if err := fsw.Add(d); err != nil {
			logger.Warn("cannot watch secret directory, re-reading it on a timer only", "dir", d, "err", err)
		}
	}
	return fsw
}

func (w *watcher) run(interval time.Duration, reload func(), logger *slog.Logger) {
	defer close(w.done)
	tick := time.NewTicker(interval)
	defer tick.Stop()
	var events <-chan fsnotify.Event
	var errs <-chan error
	if w.fsw != nil {
		events, errs = w.fsw.Events, w.fsw.Errors
	}
	for {
		select {
		case <-w.stop:
			return
		case _, ok := <-events:
			if !ok {
				events = nil
				continue
			}
			reload()
		case err, ok := <-errs:
			if !ok {
				errs = nil
				continue
			}
			logger.Warn("watching secret files", "err", err)
		case <-tick.C:
			reload()
		}
	}
}

// Close stops the watcher and waits for a reload in progress to finish.
func (w *watcher) Close() error {
	var err error
	w.stopOnce.Do(func() {
		close(w.stop)
		if w.fsw != nil {
			err = w.fsw.Close()
		}
		<-w.done
	})
	return err
}
