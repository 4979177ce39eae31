package policy_test

import (
	"strings"
	"testing"

	"github.com/autorollbackd/autorollbackd/internal/policy"
)

// TestClusterLabel: with clusterLabel set, an alert about another cluster,
// or one that names none, is ignored before anything else, by Screen as by
// Evaluate; an alert about this cluster goes on to the other checks.
func TestClusterLabel(t *testing.T) {
	cfg := policy.DefaultConfig()
	cfg.ClusterLabel = "cluster"
	p, err := policy.Compile(cfg, policy.WithCluster("prod-eu-1"))
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name    string
		cluster *string
		outcome policy.Outcome
		reason  policy.Reason
		detail  string
	}{
		{"this cluster", ptr("prod-eu-1"), policy.OutcomeRollback, policy.ReasonCriterionMet, `cluster="prod-eu-1" is this cluster`},
		{"another cluster", ptr("prod-us-1"), policy.OutcomeIgnore, policy.ReasonOtherCluster, `cluster="prod-us-1" is another cluster; this is "prod-eu-1"`},
		{"no cluster label", nil, policy.OutcomeIgnore, policy.ReasonOtherCluster, `the alert has no cluster label; this is cluster "prod-eu-1"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			in := baseInput()
			if tc.cluster != nil {
				in.Alert.Labels["cluster"] = *tc.cluster
			}
			d := p.Evaluate(in)
			if d.Outcome != tc.outcome || d.Reason != tc.reason {
				t.Errorf("Evaluate = %s %s, want %s %s\n%s", d.Outcome, d.Reason, tc.outcome, tc.reason, d)
			}
			if len(d.Checks) == 0 || d.Checks[0].Name != "this cluster" || d.Checks[0].Detail != tc.detail {
				t.Errorf("first check = %+v, want this cluster: %s", d.Checks[0], tc.detail)
			}
			s := p.Screen(in)
			if tc.outcome == policy.OutcomeIgnore && (s.Outcome != policy.OutcomeIgnore || s.Reason != policy.ReasonOtherCluster) {
				t.Errorf("Screen = %s %s, want ignore other_cluster", s.Outcome, s.Reason)
			}
			if tc.outcome != policy.OutcomeIgnore && s.Outcome != "" {
				t.Errorf("Screen = %s %s, want it to pass", s.Outcome, s.Reason)
			}
		})
	}

	// Without clusterLabel, the label means nothing.
	plain, err := policy.Compile(policy.DefaultConfig(), policy.WithCluster("prod-eu-1"))
	if err != nil {
		t.Fatal(err)
	}
	in := baseInput()
	in.Alert.Labels["cluster"] = "prod-us-1"
	if d := plain.Evaluate(in); d.Outcome != policy.OutcomeRollback {
		t.Errorf("without clusterLabel: %s %s, want rollback", d.Outcome, d.Reason)
	}

	// clusterLabel needs this cluster's name.
	if _, err := policy.Compile(cfg); err == nil || !strings.Contains(err.Error(), "clusterLabel: is set, so cluster.name must name this cluster") {
		t.Errorf("Compile without a cluster name = %v, want an error naming clusterLabel", err)
	}
}
