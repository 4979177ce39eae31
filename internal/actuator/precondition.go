package actuator

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strings"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
)

// A rollback is written as a JSON patch whose first operations test what the
// rollback was planned on: the workload's UID, its generation (which the API
// server raises on every change of the spec), and, for a Deployment, the
// revision annotation. A resourceVersion would guard the same and everything
// else too, so any writer of labels, status or unrelated annotations makes it
// fail; a writer busier than the read-to-write round trip (a controller that
// labels every few milliseconds) would make every retry fail as well. The
// tests fail only when the rollback's meaning changed, and then the API
// server rejects the whole patch.
//
// Annotations are written key by key, so a concurrent write of another key
// is kept, where kubectl's replacement of the whole map would drop it.
type precondition struct {
	uid        types.UID
	generation int64
	// revision is the Deployment's revision annotation; empty for kinds
	// that keep their revision in status.
	revision string
	// hadAnnotations: the workload had an annotations map when it was read.
	hadAnnotations bool
}

// jsonPatchOp is a JSON patch operation with a value, which may be null.
type jsonPatchOp struct {
	Op    string `json:"op"`
	Path  string `json:"path"`
	Value any    `json:"value"`
}

type removeOp struct {
	Op   string `json:"op"`
	Path string `json:"path"`
}

func preconditionOf(m *metav1.ObjectMeta, revisionAnnotation string) precondition {
	p := precondition{uid: m.UID, generation: m.Generation, hadAnnotations: m.Annotations != nil}
	if revisionAnnotation != "" {
		p.revision = m.Annotations[revisionAnnotation]
	}
	return p
}

// ops returns the tests that open the patch.
func (p precondition) ops(revisionAnnotation string) []any {
	ops := []any{
		jsonPatchOp{Op: "test", Path: "/metadata/uid", Value: p.uid},
		jsonPatchOp{Op: "test", Path: "/metadata/generation", Value: p.generation},
	}
	if !p.hadAnnotations {
		ops = append(ops, jsonPatchOp{Op: "test", Path: "/metadata/annotations", Value: nil})
	}
	if p.revision != "" {
		ops = append(ops, jsonPatchOp{Op: "test", Path: annotationPath(revisionAnnotation), Value: p.revision})
	}
	return ops
}

// holds reports whether m still matches what the patch tests.
func (p precondition) holds(m *metav1.ObjectMeta, revisionAnnotation string) bool {
	return m.UID == p.uid && m.Generation == p.generation && (m.Annotations != nil) == p.hadAnnotations &&
		(p.revision == "" || m.Annotations[revisionAnnotation] == p.revision)
}

// rejected turns the API server's refusal of a rollback patch into a
// Conflict when the tests no longer hold on the live workload, so the
// rollback reads again as after any Conflict. A refusal with the tests still
// holding is about the patch itself and is returned as it is.
func (p precondition) rejected(ctx context.Context, err error, gr schema.GroupResource, name, revisionAnnotation string, live func(context.Context) (*metav1.ObjectMeta, error)) error {
	if !apierrors.IsInvalid(err) {
		return err
	}
	m, gerr := live(ctx)
	if gerr != nil {
		return fmt.Errorf("%w (and reading it again: %w)", err, gerr)
	}
	if p.holds(m, revisionAnnotation) {
		return err
	}
	return apierrors.NewConflict(gr, name, fmt.Errorf("changed since it was read: %w", err))
}

// annotationOps writes want over read key by key: keys whose value is
// already the wanted one are left alone, keys not wanted are removed. With
// no annotations map at all, the map is added whole.
func annotationOps(read, want map[string]string) []any {
	if read == nil {
		if len(want) == 0 {
			return nil
		}
		return []any{jsonPatchOp{Op: "add", Path: "/metadata/annotations", Value: want}}
	}
	var ops []any
	for _, k := range slices.Sorted(maps.Keys(read)) {
		if _, ok := want[k]; !ok {
			ops = append(ops, removeOp{Op: "remove", Path: annotationPath(k)})
		}
	}
	for _, k := range slices.Sorted(maps.Keys(want)) {
		if v, ok := read[k]; !ok || v != want[k] {
			ops = append(ops, jsonPatchOp{Op: "add", Path: annotationPath(k), Value: want[k]})
		}
	}
	return ops
}

// annotationPath is the JSON pointer (RFC 6901) to annotation key k.
func annotationPath(k string) string {
	return "/metadata/annotations/" + strings.NewReplacer("~", "~0", "/", "~1").Replace(k)
}
