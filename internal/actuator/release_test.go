//go:build helm

package actuator

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"testing"
	"time"

	"helm.sh/helm/v3/pkg/release"
	"helm.sh/helm/v3/pkg/storage"
	"helm.sh/helm/v3/pkg/storage/driver"
	appsv1 "k8s.io/api/apps/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/autorollbackd/autorollbackd/internal/helm"
	"github.com/autorollbackd/autorollbackd/internal/kinds"
	"github.com/autorollbackd/autorollbackd/internal/policy"
	"github.com/autorollbackd/autorollbackd/internal/testenv"
)

type releaseFixture struct {
	*rollbackFixture
	chart string
	helm  *helm.Client
}

func newReleaseFixture(t *testing.T) *releaseFixture {
	t.Helper()
	f := &releaseFixture{rollbackFixture: newRollbackFixture(t), chart: testenv.HelmChart(t)}
	f.helm = &helm.Client{REST: f.c.REST, Client: f.c.Client, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))}
	f.act.releases = f.helm
	return f
}

// deploy installs or upgrades release `name` to image with the real helm
// binary and waits until the Deployment is observed at revision.
func (f *releaseFixture) deploy(t *testing.T, name, image string, revision int64) {
	t.Helper()
	labels, err := json.Marshal(map[string]string{kinds.LabelEnabled: "true"})
	if err != nil {
		t.Fatal(err)
	}
	f.c.Helm(t, "upgrade", "--install", name, f.chart, "--namespace", f.ns, "--set", "image="+image, "--set-json", "labels="+string(labels))
	f.waitDeployment(t, name, revision)
}

// setImageOutsideHelm changes the Deployment's image as kubectl set image
// would, and waits for its next revision.
func (f *releaseFixture) setImageOutsideHelm(t *testing.T, name, image string, revision int64) {
	t.Helper()
	patch := fmt.Sprintf(`{"spec":{"template":{"spec":{"containers":[{"name":"app","image":%q}]}}}}`, image)
	if _, err := f.c.Client.AppsV1().Deployments(f.ns).Patch(context.Background(), name, types.StrategicMergePatchType, []byte(patch), metav1.PatchOptions{}); err != nil {
		t.Fatal(err)
	}
	f.waitDeployment(t, name, revision)
}

func (f *releaseFixture) request(name, incident string) Request {
	return Request{Target: policy.Ref{Kind: kinds.KindDeployment, Namespace: f.ns, Name: name}, Incident: incident,
		Fingerprint: "fp", Why: "alert WebDown, rule service-down (service_down)"}
}

func (f *releaseFixture) image(t *testing.T, name string) string {
	t.Helper()
	d, err := f.c.Client.AppsV1().Deployments(f.ns).Get(context.Background(), name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return d.Spec.Template.Spec.Containers[0].Image
}

func (f *releaseFixture) deploymentOf(t *testing.T, name string) *appsv1.Deployment {
	t.Helper()
	d, err := f.c.Client.AppsV1().Deployments(f.ns).Get(context.Background(), name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// TestRollbackReleaseRestoresTheGoodRevision: a release upgraded to a bad
// image is rolled back, with the real Helm history showing a rollback to
// the good revision, the Deployment back at the good template, the record
// on it, and a second attempt rolling back nothing.
func TestRollbackReleaseRestoresTheGoodRevision(t *testing.T) {
	f := newReleaseFixture(t)
	f.deploy(t, "web", "web:v1", 1)
	f.deploy(t, "web", "web:v2-bad", 2)
	// A third revision of the release that leaves the Deployment's
	// template alone: the revision to return to is still 1.
	f.c.Helm(t, "upgrade", "web", f.chart, "--namespace", f.ns, "--reuse-values", "--set-string", "unused=x")
	if got := len(f.c.HelmHistory(t, f.ns, "web")); got != 3 {
		t.Fatalf("release has %d revisions before the rollback, want 3", got)
	}
	req := f.request("web", "deployment/"+f.ns+"/web@2")

	res, err := f.act.RollbackRelease(context.Background(), req, 2, 1)
	if err != nil {
		t.Fatal(err)
	}
	want := ReleaseRollback{Namespace: f.ns, Name: "web", From: 3, To: 1, Revision: 4}
	if res.Outcome != OutcomeApplied || res.Release == nil || *res.Release != want {
		t.Fatalf("result %+v (release %v), want applied, release %v", res, res.Release, want)
	}

	hist := f.c.HelmHistory(t, f.ns, "web")
	last := hist[len(hist)-1]
	if len(hist) != 4 || last.Revision != 4 || last.Description != "Rollback to 1" || last.Status != "deployed" {
		t.Fatalf("helm history after the rollback: %+v; want revision 4, deployed, \"Rollback to 1\"", hist)
	}
	if hist[2].Status != "superseded" {
		t.Errorf("revision 3 is %s after the rollback, want superseded", hist[2].Status)
	}
	if got := f.image(t, "web"); got != "web:v1" {
		t.Errorf("Deployment's image after the rollback: %s, want web:v1", got)
	}
	d := f.waitDeployment(t, "web", 3)
	for k, v := range map[string]string{
		kinds.AnnotationRolledBackFor:     req.Incident,
		kinds.AnnotationRolledBackFrom:    "2",
		kinds.AnnotationRolledBackTo:      "1",
		kinds.AnnotationRolledBackRelease: want.String(),
	} {
		if d.Annotations[k] != v {
			t.Errorf("annotation %s = %q, want %q", k, d.Annotations[k], v)
		}
	}

	again, err := f.act.RollbackRelease(context.Background(), req, 2, 1)
	if err != nil || again.Outcome != OutcomeNoop || !again.Resumed {
		t.Fatalf("second attempt: %+v, %v; want a resumed no-op", again, err)
	}
	_, err = f.act.RollbackRelease(context.Background(), f.request("web", "deployment/"+f.ns+"/web@2-other"), 2, 1)
	if FailureReason(err) != ReasonChanged {
		t.Fatalf("another incident's attempt: %v; want reason changed", err)
	}
	if n := len(f.c.HelmHistory(t, f.ns, "web")); n != 4 {
		t.Fatalf("release has %d revisions after the second attempts, want still 4", n)
	}
}

// TestRollbackReleaseRefuses: the release rollback escalates, changing
// nothing, when no revision of the release carries the template to restore,
// when the workload was changed outside Helm, and when the release is not
// deployed.
func TestRollbackReleaseRefuses(t *testing.T) {
	for _, tc := range []struct {
		name     string
		setup    func(t *testing.T, f *releaseFixture)
		from, to int64
		want     Reason
	}{
		{"good template never released", func(t *testing.T, f *releaseFixture) {
			f.deploy(t, "web", "web:v1", 1)
			f.setImageOutsideHelm(t, "web", "web:v1-hotfix", 2)
			f.deploy(t, "web", "web:v2-bad", 3)
		}, 3, 2, ReasonNoReleaseRevision},
		{"workload changed outside Helm", func(t *testing.T, f *releaseFixture) {
			f.deploy(t, "web", "web:v1", 1)
			f.deploy(t, "web", "web:v2", 2)
			f.setImageOutsideHelm(t, "web", "web:v3-manual", 3)
		}, 3, 2, ReasonReleaseDrifted},
		{"release pending", func(t *testing.T, f *releaseFixture) {
			f.deploy(t, "web", "web:v1", 1)
			f.deploy(t, "web", "web:v2-bad", 2)
			store := storage.Init(driver.NewSecrets(f.c.Client.CoreV1().Secrets(f.ns)))
			last, err := store.Last("web")
			if err != nil {
				t.Fatal(err)
			}
			last.Info.Status = release.StatusPendingUpgrade
			if err := store.Update(last); err != nil {
				t.Fatal(err)
			}
		}, 2, 1, ReasonReleaseNotDeployed},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newReleaseFixture(t)
			tc.setup(t, f)
			before := f.c.HelmHistory(t, f.ns, "web")
			image := f.image(t, "web")
			_, err := f.act.RollbackRelease(context.Background(), f.request("web", "i"), tc.from, tc.to)
			if got := FailureReason(err); got != tc.want || got.Retryable() {
				t.Fatalf("RollbackRelease: %v (reason %s); want reason %s, not retryable", err, got, tc.want)
			}
			if after := f.c.HelmHistory(t, f.ns, "web"); len(after) != len(before) {
				t.Errorf("release went from %d to %d revisions; want none added", len(before), len(after))
			}
			if got := f.image(t, "web"); got != image {
				t.Errorf("image changed from %s to %s", image, got)
			}
			if _, ok := f.deploymentOf(t, "web").Annotations[kinds.AnnotationRolledBackFor]; ok {
				t.Error("a refused rollback recorded itself on the workload")
			}
		})
	}
}

// TestReleaseRollbackKeepsToThePlannedRevision: the Helm client refuses a
// rollback planned on a revision that is no longer the release's newest.
func TestReleaseRollbackKeepsToThePlannedRevision(t *testing.T) {
	f := newReleaseFixture(t)
	f.deploy(t, "web", "web:v1", 1)
	f.deploy(t, "web", "web:v2-bad", 2)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	err := f.helm.Rollback(ctx, f.ns, "web", 1, 1, false)
	if !errors.Is(err, helm.ErrMoved) {
		t.Fatalf("rollback planned on revision 1 of a release at 2: %v; want ErrMoved", err)
	}
	if n := len(f.c.HelmHistory(t, f.ns, "web")); n != 2 {
		t.Fatalf("release has %d revisions, want still 2", n)
	}
	if err := f.helm.Rollback(ctx, f.ns, "web", 2, 1, true); err != nil {
		t.Fatalf("dry run: %v", err)
	}
	if n := len(f.c.HelmHistory(t, f.ns, "web")); n != 2 {
		t.Fatalf("a dry run left %d revisions, want still 2", n)
	}
}
