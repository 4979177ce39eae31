package policy_test

import (
	"errors"
	"testing"

	"github.com/autorollbackd/autorollbackd/internal/policy"
)

func TestResolve(t *testing.T) {
	// Alerts with impact="service_down" use the first rule's target
	// settings; other alerts use the default ones.
	withTarget := func(rt policy.RuleTarget) func(*policy.Config) {
		return func(c *policy.Config) { c.Rules[0].Target = rt }
	}
	for _, tc := range []struct {
		name    string
		cfg     func(*policy.Config)
		labels  map[string]string
		want    policy.Ref
		wantErr string
	}{
		{name: "kube-state-metrics deployment",
			labels: map[string]string{"namespace": "production", "deployment": "event-service"},
			want:   policy.Ref{Kind: policy.KindDeployment, Namespace: "production", Name: "event-service"}},
		{name: "kube-state-metrics statefulset",
			labels: map[string]string{"namespace": "data", "statefulset": "redis"},
			want:   policy.Ref{Kind: policy.KindStatefulSet, Namespace: "data", Name: "redis"}},
		{name: "kube-state-metrics daemonset",
			labels: map[string]string{"namespace": "monitoring", "daemonset": "node-exporter", "pod": "node-exporter-x1"},
			want:   policy.Ref{Kind: policy.KindDaemonSet, Namespace: "monitoring", Name: "node-exporter"}},
		{name: "Argo Rollouts rollout",
			labels: map[string]string{"namespace": "shop", "rollout": "checkout"},
			want:   policy.Ref{Kind: policy.KindRollout, Namespace: "shop", Name: "checkout"}},
		{name: "an empty kind label is absent",
			labels: map[string]string{"namespace": "production", "deployment": "event-service", "statefulset": ""},
			want:   policy.Ref{Kind: policy.KindDeployment, Namespace: "production", Name: "event-service"}},
		{name: "ambiguous",
			labels:  map[string]string{"namespace": "production", "deployment": "event-service", "statefulset": "redis"},
			wantErr: "alert names no workload: ambiguous, labels deployment, statefulset are all set"},
		{name: "no kind label",
			labels:  map[string]string{"namespace": "production", "pod": "event-service-abc"},
			wantErr: "alert names no workload: none of the labels daemonset, deployment, rollout, statefulset is set"},
		{name: "missing namespace",
			labels:  map[string]string{"deployment": "event-service"},
			wantErr: `alert names no workload: namespace label "namespace" is missing or empty`},
		{name: "invalid name",
			labels:  map[string]string{"namespace": "production", "deployment": "Event_Service"},
			wantErr: `alert names no workload: Deployment name "Event_Service" is invalid: a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')`},
		{name: "custom default labels",
			cfg: func(c *policy.Config) {
				c.DefaultTarget = policy.DefaultTarget{NamespaceLabel: "kubernetes_namespace", KindLabels: map[string]policy.Kind{"app": policy.KindDeployment}}
			},
			labels: map[string]string{"kubernetes_namespace": "production", "app": "event-service", "namespace": "ignored"},
			want:   policy.Ref{Kind: policy.KindDeployment, Namespace: "production", Name: "event-service"}},
		{name: "per-rule label names",
			cfg:    withTarget(policy.RuleTarget{Kind: policy.KindStatefulSet, NamespaceLabel: "exported_namespace", NameLabel: "app"}),
			labels: map[string]string{"impact": "service_down", "exported_namespace": "data", "app": "postgres", "namespace": "monitoring", "deployment": "x"},
			want:   policy.Ref{Kind: policy.KindStatefulSet, Namespace: "data", Name: "postgres"}},
		{name: "per-rule settings apply only to alerts the rule matches",
			cfg:    withTarget(policy.RuleTarget{Kind: policy.KindStatefulSet, NamespaceLabel: "exported_namespace", NameLabel: "app"}),
			labels: map[string]string{"impact": "non_critical", "exported_namespace": "data", "app": "postgres", "namespace": "monitoring", "deployment": "x"},
			want:   policy.Ref{Kind: policy.KindDeployment, Namespace: "monitoring", Name: "x"}},
		{name: "per-rule namespace label with default kind labels",
			cfg:    withTarget(policy.RuleTarget{NamespaceLabel: "exported_namespace"}),
			labels: map[string]string{"impact": "service_down", "exported_namespace": "data", "namespace": "monitoring", "statefulset": "redis"},
			want:   policy.Ref{Kind: policy.KindStatefulSet, Namespace: "data", Name: "redis"}},
		{name: "per-rule templates",
			cfg: withTarget(policy.RuleTarget{
				Kind:              policy.KindDeployment,
				NamespaceTemplate: "{{ .Labels.kubernetes_namespace }}",
				NameTemplate:      `{{ .Labels.pod | reReplaceAll "-[a-z0-9]+-[a-z0-9]+$" "" }}`,
			}),
			labels: map[string]string{"impact": "service_down", "kubernetes_namespace": "production", "pod": "event-service-7d9f8b6c4-x2x7q"},
			want:   policy.Ref{Kind: policy.KindDeployment, Namespace: "production", Name: "event-service"}},
		{name: "templates win over label names",
			cfg: withTarget(policy.RuleTarget{
				Kind: policy.KindDeployment, NameLabel: "app", NameTemplate: "{{ .Labels.service | toLower }}-api",
				NamespaceLabel: "namespace", NamespaceTemplate: "{{ .Labels.env }}",
			}),
			labels: map[string]string{"impact": "service_down", "namespace": "other", "env": "production", "app": "other", "service": "Tickets"},
			want:   policy.Ref{Kind: policy.KindDeployment, Namespace: "production", Name: "tickets-api"}},
		{name: "template functions take the piped value last",
			cfg:    withTarget(policy.RuleTarget{Kind: policy.KindDaemonSet, NameTemplate: `{{ trimPrefix "ds-" .Labels.job }}`}),
			labels: map[string]string{"impact": "service_down", "namespace": "monitoring", "job": "ds-node-exporter"},
			want:   policy.Ref{Kind: policy.KindDaemonSet, Namespace: "monitoring", Name: "node-exporter"}},
		{name: "template renders empty",
			cfg:     withTarget(policy.RuleTarget{Kind: policy.KindDeployment, NameTemplate: "{{ .Labels.app }}"}),
			labels:  map[string]string{"impact": "service_down", "namespace": "production"},
			wantErr: "alert names no workload: name template rendered empty"},
		{name: "namespace template renders whitespace",
			cfg:     withTarget(policy.RuleTarget{NamespaceTemplate: "  {{ .Labels.ns }}\n"}),
			labels:  map[string]string{"impact": "service_down", "deployment": "event-service"},
			wantErr: "alert names no workload: namespace template rendered empty"},
		{name: "template renders an invalid namespace",
			cfg:     withTarget(policy.RuleTarget{NamespaceTemplate: "{{ .Labels.ns }}/x"}),
			labels:  map[string]string{"impact": "service_down", "ns": "production", "deployment": "event-service"},
			wantErr: `alert names no workload: namespace "production/x" is invalid: a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')`},
		{name: "template reads a label with a dash, with a fallback",
			cfg: withTarget(policy.RuleTarget{Kind: policy.KindDeployment,
				NameTemplate: `{{ with index .Labels "app-name" }}{{ . | toLower }}{{ else }}{{ .Labels.service }}{{ end }}`}),
			labels: map[string]string{"impact": "service_down", "namespace": "production", "app-name": "Event-Service"},
			want:   policy.Ref{Kind: policy.KindDeployment, Namespace: "production", Name: "event-service"}},
		{name: "template reads a field the alert does not have",
			cfg:     withTarget(policy.RuleTarget{Kind: policy.KindDeployment, NameTemplate: `{{ .Labels.app }}{{ .App }}`}),
			labels:  map[string]string{"impact": "service_down", "namespace": "production", "app": "x"},
			wantErr: `alert names no workload: render name template: template: rules[0].target.nameTemplate:1:20: executing "rules[0].target.nameTemplate" at <.App>: can't evaluate field App in type policy.Alert`},
		{name: "template fails to execute",
			cfg:     withTarget(policy.RuleTarget{Kind: policy.KindDeployment, NameTemplate: `{{ reReplaceAll "(" "" .Labels.app }}`}),
			labels:  map[string]string{"impact": "service_down", "namespace": "production", "app": "x"},
			wantErr: "alert names no workload: render name template: template: rules[0].target.nameTemplate:1:3: executing \"rules[0].target.nameTemplate\" at <reReplaceAll \"(\" \"\" .Labels.app>: error calling reReplaceAll: error parsing regexp: missing closing ): `(`"},
		{name: "per-rule name label missing",
			cfg:     withTarget(policy.RuleTarget{Kind: policy.KindDeployment, NameLabel: "app"}),
			labels:  map[string]string{"impact": "service_down", "namespace": "production", "deployment": "event-service"},
			wantErr: `alert names no workload: name label "app" is missing or empty`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := policy.DefaultConfig()
			if tc.cfg != nil {
				tc.cfg(&cfg)
			}
			p, err := policy.Compile(cfg)
			if err != nil {
				t.Fatalf("Compile: %v", err)
			}
			got, err := p.Resolve(policy.Alert{Status: "firing", Labels: tc.labels})
			if tc.wantErr != "" {
				if err == nil || err.Error() != tc.wantErr || !errors.Is(err, policy.ErrNoTarget) {
					t.Fatalf("Resolve = %v, %v\nwant error %s", got, err, tc.wantErr)
				}
				if !got.IsZero() {
					t.Errorf("Resolve returned %s with an error", got)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Fatalf("Resolve = %v, %v; want %v", got, err, tc.want)
			}
		})
	}
}
