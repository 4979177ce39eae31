package cli

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
	"sigs.k8s.io/yaml"

	"github.com/autorollbackd/autorollbackd/internal/incident"
	"github.com/autorollbackd/autorollbackd/internal/policy"
	"github.com/autorollbackd/autorollbackd/internal/testenv"
)

// installChart installs the chart as a user would, release ard in ns, and
// uninstalls it when t ends. kwok makes its pods Ready without an image.
func installChart(t *testing.T, c *testenv.Cluster, ns string) {
	t.Helper()
	c.Helm(t, "install", "ard", filepath.Join("..", "..", "charts", "autorollbackd"), "--namespace", ns,
		"--wait", "--timeout", "90s", "--set", "image.repository=example.invalid/autorollbackd")
	t.Cleanup(func() { c.Helm(t, "uninstall", "ard", "--namespace", ns, "--wait", "--timeout", "90s") })
}

// recordIncident records an incident in ns with the daemon's own store.
func recordIncident(t *testing.T, c *testenv.Cluster, ns, name string, state incident.State, start time.Time) *incident.Versioned {
	t.Helper()
	target := policy.Ref{Kind: policy.KindDeployment, Namespace: "shop", Name: name}
	inc := &incident.Incident{
		ID: incident.NewID(target, 4, start), Target: target, Revision: 4, State: state, StartedAt: start, Cluster: "eu-west-1",
		Decision: policy.Decision{Outcome: policy.OutcomeRollback, Reason: "error_rate"},
		Alerts:   []incident.Alert{{Key: "k", Name: "HighErrorRate", StartsAt: start, Labels: map[string]string{"alertname": "HighErrorRate"}}},
	}
	inc.Log(start, "alert received")
	v, err := (&incident.Store{Client: c.Client, Namespace: ns}).Create(context.Background(), inc)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// laptopKubeconfig writes a kubeconfig as a person's laptop has it: the
// test cluster as context "kind-dev", whose default namespace is not the
// daemon's, and a context "prod" whose server answers nowhere. current is
// the current context.
func laptopKubeconfig(t *testing.T, c *testenv.Cluster, current string) string {
	t.Helper()
	src, err := clientcmd.LoadFromFile(c.Kubeconfig)
	if err != nil {
		t.Fatal(err)
	}
	cur := src.Contexts[src.CurrentContext]
	cfg := clientcmdapi.NewConfig()
	cfg.Clusters["dev"] = src.Clusters[cur.Cluster]
	cfg.AuthInfos["dev"] = src.AuthInfos[cur.AuthInfo]
	cfg.Clusters["prod"] = &clientcmdapi.Cluster{Server: "https://127.0.0.1:1"}
	cfg.AuthInfos["prod"] = &clientcmdapi.AuthInfo{Token: "unused"}
	cfg.Contexts["kind-dev"] = &clientcmdapi.Context{Cluster: "dev", AuthInfo: "dev", Namespace: "default"}
	cfg.Contexts["prod"] = &clientcmdapi.Context{Cluster: "prod", AuthInfo: "prod", Namespace: "default"}
	cfg.CurrentContext = current
	file := filepath.Join(t.TempDir(), "config")
	if err := clientcmd.WriteToFile(*cfg, file); err != nil {
		t.Fatal(err)
	}
	return file
}

// TestIncidentsFindTheInstalledDaemon is the new user's first try: the
// chart installed in its namespace, a kubeconfig whose context points at
// another, and `autorollbackd incidents` with no flag lists the daemon's
// incidents. Then the output formats, -n, --context and the case of two
// daemons.
func TestIncidentsFindTheInstalledDaemon(t *testing.T) {
	c := testenv.Require(t)
	ns := c.Namespace(t)
	installChart(t, c, ns)
	t.Setenv("KUBECONFIG", laptopKubeconfig(t, c, "kind-dev"))

	t.Run("before the first alert", func(t *testing.T) {
		code, stdout, stderr := execute(t, nil, "incidents")
		if code != ExitOK || stdout != "" || stderr != "No incidents in namespace "+ns+".\n" {
			t.Fatalf("code %d, stdout %q, stderr %q; want 0, nothing and no incidents in %s", code, stdout, stderr, ns)
		}
	})

	start := time.Now().Add(-time.Hour).UTC().Truncate(time.Second)
	older := recordIncident(t, c, ns, "checkout", incident.StateResolved, start)
	older.ResolvedAt = start.Add(10 * time.Minute)
	if err := (&incident.Store{Client: c.Client, Namespace: ns}).Update(context.Background(), older); err != nil {
		t.Fatal(err)
	}
	newer := recordIncident(t, c, ns, "payments", incident.StateVerifying, start.Add(30*time.Minute))

	t.Run("no flag", func(t *testing.T) {
		code, stdout, stderr := execute(t, nil, "incidents")
		if code != ExitOK {
			t.Fatalf("exit code %d, stderr %q", code, stderr)
		}
		lines := strings.Split(strings.TrimSuffix(stdout, "\n"), "\n")
		if len(lines) != 3 || !strings.HasPrefix(lines[0], "ID ") ||
			!strings.HasPrefix(lines[1], newer.ID+" ") || !strings.HasPrefix(lines[2], older.ID+" ") {
			t.Fatalf("want a header and both incidents, newest first:\n%s", stdout)
		}
		for _, want := range []string{"Deployment shop/payments", "verifying", "rollback (error_rate)", "resolved", "10m0s"} {
			if !strings.Contains(stdout, want) {
				t.Errorf("output lacks %q:\n%s", want, stdout)
			}
		}
	})

	t.Run("-o json", func(t *testing.T) {
		code, stdout, stderr := execute(t, nil, "incidents", "-o", "json")
		if code != ExitOK {
			t.Fatalf("exit code %d, stderr %q", code, stderr)
		}
		var got []incident.Incident
		if err := json.Unmarshal([]byte(stdout), &got); err != nil {
			t.Fatalf("not a JSON list of incidents: %v\n%s", err, stdout)
		}
		if len(got) != 2 || got[0].ID != newer.ID || got[1].ID != older.ID || got[1].ResolvedAt.IsZero() || len(got[0].Timeline) != 1 {
			t.Errorf("want both whole incidents, newest first; got %+v", got)
		}
	})

	t.Run("-o yaml", func(t *testing.T) {
		code, stdout, stderr := execute(t, nil, "incidents", "list", "--open", "-o", "yaml")
		if code != ExitOK {
			t.Fatalf("exit code %d, stderr %q", code, stderr)
		}
		var got []incident.Incident
		if err := yaml.UnmarshalStrict([]byte(stdout), &got); err != nil {
			t.Fatalf("not a YAML list of incidents: %v\n%s", err, stdout)
		}
		if len(got) != 1 || got[0].ID != newer.ID || got[0].Target.Name != "payments" {
			t.Errorf("want the open incident only; got %+v", got)
		}
	})

	t.Run("show -o json", func(t *testing.T) {
		code, stdout, stderr := execute(t, nil, "incidents", "show", older.ID, "-o", "json")
		if code != ExitOK {
			t.Fatalf("exit code %d, stderr %q", code, stderr)
		}
		var got incident.Incident
		if err := json.Unmarshal([]byte(stdout), &got); err != nil || got.ID != older.ID {
			t.Fatalf("want incident %s as JSON, got %v:\n%s", older.ID, err, stdout)
		}
	})

	t.Run("-o wide", func(t *testing.T) {
		code, stdout, stderr := execute(t, nil, "incidents", "-o", "wide")
		if code != ExitOK {
			t.Fatalf("exit code %d, stderr %q", code, stderr)
		}
		lines := strings.Split(stdout, "\n")
		header := strings.Fields(lines[0])
		want := []string{"ID", "WORKLOAD", "STATE", "DECISION", "STARTED", "DURATION", "CLUSTER", "REVISION", "ALERTS", "ACTIONS", "LAST", "ACTION", "PAGES", "RESOLVED"}
		if !slices.Equal(header, want) {
			t.Errorf("header %q, want %q", header, want)
		}
		row := strings.Fields(lines[2]) // the older, resolved incident
		if len(row) < 7 || !slices.Equal(row[len(row)-7:], []string{"eu-west-1", "4", "1", "0", "-", "0", older.ResolvedAt.UTC().Format(time.RFC3339)}) {
			t.Errorf("row %q lacks cluster, revision, alerts, actions, last action, pages and resolution time", row)
		}
	})

	t.Run("bad output", func(t *testing.T) {
		code, _, stderr := execute(t, nil, "incidents", "-o", "xml")
		want := "autorollbackd incidents: -o/--output \"xml\": want json, yaml or wide (see 'autorollbackd incidents --help')\n"
		if code != ExitUsage || stderr != want {
			t.Errorf("code %d, stderr %q; want %d, %q", code, stderr, ExitUsage, want)
		}
	})

	t.Run("--context", func(t *testing.T) {
		t.Setenv("KUBECONFIG", laptopKubeconfig(t, c, "prod"))
		code, _, stderr := execute(t, nil, "incidents")
		if code != ExitError || !strings.Contains(stderr, "https://127.0.0.1:1") {
			t.Errorf("in context prod: code %d, stderr %q; want a failure to reach its server", code, stderr)
		}
		code, stdout, stderr := execute(t, nil, "incidents", "--context", "kind-dev")
		if code != ExitOK || !strings.Contains(stdout, newer.ID) {
			t.Errorf("--context kind-dev: code %d, stdout %q, stderr %q; want the incidents", code, stdout, stderr)
		}
		code, _, stderr = execute(t, nil, "incidents", "--context", "nowhere")
		if code != ExitError || !strings.Contains(stderr, `context "nowhere" does not exist`) {
			t.Errorf("--context nowhere: code %d, stderr %q", code, stderr)
		}
	})

	// A second daemon: asked for nothing, incidents says which are there.
	other := c.Namespace(t)
	otherInc := recordIncident(t, c, other, "search", incident.StateEscalated, start.Add(40*time.Minute))

	t.Run("two daemons", func(t *testing.T) {
		code, stdout, stderr := execute(t, nil, "incidents")
		first, second := min(ns, other), max(ns, other)
		want := fmt.Sprintf("autorollbackd incidents: found autorollbackd in 2 namespaces (%s, %s): choose one with -n/--namespace\n", first, second)
		if code != ExitError || stdout != "" || stderr != want {
			t.Errorf("code %d, stdout %q, stderr %q; want %d and %q", code, stdout, stderr, ExitError, want)
		}
	})

	t.Run("-n wins", func(t *testing.T) {
		for _, flag := range []string{"-n", "--namespace"} {
			code, stdout, stderr := execute(t, nil, "incidents", flag, other)
			if code != ExitOK || !strings.Contains(stdout, otherInc.ID) || strings.Contains(stdout, newer.ID) {
				t.Errorf("%s %s: code %d, stderr %q; want only its incident:\n%s", flag, other, code, stderr, stdout)
			}
		}
	})
}

// syncBuffer is a bytes.Buffer written by one goroutine and read by another.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// TestIncidentsWatch: `incidents --watch` lists the incidents, prints a row
// for each new one and each change, and ends when its context does.
func TestIncidentsWatch(t *testing.T) {
	c := testenv.Require(t)
	ns := c.Namespace(t)
	start := time.Now().Add(-time.Hour).UTC().Truncate(time.Second)
	first := recordIncident(t, c, ns, "checkout", incident.StateVerifying, start)

	for _, tc := range []struct {
		output string
		// seen reports whether out shows inc in state.
		seen func(out string, inc *incident.Versioned, state incident.State) bool
	}{
		{"", func(out string, inc *incident.Versioned, state incident.State) bool {
			for _, l := range strings.Split(out, "\n") {
				if f := strings.Fields(l); len(f) > 3 && f[0] == inc.ID && f[3] == string(state) {
					return true
				}
			}
			return false
		}},
		{"json", func(out string, inc *incident.Versioned, state incident.State) bool {
			dec := json.NewDecoder(strings.NewReader(out))
			for {
				var got incident.Incident
				if dec.Decode(&got) != nil {
					return false
				}
				if got.ID == inc.ID && got.State == state {
					return true
				}
			}
		}},
	} {
		t.Run("output "+cmp.Or(tc.output, "table"), func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			var stdout, stderr syncBuffer
			done := make(chan int, 1)
			go func() {
				args := []string{"incidents", "--watch", "--kubeconfig", c.Kubeconfig, "-n", ns}
				if tc.output != "" {
					args = append(args, "-o", tc.output)
				}
				done <- Execute(ctx, args, Env{Stdout: &stdout, Stderr: &stderr})
			}()
			waitFor := func(what string, inc *incident.Versioned, state incident.State) {
				t.Helper()
				testenv.Eventually(t, 30*time.Second, what, func(context.Context) (bool, string) {
					return tc.seen(stdout.String(), inc, state), stdout.String() + stderr.String()
				})
			}
			waitFor("the incident there at the start", first, incident.StateVerifying)

			added := recordIncident(t, c, ns, "search-"+cmp.Or(tc.output, "table"), incident.StateActing, start.Add(time.Minute))
			waitFor("the new incident", added, incident.StateActing)

			added.State, added.ResolvedAt = incident.StateResolved, time.Now()
			if err := (&incident.Store{Client: c.Client, Namespace: ns}).Update(context.Background(), added); err != nil {
				t.Fatal(err)
			}
			waitFor("the incident's change", added, incident.StateResolved)

			cancel()
			select {
			case code := <-done:
				if code != ExitOK {
					t.Errorf("exit code %d after the watch was interrupted, stderr %q", code, stderr.String())
				}
			case <-time.After(10 * time.Second):
				t.Fatal("--watch went on after its context ended")
			}
		})
	}
}

// TestIncidentsWithNamespaceRights: someone allowed to read ConfigMaps in
// the daemon's namespace alone (here by --as, kubectl's impersonation) is
// warned that the daemon cannot be looked for, and reads the records in
// the namespace of the kubeconfig context.
func TestIncidentsWithNamespaceRights(t *testing.T) {
	c := testenv.Require(t)
	ns := c.Namespace(t)
	ctx := context.Background()
	role := &rbacv1.Role{ObjectMeta: metav1.ObjectMeta{Name: "incident-reader", Namespace: ns},
		Rules: []rbacv1.PolicyRule{{APIGroups: []string{""}, Resources: []string{"configmaps"}, Verbs: []string{"get", "list"}}}}
	if _, err := c.Client.RbacV1().Roles(ns).Create(ctx, role, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	binding := &rbacv1.RoleBinding{ObjectMeta: metav1.ObjectMeta{Name: "incident-reader", Namespace: ns},
		RoleRef:  rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "Role", Name: role.Name},
		Subjects: []rbacv1.Subject{{APIGroup: rbacv1.GroupName, Kind: rbacv1.UserKind, Name: "alice"}}}
	if _, err := c.Client.RbacV1().RoleBindings(ns).Create(ctx, binding, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	inc := recordIncident(t, c, ns, "checkout", incident.StateEscalated, time.Now().Add(-time.Hour).UTC())
	kubeconfig := laptopKubeconfig(t, c, "kind-dev")
	testenv.Eventually(t, 30*time.Second, "alice's Role in force", func(ctx context.Context) (bool, string) {
		code, stdout, stderr := execute(t, nil, "incidents", "--kubeconfig", kubeconfig, "--as", "alice", "-n", ns)
		return code == ExitOK && strings.Contains(stdout, inc.ID), stdout + stderr
	})

	// The context's namespace is default: alice may read nothing there.
	code, _, stderr := execute(t, nil, "incidents", "--kubeconfig", kubeconfig, "--as", "alice")
	if code != ExitError || !strings.Contains(stderr, `warning: cannot look for the daemon in every namespace`) ||
		!strings.Contains(stderr, `reading namespace "default" of the client configuration, give -n to choose another`) ||
		!strings.Contains(stderr, `User "alice" cannot list resource "configmaps" in API group "" in the namespace "default"`) {
		t.Errorf("code %d, stderr %q; want a warning and then a refusal in namespace default", code, stderr)
	}

	// With the daemon's namespace in the context, alice reads its incidents.
	cfg, err := clientcmd.LoadFromFile(kubeconfig)
	if err != nil {
		t.Fatal(err)
	}
	cfg.Contexts["kind-dev"].Namespace = ns
	if err := clientcmd.WriteToFile(*cfg, kubeconfig); err != nil {
		t.Fatal(err)
	}
	code, stdout, stderr := execute(t, nil, "incidents", "--kubeconfig", kubeconfig, "--as", "alice")
	if code != ExitOK || !strings.Contains(stdout, inc.ID) || !strings.Contains(stderr, `reading namespace "`+ns+`"`) {
		t.Errorf("code %d, stdout %q, stderr %q; want the warning and the incident", code, stdout, stderr)
	}
}
