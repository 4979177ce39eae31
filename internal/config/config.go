// Package config defines autorollbackd's configuration: every key with its
// default, strict loading from a YAML file, the environment and flags, and
// validation with errors that name the offending key.
package config

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"regexp"
	"slices"
	"strings"
	"time"

	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/autorollbackd/autorollbackd/internal/escalate"
	"github.com/autorollbackd/autorollbackd/internal/policy"
	"github.com/autorollbackd/autorollbackd/internal/verify"
	"github.com/autorollbackd/autorollbackd/internal/webhook"
)

// Config is the whole configuration of the daemon.
type Config struct {
	Cluster        Cluster         `json:"cluster" mapstructure:"cluster"`
	Server         Server          `json:"server" mapstructure:"server"`
	Kubernetes     Kubernetes      `json:"kubernetes" mapstructure:"kubernetes"`
	Log            Log             `json:"log" mapstructure:"log"`
	Webhook        webhook.Config  `json:"webhook" mapstructure:"webhook"`
	API            API             `json:"api" mapstructure:"api"`
	Engine         Engine          `json:"engine" mapstructure:"engine"`
	LeaderElection LeaderElection  `json:"leaderElection" mapstructure:"leaderElection"`
	Policy         policy.Config   `json:"policy" mapstructure:"policy"`
	Verify         verify.Config   `json:"verify" mapstructure:"verify"`
	Escalation     escalate.Config `json:"escalation" mapstructure:"escalation"`
	// Tasks are post-rollback tasks (the runbook's "Rollback Impact
	// Assessment"): Jobs that workloads name in the annotation
	// autorollback.io/post-rollback-tasks.
	Tasks []Task `json:"tasks" mapstructure:"tasks"`
}

// Task is a post-rollback task: a Job template run in the workload's
// namespace after a verified rollback.
type Task struct {
	Name    string          `json:"name" mapstructure:"name"`
	Timeout metav1.Duration `json:"timeout" mapstructure:"timeout"`
	// Phase is when the task runs: afterAction (default), right after the
	// rollback and before its verification, or afterRecovery, once the
	// rollback is verified.
	Phase string `json:"phase,omitempty" mapstructure:"phase"`
	// FromWorkload runs the Job's containers that name no image as the
	// workload's own container: its image, env and envFrom, and its
	// service account.
	FromWorkload bool `json:"fromWorkload,omitempty" mapstructure:"fromWorkload"`
	// Job is a batch/v1 JobSpec.
	Job map[string]any `json:"job" mapstructure:"job"`
}

// JobSpec decodes the task's Job template strictly.
func (t Task) JobSpec() (batchv1.JobSpec, error) {
	var spec batchv1.JobSpec
	raw, err := json.Marshal(t.Job)
	if err != nil {
		return spec, err
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&spec); err != nil {
		return spec, err
	}
	if len(spec.Template.Spec.Containers) == 0 {
		return spec, errors.New("template.spec.containers: at least one container is required")
	}
	if rp := spec.Template.Spec.RestartPolicy; rp != corev1.RestartPolicyNever && rp != corev1.RestartPolicyOnFailure {
		return spec, fmt.Errorf("template.spec.restartPolicy: must be Never or OnFailure for a Job, got %q", rp)
	}
	return spec, nil
}

// API configures the read API, /api/v1/incidents.
type API struct {
	// Auth is how readers authenticate, apart from the webhook: a
	// credential that sends alerts does not read incidents, and the other
	// way round.
	Auth webhook.Credential `json:"auth" mapstructure:"auth"`
}

// LeaderElection configures the Lease that makes one replica the one that
// acts.
type LeaderElection struct {
	Enabled bool `json:"enabled" mapstructure:"enabled"`
	// LeaseName is the Lease in engine.namespace.
	LeaseName     string          `json:"leaseName" mapstructure:"leaseName"`
	LeaseDuration metav1.Duration `json:"leaseDuration" mapstructure:"leaseDuration"`
	RenewDeadline metav1.Duration `json:"renewDeadline" mapstructure:"renewDeadline"`
	RetryPeriod   metav1.Duration `json:"retryPeriod" mapstructure:"retryPeriod"`
}

// Engine configures how accepted alerts are recorded and decided.
type Engine struct {
	// Namespace holds the daemon's records of accepted alerts; empty means
	// the daemon's own namespace (in a cluster) or the kubeconfig context's.
	Namespace string `json:"namespace" mapstructure:"namespace"`
	Workers   int    `json:"workers" mapstructure:"workers"`
	// MaxPending is how many accepted alerts may wait for a decision before
	// the webhook answers 503 so that Alertmanager retries.
	MaxPending int `json:"maxPending" mapstructure:"maxPending"`
	// MaxRecords is how many alert records may be kept before the webhook
	// answers 503 to alerts it would have to record.
	MaxRecords int `json:"maxRecords" mapstructure:"maxRecords"`
	// Retention is how long decided records are kept; a re-sent alert is
	// recognised as a duplicate for that long.
	Retention metav1.Duration `json:"retention" mapstructure:"retention"`
	// MaxRollbackDepth is how far back a rollback may go: 1 is the last
	// known good revision only, 2 adds the one before it (the runbook's
	// N-2), and so on. There is never a wrap-around.
	MaxRollbackDepth int `json:"maxRollbackDepth" mapstructure:"maxRollbackDepth"`
	// AllowScaleBounce lets the last automatic rung scale a workload to zero
	// and back, for workloads annotated autorollback.io/allow-scale-bounce.
	AllowScaleBounce bool `json:"allowScaleBounce" mapstructure:"allowScaleBounce"`
	// AllowFeatureFlags lets a rollback turn off a feature flag, in the
	// ConfigMap a workload names, instead of rolling back revisions; it
	// needs ConfigMap writes in the workloads' namespaces.
	AllowFeatureFlags bool `json:"allowFeatureFlags" mapstructure:"allowFeatureFlags"`
	// IncidentWorkers is how many incidents are worked on at once.
	IncidentWorkers int `json:"incidentWorkers" mapstructure:"incidentWorkers"`
	// PageGroupWait and PageGroupInterval group the pages of escalations
	// for the same reason, as Alertmanager's group_wait and
	// group_interval do.
	PageGroupWait     metav1.Duration `json:"pageGroupWait" mapstructure:"pageGroupWait"`
	PageGroupInterval metav1.Duration `json:"pageGroupInterval" mapstructure:"pageGroupInterval"`
}

// Server configures the HTTP server that serves the webhook, probes and metrics.
type Server struct {
	ListenAddress     string          `json:"listenAddress" mapstructure:"listenAddress"`
	ReadHeaderTimeout metav1.Duration `json:"readHeaderTimeout" mapstructure:"readHeaderTimeout"`
	ReadTimeout       metav1.Duration `json:"readTimeout" mapstructure:"readTimeout"`
	WriteTimeout      metav1.Duration `json:"writeTimeout" mapstructure:"writeTimeout"`
	IdleTimeout       metav1.Duration `json:"idleTimeout" mapstructure:"idleTimeout"`
	// ShutdownTimeout bounds how long in-flight requests may take to drain
	// after SIGTERM.
	ShutdownTimeout metav1.Duration   `json:"shutdownTimeout" mapstructure:"shutdownTimeout"`
	TLS             webhook.TLSConfig `json:"tls" mapstructure:"tls"`
}

// Kubernetes configures the client of the Kubernetes API.
type Kubernetes struct {
	// Kubeconfig is a kubeconfig file; empty means $KUBECONFIG, then
	// ~/.kube/config, then the in-cluster service account.
	Kubeconfig string  `json:"kubeconfig" mapstructure:"kubeconfig"`
	QPS        float64 `json:"qps" mapstructure:"qps"`
	Burst      int     `json:"burst" mapstructure:"burst"`
	// ActQPS and ActBurst limit the acting client, which sends only the
	// rollback and the reads right before it: sized so that a burst of
	// alerts never waits behind the limiter.
	ActQPS   float64 `json:"actQPS" mapstructure:"actQPS"`
	ActBurst int     `json:"actBurst" mapstructure:"actBurst"`
	// BackgroundInFlight is how many of the daemon's other requests (the
	// workers' records and incidents, verification, Events) may be in
	// flight while an alert is being recorded or acted on; 0 lets them all
	// through.
	BackgroundInFlight int `json:"backgroundInFlight" mapstructure:"backgroundInFlight"`
	// StartupTimeout bounds reaching the API server and syncing the informer
	// caches at start.
	StartupTimeout metav1.Duration `json:"startupTimeout" mapstructure:"startupTimeout"`
	// ArgoRollouts: also act on Argo Rollouts' Rollouts, which the daemon
	// then watches; their CRD must be installed.
	ArgoRollouts bool `json:"argoRollouts" mapstructure:"argoRollouts"`
}

// Cluster names the cluster the daemon acts on, for people and for fleets
// served by one Alertmanager.
type Cluster struct {
	// Name goes into every message, page, PagerDuty dedup key and
	// incident; alerts must name it in policy.clusterLabel when that is
	// set. Empty: a daemon not told apart from others.
	Name string `json:"name" mapstructure:"name"`
}

// clusterName is what a cluster name may be: it is a label value, part of
// dedup keys and shown to people.
var clusterName = regexp.MustCompile(`^[A-Za-z0-9]([A-Za-z0-9._-]{0,61}[A-Za-z0-9])?$`)

// Log configures the structured logs.
type Log struct {
	Level  string `json:"level" mapstructure:"level"`
	Format string `json:"format" mapstructure:"format"`
}

// Default returns the configuration used for every key that is not set.
func Default() Config {
	d := func(x time.Duration) metav1.Duration { return metav1.Duration{Duration: x} }
	return Config{
		Server: Server{
			ListenAddress:     ":8080",
			ReadHeaderTimeout: d(5 * time.Second),
			ReadTimeout:       d(30 * time.Second),
			WriteTimeout:      d(30 * time.Second),
			IdleTimeout:       d(2 * time.Minute),
			ShutdownTimeout:   d(25 * time.Second),
		},
		Kubernetes: Kubernetes{
			// Sized from the scale benchmark's burst: an alert costs about
			// five requests of the deciding client, and a burst of 1,000
			// is to be answered within 2 s and decided within 15 s. The API
			// server's priority and fairness, not this limit, protects the
			// server (docs/configuration.md, "Client rate limits").
			QPS:                1000,
			Burst:              2000,
			ActQPS:             500,
			ActBurst:           1000,
			BackgroundInFlight: 2,
			StartupTimeout:     d(60 * time.Second),
		},
		Log:     Log{Level: "info", Format: "json"},
		Webhook: webhook.DefaultConfig(),
		API:     API{Auth: webhook.DefaultAPICredential()},
		Engine: Engine{
			Workers:           8,
			MaxPending:        2000,
			MaxRecords:        5000,
			Retention:         d(72 * time.Hour),
			MaxRollbackDepth:  2,
			IncidentWorkers:   32,
			PageGroupWait:     d(10 * time.Second),
			PageGroupInterval: d(5 * time.Minute),
		},
		LeaderElection: LeaderElection{
			Enabled:       true,
			LeaseName:     "autorollbackd",
			LeaseDuration: d(15 * time.Second),
			RenewDeadline: d(10 * time.Second),
			RetryPeriod:   d(2 * time.Second),
		},
		Policy:     policy.DefaultConfig(),
		Verify:     verify.DefaultConfig(),
		Escalation: escalate.DefaultConfig(),
		Tasks:      []Task{},
	}
}

// Validate checks every key and returns all problems at once, each naming
// its key.
func (c *Config) Validate() error {
	var errs []error
	bad := func(key, format string, args ...any) {
		errs = append(errs, &KeyError{Key: key, Err: fmt.Errorf(format, args...)})
	}
	if _, _, err := net.SplitHostPort(c.Server.ListenAddress); err != nil {
		bad("server.listenAddress", "must be host:port: %v", err)
	}
	for key, v := range map[string]metav1.Duration{
		"server.readHeaderTimeout":     c.Server.ReadHeaderTimeout,
		"server.readTimeout":           c.Server.ReadTimeout,
		"server.writeTimeout":          c.Server.WriteTimeout,
		"server.idleTimeout":           c.Server.IdleTimeout,
		"server.shutdownTimeout":       c.Server.ShutdownTimeout,
		"kubernetes.startupTimeout":    c.Kubernetes.StartupTimeout,
		"engine.retention":             c.Engine.Retention,
		"engine.pageGroupWait":         c.Engine.PageGroupWait,
		"engine.pageGroupInterval":     c.Engine.PageGroupInterval,
		"leaderElection.leaseDuration": c.LeaderElection.LeaseDuration,
		"leaderElection.renewDeadline": c.LeaderElection.RenewDeadline,
		"leaderElection.retryPeriod":   c.LeaderElection.RetryPeriod,
	} {
		if v.Duration <= 0 {
			bad(key, "must be a positive duration, got %s", v.Duration)
		}
	}
	if c.Kubernetes.QPS <= 0 {
		bad("kubernetes.qps", "must be positive, got %v", c.Kubernetes.QPS)
	}
	if c.Kubernetes.Burst < 1 {
		bad("kubernetes.burst", "must be at least 1, got %d", c.Kubernetes.Burst)
	}
	if c.Kubernetes.ActQPS <= 0 {
		bad("kubernetes.actQPS", "must be positive, got %v", c.Kubernetes.ActQPS)
	}
	if c.Kubernetes.ActBurst < 1 {
		bad("kubernetes.actBurst", "must be at least 1, got %d", c.Kubernetes.ActBurst)
	}
	if c.Kubernetes.BackgroundInFlight < 0 {
		bad("kubernetes.backgroundInFlight", "must be 0 (no priority) or more, got %d", c.Kubernetes.BackgroundInFlight)
	}
	if _, err := ParseLevel(c.Log.Level); err != nil {
		bad("log.level", "%v", err)
	}
	if c.Log.Format != "json" && c.Log.Format != "text" {
		bad("log.format", "must be json or text, got %q", c.Log.Format)
	}
	if c.Engine.Workers < 1 {
		bad("engine.workers", "must be at least 1, got %d", c.Engine.Workers)
	}
	if le := c.LeaderElection; le.Enabled {
		if le.LeaseName == "" {
			bad("leaderElection.leaseName", "must not be empty")
		}
		if le.RenewDeadline.Duration >= le.LeaseDuration.Duration {
			bad("leaderElection.renewDeadline", "must be shorter than leaderElection.leaseDuration (%s), got %s", le.LeaseDuration.Duration, le.RenewDeadline.Duration)
		}
		if le.RetryPeriod.Duration >= le.RenewDeadline.Duration {
			bad("leaderElection.retryPeriod", "must be shorter than leaderElection.renewDeadline (%s), got %s", le.RenewDeadline.Duration, le.RetryPeriod.Duration)
		}
	}
	if c.Engine.MaxRollbackDepth < 1 {
		bad("engine.maxRollbackDepth", "must be at least 1, got %d", c.Engine.MaxRollbackDepth)
	}
	if c.Engine.IncidentWorkers < 1 {
		bad("engine.incidentWorkers", "must be at least 1, got %d", c.Engine.IncidentWorkers)
	}
	if c.Engine.MaxPending < 1 {
		bad("engine.maxPending", "must be at least 1, got %d", c.Engine.MaxPending)
	}
	if c.Engine.MaxRecords < 1 {
		bad("engine.maxRecords", "must be at least 1, got %d", c.Engine.MaxRecords)
	}
	errs = append(errs, prefixed("server.tls", c.Server.TLS.Validate())...)
	errs = append(errs, prefixed("webhook", c.Webhook.Validate())...)
	errs = append(errs, prefixed("webhook", c.Webhook.ValidateTLS(c.Server.TLS))...)
	errs = append(errs, prefixed("api", c.API.Auth.Validate())...)
	errs = append(errs, prefixed("api", c.API.Auth.ValidateTLS(c.Server.TLS))...)
	errs = append(errs, c.apiApart()...)
	if n := c.Cluster.Name; n != "" && !clusterName.MatchString(n) {
		bad("cluster.name", "must be 1 to 63 letters, digits, '.', '_' or '-', starting and ending with a letter or digit; got %q", n)
	}
	_, err := policy.Compile(c.Policy, policy.WithCluster(c.Cluster.Name))
	errs = append(errs, prefixed("policy", err)...)
	errs = append(errs, prefixed("verify", c.Verify.Validate())...)
	errs = append(errs, prefixed("escalation", c.Escalation.Validate())...)
	seen := map[string]bool{}
	for i, t := range c.Tasks {
		key := fmt.Sprintf("tasks[%d]", i)
		if !taskName.MatchString(t.Name) {
			bad(key+".name", "must be a lower-case DNS label of at most 30 characters, got %q", t.Name)
		}
		if seen[t.Name] {
			bad(key+".name", "duplicate task name %q", t.Name)
		}
		seen[t.Name] = true
		if t.Phase != "" && t.Phase != "afterAction" && t.Phase != "afterRecovery" {
			bad(key+".phase", "must be afterAction or afterRecovery, got %q", t.Phase)
		}
		if t.Timeout.Duration <= 0 {
			bad(key+".timeout", "must be a positive duration, got %s", t.Timeout.Duration)
		}
		if _, err := t.JobSpec(); err != nil {
			bad(key+".job", "%v", err)
		}
	}
	return sortedJoin(errs)
}

// apiApart refuses an api.auth that shares a file or the client
// certificates with webhook.auth: the credential that sends alerts would
// read incidents. The secrets themselves are compared when they are read.
func (c *Config) apiApart() []error {
	a, w := c.API.Auth, c.Webhook.Auth
	if a.InsecureDisableAuth || w.InsecureDisableAuth {
		return nil
	}
	const why = "a credential that sends alerts must not read incidents"
	files := map[string]string{}
	add := func(path, key string) {
		if path != "" {
			files[path] = key
		}
	}
	add(w.BearerTokenFile, "webhook.auth.bearerTokenFile")
	add(w.BasicAuth.PasswordFile, "webhook.auth.basicAuth.passwordFile")
	certs := ""
	if w.RequireClientCert {
		certs = "webhook.auth.requireClientCert"
	}
	for i, s := range w.Senders {
		key := fmt.Sprintf("webhook.auth.senders[%d]", i)
		add(s.BearerTokenFile, key+".bearerTokenFile")
		add(s.BasicAuth.PasswordFile, key+".basicAuth.passwordFile")
		if s.ClientCertSubject != "" && certs == "" {
			certs = key + ".clientCertSubject"
		}
	}
	var errs []error
	for key, path := range map[string]string{"api.auth.bearerTokenFile": a.BearerTokenFile, "api.auth.basicAuth.passwordFile": a.BasicAuth.PasswordFile} {
		if other, ok := files[path]; ok && path != "" {
			errs = append(errs, &KeyError{Key: key, Err: fmt.Errorf("also the file of %s; %s", other, why)})
		}
	}
	if a.RequireClientCert && certs != "" {
		errs = append(errs, &KeyError{Key: "api.auth.requireClientCert", Err: fmt.Errorf("accepts every certificate of server.tls.clientCAFile, which %s takes too; %s", certs, why)})
	}
	return errs
}

// Warnings returns what is valid but probably a mistake, each naming its
// key, for check-config to show: escalation levels that page nobody.
func (c *Config) Warnings() []error {
	return prefixed("escalation", errors.Join(c.Escalation.Warnings()...))
}

// prefixed puts section in front of the keys named by a section's errors.
func prefixed(section string, err error) []error {
	if err == nil {
		return nil
	}
	var list []error
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		list = j.Unwrap()
	} else {
		list = []error{err}
	}
	out := make([]error, 0, len(list))
	for _, e := range list {
		var (
			pk *policy.KeyError
			wk *webhook.KeyError
			vk *verify.KeyError
			ek *escalate.KeyError
		)
		switch {
		case errors.As(e, &pk):
			out = append(out, &KeyError{Key: section + "." + pk.Key, Err: pk.Err})
		case errors.As(e, &wk):
			out = append(out, &KeyError{Key: section + "." + wk.Key, Err: wk.Err})
		case errors.As(e, &vk):
			out = append(out, &KeyError{Key: section + "." + vk.Key, Err: vk.Err})
		case errors.As(e, &ek):
			out = append(out, &KeyError{Key: section + "." + ek.Key, Err: ek.Err})
		default:
			out = append(out, &KeyError{Key: section, Err: e})
		}
	}
	return out
}

var taskName = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]{0,28}[a-z0-9])?$`)

// ParseLevel turns a log level name into a slog level.
func ParseLevel(s string) (slog.Level, error) {
	switch strings.ToLower(s) {
	case "debug":
		return slog.LevelDebug, nil
	case "info":
		return slog.LevelInfo, nil
	case "warn", "warning":
		return slog.LevelWarn, nil
	case "error":
		return slog.LevelError, nil
	}
	return 0, fmt.Errorf("must be one of debug, info, warn, error; got %q", s)
}

// KeyError is a problem with the value of one configuration key.
type KeyError struct {
	Key string
	Err error
}

func (e *KeyError) Error() string { return e.Key + ": " + e.Err.Error() }
func (e *KeyError) Unwrap() error { return e.Err }

// sortedJoin joins errors in a stable order so messages are reproducible.
func sortedJoin(errs []error) error {
	slices.SortFunc(errs, func(a, b error) int { return strings.Compare(a.Error(), b.Error()) })
	return errors.Join(errs...)
}
