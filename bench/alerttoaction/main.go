// Command alerttoaction measures how long autorollbackd takes from an
// Alertmanager webhook to the rollback patch accepted by the API server, on
// one local control plane, against two references on identically prepared
// Deployments: one raw client-go PATCH of the same kind (the floor) and
// `kubectl rollout undo` run as a process per alert (what script-running
// webhook receivers do). It prints a markdown section for bench/RESULTS.md.
//
// Run it from the module root; bench/run.sh builds and runs it.
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"maps"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"

	"github.com/autorollbackd/autorollbackd/bench/internal/harness"
	"github.com/autorollbackd/autorollbackd/internal/config"
	"github.com/autorollbackd/autorollbackd/internal/kinds"
)

type options struct {
	daemon     string
	n          int
	namespaces int
	out        string
	work       string
	timeout    time.Duration
	variants   string
}

func main() {
	var o options
	flag.StringVar(&o.daemon, "daemon", "", "Path of the autorollbackd binary to run (required).")
	flag.IntVar(&o.n, "n", 200, "Number of rollbacks per method (default 200).")
	flag.IntVar(&o.namespaces, "namespaces", 4, "Namespaces each method's Deployments are spread over (default 4).")
	flag.StringVar(&o.out, "out", "", "File the markdown section is written to (default stdout).")
	flag.StringVar(&o.work, "work", "", "Directory for the daemon's configuration, log and the raw samples (default a new temporary directory, kept).")
	flag.DurationVar(&o.timeout, "timeout", 12*time.Minute, "Bound on the whole run, cluster included (default 12m).")
	flag.StringVar(&o.variants, "variants", "default,qps-50,no-priority", "Comma-separated daemon configurations to measure, each on its own Deployments: default, qps-50, no-priority.")
	flag.Parse()
	if o.daemon == "" {
		fmt.Fprintln(os.Stderr, "alerttoaction: -daemon is required")
		os.Exit(2)
	}
	harness.Main("alerttoaction", o.timeout, func(ctx context.Context) error { return run(ctx, o) })
}

// variants are the configurations that can be measured. Every one raises
// the global budget of automatic rollbacks, 10 an hour by default: 200
// rollbacks are the point of the benchmark.
var variants = []harness.Variant{
	{Name: "default", What: fmt.Sprintf("the defaults: `engine.incidentWorkers: %d`, `kubernetes.qps: %g`, `burst: %d`",
		defaults.Engine.IncidentWorkers, defaults.Kubernetes.QPS, defaults.Kubernetes.Burst)},
	{Name: "qps-50", Extra: "kubernetes:\n  qps: 50\n  burst: 100\n",
		What: "`kubernetes.qps: 50`, `burst: 100`: the client-side rate limit the daemon had by default before it was sized from measurement"},
	{Name: "no-priority", Extra: "kubernetes:\n  backgroundInFlight: 0\n",
		What: "`kubernetes.backgroundInFlight: 0`: the incident workers' and verification's requests are not held back while an alert's are in flight"},
}

// defaults is the daemon's default configuration, which the `default`
// variant runs and the results quote.
var defaults = config.Default()

// Targets, for the default configuration, over targetN sequential
// rollbacks: the daemon's p99 and p50 (webhook sent → rollback seen) within
// these multiples of the raw PATCH floor's.
const (
	p99Target = 2.0
	p50Target = 1.5
	targetN   = 200
)

// lostAfter is how long the daemon phase waits for a rollback before it
// counts the alert as never acted on and sends the next.
const lostAfter = 30 * time.Second

// A phase begins once the machine had less than quietBusy of its CPU in
// use over a whole quietWindow; it waits quietTimeout at most, and the
// report says when it did not get quiet.
const (
	quietBusy    = 0.2
	quietWindow  = time.Second
	quietTimeout = 2 * time.Minute
)

// budget goes into the policy section of every variant.
const budget = "  budget:\n    globalPerHour: 10000\n"

func run(ctx context.Context, o options) error {
	chosen, err := harness.Choose(variants, o.variants)
	if err != nil {
		return err
	}
	b, err := harness.Begin(ctx, o.work, "bench-alerttoaction-", 2)
	if err != nil {
		return err
	}
	defer b.Cluster.Stop()
	o.work = b.Work
	tmpl, start, load0, c := b.Template, b.Started, b.Load, b.Cluster
	cs := c.Client
	w, err := harness.NewWatcher(ctx, cs)
	if err != nil {
		return err
	}

	sets := map[string][]harness.Ref{
		"patch":   harness.Refs("bench-patch", o.n, o.namespaces),
		"kubectl": harness.Refs("bench-kubectl", o.n, o.namespaces),
	}
	for _, v := range chosen {
		sets["daemon-"+v.Name] = harness.Refs("bench-"+v.Name, o.n, o.namespaces)
	}
	prepStart := time.Now()
	harness.Logf("preparing %d Deployments per set in %d sets: revision 1, then revision 2 rolled out", o.n, len(sets))
	errs := make(chan error, len(sets))
	for name, refs := range sets {
		go func() { errs <- harness.PrepareTwoRevisions(ctx, cs, w, name, refs, 6*time.Minute) }()
	}
	for range sets {
		if err := <-errs; err != nil {
			return fmt.Errorf("prepare: %w", err)
		}
	}
	prep := time.Since(prepStart)
	harness.Logf("prepared in %s", prep.Round(time.Second))

	// Each phase begins on a quiet machine: the controllers write the
	// Events of a step from a queue, after the fact, and the preparation's
	// 600 rollouts or a phase's 200 leave seconds of them behind.
	var waits []string
	quiet := func(before string) error {
		took, err := harness.WaitQuiet(ctx, quietBusy, quietWindow, quietTimeout)
		if err != nil && ctx.Err() != nil {
			return err
		}
		what := fmt.Sprintf("%s before %s", took.Round(100*time.Millisecond), before)
		if err != nil {
			what += fmt.Sprintf(" (**not quiet**: %v)", err)
		}
		waits = append(waits, what)
		return nil
	}
	var results []*daemonResult
	for _, v := range chosen {
		if err := quiet("daemon `" + v.Name + "`"); err != nil {
			return err
		}
		dir := filepath.Join(o.work, v.Name)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return err
		}
		r, err := daemonPhase(ctx, c, w, tmpl, o.daemon, dir, v, sets["daemon-"+v.Name])
		if err != nil {
			return fmt.Errorf("daemon (%s): %w", v.Name, err)
		}
		results = append(results, r)
		// Counted until the controllers are done too, as the floor's are.
		if err := w.SettledAfterRollback(ctx, sets["daemon-"+v.Name], 3*time.Minute); err != nil {
			return err
		}
		if err := r.load.settled(ctx, c); err != nil {
			return err
		}
	}
	if err := quiet("the raw PATCH"); err != nil {
		return err
	}
	patchLoad, err := startLoad(ctx, c)
	if err != nil {
		return err
	}
	patch, err := patchPhase(ctx, cs, w, sets["patch"])
	if err != nil {
		return fmt.Errorf("raw PATCH: %w", err)
	}
	patchLoad.sent()
	// The patches return long before the controllers have reacted to
	// them all: counted until the rollouts settled, the floor's requests
	// include those reactions, as the daemon's do.
	if err := w.SettledAfterRollback(ctx, sets["patch"], 3*time.Minute); err != nil {
		return err
	}
	if err := patchLoad.settled(ctx, c); err != nil {
		return err
	}
	if err := quiet("kubectl"); err != nil {
		return err
	}
	kubectl, err := kubectlPhase(ctx, c, w, sets["kubectl"])
	if err != nil {
		return fmt.Errorf("kubectl: %w", err)
	}
	if err := writeRaw(o.work, results, patch, kubectl); err != nil {
		return err
	}
	report := markdown(o, results, patch, patchLoad, kubectl, waits, prep, load0, harness.LoadAvg(), time.Since(start))
	if o.out == "" {
		_, err = os.Stdout.WriteString(report)
		return err
	}
	return os.WriteFile(o.out, []byte(report), 0o644)
}

// sample is one rollback: when it was asked for and when it happened.
type sample struct {
	ref  harness.Ref
	sent time.Time
	// answered: the webhook's response (daemon) or the PATCH's (floor) or
	// the process's exit (kubectl).
	answered time.Time
	seen     time.Time // the watcher saw the template back at v1
	// The daemon's own clock, from its incident record.
	received, opened, actionAt time.Time
}

type daemonResult struct {
	variant harness.Variant
	samples []sample
	// alertToAction is the daemon's autorollbackd_alert_to_action_seconds.
	alertToAction histogram
	// acting is the acting client's requests by verb, from
	// autorollbackd_kube_request_duration_seconds.
	acting   map[string]histogram
	resolved time.Duration // from the last webhook until no incident was open
	openLeft string
	rssKiB   int64
	// retries counts 5xx answers, each retried as Alertmanager would;
	// dupAfterRetry the retries answered "duplicates":1.
	retries, dupAfterRetry int
	// lost are the Deployments not rolled back within lostAfter of their
	// alert; they have no sample.
	lost []harness.Ref
	// CPU time the daemon used while the alerts were sent, and their wall
	// time.
	cpu, wall time.Duration
	// load is what the first alert until the set's rollouts settled cost:
	// the API server's requests, from every client (the daemon's and the
	// controllers' reacting to it), and the control plane's CPU time.
	load phaseLoad
}

// phaseLoad is what a phase cost the machine.
type phaseLoad struct {
	// busy is the share of the machine's CPU time in use while the alerts
	// or patches were sent, every process counted.
	busy float64
	// requests and cpu count from the first alert or patch until the
	// set's rollouts settled, so that the controllers' reactions to the
	// last rollbacks are in.
	requests harness.APICounts
	cpu      harness.Usage
	req0     harness.APICounts
	meter    *harness.Meter
}

// startLoad starts counting a phase's load.
func startLoad(ctx context.Context, c *harness.Cluster) (phaseLoad, error) {
	req0, err := harness.APIRequests(ctx, c.Client)
	if err != nil {
		return phaseLoad{}, err
	}
	pids, err := c.PIDs()
	if err != nil {
		return phaseLoad{}, err
	}
	return phaseLoad{req0: req0, meter: harness.StartMeter(pids)}, nil
}

// sent notes how busy the machine was while the phase sent its requests.
func (l *phaseLoad) sent() { l.busy = l.meter.Read().Busy() }

// settled ends the count, once the phase's rollouts settled.
func (l *phaseLoad) settled(ctx context.Context, c *harness.Cluster) error {
	l.cpu = l.meter.Read()
	req1, err := harness.APIRequests(ctx, c.Client)
	if err != nil {
		return err
	}
	l.requests = req1.Since(l.req0)
	return nil
}

// controlPlane are the processes whose CPU time per rollback the report
// shows.
var controlPlane = []string{"kube-apiserver", "etcd", "kube-controller-manager"}

// cpuPerRollback is the control plane's CPU time per rollback, a cell of
// the report's table.
func (l phaseLoad) cpuPerRollback(n int) string {
	if n == 0 {
		return "–"
	}
	var parts []string
	for _, name := range controlPlane {
		if d, ok := l.cpu.Procs[name]; ok {
			parts = append(parts, fmt.Sprintf("%s %s", name, harness.Ms(d/time.Duration(n))))
		}
	}
	return strings.Join(parts, ", ")
}

func daemonPhase(ctx context.Context, c *harness.Cluster, w *harness.Watcher, tmpl []byte, bin, dir string, v harness.Variant, refs []harness.Ref) (*daemonResult, error) {
	cfg := harness.DaemonConfig{
		RecordsNamespace: "bench-records-" + v.Name,
		Engine:           v.Engine,
		Extra:            "policy:\n  namespaces:\n    allow: [" + strings.Join(harness.Namespaces(refs), ", ") + "]\n" + budget + v.Extra,
	}
	harness.Logf("daemon (%s): starting", v.Name)
	d, err := harness.StartDaemon(ctx, bin, c.Kubeconfig, dir, cfg)
	if err != nil {
		return nil, err
	}
	defer d.Stop()
	rss := harness.SampleRSS(d.Pid(), 500*time.Millisecond)
	cpu0, _ := harness.CPUTime(d.Pid())
	load, err := startLoad(ctx, c)
	if err != nil {
		return nil, err
	}
	phase0 := time.Now()
	url := "http://" + d.Addr + "/webhook"
	client := &http.Client{Timeout: 30 * time.Second}
	res := &daemonResult{variant: v}
	harness.Logf("daemon (%s): %d webhooks, one at a time, each waiting for its rollback", v.Name, len(refs))
	for i, r := range refs {
		body, err := harness.Payload(tmpl, []harness.Alert{{Ref: r, Fingerprint: fmt.Sprintf("%016x", i+1), Impact: "service_down", StartsAt: time.Now()}})
		if err != nil {
			return nil, err
		}
		s := sample{ref: r, sent: time.Now()}
		// As Alertmanager does, a 5xx is retried; the latency still counts
		// from the first attempt.
		for attempt := 1; ; attempt++ {
			code, got, err := harness.Post(ctx, client, url, body)
			if err != nil {
				return nil, fmt.Errorf("POST /webhook for %s: %w", r, err)
			}
			if code >= 500 && attempt < 10 {
				res.retries++
				harness.Logf("daemon (%s): %s answered %d, retrying: %s", v.Name, r, code, got)
				time.Sleep(250 * time.Millisecond)
				continue
			}
			// After a 5xx the alert may have been recorded all the same
			// (the answer, not the write, was lost): then it is a duplicate.
			if code == http.StatusOK && attempt > 1 && strings.Contains(got, `"duplicates":1`) {
				res.dupAfterRetry++
				harness.Logf("daemon (%s): %s accepted as a duplicate after a retry", v.Name, r)
				break
			}
			if code != http.StatusOK || !strings.Contains(got, `"accepted":1`) {
				return nil, fmt.Errorf("POST /webhook for %s: %d %s", r, code, got)
			}
			break
		}
		s.answered = time.Now()
		// An alert never acted on is a result, not a reason to stop.
		if s.seen, err = w.WaitRolledBack(ctx, r, lostAfter); err != nil {
			if ctx.Err() != nil {
				return nil, ctx.Err()
			}
			res.lost = append(res.lost, r)
			harness.Logf("daemon (%s): %v (daemon log: %s)", v.Name, err, filepath.Join(dir, "daemon.log"))
			continue
		}
		res.samples = append(res.samples, s)
		if (i+1)%50 == 0 {
			harness.Logf("daemon (%s): %d rollbacks", v.Name, i+1)
		}
	}
	last := time.Now()
	cpu1, _ := harness.CPUTime(d.Pid())
	res.cpu, res.wall = cpu1-cpu0, last.Sub(phase0)
	load.sent()
	res.load = load
	res.alertToAction = readHistogram(ctx, d.Addr, "autorollbackd_alert_to_action_seconds", "")
	res.acting = map[string]histogram{}
	for _, verb := range []string{"GET", "PATCH"} {
		res.acting[verb] = readHistogram(ctx, d.Addr, "autorollbackd_kube_request_duration_seconds", fmt.Sprintf(`{client="act",verb=%q}`, verb))
	}
	// Let verification finish, bounded, so that the next phase does not
	// run beside it; how long it takes is worth knowing too.
	err = wait.PollUntilContextTimeout(ctx, 500*time.Millisecond, 3*time.Minute, true, func(ctx context.Context) (bool, error) {
		v, err := harness.Metric(ctx, d.Addr, "autorollbackd_incidents_open")
		res.openLeft = v
		return err == nil && v == "0", nil
	})
	res.resolved = time.Since(last)
	if err != nil {
		harness.Logf("daemon (%s): %s incidents still open after %s", v.Name, res.openLeft, res.resolved.Round(time.Second))
	}
	// Read after verification: an incident opened by a rollback taken
	// before any record learns of its action from its worker, a moment
	// after the webhook's answer.
	if err := readIncidents(ctx, d.Addr, res.samples); err != nil {
		return nil, err
	}
	res.rssKiB, _ = rss.Stop()
	return res, nil
}

// incidentJSON is the part of GET /api/v1/incidents/{id} the benchmark
// reads.
type incidentJSON struct {
	ID     string `json:"id"`
	Target struct {
		Namespace string `json:"namespace"`
		Name      string `json:"name"`
	} `json:"target"`
	Alerts []struct {
		ReceivedAt time.Time `json:"receivedAt"`
	} `json:"alerts"`
	Actions []struct {
		At time.Time `json:"at"`
	} `json:"actions"`
	Timeline []struct {
		At   time.Time `json:"at"`
		What string    `json:"what"`
	} `json:"timeline"`
}

// readIncidents fills the daemon's own timestamps of each sample from its
// incident: when the webhook received the alert, when the incident was
// opened (the decision taken), and actions[0].at (recorded just after the
// patch returned).
func readIncidents(ctx context.Context, addr string, samples []sample) error {
	code, body, err := harness.Get(ctx, "http://"+addr+"/api/v1/incidents", harness.APIToken)
	if err != nil || code != http.StatusOK {
		return fmt.Errorf("list incidents: %d %v", code, err)
	}
	var list []struct {
		ID string `json:"id"`
	}
	if err := json.Unmarshal(body, &list); err != nil {
		return fmt.Errorf("decode incidents: %w", err)
	}
	byRef := map[string]*incidentJSON{}
	for _, s := range list {
		code, body, err := harness.Get(ctx, "http://"+addr+"/api/v1/incidents/"+s.ID, harness.APIToken)
		if err != nil || code != http.StatusOK {
			return fmt.Errorf("get incident %s: %d %v", s.ID, code, err)
		}
		var inc incidentJSON
		if err := json.Unmarshal(body, &inc); err != nil {
			return fmt.Errorf("decode incident %s: %w", s.ID, err)
		}
		byRef[inc.Target.Namespace+"/"+inc.Target.Name] = &inc
	}
	for i := range samples {
		inc := byRef[samples[i].ref.String()]
		if inc == nil || len(inc.Alerts) == 0 || len(inc.Actions) == 0 {
			return fmt.Errorf("no incident with an action for %s", samples[i].ref)
		}
		samples[i].received = inc.Alerts[0].ReceivedAt
		samples[i].actionAt = inc.Actions[0].At
		for _, e := range inc.Timeline {
			if strings.HasPrefix(e.What, "decision: ") {
				samples[i].opened = e.At
			}
		}
	}
	return nil
}

// patchPhase is the floor: the same kind of write the daemon makes (a JSON
// patch replacing the template and annotations, with a resourceVersion
// precondition), built beforehand, and timed from call to response.
func patchPhase(ctx context.Context, cs kubernetes.Interface, w *harness.Watcher, refs []harness.Ref) ([]sample, error) {
	harness.Logf("raw PATCH: %d patches, one at a time", len(refs))
	out := make([]sample, 0, len(refs))
	for _, r := range refs {
		api := cs.AppsV1().Deployments(r.Namespace)
		d, err := api.Get(ctx, r.Name, metav1.GetOptions{})
		if err != nil {
			return nil, err
		}
		rs, err := harness.ReplicaSetOf(ctx, cs, d, "1")
		if err != nil {
			return nil, err
		}
		patch, err := rollbackPatch(d, rs, r)
		if err != nil {
			return nil, err
		}
		s := sample{ref: r, sent: time.Now()}
		if _, err := api.Patch(ctx, r.Name, types.JSONPatchType, patch, metav1.PatchOptions{FieldManager: "bench"}); err != nil {
			return nil, fmt.Errorf("patch %s: %w", r, err)
		}
		s.answered = time.Now()
		if s.seen, err = w.WaitRolledBack(ctx, r, time.Minute); err != nil {
			return nil, err
		}
		out = append(out, s)
	}
	return out, nil
}

// rollbackPatch is the daemon's rollback patch, rebuilt here: kubectl's
// (the ReplicaSet's template without its pod-template-hash label, the
// ReplicaSet's annotations but for those kubectl keeps from the
// Deployment), plus the daemon's record annotations and the resourceVersion
// read as a precondition. Same operations, same size.
func rollbackPatch(d *appsv1.Deployment, rs *appsv1.ReplicaSet, r harness.Ref) ([]byte, error) {
	keep := map[string]bool{
		corev1.LastAppliedConfigAnnotation: true, harness.RevisionAnnotation: true,
		"deployment.kubernetes.io/revision-history": true, "deployment.kubernetes.io/desired-replicas": true,
		"deployment.kubernetes.io/max-replicas": true, appsv1.DeprecatedRollbackTo: true,
	}
	template := rs.Spec.Template.DeepCopy()
	delete(template.Labels, appsv1.DefaultDeploymentUniqueLabelKey)
	annotations := map[string]string{}
	for k := range keep {
		if v, ok := d.Annotations[k]; ok {
			annotations[k] = v
		}
	}
	for k, v := range rs.Annotations {
		if !keep[k] {
			annotations[k] = v
		}
	}
	maps.Copy(annotations, map[string]string{
		kinds.AnnotationRolledBackFrom: "2",
		kinds.AnnotationRolledBackTo:   "1",
		kinds.AnnotationRolledBackAt:   time.Now().UTC().Format(time.RFC3339),
		kinds.AnnotationFingerprint:    "0000000000000000",
		kinds.AnnotationRolledBackFor:  "deployment/" + r.Namespace + "/" + r.Name + "@2",
		"kubernetes.io/change-cause":   "bench: rolled back from revision 2 to 1: alert EventServiceDown, rule service-down (service_down)",
	})
	return json.Marshal([]map[string]any{
		{"op": "replace", "path": "/metadata/resourceVersion", "value": d.ResourceVersion},
		{"op": "replace", "path": "/spec/template", "value": template},
		{"op": "replace", "path": "/metadata/annotations", "value": annotations},
	})
}

// kubectlPhase runs `kubectl rollout undo` as a process per alert, timed
// from process start to exit.
func kubectlPhase(ctx context.Context, c *harness.Cluster, w *harness.Watcher, refs []harness.Ref) ([]sample, error) {
	harness.Logf("kubectl rollout undo: %d processes, one at a time", len(refs))
	kubectl := filepath.Join(c.BinDir, "kubectl")
	out := make([]sample, 0, len(refs))
	for _, r := range refs {
		cmd := exec.CommandContext(ctx, kubectl, "--kubeconfig", c.Kubeconfig, "-n", r.Namespace, "rollout", "undo", "deployment/"+r.Name)
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		s := sample{ref: r, sent: time.Now()}
		if err := cmd.Run(); err != nil {
			return nil, fmt.Errorf("kubectl rollout undo %s: %w: %s", r, err, stderr.String())
		}
		s.answered = time.Now()
		var err error
		if s.seen, err = w.WaitRolledBack(ctx, r, time.Minute); err != nil {
			return nil, err
		}
		out = append(out, s)
	}
	return out, nil
}

func durations(samples []sample, from, to func(sample) time.Time) []time.Duration {
	out := make([]time.Duration, 0, len(samples))
	for _, s := range samples {
		out = append(out, to(s).Sub(from(s)))
	}
	return out
}

func sent(s sample) time.Time     { return s.sent }
func answered(s sample) time.Time { return s.answered }
func seen(s sample) time.Time     { return s.seen }
func received(s sample) time.Time { return s.received }
func opened(s sample) time.Time   { return s.opened }
func actionAt(s sample) time.Time { return s.actionAt }

// histogram is one series of a histogram the daemon serves: how many
// observations, and their sum in seconds.
type histogram struct{ n, sum float64 }

func (h histogram) mean() time.Duration { return time.Duration(h.sum / h.n * float64(time.Second)) }

// readHistogram reads the series of histogram name with labels (in the
// exposition's order, or empty) from the daemon's /metrics; zero when it
// is not served.
func readHistogram(ctx context.Context, addr, name, labels string) histogram {
	var h histogram
	sum, _ := harness.Metric(ctx, addr, name+"_sum"+labels)
	n, _ := harness.Metric(ctx, addr, name+"_count"+labels)
	h.sum, _ = strconv.ParseFloat(sum, 64)
	h.n, _ = strconv.ParseFloat(n, 64)
	return h
}

// writeRaw keeps every sample as CSV next to the daemon's logs, for a
// closer look than percentiles give.
func writeRaw(dir string, daemons []*daemonResult, patch, kubectl []sample) error {
	var b strings.Builder
	b.WriteString("method,namespace,name,sent_unix_ns,answered_ms,seen_ms,received_ms,opened_ms,action_at_ms\n")
	ms := func(s sample, t time.Time) string {
		if t.IsZero() {
			return ""
		}
		return harness.Ms(t.Sub(s.sent))
	}
	emit := func(method string, ss []sample) {
		for _, s := range ss {
			fmt.Fprintf(&b, "%s,%s,%s,%d,%s,%s,%s,%s,%s\n", method, s.ref.Namespace, s.ref.Name, s.sent.UnixNano(),
				ms(s, s.answered), ms(s, s.seen), ms(s, s.received), ms(s, s.opened), ms(s, s.actionAt))
		}
	}
	for _, d := range daemons {
		emit("daemon-"+d.variant.Name, d.samples)
	}
	emit("patch", patch)
	emit("kubectl", kubectl)
	return os.WriteFile(filepath.Join(dir, "samples.csv"), []byte(b.String()), 0o644)
}

func markdown(o options, daemons []*daemonResult, patch []sample, patchLoad phaseLoad, kubectl []sample, waits []string, prep time.Duration, load0, load1 string, total time.Duration) string {
	var b strings.Builder
	p := func(format string, args ...any) { fmt.Fprintf(&b, format+"\n", args...) }
	p("## 1. Alert to action\n")
	p("One local control plane (the test environment's kube-apiserver, kube-controller-manager, kube-scheduler and etcd, kwok nodes; "+
		"components' client QPS limits lifted, see the README). "+
		"For each method, %d opted-in Deployments (1 replica) across %d namespaces, each created at `v1` and rolled out to `v2-bad`, "+
		"the rollout complete before measuring (preparing all sets took %s). "+
		"One rollback per Deployment, **one at a time**: the next alert is sent once the previous rollback was seen. "+
		"A client-go watch on the Deployments, started before anything else, notes the moment each template returns to `v1`. "+
		"The phases run one after another, each once the previous one's rollouts completed and the machine was quiet "+
		"(under %.0f%% of its CPU in use over a whole %s; the controllers write a step's Events from a queue, after the fact). Waited for quiet: %s.\n",
		o.n, o.namespaces, prep.Round(time.Second), 100*quietBusy, quietWindow, strings.Join(waits, ", "))
	p("- **daemon**: `autorollbackd serve`, bearer auth on, log at info to a file, `policy.namespaces.allow` listing the namespaces and `policy.budget.globalPerHour: 10000` "+
		"(the default budget, 10 an hour, would escalate the 11th); one Alertmanager notification per Deployment "+
		"(the captured `%s` with one alert, `impact=service_down`, `startsAt` = now), over a keep-alive connection. Configurations:", harness.TemplatePath)
	for _, d := range daemons {
		p("  - `%s`: %s.", d.variant.Name, d.variant.What)
	}
	p("- **raw PATCH** (the floor): one client-go `PATCH` of the kind the daemon sends (JSON patch replacing `/spec/template` and `/metadata/annotations`, `resourceVersion` precondition), built beforehand, timed from call to response.")
	p("- **kubectl**: `kubectl rollout undo deployment/X` started as a process per alert (what script-running webhook receivers do), timed from process start to exit.\n")
	p("Load average (1, 5, 15 min) at start: %s; at end: %s. Whole part, cluster start included: %s.\n", load0, load1, total.Round(time.Second))
	p(harness.StatsHeader)
	for _, d := range daemons {
		p("%s", harness.Summarise(durations(d.samples, sent, seen)).Row("**daemon `"+d.variant.Name+"`**: webhook sent → rollback seen by the watch"))
		p("%s", harness.Summarise(durations(d.samples, sent, actionAt)).Row("daemon `"+d.variant.Name+"`: webhook sent → incident `actions[0].at`"))
	}
	floor := harness.Summarise(durations(patch, sent, answered))
	p("%s", floor.Row("**raw PATCH**: call → response (floor)"))
	p("%s", harness.Summarise(durations(patch, sent, seen)).Row("raw PATCH: call → seen by the watch"))
	p("%s", harness.Summarise(durations(kubectl, sent, answered)).Row("**kubectl rollout undo**: process start → exit"))
	p("%s", harness.Summarise(durations(kubectl, sent, seen)).Row("kubectl rollout undo: process start → seen by the watch"))
	p("")
	p("What a rollback cost the machine: how busy its %d cores were while the alerts or patches were sent (every process counted); "+
		"and, from the first alert or patch until the set's rollouts settled (so that the controllers' reactions to the last rollbacks are in), "+
		"the control plane's CPU time per rollback in ms and the API requests per rollback from every client, "+
		"counted by the API server (`apiserver_request_total`), LIST and WATCH left out:\n", runtime.NumCPU())
	p("| method | machine busy | control plane CPU per rollback (ms) | requests per rollback |\n|---|---:|---|---|")
	for _, d := range daemons {
		n := len(d.samples) + len(d.lost)
		p("| daemon `%s` | %.0f%% | %s | %s |", d.variant.Name, 100*d.load.busy, d.load.cpuPerRollback(n), d.load.requests.PerAlert(n))
	}
	p("| raw PATCH (its GET of the Deployment, untimed, included) | %.0f%% | %s | %s |", 100*patchLoad.busy, patchLoad.cpuPerRollback(len(patch)), patchLoad.requests.PerAlert(len(patch)))
	p("")
	p("**Target, with the default configuration, over %d sequential rollbacks: the daemon's p99 (webhook sent → rollback seen) within %g× the raw PATCH floor's p99, "+
		"and its p50 within %g× the floor's p50.** The other configurations' verdicts are for comparison.\n", targetN, p99Target, p50Target)
	if o.n != targetN {
		p("This run made %d rollbacks per method, not %d: its verdicts are indicative only.\n", o.n, targetN)
	}
	for _, d := range daemons {
		s := harness.Summarise(durations(d.samples, sent, seen))
		lost := ""
		if len(d.lost) > 0 {
			lost = fmt.Sprintf(" %d of %d alerts were never acted on: **not met**.", len(d.lost), len(d.lost)+len(d.samples))
		}
		p("- `%s`: p99 %s ms against the floor's %s ms: %s; p50 %s ms against the floor's %s ms: %s.%s", d.variant.Name,
			harness.Ms(s.P99), harness.Ms(floor.P99), ratioVerdict(s.P99, floor.P99, p99Target),
			harness.Ms(s.P50), harness.Ms(floor.P50), ratioVerdict(s.P50, floor.P50, p50Target), lost)
	}
	p("")
	for _, d := range daemons {
		p("### Where the daemon's time goes: `%s`\n", d.variant.Name)
		p("Per alert, from the daemon's incident records (same machine, same clock): `alerts[0].receivedAt`, the timeline's `decision:` entry (written when the incident is opened) and `actions[0].at` (written after the patch returned).\n")
		p(harness.StatsHeader)
		p("%s", harness.Summarise(durations(d.samples, sent, answered)).Row("webhook sent → 200 answered (alert recorded in a ConfigMap)"))
		p("%s", harness.Summarise(durations(d.samples, sent, received)).Row("webhook sent → received by the engine"))
		p("%s", harness.Summarise(durations(d.samples, received, opened)).Row("received → decided, incident opened"))
		p("%s", harness.Summarise(durations(d.samples, opened, seen)).Row("incident opened → rollback seen by the watch"))
		p("%s", harness.Summarise(durations(d.samples, seen, actionAt)).Row("rollback seen → `actions[0].at` recorded"))
		q := max(1, len(d.samples)/4)
		p("%s", harness.Summarise(durations(d.samples[:q], received, opened)).Row(fmt.Sprintf("received → incident opened, first %d alerts", q)))
		p("%s", harness.Summarise(durations(d.samples[len(d.samples)-q:], received, opened)).Row(fmt.Sprintf("received → incident opened, last %d alerts", q)))
		p("")
		rate := float64(len(d.samples)) / d.wall.Seconds()
		p("%d rollbacks in %.1f s: %.2f a second. Webhook answers 5xx, retried as Alertmanager would (the latency counts from the first attempt): %d. "+
			"Daemon CPU time meanwhile: %.1f s (%.0f%% of one core). Largest RSS: %.0f MiB.",
			len(d.samples), d.wall.Seconds(), rate, d.retries, d.cpu.Seconds(), 100*d.cpu.Seconds()/d.wall.Seconds(), float64(d.rssKiB)/1024)
		if len(d.lost) > 0 || d.dupAfterRetry > 0 {
			p("**%d alerts were never acted on** (no rollback within %s; they have no sample above): %v. "+
				"%d alerts were answered `\"duplicates\":1` on a retry after a 5xx: their first attempt had recorded them, though it answered 5xx.",
				len(d.lost), lostAfter, d.lost, d.dupAfterRetry)
		}
		if h := d.alertToAction; h.n > 0 {
			p("The daemon's own `autorollbackd_alert_to_action_seconds`: %.0f observations, mean %s ms.", h.n, harness.Ms(h.mean()))
		}
		if get, patch := d.acting["GET"], d.acting["PATCH"]; get.n > 0 && patch.n > 0 {
			p("The acting client's requests on the wire (`autorollbackd_kube_request_duration_seconds{client=\"act\"}`): %.0f GETs of the ReplicaSet to restore, mean %s ms; %.0f PATCHes, mean %s ms (the raw PATCH's mean is in the table above).",
				get.n, harness.Ms(get.mean()), patch.n, harness.Ms(patch.mean()))
		}
		if d.openLeft == "0" {
			p("Every incident was verified and resolved %s after the last rollback.\n", d.resolved.Round(time.Second))
		} else {
			p("%s incidents were still open %s after the last rollback (bounded wait).\n", d.openLeft, d.resolved.Round(time.Second))
		}
	}
	return b.String()
}

// ratioVerdict says whether got is within bound times the floor, and by how
// much it misses when it does not.
func ratioVerdict(got, floor time.Duration, bound float64) string {
	if floor <= 0 {
		return "**not met**: no floor measured"
	}
	ratio := float64(got) / float64(floor)
	if ratio <= bound {
		return fmt.Sprintf("%.2f× the floor, **met** (bound %g×)", ratio, bound)
	}
	over := got - time.Duration(bound*float64(floor))
	return fmt.Sprintf("%.2f× the floor, **not met**: bound %g×, %s ms over", ratio, bound, harness.Ms(over))
}
