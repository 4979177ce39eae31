package verify

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/autorollbackd/autorollbackd/internal/policy"
	"github.com/autorollbackd/autorollbackd/internal/strtemplate"
)

// maxBodyBytes bounds how much of a response body is read for bodyRegex.
const maxBodyBytes = 1 << 20

// httpCheck is an HTTPCheck with its defaults applied and its template and
// regular expression compiled.
type httpCheck struct {
	HTTPCheck
	scope  scope
	url    *strtemplate.Template
	body   *regexp.Regexp // nil: any body
	client *http.Client
}

// newHTTPClient returns the client used when Options.HTTPClient is nil: it
// gives up after timeout and follows redirects only within the same host
// (a redirect elsewhere is returned as the response, and judged as such).
func newHTTPClient(transport http.RoundTripper, timeout time.Duration) *http.Client {
	return &http.Client{
		Transport: transport,
		Timeout:   timeout,
		CheckRedirect: func(req *http.Request, via []*http.Request) error {
			if len(via) >= 10 {
				return errors.New("stopped after 10 redirects")
			}
			if req.URL.Host != via[0].URL.Host {
				return http.ErrUseLastResponse
			}
			return nil
		},
	}
}

// attempt is the verdict on one request.
type attempt struct {
	status  Status
	message string
}

// checkHTTP sends the request up to 1+retries times, interval apart, and
// passes on the first expected answer. While floor has not passed it keeps
// trying beyond that. Otherwise the last attempt decides: a wrong status, a
// body that does not match or a transport error fail; a bearer token that
// cannot be read is inconclusive (nothing was asked of the service).
func (v *Verifier) checkHTTP(ctx context.Context, c *httpCheck, target policy.Ref, floor time.Time) (Status, string) {
	data := templateData{Name: target.Name, Namespace: target.Namespace, Kind: string(target.Kind)}
	rawURL, err := execute(c.url, data)
	if err != nil {
		return StatusInconclusive, fmt.Sprintf("Could not build the URL: %v.", err)
	}
	attempts := 1 + *c.Retries
	// which names attempt i in messages.
	which := func(i int) string {
		if i <= attempts {
			return fmt.Sprintf("attempt %d of %d", i, attempts)
		}
		return fmt.Sprintf("attempt %d, after the %d configured", i, attempts)
	}
	rolloutTimeout := v.cfg.Rollout.Timeout.Duration
	var last attempt
	for i := 1; ; i++ {
		last = v.httpAttempt(ctx, c, target, rawURL)
		if ctx.Err() != nil {
			return StatusInconclusive, fmt.Sprintf("Verification was cancelled during %s: %s.", which(i), last.message)
		}
		if last.status == StatusPass {
			if i > attempts {
				return StatusPass, fmt.Sprintf("%s (%s: rollout.timeout %s had not yet passed).", last.message, which(i), rolloutTimeout)
			}
			return StatusPass, fmt.Sprintf("%s (%s).", last.message, which(i))
		}
		v.logger.Debug("http check attempt failed", "check", c.Name, "namespace", target.Namespace, "workload", target.Name,
			"attempt", i, "attempts", attempts, "detail", last.message)
		if i >= attempts && !v.clock.Now().Before(floor) {
			if i > attempts {
				return last.status, fmt.Sprintf("%s (%s: kept trying until rollout.timeout %s had passed).", last.message, which(i), rolloutTimeout)
			}
			return last.status, fmt.Sprintf("%s (%s).", last.message, which(i))
		}
		if !v.sleep(ctx, c.Interval.Duration) {
			return StatusInconclusive, fmt.Sprintf("Verification was cancelled after %s: %s.", which(i), last.message)
		}
	}
}

// httpAttempt sends the request once, bounded by the check's timeout.
func (v *Verifier) httpAttempt(ctx context.Context, c *httpCheck, target policy.Ref, rawURL string) attempt {
	what := c.Method + " " + rawURL
	var token string
	if ref := c.BearerTokenSecret; !ref.IsZero() {
		var err error
		if token, err = v.bearerToken(ctx, cmp.Or(v.secretNamespace, target.Namespace), ref); err != nil {
			return attempt{StatusInconclusive, fmt.Sprintf("%s not sent: %v", what, err)}
		}
	}
	ctx, cancel := v.withTimeout(ctx, c.Timeout.Duration)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, c.Method, rawURL, nil)
	if err != nil {
		return attempt{StatusFail, fmt.Sprintf("%s: build request: %v", what, err)}
	}
	req.Header.Set("User-Agent", "autorollbackd-verify")
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := c.client.Do(req)
	if err != nil {
		// The check's deadline and the default client's Timeout are the
		// same duration; either may fire first.
		var timeout interface{ Timeout() bool }
		if context.Cause(ctx) == errTimeout || (errors.As(err, &timeout) && timeout.Timeout()) {
			return attempt{StatusFail, fmt.Sprintf("%s: no response within %s", what, c.Timeout.Duration)}
		}
		// *url.Error repeats the method and URL; keep only the cause.
		var uerr *url.Error
		if errors.As(err, &uerr) {
			err = uerr.Err
		}
		return attempt{StatusFail, fmt.Sprintf("%s: %v", what, err)}
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxBodyBytes))
	if resp.StatusCode != c.ExpectStatus {
		msg := fmt.Sprintf("%s returned %d, want %d", what, resp.StatusCode, c.ExpectStatus)
		if loc := resp.Header.Get("Location"); loc != "" && resp.StatusCode >= 300 && resp.StatusCode < 400 {
			msg += " (redirect to " + loc + " not followed)"
		}
		return attempt{StatusFail, msg}
	}
	if c.body != nil {
		if err != nil {
			return attempt{StatusFail, fmt.Sprintf("%s returned %d but reading the body failed: %v", what, resp.StatusCode, err)}
		}
		if !c.body.Match(body) {
			return attempt{StatusFail, fmt.Sprintf("%s returned %d but the body does not match /%s/", what, resp.StatusCode, c.BodyRegex)}
		}
		return attempt{StatusPass, fmt.Sprintf("%s returned %d and the body matches /%s/", what, resp.StatusCode, c.BodyRegex)}
	}
	return attempt{StatusPass, fmt.Sprintf("%s returned %d", what, resp.StatusCode)}
}

// bearerToken reads the token from the Secret at check time, so a rotated
// token is picked up. Surrounding whitespace (a trailing newline from
// `kubectl create secret --from-file`) is trimmed. The token is never
// logged nor put in a message.
func (v *Verifier) bearerToken(ctx context.Context, namespace string, ref SecretKeyRef) (string, error) {
	s, err := v.client.CoreV1().Secrets(namespace).Get(ctx, ref.Name, metav1.GetOptions{})
	if err != nil {
		return "", fmt.Errorf("read bearer token from Secret %s/%s: %w", namespace, ref.Name, err)
	}
	b, ok := s.Data[ref.Key]
	if !ok {
		return "", fmt.Errorf("read bearer token: Secret %s/%s has no key %q", namespace, ref.Name, ref.Key)
	}
	token := strings.TrimSpace(string(b))
	if token == "" {
		return "", fmt.Errorf("read bearer token: key %q of Secret %s/%s is empty", ref.Key, namespace, ref.Name)
	}
	return token, nil
}
