// Package kinds names the workloads autorollbackd acts on (Kind, Ref) and
// holds every annotation and label key the daemon reads or writes
// (keys.go). It imports nothing of the daemon, so every package can use it.
package kinds

import "slices"

// Kind is the kind of a workload the daemon can roll back.
type Kind string

// The kinds of workload the daemon can roll back. What each of them does is
// the business of its workload.Adapter; code elsewhere asks the adapter
// rather than comparing kinds.
const (
	KindDeployment  Kind = "Deployment"
	KindStatefulSet Kind = "StatefulSet"
	KindDaemonSet   Kind = "DaemonSet"
	// KindRollout is Argo Rollouts' Rollout (argoproj.io/v1alpha1).
	KindRollout Kind = "Rollout"
)

// All returns every kind the daemon can roll back.
func All() []Kind { return []Kind{KindDeployment, KindStatefulSet, KindDaemonSet, KindRollout} }

// Known reports whether k is one of All.
func (k Kind) Known() bool { return slices.Contains(All(), k) }

// Ref names one workload.
type Ref struct {
	Kind      Kind   `json:"kind"`
	Namespace string `json:"namespace"`
	Name      string `json:"name"`
}

// IsZero reports whether r names no workload.
func (r Ref) IsZero() bool { return r == Ref{} }

// String returns "Kind namespace/name", for example
// "Deployment production/event-service", or "<none>" for the zero Ref.
func (r Ref) String() string {
	if r.IsZero() {
		return "<none>"
	}
	return string(r.Kind) + " " + r.Namespace + "/" + r.Name
}

// Complete reports whether r names a workload unambiguously: a known kind,
// a namespace and a name.
func (r Ref) Complete() bool { return r.Kind.Known() && r.Namespace != "" && r.Name != "" }
