package harness

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"
)

// Main runs run with a context that ends on Ctrl-C, SIGTERM or after
// timeout, so that every program deletes its cluster however it ends, and
// exits 1 with the error, prefixed by the program's name, when run fails.
func Main(name string, timeout time.Duration, run func(context.Context) error) {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	ctx, cancel := context.WithTimeout(ctx, timeout)
	err := run(ctx)
	cancel()
	stop()
	if err != nil {
		fmt.Fprintf(os.Stderr, "%s: %v\n", name, err)
		os.Exit(1)
	}
}

// Variant is a daemon configuration a program measures.
type Variant struct {
	Name string
	// Engine is added to the configuration's engine section, Extra to its
	// top level.
	Engine, Extra string
	// What says what the variant changes, for the results.
	What string
}

// Choose returns the variants of all named in the comma-separated names,
// in that order.
func Choose(all []Variant, names string) ([]Variant, error) {
	var out []Variant
	for _, name := range strings.Split(names, ",") {
		found := false
		for _, v := range all {
			if v.Name == name {
				out, found = append(out, v), true
			}
		}
		if !found {
			return nil, fmt.Errorf("unknown variant %q", name)
		}
	}
	return out, nil
}

// Run is what every program starts from.
type Run struct {
	// Work is the directory for configurations, logs and raw samples.
	Work string
	// Template is the captured Alertmanager notification.
	Template []byte
	// Cluster is the local control plane; stop it when done.
	Cluster *Cluster
	// Started and Load are when the run started and the machine's load
	// average then.
	Started time.Time
	Load    string
}

// Begin starts a Run: the work directory (work, or a new temporary one
// named after prefix when work is empty), the payload template, and a
// control plane with extraNodes more nodes than testenv's one.
func Begin(ctx context.Context, work, prefix string, extraNodes int) (*Run, error) {
	r := &Run{Work: work, Started: time.Now(), Load: LoadAvg()}
	var err error
	if r.Work == "" {
		if r.Work, err = os.MkdirTemp("", prefix); err != nil {
			return nil, err
		}
	}
	if r.Template, err = ReadTemplate(); err != nil {
		return nil, err
	}
	Logf("starting the local control plane")
	if r.Cluster, err = StartCluster(ctx, extraNodes); err != nil {
		return nil, err
	}
	return r, nil
}

// Post sends one notification to the daemon's webhook at url with the
// bearer token, and returns the status and the body of the answer.
func Post(ctx context.Context, client *http.Client, url string, body []byte) (int, string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		return 0, "", err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+Token)
	resp, err := client.Do(req)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	got, err := io.ReadAll(resp.Body)
	return resp.StatusCode, strings.TrimSpace(string(got)), err
}
