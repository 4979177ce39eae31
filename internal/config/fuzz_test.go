package config

import (
	"os"
	"path/filepath"
	"testing"
)

// FuzzLoad feeds arbitrary files to the loader: it must never panic, and
// whatever it accepts must be a valid configuration.
func FuzzLoad(f *testing.F) {
	files, err := filepath.Glob("testdata/*.yaml")
	if err != nil {
		f.Fatal(err)
	}
	for _, file := range files {
		data, err := os.ReadFile(file)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(data)
	}
	f.Add([]byte("policy:\n  rules:\n  - name: x\n    matchers: ['a=~\"(\"']\n    outcome: rollback\n"))
	f.Add([]byte("policy:\n  rules:\n  - name: x\n    criterion: c\n    outcome: rollback\n    when: 'alert.labels.a == '\n"))
	f.Add([]byte("webhook:\n  maxBodyBytes: -1\n"))
	f.Add([]byte("engine: {workers: 0}\n"))
	dir := f.TempDir()
	f.Fuzz(func(t *testing.T, data []byte) {
		file := filepath.Join(dir, "config.yaml")
		if err := os.WriteFile(file, data, 0o600); err != nil {
			t.Fatal(err)
		}
		cfg, err := Load(Source{File: file})
		if err != nil {
			if err.Error() == "" {
				t.Fatal("error without a message")
			}
			return
		}
		if err := cfg.Validate(); err != nil {
			t.Fatalf("Load accepted a configuration that does not validate: %v", err)
		}
	})
}
