package kinds

import (
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// The files allowed to break the layout rules below, relative to the
// module root.
const (
	keysFile    = "internal/kinds/keys.go"       // every autorollback.io/ key
	factoryFile = "internal/workload/adapter.go" // the one choice of an Adapter by Kind
)

// workloadKinds are the names that identify a workload kind in source:
// the Kind constants and the kinds' names as strings.
var workloadKinds = map[string]bool{"KindDeployment": true, "KindStatefulSet": true, "KindDaemonSet": true}

// qualifiedKinds are Kind constants whose name another package uses for
// something else (verify's check kind KindRollout): they name a workload
// kind only as kinds.X or policy.X.
var qualifiedKinds = map[string]bool{"KindRollout": true}

var kindNames = map[string]bool{"Deployment": true, "StatefulSet": true, "DaemonSet": true, "Rollout": true}

// appsTypes are the typed workload objects a type switch could branch on.
var appsTypes = map[string]bool{"Deployment": true, "StatefulSet": true, "DaemonSet": true}

// The daemon's source: what the rules below cover.
var sourceDirs = []string{"bench", "cmd", "internal"}

// TestKeysSpelledOnce: every autorollback.io/ key is spelled once, in
// keys.go, so that a writer and a reader of a key cannot drift apart.
func TestKeysSpelledOnce(t *testing.T) {
	for _, v := range violations(t) {
		if v.rule == ruleKey {
			t.Error(v.msg)
		}
	}
}

type rule int

const (
	ruleKey rule = iota
	ruleKind
)

type violation struct {
	rule rule
	msg  string
}

// violations parses every non-test Go file of sourceDirs.
func violations(t *testing.T) []violation {
	t.Helper()
	root := moduleRoot(t)
	fset := token.NewFileSet()
	var (
		files int
		out   []violation
	)
	for _, dir := range sourceDirs {
		err := filepath.WalkDir(filepath.Join(root, dir), func(path string, d fs.DirEntry, err error) error {
			if err != nil {
				return err
			}
			if d.IsDir() {
				if name := d.Name(); strings.HasPrefix(name, ".") || name == "testdata" || name == "vendor" {
					return filepath.SkipDir
				}
				return nil
			}
			if !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") {
				return nil
			}
			rel, err := filepath.Rel(root, path)
			if err != nil {
				return err
			}
			f, err := parser.ParseFile(fset, path, nil, parser.SkipObjectResolution)
			if err != nil {
				return err
			}
			files++
			out = append(out, fileViolations(fset, f, filepath.ToSlash(rel))...)
			return nil
		})
		if err != nil {
			t.Fatalf("walk %s: %v", dir, err)
		}
	}
	if files < 50 {
		t.Fatalf("checked only %d files under %s; is it the module root?", files, root)
	}
	return out
}

func fileViolations(fset *token.FileSet, f *ast.File, rel string) []violation {
	var out []violation
	report := func(r rule, n ast.Node, format string, args ...any) {
		pos := fset.Position(n.Pos())
		out = append(out, violation{r, fmt.Sprintf("%s:%d: ", rel, pos.Line) + fmt.Sprintf(format, args...)})
	}
	ast.Inspect(f, func(n ast.Node) bool {
		switch n := n.(type) {
		case *ast.BasicLit:
			if n.Kind == token.STRING && rel != keysFile {
				if s, err := strconv.Unquote(n.Value); err == nil && strings.Contains(s, "autorollback.io/") {
					report(ruleKey, n, "the key %q is spelled outside %s; use its constant from package kinds", s, keysFile)
				}
			}
		case *ast.BinaryExpr:
			if (n.Op == token.EQL || n.Op == token.NEQ) && rel != factoryFile && (isKind(n.X) || isKind(n.Y)) {
				report(ruleKind, n, "comparison with a workload kind outside %s; ask the kind's workload.Adapter instead", factoryFile)
			}
		case *ast.SwitchStmt:
			if rel == factoryFile {
				break
			}
			for _, c := range n.Body.List {
				for _, e := range c.(*ast.CaseClause).List {
					if isKind(e) {
						report(ruleKind, e, "switch on a workload kind outside %s; ask the kind's workload.Adapter instead", factoryFile)
					}
				}
			}
		case *ast.TypeSwitchStmt:
			if rel == factoryFile {
				break
			}
			for _, c := range n.Body.List {
				for _, e := range c.(*ast.CaseClause).List {
					if isAppsType(e) {
						report(ruleKind, e, "type switch on a workload's type outside %s; ask the kind's workload.Adapter instead", factoryFile)
					}
				}
			}
		}
		return true
	})
	return out
}

// isKind reports whether e names a workload kind: a Kind constant of any
// package, or a kind's name as a string.
func isKind(e ast.Expr) bool {
	switch e := e.(type) {
	case *ast.SelectorExpr:
		if pkg, ok := e.X.(*ast.Ident); ok && qualifiedKinds[e.Sel.Name] {
			return pkg.Name == "kinds" || pkg.Name == "policy"
		}
		return workloadKinds[e.Sel.Name]
	case *ast.Ident:
		return workloadKinds[e.Name]
	case *ast.BasicLit:
		s, err := strconv.Unquote(e.Value)
		return e.Kind == token.STRING && err == nil && kindNames[s]
	case *ast.ParenExpr:
		return isKind(e.X)
	}
	return false
}

// isAppsType reports whether e is *appsv1.Deployment or the like.
func isAppsType(e ast.Expr) bool {
	if star, ok := e.(*ast.StarExpr); ok {
		e = star.X
	}
	sel, ok := e.(*ast.SelectorExpr)
	return ok && appsTypes[sel.Sel.Name]
}

func moduleRoot(t *testing.T) string {
	t.Helper()
	dir, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			t.Fatal("no go.mod above the test's directory")
		}
		dir = parent
	}
}
