package chart

import (
	"encoding/json"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	"sigs.k8s.io/yaml"

	"github.com/autorollbackd/autorollbackd/internal/config"
	"github.com/autorollbackd/autorollbackd/internal/escalate"
	helmsdk "github.com/autorollbackd/autorollbackd/internal/helm"
	"github.com/autorollbackd/autorollbackd/internal/testenv"
)

// apiVersions are the Prometheus Operator APIs that turn on the
// ServiceMonitor and the PrometheusRule.
var apiVersions = []string{
	"--api-versions", "monitoring.coreos.com/v1/ServiceMonitor",
	"--api-versions", "monitoring.coreos.com/v1/PrometheusRule",
}

// The tokens of renders that cannot reach the cluster, where the chart
// refuses to generate them (TestRenderTokens).
const hookToken, readToken = "hook-token-0123456789", "read-token-0123456789"

var tokenArgs = []string{"--set", "webhook.token=" + hookToken, "--set", "api.token=" + readToken}

// mode is one documented way to install the chart, with the values file
// from charts/autorollbackd/ci that documents it.
type mode struct {
	name   string
	values string // file under ci/, empty for the defaults
	args   []string
	grants grants
	// platformIDs: the values leave the UID, GID and fsGroup to the
	// platform (OpenShift's SCC) instead of the image's 65532.
	platformIDs bool
	// extraArgs are the container's arguments after the chart's own.
	extraArgs []string
}

var modes = []mode{
	{name: "default"},
	{name: "cluster", values: "cluster-values.yaml"},
	{name: "namespaced", values: "namespaced-values.yaml"},
	{name: "existing-secret", values: "existing-secret-values.yaml"},
	{name: "networkpolicy", values: "networkpolicy-values.yaml"},
	{name: "servicemonitor", values: "servicemonitor-values.yaml", args: apiVersions},
	{name: "servicemonitor-without-api", values: "servicemonitor-values.yaml"},
	{name: "featureflags-tasks", values: "featureflags-tasks-values.yaml",
		grants: grants{flags: true, flagConfigMaps: []string{"event-service-config"}, tasks: true}},
	{name: "openshift", values: "openshift-values.yaml", platformIDs: true},
	{name: "extras", values: "extras-values.yaml", extraArgs: []string{"--log-level=debug"}},
}

// helmArgs are the mode's values, with the tokens an offline render needs.
func (m mode) helmArgs() []string {
	var args []string
	if m.values != "" {
		args = append(args, "--values", filepath.Join(chartDir, "ci", m.values))
	}
	args = append(args, m.args...)
	return append(args, tokenArgs...)
}

func TestLint(t *testing.T) {
	t.Parallel()
	// Every values file under ci/ documents a mode; each must be tested.
	files, err := filepath.Glob(filepath.Join(chartDir, "ci", "*-values.yaml"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no ci/*-values.yaml in the chart: %v", err)
	}
	covered := map[string]bool{}
	for _, m := range modes {
		covered[m.values] = true
	}
	for _, f := range files {
		if !covered[filepath.Base(f)] {
			t.Errorf("ci/%s is not one of the tested modes", filepath.Base(f))
		}
	}
	for _, m := range modes {
		t.Run(m.name, func(t *testing.T) {
			t.Parallel()
			// helm lint has no --api-versions: the monitoring objects are
			// linted by TestRender's strict rendering instead.
			args := []string{"lint", "--strict", chartDir, "--namespace", "ops"}
			if m.values != "" {
				args = append(args, "--values", filepath.Join(chartDir, "ci", m.values))
			}
			args = append(args, tokenArgs...)
			out, err := helm(t, 2*time.Minute, args...)
			if err != nil || !strings.Contains(out, "0 chart(s) failed") {
				t.Fatalf("helm %s: %v\n%s", strings.Join(args, " "), err, out)
			}
		})
	}
}

// TestRender renders every documented mode and checks what must hold in
// all of them, then what is particular to each.
func TestRender(t *testing.T) {
	t.Parallel()
	for _, m := range modes {
		t.Run(m.name, func(t *testing.T) {
			t.Parallel()
			objs := render(t, m.helmArgs()...)
			checkStrict(t, objs)
			checkDeployment(t, objs, m)
			checkConfig(t, objs, m.name == "namespaced", m.grants)
			checkRBAC(t, objs, m.grants)
			checkService(t, objs)
			checkPDB(t, objs, true)
			checkDashboardConfigMap(t, objs)

			secrets := objs.all("Secret")
			netpols := objs.all("NetworkPolicy")
			monitors, rules := objs.all("ServiceMonitor"), objs.all("PrometheusRule")
			switch m.name {
			case "existing-secret":
				if len(secrets) != 0 {
					t.Errorf("with webhook.existingSecret and api.existingSecret the chart must not create a Secret, got %d", len(secrets))
				}
				checkSecretVolume(t, objs, "webhook", "/etc/autorollbackd/webhook", "alertmanager-autorollbackd-token")
				checkSecretVolume(t, objs, "api", "/etc/autorollbackd/api", "autorollbackd-api-token")
			default:
				checkTokenSecrets(t, objs, map[string]string{"ard-autorollbackd-webhook": hookToken, "ard-autorollbackd-api": readToken})
				checkSecretVolume(t, objs, "webhook", "/etc/autorollbackd/webhook", "ard-autorollbackd-webhook")
				checkSecretVolume(t, objs, "api", "/etc/autorollbackd/api", "ard-autorollbackd-api")
			}
			if m.name == "networkpolicy" {
				checkNetworkPolicy(t, objs)
			} else if len(netpols) != 0 {
				t.Errorf("NetworkPolicy rendered although networkPolicy.enabled is false")
			}
			if m.name == "servicemonitor" {
				checkServiceMonitor(t, objs)
				checkPrometheusRule(t, objs)
			} else if len(monitors)+len(rules) != 0 {
				t.Errorf("without the monitoring.coreos.com/v1 APIs got %d ServiceMonitor(s) and %d PrometheusRule(s), want none", len(monitors), len(rules))
			}
			if m.name == "cluster" {
				checkNotifierSecrets(t, objs, "pagerduty", "slack")
			}
			extra := false
			for _, o := range objs.all("ConfigMap") {
				if o.Name == "ard-autorollbackd-extra" {
					var cm corev1.ConfigMap
					decode(t, o, &cm)
					extra = cm.Namespace == "ops" && cm.Data["release"] == "ard"
				}
			}
			if extra != (m.name == "extras") {
				t.Errorf("the extraObjects ConfigMap rendered with its templates: %v, want %v", extra, m.name == "extras")
			}
		})
	}
}

// checkStrict decodes every object of a Kubernetes kind into its Go type,
// refusing unknown fields.
func checkStrict(t *testing.T, objs objects) {
	t.Helper()
	types := map[string]func() any{
		"Deployment":          func() any { return &appsv1.Deployment{} },
		"Service":             func() any { return &corev1.Service{} },
		"ServiceAccount":      func() any { return &corev1.ServiceAccount{} },
		"ConfigMap":           func() any { return &corev1.ConfigMap{} },
		"Secret":              func() any { return &corev1.Secret{} },
		"PodDisruptionBudget": func() any { return &policyv1.PodDisruptionBudget{} },
		"NetworkPolicy":       func() any { return &networkingv1.NetworkPolicy{} },
		"Role":                func() any { return &rbacv1.Role{} },
		"RoleBinding":         func() any { return &rbacv1.RoleBinding{} },
		"ClusterRole":         func() any { return &rbacv1.ClusterRole{} },
		"ClusterRoleBinding":  func() any { return &rbacv1.ClusterRoleBinding{} },
	}
	for _, o := range objs {
		if o.Name == "" {
			t.Errorf("%s without a name", o.Kind)
		}
		if o.Namespace == "" && o.Kind != "ClusterRole" && o.Kind != "ClusterRoleBinding" {
			t.Errorf("%s %s has no namespace: it would land in whatever namespace kubectl points at", o.Kind, o.Name)
		}
		if newObj, ok := types[o.Kind]; ok {
			decode(t, o, newObj())
		} else if o.Kind != "ServiceMonitor" && o.Kind != "PrometheusRule" {
			t.Errorf("unexpected kind %s (%s)", o.Kind, o.Name)
		}
	}
}

func deployment(t *testing.T, objs objects) *appsv1.Deployment {
	t.Helper()
	var d appsv1.Deployment
	decode(t, objs.one(t, "Deployment"), &d)
	if n := len(d.Spec.Template.Spec.Containers); n != 1 {
		t.Fatalf("want 1 container, got %d", n)
	}
	return &d
}

// checkDeployment checks the Deployment of the default values, but for the
// UID, GID and fsGroup, which are 65532 or, with the mode's platformIDs,
// unset, and for the mode's extraArgs.
func checkDeployment(t *testing.T, objs objects, m mode) {
	t.Helper()
	d := deployment(t, objs)
	pod := d.Spec.Template.Spec
	c := pod.Containers[0]

	if d.Spec.Replicas == nil || *d.Spec.Replicas != 2 {
		t.Errorf("replicas: got %v, want 2", d.Spec.Replicas)
	}
	if c.Image != "ghcr.io/autorollbackd/autorollbackd:0.1.0" {
		t.Errorf("image: got %q, want the appVersion tag", c.Image)
	}
	if want := append([]string{"serve", "--config", "/etc/autorollbackd/config.yaml"}, m.extraArgs...); !slices.Equal(c.Args, want) {
		t.Errorf("args: got %q, want %q", c.Args, want)
	}
	env := map[string]string{}
	for _, e := range c.Env {
		if e.ValueFrom != nil && e.ValueFrom.FieldRef != nil {
			env[e.Name] = e.ValueFrom.FieldRef.FieldPath
		}
	}
	if env["POD_NAMESPACE"] != "metadata.namespace" || env["POD_NAME"] != "metadata.name" {
		t.Errorf("env: POD_NAMESPACE and POD_NAME must come from the downward API, got %v", env)
	}
	if len(c.Ports) != 1 || c.Ports[0].Name != "http" || c.Ports[0].ContainerPort != 8080 {
		t.Errorf("ports: got %+v, want http 8080", c.Ports)
	}

	// Probes.
	for _, p := range []struct {
		name  string
		probe *corev1.Probe
		path  string
	}{{"liveness", c.LivenessProbe, "/healthz"}, {"readiness", c.ReadinessProbe, "/readyz"}} {
		if p.probe == nil || p.probe.HTTPGet == nil {
			t.Errorf("%s probe: missing or not HTTP", p.name)
			continue
		}
		if p.probe.HTTPGet.Path != p.path || p.probe.HTTPGet.Port.String() != "http" {
			t.Errorf("%s probe: got %s on port %s, want %s on http", p.name, p.probe.HTTPGet.Path, p.probe.HTTPGet.Port.String(), p.path)
		}
	}

	// The restricted Pod Security Standard, and then some.
	checkRestricted(t, pod)
	psc, sc := pod.SecurityContext, c.SecurityContext
	if psc == nil || sc == nil {
		t.Fatalf("securityContext missing: pod %+v, container %+v", psc, sc)
	}
	ids := map[string]*int64{"pod runAsUser": psc.RunAsUser, "pod runAsGroup": psc.RunAsGroup, "pod fsGroup": psc.FSGroup,
		"container runAsUser": sc.RunAsUser, "container runAsGroup": sc.RunAsGroup}
	for what, id := range ids {
		switch {
		case m.platformIDs && id != nil:
			t.Errorf("%s: got %d, want it unset for the platform to assign", what, *id)
		case !m.platformIDs && (id == nil || *id != 65532):
			t.Errorf("%s: got %v, want 65532, the image's user", what, id)
		}
	}
	if sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem {
		t.Errorf("container securityContext: want readOnlyRootFilesystem, got %+v", sc)
	}

	// Resources, and a grace period longer than the daemon's drain.
	if c.Resources.Requests.Cpu().String() != "50m" || c.Resources.Requests.Memory().String() != "64Mi" || c.Resources.Limits.Memory().String() != "256Mi" {
		t.Errorf("resources: got %+v", c.Resources)
	}
	if g := pod.TerminationGracePeriodSeconds; g == nil || *g != 30 {
		t.Errorf("terminationGracePeriodSeconds: got %v, want 30 (> server.shutdownTimeout 25s)", g)
	}

	// The config checksum rolls the pods.
	sum := d.Spec.Template.Annotations["checksum/config"]
	if !regexp.MustCompile(`^[0-9a-f]{64}$`).MatchString(sum) {
		t.Errorf("checksum/config annotation: got %q, want a sha256", sum)
	}

	// Spread over nodes.
	aff := pod.Affinity
	if aff == nil || aff.PodAntiAffinity == nil || len(aff.PodAntiAffinity.PreferredDuringSchedulingIgnoredDuringExecution) != 1 ||
		aff.PodAntiAffinity.PreferredDuringSchedulingIgnoredDuringExecution[0].PodAffinityTerm.TopologyKey != "kubernetes.io/hostname" {
		t.Errorf("affinity: want a preferred podAntiAffinity across nodes, got %+v", aff)
	}

	// The configuration and the webhook token where the daemon reads them.
	mounts := map[string]string{}
	for _, vm := range c.VolumeMounts {
		mounts[vm.MountPath] = vm.Name
		if !vm.ReadOnly || vm.SubPath != "" {
			t.Errorf("volume mount %s: want read-only and without subPath (a subPath never sees updates)", vm.MountPath)
		}
	}
	volumes := map[string]corev1.Volume{}
	for _, v := range pod.Volumes {
		volumes[v.Name] = v
	}
	if v := volumes[mounts["/etc/autorollbackd"]]; v.ConfigMap == nil || v.ConfigMap.Name != "ard-autorollbackd" {
		t.Errorf("/etc/autorollbackd: want the ConfigMap ard-autorollbackd, got %+v", v)
	}
	if v := volumes[mounts["/etc/autorollbackd/webhook"]]; v.Secret == nil {
		t.Errorf("/etc/autorollbackd/webhook: want a Secret volume, got %+v", v)
	}
	if pod.ServiceAccountName != "ard-autorollbackd" {
		t.Errorf("serviceAccountName: got %q", pod.ServiceAccountName)
	}
	if objs.one(t, "ServiceAccount").Name != pod.ServiceAccountName {
		t.Errorf("the ServiceAccount is not the one the pods run as")
	}
}

// checkRestricted checks what the restricted Pod Security Standard (and
// OpenShift's restricted-v2 SCC) asks of the pod, with or without fixed
// IDs: non-root, no privilege escalation, every capability dropped,
// RuntimeDefault seccomp.
func checkRestricted(t *testing.T, pod corev1.PodSpec) {
	t.Helper()
	psc := pod.SecurityContext
	if psc == nil || psc.RunAsNonRoot == nil || !*psc.RunAsNonRoot ||
		psc.SeccompProfile == nil || psc.SeccompProfile.Type != corev1.SeccompProfileTypeRuntimeDefault {
		t.Errorf("pod securityContext: got %+v, want runAsNonRoot and seccomp RuntimeDefault", psc)
	}
	for _, c := range pod.Containers {
		sc := c.SecurityContext
		switch {
		case sc == nil:
			t.Errorf("container %s: securityContext missing", c.Name)
		case sc.RunAsNonRoot == nil || !*sc.RunAsNonRoot,
			sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation,
			sc.Privileged != nil && *sc.Privileged,
			sc.Capabilities == nil || !slices.Equal(sc.Capabilities.Drop, []corev1.Capability{"ALL"}) || len(sc.Capabilities.Add) != 0,
			sc.SeccompProfile == nil || sc.SeccompProfile.Type != corev1.SeccompProfileTypeRuntimeDefault:
			t.Errorf("container %s: securityContext not restricted: %+v", c.Name, sc)
		}
	}
}

// checkSecretVolume: the volume is the Secret, mounted where the daemon
// reads it.
func checkSecretVolume(t *testing.T, objs objects, volume, mountPath, secret string) {
	t.Helper()
	pod := deployment(t, objs).Spec.Template.Spec
	mounted := false
	for _, vm := range pod.Containers[0].VolumeMounts {
		mounted = mounted || (vm.Name == volume && vm.MountPath == mountPath)
	}
	if !mounted {
		t.Errorf("volume %s is not mounted at %s", volume, mountPath)
	}
	for _, v := range pod.Volumes {
		if v.Name == volume {
			if v.Secret == nil || v.Secret.SecretName != secret {
				t.Errorf("%s volume: got %+v, want Secret %s", volume, v, secret)
			}
			return
		}
	}
	t.Errorf("no %s volume", volume)
}

func checkNotifierSecrets(t *testing.T, objs objects, names ...string) {
	t.Helper()
	pod := deployment(t, objs).Spec.Template.Spec
	secretOf := map[string]string{}
	for _, v := range pod.Volumes {
		if v.Secret != nil {
			secretOf[v.Name] = v.Secret.SecretName
		}
	}
	mounted := map[string]string{}
	for _, vm := range pod.Containers[0].VolumeMounts {
		mounted[vm.MountPath] = secretOf[vm.Name]
	}
	for _, n := range names {
		if got := mounted["/etc/autorollbackd/secrets/"+n]; got != n {
			t.Errorf("/etc/autorollbackd/secrets/%s: got Secret %q, want %q", n, got, n)
		}
	}
}

// checkTokenSecrets: the chart creates exactly these Secrets, each with
// its token under the key token.
func checkTokenSecrets(t *testing.T, objs objects, want map[string]string) {
	t.Helper()
	got := map[string]string{}
	for _, o := range objs.all("Secret") {
		var s corev1.Secret
		decode(t, o, &s)
		got[s.Name] = string(s.Data["token"])
		if len(s.Data) != 1 {
			t.Errorf("Secret %s: keys %v, want token only", s.Name, slices.Sorted(maps.Keys(s.Data)))
		}
	}
	if !maps.Equal(got, want) {
		t.Errorf("Secrets and their tokens: got %v, want %v", got, want)
	}
}

// renderedConfig returns config.yaml from the ConfigMap the pods mount.
func renderedConfig(t *testing.T, objs objects) string {
	t.Helper()
	for _, o := range objs.all("ConfigMap") {
		if o.Name == "ard-autorollbackd" {
			var cm corev1.ConfigMap
			decode(t, o, &cm)
			return cm.Data["config.yaml"]
		}
	}
	t.Fatalf("no ConfigMap ard-autorollbackd")
	return ""
}

// checkConfig loads config.yaml exactly as the daemon does at start: strict
// keys, types and validation. The daemon turns feature flags off where the
// chart grants no ConfigMap write.
func checkConfig(t *testing.T, objs objects, namespaced bool, g grants) {
	t.Helper()
	raw := renderedConfig(t, objs)
	path := filepath.Join(t.TempDir(), "config.yaml")
	if err := os.WriteFile(path, []byte(raw), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Load(config.Source{File: path})
	if err != nil {
		t.Fatalf("the daemon refuses the rendered config.yaml: %v\n%s", err, raw)
	}
	if cfg.Webhook.Auth.BearerTokenFile != "/etc/autorollbackd/webhook/token" {
		t.Errorf("webhook.auth.bearerTokenFile: got %q, want where the Secret is mounted", cfg.Webhook.Auth.BearerTokenFile)
	}
	if got := loadedKey(t, cfg, "api", "auth", "bearerTokenFile"); got != "/etc/autorollbackd/api/token" {
		t.Errorf("api.auth.bearerTokenFile: got %v, want where the Secret is mounted", got)
	}
	if got := loadedKey(t, cfg, "engine", "allowFeatureFlags"); (got == true) != g.flags {
		t.Errorf("engine.allowFeatureFlags: the daemon loads %v, want %v (featureFlags.enabled and its ConfigMap permissions)", got, g.flags)
	}
	if cfg.Kubernetes.ArgoRollouts != g.rollouts {
		t.Errorf("kubernetes.argoRollouts: the daemon loads %v, want %v (argoRollouts.enabled and its Rollout permissions)", cfg.Kubernetes.ArgoRollouts, g.rollouts)
	}
	if cfg.Engine.Namespace != "ops" {
		t.Errorf("engine.namespace: got %q, want the release namespace", cfg.Engine.Namespace)
	}
	if cfg.LeaderElection.LeaseName != "ard-autorollbackd" {
		t.Errorf("leaderElection.leaseName: got %q, want the release's full name", cfg.LeaderElection.LeaseName)
	}
	var m map[string]any
	if err := yaml.Unmarshal([]byte(raw), &m); err != nil {
		t.Fatal(err)
	}
	if namespaced {
		if got := cfg.Policy.Namespaces.Allow; !slices.Equal(got, []string{"production", "staging"}) {
			t.Errorf("policy.namespaces.allow: got %q, want rbac.namespaces", got)
		}
	} else if _, ok := m["policy"]; ok {
		t.Errorf("config.yaml has a policy section; the daemon's default policy is the runbook's:\n%s", raw)
	}
}

// loadedKey returns a key of the configuration the daemon loaded, by its
// path in config.yaml; nil when the daemon has no such key.
func loadedKey(t *testing.T, cfg *config.Config, path ...string) any {
	t.Helper()
	raw, err := json.Marshal(cfg)
	if err != nil {
		t.Fatal(err)
	}
	var v any
	if err := json.Unmarshal(raw, &v); err != nil {
		t.Fatal(err)
	}
	for _, k := range path {
		m, _ := v.(map[string]any)
		v = m[k]
	}
	return v
}

func checkService(t *testing.T, objs objects) {
	t.Helper()
	var s corev1.Service
	decode(t, objs.one(t, "Service"), &s)
	if s.Spec.Type != corev1.ServiceTypeClusterIP || len(s.Spec.Ports) != 1 || s.Spec.Ports[0].Port != 8080 || s.Spec.Ports[0].Name != "http" {
		t.Errorf("Service: got %+v, want ClusterIP, port 8080 named http", s.Spec)
	}
	d := deployment(t, objs)
	for k, v := range s.Spec.Selector {
		if d.Spec.Template.Labels[k] != v {
			t.Errorf("Service selector %s=%s does not select the pods", k, v)
		}
	}
}

func checkPDB(t *testing.T, objs objects, want bool) {
	t.Helper()
	pdbs := objs.all("PodDisruptionBudget")
	if !want {
		if len(pdbs) != 0 {
			t.Errorf("PodDisruptionBudget with a single replica would block every drain")
		}
		return
	}
	if len(pdbs) != 1 {
		t.Fatalf("want a PodDisruptionBudget with 2 replicas, got %d", len(pdbs))
	}
	var p policyv1.PodDisruptionBudget
	decode(t, pdbs[0], &p)
	if p.Spec.MinAvailable == nil || p.Spec.MinAvailable.IntValue() != 1 {
		t.Errorf("PodDisruptionBudget minAvailable: got %v, want 1", p.Spec.MinAvailable)
	}
	if !reflect.DeepEqual(p.Spec.Selector.MatchLabels, deployment(t, objs).Spec.Selector.MatchLabels) {
		t.Errorf("PodDisruptionBudget selector %v is not the Deployment's", p.Spec.Selector.MatchLabels)
	}
}

func checkNetworkPolicy(t *testing.T, objs objects) {
	t.Helper()
	var np networkingv1.NetworkPolicy
	decode(t, objs.one(t, "NetworkPolicy"), &np)
	if !slices.Equal(np.Spec.PolicyTypes, []networkingv1.PolicyType{networkingv1.PolicyTypeIngress}) {
		t.Errorf("policyTypes: got %v, want Ingress only (egress unrestricted by default)", np.Spec.PolicyTypes)
	}
	if len(np.Spec.Ingress) != 1 {
		t.Fatalf("want one ingress rule, got %d", len(np.Spec.Ingress))
	}
	rule := np.Spec.Ingress[0]
	if len(rule.Ports) != 1 || rule.Ports[0].Port == nil || rule.Ports[0].Port.String() != "http" {
		t.Errorf("ingress ports: got %+v, want http only", rule.Ports)
	}
	if len(rule.From) != 2 {
		t.Errorf("ingress from: got %d peers, want Alertmanager and Prometheus (an empty list would admit everyone)", len(rule.From))
	}
	if !reflect.DeepEqual(np.Spec.PodSelector.MatchLabels, deployment(t, objs).Spec.Selector.MatchLabels) {
		t.Errorf("NetworkPolicy podSelector %v is not the Deployment's", np.Spec.PodSelector.MatchLabels)
	}
}

func checkServiceMonitor(t *testing.T, objs objects) {
	t.Helper()
	sm := objs.one(t, "ServiceMonitor").Map
	spec := sm["spec"].(map[string]any)
	if spec["jobLabel"] != "app.kubernetes.io/name" {
		t.Errorf("ServiceMonitor jobLabel: got %v; the alerts expect job=autorollbackd", spec["jobLabel"])
	}
	ep := spec["endpoints"].([]any)[0].(map[string]any)
	if ep["port"] != "http" || ep["path"] != "/metrics" {
		t.Errorf("ServiceMonitor endpoint: got %v", ep)
	}
	labels := sm["metadata"].(map[string]any)["labels"].(map[string]any)
	if labels["release"] != "kube-prometheus-stack" {
		t.Errorf("serviceMonitor.labels not applied: %v", labels)
	}
}

// checkPrometheusRule compares the PrometheusRule's groups with the plain
// rule file promtool tests.
func checkPrometheusRule(t *testing.T, objs objects) {
	t.Helper()
	pr := objs.one(t, "PrometheusRule").Map
	raw, err := os.ReadFile(filepath.Join(chartDir, "rules", "autorollbackd.rules.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var file map[string]any
	if err := yaml.Unmarshal(raw, &file); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(pr["spec"], file) {
		t.Errorf("PrometheusRule spec differs from rules/autorollbackd.rules.yaml:\ngot  %v\nwant %v", pr["spec"], file)
	}
}

// TestRenderPrometheusRule: prometheusRule.disabled leaves alerts out,
// additionalRuleLabels labels the others, runbookUrl moves every
// runbook_url to another page with the same anchors.
func TestRenderPrometheusRule(t *testing.T) {
	t.Parallel()
	objs := render(t, slices.Concat(apiVersions, []string{
		"--set", "prometheusRule.disabled.AutoRollbackEscalated=true",
		"--set", "prometheusRule.disabled.AutoRollbackNotReady=false",
		"--set", "prometheusRule.additionalRuleLabels.team=platform",
		"--set", "prometheusRule.runbookUrl=https://wiki.example.com/ops/autorollbackd",
	})...)
	var pr struct {
		Spec ruleFile `json:"spec"`
	}
	if err := yaml.Unmarshal(objs.one(t, "PrometheusRule").Raw, &pr); err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, g := range pr.Spec.Groups {
		for _, r := range g.Rules {
			got = append(got, r.Alert)
			if r.Labels["team"] != "platform" || r.Labels["severity"] == "" {
				t.Errorf("%s: labels %v, want team=platform besides its severity", r.Alert, r.Labels)
			}
			if u, w := r.Annotations["runbook_url"], "https://wiki.example.com/ops/autorollbackd#"+strings.ToLower(r.Alert); u != w {
				t.Errorf("%s: runbook_url %q, want %q", r.Alert, u, w)
			}
		}
	}
	want := slices.DeleteFunc(alertNames(t), func(n string) bool { return n == "AutoRollbackEscalated" })
	if !slices.Equal(got, want) {
		t.Errorf("alerts: got %q, want %q (all but the disabled one)", got, want)
	}

	// A label of the values replaces the alert's own.
	objs = render(t, slices.Concat(apiVersions, []string{"--set", "prometheusRule.additionalRuleLabels.severity=page"})...)
	if err := yaml.Unmarshal(objs.one(t, "PrometheusRule").Raw, &pr); err != nil {
		t.Fatal(err)
	}
	for _, g := range pr.Spec.Groups {
		for _, r := range g.Rules {
			if r.Labels["severity"] != "page" {
				t.Errorf("%s: severity %q, want additionalRuleLabels' page", r.Alert, r.Labels["severity"])
			}
		}
	}
}

func checkDashboardConfigMap(t *testing.T, objs objects) {
	t.Helper()
	for _, o := range objs.all("ConfigMap") {
		if o.Name != "ard-autorollbackd-dashboard" {
			continue
		}
		var cm corev1.ConfigMap
		decode(t, o, &cm)
		if cm.Labels["grafana_dashboard"] != "1" {
			t.Errorf("dashboard ConfigMap lacks the Grafana sidecar label grafana_dashboard: \"1\": %v", cm.Labels)
		}
		want, err := os.ReadFile(filepath.Join(chartDir, "dashboards", "autorollbackd.json"))
		if err != nil {
			t.Fatal(err)
		}
		if strings.TrimSpace(cm.Data["autorollbackd.json"]) != strings.TrimSpace(string(want)) {
			t.Errorf("dashboard ConfigMap does not hold dashboards/autorollbackd.json unchanged")
		}
		return
	}
	t.Errorf("no dashboard ConfigMap")
}

// perm is one permission: verb on group/resource, optionally on one name.
type perm struct{ group, resource, verb, name string }

func (p perm) String() string {
	s := fmt.Sprintf("%s %s/%s", p.verb, p.group, p.resource)
	if p.name != "" {
		s += "/" + p.name
	}
	return s
}

// perms expands rules into single permissions.
func perms(t *testing.T, rules []rbacv1.PolicyRule) map[perm]bool {
	t.Helper()
	out := map[perm]bool{}
	for _, r := range rules {
		if len(r.NonResourceURLs) != 0 {
			t.Errorf("rule with nonResourceURLs: %+v", r)
		}
		names := r.ResourceNames
		if len(names) == 0 {
			names = []string{""}
		}
		for _, g := range r.APIGroups {
			for _, res := range r.Resources {
				for _, v := range r.Verbs {
					for _, n := range names {
						out[perm{g, res, v, n}] = true
					}
				}
			}
		}
	}
	return out
}

func expand(group string, resources, verbs []string) []perm {
	var out []perm
	for _, r := range resources {
		for _, v := range verbs {
			out = append(out, perm{group: group, resource: r, verb: v})
		}
	}
	return out
}

// grants is what the values turn on in the workload namespaces beyond
// rollbacks: feature flags (featureFlags.enabled, by name with
// featureFlags.configMapNames) and post-rollback tasks (config.tasks).
type grants struct {
	flags          bool
	flagConfigMaps []string
	tasks          bool
	rollouts       bool
}

// workloadPerms is what the daemon needs in a workload namespace, from
// docs/actions.md and its informers: nothing more.
func (g grants) workloadPerms() map[perm]bool {
	ps := slices.Concat(
		expand("apps", []string{"deployments", "statefulsets", "daemonsets"}, []string{"get", "list", "watch", "patch"}),
		expand("apps", []string{"replicasets", "controllerrevisions"}, []string{"get", "list", "watch"}),
		expand("", []string{"pods"}, []string{"get", "list", "watch"}),
		expand("", []string{"pods/log"}, []string{"get"}),
		expand("", []string{"events"}, []string{"create", "patch"}),
		expand("events.k8s.io", []string{"events"}, []string{"create", "patch"}),
	)
	if g.flags {
		names := g.flagConfigMaps
		if len(names) == 0 {
			names = []string{""}
		}
		for _, n := range names {
			ps = append(ps, perm{"", "configmaps", "get", n}, perm{"", "configmaps", "patch", n})
		}
	}
	if g.tasks {
		ps = append(ps, expand("batch", []string{"jobs"}, []string{"get", "create"})...)
	}
	if g.rollouts {
		ps = append(ps, expand("argoproj.io", []string{"rollouts"}, []string{"get", "list", "watch", "patch"})...)
		ps = append(ps, expand("argoproj.io", []string{"rollouts/status"}, []string{"patch"})...)
	}
	return permSet(ps)
}

// ownPerms is what the daemon needs in its own namespace.
func ownPerms(leaseName string, secretNames ...string) []perm {
	p := slices.Concat(
		expand("", []string{"configmaps"}, []string{"get", "list", "watch", "create", "update", "delete"}),
		expand("coordination.k8s.io", []string{"leases"}, []string{"create"}),
		[]perm{{"coordination.k8s.io", "leases", "get", leaseName}, {"coordination.k8s.io", "leases", "update", leaseName}},
	)
	for _, n := range secretNames {
		p = append(p, perm{"", "secrets", "get", n})
	}
	return p
}

func permSet(ps []perm) map[perm]bool {
	out := map[perm]bool{}
	for _, p := range ps {
		out[p] = true
	}
	return out
}

// diffPerms reports the permissions in got that are not wanted and the
// wanted ones missing.
func diffPerms(t *testing.T, what string, got, want map[perm]bool) {
	t.Helper()
	var extra, missing []string
	for p := range got {
		if !want[p] {
			extra = append(extra, p.String())
		}
	}
	for p := range want {
		if !got[p] {
			missing = append(missing, p.String())
		}
	}
	slices.Sort(extra)
	slices.Sort(missing)
	if len(extra)+len(missing) > 0 {
		t.Errorf("%s: permissions not exactly as documented:\n  extra:   %v\n  missing: %v", what, extra, missing)
	}
}

// checkRBAC asserts the least privilege of every mode: the exact rules in
// the workload scope (what g turns on, no more) and in the daemon's
// namespace, bindings to the daemon's ServiceAccount only, and the
// invariants that must hold whatever the values: no wildcard, no delete of
// workloads, Secrets only by name and only in the daemon's namespace.
func checkRBAC(t *testing.T, objs objects, g grants) {
	t.Helper()
	var allRules []rbacv1.PolicyRule
	for _, o := range objs.all("ClusterRole") {
		var cr rbacv1.ClusterRole
		decode(t, o, &cr)
		diffPerms(t, "ClusterRole "+cr.Name, perms(t, cr.Rules), g.workloadPerms())
		allRules = append(allRules, cr.Rules...)
		for p := range perms(t, cr.Rules) {
			if p.resource == "secrets" {
				t.Errorf("ClusterRole %s grants %s: Secrets cluster-wide", cr.Name, p)
			}
		}
	}
	roles := map[string]rbacv1.Role{}
	for _, o := range objs.all("Role") {
		var r rbacv1.Role
		decode(t, o, &r)
		roles[r.Namespace+"/"+r.Name] = r
		allRules = append(allRules, r.Rules...)
	}

	own, ok := roles["ops/ard-autorollbackd"]
	if !ok {
		t.Fatalf("no Role ard-autorollbackd in the release namespace; roles: %v", slices.Sorted(maps.Keys(roles)))
	}
	var secretNames []string
	for p := range perms(t, own.Rules) {
		if p.resource == "secrets" {
			secretNames = append(secretNames, p.name)
		}
	}
	diffPerms(t, "Role ops/ard-autorollbackd", perms(t, own.Rules), permSet(ownPerms("ard-autorollbackd", secretNames...)))
	for _, r := range own.Rules {
		if slices.Contains(r.Resources, "secrets") && len(r.ResourceNames) == 0 {
			t.Errorf("a secrets rule without resourceNames grants every Secret: %+v", r)
		}
	}

	clusterRoles := objs.all("ClusterRole")
	for key, r := range roles {
		if key == "ops/ard-autorollbackd" {
			continue
		}
		if len(clusterRoles) != 0 {
			t.Errorf("Role %s in cluster scope", key)
		}
		diffPerms(t, "Role "+key, perms(t, r.Rules), g.workloadPerms())
	}

	// Invariants over every rule.
	for p := range perms(t, allRules) {
		switch {
		case p.group == "*" || p.resource == "*" || p.verb == "*":
			t.Errorf("wildcard permission %s", p)
		case p.verb == "delete" || p.verb == "deletecollection":
			if p.group != "" || p.resource != "configmaps" {
				t.Errorf("%s: the daemon deletes nothing but its own records", p)
			}
		case p.resource == "secrets" && (p.verb != "get" || p.name == ""):
			t.Errorf("%s: Secrets only by name, only get", p)
		case strings.Contains(p.resource, "/") && !(p.resource == "pods/log" && p.verb == "get" && p.name == "") &&
			!(p.group == "argoproj.io" && p.resource == "rollouts/status" && p.verb == "patch" && p.name == ""):
			t.Errorf("%s: no subresource is needed but reading pods/log (the incident's evidence) and, with argoRollouts.enabled, patching rollouts/status (an abort): never exec, attach, port-forward, scale", p)
		}
	}

	// Every binding binds the daemon's ServiceAccount to a role of the chart.
	bound := map[string]bool{}
	for _, kind := range []string{"RoleBinding", "ClusterRoleBinding"} {
		for _, o := range objs.all(kind) {
			var b rbacv1.RoleBinding // same shape as ClusterRoleBinding
			decode(t, o, &b)
			if len(b.Subjects) != 1 || b.Subjects[0].Kind != "ServiceAccount" || b.Subjects[0].Name != "ard-autorollbackd" || b.Subjects[0].Namespace != "ops" {
				t.Errorf("%s %s binds %+v, want ServiceAccount ops/ard-autorollbackd only", kind, b.Name, b.Subjects)
			}
			bound[b.RoleRef.Kind+" "+b.Namespace+"/"+b.RoleRef.Name] = true
		}
	}
	for key := range roles {
		ns, name, _ := strings.Cut(key, "/")
		if !bound["Role "+ns+"/"+name] {
			t.Errorf("Role %s is not bound", key)
		}
	}
	for _, o := range clusterRoles {
		if !bound["ClusterRole /"+o.Name] {
			t.Errorf("ClusterRole %s is not bound", o.Name)
		}
	}
}

// TestRenderRBACScopes checks where the workload permissions land in each
// scope, and Secrets by name.
func TestRenderRBACScopes(t *testing.T) {
	t.Parallel()
	t.Run("cluster", func(t *testing.T) {
		t.Parallel()
		objs := render(t, "--values", filepath.Join(chartDir, "ci", "cluster-values.yaml"))
		if n := len(objs.all("ClusterRole")); n != 1 {
			t.Errorf("want 1 ClusterRole, got %d", n)
		}
		if n := len(objs.all("ClusterRoleBinding")); n != 1 {
			t.Errorf("want 1 ClusterRoleBinding, got %d", n)
		}
		var own rbacv1.Role
		for _, o := range objs.all("Role") {
			if o.Name == "ard-autorollbackd" {
				decode(t, o, &own)
			}
		}
		diffPerms(t, "Role ops/ard-autorollbackd", perms(t, own.Rules), permSet(ownPerms("ard-autorollbackd", "event-service-probe-token")))
	})
	t.Run("namespaced", func(t *testing.T) {
		t.Parallel()
		objs := render(t, "--values", filepath.Join(chartDir, "ci", "namespaced-values.yaml"))
		if n := len(objs.all("ClusterRole")) + len(objs.all("ClusterRoleBinding")); n != 0 {
			t.Errorf("namespaced scope must not create cluster-wide RBAC, got %d objects", n)
		}
		var got []string
		for _, o := range objs.all("Role") {
			got = append(got, o.Namespace+"/"+o.Name)
		}
		slices.Sort(got)
		want := []string{"ops/ard-autorollbackd", "production/ard-autorollbackd-workloads", "staging/ard-autorollbackd-workloads"}
		if !slices.Equal(got, want) {
			t.Errorf("Roles: got %v, want %v", got, want)
		}
		var own rbacv1.Role
		for _, o := range objs.all("Role") {
			if o.Namespace == "ops" {
				decode(t, o, &own)
			}
		}
		for p := range perms(t, own.Rules) {
			if p.resource == "secrets" {
				t.Errorf("without rbac.secretNames there must be no secrets rule at all, got %s", p)
			}
		}
	})
	t.Run("rbac disabled", func(t *testing.T) {
		t.Parallel()
		objs := render(t, "--set", "rbac.create=false")
		for _, kind := range []string{"Role", "RoleBinding", "ClusterRole", "ClusterRoleBinding"} {
			if n := len(objs.all(kind)); n != 0 {
				t.Errorf("rbac.create=false rendered %d %s", n, kind)
			}
		}
	})
}

// taskJSON is one post-rollback task, for --set-json config.tasks=[...].
const taskJSON = `{"name":"queue-clear","timeout":"2m","job":{"template":{"spec":{"restartPolicy":"Never","containers":[{"name":"clear","image":"busybox","command":["true"]}]}}}}`

// TestRenderRBACGrantsOnlyWhatIsConfigured: ConfigMap writes in the workload
// namespaces come only with featureFlags.enabled (by name when names are
// given) and Job create only with config.tasks, in either scope.
func TestRenderRBACGrantsOnlyWhatIsConfigured(t *testing.T) {
	t.Parallel()
	namespaced := []string{"--set", "rbac.scope=namespaced", "--set", "rbac.namespaces={production,staging}"}
	flags := []string{"--set", "featureFlags.enabled=true"}
	named := []string{"--set", "featureFlags.enabled=true", "--set", "featureFlags.configMapNames={event-service-config,billing-flags}"}
	tasks := []string{"--set-json", "config.tasks=[" + taskJSON + "]"}
	rollouts := []string{"--set", "argoRollouts.enabled=true"}
	for _, tc := range []struct {
		name string
		args []string
		want grants
	}{
		{"cluster, defaults", nil, grants{}},
		{"namespaced, defaults", namespaced, grants{}},
		{"cluster, no tasks", []string{"--set-json", "config.tasks=[]"}, grants{}},
		{"cluster, feature flags", flags, grants{flags: true}},
		{"namespaced, feature flags by name", slices.Concat(namespaced, named), grants{flags: true, flagConfigMaps: []string{"event-service-config", "billing-flags"}}},
		{"cluster, tasks", tasks, grants{tasks: true}},
		{"namespaced, tasks", slices.Concat(namespaced, tasks), grants{tasks: true}},
		{"cluster, feature flags by name and tasks", slices.Concat(named, tasks), grants{flags: true, flagConfigMaps: []string{"event-service-config", "billing-flags"}, tasks: true}},
		{"cluster, Argo Rollouts", rollouts, grants{rollouts: true}},
		{"namespaced, Argo Rollouts", slices.Concat(namespaced, rollouts), grants{rollouts: true}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			objs := render(t, tc.args...)
			if n := len(objs.all("ClusterRole")) + len(objs.all("Role")); n < 2 {
				t.Fatalf("want workload and own roles, got %d", n)
			}
			checkRBAC(t, objs, tc.want)
			checkConfig(t, objs, strings.HasPrefix(tc.name, "namespaced"), tc.want)
		})
	}
}

// TestRenderTokens: an offline render (helm template, as Argo CD and
// kustomize's helmCharts run it) never makes up a token. Without the tokens
// or existing Secrets it fails, naming the values; with them, every render
// is the same.
func TestRenderTokens(t *testing.T) {
	t.Parallel()
	template := func(args ...string) (string, error) {
		return helm(t, 2*time.Minute, append([]string{"template", "ard", chartDir, "--namespace", "ops"}, args...)...)
	}
	t.Run("refused without tokens", func(t *testing.T) {
		t.Parallel()
		for _, tc := range []struct {
			args          []string
			want, notWant []string
		}{
			{nil, []string{"webhook.existingSecret", "webhook.token", "api.existingSecret", "api.token", "cannot reach the cluster"}, nil},
			{[]string{"--set", "webhook.token=" + hookToken}, []string{"api.existingSecret", "api.token"}, []string{"webhook.token"}},
			{[]string{"--set", "webhook.existingSecret=hook", "--set", "api.token="}, []string{"api.existingSecret", "api.token"}, []string{"webhook.token"}},
			{[]string{"--set", "api.existingSecret=reader"}, []string{"webhook.existingSecret", "webhook.token"}, []string{"api.token"}},
		} {
			out, err := template(tc.args...)
			if err == nil {
				t.Errorf("helm template %v rendered without a token or an existing Secret: a token made up offline changes on every render", tc.args)
				continue
			}
			for _, w := range tc.want {
				if !strings.Contains(out, w) {
					t.Errorf("helm template %v: the error does not name %s:\n%s", tc.args, w, out)
				}
			}
			for _, w := range tc.notWant {
				if strings.Contains(out, w) {
					t.Errorf("helm template %v: the error names %s, which is set:\n%s", tc.args, w, out)
				}
			}
		}
	})
	for _, tc := range []struct {
		name string
		args []string
	}{
		{"tokens", tokenArgs},
		{"existing Secrets", []string{"--set", "webhook.existingSecret=hook", "--set", "api.existingSecret=reader"}},
	} {
		t.Run("stable with "+tc.name, func(t *testing.T) {
			t.Parallel()
			first, err := template(tc.args...)
			if err != nil {
				t.Fatalf("helm template: %v\n%s", err, first)
			}
			second, err := template(tc.args...)
			if err != nil {
				t.Fatalf("helm template: %v\n%s", err, second)
			}
			if first != second {
				t.Errorf("two renders of the same values differ")
			}
		})
	}
}

// TestRenderChecksum: the pods roll when config.yaml changes, and only then.
func TestRenderChecksum(t *testing.T) {
	t.Parallel()
	sum := func(args ...string) string {
		return deployment(t, render(t, args...)).Spec.Template.Annotations["checksum/config"]
	}
	base := sum()
	if again := sum(); again != base {
		t.Errorf("checksum/config differs between two renders of the same values: %s, %s", base, again)
	}
	if changed := sum("--set", "config.policy.dryRun=true"); changed == base {
		t.Errorf("checksum/config did not change with the policy")
	}
	if changed := sum("--set", "config.log.level=debug"); changed == base {
		t.Errorf("checksum/config did not change with the configuration")
	}
	if same := sum("--set", "webhook.token=0123456789abcdef0123"); same != base {
		t.Errorf("checksum/config changed with the token; the daemon re-reads it without a restart")
	}
}

func TestRenderReplicasAndPDB(t *testing.T) {
	t.Parallel()
	objs := render(t, "--set", "replicaCount=1")
	checkPDB(t, objs, false)
	objs = render(t, "--set", "replicaCount=3")
	checkPDB(t, objs, true)
}

func TestRenderValues(t *testing.T) {
	t.Parallel()
	t.Run("tokens given", func(t *testing.T) {
		t.Parallel()
		objs := render(t, "--set", "webhook.token=0123456789abcdef0123", "--set", "api.token=abcdef01234567890123")
		checkTokenSecrets(t, objs, map[string]string{"ard-autorollbackd-webhook": "0123456789abcdef0123", "ard-autorollbackd-api": "abcdef01234567890123"})
	})
	t.Run("config merges over the chart's", func(t *testing.T) {
		t.Parallel()
		objs := render(t, "--set", "config.engine.workers=4", "--set", "config.engine.namespace=records")
		raw := renderedConfig(t, objs)
		var m struct {
			Engine struct {
				Namespace string
				Workers   int
			}
		}
		if err := yaml.Unmarshal([]byte(raw), &m); err != nil {
			t.Fatal(err)
		}
		if m.Engine.Namespace != "records" || m.Engine.Workers != 4 {
			t.Errorf("config.engine: got %+v, want the values' namespace and workers", m.Engine)
		}
		// The records Role follows engine.namespace.
		found := false
		for _, o := range objs.all("Role") {
			found = found || (o.Name == "ard-autorollbackd" && o.Namespace == "records")
		}
		if !found {
			t.Errorf("the daemon's own Role is not in engine.namespace")
		}
	})
	t.Run("https probes with TLS", func(t *testing.T) {
		t.Parallel()
		d := deployment(t, render(t, "--set", "config.server.tls.certFile=/tls/tls.crt", "--set", "config.server.tls.keyFile=/tls/tls.key"))
		if s := d.Spec.Template.Spec.Containers[0].LivenessProbe.HTTPGet.Scheme; s != corev1.URISchemeHTTPS {
			t.Errorf("liveness probe scheme with server.tls: got %s, want HTTPS", s)
		}
	})
	t.Run("securityContext values override the defaults key by key", func(t *testing.T) {
		t.Parallel()
		d := deployment(t, render(t, "--set", "podSecurityContext.runAsUser=1000680000", "--set", "securityContext.runAsUser=null",
			"--set", "podSecurityContext.supplementalGroups={5555}"))
		pod := d.Spec.Template.Spec
		checkRestricted(t, pod)
		psc, sc := pod.SecurityContext, pod.Containers[0].SecurityContext
		if psc.RunAsUser == nil || *psc.RunAsUser != 1000680000 || !slices.Equal(psc.SupplementalGroups, []int64{5555}) {
			t.Errorf("pod securityContext: got %+v, want runAsUser 1000680000 and supplementalGroups [5555]", psc)
		}
		if psc.FSGroup == nil || *psc.FSGroup != 65532 {
			t.Errorf("pod securityContext: fsGroup %v, want the default kept", psc.FSGroup)
		}
		if sc.RunAsUser != nil {
			t.Errorf("container runAsUser: got %d, want unset by null", *sc.RunAsUser)
		}
	})
	t.Run("extraEnv, envFrom and extraArgs", func(t *testing.T) {
		t.Parallel()
		d := deployment(t, render(t,
			"--set", "extraEnv[0].name=HTTPS_PROXY", "--set", "extraEnv[0].value=http://proxy.example:3128",
			"--set", "extraEnv[1].name=NO_PROXY", "--set", "extraEnv[1].value=.svc\\,.cluster.local",
			"--set", "envFrom[0].secretRef.name=proxy-credentials",
			"--set", "extraArgs={--log-level=debug,--log-format=text}"))
		c := d.Spec.Template.Spec.Containers[0]
		var names []string
		env := map[string]string{}
		for _, e := range c.Env {
			names = append(names, e.Name)
			env[e.Name] = e.Value
		}
		if want := []string{"POD_NAMESPACE", "POD_NAME", "HTTPS_PROXY", "NO_PROXY"}; !slices.Equal(names, want) {
			t.Errorf("env: got %q, want %q", names, want)
		}
		if env["HTTPS_PROXY"] != "http://proxy.example:3128" || env["NO_PROXY"] != ".svc,.cluster.local" {
			t.Errorf("env: got %v", env)
		}
		if len(c.EnvFrom) != 1 || c.EnvFrom[0].SecretRef == nil || c.EnvFrom[0].SecretRef.Name != "proxy-credentials" {
			t.Errorf("envFrom: got %+v", c.EnvFrom)
		}
		if want := []string{"serve", "--config", "/etc/autorollbackd/config.yaml", "--log-level=debug", "--log-format=text"}; !slices.Equal(c.Args, want) {
			t.Errorf("args: got %q, want %q", c.Args, want)
		}
	})
	t.Run("extraObjects are rendered as templates", func(t *testing.T) {
		t.Parallel()
		objs := render(t, "--set-json", `extraObjects=[`+
			`{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"{{ include \"autorollbackd.fullname\" . }}-extra","namespace":"{{ .Release.Namespace }}"},"data":{"replicas":"{{ .Values.replicaCount }}"}},`+
			`"apiVersion: v1\nkind: Secret\nmetadata:\n  name: {{ .Release.Name }}-proxy\n  namespace: {{ .Release.Namespace }}\nstringData:\n  HTTPS_PROXY: http://proxy.example:3128\n"]`)
		var cm corev1.ConfigMap
		var sec corev1.Secret
		for _, o := range objs {
			switch {
			case o.Kind == "ConfigMap" && o.Name == "ard-autorollbackd-extra":
				decode(t, o, &cm)
			case o.Kind == "Secret" && o.Name == "ard-proxy":
				decode(t, o, &sec)
			}
		}
		if cm.Namespace != "ops" || cm.Data["replicas"] != "2" {
			t.Errorf("extraObjects map: got %+v, want ConfigMap ard-autorollbackd-extra in ops with replicas 2", cm)
		}
		if sec.Namespace != "ops" || sec.StringData["HTTPS_PROXY"] != "http://proxy.example:3128" {
			t.Errorf("extraObjects string: got %+v, want Secret ard-proxy in ops", sec)
		}
		if n := len(render(t)); len(objs) != n+2 {
			t.Errorf("extraObjects: %d objects, want the %d of the defaults and 2 more", len(objs), n)
		}
	})
	t.Run("ServiceMonitor namespace and relabelings", func(t *testing.T) {
		t.Parallel()
		objs := render(t, slices.Concat(apiVersions, []string{"--set", "serviceMonitor.enabled=true",
			"--set", "serviceMonitor.namespace=monitoring",
			"--set-json", `serviceMonitor.relabelings=[{"targetLabel":"cluster","replacement":"prod-eu-1"}]`,
			"--set-json", `serviceMonitor.metricRelabelings=[{"sourceLabels":["__name__"],"regex":"go_.*","action":"drop"}]`})...)
		sm := objs.one(t, "ServiceMonitor")
		if sm.Namespace != "monitoring" {
			t.Errorf("ServiceMonitor namespace: got %q, want monitoring", sm.Namespace)
		}
		spec := sm.Map["spec"].(map[string]any)
		if got := spec["namespaceSelector"]; !reflect.DeepEqual(got, map[string]any{"matchNames": []any{"ops"}}) {
			t.Errorf("ServiceMonitor namespaceSelector: got %v, want the release namespace, where the Service is", got)
		}
		ep := spec["endpoints"].([]any)[0].(map[string]any)
		wantRelabel := []any{map[string]any{"targetLabel": "cluster", "replacement": "prod-eu-1"}}
		wantMetric := []any{map[string]any{"sourceLabels": []any{"__name__"}, "regex": "go_.*", "action": "drop"}}
		if !reflect.DeepEqual(ep["relabelings"], wantRelabel) || !reflect.DeepEqual(ep["metricRelabelings"], wantMetric) {
			t.Errorf("ServiceMonitor endpoint: got relabelings %v and metricRelabelings %v", ep["relabelings"], ep["metricRelabelings"])
		}
	})
	t.Run("topology spread gets the pod selector", func(t *testing.T) {
		t.Parallel()
		d := deployment(t, render(t,
			"--set", "topologySpreadConstraints[0].maxSkew=1",
			"--set", "topologySpreadConstraints[0].topologyKey=topology.kubernetes.io/zone",
			"--set", "topologySpreadConstraints[0].whenUnsatisfiable=ScheduleAnyway"))
		tsc := d.Spec.Template.Spec.TopologySpreadConstraints
		if len(tsc) != 1 || tsc[0].LabelSelector == nil || !reflect.DeepEqual(tsc[0].LabelSelector.MatchLabels, d.Spec.Selector.MatchLabels) {
			t.Errorf("topologySpreadConstraints: got %+v", tsc)
		}
	})
}

// TestRenderRefuses: values.schema.json and the templates refuse what
// cannot work, with a message naming the value.
func TestRenderRefuses(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"unknown scope", []string{"--set", "rbac.scope=everywhere"}, "rbac"},
		{"namespaced without namespaces", []string{"--set", "rbac.scope=namespaced"}, "namespaces"},
		{"bad namespace", []string{"--set", "rbac.scope=namespaced", "--set", "rbac.namespaces={Prod_1}"}, "namespaces"},
		{"short token", []string{"--set", "webhook.token=short"}, "token"},
		{"short API token", []string{"--set", "api.token=short"}, "/api/token"},
		{"one token for both", []string{"--set", "webhook.token=" + hookToken, "--set", "api.token=" + hookToken}, "api.token must differ from webhook.token"},
		{"one Secret for both", []string{"--set", "webhook.existingSecret=shared", "--set", "api.existingSecret=shared"}, "api.existingSecret must differ from webhook.existingSecret"},
		{"bad flag ConfigMap name", []string{"--set", "featureFlags.configMapNames={Flags_1}"}, "configMapNames"},
		{"feature flags not a bool", []string{"--set-string", "featureFlags.enabled=yes"}, "featureFlags"},
		{"feature flags in config only", []string{"--set", "config.engine.allowFeatureFlags=true"}, "set featureFlags.enabled"},
		{"feature flags off in config only", []string{"--set", "featureFlags.enabled=true", "--set", "config.engine.allowFeatureFlags=false"}, "set featureFlags.enabled"},
		{"gitops pause-and-undo in config only", []string{"--set", "config.policy.gitops.mode=pause-and-undo"}, "set gitops.enabled"},
		{"bad Argo CD namespace", []string{"--set", "gitops.enabled=true", "--set", "gitops.argocd.namespace=Argo_CD"}, "/gitops/argocd/namespace"},
		{"helm rollback-release in config only", []string{"--set", "config.policy.helm.mode=rollback-release"}, "set helmRollback.enabled"},
		{"helm extra rule with a wildcard verb", []string{"--set", "helmRollback.enabled=true", "--set-json", `helmRollback.extraRules=[{"apiGroups":[""],"resources":["services"],"verbs":["*"]}]`}, "/helmRollback/extraRules/0/verbs/0"},
		{"unknown value", []string{"--set", "replicas=3"}, "replicas"},
		{"pull policy", []string{"--set", "image.pullPolicy=Sometimes"}, "pullPolicy"},
		{"network policy without peers", []string{"--set", "networkPolicy.enabled=true", "--set", "networkPolicy.ingressFrom=null"}, "networkPolicy.ingressFrom"},
		{"another port", []string{"--set", "config.server.listenAddress=:9090"}, "listenAddress"},
		{"disabling an alert that does not exist", slices.Concat(apiVersions, []string{"--set", "prometheusRule.disabled.AutoRollbackEscalate=true"}), "prometheusRule.disabled names AutoRollbackEscalate, which is not an alert of the chart"},
		{"runbook URL with an anchor", []string{"--set", "prometheusRule.runbookUrl=https://wiki.example.com/a#b"}, "runbookUrl"},
		{"Kubernetes older than 1.27", []string{"--kube-version", "1.26.15"}, "kubeVersion"},
		{"runAsUser not a number", []string{"--set-string", "podSecurityContext.runAsUser=nobody"}, "runAsUser"},
		{"extraArgs not strings", []string{"--set-json", "extraArgs=[{\"log-level\":\"debug\"}]"}, "extraArgs"},
		{"extraEnv without a name", []string{"--set", "extraEnv[0].value=x"}, "extraEnv"},
		{"bad ServiceMonitor namespace", []string{"--set", "serviceMonitor.namespace=Monitoring"}, "serviceMonitor"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			args := slices.Concat([]string{"template", "ard", chartDir, "--namespace", "ops"}, tokenArgs, tc.args)
			out, err := helm(t, 2*time.Minute, args...)
			if err == nil {
				t.Fatalf("helm %s succeeded, want an error", strings.Join(args, " "))
			}
			if !strings.Contains(out, tc.want) {
				t.Errorf("error does not name %q:\n%s", tc.want, out)
			}
		})
	}
}

// TestInstallDoc: docs/install.md gives the same Alertmanager receiver as
// the chart's NOTES (which TestInstallCluster reads from a real install).
func TestInstallDoc(t *testing.T) {
	t.Parallel()
	doc, err := os.ReadFile(filepath.Join("..", "..", "docs", "install.md"))
	if err != nil {
		t.Fatal(err)
	}
	want := slices.Concat(receiverSnippet("autorollbackd", "autorollbackd", "autorollbackd-webhook"), readerSnippet("autorollbackd", "autorollbackd-api"))
	for _, w := range want {
		if !strings.Contains(string(doc), w) {
			t.Errorf("docs/install.md lacks %q", w)
		}
	}
}

// readerSnippet is what the NOTES and docs/install.md must tell about the
// incidents API's read token.
func readerSnippet(ns, secret string) []string {
	return []string{
		"TOKEN=$(kubectl get secret -n " + ns + " " + secret + " -o jsonpath='{.data.token}' | base64 -d)",
		`curl -s -H "Authorization: Bearer $TOKEN" localhost:8080/api/v1/incidents`,
	}
}

// receiverSnippet is what the NOTES and docs/install.md must tell about
// the token and the Alertmanager receiver of a release.
func receiverSnippet(fullname, ns, secret string) []string {
	return []string{
		"kubectl get secret -n " + ns + " " + secret + " -o jsonpath='{.data.token}' | base64 -d",
		"- url: http://" + fullname + "." + ns + ".svc:8080/webhook",
		"send_resolved: true",
		"max_alerts: 1000",
		"authorization:",
		"credentials_file: /etc/alertmanager/secrets/" + secret + "/token",
	}
}

// notes renders the chart's NOTES as helm install prints them, in a dry
// run: nothing is installed, but helm install wants a reachable cluster
// even then, and helm template does not render NOTES.
func notes(t *testing.T, args ...string) string {
	t.Helper()
	c := testenv.Require(t)
	args = slices.Concat([]string{"install", "ard", chartDir, "--namespace", "ops", "--dry-run=client", "--kubeconfig", c.Kubeconfig}, tokenArgs, args)
	out, err := helm(t, 2*time.Minute, args...)
	if err != nil {
		t.Fatalf("helm %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	_, n, ok := strings.Cut(out, "NOTES:")
	if !ok {
		t.Fatalf("helm %s printed no NOTES:\n%s", strings.Join(args, " "), out)
	}
	return n
}

// TestNotesWarnOfLaddersWithoutNotifiers: the install notes say when the
// escalation ladder pages nobody, which the defaults do.
func TestNotesWarnOfLaddersWithoutNotifiers(t *testing.T) {
	t.Parallel()
	var defaults []string
	for _, s := range escalate.DefaultConfig().Ladder {
		defaults = append(defaults, s.Level)
	}
	const hook = `{"name":"hook","type":"webhook","webhook":{"url":"https://hooks.example/autorollbackd"}}`
	for _, tc := range []struct {
		name string
		args []string
		want string // the warning's first line; empty: no warning
	}{
		{"defaults", nil,
			"WARNING: the escalation ladder pages nobody at level(s) " + strings.Join(defaults, ", ") + ".\nBy default they have no notifiers"},
		{"one level without notifiers",
			[]string{"--set-json", `config.escalation={"notifiers":[` + hook + `],"ladder":[{"after":"5m","level":"oncall","notifiers":["hook"]},{"after":"10m","level":"lead"}]}`},
			"WARNING: the escalation ladder pages nobody at level(s) lead.\nThey have no notifiers"},
		{"empty ladder", []string{"--set-json", `config.escalation={"ladder":[]}`},
			"WARNING: the escalation ladder pages nobody: config.escalation.ladder is\nempty"},
		{"every level wired",
			[]string{"--set-json", `config.escalation={"notifiers":[` + hook + `],"ladder":[{"after":"5m","level":"oncall","notifiers":["hook"]}]}`},
			""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			n := notes(t, tc.args...)
			if tc.want == "" {
				if strings.Contains(n, "pages nobody") {
					t.Errorf("NOTES warn of a ladder whose every level has notifiers:\n%s", n)
				}
				return
			}
			if !strings.Contains(n, tc.want) {
				t.Errorf("NOTES lack the warning %q:\n%s", tc.want, n)
			}
		})
	}
}

// TestRenderRBACHelmRollback: the permissions on Helm's release Secrets in
// the workload namespaces, the extra rules for the other objects of a
// release, and policy.helm.mode rollback-release come only with
// helmRollback.enabled; in either scope.
func TestRenderRBACHelmRollback(t *testing.T) {
	t.Parallel()
	namespaced := []string{"--set", "rbac.scope=namespaced", "--set", "rbac.namespaces={production,staging}"}
	enabled := []string{"--set", "helmRollback.enabled=true", "--set-json",
		`helmRollback.extraRules=[{"apiGroups":[""],"resources":["services","configmaps"],"verbs":["get","create","patch","delete"]}]`}
	for _, tc := range []struct {
		name  string
		args  []string
		roles map[string]string // kind and namespace of each role, by "Kind namespace"
	}{
		{"cluster, defaults", nil, nil},
		{"cluster, helm", enabled, map[string]string{"ClusterRole ": "ClusterRoleBinding "}},
		{"namespaced, helm", slices.Concat(namespaced, enabled),
			map[string]string{"Role production": "RoleBinding production", "Role staging": "RoleBinding staging"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			objs := render(t, tc.args...)
			got := map[string][]rbacv1.PolicyRule{}
			bindings := map[string]bool{}
			for _, kind := range []string{"ClusterRole", "Role"} {
				for _, o := range objs.all(kind) {
					if o.Name == "ard-autorollbackd-helm" {
						var r rbacv1.Role // same shape as ClusterRole
						decode(t, o, &r)
						got[kind+" "+r.Namespace] = r.Rules
					}
				}
			}
			for _, kind := range []string{"ClusterRoleBinding", "RoleBinding"} {
				for _, o := range objs.all(kind) {
					if o.Name == "ard-autorollbackd-helm" {
						var b rbacv1.RoleBinding
						decode(t, o, &b)
						if b.RoleRef.Name != "ard-autorollbackd-helm" || len(b.Subjects) != 1 || b.Subjects[0].Name != "ard-autorollbackd" || b.Subjects[0].Namespace != "ops" {
							t.Errorf("%s %s/%s binds %+v to %+v, want ServiceAccount ops/ard-autorollbackd to the helm role", kind, b.Namespace, b.Name, b.Subjects, b.RoleRef)
						}
						bindings[kind+" "+b.Namespace] = true
					}
				}
			}
			image, want := deployment(t, objs).Spec.Template.Spec.Containers[0].Image, "ghcr.io/autorollbackd/autorollbackd:0.1.0"
			if tc.roles != nil {
				want += "-helm"
			}
			if image != want {
				t.Errorf("image: got %q, want %q", image, want)
			}
			cfg := renderedConfig(t, objs)
			if tc.roles == nil {
				if len(got) != 0 || len(bindings) != 0 || strings.Contains(cfg, "rollback-release") {
					t.Fatalf("helmRollback off rendered helm roles %v, bindings %v; config:\n%s", slices.Sorted(maps.Keys(got)), bindings, cfg)
				}
				return
			}
			if len(got) != len(tc.roles) || len(bindings) != len(tc.roles) {
				t.Fatalf("helm roles %v and bindings %v, want %v", slices.Sorted(maps.Keys(got)), bindings, tc.roles)
			}
			for role, binding := range tc.roles {
				if !bindings[binding] {
					t.Errorf("no %s for %s", binding, role)
				}
				diffPerms(t, role+" ard-autorollbackd-helm", perms(t, got[role]), permSet(slices.Concat(
					expand("", []string{"secrets"}, []string{"get", "list", "create", "update"}),
					expand("", []string{"services", "configmaps"}, []string{"get", "create", "patch", "delete"}))))
			}
			path := filepath.Join(t.TempDir(), "config.yaml")
			if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
				t.Fatal(err)
			}
			loaded, err := config.Load(config.Source{File: path})
			if !helmsdk.SDK {
				// The chart asks for the -helm image, whose build has the SDK.
				if err == nil || !strings.Contains(err.Error(), "policy.helm.mode: rollback-release needs the Helm SDK") {
					t.Fatalf("a build without the Helm SDK loads the rendered config.yaml; err = %v", err)
				}
				return
			}
			if err != nil {
				t.Fatalf("the daemon refuses the rendered config.yaml: %v\n%s", err, cfg)
			}
			if m := loaded.Policy.Helm.Mode; m != "rollback-release" {
				t.Errorf("policy.helm.mode: the daemon loads %q, want rollback-release", m)
			}
		})
	}
}

// TestRenderRBACGitOps: the permissions on Argo CD Applications and Flux
// Kustomizations and HelmReleases, and policy.gitops.mode pause-and-undo,
// come only with gitops.enabled; in either scope.
func TestRenderRBACGitOps(t *testing.T) {
	t.Parallel()
	namespaced := []string{"--set", "rbac.scope=namespaced", "--set", "rbac.namespaces={production,staging}"}
	for _, tc := range []struct {
		name    string
		args    []string
		enabled bool
	}{
		{"cluster, defaults", nil, false},
		{"cluster, gitops", []string{"--set", "gitops.enabled=true", "--set", "gitops.argocd.namespace=gitops"}, true},
		{"namespaced, gitops", slices.Concat(namespaced, []string{"--set", "gitops.enabled=true"}), true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			objs := render(t, tc.args...)
			argoNS := "argocd"
			if slices.Contains(tc.args, "gitops.argocd.namespace=gitops") {
				argoNS = "gitops"
			}
			var cluster, argo []rbacv1.PolicyRule
			found := 0
			for _, o := range objs.all("ClusterRole") {
				if o.Name == "ard-autorollbackd-gitops" {
					var cr rbacv1.ClusterRole
					decode(t, o, &cr)
					cluster, found = cr.Rules, found+1
				}
			}
			for _, o := range objs.all("Role") {
				if o.Name == "ard-autorollbackd-gitops" {
					var r rbacv1.Role
					decode(t, o, &r)
					if r.Namespace != argoNS {
						t.Errorf("Argo CD Role in namespace %q, want %q", r.Namespace, argoNS)
					}
					argo, found = r.Rules, found+1
				}
			}
			for _, kind := range []string{"ClusterRoleBinding", "RoleBinding"} {
				for _, o := range objs.all(kind) {
					if o.Name == "ard-autorollbackd-gitops" {
						found++
					}
				}
			}
			cfg := renderedConfig(t, objs)
			if !tc.enabled {
				if found != 0 || strings.Contains(cfg, "pause-and-undo") {
					t.Fatalf("gitops off rendered %d gitops RBAC objects; config:\n%s", found, cfg)
				}
				return
			}
			if found != 4 {
				t.Fatalf("want the gitops ClusterRole, Role and their bindings, got %d objects", found)
			}
			events := expand("", []string{"events"}, []string{"create", "patch"})
			diffPerms(t, "ClusterRole ard-autorollbackd-gitops", perms(t, cluster), permSet(slices.Concat(
				expand("kustomize.toolkit.fluxcd.io", []string{"kustomizations"}, []string{"get", "list", "patch"}),
				expand("helm.toolkit.fluxcd.io", []string{"helmreleases"}, []string{"get", "list", "patch"}),
				expand("source.toolkit.fluxcd.io", []string{"gitrepositories", "ocirepositories", "buckets", "helmcharts"}, []string{"get"}),
				events)))
			diffPerms(t, "Role ard-autorollbackd-gitops", perms(t, argo), permSet(slices.Concat(
				expand("argoproj.io", []string{"applications"}, []string{"get", "list", "patch"}), events)))
			path := filepath.Join(t.TempDir(), "config.yaml")
			if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
				t.Fatal(err)
			}
			loaded, err := config.Load(config.Source{File: path})
			if err != nil {
				t.Fatalf("the daemon refuses the rendered config.yaml: %v\n%s", err, cfg)
			}
			if g := loaded.Policy.GitOps; g.Mode != "pause-and-undo" || g.ArgoCD.Namespace != argoNS {
				t.Errorf("policy.gitops: the daemon loads %+v, want pause-and-undo with Applications in %s", g, argoNS)
			}
			if strings.HasPrefix(tc.name, "namespaced") && len(loaded.Policy.Namespaces.Allow) != 2 {
				t.Errorf("policy.namespaces.allow lost: %v", loaded.Policy.Namespaces.Allow)
			}
		})
	}
}
