package strtemplate_test

import (
	"errors"
	"io"
	"regexp"
	"strings"
	"testing"
	"text/template"
	"time"

	"github.com/autorollbackd/autorollbackd/internal/policy"
	"github.com/autorollbackd/autorollbackd/internal/strtemplate"
)

// alert is the data of the policy's target templates.
type alert = policy.Alert

// workload has the shape of verify's template data.
type workload struct{ Name, Namespace, Kind string }

func (w workload) TemplateField(name string) (any, bool) {
	switch name {
	case "Name":
		return w.Name, true
	case "Namespace":
		return w.Namespace, true
	case "Kind":
		return w.Kind, true
	}
	return nil, false
}

func reReplaceAll(pattern, repl, text string) (string, error) {
	re, err := regexp.Compile(pattern)
	if err != nil {
		return "", err
	}
	return re.ReplaceAllString(text, repl), nil
}

// The same functions for both evaluators, as the policy defines them.
var (
	goFuncs = template.FuncMap{
		"toLower":      strings.ToLower,
		"toUpper":      strings.ToUpper,
		"trimSpace":    strings.TrimSpace,
		"trimPrefix":   func(prefix, s string) string { return strings.TrimPrefix(s, prefix) },
		"trimSuffix":   func(suffix, s string) string { return strings.TrimSuffix(s, suffix) },
		"reReplaceAll": reReplaceAll,
	}
	funcs = map[string]strtemplate.Func{
		"toLower":      {Args: 1, Call: func(a ...string) (string, error) { return strings.ToLower(a[0]), nil }},
		"toUpper":      {Args: 1, Call: func(a ...string) (string, error) { return strings.ToUpper(a[0]), nil }},
		"trimSpace":    {Args: 1, Call: func(a ...string) (string, error) { return strings.TrimSpace(a[0]), nil }},
		"trimPrefix":   {Args: 2, Call: func(a ...string) (string, error) { return strings.TrimPrefix(a[1], a[0]), nil }},
		"trimSuffix":   {Args: 2, Call: func(a ...string) (string, error) { return strings.TrimSuffix(a[1], a[0]), nil }},
		"reReplaceAll": {Args: 3, Call: func(a ...string) (string, error) { return reReplaceAll(a[0], a[1], a[2]) }},
	}
)

var (
	start  = time.Date(2026, 12, 2, 14, 2, 3, 0, time.UTC)
	alerts = []alert{
		{
			Fingerprint: "a1b2c3", Status: "firing",
			Labels: map[string]string{
				"alertname": "EventServiceDown", "namespace": "production", "kubernetes_namespace": "shop",
				"pod": "event-service-7d9f8b6c4-x2x7q", "app-name": "Event-Service", "service": " Payments ",
				"job": "ds-node-agent", "env": "", "deployment": "event-service",
			},
			Annotations:  map[string]string{"summary": "down", "workload": "api"},
			StartsAt:     start,
			GeneratorURL: "http://prometheus/graph",
		},
		{Status: "resolved", Labels: map[string]string{"pod": "x"}, StartsAt: start, EndsAt: start.Add(time.Minute)},
		{}, // nil maps, empty strings
	}
	workloads = []workload{
		{Name: "event-service", Namespace: "production", Kind: "Deployment"},
		{},
	}
)

// corpus is what users of target, URL and query templates write, and the
// corners of each supported construct.
var corpus = []string{
	``,
	`plain text`,
	`{{ .Labels.namespace }}`,
	`{{ .Labels.kubernetes_namespace }}`,
	`{{ .Labels.pod | reReplaceAll "-[a-z0-9]+-[a-z0-9]+$" "" }}`,
	`{{ .Labels.pod | reReplaceAll "-[^-]+-[^-]+$" "" }}`,
	`{{ reReplaceAll "(" "" .Labels.app }}`,
	`{{ .Labels.service | toLower }}-api`,
	`{{ .Labels.service | trimSpace | toLower }}`,
	`{{ trimPrefix "ds-" .Labels.job }}`,
	`{{ .Labels.job | trimPrefix "ds-" | trimSuffix "-agent" | toUpper }}`,
	`{{ index .Labels "app-name" | toLower }}`,
	`{{ index .Labels "missing" }}|{{ index .Labels }}|{{ index .Labels "a" "b" }}`,
	`{{ .Labels.missing }}|{{ .Labels.missing.deeper }}`,
	`{{ $.Labels.pod }}{{ with .Labels }}{{ .pod }}/{{ $.Status }}{{ end }}`,
	`{{ $ }}`,
	`{{ . }}`,
	`{{ .Labels }}|{{ .Annotations }}`,
	`{{ .StartsAt }}|{{ .EndsAt }}`,
	`{{ .Status }}{{ .Fingerprint }}{{ .GeneratorURL }}`,
	`{{ .Nope }}`,
	`{{ .Status.Nope }}`,
	`{{ (.Labels).pod }}|{{ (index .Labels "app-name") }}|{{ (.Labels.pod | toUpper) }}`,
	`{{ if .Labels.env }}{{ .Labels.env }}{{ else if .Labels.namespace }}ns-{{ .Labels.namespace }}{{ else }}default{{ end }}`,
	`{{ if eq .Status "firing" }}f{{ else }}r{{ end }}`,
	`{{ if ne .Status "firing" }}not{{ end }}`,
	`{{ if not .Labels.pod }}none{{ end }}`,
	`{{ if and .Labels.pod .Labels.namespace }}both{{ end }}`,
	`{{ or .Labels.env .Labels.namespace "fallback" }}`,
	`{{ and .Labels.env .Labels.namespace }}|{{ and .Labels.namespace .Labels.pod }}`,
	`{{ .Labels.env | or "default" }}|{{ .Labels.pod | and "x" }}`,
	`{{ or .Labels .Status }}|{{ and .Status .Labels }}`,
	`{{ with .Labels.env }}{{ . }}{{ else }}empty{{ end }}`,
	`{{ with .Labels.pod }}[{{ . }}]{{ else with .Status }}{{ . }}{{ end }}`,
	`{{ with .Annotations }}{{ .summary }}{{ end }}`,
	`{{ eq .Labels.namespace "production" "staging" }}|{{ eq .Status "firing" "resolved" }}`,
	`{{ eq (len .Labels) (len .Annotations) }}|{{ len .Labels.pod }}|{{ len .Labels }}`,
	`{{ eq .Labels "x" }}`,
	`{{ eq "x" .Labels }}`,
	`{{ eq .Status }}`,
	`{{ ne .Status }}`,
	`{{ len . }}`,
	`{{ len .StartsAt }}`,
	`{{ index . "Labels" }}`,
	`{{ index .Labels.pod "x" }}`,
	`{{ printf "%s/%s" .Labels.namespace .Labels.pod }}`,
	`{{ .Labels.pod | printf "%s-api" }}|{{ .Labels.pod | printf "%s-%s" .Status }}`,
	`{{ printf "%q %v %d %s" .Status .Labels .Status (len .Labels) }}`,
	`{{ printf "%v" . }}`,
	`{{ printf .Labels }}`,
	`{{ printf }}`,
	`{{ "%s!" | printf }}`,
	`{{ .Labels.pod | toLower "x" }}`,
	`{{ toLower }}`,
	`{{ toLower .Labels }}`,
	`{{ toLower (len .Labels) }}`,
	`{{ not }}`,
	`{{ and }}`,
	`{{ "x" | . }}`,
	`{{ "x" "y" }}`,
	`{{ "literal" }}{{ "with \"quotes\"" }}{{ ` + "`raw`" + ` }}`,
	"  {{- .Labels.namespace -}}  \n  {{- /* a comment */ -}} x ",
	`{{/* only a comment */}}`,
	`{{ if .Labels.pod }}{{ with $.Labels.namespace }}{{ . | toUpper }}{{ end }}{{ end }}`,
	`{{ not (eq .Labels.namespace .Labels.kubernetes_namespace) }}`,
	`{{ .Labels.env | toLower | or .Labels.namespace }}`,
	`{{ if .Labels }}labels{{ end }}{{ if .Annotations }}ann{{ end }}{{ if .StartsAt }}t{{ end }}{{ if . }}dot{{ end }}`,
	`{{ eq (not .Status) (not .Labels.env) }}`,
	`{{ eq (eq .Status "firing") "true" }}`,
	`{{ .Labels.pod | title }}`,
	`{{ .Labels.pod`,
	// verify's templates
	`http://{{.Name}}.{{.Namespace}}.svc/health/live`,
	`sum(rate(http_requests_total{namespace="{{.Namespace}}",deployment="{{.Name}}",code=~"5.."}[1m]))`,
	`/{{.Kind}}/{{.Namespace}}/{{.Name}}/health/ready`,
	`http://{{.Service}}/`,
	`http://{{.Name}/`,
	`{{ .Name | toLower }}.{{ .Namespace }}`,
}

// TestMatchesTextTemplate runs every template of the corpus on every datum
// with both evaluators and both missing key options: the output is the
// same, or both fail.
func TestMatchesTextTemplate(t *testing.T) {
	var data []any
	for _, a := range alerts {
		data = append(data, a)
	}
	for _, w := range workloads {
		data = append(data, w)
	}
	compared := 0
	for _, src := range corpus {
		for _, mk := range []string{"zero", "error"} {
			for _, d := range data {
				if differ(t, src, mk, d, false) {
					compared++
				}
			}
		}
	}
	if compared < len(corpus) {
		t.Fatalf("only %d executions compared for %d templates", compared, len(corpus))
	}
}

// differ compares the evaluators on one template and datum, reporting a
// difference as an error; it returns whether both parsed and ran. Unless
// mayRefuse, a template refused as unsupported is an error too.
func differ(t *testing.T, src, missingKey string, data any, mayRefuse bool) bool {
	t.Helper()
	want, wantParseErr := template.New("t").Option("missingkey=" + missingKey).Funcs(goFuncs).Parse(src)
	opts := strtemplate.Options{Funcs: funcs}
	if missingKey == "error" {
		opts.MissingKey = strtemplate.MissingKeyError
	}
	got, gotParseErr := strtemplate.Parse("t", src, opts)
	if errors.Is(gotParseErr, strtemplate.ErrUnsupported) {
		if !mayRefuse {
			t.Errorf("%q: refused, but the corpus holds only supported templates: %v", src, gotParseErr)
		}
		return false
	}
	if (wantParseErr != nil) != (gotParseErr != nil) {
		t.Errorf("%q: text/template parse error %v, ours %v", src, wantParseErr, gotParseErr)
		return false
	}
	if gotParseErr != nil {
		return false
	}
	var b strings.Builder
	wantErr := want.Execute(&b, data)
	out, err := got.Execute(data.(strtemplate.Record))
	switch {
	case wantErr != nil && err != nil:
	case wantErr != nil || err != nil:
		if !errors.Is(err, strtemplate.ErrUnsupported) {
			t.Errorf("%q missingkey=%s on %+v: text/template gives %q, %v; ours %q, %v", src, missingKey, data, b.String(), wantErr, out, err)
		}
	case out != b.String():
		t.Errorf("%q missingkey=%s on %+v: text/template gives %q; ours %q", src, missingKey, data, b.String(), out)
	}
	return true
}

// FuzzMatchesTextTemplate: on any template either evaluator accepts, the
// output is text/template's, or both fail, or ours refuses the construct.
func FuzzMatchesTextTemplate(f *testing.F) {
	for _, src := range corpus {
		f.Add(src)
	}
	f.Fuzz(func(t *testing.T, src string) {
		var data []any
		for _, a := range alerts {
			data = append(data, a)
		}
		for _, w := range workloads {
			data = append(data, w)
		}
		for _, mk := range []string{"zero", "error"} {
			for _, d := range data {
				differ(t, src, mk, d, true)
			}
		}
	})
}

// TestRefused: each construct the evaluator does not handle is refused at
// parse time, naming it.
func TestRefused(t *testing.T) {
	for _, tc := range []struct{ src, want string }{
		{`{{ range .Labels }}{{ . }}{{ end }}`, `template: t:1:9: range is not supported`},
		{`{{ define "x" }}{{ template "x" }}{{ end }}{{ template "x" }}`, `template: t: defining templates (define "x") is not supported`},
		{`{{ block "b" . }}x{{ end }}`, `template: t: defining templates (define "b") is not supported`},
		{`a{{ template "t" }}`, `template: t:1:13: template is not supported`},
		{`{{ $x := .Labels.pod }}{{ $x }}`, `template: t:1:3: declaring or assigning variables is not supported`},
		{`{{ if $x := .Status }}{{ end }}`, `template: t:1:6: declaring or assigning variables is not supported`},
		{`{{ index .Labels 0 }}`, `template: t:1:17: the number 0 is not supported`},
		{`{{ if true }}x{{ end }}`, `template: t:1:6: the constant true is not supported`},
		{`{{ eq .Status nil }}`, `template: t:1:14: nil is not supported`},
		{`{{ .StartsAt.Format "2006" }}`, `template: t:1:3: calling a method (.StartsAt.Format) is not supported`},
		{`{{ "x" | .Labels.pod }}`, `template: t:1:9: calling a method (.Labels.pod) is not supported`},
		{`{{ $.Status "x" }}`, `template: t:1:3: calling a method ($.Status) is not supported`},
		{`{{ (.Labels).pod "x" }}`, `template: t:1:3: calling a method ((.Labels).pod) is not supported`},
		{`{{ lt .Status "b" }}`, `template: t:1:3: the function "lt" is not supported`},
		{`{{ .Labels.pod | urlquery }}`, `template: t:1:17: the function "urlquery" is not supported`},
		{`{{ slice .Labels.pod 1 }}`, `template: t:1:3: the function "slice" is not supported`},
		{`{{ print "x" }}`, `template: t:1:3: the function "print" is not supported`},
		{`{{ call .Labels }}`, `template: t:1:3: the function "call" is not supported`},
	} {
		_, err := strtemplate.Parse("t", tc.src, strtemplate.Options{Funcs: funcs})
		if err == nil || err.Error() != tc.want || !errors.Is(err, strtemplate.ErrUnsupported) {
			t.Errorf("Parse(%q) = %v\nwant %s", tc.src, err, tc.want)
		}
		if _, err := template.New("t").Funcs(goFuncs).Parse(tc.src); err != nil {
			t.Errorf("text/template refuses %q too (%v): the case shows nothing", tc.src, err)
		}
	}
}

// TestRefusedAtExecution: a method of a time cannot be told from a field
// until the value is known, nor the kinds eq compares; they are refused
// when reached, where text/template succeeds.
func TestRefusedAtExecution(t *testing.T) {
	for _, tc := range []struct{ src, want string }{
		{`{{ .StartsAt.Unix }}`, `template: t:1:12: executing "t" at <.StartsAt.Unix>: can't evaluate field Unix in type time.Time: calling a method is not supported`},
		{`{{ eq .StartsAt .EndsAt }}`, `template: t:1:3: executing "t" at <eq .StartsAt .EndsAt>: error calling eq: comparing values of type time.Time is not supported`},
	} {
		tm, err := strtemplate.Parse("t", tc.src, strtemplate.Options{})
		if err != nil {
			t.Fatal(err)
		}
		_, err = tm.Execute(alerts[0])
		if err == nil || err.Error() != tc.want || !errors.Is(err, strtemplate.ErrUnsupported) {
			t.Errorf("Execute(%q) = %v\nwant %s", tc.src, err, tc.want)
		}
		if err := template.Must(template.New("t").Parse(tc.src)).Execute(io.Discard, alerts[0]); err != nil {
			t.Errorf("text/template fails on %q too (%v): the case shows nothing", tc.src, err)
		}
	}
}

// TestErrors: execution errors have text/template's form.
func TestErrors(t *testing.T) {
	for _, tc := range []struct {
		src  string
		mk   strtemplate.MissingKey
		data strtemplate.Record
		want string
	}{
		{`http://{{.Service}}/`, strtemplate.MissingKeyError, workloads[0],
			`template: t:1:9: executing "t" at <.Service>: can't evaluate field Service in type strtemplate_test.workload`},
		{`{{ reReplaceAll "(" "" .Labels.pod }}`, strtemplate.MissingKeyZero, alerts[0],
			"template: t:1:3: executing \"t\" at <reReplaceAll \"(\" \"\" .Labels.pod>: error calling reReplaceAll: error parsing regexp: missing closing ): `(`"},
		{`{{ .Labels.nope }}`, strtemplate.MissingKeyError, alerts[0],
			`template: t:1:10: executing "t" at <.Labels.nope>: map has no entry for key "nope"`},
	} {
		tm, err := strtemplate.Parse("t", tc.src, strtemplate.Options{Funcs: funcs, MissingKey: tc.mk})
		if err != nil {
			t.Fatal(err)
		}
		out, err := tm.Execute(tc.data)
		if err == nil || err.Error() != tc.want {
			t.Errorf("%q: Execute = %q, %v\nwant error %s", tc.src, out, err, tc.want)
		}
		// text/template's own error, for the record.
		var b strings.Builder
		opt := "missingkey=zero"
		if tc.mk == strtemplate.MissingKeyError {
			opt = "missingkey=error"
		}
		wantErr := template.Must(template.New("t").Option(opt).Funcs(goFuncs).Parse(tc.src)).Execute(&b, tc.data)
		if wantErr == nil || strings.Replace(wantErr.Error(), "strtemplate_test.workload", "", 1) != strings.Replace(tc.want, "strtemplate_test.workload", "", 1) {
			t.Errorf("%q: text/template says %v", tc.src, wantErr)
		}
	}
}

// BenchmarkExecute evaluates a typical name template, by this package and
// by text/template, since target templates are evaluated for every alert
// at intake.
func BenchmarkExecute(b *testing.B) {
	const src = `{{ .Labels.pod | reReplaceAll "-[a-z0-9]+-[a-z0-9]+$" "" }}`
	b.Run("strtemplate", func(b *testing.B) {
		tm, err := strtemplate.Parse("t", src, strtemplate.Options{Funcs: funcs})
		if err != nil {
			b.Fatal(err)
		}
		for b.Loop() {
			if _, err := tm.Execute(alerts[0]); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("text-template", func(b *testing.B) {
		tm := template.Must(template.New("t").Option("missingkey=zero").Funcs(goFuncs).Parse(src))
		for b.Loop() {
			var s strings.Builder
			if err := tm.Execute(&s, alerts[0]); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("strtemplate-label", func(b *testing.B) {
		tm, err := strtemplate.Parse("t", `{{ .Labels.kubernetes_namespace }}`, strtemplate.Options{})
		if err != nil {
			b.Fatal(err)
		}
		for b.Loop() {
			if _, err := tm.Execute(alerts[0]); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("text-template-label", func(b *testing.B) {
		tm := template.Must(template.New("t").Option("missingkey=zero").Parse(`{{ .Labels.kubernetes_namespace }}`))
		for b.Loop() {
			var s strings.Builder
			if err := tm.Execute(&s, alerts[0]); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// TestFuncsWinOverBuiltins: a function of the template named as a builtin
// is called instead of it, as in text/template.
func TestFuncsWinOverBuiltins(t *testing.T) {
	const src = `{{ len .Labels.pod }}/{{ .Status | print }}`
	own := map[string]strtemplate.Func{
		"len":   {Args: 1, Call: func(a ...string) (string, error) { return "len(" + a[0] + ")", nil }},
		"print": {Args: 1, Call: func(a ...string) (string, error) { return "print(" + a[0] + ")", nil }},
	}
	tm, err := strtemplate.Parse("t", src, strtemplate.Options{Funcs: own})
	if err != nil {
		t.Fatal(err)
	}
	out, err := tm.Execute(alerts[0])
	var b strings.Builder
	wantErr := template.Must(template.New("t").Funcs(template.FuncMap{
		"len":   func(s string) string { return "len(" + s + ")" },
		"print": func(s string) string { return "print(" + s + ")" },
	}).Parse(src)).Execute(&b, alerts[0])
	if err != nil || wantErr != nil || out != b.String() {
		t.Fatalf("got %q, %v; text/template gives %q, %v", out, err, b.String(), wantErr)
	}
}
