package verify

import (
	"context"
	"fmt"
	"math"
	"strconv"
	"time"

	"github.com/prometheus/common/model"

	"github.com/autorollbackd/autorollbackd/internal/policy"
	"github.com/autorollbackd/autorollbackd/internal/strtemplate"
)

// minQueryTimeout is the least time one query may take before it is
// abandoned; otherwise one query may take one interval.
const minQueryTimeout = 5 * time.Second

// promCheck is a PromQLCheck with its defaults applied and its template
// compiled.
type promCheck struct {
	PromQLCheck
	scope scope
	query *strtemplate.Template
}

// evalKind is the verdict on one evaluation of a promql check.
type evalKind int

const (
	evalNone   evalKind = iota // no evaluation finished
	evalPass                   // the condition held for every sample
	evalFail                   // some sample broke the condition
	evalNoData                 // the result was empty (or only NaN)
	evalError                  // the query failed, or returned a range or a string
)

// compare reports whether value op threshold holds. NaN satisfies only !=,
// as in Go and in PromQL.
func compare(op string, value, threshold float64) bool {
	switch op {
	case "<":
		return value < threshold
	case "<=":
		return value <= threshold
	case ">":
		return value > threshold
	case ">=":
		return value >= threshold
	case "==":
		return value == threshold
	case "!=":
		return value != threshold
	}
	return false
}

func formatValue(f float64) string { return strconv.FormatFloat(f, 'g', -1, 64) }

// series names a sample's series in front of its value, for example
// `http_requests:ratio{deployment="web"}: `; nothing for a series without
// labels, such as the result of sum().
func series(m model.Metric) string {
	if len(m) == 0 {
		return ""
	}
	return m.String() + ": "
}

// evaluate judges one query result: a scalar, or an instant vector every
// sample of which must satisfy the condition. NaN samples, such as the 0/0
// of an error ratio with no traffic, are left out: a result of only NaN is
// no data. A range vector or a string is an error: the query is wrong for a
// check. It has no I/O and no clock, so each branch has a table-test row.
func evaluate(v model.Value, op string, threshold float64) (evalKind, string) {
	th := formatValue(threshold)
	switch r := v.(type) {
	case *model.Scalar:
		f := float64(r.Value)
		switch {
		case math.IsNaN(f):
			return evalNoData, "the query returned NaN"
		case compare(op, f, threshold):
			return evalPass, fmt.Sprintf("%s %s %s", formatValue(f), op, th)
		}
		return evalFail, fmt.Sprintf("%s is not %s %s", formatValue(f), op, th)
	case model.Vector:
		n := 0
		for _, s := range r {
			f := float64(s.Value)
			if math.IsNaN(f) {
				continue
			}
			n++
			if !compare(op, f, threshold) {
				return evalFail, fmt.Sprintf("%s%s is not %s %s", series(s.Metric), formatValue(f), op, th)
			}
		}
		switch {
		case n == 0 && len(r) > 0:
			return evalNoData, "the query returned only NaN"
		case n == 0:
			return evalNoData, "the query returned no data"
		case n == 1:
			for _, s := range r {
				if f := float64(s.Value); !math.IsNaN(f) {
					return evalPass, fmt.Sprintf("%s%s %s %s", series(s.Metric), formatValue(f), op, th)
				}
			}
		}
		return evalPass, fmt.Sprintf("all %d series %s %s", n, op, th)
	case nil:
		return evalNoData, "the query returned no data"
	}
	return evalError, fmt.Sprintf("the query returned a %s; want a scalar or an instant vector", v.Type())
}

// checkPromQL evaluates the condition every interval. Consecutive passing
// evaluations pass the check; a failing one resets the streak, and so do
// an evaluation without data (unless noData says pass) and a query error,
// since neither proves anything. When the timeout passes, the check fails
// if the last evaluation with a verdict failed; otherwise (never any data,
// only query errors, or a streak still too short) it is inconclusive. The
// timeout is extended until floor when that is later.
func (v *Verifier) checkPromQL(ctx context.Context, c *promCheck, target policy.Ref, floor time.Time) (Status, string) {
	query, err := execute(c.query, templateData{Name: target.Name, Namespace: target.Namespace, Kind: string(target.Kind)})
	if err != nil {
		return StatusInconclusive, fmt.Sprintf("Could not build the query: %v.", err)
	}
	timeout, within := v.limit(c.Timeout.Duration, floor)
	ctx, cancel := v.withTimeout(ctx, timeout)
	defer cancel()

	var (
		evals, streak int
		last          evalKind // the last evaluation
		lastDetail    string
		verdict       evalKind // the last evaluation that passed or failed
		verdictDetail string
		sawData       bool
	)
	for {
		start := v.clock.Now()
		qctx, qcancel := v.withTimeout(ctx, max(c.Interval.Duration, minQueryTimeout))
		val, warnings, _, err := v.prom.Query(qctx, query, v.clock.Now())
		qcancel()
		if ctx.Err() != nil {
			break
		}
		evals++
		if len(warnings) > 0 {
			v.logger.Debug("promql check query warnings", "check", c.Name, "namespace", target.Namespace, "workload", target.Name, "warnings", warnings)
		}
		if err != nil {
			last, lastDetail = evalError, fmt.Sprintf("the query failed: %v", err)
		} else {
			last, lastDetail = evaluate(val, c.Op, c.Threshold)
			if last == evalPass || last == evalFail {
				sawData = true
			}
			if last == evalNoData {
				switch c.NoData {
				case NoDataPass:
					last, lastDetail = evalPass, lastDetail+" (noData: pass)"
				case NoDataFail:
					last, lastDetail = evalFail, lastDetail+" (noData: fail)"
				}
			}
		}
		if last == evalPass || last == evalFail {
			verdict, verdictDetail = last, lastDetail
		}
		if last == evalPass {
			streak++
			if streak >= c.Consecutive {
				return StatusPass, fmt.Sprintf("%s held in %d consecutive evaluations: %s.", c.condition(), streak, lastDetail)
			}
		} else {
			streak = 0
		}
		v.logger.Debug("promql check evaluated", "check", c.Name, "namespace", target.Namespace, "workload", target.Name,
			"evaluation", evals, "streak", streak, "detail", lastDetail)
		// Evaluations start at least one interval apart, also after a slow
		// query, so that a streak spans (consecutive-1) intervals.
		if !v.sleep(ctx, c.Interval.Duration-v.clock.Since(start)) {
			break
		}
	}

	if context.Cause(ctx) != errTimeout {
		if evals == 0 {
			return StatusInconclusive, "Verification was cancelled before the first evaluation finished."
		}
		return StatusInconclusive, fmt.Sprintf("Verification was cancelled after %d evaluations; last: %s.", evals, lastDetail)
	}
	switch {
	case evals == 0:
		return StatusInconclusive, fmt.Sprintf("No evaluation finished within %s.", within)
	case verdict == evalFail && last == evalFail:
		return StatusFail, fmt.Sprintf("%s not met within %s (%d evaluations): %s.", c.condition(), within, evals, lastDetail)
	case verdict == evalFail:
		return StatusFail, fmt.Sprintf("%s not met within %s (%d evaluations): last data: %s; then %s.", c.condition(), within, evals, verdictDetail, lastDetail)
	case !sawData && verdict == evalNone:
		return StatusInconclusive, fmt.Sprintf("No data within %s (%d evaluations): %s.", within, evals, lastDetail)
	case last == evalPass:
		return StatusInconclusive, fmt.Sprintf("%s held in only %d of the %d consecutive evaluations required within %s: %s.", c.condition(), streak, c.Consecutive, within, lastDetail)
	}
	return StatusInconclusive, fmt.Sprintf("%s not proven within %s (%d evaluations): last: %s.", c.condition(), within, evals, lastDetail)
}

// condition renders the condition for messages, for example
// "Condition < 0.01".
func (c *promCheck) condition() string {
	return fmt.Sprintf("Condition %s %s", c.Op, formatValue(c.Threshold))
}
