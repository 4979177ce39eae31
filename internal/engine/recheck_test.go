package engine

import (
	"context"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/autorollbackd/autorollbackd/internal/actuator"
	"github.com/autorollbackd/autorollbackd/internal/incident"
	"github.com/autorollbackd/autorollbackd/internal/policy"
)

// flagConfigMap creates a ConfigMap of flags in the fixture's namespace.
func (f *fixture) flagConfigMap(t *testing.T, name string, data map[string]string) {
	t.Helper()
	if _, err := f.c.Client.CoreV1().ConfigMaps(f.ns).Create(context.Background(), &corev1.ConfigMap{
		ObjectMeta: metav1.ObjectMeta{Name: name}, Data: data,
	}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
}

// configMapData returns a ConfigMap's data and annotations.
func (f *fixture) configMapData(t *testing.T, name string) (map[string]string, map[string]string) {
	t.Helper()
	cm, err := f.c.Client.CoreV1().ConfigMaps(f.ns).Get(context.Background(), name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return cm.Data, cm.Annotations
}

// An alert names a feature flag that the workload does not list in
// autorollback.io/feature-flags: the label alone never picks the key, the
// plan goes straight to the revisions, and the incident says why.
func TestFeatureFlagNotListedByTheWorkloadRollsBackRevisions(t *testing.T) {
	for _, tc := range []struct {
		name  string
		flags string // the workload's autorollback.io/feature-flags; "" for none
		label string // the alert's feature_flag
		why   string
	}{
		{"the workload lists no flags", "", "FEATURE_NEW_PRICING", "does not list it in its autorollback.io/feature-flags annotation"},
		{"the workload lists other flags", "FEATURE_STATE_MACHINE, FEATURE_SEARCH", "FEATURE_NEW_PRICING", "does not list it"},
		{"the key is no ConfigMap key", "bad/key", "bad/key", "invalid ConfigMap key"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			annotations := map[string]string{AnnotationFeatureFlagConfigMap: "event-service-config"}
			if tc.flags != "" {
				annotations[AnnotationFeatureFlags] = tc.flags
			}
			f := newFixture(t, optedIn, annotations)
			flags := map[string]string{"FEATURE_NEW_PRICING": "true", "FEATURE_STATE_MACHINE": "true"}
			f.flagConfigMap(t, "event-service-config", flags)
			e := f.startEngine(t, policy.DefaultConfig(), 1)
			n := firing(f.ns, "unlisted-flag", time.Now(), map[string]string{"impact": "critical_flow_broken", LabelFeatureFlag: tc.label})
			if _, err := e.Accept(context.Background(), n); err != nil {
				t.Fatal(err)
			}
			inc := e.waitIncident(t, n, incident.StateResolved)
			if len(inc.Actions) != 1 || inc.Actions[0].Kind != actuator.KindRollback || inc.Actions[0].Result == nil ||
				inc.Actions[0].Result.Outcome != actuator.OutcomeApplied {
				t.Fatalf("actions %+v; want one revision rollback\n%s", inc.Actions, inc.Render())
			}
			if data, _ := f.configMapData(t, "event-service-config"); !maps(data, flags) {
				t.Fatalf("flags = %v, want them untouched: %v", data, flags)
			}
			if image, _ := f.image(t); image != "event-service:v1" {
				t.Fatalf("image = %s, want the last good event-service:v1", image)
			}
			if !strings.Contains(inc.Render(), "no feature flag rung: the alert names feature flag") || !strings.Contains(inc.Render(), tc.why) {
				t.Errorf("the incident does not say why the flag was not turned off (%q)\n%s", tc.why, inc.Render())
			}
			if inc.FeatureFlag != nil || !strings.Contains(inc.FeatureFlagSkipped, tc.why) {
				t.Errorf("plan: flag %+v, skipped %q", inc.FeatureFlag, inc.FeatureFlagSkipped)
			}
		})
	}
}

func maps(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if w, ok := b[k]; !ok || w != v {
			return false
		}
	}
	return true
}
