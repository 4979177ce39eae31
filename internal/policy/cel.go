package policy

import (
	"errors"
	"fmt"
	"path"
	"reflect"
	"strings"
	"time"

	"github.com/google/cel-go/cel"
	"github.com/google/cel-go/ext"
)

// Limits on rule conditions. A condition is configuration, not user input,
// but a typo such as a nested comprehension must not stall the daemon.
const (
	celCostLimit          = 100_000 // about a millisecond of evaluation
	celExpressionMaxChars = 10_000
)

// celAlert and celWorkload are what a rule condition sees as `alert` and
// `workload`. They are Go structs declared to CEL as object types, rather
// than maps of dyn, so that a misspelt field (alert.lables) or a comparison
// of the wrong types is a config error at Compile time rather than a
// rule_error on every alert.
type celAlert struct {
	Labels      map[string]string `cel:"labels"`
	Annotations map[string]string `cel:"annotations"`
	Status      string            `cel:"status"`
	Fingerprint string            `cel:"fingerprint"`
	StartsAt    time.Time         `cel:"startsAt"`
}

type celWorkload struct {
	Kind             string            `cel:"kind"`
	Namespace        string            `cel:"namespace"`
	Name             string            `cel:"name"`
	Labels           map[string]string `cel:"labels"`
	Annotations      map[string]string `cel:"annotations"`
	Revision         int64             `cel:"revision"`
	RolloutStartedAt time.Time         `cel:"rolloutStartedAt"`
}

func newCELEnv() (*cel.Env, error) {
	alertType := reflect.TypeFor[celAlert]()
	workloadType := reflect.TypeFor[celWorkload]()
	env, err := cel.NewEnv(
		ext.NativeTypes(alertType, workloadType, ext.ParseStructTags(true)),
		cel.Variable("alert", cel.ObjectType(celTypeName(alertType))),
		cel.Variable("workload", cel.ObjectType(celTypeName(workloadType))),
		cel.Variable("now", cel.TimestampType),
		cel.ParserExpressionSizeLimit(celExpressionMaxChars),
	)
	if err != nil {
		return nil, fmt.Errorf("create CEL environment: %w", err)
	}
	return env, nil
}

// celTypeName is the name NativeTypes gives a Go struct: the last element of
// its package path, a dot and its type name.
func celTypeName(t reflect.Type) string { return path.Base(t.PkgPath()) + "." + t.Name() }

func compileCEL(env *cel.Env, src string) (cel.Program, error) {
	ast, iss := env.Compile(src)
	if iss.Err() != nil {
		return nil, issuesError(iss)
	}
	if !ast.OutputType().IsExactType(cel.BoolType) {
		return nil, fmt.Errorf("must be a bool expression, got %s", ast.OutputType())
	}
	prg, err := env.Program(ast, cel.CostLimit(celCostLimit))
	if err != nil {
		return nil, fmt.Errorf("build program: %w", err)
	}
	return prg, nil
}

// evalWhen runs a rule condition. Any error, including the cost limit and a
// missing map key, is returned: the caller escalates rather than guesses.
func evalWhen(prg cel.Program, in Input) (bool, error) {
	vars := map[string]any{
		"alert": celAlert{
			Labels:      in.Alert.Labels,
			Annotations: in.Alert.Annotations,
			Status:      in.Alert.Status,
			Fingerprint: in.Alert.Fingerprint,
			StartsAt:    in.Alert.StartsAt,
		},
		"now": in.Now,
	}
	w := celWorkload{Kind: string(in.Target.Kind), Namespace: in.Target.Namespace, Name: in.Target.Name}
	if in.Workload != nil {
		w.Labels = in.Workload.Labels
		w.Annotations = in.Workload.Annotations
		w.Revision = in.Workload.Revision
		w.RolloutStartedAt = in.Workload.RolloutStartedAt
	}
	vars["workload"] = w
	out, _, err := prg.Eval(vars)
	if err != nil {
		return false, err
	}
	b, ok := out.Value().(bool)
	if !ok {
		return false, fmt.Errorf("condition returned %s, not a bool", out.Type())
	}
	return b, nil
}

// issuesError puts CEL's compile errors on one line, "line:column: message"
// each, because configuration errors are reported one per line; CEL's own
// rendering adds the source and a caret on two more lines.
func issuesError(iss *cel.Issues) error {
	const maxShown = 3
	errs := iss.Errors()
	var msgs []string
	for i, e := range errs {
		if i == maxShown {
			msgs = append(msgs, fmt.Sprintf("and %d more", len(errs)-maxShown))
			break
		}
		msgs = append(msgs, fmt.Sprintf("%d:%d: %s", e.Location.Line(), e.Location.Column()+1, e.Message))
	}
	return errors.New(strings.Join(msgs, "; "))
}
