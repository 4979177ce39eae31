{{/*
The chart's name, or nameOverride.
*/}}
{{- define "autorollbackd.name" -}}
{{- .Values.nameOverride | default .Chart.Name | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
The release's full name: fullnameOverride, else the release name when it
already contains the chart's name, else <release>-<chart>. 63 characters at
most, as object names that become DNS labels must be.
*/}}
{{- define "autorollbackd.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := include "autorollbackd.name" . }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "autorollbackd.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Labels of every object.
*/}}
{{- define "autorollbackd.labels" -}}
helm.sh/chart: {{ include "autorollbackd.chart" . }}
{{ include "autorollbackd.selectorLabels" . }}
app.kubernetes.io/version: {{ .Values.image.tag | default .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{/*
Labels that select the daemon's pods. The ServiceMonitor takes the job label
from app.kubernetes.io/name, so the daemon's metrics have job="autorollbackd"
whatever the release is called.
*/}}
{{- define "autorollbackd.selectorLabels" -}}
app.kubernetes.io/name: {{ include "autorollbackd.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "autorollbackd.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- .Values.serviceAccount.name | default (include "autorollbackd.fullname" .) }}
{{- else }}
{{- .Values.serviceAccount.name | default "default" }}
{{- end }}
{{- end }}

{{- define "autorollbackd.webhookSecretName" -}}
{{- .Values.webhook.existingSecret | default (printf "%s-webhook" (include "autorollbackd.fullname" .)) }}
{{- end }}

{{- define "autorollbackd.apiSecretName" -}}
{{- .Values.api.existingSecret | default (printf "%s-api" (include "autorollbackd.fullname" .)) }}
{{- end }}

{{/*
The daemon's config.yaml: .Values.config on top of what only the chart knows
(the release namespace, a Lease name of the release's own, in namespaced
scope the namespaces RBAC allows, and feature flags only where RBAC grants
them). Its checksum rolls the pods on a change.
*/}}
{{- define "autorollbackd.config" -}}
{{- $base := dict
  "engine" (dict "namespace" .Release.Namespace)
  "leaderElection" (dict "leaseName" (include "autorollbackd.fullname" .)) }}
{{- if eq .Values.rbac.scope "namespaced" }}
{{- $_ := set $base "policy" (dict "namespaces" (dict "allow" .Values.rbac.namespaces)) }}
{{- end }}
{{- $flags := dig "engine" "allowFeatureFlags" nil (.Values.config | default dict) }}
{{- if and (not (kindIs "invalid" $flags)) (ne (toString $flags) (toString .Values.featureFlags.enabled)) }}
{{- fail (printf "config.engine.allowFeatureFlags is %v but featureFlags.enabled is %v: set featureFlags.enabled, which also grants the ConfigMap permissions, and leave config.engine.allowFeatureFlags out" $flags .Values.featureFlags.enabled) }}
{{- end }}
{{- if .Values.featureFlags.enabled }}
{{- $_ := set $base.engine "allowFeatureFlags" true }}
{{- end }}
{{- $mode := dig "policy" "gitops" "mode" nil (.Values.config | default dict) }}
{{- if and (eq (toString $mode) "pause-and-undo") (not .Values.gitops.enabled) }}
{{- fail "config.policy.gitops.mode is pause-and-undo but gitops.enabled is false: set gitops.enabled, which also grants the permissions on Applications, Kustomizations and HelmReleases, and leave config.policy.gitops.mode out" }}
{{- end }}
{{- if .Values.gitops.enabled }}
{{- $policy := $base.policy | default dict }}
{{- $_ := set $policy "gitops" (dict "mode" "pause-and-undo" "argocd" (dict "namespace" .Values.gitops.argocd.namespace)) }}
{{- $_ := set $base "policy" $policy }}
{{- end }}
{{- $helmMode := dig "policy" "helm" "mode" nil (.Values.config | default dict) }}
{{- if and (eq (toString $helmMode) "rollback-release") (not .Values.helmRollback.enabled) }}
{{- fail "config.policy.helm.mode is rollback-release but helmRollback.enabled is false: set helmRollback.enabled, which also grants the permissions on Helm's release Secrets, and leave config.policy.helm.mode out" }}
{{- end }}
{{- if .Values.helmRollback.enabled }}
{{- $policy := $base.policy | default dict }}
{{- $_ := set $policy "helm" (dict "mode" "rollback-release") }}
{{- $_ := set $base "policy" $policy }}
{{- end }}
{{- if .Values.argoRollouts.enabled }}
{{- $_ := set $base "kubernetes" (dict "argoRollouts" true) }}
{{- end }}
{{- toYaml (mustMergeOverwrite $base (deepCopy (.Values.config | default dict))) }}
{{- end }}

{{/*
The namespace of the alert and incident records and of the Lease, where the
daemon's own Role goes.
*/}}
{{- define "autorollbackd.recordsNamespace" -}}
{{- $cfg := include "autorollbackd.config" . | fromYaml }}
{{- dig "engine" "namespace" "" $cfg | default .Release.Namespace }}
{{- end }}

{{- define "autorollbackd.leaseName" -}}
{{- $cfg := include "autorollbackd.config" . | fromYaml }}
{{- dig "leaderElection" "leaseName" "" $cfg | default (include "autorollbackd.fullname" .) }}
{{- end }}

{{/*
http, or https when the daemon serves TLS (server.tls.certFile).
*/}}
{{- define "autorollbackd.scheme" -}}
{{- if dig "server" "tls" "certFile" "" (.Values.config | default dict) }}https{{ else }}http{{ end }}
{{- end }}

{{/*
Whether config.tasks lists post-rollback tasks: "true" or empty.
*/}}
{{- define "autorollbackd.tasks" -}}
{{- if dig "tasks" list (.Values.config | default dict) }}true{{ end }}
{{- end }}

{{/*
The rules the daemon needs on workloads, wherever they live: read and patch
the workloads (rollback, restart, scale), read their revisions and pods
(decide, verify) and the logs of a bad revision's pods (the incident's
evidence), and tell `kubectl describe` through Events. Only when the values
turn them on: turn feature flags off (ConfigMaps) and run post-rollback
tasks (Jobs). Never delete, never Secrets.
*/}}
{{- define "autorollbackd.workloadRules" -}}
- apiGroups: ["apps"]
  resources: ["deployments", "statefulsets", "daemonsets"]
  verbs: ["get", "list", "watch", "patch"]
- apiGroups: ["apps"]
  resources: ["replicasets", "controllerrevisions"]
  verbs: ["get", "list", "watch"]
- apiGroups: [""]
  resources: ["pods"]
  verbs: ["get", "list", "watch"]
- apiGroups: [""]
  resources: ["pods/log"]
  verbs: ["get"]
- apiGroups: [""]
  resources: ["events"]
  verbs: ["create", "patch"]
- apiGroups: ["events.k8s.io"]
  resources: ["events"]
  verbs: ["create", "patch"]
{{- if .Values.featureFlags.enabled }}
# featureFlags.enabled: turn a flag off in its ConfigMap.
- apiGroups: [""]
  resources: ["configmaps"]
  {{- with .Values.featureFlags.configMapNames }}
  resourceNames:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  verbs: ["get", "patch"]
{{- end }}
{{- if .Values.argoRollouts.enabled }}
# argoRollouts.enabled: read, undo and (through the status) abort Rollouts.
- apiGroups: ["argoproj.io"]
  resources: ["rollouts"]
  verbs: ["get", "list", "watch", "patch"]
- apiGroups: ["argoproj.io"]
  resources: ["rollouts/status"]
  verbs: ["patch"]
{{- end }}
{{- if include "autorollbackd.tasks" . }}
# config.tasks: run post-rollback tasks. A Job's name is made per incident,
# so it cannot be limited by name.
- apiGroups: ["batch"]
  resources: ["jobs"]
  verbs: ["get", "create"]
{{- end }}
{{- end }}

{{/*
"true" when this render reaches the cluster: helm install and upgrade (and
Flux's helm-controller, which runs them), or --dry-run=server. helm
template, helm lint, a client-side --dry-run and Argo CD render offline,
where lookup returns an empty map. Listing Services works even in a
namespace that does not exist yet (--create-namespace creates it after the
render): the answer is then an empty list, still not an empty map.
*/}}
{{- define "autorollbackd.clusterReachable" -}}
{{- if lookup "v1" "Service" .Release.Namespace "" }}true{{ end }}
{{- end }}

{{/*
The token of a Secret the chart creates, from (dict "root" $ "name" <Secret>
"token" <value>): the value, else the token the Secret already holds (an
earlier install's), else a new random one where the render reaches the
cluster; else empty, and the caller refuses to render. A token generated
offline would change on every render and lock its senders out, and one
derived from the release's name or values would be no secret.
*/}}
{{- define "autorollbackd.token" -}}
{{- $token := .token }}
{{- if not $token }}
{{- $existing := lookup "v1" "Secret" .root.Release.Namespace .name }}
{{- $token = dig "data" "token" "" $existing | b64dec }}
{{- end }}
{{- if and (not $token) (include "autorollbackd.clusterReachable" .root) }}
{{- $token = randAlphaNum 32 }}
{{- end }}
{{- $token }}
{{- end }}

{{/*
The daemon's image. Helm release rollbacks (helmRollback.enabled) need the
build with the Helm SDK, published with the "-helm" suffix; an image.tag
given is used as it is.
*/}}
{{- define "autorollbackd.image" -}}
{{- $tag := .Values.image.tag | default (printf "%s%s" .Chart.AppVersion (ternary "-helm" "" .Values.helmRollback.enabled)) -}}
{{- printf "%s:%s" .Values.image.repository $tag -}}
{{- end }}
