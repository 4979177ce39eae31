package webhook

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"slices"
	"testing"
)

func TestReceiptRefusals(t *testing.T) {
	var r Receipt
	if r.Refusals.logAttrs() != nil || r.Refusals.Count("refuse", "not_opted_in") != 0 || r.Refusals.Targets() != nil {
		t.Fatal("a receipt without refusals has something to log")
	}
	var named []string
	for i := range 5 {
		target := fmt.Sprintf("Deployment shop/w%d", i)
		if !r.WantsTarget() {
			target = ""
		} else {
			named = append(named, target)
		}
		r.Refuse("refuse", "not_opted_in", target)
	}
	r.Refuse("ignore", "other_cluster", "")
	r.Refuse("refuse", "no_target", "")
	r.Accepted = 2

	if r.Refused != 7 || r.Counts() != (Receipt{Accepted: 2, Refused: 7}) {
		t.Errorf("counts %+v, want 2 accepted and 7 refused", r.Counts())
	}
	for _, c := range []struct {
		outcome, reason string
		want            int
	}{{"refuse", "not_opted_in", 5}, {"ignore", "other_cluster", 1}, {"refuse", "no_target", 1}, {"refuse", "namespace_denied", 0}} {
		if got := r.Refusals.Count(c.outcome, c.reason); got != c.want {
			t.Errorf("Count(%s, %s) = %d, want %d", c.outcome, c.reason, got, c.want)
		}
	}
	want := []string{"Deployment shop/w0", "Deployment shop/w1", "Deployment shop/w2"}
	if got := r.Refusals.Targets(); !slices.Equal(got, want) || !slices.Equal(named, want) {
		t.Errorf("targets %q (named %q), want the first %d: %q", got, named, MaxRefusedTargets, want)
	}

	var buf bytes.Buffer
	slog.New(slog.NewJSONHandler(&buf, nil)).LogAttrs(context.Background(), slog.LevelInfo, "notification accepted", r.Refusals.logAttrs()...)
	var line struct {
		Reasons map[string]int `json:"refused_reasons"`
		Targets string         `json:"refused_targets"`
	}
	if err := json.Unmarshal(buf.Bytes(), &line); err != nil {
		t.Fatalf("log line %s: %v", buf.Bytes(), err)
	}
	wantReasons := map[string]int{"refuse/not_opted_in": 5, "ignore/other_cluster": 1, "refuse/no_target": 1}
	if len(line.Reasons) != len(wantReasons) {
		t.Errorf("refused_reasons %v, want %v", line.Reasons, wantReasons)
	}
	for k, v := range wantReasons {
		if line.Reasons[k] != v {
			t.Errorf("refused_reasons %v, want %v", line.Reasons, wantReasons)
		}
	}
	if line.Targets != "Deployment shop/w0, Deployment shop/w1, Deployment shop/w2" {
		t.Errorf("refused_targets %q", line.Targets)
	}
}
