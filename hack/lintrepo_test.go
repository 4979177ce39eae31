package hack_test

import (
	"bufio"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestLintRepo: make lint's repository check passes on a clean module and
// fails, naming the cause, on a tracked built binary and on a go.mod that
// go mod tidy would change.
func TestLintRepo(t *testing.T) {
	script, err := filepath.Abs("lint-repo.sh")
	if err != nil {
		t.Fatal(err)
	}
	sum := goSumOf(t, "github.com/oklog/run v1.2.0")
	tests := []struct {
		name  string
		files map[string]string
		exec  []string
		want  string // in the output of a failure; empty: passes
	}{
		{name: "clean", files: map[string]string{"run.sh": "#!/bin/sh\necho hi\n", "logo.png": "\x89PNG\r\n\x1a\n\x00\x00"}, exec: []string{"run.sh"}},
		{name: "ELF binary", files: map[string]string{"depcheck": "\x7fELF\x02\x01\x01\x00\x00\x00"}, exec: []string{"depcheck"}, want: "tracked built binary: depcheck"},
		{name: "ELF binary not executable", files: map[string]string{"tool": "\x7fELF\x02\x01\x01\x00\x00\x00"}, want: "tracked built binary: tool"},
		{name: "executable binary data", files: map[string]string{"blob": "bin\x00ary"}, exec: []string{"blob"}, want: "tracked built binary: blob"},
		{name: "unused requirement", files: map[string]string{
			"go.mod": "module example.com/m\n\ngo 1.26\n\nrequire github.com/oklog/run v1.2.0\n",
			"go.sum": sum,
		}, want: "-require github.com/oklog/run v1.2.0"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			files := map[string]string{"go.mod": "module example.com/m\n\ngo 1.26\n", "main.go": "package main\n\nfunc main() {}\n"}
			for name, body := range tc.files {
				files[name] = body
			}
			for name, body := range files {
				if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			for _, name := range tc.exec {
				if err := os.Chmod(filepath.Join(dir, name), 0o755); err != nil {
					t.Fatal(err)
				}
			}
			run(t, dir, "git", "init", "-q")
			run(t, dir, "git", "add", ".")
			cmd := exec.Command(script)
			cmd.Dir = dir
			cmd.Env = append(os.Environ(), "GOPROXY=off", "GOWORK=off")
			out, err := cmd.CombinedOutput()
			switch {
			case tc.want == "" && err != nil:
				t.Errorf("lint-repo.sh failed on a clean repository: %v\n%s", err, out)
			case tc.want != "" && err == nil:
				t.Errorf("lint-repo.sh passed, want a failure naming %q\n%s", tc.want, out)
			case tc.want != "" && !strings.Contains(string(out), tc.want):
				t.Errorf("lint-repo.sh output does not name %q:\n%s", tc.want, out)
			}
		})
	}
}

func run(t *testing.T, dir string, name string, args ...string) {
	t.Helper()
	cmd := exec.Command(name, args...)
	cmd.Dir = dir
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
}

// goSumOf returns the module's lines of the project's go.sum.
func goSumOf(t *testing.T, module string) string {
	t.Helper()
	f, err := os.Open(filepath.Join("..", "go.sum"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var b strings.Builder
	s := bufio.NewScanner(f)
	for s.Scan() {
		if strings.HasPrefix(s.Text(), module+" ") || strings.HasPrefix(s.Text(), module+"/go.mod ") {
			b.WriteString(s.Text() + "\n")
		}
	}
	if b.Len() == 0 {
		t.Fatalf("go.sum has no %s", module)
	}
	return b.String()
}
