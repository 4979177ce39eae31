package incident

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"time"
)

// Summary is one incident in a list.
type Summary struct {
	ID         string    `json:"id"`
	Target     string    `json:"target"`
	State      State     `json:"state"`
	StartedAt  time.Time `json:"startedAt"`
	ResolvedAt time.Time `json:"resolvedAt,omitzero"`
	Outcome    string    `json:"outcome"`
	Reason     string    `json:"reason"`
	Actions    int       `json:"actions"`
	Pages      int       `json:"pages"`
}

// Summarise returns the list entry of an incident.
func (i *Incident) Summarise() Summary {
	return Summary{
		ID: i.ID, Target: i.Target.String(), State: i.State, StartedAt: i.StartedAt, ResolvedAt: i.ResolvedAt,
		Outcome: string(i.Decision.Outcome), Reason: string(i.Decision.Reason), Actions: len(i.Actions), Pages: len(i.Pages),
	}
}

// Handler serves GET /api/v1/incidents (?state=open for open ones only)
// and GET /api/v1/incidents/{id}. Put it behind a read credential of its
// own (api.auth), not the webhook's: incidents name workloads and carry
// alert details.
func Handler(s *Store, logger *slog.Logger) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /api/v1/incidents", func(w http.ResponseWriter, r *http.Request) {
		open := r.URL.Query().Get("state") == "open"
		list, err := s.List(r.Context(), open)
		if err != nil {
			fail(w, logger, http.StatusServiceUnavailable, "list incidents", err)
			return
		}
		out := make([]Summary, 0, len(list))
		for _, v := range list {
			out = append(out, v.Summarise())
		}
		writeJSON(w, http.StatusOK, out)
	})
	mux.HandleFunc("GET /api/v1/incidents/{id}", func(w http.ResponseWriter, r *http.Request) {
		v, err := s.Get(r.Context(), r.PathValue("id"))
		if errors.Is(err, ErrNotFound) {
			writeJSON(w, http.StatusNotFound, map[string]string{"error": "no incident " + r.PathValue("id")})
			return
		}
		if err != nil {
			fail(w, logger, http.StatusServiceUnavailable, "read incident", err)
			return
		}
		writeJSON(w, http.StatusOK, v.Incident)
	})
	return mux
}

func fail(w http.ResponseWriter, logger *slog.Logger, code int, what string, err error) {
	if errors.Is(err, context.Canceled) {
		return
	}
	logger.Error(what, "err", err)
	writeJSON(w, code, map[string]string{"error": what + ": the Kubernetes API is not answering"})
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v)
}
