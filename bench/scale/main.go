// Command scale measures autorollbackd against a cluster of many opted-in
// Deployments: how long it takes to become ready (its informer caches
// synced), how much memory it keeps, how much CPU it uses at idle, and how
// fast it decides a burst of distinct alerts. It prints a markdown section
// for bench/RESULTS.md.
//
// Run it from the module root; bench/run.sh builds and runs it.
package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"math"
	"math/rand/v2"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"

	"github.com/autorollbackd/autorollbackd/bench/internal/harness"
	"github.com/autorollbackd/autorollbackd/internal/config"
	"github.com/autorollbackd/autorollbackd/internal/kinds"
)

type options struct {
	daemon      string
	deployments int
	namespaces  int
	replicas    int
	alerts      int
	senders     int
	prepWorkers int
	idle        time.Duration
	out         string
	work        string
	timeout     time.Duration
	variants    string
}

func main() {
	var o options
	flag.StringVar(&o.daemon, "daemon", "", "Path of the autorollbackd binary to run (required).")
	flag.IntVar(&o.deployments, "deployments", 10000, "Opted-in Deployments in the cluster (default 10000).")
	flag.IntVar(&o.namespaces, "namespaces", 500, "Namespaces they are spread over (default 500).")
	flag.IntVar(&o.replicas, "replicas", 0, "Replicas of each Deployment (default 0: no pods, one ReplicaSet per revision all the same).")
	flag.IntVar(&o.alerts, "alerts", 1000, "Distinct firing alerts in the burst, each naming its own Deployment (default 1000).")
	flag.IntVar(&o.senders, "senders", 16, "Concurrent senders of the burst, one alert per notification (default 16).")
	flag.IntVar(&o.prepWorkers, "prepare-workers", 64, "Concurrent API calls while preparing the Deployments (default 64).")
	flag.DurationVar(&o.idle, "idle", 30*time.Second, "How long the daemon's CPU is measured with no traffic (default 30s).")
	flag.StringVar(&o.out, "out", "", "File the markdown section is written to (default stdout).")
	flag.StringVar(&o.work, "work", "", "Directory for the daemons' configuration, logs and the raw samples (default a new temporary directory, kept).")
	flag.DurationVar(&o.timeout, "timeout", 16*time.Minute, "Bound on the whole run, cluster included (default 16m).")
	flag.StringVar(&o.variants, "variants", "default,qps-50,no-priority", "Comma-separated daemon configurations to measure, one after the other, each with a burst on Deployments of its own: default, qps-50, no-priority.")
	flag.Parse()
	if o.daemon == "" {
		fmt.Fprintln(os.Stderr, "scale: -daemon is required")
		os.Exit(2)
	}
	harness.Main("scale", o.timeout, func(ctx context.Context) error { return run(ctx, o) })
}

// defaults is the daemon's default configuration, which the `default`
// variant runs and the results quote.
var defaults = config.Default()

var variants = []harness.Variant{
	{Name: "default",
		What: fmt.Sprintf("the defaults: `kubernetes.qps: %g`, `burst: %d`, `engine.workers: %d`, `engine.incidentWorkers: %d`, `engine.maxPending: %d`, the default policy and budget",
			defaults.Kubernetes.QPS, defaults.Kubernetes.Burst, defaults.Engine.Workers, defaults.Engine.IncidentWorkers, defaults.Engine.MaxPending)},
	{Name: "qps-50", Engine: "  maxPending: 2000\n", Extra: "kubernetes:\n  qps: 50\n  burst: 100\n",
		What: "as `default`, but `kubernetes.qps: 50`, `burst: 100` and `engine.maxPending: 2000`: the client-side rate limit the daemon had by default before it was sized from this benchmark"},
	{Name: "no-priority", Extra: "kubernetes:\n  backgroundInFlight: 0\n",
		What: "as `default`, but `kubernetes.backgroundInFlight: 0`: the workers' and verification's requests are not held back while an alert's are in flight"},
}

// Bounds of the waits after a burst.
const (
	decidedWithin = 6 * time.Minute
	handledWithin = 4 * time.Minute
)

func run(ctx context.Context, o options) error {
	chosen, err := harness.Choose(variants, o.variants)
	if err != nil {
		return err
	}
	if len(chosen)*o.alerts > o.deployments {
		return fmt.Errorf("%d variants of %d alerts each need %d Deployments, have %d", len(chosen), o.alerts, len(chosen)*o.alerts, o.deployments)
	}
	b, err := harness.Begin(ctx, o.work, "bench-scale-", 0)
	if err != nil {
		return err
	}
	defer b.Cluster.Stop()
	o.work = b.Work
	tmpl, start, load0, c := b.Template, b.Started, b.Load, b.Cluster
	cs := c.Client
	pids, err := c.PIDs()
	if err != nil {
		harness.Logf("CPU of the control plane not counted: %v", err)
	}
	m := newMeter(pids)

	refs := harness.Refs("scale", o.deployments, o.namespaces)
	prep, err := prepare(ctx, cs, o, refs, m)
	if err != nil {
		return err
	}

	var results []*result
	for i, v := range chosen {
		dir := filepath.Join(o.work, v.Name)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return err
		}
		// The first alerts Deployments cover every namespace (Refs deals
		// them out round-robin); each variant takes the next slice.
		burst := refs[i*o.alerts : (i+1)*o.alerts]
		r, err := daemonPhase(ctx, c, tmpl, o, v, dir, burst, m)
		if err != nil {
			return fmt.Errorf("daemon (%s): %w", v.Name, err)
		}
		results = append(results, r)
	}
	if err := writeRaw(o.work, results); err != nil {
		return err
	}
	report := markdown(o, prep, results, m, load0, harness.LoadAvg(), time.Since(start))
	if o.out == "" {
		_, err = os.Stdout.WriteString(report)
		return err
	}
	return os.WriteFile(o.out, []byte(report), 0o644)
}

type preparation struct {
	times       harness.PreparationTimes
	replicaSets int
	// JSON sizes of one prepared Deployment and one of its ReplicaSets,
	// whole and without metadata.managedFields: what an informer caches.
	deploymentBytes, deploymentBytesNoMF int
	replicaSetBytes, replicaSetBytesNoMF int
}

// prepare creates the Deployments with two revisions each, watching them
// only while it does.
func prepare(ctx context.Context, cs kubernetes.Interface, o options, refs []harness.Ref, m *meter) (preparation, error) {
	var p preparation
	wctx, stopWatch := context.WithCancel(ctx)
	defer stopWatch()
	w, err := harness.NewWatcher(wctx, cs)
	if err != nil {
		return p, err
	}
	harness.Logf("preparing %d Deployments (%d replicas) in %d namespaces: revision 1, then revision 2 rolled out", len(refs), o.replicas, o.namespaces)
	m.skip()
	p.times, err = harness.PrepareTwoRevisionsWith(ctx, cs, w, "scale", refs, harness.Preparation{
		Replicas: int32(o.replicas), Workers: o.prepWorkers, Timeout: 8 * time.Minute,
		OnStep: func(step string) { m.mark("preparing: " + step) },
	})
	if err != nil {
		return p, fmt.Errorf("prepare: %w", err)
	}
	stopWatch()
	// Count the ReplicaSets of the prepared namespaces, in pages.
	opts := metav1.ListOptions{Limit: 2000}
	for {
		list, err := cs.AppsV1().ReplicaSets("").List(ctx, opts)
		if err != nil {
			return p, fmt.Errorf("count ReplicaSets: %w", err)
		}
		for _, rs := range list.Items {
			if strings.HasPrefix(rs.Namespace, "scale-") {
				p.replicaSets++
			}
		}
		if opts.Continue = list.Continue; opts.Continue == "" {
			break
		}
	}
	d, err := cs.AppsV1().Deployments(refs[0].Namespace).Get(ctx, refs[0].Name, metav1.GetOptions{})
	if err != nil {
		return p, err
	}
	rs, err := harness.ReplicaSetOf(ctx, cs, d, "2")
	if err != nil {
		return p, err
	}
	p.deploymentBytes, p.deploymentBytesNoMF = jsonSizes(d, &d.ManagedFields)
	p.replicaSetBytes, p.replicaSetBytesNoMF = jsonSizes(rs, &rs.ManagedFields)
	harness.Logf("prepared in %s: %d ReplicaSets", p.times.Settled.Round(time.Second), p.replicaSets)
	return p, nil
}

// jsonSizes returns the size of obj as JSON, and without its managed
// fields (which it clears).
func jsonSizes(obj any, managedFields *[]metav1.ManagedFieldsEntry) (whole, without int) {
	b, _ := json.Marshal(obj)
	*managedFields = nil
	c, _ := json.Marshal(obj)
	return len(b), len(c)
}

// notification is one webhook notification of the burst, as sent and
// answered, retries included.
type notification struct {
	ref      harness.Ref
	key      string // the daemon's alert key: fingerprint@startsAt
	first    time.Time
	answered time.Time // the final answer, 200 or not
	attempts []attempt
	code     int
	body     string
}

type attempt struct {
	took time.Duration
	code int // 0: transport error
}

type result struct {
	variant harness.Variant
	dir     string
	alerts  int

	ready, leading         time.Duration // from process start
	rssReady, rssIdle      int64         // KiB
	rssAfter, rssPeak      int64         // KiB; peak is VmHWM over the daemon's life
	heapReady, heapAfter   float64       // bytes, go_memstats_heap_inuse_bytes
	idleCPU, idleWall      time.Duration // CPU time over the idle window
	burstCPU, burstWall    time.Duration // from the first send until handled (or the wait ended)
	notifications          []notification
	accepted, duplicates   int
	otherAnswers           map[string]int // answers but 200 with accepted 1, by what they were
	sent                   time.Duration  // first send → last answer
	decided, handled       time.Duration  // first send → every record decided / every incident acted on or escalated
	decidedOK, handledOK   bool
	undecided, unhandled   int
	records                []record
	took                   map[string]time.Duration // by alert key, from the daemon's log
	histCount, histSum     float64
	histLE                 []bucket
	incidents              incidentCount
	outcomes               map[string]int // decision outcome (reason) → alerts
	firstSend, lastDecided time.Time
	// requests counts the API server's requests from just before the first
	// send until every incident was handled; nil when not read.
	requests harness.APICounts
}

type bucket struct {
	le    float64
	count float64
}

type incidentCount struct {
	total, rolledBack, escalated, resolved, verifying, other int
}

func daemonPhase(ctx context.Context, c *harness.Cluster, tmpl []byte, o options, v harness.Variant, dir string, burst []harness.Ref, m *meter) (*result, error) {
	res := &result{variant: v, dir: dir, alerts: len(burst), otherAnswers: map[string]int{}}
	records := "bench-records-" + v.Name
	harness.Logf("daemon (%s): starting, cluster-wide", v.Name)
	m.skip()
	d, err := harness.StartDaemon(ctx, o.daemon, c.Kubeconfig, dir, harness.DaemonConfig{
		RecordsNamespace: records, Engine: v.Engine, Extra: v.Extra,
	})
	if err != nil {
		return nil, err
	}
	defer func() { d.Stop(); m.daemon(0) }()
	m.daemon(d.Pid())
	m.mark("`" + v.Name + "`: daemon start → leading")
	res.ready, res.leading = d.Ready.Sub(d.Started), time.Since(d.Started)
	res.rssReady, _ = harness.ReadRSS(d.Pid())
	res.heapReady, _ = metricValue(ctx, d.Addr, "go_memstats_heap_inuse_bytes")
	harness.Logf("daemon (%s): ready %s after its start, leading after %s, RSS %.1f MiB",
		v.Name, res.ready.Round(time.Millisecond), res.leading.Round(time.Millisecond), mib(res.rssReady))

	// Idle: let the start-up work (resuming records, the first lease
	// renewals) pass, then count CPU time with no traffic at all.
	if err := sleep(ctx, 5*time.Second); err != nil {
		return nil, err
	}
	harness.Logf("daemon (%s): measuring CPU at idle for %s", v.Name, o.idle)
	m.skip()
	cpu0, _ := harness.CPUTime(d.Pid())
	t0 := time.Now()
	if err := sleep(ctx, o.idle); err != nil {
		return nil, err
	}
	cpu1, _ := harness.CPUTime(d.Pid())
	res.idleCPU, res.idleWall = cpu1-cpu0, time.Since(t0)
	m.mark("`" + v.Name + "`: idle")
	res.rssIdle, _ = harness.ReadRSS(d.Pid())

	// The burst: every notification built beforehand, one alert each.
	startsAt := time.Now()
	res.notifications = make([]notification, len(burst))
	bodies := make([][]byte, len(burst))
	for i, r := range burst {
		fp := fmt.Sprintf("5ca1e%011x", i+1)
		b, err := harness.Payload(tmpl, []harness.Alert{{Ref: r, Fingerprint: fp, Impact: "service_down", StartsAt: startsAt}})
		if err != nil {
			return nil, err
		}
		bodies[i] = b
		res.notifications[i] = notification{ref: r, key: fp + "@" + startsAt.UTC().Format(time.RFC3339Nano)}
	}
	harness.Logf("daemon (%s): burst of %d alerts from %d senders", v.Name, len(burst), o.senders)
	m.skip()
	cpuBurst0, _ := harness.CPUTime(d.Pid())
	req0, err := harness.APIRequests(ctx, c.Client)
	if err != nil {
		harness.Logf("daemon (%s): API requests not counted: %v", v.Name, err)
	}
	res.firstSend = time.Now()
	send(ctx, d.Addr, o.senders, bodies, res.notifications)
	var last time.Time
	for _, n := range res.notifications {
		last = later(last, n.answered)
		var got struct{ Accepted, Duplicates int }
		if n.code == http.StatusOK {
			_ = json.Unmarshal([]byte(n.body), &got)
		}
		switch {
		case n.code == http.StatusOK && got.Accepted == 1:
			res.accepted++
		case n.code == http.StatusOK && got.Duplicates == 1:
			res.duplicates++
		case n.code == 0:
			res.otherAnswers["transport error: "+n.body]++
		default:
			res.otherAnswers[fmt.Sprintf("%d %s", n.code, n.body)]++
		}
	}
	res.sent = last.Sub(res.firstSend)
	harness.Logf("daemon (%s): every notification answered after %s: %d accepted, %d duplicates, other: %v",
		v.Name, res.sent.Round(time.Millisecond), res.accepted, res.duplicates, res.otherAnswers)
	if ctx.Err() != nil {
		return nil, ctx.Err()
	}

	// Every accepted alert decided and handed to its incident.
	res.decidedOK, res.undecided = waitRecords(ctx, c.Client, records, decidedWithin)
	res.decided = time.Since(res.firstSend)
	harness.Logf("daemon (%s): records decided after %s (%d left undecided)", v.Name, res.decided.Round(time.Millisecond), res.undecided)
	if ctx.Err() != nil {
		return nil, ctx.Err()
	}
	// Every incident acted on or escalated.
	var counts incidentCount
	res.handledOK, res.unhandled, counts = waitIncidents(ctx, c.Client, records, handledWithin)
	res.handled = time.Since(res.firstSend)
	res.incidents = counts
	harness.Logf("daemon (%s): incidents acted on or escalated after %s (%d not yet): %+v", v.Name, res.handled.Round(time.Millisecond), res.unhandled, counts)
	cpuBurst1, _ := harness.CPUTime(d.Pid())
	res.burstCPU, res.burstWall = cpuBurst1-cpuBurst0, time.Since(res.firstSend)
	if req0 != nil {
		req1, err := harness.APIRequests(ctx, c.Client)
		if err != nil {
			harness.Logf("daemon (%s): API requests not counted: %v", v.Name, err)
		} else {
			res.requests = req1.Since(req0)
		}
	}
	m.mark("`" + v.Name + "`: burst, until handled")
	res.rssAfter, _ = harness.ReadRSS(d.Pid())
	res.rssPeak, _ = harness.ReadPeakRSS(d.Pid())
	res.heapAfter, _ = metricValue(ctx, d.Addr, "go_memstats_heap_inuse_bytes")
	if ctx.Err() != nil {
		return nil, ctx.Err()
	}

	if res.records, err = readRecords(ctx, c.Client, records); err != nil {
		return nil, err
	}
	res.outcomes = map[string]int{}
	for _, r := range res.records {
		if r.Decision == nil {
			res.outcomes["undecided"]++
			continue
		}
		res.outcomes[r.Decision.Outcome+" ("+r.Decision.Reason+")"]++
		res.lastDecided = later(res.lastDecided, r.DecidedAt)
	}
	if res.took, err = readTook(filepath.Join(dir, "daemon.log")); err != nil {
		return nil, err
	}
	if err := readHistogram(ctx, d.Addr, res); err != nil {
		return nil, err
	}
	return res, nil
}

// send posts every body once from `senders` goroutines, retrying what
// Alertmanager retries (5xx and transport errors) with its backoff.
func send(ctx context.Context, addr string, senders int, bodies [][]byte, out []notification) {
	client := &http.Client{
		Timeout:   30 * time.Second,
		Transport: &http.Transport{MaxIdleConnsPerHost: senders, MaxConnsPerHost: senders, IdleConnTimeout: time.Minute},
	}
	url := "http://" + addr + "/webhook"
	_ = harness.Parallel(ctx, len(bodies), senders, func(ctx context.Context, i int) error {
		n := &out[i]
		n.first = time.Now()
		backoff := alertmanagerBackoff()
		for {
			t0 := time.Now()
			code, body, err := harness.Post(ctx, client, url, bodies[i])
			n.answered = time.Now()
			n.attempts = append(n.attempts, attempt{took: n.answered.Sub(t0), code: code})
			n.code, n.body = code, body
			if err != nil {
				n.code, n.body = 0, err.Error()
			}
			if (err == nil && code < 500) || ctx.Err() != nil || len(n.attempts) >= 20 {
				return nil
			}
			if sleep(ctx, backoff()) != nil {
				return nil
			}
		}
	})
}

// alertmanagerBackoff returns the waits of Alertmanager's notification
// retries: exponential from 500ms by 1.5, randomised by ±50%, at most 60s
// (github.com/cenkalti/backoff's defaults, which Alertmanager uses).
func alertmanagerBackoff() func() time.Duration {
	next := 500 * time.Millisecond
	return func() time.Duration {
		d := time.Duration(float64(next) * (0.5 + rand.Float64()))
		next = min(time.Duration(float64(next)*1.5), time.Minute)
		return d
	}
}

// Labels of the daemon's records (internal/engine and internal/incident).
const (
	recordsSelector   = kinds.LabelManagedBy + "=" + kinds.ManagedBy + "," + kinds.LabelRecord + "=alert"
	undoneSelector    = recordsSelector + "," + kinds.LabelAlertState + "!=done"
	incidentsSelector = kinds.LabelManagedBy + "=" + kinds.ManagedBy + "," + kinds.LabelRecord + "=incident"
)

// waitRecords waits until no alert record is left undecided or not yet
// handed to its incident, and reports whether that happened and how many
// were left.
func waitRecords(ctx context.Context, cs kubernetes.Interface, ns string, timeout time.Duration) (bool, int) {
	left := -1
	err := wait.PollUntilContextTimeout(ctx, time.Second, timeout, true, func(ctx context.Context) (bool, error) {
		list, err := cs.CoreV1().ConfigMaps(ns).List(ctx, metav1.ListOptions{LabelSelector: undoneSelector})
		if err != nil {
			return false, nil
		}
		left = len(list.Items)
		return left == 0, nil
	})
	return err == nil, left
}

// incidentJSON is the part of an incident record the benchmark reads.
type incidentJSON struct {
	State   string `json:"state"`
	Actions []struct {
		Result *struct {
			Outcome string `json:"outcome"`
		} `json:"result"`
	} `json:"actions"`
	Pages []page `json:"pages"`
}

type page struct {
	Sending bool `json:"sending"`
}

// waitIncidents waits until every incident was acted on (an action
// applied, being verified or resolved) or escalated (paged), and returns
// whether that happened, how many were not, and the last counts.
func waitIncidents(ctx context.Context, cs kubernetes.Interface, ns string, timeout time.Duration) (bool, int, incidentCount) {
	var (
		c    incidentCount
		left = -1
	)
	err := wait.PollUntilContextTimeout(ctx, 2*time.Second, timeout, true, func(ctx context.Context) (bool, error) {
		list, err := cs.CoreV1().ConfigMaps(ns).List(ctx, metav1.ListOptions{LabelSelector: incidentsSelector})
		if err != nil {
			return false, nil
		}
		c, left = incidentCount{total: len(list.Items)}, 0
		for _, cm := range list.Items {
			var inc incidentJSON
			if err := json.Unmarshal([]byte(cm.Data["incident.json"]), &inc); err != nil {
				left++
				continue
			}
			for _, a := range inc.Actions {
				if a.Result != nil && a.Result.Outcome == "applied" {
					c.rolledBack++
					break
				}
			}
			paged := slices.ContainsFunc(inc.Pages, func(p page) bool { return !p.Sending })
			switch {
			case inc.State == "escalated" && paged:
				c.escalated++
			case inc.State == "resolved":
				c.resolved++
			case inc.State == "verifying":
				c.verifying++
			default:
				c.other++
				left++
			}
		}
		return left == 0, nil
	})
	return err == nil, left, c
}

// record is the part of an alert record the benchmark reads.
type record struct {
	Key    string `json:"key"`
	Target struct {
		Namespace string `json:"namespace"`
		Name      string `json:"name"`
	} `json:"target"`
	ReceivedAt time.Time `json:"receivedAt"`
	DecidedAt  time.Time `json:"decidedAt"`
	Decision   *struct {
		Outcome string `json:"outcome"`
		Reason  string `json:"reason"`
	} `json:"decision"`
}

func readRecords(ctx context.Context, cs kubernetes.Interface, ns string) ([]record, error) {
	list, err := cs.CoreV1().ConfigMaps(ns).List(ctx, metav1.ListOptions{LabelSelector: recordsSelector})
	if err != nil {
		return nil, fmt.Errorf("list alert records: %w", err)
	}
	out := make([]record, 0, len(list.Items))
	for _, cm := range list.Items {
		var r record
		if err := json.Unmarshal([]byte(cm.Data["record.json"]), &r); err != nil {
			return nil, fmt.Errorf("decode alert record %s: %w", cm.Name, err)
		}
		out = append(out, r)
	}
	return out, nil
}

// tookText and keyText find the took and key attributes of a text-format
// log line.
var (
	tookText = regexp.MustCompile(`(?:^|\s)took=(\S+)`)
	keyText  = regexp.MustCompile(`(?:^|\s)key=("(?:[^"\\]|\\.)*"|\S+)`)
)

// readTook collects the `took` attribute of the daemon's "decided" log
// lines, by alert key: a JSON number (nanoseconds, slog's JSON form of a
// time.Duration) or a duration string ("3.2ms", slog's text form).
func readTook(path string) (map[string]time.Duration, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	out := map[string]time.Duration{}
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 0, 64<<10), 4<<20)
	for sc.Scan() {
		line := sc.Bytes()
		if !bytes.Contains(line, []byte("decided")) || !bytes.Contains(line, []byte("took")) {
			continue
		}
		var m map[string]any
		if json.Unmarshal(line, &m) == nil {
			if m["msg"] != "decided" {
				continue
			}
			key, _ := m["key"].(string)
			switch t := m["took"].(type) {
			case float64:
				out[key] = time.Duration(t)
			case string:
				if d, err := time.ParseDuration(t); err == nil {
					out[key] = d
				}
			}
			continue
		}
		s := string(line)
		if !strings.Contains(s, "msg=decided") {
			continue
		}
		if g := tookText.FindStringSubmatch(s); g != nil {
			if d, err := time.ParseDuration(strings.Trim(g[1], `"`)); err == nil {
				key := ""
				if k := keyText.FindStringSubmatch(s); k != nil {
					if key, err = strconv.Unquote(k[1]); err != nil {
						key = k[1]
					}
				}
				out[key] = d
			}
		}
	}
	return out, sc.Err()
}

// readHistogram reads autorollbackd_decision_duration_seconds, when the
// daemon exposes it.
func readHistogram(ctx context.Context, addr string, res *result) error {
	series, err := metrics(ctx, addr)
	if err != nil {
		return err
	}
	const name = "autorollbackd_decision_duration_seconds"
	res.histCount, res.histSum = series[name+"_count"], series[name+"_sum"]
	for s, v := range series {
		rest, ok := strings.CutPrefix(s, name+`_bucket{le="`)
		if !ok {
			continue
		}
		le, err := strconv.ParseFloat(strings.TrimSuffix(rest, `"}`), 64)
		if err != nil {
			continue
		}
		res.histLE = append(res.histLE, bucket{le: le, count: v})
	}
	slices.SortFunc(res.histLE, func(a, b bucket) int {
		switch {
		case a.le < b.le:
			return -1
		case a.le > b.le:
			return 1
		}
		return 0
	})
	return nil
}

// metrics returns every series of http://addr/metrics by its name and
// labels, as exposed.
func metrics(ctx context.Context, addr string) (map[string]float64, error) {
	code, body, err := harness.Get(ctx, "http://"+addr+"/metrics", "")
	if err != nil {
		return nil, err
	}
	if code != http.StatusOK {
		return nil, fmt.Errorf("GET /metrics: %d", code)
	}
	out := map[string]float64{}
	for line := range strings.SplitSeq(string(body), "\n") {
		if line == "" || line[0] == '#' {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		if i < 0 {
			continue
		}
		if v, err := strconv.ParseFloat(line[i+1:], 64); err == nil {
			out[line[:i]] = v
		}
	}
	return out, nil
}

func metricValue(ctx context.Context, addr, series string) (float64, error) {
	m, err := metrics(ctx, addr)
	if err != nil {
		return 0, err
	}
	return m[series], nil
}

func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func later(a, b time.Time) time.Time {
	if b.After(a) {
		return b
	}
	return a
}

func mib(kib int64) float64 { return float64(kib) / 1024 }

// Latency samples of a result.

func answerLatencies(r *result) []time.Duration {
	var out []time.Duration
	for _, n := range r.notifications {
		for _, a := range n.attempts {
			out = append(out, a.took)
		}
	}
	return out
}

func notificationLatencies(r *result) []time.Duration {
	out := make([]time.Duration, 0, len(r.notifications))
	for _, n := range r.notifications {
		out = append(out, n.answered.Sub(n.first))
	}
	return out
}

func retried(r *result) (notifications, answers503, transport int) {
	for _, n := range r.notifications {
		if len(n.attempts) > 1 {
			notifications++
		}
		for _, a := range n.attempts {
			switch a.code {
			case http.StatusServiceUnavailable:
				answers503++
			case 0:
				transport++
			}
		}
	}
	return
}

func receivedToDecided(r *result) []time.Duration {
	var out []time.Duration
	for _, rec := range r.records {
		if rec.Decision != nil && !rec.DecidedAt.IsZero() {
			out = append(out, rec.DecidedAt.Sub(rec.ReceivedAt))
		}
	}
	return out
}

func tooks(r *result) []time.Duration {
	out := make([]time.Duration, 0, len(r.took))
	for _, d := range r.took {
		out = append(out, d)
	}
	return out
}

// writeRaw keeps every alert's numbers as CSV next to the daemons' logs.
func writeRaw(dir string, results []*result) error {
	var b strings.Builder
	b.WriteString("variant,namespace,name,first_send_unix_ns,attempts,answered_ms,received_ms,decided_ms,took_ms\n")
	for _, r := range results {
		byKey := map[string]record{}
		for _, rec := range r.records {
			byKey[rec.Key] = rec
		}
		for _, n := range r.notifications {
			rec := byKey[n.key]
			ms := func(t time.Time) string {
				if t.IsZero() {
					return ""
				}
				return harness.Ms(t.Sub(n.first))
			}
			took := ""
			if d, ok := r.took[n.key]; ok {
				took = harness.Ms(d)
			}
			fmt.Fprintf(&b, "%s,%s,%s,%d,%d,%s,%s,%s,%s\n", r.variant.Name, n.ref.Namespace, n.ref.Name, n.first.UnixNano(), len(n.attempts),
				ms(n.answered), ms(rec.ReceivedAt), ms(rec.DecidedAt), took)
		}
	}
	return os.WriteFile(filepath.Join(dir, "samples.csv"), []byte(b.String()), 0o644)
}

// Targets.
const (
	readyTarget       = 10 * time.Second
	rssReadyTargetMiB = 100
	rssPeakTargetMiB  = 150
	decisionTarget    = 10 * time.Millisecond
	answeredTarget    = 2 * time.Second  // first send → every notification of the burst answered
	decidedTarget     = 15 * time.Second // first send → every alert of the burst decided
)

// within says whether got is at most bound, and how it compares.
func within(got, bound float64, unit string) string {
	if got <= bound {
		return fmt.Sprintf("**met** (%.2f× the bound)", got/bound)
	}
	return fmt.Sprintf("**not met**: %.2f× the bound, %.1f %s over", got/bound, got-bound, unit)
}

// under says whether got is below bound, and how it compares.
func under(got, bound float64, unit string) string {
	if got < bound {
		return fmt.Sprintf("**met** (%.2f× the bound)", got/bound)
	}
	return fmt.Sprintf("**not met**: %.2f× the bound, %.1f %s over", got/bound, got-bound, unit)
}

func markdown(o options, p preparation, results []*result, m *meter, load0, load1 string, total time.Duration) string {
	var b strings.Builder
	w := func(format string, args ...any) { fmt.Fprintf(&b, format+"\n", args...) }
	t := p.times
	w("## 4. Scale\n")
	w("One local control plane as in part 1 (components' client QPS limits lifted), holding **%d opted-in Deployments across %d namespaces** "+
		"(`"+kinds.LabelEnabled+": \"true\"`, %d replicas: no pods, the Deployment controller still makes one ReplicaSet per revision), "+
		"each created at `v1` and rolled out to `v2-bad`: %d ReplicaSets in those namespaces. "+
		"As JSON, one of these Deployments is %d bytes (%d without `managedFields`), one of its ReplicaSets %d (%d): what the daemon's informers hold, decoded, for each. "+
		"Preparing them with %d API calls at a time took %s:\n", o.deployments, o.namespaces, o.replicas, p.replicaSets,
		p.deploymentBytes, p.deploymentBytesNoMF, p.replicaSetBytes, p.replicaSetBytesNoMF, o.prepWorkers, t.Settled.Round(time.Second))
	w("| preparation step | done after | step took |")
	w("|---|---:|---:|")
	steps := []struct {
		what string
		at   time.Duration
	}{
		{fmt.Sprintf("%d namespaces created", o.namespaces), t.Namespaces},
		{fmt.Sprintf("%d Deployments created at `v1`", o.deployments), t.Created},
		{"the Deployment controller at revision 1 for every one (ReplicaSet created)", t.Revision1},
		{"every template patched to `v2-bad`", t.Patched},
		{"revision 2 for every one", t.Revision2},
		{"every rollout to revision 2 complete", t.Settled},
	}
	var prev time.Duration
	for _, s := range steps {
		w("| %s | %.1f s | %.1f s |", s.what, s.at.Seconds(), (s.at - prev).Seconds())
		prev = s.at
	}
	w("")
	w("Then, for each daemon configuration in turn, `autorollbackd serve` (bearer auth, log at info in JSON to a file) runs **cluster-wide** " +
		"(no `policy.namespaces.allow`, so its informers list and watch Deployments, ReplicaSets, StatefulSets, DaemonSets and ControllerRevisions " +
		"of the whole cluster), with its records in a namespace of its own:\n")
	for _, r := range results {
		w("- `%s`: %s.", r.variant.Name, r.variant.What)
	}
	w("")
	w("- **ready**: from the process's start to the first 200 of `/readyz` (informer caches synced; polled every 100 ms); then to leading (`autorollbackd_leader` 1).")
	w("- **idle**: 5 s after it leads, its CPU time (user+system, `/proc/<pid>/stat`) over %s with no traffic, as a share of one core.", o.idle)
	w("- **burst**: %d distinct firing alerts, each naming a Deployment of its own (spread evenly over %d namespaces; each configuration gets Deployments no other one touched), "+
		"one alert per notification (the captured `%s`, `impact=service_down`, `startsAt` = now), sent as fast as %d concurrent senders over keep-alive connections get answers. "+
		"5xx answers and transport errors are retried as Alertmanager retries (exponential backoff from 500 ms). "+
		"The default budget stays: 10 automatic rollbacks an hour, so about the first 10 should be rolled back and the rest escalated, which is what the budget is for when a storm of alerts arrives "+
		"(how many were rolled back is in the table; more than 10 means decisions outran the budget); "+
		"the decision reads the same facts whichever it decides, and that many rollbacks would be verified for many minutes by the incident workers. "+
		"The default `engine.maxPending` (%d) lets intake take the whole burst without answering 503.",
		o.alerts, min(o.alerts, o.namespaces), harness.TemplatePath, o.senders, defaults.Engine.MaxPending)
	w("- **decision**: the daemon's own measure of deciding one recorded alert, the `took` of each `decided` log line, which its `autorollbackd_decision_duration_seconds` histogram also observes " +
		"(what it covers: [docs/metrics.md](../docs/metrics.md)); and, from each alert record (a ConfigMap), `decidedAt - receivedAt`, which includes waiting in the queue behind the rest of the burst.")
	w("- **handled**: from the first send until every alert record is decided and handed over, and every incident was acted on (rollback applied) or escalated (paged).")
	w("- **API requests**: the API server's own count (`apiserver_request_total` from its `/metrics`) from just before the first send until handled, by verb and resource, divided by the alerts of the burst; " +
		"LIST and WATCH are left out (this program polls the records with LISTs). During the burst the daemon writes nearly all the ConfigMaps and Events; " +
		"this is what sizes the default client rate limit (`kubernetes.qps`, `burst`; see [docs/configuration.md](../docs/configuration.md)).")
	w("")
	w("Load average (1, 5, 15 min) at start: %s; at end: %s. Whole part, cluster start and preparation included: %s.\n", load0, load1, total.Round(time.Second))

	header := "| |"
	sep := "|---|"
	for _, r := range results {
		header += " `" + r.variant.Name + "` |"
		sep += "---:|"
	}
	w(header)
	w(sep)
	row := func(what string, f func(r *result) string) {
		line := "| " + what + " |"
		for _, r := range results {
			line += " " + f(r) + " |"
		}
		w("%s", line)
	}
	secs := func(d time.Duration) string { return fmt.Sprintf("%.1f s", d.Seconds()) }
	row("**process start → ready** (`/readyz` 200)", func(r *result) string { return "**" + secs(r.ready) + "**" })
	row("process start → leading", func(r *result) string { return secs(r.leading) })
	row("RSS at ready", func(r *result) string { return fmt.Sprintf("%.1f MiB", mib(r.rssReady)) })
	row("Go heap in use at ready", func(r *result) string { return fmt.Sprintf("%.1f MiB", r.heapReady/(1<<20)) })
	row("**CPU at idle**", func(r *result) string {
		return fmt.Sprintf("**%.2f%%** of a core (%.2f s in %.0f s)", 100*r.idleCPU.Seconds()/r.idleWall.Seconds(), r.idleCPU.Seconds(), r.idleWall.Seconds())
	})
	row("RSS after idle", func(r *result) string { return fmt.Sprintf("%.1f MiB", mib(r.rssIdle)) })
	row("burst: notifications answered 200 `accepted`", func(r *result) string { return fmt.Sprintf("%d of %d", r.accepted, len(r.notifications)) })
	row("burst: notifications retried; 503 answers; transport errors", func(r *result) string {
		n, a, e := retried(r)
		return fmt.Sprintf("%d; %d; %d", n, a, e)
	})
	row("first send → every notification answered", func(r *result) string { return secs(r.sent) })
	row("first send → last `decidedAt`", func(r *result) string {
		if r.lastDecided.IsZero() {
			return "–"
		}
		return secs(r.lastDecided.Sub(r.firstSend))
	})
	row("decisions a second over the burst", func(r *result) string {
		if r.lastDecided.IsZero() {
			return "–"
		}
		return fmt.Sprintf("%.1f", float64(len(receivedToDecided(r)))/r.lastDecided.Sub(r.firstSend).Seconds())
	})
	row("first send → every record handed over", func(r *result) string {
		if !r.decidedOK {
			return fmt.Sprintf("%d left after %s", r.undecided, secs(r.decided))
		}
		return secs(r.decided)
	})
	row("first send → every incident acted on or escalated", func(r *result) string {
		if !r.handledOK {
			return fmt.Sprintf("%d not after %s", r.unhandled, secs(r.handled))
		}
		return secs(r.handled)
	})
	row("decisions", func(r *result) string {
		var parts []string
		for k, n := range r.outcomes {
			parts = append(parts, fmt.Sprintf("%d %s", n, k))
		}
		slices.Sort(parts)
		return strings.Join(parts, ", ")
	})
	row("incidents: rolled back; escalated (paged); resolved; verifying; other", func(r *result) string {
		c := r.incidents
		return fmt.Sprintf("%d: %d; %d; %d; %d; %d", c.total, c.rolledBack, c.escalated, c.resolved, c.verifying, c.other)
	})
	row("CPU from first send until handled", func(r *result) string {
		return fmt.Sprintf("%.1f s (%.0f%% of a core)", r.burstCPU.Seconds(), 100*r.burstCPU.Seconds()/r.burstWall.Seconds())
	})
	row("API requests per alert during the burst: ConfigMaps (records, incidents)", func(r *result) string { return r.requests.PerAlert(r.alerts, "configmaps") })
	row("API requests per alert: Events", func(r *result) string { return r.requests.PerAlert(r.alerts, "events") })
	row("API requests per alert: all resources, LIST and WATCH left out", func(r *result) string { return r.requests.PerAlert(r.alerts) })
	row("RSS after the burst", func(r *result) string { return fmt.Sprintf("%.1f MiB", mib(r.rssAfter)) })
	row("Go heap in use after the burst", func(r *result) string { return fmt.Sprintf("%.1f MiB", r.heapAfter/(1<<20)) })
	row("**peak RSS** (`VmHWM`, the whole life)", func(r *result) string { return fmt.Sprintf("**%.1f MiB**", mib(r.rssPeak)) })
	w("")

	w(harness.StatsHeader)
	for _, r := range results {
		name := "`" + r.variant.Name + "`"
		if len(r.took) > 0 {
			w("%s", harness.Summarise(tooks(r)).Row("**"+name+": the decision** (`took` of the `decided` log line)"))
		}
		w("%s", harness.Summarise(receivedToDecided(r)).Row(name+": received → decided (alert record; includes the queue)"))
		w("%s", harness.Summarise(answerLatencies(r)).Row(name+": webhook answer, each attempt"))
		w("%s", harness.Summarise(notificationLatencies(r)).Row(name+": webhook first send → final answer (retries included)"))
	}
	w("")
	for _, r := range results {
		if r.histCount == 0 {
			w("`%s`: the daemon exposes no `autorollbackd_decision_duration_seconds`; it logged `took` for %d decisions.", r.variant.Name, len(r.took))
			continue
		}
		var le []string
		for _, bk := range r.histLE {
			if math.IsInf(bk.le, 1) {
				continue
			}
			le = append(le, fmt.Sprintf("≤%gs: %.0f", bk.le, bk.count))
		}
		w("`%s`: `autorollbackd_decision_duration_seconds`: %.0f observations, mean %s ms; cumulative buckets %s.",
			r.variant.Name, r.histCount, harness.Ms(time.Duration(r.histSum/r.histCount*float64(time.Second))), strings.Join(le, ", "))
	}
	if len(results) > 0 {
		w("")
	}
	for _, r := range results {
		if len(r.otherAnswers) > 0 {
			w("`%s`: final answers other than `accepted`: %v.", r.variant.Name, r.otherAnswers)
		}
	}

	w("**Targets: ready within %s; RSS at ready under %d MiB, peak under %d MiB; every decision under %s; "+
		"with the default configuration, a burst of %d distinct alerts has every notification answered within %s and every alert decided within %s.** "+
		"Each verdict gives the measure against its bound; the burst's targets are the `default` configuration's, the other configurations' verdicts are for comparison.\n",
		readyTarget, rssReadyTargetMiB, rssPeakTargetMiB, decisionTarget, 1000, answeredTarget, decidedTarget)
	for _, r := range results {
		w("- `%s`:", r.variant.Name)
		w("  - ready after %s: %s.", secs(r.ready), within(r.ready.Seconds(), readyTarget.Seconds(), "s"))
		w("  - RSS at ready %.1f MiB: %s.", mib(r.rssReady), under(mib(r.rssReady), rssReadyTargetMiB, "MiB"))
		w("  - peak RSS %.1f MiB: %s.", mib(r.rssPeak), under(mib(r.rssPeak), rssPeakTargetMiB, "MiB"))
		if len(r.took) > 0 {
			s := harness.Summarise(tooks(r))
			slow := 0
			for _, d := range r.took {
				if d >= decisionTarget {
					slow++
				}
			}
			verdict := under(float64(s.Max)/float64(time.Millisecond), float64(decisionTarget)/float64(time.Millisecond), "ms")
			if s.N == 0 {
				verdict = "**not met**: no decision measured"
			}
			w("  - slowest decision (`took`) %s ms, %d of %d at %s or more: %s.", harness.Ms(s.Max), slow, s.N, decisionTarget, verdict)
		} else {
			w("  - decision time: not measured (the daemon logs no `took`); received → decided, which includes the queue, is above: **not met**.")
		}
		if len(r.notifications) != 1000 {
			w("  - the burst had %d alerts, not 1000: its verdicts are indicative only.", len(r.notifications))
		}
		answered := within(r.sent.Seconds(), answeredTarget.Seconds(), "s")
		if n := len(r.notifications) - r.accepted - r.duplicates; n > 0 {
			answered = fmt.Sprintf("**not met**: %d notifications not answered 200", n)
		}
		w("  - burst: every notification answered %s after the first send: %s.", secs(r.sent), answered)
		switch {
		case r.lastDecided.IsZero():
			w("  - burst: no alert decided: **not met**.")
		case !r.decidedOK || len(receivedToDecided(r)) < r.accepted:
			w("  - burst: %d of %d alerts decided, the last %s after the first send: **not met**.", len(receivedToDecided(r)), r.accepted, secs(r.lastDecided.Sub(r.firstSend)))
		default:
			d := r.lastDecided.Sub(r.firstSend)
			w("  - burst: every alert decided %s after the first send: %s.", secs(d), within(d.Seconds(), decidedTarget.Seconds(), "s"))
		}
	}
	w("")
	w("### Where the CPU went\n")
	w("CPU seconds (user+system) each process used in each phase, from `/proc/<pid>/stat`, and the seconds the whole machine's cores were busy, from `/proc/stat`. " +
		"\"Other work\" is the machine's busy time none of these processes used: everything else running on the machine, other benchmarks or tests included. " +
		"A phase whose whole-machine share is near 100%% was bound by CPU.\n")
	w("%s", m.table())
	return b.String()
}
