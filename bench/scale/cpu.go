package main

import (
	"fmt"
	"os"
	"runtime"
	"strings"
	"time"

	"github.com/autorollbackd/autorollbackd/bench/internal/harness"
)

// meter splits the run into phases and counts the CPU time each process of
// interest used in each, and the whole machine's: where the time of a
// phase went, and how much other work on the machine took.
type meter struct {
	pids   map[string]int
	cur    *harness.Meter
	phases []phase
}

type phase struct {
	name string
	harness.Usage
}

// Processes, in the order the table shows them.
const (
	procDaemon = "autorollbackd"
	procSelf   = "this program"
)

var procOrder = []string{"kube-apiserver", "etcd", "kube-controller-manager", "kube-scheduler", "kwok-controller", procDaemon, procSelf}

func newMeter(components map[string]int) *meter {
	m := &meter{pids: map[string]int{procSelf: os.Getpid()}}
	for name, pid := range components {
		m.pids[name] = pid
	}
	m.cur = harness.StartMeter(m.pids)
	return m
}

// daemon starts or (pid 0) stops counting the daemon. Its CPU time counts
// from its start: call it in the phase it started in.
func (m *meter) daemon(pid int) {
	if pid == 0 {
		delete(m.pids, procDaemon)
		return
	}
	m.pids[procDaemon] = pid
}

// mark ends the current phase, names it, and starts the next.
func (m *meter) mark(name string) {
	m.phases = append(m.phases, phase{name: name, Usage: m.cur.Read()})
	m.skip()
}

// skip starts the next phase without recording the current one.
func (m *meter) skip() { m.cur = harness.StartMeter(m.pids) }

// table is the markdown table of the phases: CPU seconds by process, the
// machine's busy seconds, and what was left for other work.
func (m *meter) table() string {
	var b strings.Builder
	b.WriteString("| phase | wall s |")
	for _, p := range procOrder {
		b.WriteString(" " + p + " |")
	}
	fmt.Fprintf(&b, " whole machine (%d cores) | other work |\n|---|---:|", runtime.NumCPU())
	for range procOrder {
		b.WriteString("---:|")
	}
	b.WriteString("---:|---:|\n")
	for _, p := range m.phases {
		fmt.Fprintf(&b, "| %s | %.1f |", p.name, p.Wall.Seconds())
		var listed time.Duration
		for _, proc := range procOrder {
			d, ok := p.Procs[proc]
			if !ok {
				b.WriteString(" – |")
				continue
			}
			listed += d
			fmt.Fprintf(&b, " %.1f |", d.Seconds())
		}
		fmt.Fprintf(&b, " %.1f (%.0f%%) | %.1f |\n", p.Machine.Seconds(), 100*p.Busy(), (p.Machine - listed).Seconds())
	}
	return b.String()
}
