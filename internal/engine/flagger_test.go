package engine

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/util/retry"
	"k8s.io/utils/clock"

	"github.com/autorollbackd/autorollbackd/internal/actuator"
	"github.com/autorollbackd/autorollbackd/internal/incident"
	"github.com/autorollbackd/autorollbackd/internal/kinds"
	"github.com/autorollbackd/autorollbackd/internal/policy"
	"github.com/autorollbackd/autorollbackd/internal/testenv"
)

// flaggerPrimary creates, beside the fixture's Deployment (the Canary's
// target), the primary Flagger would make of it: event-service-primary,
// owned by the Canary event-service, at revision 2 with the bad image, as
// after a promotion. The Canary CRD is not installed: the API server does
// not check that an owner exists, and the garbage collector leaves a
// dependent alone while its owner's kind cannot be resolved.
func (f *fixture) flaggerPrimary(t *testing.T) *appsv1.Deployment {
	t.Helper()
	ctx := context.Background()
	api := f.c.Client.AppsV1().Deployments(f.ns)
	yes, replicas := true, int32(2)
	labels := map[string]string{"app": "event-service-primary"}
	d, err := api.Create(ctx, &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{
			Name: "event-service-primary", Labels: map[string]string{policy.DefaultOptInLabel: "true"},
			// As Flagger writes it: a controller reference to the Canary.
			OwnerReferences: []metav1.OwnerReference{{APIVersion: "flagger.app/v1beta1", Kind: "Canary", Name: "event-service",
				UID: types.UID("5c6e2a10-0000-4000-8000-00000000ca11"), Controller: &yes, BlockOwnerDeletion: &yes}},
		},
		Spec: appsv1.DeploymentSpec{
			Replicas: &replicas,
			Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: labels},
				Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "app", Image: "event-service:v1"}}},
			},
		},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	f.waitPrimaryRevision(t, "1")
	// The promotion: Flagger copies the target's template onto the primary.
	if err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
		if d, err = api.Get(ctx, d.Name, metav1.GetOptions{}); err != nil {
			return err
		}
		d.Spec.Template.Spec.Containers[0].Image = "event-service:v2-bad"
		_, err = api.Update(ctx, d, metav1.UpdateOptions{})
		return err
	}); err != nil {
		t.Fatal(err)
	}
	return f.waitPrimaryRevision(t, "2")
}

func (f *fixture) waitPrimaryRevision(t *testing.T, rev string) *appsv1.Deployment {
	t.Helper()
	var d *appsv1.Deployment
	testenv.Eventually(t, 30*time.Second, "primary at revision "+rev, func(ctx context.Context) (bool, string) {
		var err error
		if d, err = f.c.Client.AppsV1().Deployments(f.ns).Get(ctx, "event-service-primary", metav1.GetOptions{}); err != nil {
			return false, err.Error()
		}
		return d.Annotations[kinds.AnnotationDeploymentRevision] == rev, fmt.Sprintf("revision %q", d.Annotations[kinds.AnnotationDeploymentRevision])
	})
	return d
}

// TestFlaggerPrimaryIsNotTouched: an alert naming a Flagger Canary's
// primary, which would otherwise be rolled back, escalates with its own
// reason and the primary is left as it is, also under pause-and-undo.
func TestFlaggerPrimaryIsNotTouched(t *testing.T) {
	f := newFixture(t, optedIn, nil)
	primary := f.flaggerPrimary(t)
	cfg := policy.DefaultConfig()
	cfg.GitOps.Mode = policy.GitOpsPauseAndUndo
	e := f.startEngine(t, cfg, 1)
	n := firing(f.ns, "flagger-1", time.Now(), map[string]string{"impact": "service_down", "deployment": "event-service-primary"})
	if _, err := e.Accept(context.Background(), n); err != nil {
		t.Fatal(err)
	}
	inc := e.waitIncident(t, n, incident.StateEscalated)
	if inc.Target.Name != "event-service-primary" || inc.Decision.Outcome != policy.OutcomeEscalate ||
		inc.Decision.Reason != policy.ReasonFlaggerManaged || len(inc.Actions) != 0 {
		t.Fatalf("target %s, decision %s/%s, %d actions; want event-service-primary, escalate/flagger_managed and none\n%s",
			inc.Target, inc.Decision.Outcome, inc.Decision.Reason, len(inc.Actions), inc.Render())
	}
	// Flagger's part is the only guard that failed: otherwise it would be a rollback.
	for _, c := range inc.Decision.Checks {
		if !c.Passed && c.Reason != policy.ReasonFlaggerManaged {
			t.Errorf("check %q failed too: %s", c.Name, c.Detail)
		}
	}
	if !strings.Contains(inc.Decision.Message, "Flagger Canary event-service") {
		t.Errorf("message %q does not name the Canary", inc.Decision.Message)
	}
	testenv.Eventually(t, 30*time.Second, "on-call paged at once", func(context.Context) (bool, string) {
		pages := e.messages.find("page")
		return len(pages) == 1 && pages[0]["level"] == "oncall", fmt.Sprint(pages)
	})
	got, err := f.c.Client.AppsV1().Deployments(f.ns).Get(context.Background(), "event-service-primary", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	// Its status moves as its pods start; its spec and metadata do not.
	if got.Spec.Template.Spec.Containers[0].Image != "event-service:v2-bad" || got.Generation != primary.Generation ||
		fmt.Sprint(got.Annotations) != fmt.Sprint(primary.Annotations) || len(got.OwnerReferences) != 1 {
		t.Fatalf("the primary changed: %s, generation %d (was %d), annotations %v (were %v), owners %v",
			got.Spec.Template.Spec.Containers[0].Image, got.Generation, primary.Generation, got.Annotations, primary.Annotations, got.OwnerReferences)
	}
}

// workloadFacts is a FactSource that answers with one workload.
type workloadFacts struct{ w *policy.Workload }

func (s workloadFacts) Facts(context.Context, policy.Ref) (*policy.Workload, error) { return s.w, nil }

// TestRecheckRefusesFlaggerPrimary: a workload that has become a Flagger
// Canary's primary since the decision is refused at the action, whatever
// the action.
func TestRecheckRefusesFlaggerPrimary(t *testing.T) {
	p, err := policy.Compile(policy.DefaultConfig())
	if err != nil {
		t.Fatal(err)
	}
	ref := policy.Ref{Kind: policy.KindDeployment, Namespace: "shop", Name: "web-primary"}
	inc := &incident.Incident{Target: ref, Alerts: []incident.Alert{{Fingerprint: "f-1", Name: "WebDown", StartsAt: time.Now()}}}
	for _, tc := range []struct {
		name   string
		canary string
		reason string
	}{
		{"owned by a Canary", "web", string(policy.ReasonFlaggerManaged)},
		{"not owned", "", ""},
	} {
		w := &policy.Workload{Ref: ref, Revision: 2, Labels: map[string]string{policy.DefaultOptInLabel: "true"}, FlaggerCanary: tc.canary}
		e := &Engine{opts: Options{Policy: func() *policy.Policy { return p }, Live: workloadFacts{w}, Clock: clock.RealClock{}}}
		for _, kind := range []actuator.Kind{actuator.KindRollback, actuator.KindScaleBounce} {
			t.Run(tc.name+", "+string(kind), func(t *testing.T) {
				_, no, err := e.recheck(context.Background(), inc, kind)
				switch {
				case err != nil:
					t.Fatal(err)
				case tc.reason == "" && no != nil:
					t.Fatalf("refused %+v; want no refusal", no)
				case tc.reason != "" && (no == nil || no.reason != tc.reason || !strings.Contains(no.message, "Flagger Canary web,")):
					t.Fatalf("refusal %+v; want %s naming the Canary", no, tc.reason)
				}
			})
		}
	}
}
