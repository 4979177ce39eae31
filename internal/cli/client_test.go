package cli

import (
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/autorollbackd/autorollbackd/internal/config"
)

const twoContexts = `apiVersion: v1
kind: Config
current-context: a
clusters:
- name: ca
  cluster: {server: "https://a.example:6443"}
- name: cb
  cluster: {server: "https://b.example:6443"}
users:
- name: ua
  user: {token: token-a}
- name: ub
  user: {token: token-b}
contexts:
- name: a
  context: {cluster: ca, user: ua, namespace: work-a}
- name: b
  context: {cluster: cb, user: ub, namespace: work-b}
`

// TestClientFlagsAreKubectls checks that the commands talking to a cluster
// take every client flag kubectl takes (the README lists them), with
// kubectl's meaning.
func TestClientFlagsAreKubectls(t *testing.T) {
	want := []string{"kubeconfig", "context", "cluster", "user", "namespace", "server", "token", "as",
		"as-group", "as-uid", "as-user-extra", "certificate-authority", "client-certificate", "client-key",
		"insecure-skip-tls-verify", "tls-server-name", "proxy-url", "disable-compression", "request-timeout", "cache-dir"}
	root := newRootCommand(Env{Environ: nil})
	for _, path := range [][]string{{"incidents"}, {"explain"}, {"incidents", "revert-flag"}} {
		cmd, _, err := root.Find(path)
		if err != nil {
			t.Fatalf("find %v: %v", path, err)
		}
		var got []string
		cmd.InheritedFlags().VisitAll(func(f *pflag.Flag) { got = append(got, f.Name) })
		cmd.LocalFlags().VisitAll(func(f *pflag.Flag) { got = append(got, f.Name) })
		for _, name := range want {
			if !slices.Contains(got, name) {
				t.Errorf("%v: no --%s flag", path, name)
			}
		}
		for _, name := range []string{"username", "password"} {
			if slices.Contains(got, name) {
				t.Errorf("%v: --%s is registered; kubectl has no such flag", path, name)
			}
		}
		for short, long := range map[string]string{"n": "namespace", "s": "server"} {
			if f := cmd.Flags().ShorthandLookup(short); f == nil || f.Name != long {
				t.Errorf("%v: -%s is not --%s", path, short, long)
			}
		}
	}

	kubeconfig := filepath.Join(t.TempDir(), "kubeconfig")
	if err := os.WriteFile(kubeconfig, []byte(twoContexts), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name                string
		args                []string
		cfg                 config.Kubernetes
		host, token, as, ns string
		extra               map[string][]string
		timeout             time.Duration
		insecure            bool
	}{
		{name: "current context", args: []string{"--kubeconfig", kubeconfig},
			host: "https://a.example:6443", token: "token-a", ns: "work-a"},
		{name: "kubeconfig from the configuration", cfg: config.Kubernetes{Kubeconfig: kubeconfig},
			host: "https://a.example:6443", token: "token-a", ns: "work-a"},
		{name: "other context", args: []string{"--kubeconfig", kubeconfig, "--context", "b"},
			host: "https://b.example:6443", token: "token-b", ns: "work-b"},
		{name: "cluster and user", args: []string{"--kubeconfig", kubeconfig, "--cluster", "cb", "--user", "ub", "-n", "mine"},
			host: "https://b.example:6443", token: "token-b", ns: "mine"},
		{name: "overrides", args: []string{"--kubeconfig", kubeconfig, "-s", "https://c.example:1", "--token", "t",
			"--as", "someone", "--as-user-extra", "k=v", "--as-user-extra", "k=w", "--request-timeout", "3s", "--insecure-skip-tls-verify"},
			host: "https://c.example:1", token: "t", as: "someone", ns: "work-a",
			extra: map[string][]string{"k": {"v", "w"}}, timeout: 3 * time.Second, insecure: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cmd := &cobra.Command{Use: "x", RunE: func(*cobra.Command, []string) error { return nil }}
			f := addClientFlags(cmd)
			if err := cmd.ParseFlags(tc.args); err != nil {
				t.Fatalf("parse %q: %v", tc.args, err)
			}
			rc, err := f.restConfig(tc.cfg)
			if err != nil {
				t.Fatalf("restConfig: %v", err)
			}
			if rc.Host != tc.host || rc.BearerToken != tc.token || rc.Impersonate.UserName != tc.as ||
				rc.Timeout != tc.timeout || rc.Insecure != tc.insecure {
				t.Errorf("host %q token %q as %q timeout %v insecure %v; want %q %q %q %v %v",
					rc.Host, rc.BearerToken, rc.Impersonate.UserName, rc.Timeout, rc.Insecure,
					tc.host, tc.token, tc.as, tc.timeout, tc.insecure)
			}
			if tc.extra != nil && !equalExtra(rc.Impersonate.Extra, tc.extra) {
				t.Errorf("impersonated extras = %v, want %v", rc.Impersonate.Extra, tc.extra)
			}
			ns, _, err := f.loader().Namespace()
			if err != nil {
				t.Fatalf("namespace: %v", err)
			}
			if ns != tc.ns {
				t.Errorf("namespace = %q, want %q", ns, tc.ns)
			}
		})
	}
}

func equalExtra(a, b map[string][]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if !slices.Equal(v, b[k]) {
			return false
		}
	}
	return true
}
