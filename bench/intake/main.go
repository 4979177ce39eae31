// Command intake measures the throughput and latency of the daemon's
// POST /webhook, bearer authentication on, driven by hey over loopback for
// a bounded time per case: notifications of 1, 10 and 100 alerts that are
// all refused without a write (they name Deployments that are not opted
// in), the same sizes when every alert is a duplicate of one already
// recorded, and the same payloads against the bare encoding/json handler of
// bench/ceiling. It samples the daemon's RSS during each run and prints a
// markdown section for bench/RESULTS.md.
//
// Run it from the module root; bench/run.sh builds and runs it.
package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"

	"github.com/autorollbackd/autorollbackd/bench/internal/harness"
	"github.com/autorollbackd/autorollbackd/internal/kinds"
	"github.com/autorollbackd/autorollbackd/internal/testenv"
)

type options struct {
	daemon, ceiling, hey string
	namespaces           int
	duration             time.Duration
	concurrency          int
	out, work            string
	timeout              time.Duration
}

func main() {
	var o options
	flag.StringVar(&o.daemon, "daemon", "", "Path of the autorollbackd binary (required).")
	flag.StringVar(&o.ceiling, "ceiling", "", "Path of the bench/ceiling binary (required).")
	flag.StringVar(&o.hey, "hey", "", "Path of the hey load generator (required).")
	flag.IntVar(&o.namespaces, "namespaces", 1, "Namespaces the 100 Deployments of each case are spread over (default 1).")
	flag.DurationVar(&o.duration, "duration", 10*time.Second, "How long hey drives each case (default 10s).")
	flag.IntVar(&o.concurrency, "concurrency", 16, "Concurrent connections hey keeps busy (default 16).")
	flag.StringVar(&o.out, "out", "", "File the markdown section is written to (default stdout).")
	flag.StringVar(&o.work, "work", "", "Directory for the daemon's configuration, log, payloads and hey's output (default a new temporary directory, kept).")
	flag.DurationVar(&o.timeout, "timeout", 8*time.Minute, "Bound on the whole run, cluster included (default 8m).")
	flag.Parse()
	if o.daemon == "" || o.ceiling == "" || o.hey == "" {
		fmt.Fprintln(os.Stderr, "intake: -daemon, -ceiling and -hey are required")
		os.Exit(2)
	}
	harness.Main("intake", o.timeout, func(ctx context.Context) error { return run(ctx, o) })
}

const (
	nsRefused = "bench-intake-off" // Deployments not opted in
	nsDup     = "bench-intake-dup" // opted in; alerts recorded once, then re-sent
	records   = "bench-intake-records"
	maxAlerts = 100
)

var sizes = []int{1, 10, maxAlerts}

// result is one hey run.
type result struct {
	name     string
	alerts   int
	bytes    int
	hey      heyResult
	rssMax   int64 // KiB
	cpu      time.Duration
	logBytes int64 // -1: not measured
	// ceiling is, for a daemon case, the mean req/s of the ceiling runs
	// just before and just after it.
	ceiling float64
}

func run(ctx context.Context, o options) error {
	b, err := harness.Begin(ctx, o.work, "bench-intake-", 0)
	if err != nil {
		return err
	}
	defer b.Cluster.Stop()
	o.work = b.Work
	tmpl, start, load0, c := b.Template, b.Started, b.Load, b.Cluster
	cs := c.Client
	refused := harness.Refs(nsRefused, maxAlerts, o.namespaces)
	dup := harness.Refs(nsDup, maxAlerts, o.namespaces)
	allowed := append(harness.Namespaces(refused), harness.Namespaces(dup)...)
	if err := harness.EnsureNamespaces(ctx, cs, allowed...); err != nil {
		return err
	}
	// No replicas: the intake path reads only a workload's existence and
	// labels, and pods would only add background work.
	err = harness.Parallel(ctx, maxAlerts, 8, func(ctx context.Context, i int) error {
		if _, err := cs.AppsV1().Deployments(refused[i].Namespace).Create(ctx, harness.NewDeployment("intake-off", refused[i], 0, false), metav1.CreateOptions{}); err != nil {
			return err
		}
		_, err := cs.AppsV1().Deployments(dup[i].Namespace).Create(ctx, harness.NewDeployment("intake-dup", dup[i], 0, true), metav1.CreateOptions{})
		return err
	})
	if err != nil {
		return fmt.Errorf("create Deployments: %w", err)
	}

	// Payloads: a fixed start, one fingerprint per alert.
	startsAt := time.Now().Add(-time.Minute).UTC().Truncate(time.Second)
	payloads := map[string][]byte{}
	payloadBytes = map[string]int{}
	for _, n := range sizes {
		var off, again []harness.Alert
		for i := range n {
			off = append(off, harness.Alert{Ref: refused[i], Fingerprint: fmt.Sprintf("0ff%013x", i), Impact: "service_down", StartsAt: startsAt})
			// No rule matches this impact: the alert is recorded, decided
			// "ignore", and opens no incident.
			again = append(again, harness.Alert{Ref: dup[i], Fingerprint: fmt.Sprintf("d0b%013x", i), Impact: "bench_noop", StartsAt: startsAt})
		}
		for name, alerts := range map[string][]harness.Alert{fmt.Sprintf("refused-%d", n): off, fmt.Sprintf("duplicate-%d", n): again} {
			b, err := harness.Payload(tmpl, alerts)
			if err != nil {
				return err
			}
			payloads[name] = b
			payloadBytes[name] = len(b)
			if err := os.WriteFile(filepath.Join(o.work, name+".json"), b, 0o644); err != nil {
				return err
			}
		}
	}

	daemonDir := filepath.Join(o.work, "daemon")
	if err := os.MkdirAll(daemonDir, 0o755); err != nil {
		return err
	}
	d, err := harness.StartDaemon(ctx, o.daemon, c.Kubeconfig, daemonDir, harness.DaemonConfig{
		RecordsNamespace: records,
		Extra:            "policy:\n  namespaces:\n    allow: [" + strings.Join(allowed, ", ") + "]\n",
	})
	if err != nil {
		return err
	}
	defer d.Stop()
	url := "http://" + d.Addr + "/webhook"

	// Record the duplicates once, and check every payload's answer before
	// loading it.
	if err := expect(ctx, url, payloads[fmt.Sprintf("duplicate-%d", maxAlerts)], fmt.Sprintf(`"accepted":%d`, maxAlerts)); err != nil {
		return fmt.Errorf("record the alerts to duplicate: %w", err)
	}
	if err := waitDecided(ctx, c, maxAlerts); err != nil {
		return err
	}
	for _, n := range sizes {
		if err := expect(ctx, url, payloads[fmt.Sprintf("refused-%d", n)], fmt.Sprintf(`"refused":%d`, n)); err != nil {
			return err
		}
		if err := expect(ctx, url, payloads[fmt.Sprintf("duplicate-%d", n)], fmt.Sprintf(`"duplicates":%d`, n)); err != nil {
			return err
		}
	}
	rssIdle, _ := harness.ReadRSS(d.Pid())

	addr, err := testenv.FreeAddr()
	if err != nil {
		return err
	}
	ceil, err := harness.Start(ctx, "ceiling", addr, "/healthz", filepath.Join(o.work, "ceiling.log"), o.ceiling, "--listen-address", addr)
	if err != nil {
		return err
	}
	defer ceil.Stop()

	// Each daemon case between two runs of the ceiling of its size, which
	// it is judged against, so that a change in the machine's other load
	// hits both alike. runs keeps the order, for the table.
	var results, runs []result
	for _, n := range sizes {
		ceiling := func() (result, error) {
			r, err := measure(ctx, o, ceil, "", "ceiling", n, fmt.Sprintf("refused-%d", n), "")
			runs = append(runs, r)
			return r, err
		}
		before, err := ceiling()
		if err != nil {
			return err
		}
		for _, kind := range []string{"refused", "duplicate"} {
			name := fmt.Sprintf("%s-%d", kind, n)
			r, err := measure(ctx, o, d, harness.Token, name, n, name, filepath.Join(daemonDir, "daemon.log"))
			if err != nil {
				return err
			}
			runs = append(runs, r)
			after, err := ceiling()
			if err != nil {
				return err
			}
			r.ceiling = (before.hey.rps + after.hey.rps) / 2
			results = append(results, r)
			before = after
		}
	}
	rssAfter, _ := harness.ReadRSS(d.Pid())
	d.Stop()

	// The same refused runs with the log at warn price the info log line
	// each notification costs.
	quietDir := filepath.Join(o.work, "daemon-warn")
	if err := os.MkdirAll(quietDir, 0o755); err != nil {
		return err
	}
	q, err := harness.StartDaemon(ctx, o.daemon, c.Kubeconfig, quietDir, harness.DaemonConfig{
		RecordsNamespace: records + "-warn",
		Extra:            "log:\n  level: warn\npolicy:\n  namespaces:\n    allow: [" + strings.Join(allowed, ", ") + "]\n",
	})
	if err != nil {
		return err
	}
	defer q.Stop()
	for _, n := range []int{1, maxAlerts} {
		name := fmt.Sprintf("refused-%d", n)
		r, err := measure(ctx, o, q, harness.Token, name+", log at warn", n, name, "")
		if err != nil {
			return err
		}
		results = append(results, r)
	}
	q.Stop()

	report := markdown(o, results, runs, rssIdle, rssAfter, load0, harness.LoadAvg(), time.Since(start))
	if o.out == "" {
		_, err = os.Stdout.WriteString(report)
		return err
	}
	return os.WriteFile(o.out, []byte(report), 0o644)
}

// payloadBytes is the size of each payload, by name.
var payloadBytes map[string]int

// measure drives the server p with the payload of that name for the
// configured duration, sampling its RSS and CPU, and how much it logs to
// logFile ("" when not of interest).
func measure(ctx context.Context, o options, p *harness.Proc, token, name string, alerts int, payload, logFile string) (result, error) {
	r := result{name: name, alerts: alerts, bytes: payloadBytes[payload]}
	log0 := fileSize(logFile)
	cpu0, _ := harness.CPUTime(p.Pid())
	rss := harness.SampleRSS(p.Pid(), 250*time.Millisecond)
	harness.Logf("%s: %s with %d alerts for %s", p.Name, name, alerts, o.duration)
	file := strings.NewReplacer(", ", "-", " ", "-").Replace(name)
	if name == "ceiling" {
		file += fmt.Sprintf("-%d", alerts)
	}
	out := filepath.Join(o.work, "hey-"+file+".txt")
	var err error
	r.hey, err = runHey(ctx, o, "http://"+p.Addr+"/webhook", filepath.Join(o.work, payload+".json"), out, token)
	r.rssMax, _ = rss.Stop()
	cpu1, _ := harness.CPUTime(p.Pid())
	r.cpu = cpu1 - cpu0
	if logFile != "" {
		r.logBytes = fileSize(logFile) - log0
	} else {
		r.logBytes = -1
	}
	return r, err
}

func fileSize(path string) int64 {
	fi, err := os.Stat(path)
	if err != nil {
		return 0
	}
	return fi.Size()
}

// expect posts body once and checks the answer is 200 and holds want.
func expect(ctx context.Context, url string, body []byte, want string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+harness.Token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	var b bytes.Buffer
	_, _ = b.ReadFrom(resp.Body)
	if resp.StatusCode != http.StatusOK || !strings.Contains(b.String(), want) {
		return fmt.Errorf("POST /webhook = %d %s, want 200 with %s", resp.StatusCode, strings.TrimSpace(b.String()), want)
	}
	return nil
}

// waitDecided waits until n alert records are decided, so that the daemon's
// workers are idle when the load starts.
func waitDecided(ctx context.Context, c *harness.Cluster, n int) error {
	sel := kinds.LabelRecord + "=alert," + kinds.LabelAlertState + "=done"
	var got int
	err := wait.PollUntilContextTimeout(ctx, 250*time.Millisecond, time.Minute, true, func(ctx context.Context) (bool, error) {
		list, err := c.Client.CoreV1().ConfigMaps(records).List(ctx, metav1.ListOptions{LabelSelector: sel})
		if err != nil {
			return false, nil
		}
		got = len(list.Items)
		return got >= n, nil
	})
	if err != nil {
		return fmt.Errorf("wait for %d recorded alerts to be decided (%d are): %w", n, got, err)
	}
	return nil
}

// heyResult is what hey's summary says.
type heyResult struct {
	requests  int
	rps       float64
	p50, p99  time.Duration
	non200    int
	errors    int
	errorText string
}

var (
	reRPS    = regexp.MustCompile(`Requests/sec:\s+([0-9.]+)`)
	rePct    = regexp.MustCompile(`^\s+(\d+)%%? in ([0-9.]+) secs`)
	reStatus = regexp.MustCompile(`^\s+\[(\d+)\]\s+(\d+) responses`)
	reError  = regexp.MustCompile(`^\s+\[(\d+)\]\s+(.*)$`)
)

// runHey drives url with one payload for the configured duration and
// parses hey's summary; its full output is kept in outPath.
func runHey(ctx context.Context, o options, url, bodyPath, outPath, token string) (heyResult, error) {
	args := []string{"-z", o.duration.String(), "-c", strconv.Itoa(o.concurrency), "-m", "POST", "-T", "application/json", "-D", bodyPath}
	if token != "" {
		args = append(args, "-H", "Authorization: Bearer "+token)
	}
	args = append(args, url)
	hctx, cancel := context.WithTimeout(ctx, o.duration+time.Minute)
	defer cancel()
	out, err := exec.CommandContext(hctx, o.hey, args...).CombinedOutput()
	_ = os.WriteFile(outPath, out, 0o644)
	if err != nil {
		return heyResult{}, fmt.Errorf("hey %s: %w\n%s", strings.Join(args, " "), err, out)
	}
	var r heyResult
	m := reRPS.FindSubmatch(out)
	if m == nil {
		return r, errors.New("hey printed no Requests/sec: " + string(out))
	}
	r.rps, _ = strconv.ParseFloat(string(m[1]), 64)
	section := ""
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		line := sc.Text()
		switch {
		case strings.HasPrefix(line, "Status code distribution"):
			section = "status"
			continue
		case strings.HasPrefix(line, "Error distribution"):
			section = "error"
			continue
		case strings.HasPrefix(line, "Latency distribution"):
			section = "latency"
			continue
		case line != "" && !strings.HasPrefix(line, " "):
			section = ""
		}
		switch section {
		case "latency":
			if m := rePct.FindStringSubmatch(line); m != nil {
				secs, _ := strconv.ParseFloat(m[2], 64)
				switch m[1] {
				case "50":
					r.p50 = time.Duration(secs * float64(time.Second))
				case "99":
					r.p99 = time.Duration(secs * float64(time.Second))
				}
			}
		case "status":
			if m := reStatus.FindStringSubmatch(line); m != nil {
				n, _ := strconv.Atoi(m[2])
				r.requests += n
				if m[1] != "200" {
					r.non200 += n
				}
			}
		case "error":
			if m := reError.FindStringSubmatch(line); m != nil {
				n, _ := strconv.Atoi(m[1])
				r.errors += n
				r.requests += n
				if r.errorText == "" {
					r.errorText = m[2]
				}
			}
		}
	}
	return r, nil
}

func markdown(o options, results, runs []result, rssIdle, rssAfter int64, load0, load1 string, total time.Duration) string {
	var b strings.Builder
	p := func(format string, args ...any) { fmt.Fprintf(&b, format+"\n", args...) }
	p("## 2. Webhook intake\n")
	p("`hey -z %s -c %d -m POST -T application/json -H 'Authorization: Bearer …' -D <payload>` over loopback "+
		"against `autorollbackd serve` (bearer auth on, log at info to a file, default configuration but `policy.namespaces.allow`) "+
		"running against a local control plane, and against the bare `encoding/json` handler of `bench/ceiling`; "+
		"for each size the ceiling, then each daemon case followed by the ceiling again; each case is judged against the mean of the ceiling runs just before and just after it, so that a change in the machine's other load hits both alike. "+
		"Payloads are the captured `%s` with 1, 10 or 100 alerts. hey and the servers share the machine's %s.\n",
		o.duration, o.concurrency, harness.TemplatePath, cpus())
	p("- **refused**: every alert names a Deployment that exists but is not opted in: authenticated, decoded, validated, checked against the informer cache and the policy, refused; nothing is written.")
	p("- **duplicate**: every alert was recorded once before the run (`impact=bench_noop`, which no rule matches, so it was decided `ignore` and opened no incident); each re-send is answered from the daemon's memory of recorded alerts.")
	p("- **…, log at warn**: *refused* again on a fresh daemon with `log.level: warn`, to price the info log: one line per notification, however many alerts it refuses.")
	p("- **ceiling**: the same bytes as *refused*, to a handler that only reads and `json.Unmarshal`s them with `encoding/json`. The daemon decodes a valid notification with `encoding/json`'s semantics on the engine of `encoding/json/v2` (`github.com/go-json-experiment/json/v1`), which takes a little over half of `encoding/json`'s time (`BenchmarkDecode`, part 3), and reads a body whose length the request gives into one buffer, where `io.ReadAll` grows its own: part of each ratio is those two.\n")
	p("Errors count non-200 answers and transport errors. CPU is the server process's user+system time during the run. Log is what the daemon wrote to its log during the run.\n")
	p("Load average (1, 5, 15 min) at start: %s; at end: %s. Whole part, cluster start included: %s.\n", load0, load1, total.Round(time.Second))
	p("| case | alerts | body bytes | requests | req/s | p50 ms | p99 ms | errors | server RSS max MiB | server CPU s | log MiB |")
	p("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
	row := func(r result) {
		errs := r.hey.non200 + r.hey.errors
		p("| %s | %d | %d | %d | %.0f | %s | %s | %d | %.1f | %.1f | %s |", r.name, r.alerts, r.bytes, r.hey.requests, r.hey.rps,
			harness.Ms(r.hey.p50), harness.Ms(r.hey.p99), errs, float64(r.rssMax)/1024, r.cpu.Seconds(), logMiB(r))
	}
	// Every run once: the ceiling's and the daemon's in the order run, then
	// the daemon's at warn.
	table := slices.Clone(runs)
	for _, r := range results {
		if strings.Contains(r.name, "warn") {
			table = append(table, r)
		}
	}
	for _, r := range table {
		row(r)
	}
	p("")
	var peak int64
	var requests int
	for _, r := range results {
		if !strings.Contains(r.name, "warn") {
			peak = max(peak, r.rssMax)
			requests += r.hey.requests
		}
	}
	p("Daemon RSS (info-level daemon): %.1f MiB idle before the runs (after recording the %d alerts to duplicate), %.1f MiB at most during them, %.1f MiB after all %d requests.\n",
		float64(rssIdle)/1024, maxAlerts, float64(peak)/1024, float64(rssAfter)/1024, requests)
	for _, r := range table {
		if r.hey.non200+r.hey.errors > 0 {
			p("- %s (%d alerts): %d non-200 answers, %d transport errors (first: %s).", r.name, r.alerts, r.hey.non200, r.hey.errors, r.hey.errorText)
		}
	}
	p("**Target: refused and duplicate notifications of 1, 10 and 100 alerts at %.0f%% or more of the bare decoder's throughput (the ceiling), with no errors.**\n", 100*ceilingTarget)
	for _, r := range results {
		if strings.Contains(r.name, "warn") {
			continue
		}
		ratio := r.hey.rps / r.ceiling
		errs := r.hey.non200 + r.hey.errors
		var verdict string
		switch {
		case ratio >= ceilingTarget && errs == 0:
			verdict = "**met**"
		case ratio >= ceilingTarget:
			verdict = fmt.Sprintf("**not met**: %d errors", errs)
		default:
			verdict = fmt.Sprintf("**not met**: %.0f req/s short of %.0f (%.2f of the %.2f wanted)", ceilingTarget*r.ceiling-r.hey.rps, ceilingTarget*r.ceiling, ratio, ceilingTarget)
		}
		p("- %s: %.0f req/s = %.2f of the ceiling's %.0f (the runs before and after it), %d errors: %s.", r.name, r.hey.rps, ratio, r.ceiling, errs, verdict)
	}
	p("")
	return b.String()
}

// ceilingTarget is the share of the ceiling's throughput the refused and
// duplicate cases must reach.
const ceilingTarget = 0.8

func logMiB(r result) string {
	if r.logBytes < 0 {
		return "–"
	}
	return fmt.Sprintf("%.1f", float64(r.logBytes)/(1<<20))
}

func cpus() string {
	out, err := exec.Command("nproc").Output()
	if err != nil {
		return "cores"
	}
	return strings.TrimSpace(string(out)) + " cores"
}
