package kinds

import appsv1 "k8s.io/api/apps/v1"

// Every annotation and label key autorollbackd reads or writes, with the one
// thing each means. No other file spells an autorollback.io/ key (a test
// checks), so a writer and a reader of a key cannot drift apart.

// Set by a workload's owners, read by the daemon.
const (
	// LabelEnabled is the default opt-in label: "true" lets the daemon act on the workload (policy.optInLabel may name another).
	LabelEnabled = "autorollback.io/enabled"
	// AnnotationFixForward: the owners fix forward, "true" or until an RFC 3339 time; any other value counts as set.
	AnnotationFixForward = "autorollback.io/fix-forward"
	// AnnotationRollbackUnsafe: a rollback would cause data issues (an irreversible migration); any non-empty value counts.
	AnnotationRollbackUnsafe = "autorollback.io/rollback-unsafe"
	// AnnotationAllowedOriginNamespaces lists, comma-separated, the other namespaces whose alerts may act on the workload.
	AnnotationAllowedOriginNamespaces = "autorollback.io/allowed-origin-namespaces"
	// AnnotationAlertMatchers holds Alertmanager matchers, as in {team="payments"}, that an alert must satisfy to act.
	AnnotationAlertMatchers = "autorollback.io/alert-matchers"
	// AnnotationFeatureFlagConfigMap names the ConfigMap in the workload's namespace that holds its feature flags.
	AnnotationFeatureFlagConfigMap = "autorollback.io/feature-flag-configmap"
	// AnnotationFeatureFlags lists, comma-separated, the flag keys an alert's feature_flag label may name.
	AnnotationFeatureFlags = "autorollback.io/feature-flags"
	// AnnotationAllowScaleBounce: "true" allows the last rung, scaling the workload to zero and back.
	AnnotationAllowScaleBounce = "autorollback.io/allow-scale-bounce"
	// AnnotationPostRollbackTasks names, comma-separated, the post-rollback tasks to run after its rollback.
	AnnotationPostRollbackTasks = "autorollback.io/post-rollback-tasks"
)

// Written by the daemon on a workload it acted on: the record that makes an
// action idempotent and arms the cooldown.
const (
	// AnnotationRolledBackFrom is the revision the last rollback left, in decimal.
	AnnotationRolledBackFrom = "autorollback.io/rolled-back-from"
	// AnnotationRolledBackTo is the revision the last rollback restored, in decimal.
	AnnotationRolledBackTo = "autorollback.io/rolled-back-to"
	// AnnotationRolledBackAt is when the daemon last acted on the workload (RFC 3339); the policy's cooldown starts there.
	AnnotationRolledBackAt = "autorollback.io/rolled-back-at"
	// AnnotationFingerprint is the fingerprint of the alert behind the last rollback.
	AnnotationFingerprint = "autorollback.io/alert-fingerprint"
	// AnnotationRolledBackFor is the rollout (incident) ID the last rollback was done for; see RolledBackFor.
	AnnotationRolledBackFor = "autorollback.io/rolled-back-for"
	// AnnotationActed, on a rollback made before any record of it, holds in JSON what rebuilds its alert record and incident: alert, incident, revisions, rung.
	AnnotationActed = "autorollback.io/acted"
	// AnnotationRestartedFor is the daemon's last restart of the workload, "<incident>:flag" or "<incident>:revert".
	AnnotationRestartedFor = "autorollback.io/restarted-for"
	// AnnotationOwnRestartAt is the AnnotationTemplateRestartedAt value of the daemon's own restart, which is no rollout.
	AnnotationOwnRestartAt = "autorollback.io/restarted-at"
	// AnnotationScaleRestoreReplicas is spec.replicas before a scale bounce in flight, in decimal.
	AnnotationScaleRestoreReplicas = "autorollback.io/scale-restore-replicas"
	// AnnotationScaleIncident is the incident of the scale bounce in flight.
	AnnotationScaleIncident = "autorollback.io/scale-incident"
	// AnnotationScaleBouncedFor is the incident of the last finished scale bounce.
	AnnotationScaleBouncedFor = "autorollback.io/scale-bounced-for"
	// AnnotationRolledBackRelease is the Helm release the last rollback rolled back, and how: "<namespace>/<release>: revision 3 to 1, as revision 4".
	AnnotationRolledBackRelease = "autorollback.io/rolled-back-release"
)

// On an Argo CD Application or a Flux Kustomization or HelmRelease the daemon
// paused before rolling back one of its workloads (policy.gitops.mode
// pause-and-undo).
const (
	// LabelGitOpsPaused is "true" while the daemon holds the owner paused; the resumer lists owners by it.
	LabelGitOpsPaused = "autorollback.io/gitops-paused"
	// AnnotationGitOpsPause is the record of the pause, JSON: the incident, the workload, the revision and what the daemon changed.
	AnnotationGitOpsPause = "autorollback.io/gitops-pause"
	// AnnotationGitOpsResume, set to "true" by an operator, has the daemon restore what it recorded.
	AnnotationGitOpsResume = "autorollback.io/resume"
)

// Written by the daemon on a feature flag ConfigMap, one pair per flag key.
const (
	// AnnotationFlagPreviousPrefix + key is the key's value before the flag rollback, JSON: a string, or null when absent.
	AnnotationFlagPreviousPrefix = "autorollback.io/flag-previous."
	// AnnotationFlagIncidentPrefix + key is the incident that rolled the key back.
	AnnotationFlagIncidentPrefix = "autorollback.io/flag-incident."
)

// On the daemon's own objects: alert and incident record ConfigMaps, the
// Events it records and the Jobs of post-rollback tasks.
const (
	// LabelManagedBy is the standard label; the daemon's objects carry ManagedBy.
	LabelManagedBy = "app.kubernetes.io/managed-by"
	// ManagedBy is the value of LabelManagedBy on the daemon's objects.
	ManagedBy = "autorollbackd"
	// LabelRecord is the kind of record a ConfigMap holds: "alert" or "incident".
	LabelRecord = "autorollback.io/record"
	// LabelAlertState is the state of an alert record: pending, decided or done.
	LabelAlertState = "autorollback.io/state"
	// LabelAlertOutcome is the policy's outcome on an alert record, once decided.
	LabelAlertOutcome = "autorollback.io/outcome"
	// LabelIncidentObject names, on an alert record, the ConfigMap of the incident the alert was handed to.
	LabelIncidentObject = "autorollback.io/incident-object"
	// AnnotationAlertKey is an alert record's alert identity: fingerprint and start time.
	AnnotationAlertKey = "autorollback.io/alert-key"
	// AnnotationTarget is the workload a record is about, as "Kind namespace/name".
	AnnotationTarget = "autorollback.io/target"
	// LabelTarget is AnnotationTarget's key as a label on incident records, its value in label-safe form.
	LabelTarget = AnnotationTarget
	// LabelIncidentState is the state of an incident record.
	LabelIncidentState = "autorollback.io/incident-state"
	// AnnotationIncident is the incident ID an incident record, an Event or a task Job belongs to; never on workloads since AnnotationRolledBackFor.
	AnnotationIncident = "autorollback.io/incident"
	// AnnotationLevel is the escalation level of an Event the daemon recorded.
	AnnotationLevel = "autorollback.io/level"
	// LabelTask is the name of the post-rollback task a Job runs.
	LabelTask = "autorollback.io/task"
	// AnnotationWorkload is the workload a task Job ran for, as "Kind namespace/name".
	AnnotationWorkload = "autorollback.io/workload"
	// LabelQuarantined marks a record ConfigMap that could not be decoded, moved aside for people.
	LabelQuarantined = "autorollback.io/quarantined"
	// AnnotationQuarantinedFrom is the name a quarantined ConfigMap had.
	AnnotationQuarantinedFrom = "autorollback.io/quarantined-from"
	// AnnotationQuarantineReason is why a ConfigMap was quarantined.
	AnnotationQuarantineReason = "autorollback.io/quarantine-reason"
)

// Keys of Kubernetes, kubectl and GitOps tools the daemon reads or writes.
const (
	// AnnotationDeploymentRevision is the Deployment controller's revision number on a Deployment and its ReplicaSets.
	AnnotationDeploymentRevision = "deployment.kubernetes.io/revision"
	// AnnotationDeploymentRevisionHistory is the controller's list of earlier revision numbers on a ReplicaSet.
	AnnotationDeploymentRevisionHistory = "deployment.kubernetes.io/revision-history"
	// AnnotationDeploymentDesiredReplicas is the controller's replica count on a ReplicaSet.
	AnnotationDeploymentDesiredReplicas = "deployment.kubernetes.io/desired-replicas"
	// AnnotationDeploymentMaxReplicas is the controller's surge bound on a ReplicaSet.
	AnnotationDeploymentMaxReplicas = "deployment.kubernetes.io/max-replicas"
	// AnnotationChangeCause is what `kubectl rollout history` shows for a revision.
	AnnotationChangeCause = "kubernetes.io/change-cause"
	// AnnotationTemplateRestartedAt is the pod template annotation of `kubectl rollout restart`; changing it replaces every pod.
	AnnotationTemplateRestartedAt = "kubectl.kubernetes.io/restartedAt"
	// LabelPodTemplateHash is on a Deployment's ReplicaSets and their pods.
	LabelPodTemplateHash = appsv1.DefaultDeploymentUniqueLabelKey
	// LabelControllerRevisionHash is on StatefulSet and DaemonSet pods and their ControllerRevisions.
	LabelControllerRevisionHash = appsv1.ControllerRevisionHashLabelKey
	// AnnotationRolloutRevision is Argo Rollouts' revision number on a Rollout and its ReplicaSets.
	AnnotationRolloutRevision = "rollout.argoproj.io/revision"
	// LabelRolloutPodTemplateHash is on a Rollout's ReplicaSets and their pods.
	LabelRolloutPodTemplateHash = "rollouts-pod-template-hash"
	// AnnotationArgoTrackingID marks an object Argo CD manages.
	AnnotationArgoTrackingID = "argocd.argoproj.io/tracking-id"
	// LabelArgoInstance marks an object Argo CD manages (its instance label).
	LabelArgoInstance = "argocd.argoproj.io/instance"
	// LabelFluxKustomization marks an object Flux's kustomize controller manages.
	LabelFluxKustomization = "kustomize.toolkit.fluxcd.io/name"
	// LabelFluxHelm marks an object Flux's helm controller manages.
	LabelFluxHelm = "helm.toolkit.fluxcd.io/name"
	// LabelFluxKustomizationNamespace is the namespace of the Kustomization LabelFluxKustomization names.
	LabelFluxKustomizationNamespace = "kustomize.toolkit.fluxcd.io/namespace"
	// LabelFluxHelmNamespace is the namespace of the HelmRelease LabelFluxHelm names.
	LabelFluxHelmNamespace = "helm.toolkit.fluxcd.io/namespace"
	// ManagedByHelm is the value of LabelManagedBy on the objects of a Helm release.
	ManagedByHelm = "Helm"
	// AnnotationHelmReleaseName names the Helm release an object belongs to.
	AnnotationHelmReleaseName = "meta.helm.sh/release-name"
	// AnnotationHelmReleaseNamespace is the namespace of the Helm release AnnotationHelmReleaseName names.
	AnnotationHelmReleaseNamespace = "meta.helm.sh/release-namespace"
)

// HelmRelease names the Helm release of a workload with these labels and
// annotations, as Helm marks the objects it installs: LabelManagedBy
// ManagedByHelm and AnnotationHelmReleaseName; the release's namespace is
// AnnotationHelmReleaseNamespace, else the workload's own. ok is false for
// a workload that is not part of a release.
func HelmRelease(namespace string, labels, annotations map[string]string) (releaseNamespace, name string, ok bool) {
	name = annotations[AnnotationHelmReleaseName]
	if labels[LabelManagedBy] != ManagedByHelm || name == "" {
		return "", "", false
	}
	if ns := annotations[AnnotationHelmReleaseNamespace]; ns != "" {
		namespace = ns
	}
	return namespace, name, true
}

// RolledBackFor returns the rollout ID the workload's last rollback was done
// for. Daemons before AnnotationRolledBackFor recorded it under
// AnnotationIncident; a workload that has only that is read from it, so a
// rollback recorded then is still recognised as done.
func RolledBackFor(annotations map[string]string) string {
	if v, ok := annotations[AnnotationRolledBackFor]; ok {
		return v
	}
	return annotations[AnnotationIncident]
}
