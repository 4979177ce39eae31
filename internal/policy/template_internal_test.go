package policy

import (
	"reflect"
	"regexp"
	"strings"
	"testing"
	"text/template"
	"time"
)

// TestAlertTemplateFields: a target template sees every field of Alert, by
// its Go name, as text/template did.
func TestAlertTemplateFields(t *testing.T) {
	a := Alert{
		Fingerprint: "f", Status: "firing", Labels: map[string]string{"a": "b"}, Annotations: map[string]string{"c": "d"},
		StartsAt: time.Unix(1, 0), EndsAt: time.Unix(2, 0), GeneratorURL: "http://g",
	}
	v := reflect.ValueOf(a)
	for i := range v.NumField() {
		name := v.Type().Field(i).Name
		got, ok := a.TemplateField(name)
		if !ok || !reflect.DeepEqual(got, v.Field(i).Interface()) {
			t.Errorf("TemplateField(%q) = %v, %t; want %v", name, got, ok, v.Field(i).Interface())
		}
	}
	if got, ok := a.TemplateField("Nope"); ok {
		t.Errorf("TemplateField(%q) = %v, true", "Nope", got)
	}
}

// TestTemplateFuncsMatchTextTemplate: target templates give what they gave
// when text/template evaluated them with the same functions as Go funcs.
func TestTemplateFuncsMatchTextTemplate(t *testing.T) {
	goFuncs := template.FuncMap{
		"toLower":    strings.ToLower,
		"toUpper":    strings.ToUpper,
		"trimSpace":  strings.TrimSpace,
		"trimPrefix": func(prefix, s string) string { return strings.TrimPrefix(s, prefix) },
		"trimSuffix": func(suffix, s string) string { return strings.TrimSuffix(s, suffix) },
		"reReplaceAll": func(pattern, repl, text string) (string, error) {
			re, err := regexp.Compile(pattern)
			if err != nil {
				return "", err
			}
			return re.ReplaceAllString(text, repl), nil
		},
	}
	a := Alert{Status: "firing", Labels: map[string]string{
		"pod": "event-service-7d9f8b6c4-x2x7q", "service": " Payments ", "job": "ds-node-agent", "app-name": "Web", "env": "",
	}}
	for _, src := range []string{
		`{{ .Labels.pod | reReplaceAll "-[a-z0-9]+-[a-z0-9]+$" "" }}`,
		`{{ reReplaceAll "^(.*)-([^-]+)$" "$2-$1" .Labels.job }}`,
		`{{ reReplaceAll "(" "" .Labels.pod }}`,
		`{{ .Labels.service | trimSpace | toLower }}-api`,
		`{{ .Labels.job | trimPrefix "ds-" | trimSuffix "-agent" | toUpper }}`,
		`{{ trimPrefix "ds-" .Labels.job }}{{ trimSuffix "-agent" .Labels.job }}`,
		`{{ index .Labels "app-name" | toLower }}`,
		`{{ or .Labels.env "default" }}-{{ if eq .Status "firing" }}{{ .Labels.missing }}f{{ end }}`,
		`{{ toLower }}`,
		`{{ trimPrefix "x" }}`,
	} {
		want, err := template.New("t").Option("missingkey=zero").Funcs(goFuncs).Parse(src)
		if err != nil {
			t.Fatalf("%q: %v", src, err)
		}
		var b strings.Builder
		wantErr := want.Execute(&b, a)
		c := &compiler{}
		got := c.template("t", src)
		if len(c.errs) > 0 || got == nil {
			t.Fatalf("%q: %v", src, c.errs)
		}
		out, err := got.Execute(a)
		if (err != nil) != (wantErr != nil) || out != b.String() {
			t.Errorf("%q: got %q, %v; text/template gives %q, %v", src, out, err, b.String(), wantErr)
		}
	}
}
