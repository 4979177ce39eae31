package engine

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/autorollbackd/autorollbackd/internal/actuator"
	"github.com/autorollbackd/autorollbackd/internal/escalate"
	"github.com/autorollbackd/autorollbackd/internal/incident"
	"github.com/autorollbackd/autorollbackd/internal/kinds"
	"github.com/autorollbackd/autorollbackd/internal/policy"
	"github.com/autorollbackd/autorollbackd/internal/testenv"
	"github.com/autorollbackd/autorollbackd/internal/verify"
)

// flagConfigMap creates a ConfigMap of flags in the fixture's namespace.
func (f *fixture) flagConfigMap(t *testing.T, name string, data map[string]string) {
	t.Helper()
	if _, err := f.c.Client.CoreV1().ConfigMaps(f.ns).Create(context.Background(), &corev1.ConfigMap{
		ObjectMeta: metav1.ObjectMeta{Name: name}, Data: data,
	}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
}

// configMapData returns a ConfigMap's data and annotations.
func (f *fixture) configMapData(t *testing.T, name string) (map[string]string, map[string]string) {
	t.Helper()
	cm, err := f.c.Client.CoreV1().ConfigMaps(f.ns).Get(context.Background(), name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return cm.Data, cm.Annotations
}

// untouched fails the test unless the fixture's Deployment is as it was
// created: same generation, the bad image.
func (f *fixture) untouched(t *testing.T) {
	t.Helper()
	if image, generation := f.image(t); image != "event-service:v2-bad" || generation != f.deployment.Generation {
		t.Fatalf("the workload changed: %s generation %d, was event-service:v2-bad generation %d", image, generation, f.deployment.Generation)
	}
}

// waitState waits until the incident with id is in one of the states.
func (r *running) waitState(t *testing.T, id string, states ...incident.State) *incident.Incident {
	t.Helper()
	var inc *incident.Incident
	testenv.Eventually(t, 60*time.Second, fmt.Sprintf("incident in %v", states), func(ctx context.Context) (bool, string) {
		v, err := r.opts.Incidents.Get(ctx, id)
		if err != nil {
			return false, err.Error()
		}
		inc = v.Incident
		return slices.Contains(states, inc.State), string(inc.State) + "\n" + inc.Render()
	})
	return inc
}

// allowFeatureFlags turns feature flags on (engine.allowFeatureFlags).
func allowFeatureFlags(_ *verify.Config, _ *escalate.Config, o *Options) { o.AllowFeatureFlags = true }

// An alert names a feature flag that the workload does not list in
// autorollback.io/feature-flags: the label alone never picks the key, the
// plan goes straight to the revisions, and the incident says why.
func TestFeatureFlagNotListedByTheWorkloadRollsBackRevisions(t *testing.T) {
	for _, tc := range []struct {
		name  string
		flags string // the workload's autorollback.io/feature-flags; "" for none
		label string // the alert's feature_flag
		why   string
	}{
		{"the workload lists no flags", "", "FEATURE_NEW_PRICING", "does not list it in its autorollback.io/feature-flags annotation"},
		{"the workload lists other flags", "FEATURE_STATE_MACHINE, FEATURE_SEARCH", "FEATURE_NEW_PRICING", "does not list it"},
		{"the key is no ConfigMap key", "bad/key", "bad/key", "invalid ConfigMap key"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			annotations := map[string]string{kinds.AnnotationFeatureFlagConfigMap: "event-service-config"}
			if tc.flags != "" {
				annotations[kinds.AnnotationFeatureFlags] = tc.flags
			}
			f := newFixture(t, optedIn, annotations)
			flags := map[string]string{"FEATURE_NEW_PRICING": "true", "FEATURE_STATE_MACHINE": "true"}
			f.flagConfigMap(t, "event-service-config", flags)
			e := f.startEngine(t, policy.DefaultConfig(), 1, allowFeatureFlags)
			n := firing(f.ns, "unlisted-flag", time.Now(), map[string]string{"impact": "critical_flow_broken", LabelFeatureFlag: tc.label})
			if _, err := e.Accept(context.Background(), n); err != nil {
				t.Fatal(err)
			}
			inc := e.waitIncident(t, n, incident.StateResolved)
			if len(inc.Actions) != 1 || inc.Actions[0].Kind != actuator.KindRollback || inc.Actions[0].Result == nil ||
				inc.Actions[0].Result.Outcome != actuator.OutcomeApplied {
				t.Fatalf("actions %+v; want one revision rollback\n%s", inc.Actions, inc.Render())
			}
			if data, _ := f.configMapData(t, "event-service-config"); !maps(data, flags) {
				t.Fatalf("flags = %v, want them untouched: %v", data, flags)
			}
			if image, _ := f.image(t); image != "event-service:v1" {
				t.Fatalf("image = %s, want the last good event-service:v1", image)
			}
			if !strings.Contains(inc.Render(), "no feature flag rung: the alert names feature flag") || !strings.Contains(inc.Render(), tc.why) {
				t.Errorf("the incident does not say why the flag was not turned off (%q)\n%s", tc.why, inc.Render())
			}
			if inc.FeatureFlag != nil || !strings.Contains(inc.FeatureFlagSkipped, tc.why) {
				t.Errorf("plan: flag %+v, skipped %q", inc.FeatureFlag, inc.FeatureFlagSkipped)
			}
		})
	}
}

// With feature flags off (engine.allowFeatureFlags, the default), an
// alert naming a flag the workload allows rolls back revisions: the daemon
// may not be allowed to write the workload's ConfigMaps at all.
func TestFeatureFlagsOffRollBackRevisions(t *testing.T) {
	f := newFixture(t, optedIn, map[string]string{kinds.AnnotationFeatureFlagConfigMap: "event-service-config",
		kinds.AnnotationFeatureFlags: "FEATURE_NEW_PRICING"})
	flags := map[string]string{"FEATURE_NEW_PRICING": "true"}
	f.flagConfigMap(t, "event-service-config", flags)
	e := f.startEngine(t, policy.DefaultConfig(), 1)
	n := firing(f.ns, "flags-off", time.Now(), map[string]string{"impact": "critical_flow_broken", LabelFeatureFlag: "FEATURE_NEW_PRICING"})
	if _, err := e.Accept(context.Background(), n); err != nil {
		t.Fatal(err)
	}
	inc := e.waitIncident(t, n, incident.StateResolved)
	if len(inc.Actions) != 1 || inc.Actions[0].Kind != actuator.KindRollback || inc.Actions[0].Result == nil ||
		inc.Actions[0].Result.Outcome != actuator.OutcomeApplied {
		t.Fatalf("actions %+v; want one revision rollback\n%s", inc.Actions, inc.Render())
	}
	if data, annotations := f.configMapData(t, "event-service-config"); !maps(data, flags) || len(annotations) != 0 {
		t.Fatalf("flag ConfigMap changed: %v %v, want %v untouched", data, annotations, flags)
	}
	if image, _ := f.image(t); image != "event-service:v1" {
		t.Fatalf("image = %s, want the last good event-service:v1", image)
	}
	const why = "feature flags are off (engine.allowFeatureFlags)"
	if inc.FeatureFlag != nil || !strings.Contains(inc.FeatureFlagSkipped, why) {
		t.Errorf("plan: flag %+v, skipped %q; want no flag, skipped because %s", inc.FeatureFlag, inc.FeatureFlagSkipped, why)
	}
	if !strings.Contains(inc.Render(), "no feature flag rung: the alert names feature flag") {
		t.Errorf("the incident does not say why the flag was not turned off\n%s", inc.Render())
	}
}

func maps(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if w, ok := b[k]; !ok || w != v {
			return false
		}
	}
	return true
}

// Records in the daemon's namespace are data, not orders: an incident or
// decided alert record written there by someone else, for a workload or a
// ConfigMap the policy in force would not act on, changes nothing. The
// action is refused and recorded, and people are paged.
func TestForgedRecordsChangeNothing(t *testing.T) {
	awsAuth := map[string]string{"mapRoles": "- rolearn: arn:aws:iam::1:role/nodes\n  groups: [system:nodes]\n"}
	for _, tc := range []struct {
		name        string
		labels      map[string]string // of the workload
		annotations map[string]string
		cfg         func(cfg *policy.Config, ns string)
		plan        incident.Plan
		record      bool // forge a decided alert record rather than an incident
		noAlerts    bool // an incident that holds no alert
		reason      string
		evidence    bool // the target passes the target checks: evidence is kept
		flagsOff    bool // engine.allowFeatureFlags is false
		message     string
	}{
		{
			name:   "an incident rolls back a workload not opted in",
			labels: map[string]string{"team": "events"},
			plan:   incident.Plan{From: 2, Targets: []int64{1}},
			reason: "policy_refused: not_opted_in",
		},
		{
			name:   "an incident scale-bounces a workload not opted in",
			labels: map[string]string{"team": "events"},
			plan:   incident.Plan{From: 2, ScaleBounce: true},
			reason: "policy_refused: not_opted_in",
		},
		{
			name:     "an incident that holds no alert rolls back a workload not opted in",
			labels:   map[string]string{"team": "events"},
			plan:     incident.Plan{From: 2, Targets: []int64{1}},
			noAlerts: true,
			reason:   "policy_refused: not_opted_in",
		},
		{
			name:   "a decided record rolls back a workload not opted in",
			labels: map[string]string{"team": "events"},
			plan:   incident.Plan{From: 2, Targets: []int64{1}},
			record: true,
			reason: "policy_refused: not_opted_in",
		},
		{
			name:   "an incident rolls back a workload in a denied namespace",
			labels: optedIn,
			cfg:    func(cfg *policy.Config, ns string) { cfg.Namespaces.Deny = append(cfg.Namespaces.Deny, ns) },
			plan:   incident.Plan{From: 2, Targets: []int64{1}},
			reason: "policy_refused: namespace_denied",
		},
		{
			name:   "a decided record turns off a key of another ConfigMap than the workload's",
			labels: optedIn,
			annotations: map[string]string{kinds.AnnotationFeatureFlagConfigMap: "event-service-config",
				kinds.AnnotationFeatureFlags: "FEATURE_NEW_PRICING"},
			plan:     incident.Plan{From: 2, Targets: []int64{1}, FeatureFlag: &actuator.FlagChange{ConfigMap: "aws-auth", Key: "mapRoles", Value: "false"}},
			record:   true,
			reason:   "policy_refused: flag_not_allowed",
			evidence: true,
		},
		{
			name:   "an incident turns off a key the workload does not list",
			labels: optedIn,
			annotations: map[string]string{kinds.AnnotationFeatureFlagConfigMap: "aws-auth",
				kinds.AnnotationFeatureFlags: "FEATURE_NEW_PRICING"},
			plan:     incident.Plan{From: 2, Targets: []int64{1}, FeatureFlag: &actuator.FlagChange{ConfigMap: "aws-auth", Key: "mapRoles", Value: "false"}},
			reason:   "policy_refused: flag_not_allowed",
			evidence: true,
		},
		{
			name:   "an incident sets a listed key to another value than off",
			labels: optedIn,
			annotations: map[string]string{kinds.AnnotationFeatureFlagConfigMap: "aws-auth",
				kinds.AnnotationFeatureFlags: "mapRoles"},
			plan:     incident.Plan{From: 2, Targets: []int64{1}, FeatureFlag: &actuator.FlagChange{ConfigMap: "aws-auth", Key: "mapRoles", Value: "[]"}},
			reason:   "policy_refused: flag_not_allowed",
			evidence: true,
		},
		{
			name:   "an incident turns off an allowed key while feature flags are off",
			labels: optedIn,
			annotations: map[string]string{kinds.AnnotationFeatureFlagConfigMap: "aws-auth",
				kinds.AnnotationFeatureFlags: "mapRoles"},
			plan:     incident.Plan{From: 2, Targets: []int64{1}, FeatureFlag: &actuator.FlagChange{ConfigMap: "aws-auth", Key: "mapRoles", Value: "false"}},
			flagsOff: true,
			reason:   "policy_refused: flag_not_allowed",
			message:  "feature flags are off (engine.allowFeatureFlags)",
			evidence: true,
		},
		{
			// The kube-system/aws-auth case: the key is one the workload
			// allows, but its namespace is not the daemon's to touch.
			name:   "an incident turns off an allowed key in a denied namespace",
			labels: optedIn,
			annotations: map[string]string{kinds.AnnotationFeatureFlagConfigMap: "aws-auth",
				kinds.AnnotationFeatureFlags: "mapRoles"},
			cfg:    func(cfg *policy.Config, ns string) { cfg.Namespaces.Deny = append(cfg.Namespaces.Deny, ns) },
			plan:   incident.Plan{From: 2, Targets: []int64{1}, FeatureFlag: &actuator.FlagChange{ConfigMap: "aws-auth", Key: "mapRoles", Value: "false"}},
			reason: "policy_refused: namespace_denied",
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t, tc.labels, tc.annotations)
			f.flagConfigMap(t, "aws-auth", awsAuth)
			f.flagConfigMap(t, "event-service-config", map[string]string{"FEATURE_NEW_PRICING": "true"})
			cfg := policy.DefaultConfig()
			if tc.cfg != nil {
				tc.cfg(&cfg, f.ns)
			}
			// What a writer of ConfigMaps in the daemon's namespace can
			// write, in place before the daemon (re)starts and resumes.
			flags := func(_ *verify.Config, _ *escalate.Config, o *Options) { o.AllowFeatureFlags = !tc.flagsOff }
			stopped := f.startEngine(t, cfg, 0, flags)
			ctx := context.Background()
			target := policy.Ref{Kind: policy.KindDeployment, Namespace: f.ns, Name: "event-service"}
			now := time.Now()
			d := policy.Decision{Outcome: policy.OutcomeRollback, Reason: policy.ReasonCriterionMet, Rule: "service-down",
				Criterion: "service_down", Target: target, Message: "roll back"}
			rec := &Record{Key: "forged@1", Target: target, ReceivedAt: now, Decision: &d, DecidedAt: now, Plan: &tc.plan,
				Alert: policy.Alert{Fingerprint: "forged", Status: "firing", StartsAt: now, Labels: map[string]string{"alertname": "EventServiceDown"}}}
			var id string
			if tc.record {
				if _, err := stopped.store.create(ctx, rec); err != nil {
					t.Fatal(err)
				}
				id = incident.NewID(target, 2, now)
			} else {
				inc := stopped.newIncident(rec, &policy.Workload{Ref: target, Revision: 2}, now)
				if tc.noAlerts {
					inc.Alerts, inc.AlertsJoined, inc.Ledger = nil, 0, nil
				}
				if _, err := stopped.opts.Incidents.Create(ctx, inc); err != nil {
					t.Fatal(err)
				}
				id = inc.ID
			}

			e := f.startEngine(t, cfg, 1, flags)
			inc := e.waitState(t, id, incident.StateEscalated, incident.StateResolved, incident.StateVerifying)
			if len(inc.Actions) != 1 || inc.Actions[0].Reason != tc.reason || inc.Actions[0].Result != nil {
				t.Fatalf("actions %+v; want one refused with reason %q\n%s", inc.Actions, tc.reason, inc.Render())
			}
			if !strings.Contains(inc.Actions[0].Error, tc.message) {
				t.Errorf("refusal %q does not say %q", inc.Actions[0].Error, tc.message)
			}
			if inc.State != incident.StateEscalated {
				t.Fatalf("state %s, want escalated\n%s", inc.State, inc.Render())
			}
			f.untouched(t)
			if data, annotations := f.configMapData(t, "aws-auth"); !maps(data, awsAuth) || len(annotations) != 0 {
				t.Fatalf("aws-auth changed: %v %v", data, annotations)
			}
			if (inc.Evidence != nil) != tc.evidence {
				t.Errorf("evidence kept: %v, want %v\n%s", inc.Evidence != nil, tc.evidence, inc.Render())
			}
			testenv.Eventually(t, 30*time.Second, "on-call paged about the refusal", func(context.Context) (bool, string) {
				pages := e.messages.find("page")
				return len(pages) == 1 && pages[0]["level"] == "oncall" && strings.Contains(fmt.Sprint(pages[0]["summary"]), "refused"), fmt.Sprint(pages)
			})
		})
	}
}

// A post-rollback task is a Job in the workload's namespace: a forged
// incident that reaches its tasks for a workload not opted in runs none.
func TestForgedIncidentRunsNoTask(t *testing.T) {
	f := newFixture(t, map[string]string{"team": "events"}, map[string]string{kinds.AnnotationPostRollbackTasks: "flush-cache"})
	cfg := policy.DefaultConfig()
	tasks := func(_ *verify.Config, _ *escalate.Config, o *Options) {
		o.Tasks = map[string]actuator.Task{"flush-cache": {Name: "flush-cache", Timeout: time.Minute, Phase: string(incident.PhaseAfterRecovery),
			Job: batchv1.JobSpec{Template: corev1.PodTemplateSpec{Spec: corev1.PodSpec{RestartPolicy: corev1.RestartPolicyNever,
				Containers: []corev1.Container{{Name: "flush", Image: "redis:7"}}}}}}}
	}
	stopped := f.startEngine(t, cfg, 0, tasks)
	ctx := context.Background()
	target := policy.Ref{Kind: policy.KindDeployment, Namespace: f.ns, Name: "event-service"}
	now := time.Now()
	inc := stopped.newIncident(&Record{Key: "forged-task@1", Target: target, ReceivedAt: now,
		Decision: &policy.Decision{Outcome: policy.OutcomeRollback, Reason: policy.ReasonCriterionMet, Target: target},
		Alert:    policy.Alert{Fingerprint: "forged-task", StartsAt: now, Labels: map[string]string{"alertname": "EventServiceDown"}}},
		&policy.Workload{Ref: target, Revision: 2, Older: []int64{1}}, now)
	// As if rung 0 had been applied: verification is due.
	inc.State = incident.StateVerifying
	inc.Actions = []incident.Action{{At: now, Kind: actuator.KindRollback, Result: &actuator.Result{Kind: actuator.KindRollback, Outcome: actuator.OutcomeApplied}}}
	if _, err := stopped.opts.Incidents.Create(ctx, inc); err != nil {
		t.Fatal(err)
	}
	e := f.startEngine(t, cfg, 1, tasks)
	inc = e.waitState(t, inc.ID, incident.StateEscalated, incident.StateResolved)
	if len(inc.Tasks) != 1 || inc.Tasks[0].Result != "refused" || !strings.HasPrefix(inc.Tasks[0].Message, "policy_refused: not_opted_in") {
		t.Fatalf("tasks %+v; want flush-cache refused\n%s", inc.Tasks, inc.Render())
	}
	if inc.State != incident.StateEscalated {
		t.Fatalf("state %s, want escalated\n%s", inc.State, inc.Render())
	}
	jobs, err := f.c.Client.BatchV1().Jobs(f.ns).List(ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if len(jobs.Items) != 0 {
		t.Fatalf("%d Jobs created in %s, want none", len(jobs.Items), f.ns)
	}
}

// The policy in force, not the one a decision was taken under, decides
// whether the action goes out: freezing rollbacks, or turning dry run on,
// between the decision and the action stops the change.
func TestPolicyChangedBeforeTheActionStopsIt(t *testing.T) {
	for _, tc := range []struct {
		name    string
		change  func(*policy.Config)
		reason  string
		outcome actuator.Outcome
	}{
		{"frozen", func(c *policy.Config) { c.Freeze = true }, "policy_refused: frozen", ""},
		{"dry run", func(c *policy.Config) { c.DryRun = true }, "", actuator.OutcomeDryRun},
		{"origin label the alert lacks", func(c *policy.Config) { c.Origin.Label = "team" }, "policy_refused: origin_mismatch", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t, optedIn, nil)
			cfg := policy.DefaultConfig()
			decided, err := policy.Compile(cfg)
			if err != nil {
				t.Fatal(err)
			}
			tc.change(&cfg)
			changed, err := policy.Compile(cfg)
			if err != nil {
				t.Fatal(err)
			}
			var inForce atomic.Pointer[policy.Policy]
			inForce.Store(decided)
			// No workers: the test takes the decision and the action in
			// turn.
			e := f.startEngine(t, policy.DefaultConfig(), 0, func(_ *verify.Config, _ *escalate.Config, o *Options) {
				o.Policy = inForce.Load
			})
			ctx := context.Background()
			n := firing(f.ns, "changed-"+tc.name, time.Now(), map[string]string{"impact": "service_down"})
			if r, err := e.Accept(ctx, n); err != nil || r.Accepted != 1 {
				t.Fatalf("Accept = %+v, %v", r, err)
			}
			a := n.Alerts[0]
			key := AlertKey(policy.Alert{Fingerprint: a.Fingerprint, StartsAt: a.StartsAt})
			testenv.Eventually(t, 10*time.Second, "the workload in the cache", func(ctx context.Context) (bool, string) {
				w, err := e.opts.Cache.Facts(ctx, policy.Ref{Kind: policy.KindDeployment, Namespace: f.ns, Name: "event-service"})
				return err == nil && w != nil && w.Revision == 2, fmt.Sprint(w, err)
			})
			if err := e.process(ctx, e.q.Load(), recordName(key)); err != nil {
				t.Fatal(err)
			}
			rec, err := e.Record(ctx, key)
			if err != nil {
				t.Fatal(err)
			}
			if rec.Decision.Outcome != policy.OutcomeRollback || rec.Decision.DryRun || rec.Incident == "" {
				t.Fatalf("decided %s (dry run %v), incident %q; want a rollback", rec.Decision.Outcome, rec.Decision.DryRun, rec.Incident)
			}
			inForce.Store(changed)
			if _, err := e.work(ctx, rec.Incident); err != nil {
				t.Fatal(err)
			}
			v, err := e.opts.Incidents.Get(ctx, rec.Incident)
			if err != nil {
				t.Fatal(err)
			}
			inc := v.Incident
			if len(inc.Actions) != 1 || inc.Actions[0].Reason != tc.reason ||
				(tc.outcome != "") != (inc.Actions[0].Result != nil) || (inc.Actions[0].Result != nil && inc.Actions[0].Result.Outcome != tc.outcome) {
				t.Fatalf("actions %+v; want one with reason %q, outcome %q\n%s", inc.Actions, tc.reason, tc.outcome, inc.Render())
			}
			if inc.State != incident.StateEscalated {
				t.Fatalf("state %s, want escalated: people decide\n%s", inc.State, inc.Render())
			}
			f.untouched(t)
		})
	}
}
