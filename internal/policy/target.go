package policy

import (
	"errors"
	"fmt"
	"regexp"
	"strings"

	"github.com/prometheus/alertmanager/pkg/labels"
	"k8s.io/apimachinery/pkg/api/validate/content"

	"github.com/autorollbackd/autorollbackd/internal/kinds"
	"github.com/autorollbackd/autorollbackd/internal/strtemplate"
)

// ErrNoTarget is wrapped by every error of Resolve: the alert names no
// workload, or not exactly one.
var ErrNoTarget = errors.New("alert names no workload")

// Resolve finds the workload an alert names. It uses the target settings of
// the first rule whose matchers match the alert, or the default target
// settings when none matches; rule conditions are not consulted, since they
// may depend on the workload. The error wraps ErrNoTarget when a label is
// missing or empty, when more than one of the kind labels is present, or
// when a template fails or renders an empty or invalid name.
func (p *Policy) Resolve(a Alert) (Ref, error) {
	t := p.defaultTarget
	for _, r := range p.rules {
		if r.matches(a.Labels) {
			t = r.target
			break
		}
	}
	return t.resolve(a)
}

func (t target) resolve(a Alert) (Ref, error) {
	ns, err := t.value(a, "namespace", t.namespaceTmpl, t.namespaceLabel)
	if err != nil {
		return Ref{}, err
	}
	if msgs := dns1123LabelErrors(ns); len(msgs) > 0 {
		return Ref{}, fmt.Errorf("%w: namespace %q is invalid: %s", ErrNoTarget, ns, strings.Join(msgs, "; "))
	}

	ref := Ref{Namespace: ns, Kind: t.kind}
	if t.kind != "" {
		ref.Name, err = t.value(a, "name", t.nameTmpl, t.nameLabel)
		if err != nil {
			return Ref{}, err
		}
	} else {
		var found []string
		for _, kl := range t.kindLabels {
			if v := a.Labels[kl.label]; v != "" {
				found = append(found, kl.label)
				ref.Kind, ref.Name = kl.kind, v
			}
		}
		switch len(found) {
		case 0:
			return Ref{}, fmt.Errorf("%w: none of the labels %s is set", ErrNoTarget, t.kindLabelNames())
		case 1:
		default:
			return Ref{}, fmt.Errorf("%w: ambiguous, labels %s are all set", ErrNoTarget, strings.Join(found, ", "))
		}
	}
	if msgs := dns1123SubdomainErrors(ref.Name); len(msgs) > 0 {
		return Ref{}, fmt.Errorf("%w: %s name %q is invalid: %s", ErrNoTarget, ref.Kind, ref.Name, strings.Join(msgs, "; "))
	}
	return ref, nil
}

// dns1123LabelErrors is content.IsDNS1123Label, which runs regular
// expressions, with a quick answer for valid names: every alert's target is
// checked at intake.
func dns1123LabelErrors(s string) []string {
	if len(s) <= content.DNS1123LabelMaxLength && isDNS1123Label(s) {
		return nil
	}
	return content.IsDNS1123Label(s)
}

// dns1123SubdomainErrors is content.IsDNS1123Subdomain with a quick answer
// for valid names.
func dns1123SubdomainErrors(s string) []string {
	if len(s) <= content.DNS1123SubdomainMaxLength && isDNS1123Subdomain(s) {
		return nil
	}
	return content.IsDNS1123Subdomain(s)
}

// isDNS1123Label reports whether s matches [a-z0-9]([-a-z0-9]*[a-z0-9])?,
// the format of content.IsDNS1123Label.
func isDNS1123Label(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case 'a' <= c && c <= 'z', '0' <= c && c <= '9':
		case c == '-' && i > 0 && i < len(s)-1:
		default:
			return false
		}
	}
	return true
}

// isDNS1123Subdomain reports whether s is DNS-1123 labels joined by dots,
// the format of content.IsDNS1123Subdomain.
func isDNS1123Subdomain(s string) bool {
	for label := range strings.SplitSeq(s, ".") {
		if !isDNS1123Label(label) {
			return false
		}
	}
	return true
}

// value renders tmpl when there is one, else reads label.
func (t target) value(a Alert, what string, tmpl *strtemplate.Template, label string) (string, error) {
	if tmpl == nil {
		v := a.Labels[label]
		if v == "" {
			return "", fmt.Errorf("%w: %s label %q is missing or empty", ErrNoTarget, what, label)
		}
		return v, nil
	}
	out, err := tmpl.Execute(a)
	if err != nil {
		return "", fmt.Errorf("%w: render %s template: %w", ErrNoTarget, what, err)
	}
	v := strings.TrimSpace(out)
	if v == "" {
		return "", fmt.Errorf("%w: %s template rendered empty", ErrNoTarget, what)
	}
	return v, nil
}

func (t target) kindLabelNames() string {
	names := make([]string, len(t.kindLabels))
	for i, kl := range t.kindLabels {
		names[i] = kl.label
	}
	return strings.Join(names, ", ")
}

// templateFuncs are the few string helpers a target template needs to turn
// an alert label into a workload name. Names and argument order are those of
// Alertmanager's templates, and of sprig for trimPrefix and trimSuffix, so
// the last argument is the piped value.
var templateFuncs = map[string]strtemplate.Func{
	"toLower":    {Args: 1, Call: func(a ...string) (string, error) { return strings.ToLower(a[0]), nil }},
	"toUpper":    {Args: 1, Call: func(a ...string) (string, error) { return strings.ToUpper(a[0]), nil }},
	"trimSpace":  {Args: 1, Call: func(a ...string) (string, error) { return strings.TrimSpace(a[0]), nil }},
	"trimPrefix": {Args: 2, Call: func(a ...string) (string, error) { return strings.TrimPrefix(a[1], a[0]), nil }},
	"trimSuffix": {Args: 2, Call: func(a ...string) (string, error) { return strings.TrimSuffix(a[1], a[0]), nil }},
	// {{ .Labels.pod | reReplaceAll "-[^-]+-[^-]+$" "" }}
	"reReplaceAll": {Args: 3, Call: func(a ...string) (string, error) {
		re, err := regexp.Compile(a[0])
		if err != nil {
			return "", err
		}
		return re.ReplaceAllString(a[2], a[1]), nil
	}},
}

// matches reports whether every matcher of r matches labels. A missing
// label matches as the empty string, as in Alertmanager.
func (r *rule) matches(labels map[string]string) bool {
	for _, m := range r.matchers {
		if !m.Matches(labels[m.Name]) {
			return false
		}
	}
	return true
}

// The parsed values of kinds.AnnotationAlertMatchers that a Policy keeps: a few
// per team that uses it, and each short. Screen reads the annotation for
// every alert at intake, and parsing it, with its regular expressions,
// costs ten times what the rest of Screen does.
const (
	matchersCacheSize     = 512
	matchersCacheMaxBytes = 1024 // longer values are parsed every time
)

type parsedMatchers struct {
	ms  []*labels.Matcher
	err error
}

// alertMatchers parses the value of a workload's kinds.AnnotationAlertMatchers.
func (p *Policy) alertMatchers(v string) ([]*labels.Matcher, error) {
	if len(v) > matchersCacheMaxBytes {
		return p.parseMatchers(v, "annotation "+kinds.AnnotationAlertMatchers)
	}
	if got, ok := p.matchers.Get(v); ok {
		pm := got.(parsedMatchers)
		return pm.ms, pm.err
	}
	ms, err := p.parseMatchers(v, "annotation "+kinds.AnnotationAlertMatchers)
	p.matchers.Add(v, parsedMatchers{ms: ms, err: err})
	return ms, err
}
