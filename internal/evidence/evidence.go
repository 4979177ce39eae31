// Package evidence keeps what the pods of a bad revision showed before a
// rollback replaces them: their phase, node and restarts, each container's
// state and last termination, and the tail of its log. The runbook asks
// people to review the logs of the failed deployment; once the daemon has
// rolled back, those pods are gone within seconds, so the incident records
// them first. Everything is bounded by Limits, because the snapshot lives in
// the incident's ConfigMap.
package evidence

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/autorollbackd/autorollbackd/internal/kubeclient"
	"github.com/autorollbackd/autorollbackd/internal/policy"
	"github.com/autorollbackd/autorollbackd/internal/workload"
)

// Limits bound a snapshot. A field zero or less takes its default
// (DefaultLimits).
type Limits struct {
	// Pods is the most pods recorded; those not Ready and those restarted
	// most come first.
	Pods int
	// LogLines is the most lines kept of each log (the last ones).
	LogLines int
	// LogBytes is the most bytes kept of each log (the last ones).
	LogBytes int
	// MessageBytes is the most bytes kept of a pod's or a termination's
	// message.
	MessageBytes int
	// TotalBytes bounds the snapshot's JSON encoding as a whole. The pods'
	// states are recorded first, then their logs while room is left.
	TotalBytes int
}

// DefaultLimits returns the limits a zero Limits stands for: 20 pods, the
// last 50 lines and at most 4 KiB of each log, 1 KiB of each message, 64
// KiB in all.
func DefaultLimits() Limits {
	return Limits{Pods: 20, LogLines: 50, LogBytes: 4 << 10, MessageBytes: 1 << 10, TotalBytes: 64 << 10}
}

func (l Limits) withDefaults() Limits {
	d := DefaultLimits()
	positive := func(v, def int) int {
		if v <= 0 {
			return def
		}
		return v
	}
	return Limits{
		Pods: positive(l.Pods, d.Pods), LogLines: positive(l.LogLines, d.LogLines), LogBytes: positive(l.LogBytes, d.LogBytes),
		MessageBytes: positive(l.MessageBytes, d.MessageBytes), TotalBytes: positive(l.TotalBytes, d.TotalBytes),
	}
}

// maxLogRead bounds what is read of one log to find its last LogBytes: the
// last LogLines lines may be longer than that, and a line has no length
// limit.
const maxLogRead = 1 << 20

// logWorkers is how many logs are read at once.
const logWorkers = 4

// Snapshot is what the pods of one revision of a workload showed when it
// was taken.
type Snapshot struct {
	TakenAt  time.Time  `json:"takenAt"`
	Target   policy.Ref `json:"target"`
	Revision int64      `json:"revision"`
	// Hash is the revision's label on its pods: pod-template-hash for a
	// Deployment, controller-revision-hash for a StatefulSet or DaemonSet.
	Hash string `json:"hash,omitempty"`
	// PodsFound is how many pods the revision had; Pods holds those
	// recorded.
	PodsFound int   `json:"podsFound"`
	Pods      []Pod `json:"pods"`
	// Truncated says what the limits left out or cut; nil when nothing.
	Truncated *Truncation `json:"truncated,omitempty"`
}

// Truncation counts what the limits left out or cut.
type Truncation struct {
	// Pods is the number of pods found but not recorded.
	Pods int `json:"pods,omitempty"`
	// LogsCut is the number of logs of which only the last lines or
	// bytes were kept.
	LogsCut int `json:"logsCut,omitempty"`
	// LogsOmitted is the number of logs read but not kept at all, the
	// snapshot having reached Limits.TotalBytes.
	LogsOmitted int `json:"logsOmitted,omitempty"`
	// Messages is the number of messages cut to Limits.MessageBytes.
	Messages int `json:"messages,omitempty"`
}

// Pod is one pod of the revision.
type Pod struct {
	Name  string          `json:"name"`
	Phase corev1.PodPhase `json:"phase"`
	Node  string          `json:"node,omitempty"`
	Ready bool            `json:"ready"`
	// Restarts is the sum of its containers' restart counts.
	Restarts    int32     `json:"restarts"`
	Terminating bool      `json:"terminating,omitempty"`
	Created     time.Time `json:"created,omitzero"`
	// Reason and Message are the pod status's, or, when it has none and
	// the pod is not scheduled, the scheduler's (for example
	// Unschedulable: 0/3 nodes are available: ...).
	Reason     string      `json:"reason,omitempty"`
	Message    string      `json:"message,omitempty"`
	Containers []Container `json:"containers"`
}

// Container is one container of a pod, init containers first.
type Container struct {
	Name         string `json:"name"`
	Init         bool   `json:"init,omitempty"`
	Image        string `json:"image,omitempty"`
	Ready        bool   `json:"ready"`
	RestartCount int32  `json:"restartCount"`
	// State is running, waiting or terminated, with the reason when there
	// is one ("waiting: CrashLoopBackOff"); empty when the container has
	// no status yet.
	State string `json:"state,omitempty"`
	// LastTermination is the container's latest termination: its current
	// state when terminated, else its last state.
	LastTermination *Termination `json:"lastTermination,omitempty"`
	// Logs holds the current log, and the previous instance's log when the
	// container restarted.
	Logs []Log `json:"logs,omitempty"`
}

// Termination is how a container ended.
type Termination struct {
	Reason     string    `json:"reason,omitempty"`
	ExitCode   int32     `json:"exitCode"`
	Signal     int32     `json:"signal,omitempty"`
	Message    string    `json:"message,omitempty"`
	FinishedAt time.Time `json:"finishedAt,omitzero"`
}

// Log is the tail of one log of a container. Its lines are the
// container's output, unfiltered: untrusted text.
type Log struct {
	// Previous marks the log of the container's previous instance.
	Previous bool     `json:"previous,omitempty"`
	Lines    []string `json:"lines,omitempty"`
	// Truncated: earlier lines or bytes were left out by the limits. A
	// log left out whole (the snapshot was full) is not recorded; the
	// snapshot's Truncation counts it.
	Truncated bool `json:"truncated,omitempty"`
	// Error says why the log could not be read; the rest of the snapshot
	// stands.
	Error string `json:"error,omitempty"`
}

// Collect records the pods of target at revision (the number the policy's
// workload facts carry: a Deployment's revision annotation, a
// ControllerRevision's number). It fails only when the pods cannot be found
// or listed; a log that cannot be read is recorded as that log's Error.
// Logs are read a few at a time; ctx bounds the whole, and a log still
// unread when it ends records ctx's error.
func Collect(ctx context.Context, client kubeclient.Interface, target policy.Ref, revision int64, limits Limits) (Snapshot, error) {
	return CollectFrom(ctx, client, nil, target, revision, limits)
}

// PodFinder finds the pods of a workload's revision (workload.Live,
// workload.Caches).
type PodFinder interface {
	RevisionPods(ctx context.Context, ref policy.Ref, revision int64) (workload.PodSet, error)
}

// CollectFrom is Collect with the revision's pods found by cached first
// (the informers, when set), and through client when cached fails (it does
// not hold the workload or the revision). The pods themselves and their
// logs are always read through client.
func CollectFrom(ctx context.Context, client kubeclient.Interface, cached PodFinder, target policy.Ref, revision int64, limits Limits) (Snapshot, error) {
	limits = limits.withDefaults()
	taken := time.Now()
	var (
		set workload.PodSet
		err error
	)
	if cached != nil {
		set, err = cached.RevisionPods(ctx, target, revision)
	}
	if cached == nil || err != nil {
		set, err = workload.Live{Client: client}.RevisionPods(ctx, target, revision)
	}
	if err != nil {
		return Snapshot{}, fmt.Errorf("collect evidence: %w", err)
	}
	list, err := client.CoreV1().Pods(target.Namespace).List(ctx, metav1.ListOptions{LabelSelector: set.Selector.String()})
	if err != nil {
		return Snapshot{}, fmt.Errorf("collect evidence: list pods of %s at revision %d: %w", target, revision, err)
	}
	var pods []*corev1.Pod
	for i := range list.Items {
		if set.Has(&list.Items[i]) {
			pods = append(pods, &list.Items[i])
		}
	}
	s := Snapshot{TakenAt: taken.UTC(), Target: target, Revision: revision, Hash: set.Hash, PodsFound: len(pods)}
	var cut Truncation
	recorded := choosePods(pods, limits.Pods)
	cut.Pods = len(pods) - len(recorded)
	for _, p := range recorded {
		s.Pods = append(s.Pods, describe(p, limits, &cut))
	}
	logs := readLogs(ctx, client, target.Namespace, s.Pods, recorded, limits)
	fit(&s, logs, limits, &cut)
	if cut != (Truncation{}) {
		s.Truncated = &cut
	}
	return s, nil
}

// choosePods returns at most n of pods, those that say most first: not
// Ready, then restarted most, then by name.
func choosePods(pods []*corev1.Pod, n int) []*corev1.Pod {
	sorted := slices.Clone(pods)
	slices.SortFunc(sorted, func(a, b *corev1.Pod) int {
		return cmp.Or(
			cmpBool(podReady(a), podReady(b)),
			cmp.Compare(restarts(b), restarts(a)),
			strings.Compare(a.Name, b.Name))
	})
	return sorted[:min(n, len(sorted))]
}

func cmpBool(a, b bool) int {
	switch {
	case a == b:
		return 0
	case !a:
		return -1
	}
	return 1
}

func podReady(p *corev1.Pod) bool {
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

func restarts(p *corev1.Pod) int32 {
	var n int32
	for _, group := range [][]corev1.ContainerStatus{p.Status.InitContainerStatuses, p.Status.ContainerStatuses} {
		for _, cs := range group {
			n += cs.RestartCount
		}
	}
	return n
}

// describe records p's state, without logs.
func describe(p *corev1.Pod, limits Limits, cut *Truncation) Pod {
	out := Pod{
		Name: p.Name, Phase: p.Status.Phase, Node: p.Spec.NodeName, Ready: podReady(p),
		Restarts: restarts(p), Terminating: p.DeletionTimestamp != nil, Created: p.CreationTimestamp.UTC(),
		Reason: p.Status.Reason, Message: p.Status.Message,
	}
	if out.Reason == "" && out.Message == "" {
		for _, c := range p.Status.Conditions {
			if c.Type == corev1.PodScheduled && c.Status == corev1.ConditionFalse {
				out.Reason, out.Message = c.Reason, c.Message
			}
		}
	}
	out.Message = cutMessage(out.Message, limits.MessageBytes, cut)
	statuses := map[string]corev1.ContainerStatus{}
	for _, group := range [][]corev1.ContainerStatus{p.Status.InitContainerStatuses, p.Status.ContainerStatuses} {
		for _, cs := range group {
			statuses[cs.Name] = cs
		}
	}
	add := func(c corev1.Container, init bool) {
		rec := Container{Name: c.Name, Init: init, Image: c.Image}
		if cs, ok := statuses[c.Name]; ok {
			rec.Ready, rec.RestartCount = cs.Ready, cs.RestartCount
			rec.State = state(cs.State)
			term := cs.State.Terminated
			if term == nil {
				term = cs.LastTerminationState.Terminated
			}
			if term != nil {
				rec.LastTermination = &Termination{
					Reason: term.Reason, ExitCode: term.ExitCode, Signal: term.Signal,
					Message: cutMessage(term.Message, limits.MessageBytes, cut), FinishedAt: term.FinishedAt.UTC(),
				}
			}
		}
		out.Containers = append(out.Containers, rec)
	}
	for _, c := range p.Spec.InitContainers {
		add(c, true)
	}
	for _, c := range p.Spec.Containers {
		add(c, false)
	}
	return out
}

func state(s corev1.ContainerState) string {
	switch {
	case s.Running != nil:
		return "running"
	case s.Waiting != nil:
		return joinReason("waiting", s.Waiting.Reason)
	case s.Terminated != nil:
		return joinReason("terminated", s.Terminated.Reason)
	}
	return ""
}

func joinReason(state, reason string) string {
	if reason == "" {
		return state
	}
	return state + ": " + reason
}

// cutMessage keeps the first n bytes of msg, on a character boundary.
func cutMessage(msg string, n int, cut *Truncation) string {
	if len(msg) <= n {
		return msg
	}
	cut.Messages++
	msg = msg[:n]
	for len(msg) > 0 && !utf8.ValidString(msg[len(msg)-min(len(msg), utf8.UTFMax):]) {
		msg = msg[:len(msg)-1]
	}
	return msg + "…"
}

// logRef names one log to read: a container of the pod at index pod of
// the snapshot.
type logRef struct {
	pod, container int
	previous       bool
}

// readLogs reads the logs of the recorded pods' containers: the current
// one, and the previous one of a container that restarted. A pod not
// scheduled to a node has no logs, and none is asked for.
func readLogs(ctx context.Context, client kubeclient.Interface, namespace string, pods []Pod, raw []*corev1.Pod, limits Limits) map[logRef]Log {
	var refs []logRef
	for i, p := range pods {
		for j, c := range p.Containers {
			refs = append(refs, logRef{pod: i, container: j})
			if c.RestartCount > 0 {
				refs = append(refs, logRef{pod: i, container: j, previous: true})
			}
		}
	}
	out := make(map[logRef]Log, len(refs))
	var mu sync.Mutex
	work := make(chan logRef)
	var wg sync.WaitGroup
	for range min(logWorkers, len(refs)) {
		wg.Go(func() {
			for r := range work {
				var l Log
				if raw[r.pod].Spec.NodeName == "" {
					l = Log{Previous: r.previous, Error: "not read: the pod is not scheduled to a node"}
				} else {
					l = readLog(ctx, client, namespace, pods[r.pod].Name, pods[r.pod].Containers[r.container].Name, r.previous, limits)
				}
				mu.Lock()
				out[r] = l
				mu.Unlock()
			}
		})
	}
	for _, r := range refs {
		work <- r
	}
	close(work)
	wg.Wait()
	return out
}

func readLog(ctx context.Context, client kubeclient.Interface, namespace, pod, container string, previous bool, limits Limits) Log {
	lines, limit := int64(limits.LogLines), int64(maxLogRead)
	stream, err := client.CoreV1().Pods(namespace).GetLogs(pod, &corev1.PodLogOptions{
		Container: container, Previous: previous, TailLines: &lines, LimitBytes: &limit,
	}).Stream(ctx)
	if err != nil {
		return Log{Previous: previous, Error: fmt.Sprintf("read log: %v", err)}
	}
	defer stream.Close()
	l, err := tail(stream, limits.LogLines, limits.LogBytes)
	l.Previous = previous
	if err != nil {
		l.Error = fmt.Sprintf("read log: %v", err)
	}
	return l
}

// tail keeps the last n lines of r, and of those at most the last
// maxBytes, from a line boundary where there is one. A line longer than
// that is kept in part, its end. It reads r to its end, at most maxLogRead bytes;
// what it read until an error is kept with the error.
func tail(r io.Reader, n, maxBytes int) (Log, error) {
	buf := tailBuffer{max: maxBytes}
	read, err := io.Copy(&buf, io.LimitReader(r, maxLogRead))
	text := strings.TrimSuffix(buf.text(), "\n")
	l := Log{Truncated: buf.dropped}
	if read >= maxLogRead {
		// The API server stops there too (LimitBytes): what was kept is
		// the end of the first maxLogRead bytes, not of the log.
		l.Truncated = true
		err = errors.Join(err, fmt.Errorf("the last %d lines are longer than %d bytes; these are the last bytes of the first %[2]d", n, maxLogRead))
	}
	if text == "" {
		return l, err
	}
	l.Lines = strings.Split(text, "\n")
	if buf.dropped && len(l.Lines) > 1 {
		l.Lines = l.Lines[1:] // began mid-line
	}
	if len(l.Lines) > n {
		l.Lines, l.Truncated = l.Lines[len(l.Lines)-n:], true
	}
	for i, line := range l.Lines {
		l.Lines[i] = strings.TrimSuffix(line, "\r")
	}
	return l, err
}

// tailBuffer keeps the last max bytes written to it.
type tailBuffer struct {
	max     int
	buf     []byte
	dropped bool
}

func (b *tailBuffer) Write(p []byte) (int, error) {
	b.buf = append(b.buf, p...)
	if over := len(b.buf) - b.max; over > 0 && len(b.buf) >= 2*b.max {
		b.buf, b.dropped = append(b.buf[:0], b.buf[over:]...), true
	}
	return len(p), nil
}

// text returns the last max bytes, starting on a character boundary.
func (b *tailBuffer) text() string {
	t := b.buf
	if over := len(t) - b.max; over > 0 {
		t, b.dropped = t[over:], true
	}
	for i := 0; i < utf8.UTFMax && len(t) > 0 && !utf8.RuneStart(t[0]); i++ {
		t = t[1:]
	}
	return string(t)
}

// fit puts the logs into the snapshot in pod order while its JSON stays
// within limits.TotalBytes: pods first (which Limits.Pods and
// Limits.MessageBytes already bound), then each log whole, or its last
// lines that fit, or none.
func fit(s *Snapshot, logs map[logRef]Log, limits Limits, cut *Truncation) {
	// The pods' states come first; a pod that does not fit is left out.
	used := jsonSize(Snapshot{TakenAt: s.TakenAt, Target: s.Target, Revision: s.Revision, Hash: s.Hash, PodsFound: s.PodsFound,
		Truncated: &Truncation{Pods: 1 << 20, LogsCut: 1 << 20, LogsOmitted: 1 << 20, Messages: 1 << 20}})
	for i := range s.Pods {
		size := jsonSize(s.Pods[i]) + 1
		if used+size > limits.TotalBytes {
			cut.Pods += len(s.Pods) - i
			s.Pods = s.Pods[:i]
			break
		}
		used += size
	}
	for i := range s.Pods {
		for j := range s.Pods[i].Containers {
			c := &s.Pods[i].Containers[j]
			for _, previous := range []bool{true, false} {
				l, ok := logs[logRef{pod: i, container: j, previous: previous}]
				if !ok {
					continue
				}
				// A log costs its own size, a comma, and once per container
				// the `,"logs":[]` around them.
				overhead := 1
				if len(c.Logs) == 0 {
					overhead = len(`,"logs":[]`)
				}
				size, hadLines := jsonSize(l)+overhead, len(l.Lines) > 0
				if used+size > limits.TotalBytes && len(l.Lines) > 0 {
					l.Truncated = true
					size = jsonSize(l) + overhead
					// Dropping the first of several lines saves the line
					// and its comma.
					for used+size > limits.TotalBytes && len(l.Lines) > 0 {
						size -= jsonSize(l.Lines[0]) + 1
						l.Lines = l.Lines[1:]
					}
					size = jsonSize(l) + overhead
				}
				if used+size > limits.TotalBytes || (hadLines && len(l.Lines) == 0) {
					cut.LogsOmitted++
					continue
				}
				if l.Truncated && len(l.Lines) > 0 {
					cut.LogsCut++
				}
				c.Logs = append(c.Logs, l)
				used += size
			}
		}
	}
}

func jsonSize(v any) int {
	b, err := json.Marshal(v)
	if err != nil {
		// The types here always encode; count nothing rather than fail the
		// snapshot.
		return 0
	}
	return len(b)
}
