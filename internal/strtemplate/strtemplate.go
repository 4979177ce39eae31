// Package strtemplate evaluates Go text/template syntax over plain data
// without reflection.
//
// text/template executes by reflection and looks methods up by a name known
// only at run time; once any template execution is reachable in a binary,
// the linker must keep every exported method of every type that reaches an
// interface, which costs the daemon megabytes. This package parses with
// text/template/parse, which uses no reflection, and walks the tree by hand
// over data of a few known kinds: strings, booleans, ints, string maps,
// times (printed only) and Records, whose fields are looked up by
// Record.TemplateField.
//
// Every construct it accepts gives the output text/template would give for
// the same data, or fails where text/template fails (the package's
// differential test checks this), with two exceptions that fail with an
// error wrapping ErrUnsupported where text/template may succeed: eq and ne
// on values other than strings, booleans and ints, and a field of a time,
// which text/template would call as a method. The other constructs are
// refused when the template is parsed, naming the construct: range,
// define, template and block, variable declarations, number, boolean and
// nil constants, method calls (a field given arguments or a piped value),
// and the builtins other than and, or, not, eq, ne, len, index and printf.
// Without range and defined templates, evaluation is linear in the size of
// the template.
package strtemplate

import (
	"errors"
	"fmt"
	"strings"
	"text/template/parse"
	"time"
)

// Record is data whose fields a template reads by name, as text/template
// reads the fields of a struct. TemplateField returns a string, bool, int,
// map[string]string, time.Time or Record, and false for a name that is not
// a field.
//
// Records are printed with fmt, as text/template prints structs, so a
// Record should be the struct value itself.
type Record interface {
	TemplateField(name string) (any, bool)
}

// Func is a function a template may call. It takes exactly Args strings,
// the piped value, if any, last, as text/template passes it.
type Func struct {
	Args int
	Call func(args ...string) (string, error)
}

// MissingKey is what a map key that is absent evaluates to, as
// text/template's "missingkey" option.
type MissingKey int

const (
	// MissingKeyZero evaluates an absent key to the empty string
	// (missingkey=zero).
	MissingKeyZero MissingKey = iota
	// MissingKeyError makes an absent key an execution error
	// (missingkey=error).
	MissingKeyError
)

// Options are the functions a template may call besides the builtins, and
// its missing key behaviour.
type Options struct {
	Funcs      map[string]Func
	MissingKey MissingKey
}

// Template is a parsed template, safe for concurrent use.
type Template struct {
	name  string
	tree  *parse.Tree
	funcs map[string]Func
	miss  MissingKey
}

// builtins are text/template's builtins that templates may use.
var builtins = []string{"and", "or", "not", "eq", "ne", "len", "index", "printf"}

// refusedBuiltins are text/template's other builtins: a template using one
// is refused by name rather than told the function is not defined.
var refusedBuiltins = []string{"call", "html", "js", "print", "println", "urlquery", "slice", "lt", "le", "gt", "ge"}

// ErrUnsupported is wrapped by the error of Parse for a construct that
// text/template accepts and this package does not.
var ErrUnsupported = errors.New("is not supported")

// Parse parses text as a template named name. Errors of syntax are
// text/template's; a construct this package does not evaluate is an error
// wrapping ErrUnsupported that names it.
func Parse(name, text string, opts Options) (*Template, error) {
	known := map[string]any{}
	for _, b := range builtins {
		known[b] = true
	}
	for _, b := range refusedBuiltins {
		known[b] = true
	}
	for f := range opts.Funcs {
		known[f] = true
	}
	trees, err := parse.Parse(name, text, "", "", known)
	if err != nil {
		return nil, err
	}
	for n := range trees {
		if n != name {
			return nil, fmt.Errorf("template: %s: defining templates (define %q) %w", name, n, ErrUnsupported)
		}
	}
	t := &Template{name: name, tree: trees[name], funcs: opts.Funcs, miss: opts.MissingKey}
	if t.tree == nil {
		t.tree = &parse.Tree{Name: name, Root: &parse.ListNode{}}
	}
	if err := t.check(t.tree.Root, false); err != nil {
		return nil, err
	}
	return t, nil
}

// refuse returns the error for an unsupported construct at node.
func (t *Template) refuse(node parse.Node, what string) error {
	location, _ := t.tree.ErrorContext(node)
	return fmt.Errorf("template: %s: %s %w", location, what, ErrUnsupported)
}

// check refuses the constructs evaluation does not handle. piped says
// whether a command receives the value of the one before it.
func (t *Template) check(node parse.Node, piped bool) error {
	switch n := node.(type) {
	case nil:
		return nil
	case *parse.ListNode:
		if n == nil {
			return nil
		}
		for _, c := range n.Nodes {
			if err := t.check(c, false); err != nil {
				return err
			}
		}
		return nil
	case *parse.TextNode, *parse.CommentNode, *parse.DotNode, *parse.StringNode:
		return nil
	case *parse.ActionNode:
		return t.check(n.Pipe, false)
	case *parse.IfNode:
		return t.checkBranch(&n.BranchNode)
	case *parse.WithNode:
		return t.checkBranch(&n.BranchNode)
	case *parse.RangeNode:
		return t.refuse(n, "range")
	case *parse.TemplateNode:
		return t.refuse(n, "template")
	case *parse.BreakNode:
		return t.refuse(n, "break")
	case *parse.ContinueNode:
		return t.refuse(n, "continue")
	case *parse.PipeNode:
		if n == nil {
			return nil
		}
		if len(n.Decl) > 0 {
			return t.refuse(n, "declaring or assigning variables")
		}
		for i, c := range n.Cmds {
			if err := t.check(c, i > 0); err != nil {
				return err
			}
		}
		return nil
	case *parse.CommandNode:
		switch first := n.Args[0].(type) {
		case *parse.FieldNode, *parse.ChainNode:
			if len(n.Args) > 1 || piped {
				return t.refuse(n, fmt.Sprintf("calling a method (%s)", first))
			}
		case *parse.VariableNode:
			if len(first.Ident) > 1 && (len(n.Args) > 1 || piped) {
				return t.refuse(n, fmt.Sprintf("calling a method (%s)", first))
			}
		}
		for _, a := range n.Args {
			if err := t.check(a, false); err != nil {
				return err
			}
		}
		return nil
	case *parse.IdentifierNode:
		if _, ok := t.funcs[n.Ident]; ok {
			return nil
		}
		for _, b := range refusedBuiltins {
			if n.Ident == b {
				return t.refuse(n, fmt.Sprintf("the function %q", b))
			}
		}
		return nil
	case *parse.FieldNode, *parse.VariableNode:
		return nil
	case *parse.ChainNode:
		return t.check(n.Node, false)
	case *parse.NumberNode:
		return t.refuse(n, fmt.Sprintf("the number %s", n.Text))
	case *parse.BoolNode:
		return t.refuse(n, fmt.Sprintf("the constant %t", n.True))
	case *parse.NilNode:
		return t.refuse(n, "nil")
	default:
		return t.refuse(n, fmt.Sprintf("%q", node.String()))
	}
}

func (t *Template) checkBranch(b *parse.BranchNode) error {
	if err := t.check(b.Pipe, false); err != nil {
		return err
	}
	if err := t.check(b.List, false); err != nil {
		return err
	}
	return t.check(b.ElseList, false)
}

// Execute evaluates the template with data as dot and $.
func (t *Template) Execute(data Record) (out string, err error) {
	s := &state{t: t, root: data}
	defer func() {
		if r := recover(); r != nil {
			e, ok := r.(execError)
			if !ok {
				panic(r)
			}
			err = e.err
		}
	}()
	s.walk(data, t.tree.Root)
	return s.out.String(), nil
}

// execError carries an execution error up the walk.
type execError struct{ err error }

// missing stands for no piped value.
type missingType struct{}

var missing any = missingType{}

type state struct {
	t    *Template
	root any
	node parse.Node // the node being evaluated, for errors
	out  strings.Builder
}

func (s *state) at(n parse.Node) { s.node = n }

// errorf stops execution with an error in the form text/template gives.
func (s *state) errorf(format string, args ...any) {
	location, context := s.t.tree.ErrorContext(s.node)
	panic(execError{fmt.Errorf("template: %s: executing %q at <%s>: %w", location, s.t.name, context, fmt.Errorf(format, args...))})
}

func (s *state) walk(dot any, node parse.Node) {
	s.at(node)
	switch n := node.(type) {
	case *parse.ListNode:
		if n == nil {
			return
		}
		for _, c := range n.Nodes {
			s.walk(dot, c)
		}
	case *parse.TextNode:
		s.out.Write(n.Text)
	case *parse.CommentNode:
	case *parse.ActionNode:
		v := s.evalPipeline(dot, n.Pipe)
		s.at(n)
		s.out.WriteString(fmt.Sprint(v))
	case *parse.IfNode:
		s.walkBranch(dot, &n.BranchNode, false)
	case *parse.WithNode:
		s.walkBranch(dot, &n.BranchNode, true)
	default:
		s.errorf("unknown node: %s", node)
	}
}

func (s *state) walkBranch(dot any, b *parse.BranchNode, with bool) {
	v := s.evalPipeline(dot, b.Pipe)
	if isTrue(v) {
		if with {
			s.walk(v, b.List)
		} else {
			s.walk(dot, b.List)
		}
	} else if b.ElseList != nil {
		s.walk(dot, b.ElseList)
	}
}

// isTrue is text/template's truth: non-empty strings and maps, true, and
// non-zero ints; times and Records (structs) are always true.
func isTrue(v any) bool {
	switch v := v.(type) {
	case string:
		return v != ""
	case bool:
		return v
	case int:
		return v != 0
	case map[string]string:
		return len(v) > 0
	}
	return true
}

func (s *state) evalPipeline(dot any, pipe *parse.PipeNode) any {
	s.at(pipe)
	v := missing
	for _, cmd := range pipe.Cmds {
		v = s.evalCommand(dot, cmd, v)
	}
	return v
}

// notAFunction refuses arguments or a piped value given to a value.
func (s *state) notAFunction(args []parse.Node, final any) {
	if len(args) > 1 || final != missing {
		s.errorf("can't give argument to non-function %s", args[0])
	}
}

func (s *state) evalCommand(dot any, cmd *parse.CommandNode, final any) any {
	first := cmd.Args[0]
	switch n := first.(type) {
	case *parse.FieldNode:
		s.at(n)
		return s.evalFieldChain(dot, n.Ident)
	case *parse.ChainNode:
		return s.evalChain(dot, n)
	case *parse.IdentifierNode:
		return s.evalFunction(dot, n, cmd, cmd.Args[1:], final)
	case *parse.PipeNode:
		s.notAFunction(cmd.Args, final)
		return s.evalPipeline(dot, n)
	case *parse.VariableNode:
		return s.evalVariable(n, cmd.Args, final)
	}
	s.at(first)
	s.notAFunction(cmd.Args, final)
	switch n := first.(type) {
	case *parse.DotNode:
		return dot
	case *parse.StringNode:
		return n.Text
	}
	s.errorf("can't evaluate command %q", first)
	return nil
}

func (s *state) evalChain(dot any, chain *parse.ChainNode) any {
	s.at(chain)
	v := s.evalArg(dot, chain.Node)
	s.at(chain)
	return s.evalFieldChain(v, chain.Field)
}

func (s *state) evalVariable(v *parse.VariableNode, args []parse.Node, final any) any {
	s.at(v)
	// Variables cannot be declared, so the only one is $.
	if len(v.Ident) == 1 {
		if args != nil {
			s.notAFunction(args, final)
		}
		return s.root
	}
	return s.evalFieldChain(s.root, v.Ident[1:])
}

func (s *state) evalFieldChain(receiver any, fields []string) any {
	for _, f := range fields {
		receiver = s.evalField(receiver, f)
	}
	return receiver
}

func (s *state) evalField(receiver any, name string) any {
	switch r := receiver.(type) {
	case Record:
		if v, ok := r.TemplateField(name); ok {
			return v
		}
	case map[string]string:
		if v, ok := r[name]; ok {
			return v
		}
		if s.t.miss == MissingKeyError {
			s.errorf("map has no entry for key %q", name)
		}
		return ""
	case time.Time:
		s.errorf("can't evaluate field %s in type %T: calling a method %w", name, receiver, ErrUnsupported)
	}
	s.errorf("can't evaluate field %s in type %T", name, receiver)
	return nil
}

// evalArg evaluates an argument of a function call.
func (s *state) evalArg(dot any, n parse.Node) any {
	s.at(n)
	switch a := n.(type) {
	case *parse.DotNode:
		return dot
	case *parse.FieldNode:
		return s.evalFieldChain(dot, a.Ident)
	case *parse.VariableNode:
		return s.evalVariable(a, nil, missing)
	case *parse.PipeNode:
		return s.evalPipeline(dot, a)
	case *parse.IdentifierNode:
		return s.evalFunction(dot, a, a, nil, missing)
	case *parse.ChainNode:
		return s.evalChain(dot, a)
	case *parse.StringNode:
		return a.Text
	}
	s.errorf("can't handle argument %s", n)
	return nil
}

// stringArg evaluates an argument that must be a string.
func (s *state) stringArg(dot any, n parse.Node) string {
	return s.asString(s.evalArg(dot, n))
}

func (s *state) asString(v any) string {
	str, ok := v.(string)
	if !ok {
		s.errorf("wrong type for value; expected string; got %T", v)
	}
	return str
}

func (s *state) evalFunction(dot any, ident *parse.IdentifierNode, cmd parse.Node, args []parse.Node, final any) any {
	s.at(ident)
	name := ident.Ident
	n := len(args)
	if final != missing {
		n++
	}
	want := func(fixed int, variadic bool) {
		switch {
		case variadic && n < fixed:
			s.errorf("wrong number of args for %s: want at least %d got %d", name, fixed, len(args))
		case !variadic && n != fixed:
			s.errorf("wrong number of args for %s: want %d got %d", name, fixed, n)
		}
	}
	// all evaluates the arguments in order, then the piped value.
	all := func() []any {
		vs := make([]any, 0, n)
		for _, a := range args {
			vs = append(vs, s.evalArg(dot, a))
		}
		if final != missing {
			vs = append(vs, final)
		}
		return vs
	}
	call := func(err error) {
		if err != nil {
			s.at(cmd)
			s.errorf("error calling %s: %w", name, err)
		}
	}
	// As in text/template, a function of the template wins over a builtin.
	if f, ok := s.t.funcs[name]; ok {
		want(f.Args, false)
		strs := make([]string, 0, n)
		for _, a := range args {
			strs = append(strs, s.stringArg(dot, a))
		}
		if final != missing {
			strs = append(strs, s.asString(final))
		}
		out, err := f.Call(strs...)
		call(err)
		return out
	}
	switch name {
	case "and", "or":
		want(1, true)
		var v any
		for _, a := range args {
			v = s.evalArg(dot, a)
			if isTrue(v) == (name == "or") {
				return v
			}
		}
		if final != missing {
			v = final
		}
		return v
	case "not":
		want(1, false)
		return !isTrue(all()[0])
	case "eq", "ne":
		if name == "ne" {
			want(2, false)
		} else {
			want(1, true)
		}
		vs := all()
		if len(vs) < 2 {
			call(errors.New("missing argument for comparison"))
		}
		for _, v := range vs[1:] {
			eq, err := equal(vs[0], v)
			call(err)
			if eq {
				return name == "eq"
			}
		}
		return name == "ne"
	case "len":
		want(1, false)
		switch v := all()[0].(type) {
		case string:
			return len(v)
		case map[string]string:
			return len(v)
		default:
			call(fmt.Errorf("len of type %T", v))
		}
	case "index":
		want(1, true)
		vs := all()
		item := vs[0]
		for _, k := range vs[1:] {
			m, ok := item.(map[string]string)
			if !ok {
				call(fmt.Errorf("can't index item of type %T", item))
			}
			key, ok := k.(string)
			if !ok {
				call(fmt.Errorf("value has type %T; should be string", k))
			}
			item = m[key]
		}
		return item
	case "printf":
		want(1, true)
		var format string
		var vs []any
		if len(args) > 0 {
			format = s.stringArg(dot, args[0])
			for _, a := range args[1:] {
				vs = append(vs, s.evalArg(dot, a))
			}
			if final != missing {
				vs = append(vs, final)
			}
		} else {
			format = s.asString(final)
		}
		return fmt.Sprintf(format, vs...)
	}
	s.errorf("%q is not a defined function", name)
	return nil
}

// equal is text/template's eq on two values: strings, booleans and ints
// compare with their own kind; other kinds are not compared.
func equal(a, b any) (bool, error) {
	switch a := a.(type) {
	case string:
		if b, ok := b.(string); ok {
			return a == b, nil
		}
	case bool:
		if b, ok := b.(bool); ok {
			return a == b, nil
		}
	case int:
		if b, ok := b.(int); ok {
			return a == b, nil
		}
	default:
		return false, fmt.Errorf("comparing values of type %T %w", a, ErrUnsupported)
	}
	return false, fmt.Errorf("incompatible types for comparison: %T and %T", a, b)
}
