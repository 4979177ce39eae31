package verify

import (
	"context"
	"errors"
	"fmt"
	"strings"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/sets"
	"k8s.io/client-go/util/retry"

	"github.com/autorollbackd/autorollbackd/internal/policy"
	"github.com/autorollbackd/autorollbackd/internal/workload"
)

// scope is a Scope compiled.
type scope struct {
	namespaces sets.Set[string] // nil: every namespace
	selector   labels.Selector  // nil: every workload's labels
}

func (s Scope) compile() (scope, error) {
	var c scope
	if len(s.Namespaces) > 0 {
		c.namespaces = sets.New(s.Namespaces...)
	}
	if s.Selector != "" {
		sel, err := labels.Parse(s.Selector)
		if err != nil {
			return c, err
		}
		c.selector = sel
	}
	return c, nil
}

// selection is whether a check runs for a workload.
type selection int

const (
	selected   selection = iota
	unselected           // the check does not apply: it is left out
	unknown              // the labels it selects on could not be read
)

// workloadLabels reads the workload's own labels lazily, at most once per
// Verify, and only when a check in the workload's namespace selects on
// labels.
type workloadLabels struct {
	read   func(ctx context.Context) (labels.Set, error)
	done   bool
	labels labels.Set
	err    error
}

func (w *workloadLabels) get(ctx context.Context) (labels.Set, error) {
	if !w.done {
		w.labels, w.err = w.read(ctx)
		w.done = true
	}
	return w.labels, w.err
}

// selects says whether the check with this scope runs for target.
func (s scope) selects(ctx context.Context, target policy.Ref, wl *workloadLabels) (selection, error) {
	if s.namespaces != nil && !s.namespaces.Has(target.Namespace) {
		return unselected, nil
	}
	if s.selector == nil {
		return selected, nil
	}
	set, err := wl.get(ctx)
	if err != nil {
		return unknown, err
	}
	if s.selector.Matches(set) {
		return selected, nil
	}
	return unselected, nil
}

// readLabels reads the labels of the workload. It tries again briefly
// after an error that a second request may not meet; a workload that does
// not exist or may not be read is final.
func (v *Verifier) readLabels(ctx context.Context, r *reads) (labels.Set, error) {
	target := r.target
	if !workloadRef(target) {
		return nil, errors.New("not a Deployment, StatefulSet or DaemonSet with a namespace and name")
	}
	if _, err := workload.For(target.Kind); err != nil {
		return nil, err
	}
	get := func() (metav1.Object, error) {
		obj, _, err := r.object(ctx)
		if err != nil {
			return nil, err
		}
		return obj.Meta(), nil
	}
	transient := func(err error) bool {
		return ctx.Err() == nil && !apierrors.IsNotFound(err) && !apierrors.IsForbidden(err)
	}
	var set labels.Set
	err := retry.OnError(retry.DefaultBackoff, transient, func() error {
		obj, err := get()
		if err != nil {
			return err
		}
		set = obj.GetLabels()
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("get %s %s/%s: %w", strings.ToLower(string(target.Kind)), target.Namespace, target.Name, err)
	}
	return set, nil
}
