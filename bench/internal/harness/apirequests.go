package harness

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"strings"

	"k8s.io/client-go/kubernetes"
)

// APICounts are the API server's requests by "VERB resource", from its
// apiserver_request_total counters.
type APICounts map[string]float64

// APIRequests reads the API server's request counters.
func APIRequests(ctx context.Context, cs kubernetes.Interface) (APICounts, error) {
	body, err := cs.CoreV1().RESTClient().Get().AbsPath("/metrics").DoRaw(ctx)
	if err != nil {
		return nil, fmt.Errorf("read the API server's metrics: %w", err)
	}
	out := APICounts{}
	for line := range strings.SplitSeq(string(body), "\n") {
		labels, ok := strings.CutPrefix(line, "apiserver_request_total{")
		if !ok {
			continue
		}
		end := strings.LastIndexByte(labels, '}')
		if end < 0 {
			continue
		}
		v, err := strconv.ParseFloat(strings.TrimSpace(labels[end+1:]), 64)
		if err != nil {
			continue
		}
		l := parseLabels(labels[:end])
		res := l["resource"]
		if sub := l["subresource"]; sub != "" {
			res += "/" + sub
		}
		out[l["verb"]+" "+res] += v
	}
	return out, nil
}

// parseLabels parses the labels of a series in the text exposition format;
// the API server's label values hold no escaped quotes.
func parseLabels(s string) map[string]string {
	out := map[string]string{}
	for s != "" {
		name, rest, ok := strings.Cut(s, `="`)
		if !ok {
			break
		}
		value, rest, _ := strings.Cut(rest, `"`)
		out[strings.TrimPrefix(name, ",")] = value
		s = strings.TrimPrefix(rest, ",")
	}
	return out
}

// Since returns what c counted after base.
func (c APICounts) Since(base APICounts) APICounts {
	out := APICounts{}
	for k, v := range c {
		if d := v - base[k]; d > 0 {
			out[k] = d
		}
	}
	return out
}

// PerAlert describes the requests but LIST and WATCH of the given resources
// (of every resource when none is given), each divided by alerts, largest
// first.
func (c APICounts) PerAlert(alerts int, resources ...string) string {
	type entry struct {
		what string
		n    float64
	}
	var entries []entry
	var total float64
	for k, n := range c {
		verb, res, _ := strings.Cut(k, " ")
		if (len(resources) > 0 && !slices.Contains(resources, res)) || verb == "LIST" || verb == "WATCH" {
			continue
		}
		entries = append(entries, entry{k, n})
		total += n
	}
	if len(entries) == 0 || alerts == 0 {
		return "–"
	}
	slices.SortFunc(entries, func(a, b entry) int {
		if a.n != b.n {
			if a.n > b.n {
				return -1
			}
			return 1
		}
		return strings.Compare(a.what, b.what)
	})
	var parts []string
	for _, e := range entries {
		if len(parts) == 10 {
			parts = append(parts, "…")
			break
		}
		parts = append(parts, fmt.Sprintf("%s %.2f", e.what, e.n/float64(alerts)))
	}
	return fmt.Sprintf("%.2f (%s)", total/float64(alerts), strings.Join(parts, ", "))
}
