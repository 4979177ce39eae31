package escalate

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
)

func checkWebhook(n NotifierConfig) []error {
	c := n.Webhook
	if c == nil {
		return nil
	}
	if c.URL == "" {
		return []error{keyErr("webhook.url", "required")}
	}
	if err := checkHTTPURL(c.URL); err != nil {
		return []error{&KeyError{Key: "webhook.url", Err: err}}
	}
	return nil
}

// WebhookPayload is the JSON body a notifier of type webhook POSTs. Version
// changes only when a field changes meaning or goes away.
type WebhookPayload struct {
	Version  string      `json:"version"` // "1"
	Kind     MessageKind `json:"kind"`
	Level    string      `json:"level"`
	Incident Incident    `json:"incident"`
	Summary  string      `json:"summary"`
	Details  []string    `json:"details"` // never null
}

// WebhookPayloadVersion is the current WebhookPayload.Version.
const WebhookPayloadVersion = "1"

// webhookNotifier POSTs a WebhookPayload; any 2xx answer is delivery.
type webhookNotifier struct {
	url   string
	token *fileSecret // nil without a bearer token
	http  *http.Client
}

func newWebhook(key string, n NotifierConfig, env buildEnv) (sender, []*fileSecret, error) {
	w := &webhookNotifier{url: n.Webhook.URL, http: env.http}
	if n.Webhook.BearerTokenFile == "" {
		return w, nil, nil
	}
	t, err := newFileSecret(key+".webhook.bearerTokenFile", n.Webhook.BearerTokenFile, nil, env)
	if err != nil {
		return nil, nil, err
	}
	w.token = t
	return w, []*fileSecret{t}, nil
}

func (w *webhookNotifier) send(ctx context.Context, m Message) error {
	details := m.Details
	if details == nil {
		details = []string{}
	}
	body, err := json.Marshal(WebhookPayload{
		Version: WebhookPayloadVersion, Kind: m.Kind, Level: m.Level,
		Incident: m.Incident, Summary: m.Summary, Details: details,
	})
	if err != nil {
		return fmt.Errorf("encode payload: %w", err)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, w.url, bytes.NewReader(body))
	if err != nil {
		return fmt.Errorf("build request: %w", err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "autorollbackd")
	if w.token != nil {
		req.Header.Set("Authorization", "Bearer "+w.token.get())
	}
	resp, err := w.http.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return fmt.Errorf("HTTP %s", resp.Status)
	}
	return nil
}
