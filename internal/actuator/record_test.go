package actuator

import (
	"encoding/json"
	"fmt"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"

	"github.com/autorollbackd/autorollbackd/internal/kinds"
	"github.com/autorollbackd/autorollbackd/internal/policy"
	"github.com/autorollbackd/autorollbackd/internal/workload"
)

// A rollback recorded by an earlier daemon under autorollback.io/incident
// is still recognised as done, and the next rollback moves the record to
// autorollback.io/rolled-back-for.
func TestRollbackRecordKey(t *testing.T) {
	req := Request{Incident: "deployment/ns/svc@2"}
	for _, tc := range []struct {
		name string
		ann  map[string]string
		done bool
	}{
		{"recorded under the old key", map[string]string{kinds.AnnotationIncident: req.Incident, kinds.AnnotationRolledBackFrom: "2", kinds.AnnotationRolledBackTo: "1"}, true},
		{"recorded under the new key", map[string]string{kinds.AnnotationRolledBackFor: req.Incident, kinds.AnnotationRolledBackFrom: "2", kinds.AnnotationRolledBackTo: "1"}, true},
		{"a newer rollback under the new key", map[string]string{kinds.AnnotationRolledBackFor: "deployment/ns/svc@4", kinds.AnnotationIncident: req.Incident, kinds.AnnotationRolledBackFrom: "2", kinds.AnnotationRolledBackTo: "1"}, false},
		{"another revision", map[string]string{kinds.AnnotationIncident: req.Incident, kinds.AnnotationRolledBackFrom: "3", kinds.AnnotationRolledBackTo: "1"}, false},
	} {
		if got := alreadyDone(tc.ann, req, 2, 1); got != tc.done {
			t.Errorf("%s: alreadyDone = %v, want %v", tc.name, got, tc.done)
		}
	}

	ops, body := undoPatchOps(t,
		map[string]string{kinds.AnnotationDeploymentRevision: "2", kinds.AnnotationIncident: "deployment/ns/svc@1"},
		// The controller copied the Deployment's annotations of the time.
		map[string]string{kinds.AnnotationDeploymentRevision: "1", kinds.AnnotationIncident: "deployment/ns/svc@0"},
		map[string]string{kinds.AnnotationRolledBackFor: req.Incident})
	var removedOld, wroteNew bool
	for _, op := range ops {
		switch {
		case op.Op == "remove" && op.Path == "/metadata/annotations/autorollback.io~1incident":
			removedOld = true
		case op.Op == "add" && op.Path == "/metadata/annotations/autorollback.io~1rolled-back-for" && op.Value == req.Incident:
			wroteNew = true
		case op.Path == "/metadata/annotations/autorollback.io~1incident":
			t.Errorf("patch writes the old key: %+v", op)
		}
	}
	if !removedOld || !wroteNew {
		t.Errorf("patch %s: removes the old key %v, writes the new one %v; want both", body, removedOld, wroteNew)
	}
}

// The record of a rollback taken before any other record
// (kinds.AnnotationActed) is written with that rollback only: a rollback
// without one removes it, also when the revision restored carries a copy
// from its own time.
func TestActedRecordOnlyWithItsRollback(t *testing.T) {
	for _, tc := range []struct {
		name, acted string
		want        string // the op on the annotation: "remove", or "add" of acted
	}{
		{"without", "", "remove"},
		{"with", `{"incident":"new"}`, "add"},
	} {
		rec := map[string]string{kinds.AnnotationRolledBackFor: "deployment/ns/svc@2"}
		if tc.acted != "" {
			rec[kinds.AnnotationActed] = tc.acted
		}
		ops, _ := undoPatchOps(t,
			map[string]string{kinds.AnnotationDeploymentRevision: "2", kinds.AnnotationActed: `{"incident":"last"}`},
			map[string]string{kinds.AnnotationDeploymentRevision: "1", kinds.AnnotationActed: `{"incident":"older"}`},
			rec)
		var got []string
		for _, op := range ops {
			if op.Path == "/metadata/annotations/autorollback.io~1acted" {
				got = append(got, op.Op+" "+fmt.Sprint(op.Value))
			}
		}
		want := "remove <nil>"
		if tc.want == "add" {
			want = "add " + tc.acted
		}
		if len(got) != 1 || got[0] != want {
			t.Errorf("%s it: ops on %s = %q, want [%q]", tc.name, kinds.AnnotationActed, got, want)
		}
	}
}

type patchOp struct {
	Op    string `json:"op"`
	Path  string `json:"path"`
	Value any    `json:"value"`
}

// undoPatchOps returns the ops, and the body, of the patch that rolls
// Deployment ns/svc at revision 2, with annotations current, back to its
// revision 1, whose ReplicaSet carries annotations old, writing record.
func undoPatchOps(t *testing.T, current, old, record map[string]string) ([]patchOp, []byte) {
	t.Helper()
	d := &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: "svc", Namespace: "ns", UID: "d-uid", Generation: 3, Annotations: current},
		Spec:       appsv1.DeploymentSpec{Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "svc"}}},
	}
	controller := true
	rs := &appsv1.ReplicaSet{ObjectMeta: metav1.ObjectMeta{
		Name: "svc-1", Namespace: "ns", Labels: map[string]string{"app": "svc"}, Annotations: old,
		OwnerReferences: []metav1.OwnerReference{{APIVersion: "apps/v1", Kind: "Deployment", Name: "svc", UID: "d-uid", Controller: &controller}},
	}}
	c := fake.NewClientset(d, rs)
	ad, err := workload.For(policy.KindDeployment)
	if err != nil {
		t.Fatal(err)
	}
	o, err := ad.Get(t.Context(), c, "ns", "svc")
	if err != nil {
		t.Fatal(err)
	}
	history, err := ad.History(t.Context(), c, o)
	if err != nil {
		t.Fatal(err)
	}
	target, ok := workload.Numbered(history, 1)
	if !ok {
		t.Fatalf("no revision 1 in %v", history)
	}
	template, _, err := o.UndoTemplate(target)
	if err != nil {
		t.Fatal(err)
	}
	body, err := undoPatch(o, target, template, record)
	if err != nil {
		t.Fatal(err)
	}
	var ops []patchOp
	if err := json.Unmarshal(body, &ops); err != nil {
		t.Fatal(err)
	}
	return ops, body
}
