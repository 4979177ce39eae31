package webhook

import (
	"bytes"
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync/atomic"
	"time"
)

// Authenticator checks webhook requests against the configured methods:
// bearer token, basic auth, verified client certificate. Secrets live in
// files, are re-read when they change and are held only as SHA-256 digests.
// It is safe for concurrent use.
type Authenticator struct {
	disabled   bool
	clientCert bool
	username   [32]byte
	token      *secretFile
	password   *secretFile
	challenges []string
	logger     *slog.Logger

	failures atomic.Uint64
	reloads  reloadStats
	watcher  *watcher
}

// secretFile is one secret read from a file, kept as the digest of its
// whitespace-trimmed content, as Alertmanager trims the files it sends.
type secretFile struct {
	key    string
	path   string
	digest atomic.Pointer[[32]byte]
}

type authOptions struct {
	interval    time.Duration
	useFSNotify bool
}

// NewAuthenticator reads the configured secret files and starts watching
// them. A missing, unreadable or empty file is an error naming its key and
// path; after the start, a failed re-read keeps the last good secret and is
// logged. Close stops the watching.
func NewAuthenticator(cfg AuthConfig, logger *slog.Logger) (*Authenticator, error) {
	return newAuthenticator(cfg, logger, authOptions{interval: defaultRefreshInterval, useFSNotify: true})
}

func newAuthenticator(cfg AuthConfig, logger *slog.Logger, opts authOptions) (*Authenticator, error) {
	if logger == nil {
		return nil, errors.New("new webhook authenticator: nil logger")
	}
	if errs := cfg.validate(); len(errs) > 0 {
		return nil, fmt.Errorf("new webhook authenticator: %w", sortedJoin(errs))
	}
	logger = logger.With("component", "webhook")
	a := &Authenticator{logger: logger}
	if cfg.InsecureDisableAuth {
		a.disabled = true
		logger.Warn("webhook authentication is disabled (webhook.auth.insecureDisableAuth: true): anyone who reaches the endpoint can send alerts")
		return a, nil
	}

	var files []string
	var errs []error
	if cfg.BearerTokenFile != "" {
		a.token = &secretFile{key: "webhook.auth.bearerTokenFile", path: cfg.BearerTokenFile}
		a.challenges = append(a.challenges, `Bearer realm="autorollbackd"`)
	}
	if cfg.BasicAuth.Username != "" {
		a.username = sha256.Sum256([]byte(cfg.BasicAuth.Username))
		a.password = &secretFile{key: "webhook.auth.basicAuth.passwordFile", path: cfg.BasicAuth.PasswordFile}
		a.challenges = append(a.challenges, `Basic realm="autorollbackd", charset="UTF-8"`)
	}
	for _, s := range []*secretFile{a.token, a.password} {
		if s == nil {
			continue
		}
		files = append(files, s.path)
		if _, err := s.load(); err != nil {
			errs = append(errs, err)
		}
	}
	if err := errors.Join(errs...); err != nil {
		return nil, fmt.Errorf("new webhook authenticator: %w", err)
	}
	if cfg.RequireClientCert {
		a.clientCert = true
		// RFC 9110 wants a challenge with every 401; there is no standard
		// scheme for client certificates, so name it plainly.
		a.challenges = append(a.challenges, `ClientCertificate realm="autorollbackd"`)
	}
	if len(files) > 0 {
		a.watcher = watchFiles(files, opts.interval, opts.useFSNotify, a.reload, logger)
	}
	return a, nil
}

// load reads the file and reports whether the secret changed.
func (s *secretFile) load() (bool, error) {
	b, err := os.ReadFile(s.path)
	if err != nil {
		return false, &KeyError{Key: s.key, Err: fmt.Errorf("read secret: %w", err)}
	}
	defer clear(b)
	v := bytes.TrimSpace(b)
	if len(v) == 0 {
		return false, &KeyError{Key: s.key, Err: fmt.Errorf("read secret: %s is empty", s.path)}
	}
	d := sha256.Sum256(v)
	if old := s.digest.Load(); old != nil && *old == d {
		return false, nil
	}
	s.digest.Store(&d)
	return true, nil
}

// matches compares in constant time. Comparing digests rather than the
// values keeps the secret's length out of the timing too.
func (s *secretFile) matches(given string) bool {
	d := sha256.Sum256([]byte(given))
	return subtle.ConstantTimeCompare(d[:], s.digest.Load()[:]) == 1
}

func (a *Authenticator) reload() {
	for _, s := range []*secretFile{a.token, a.password} {
		if s == nil {
			continue
		}
		changed, err := s.load()
		switch {
		case err != nil:
			a.reloads.failure.Add(1)
			a.logger.Error("cannot re-read webhook secret, keeping the last good one", "err", err, "file", s.path)
		case changed:
			a.reloads.success.Add(1)
			a.logger.Info("webhook secret reloaded", "key", s.key, "file", s.path)
		}
	}
}

// Close stops watching the secret files. Wrap keeps working with the
// secrets last read.
func (a *Authenticator) Close() error {
	if a.watcher == nil {
		return nil
	}
	if err := a.watcher.Close(); err != nil {
		return fmt.Errorf("stop watching webhook secrets: %w", err)
	}
	return nil
}

// Wrap returns h behind authentication. A request that passes none of the
// configured methods gets 401 with a WWW-Authenticate challenge per method
// and a one-line JSON error, and h never sees it (so its body is never read).
// With authentication disabled Wrap returns h itself.
func (a *Authenticator) Wrap(h http.Handler) http.Handler {
	if a.disabled {
		return h
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		msg, ok := a.check(r)
		if ok {
			h.ServeHTTP(w, r)
			return
		}
		a.failures.Add(1)
		for _, c := range a.challenges {
			w.Header().Add("WWW-Authenticate", c)
		}
		reject(w, r, a.logger, requestError(http.StatusUnauthorized, reasonUnauthorized, "%s", msg), nil)
	})
}

// check reports whether r is authenticated, and if not, why.
func (a *Authenticator) check(r *http.Request) (string, bool) {
	if a.clientCert && r.TLS != nil && len(r.TLS.VerifiedChains) > 0 {
		return "", true
	}
	h := r.Header.Get("Authorization")
	if h == "" {
		if a.clientCert && a.token == nil && a.password == nil {
			return "client certificate required", false
		}
		return "authentication required", false
	}
	scheme, cred, _ := strings.Cut(h, " ")
	switch {
	case a.token != nil && strings.EqualFold(scheme, "Bearer"):
		if a.token.matches(strings.TrimSpace(cred)) {
			return "", true
		}
	case a.password != nil && strings.EqualFold(scheme, "Basic"):
		user, pass, ok := r.BasicAuth()
		u := sha256.Sum256([]byte(user))
		// Both comparisons always run, so timing does not tell which failed.
		userOK := subtle.ConstantTimeCompare(u[:], a.username[:])
		passOK := 0
		if a.password.matches(pass) {
			passOK = 1
		}
		if ok && userOK&passOK == 1 {
			return "", true
		}
	default:
		return "unsupported authorization scheme " + strconv.Quote(clip(scheme, 20)), false
	}
	return "invalid credentials", false
}
