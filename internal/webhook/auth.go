package webhook

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/autorollbackd/autorollbackd/internal/secretfile"
)

// Authenticator checks requests against the configured methods: bearer
// token, basic auth, verified client certificate, each either the single
// credential of its section or one of the named senders. Secrets live in
// files, are re-read when they change and are held only as SHA-256 digests.
// It is safe for concurrent use.
type Authenticator struct {
	section string // webhook.auth or api.auth, naming keys in errors and logs
	refused string // the log message of a refusal
	// disabled passes every request, as anonymous.
	disabled bool
	// off refuses every request with 404 and this message.
	off string
	// exclude refuses, request by request, a credential it accepts too.
	exclude *Authenticator
	// clientCert accepts any verified client certificate as shared.
	clientCert bool
	shared     *credential // the single credential; nil when it has no method
	creds      []*credential
	challenges []string
	logger     *slog.Logger

	failures atomic.Uint64
	reloads  secretfile.Reloads
	watcher  *watcher
}

// credential is the single credential of a section or one sender, and the
// identity it proves.
type credential struct {
	sender   Sender
	key      string // where it is configured, such as webhook.auth.senders[0]
	token    *secretFile
	username [32]byte
	password *secretFile
	subject  string
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

// NewAuthenticator returns the authenticator of webhook.auth. It reads the
// configured secret files and starts watching them. A missing, unreadable
// or empty file is an error naming its key and path, and so is a token that
// two credentials share (it could not say who sent a request); after the
// start, a failed re-read keeps the last good secret and is logged. Close
// stops the watching.
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
	a, err := build(webhookSection, cfg, logger.With("component", "webhook"), opts)
	if err != nil {
		return nil, fmt.Errorf("new webhook authenticator: %w", err)
	}
	return a, nil
}

// section describes what an Authenticator guards, for its logs and errors.
type section struct {
	key    string // the configuration key
	name   string // in log messages
	grants string // what a request that passes may do
}

var (
	webhookSection = section{key: "webhook.auth", name: "webhook", grants: "send alerts"}
	apiSection     = section{key: "api.auth", name: "API", grants: "read incidents"}
)

// build makes the authenticator of a valid configuration.
func build(sec section, cfg AuthConfig, logger *slog.Logger, opts authOptions) (*Authenticator, error) {
	section := sec.key
	a := &Authenticator{section: section, logger: logger, refused: sec.name + " request refused"}
	if cfg.InsecureDisableAuth {
		a.disabled = true
		logger.Warn(fmt.Sprintf("%s authentication is disabled (%s.insecureDisableAuth: true): anyone who reaches the endpoint can %s", sec.name, section, sec.grants))
		return a, nil
	}

	if c := cfg.Credential; !c.empty() {
		a.shared = &credential{sender: Sender{Name: SenderDefault}, key: section}
		if c.BearerTokenFile != "" {
			a.shared.token = &secretFile{key: section + ".bearerTokenFile", path: c.BearerTokenFile}
		}
		if c.BasicAuth.Username != "" {
			a.shared.username = sha256.Sum256([]byte(c.BasicAuth.Username))
			a.shared.password = &secretFile{key: section + ".basicAuth.passwordFile", path: c.BasicAuth.PasswordFile}
		}
		a.clientCert = c.RequireClientCert
		a.creds = append(a.creds, a.shared)
	}
	for i, s := range cfg.Senders {
		c := &credential{key: fmt.Sprintf("%s.senders[%d]", section, i), subject: s.ClientCertSubject}
		c.sender = Sender{Name: s.Name}
		if !slices.Contains(s.Namespaces, "*") {
			c.sender.Namespaces = slices.Clone(s.Namespaces)
		}
		if s.BearerTokenFile != "" {
			c.token = &secretFile{key: c.key + ".bearerTokenFile", path: s.BearerTokenFile}
		}
		if s.BasicAuth.Username != "" {
			c.username = sha256.Sum256([]byte(s.BasicAuth.Username))
			c.password = &secretFile{key: c.key + ".basicAuth.passwordFile", path: s.BasicAuth.PasswordFile}
		}
		a.creds = append(a.creds, c)
	}

	var errs []error
	for _, f := range a.secretFiles() {
		if _, err := f.load(); err != nil {
			errs = append(errs, err)
		}
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	if err := a.distinctTokens(); err != nil {
		return nil, err
	}
	if a.has(func(c *credential) bool { return c.token != nil }) {
		a.challenges = append(a.challenges, `Bearer realm="autorollbackd"`)
	}
	if a.has(func(c *credential) bool { return c.password != nil }) {
		a.challenges = append(a.challenges, `Basic realm="autorollbackd", charset="UTF-8"`)
	}
	if a.clientCert || a.has(func(c *credential) bool { return c.subject != "" }) {
		// RFC 9110 wants a challenge with every 401; there is no standard
		// scheme for client certificates, so name it plainly.
		a.challenges = append(a.challenges, `ClientCertificate realm="autorollbackd"`)
	}
	var paths []string
	for _, f := range a.secretFiles() {
		paths = append(paths, f.path)
	}
	if len(paths) > 0 {
		a.watcher = watchFiles(paths, opts.interval, opts.useFSNotify, a.reload, logger)
	}
	return a, nil
}

func (a *Authenticator) has(f func(*credential) bool) bool { return slices.ContainsFunc(a.creds, f) }

// secretFiles returns every secret file of every credential.
func (a *Authenticator) secretFiles() []*secretFile {
	var out []*secretFile
	for _, c := range a.creds {
		for _, f := range []*secretFile{c.token, c.password} {
			if f != nil {
				out = append(out, f)
			}
		}
	}
	return out
}

// distinctTokens refuses two credentials with the same bearer token: a
// request with it could not say which sender it comes from.
func (a *Authenticator) distinctTokens() error {
	seen := map[[32]byte]string{}
	var errs []error
	for _, c := range a.creds {
		if c.token == nil {
			continue
		}
		d := *c.token.digest.Load()
		if other, ok := seen[d]; ok {
			errs = append(errs, &KeyError{Key: c.token.key, Err: fmt.Errorf("holds the same token as %s", other)})
			continue
		}
		seen[d] = c.token.key
	}
	return errors.Join(errs...)
}

// senderNames returns the names of the senders a request may be
// identified as.
func (a *Authenticator) senderNames() []string {
	if a.disabled {
		return []string{SenderAnonymous}
	}
	var out []string
	for _, c := range a.creds {
		out = append(out, c.sender.Name)
	}
	return out
}

// load reads the file and reports whether the secret changed.
func (s *secretFile) load() (bool, error) {
	b, err := secretfile.Read(s.path)
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

// matches compares the digest of a given secret with the secret in
// constant time. Comparing digests rather than the values keeps the
// secret's length out of the timing too.
func (s *secretFile) matches(given [32]byte) int {
	return subtle.ConstantTimeCompare(given[:], s.digest.Load()[:])
}

func (a *Authenticator) reload() {
	for _, s := range a.secretFiles() {
		changed, err := s.load()
		switch {
		case err != nil:
			a.reloads.Failed()
			a.logger.Error("cannot re-read secret, keeping the last good one", "err", err, "file", s.path)
		case changed:
			a.reloads.Succeeded()
			a.logger.Info("secret reloaded", "key", s.key, "file", s.path)
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
		return fmt.Errorf("stop watching %s secrets: %w", a.section, err)
	}
	return nil
}

type senderKey struct{}

// SenderFromContext returns the sender that Wrap authenticated the request
// of ctx as, and false outside Wrap.
func SenderFromContext(ctx context.Context) (Sender, bool) {
	s, ok := ctx.Value(senderKey{}).(Sender)
	return s, ok
}

// Wrap returns h behind authentication. A request that passes none of the
// configured methods gets 401 with a WWW-Authenticate challenge per method
// and a one-line JSON error, and h never sees it (so its body is never read).
// h finds the sender in the request's context (SenderFromContext); with
// authentication disabled every request passes, as SenderAnonymous.
func (a *Authenticator) Wrap(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if a.off != "" {
			writeJSON(w, http.StatusNotFound, errorBody{Error: a.off})
			return
		}
		sender := Sender{Name: SenderAnonymous}
		if !a.disabled {
			c, msg := a.identify(r)
			if c != nil && a.excluded(r) {
				c, msg = nil, "invalid credentials"
			}
			if c == nil {
				a.failures.Add(1)
				for _, ch := range a.challenges {
					w.Header().Add("WWW-Authenticate", ch)
				}
				refuse(w, r, a.logger, a.refused, requestError(http.StatusUnauthorized, reasonUnauthorized, "%s", msg), nil)
				return
			}
			sender = c.sender
		}
		h.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), senderKey{}, sender)))
	})
}

// identify returns the credential r passes, or nil and why none.
//
// A verified client certificate that names a sender's clientCertSubject, or
// any verified one with requireClientCert, decides; the Authorization
// header is then not looked at, so a request that passes by certificate
// passes as before whatever else it carries. Otherwise the Authorization
// header decides. The server asks every client for a certificate, so a
// certificate that matches nothing is no credential and is ignored.
func (a *Authenticator) identify(r *http.Request) (*credential, string) {
	var certificate bool // a verified certificate that no sender's subject names
	if r.TLS != nil && len(r.TLS.VerifiedChains) > 0 {
		certificate = a.has(func(c *credential) bool { return c.subject != "" })
		leaf := r.TLS.VerifiedChains[0][0]
		var matches []*credential
		for _, c := range a.creds {
			if c.subject != "" && certificateNames(leaf, c.subject) {
				matches = append(matches, c)
			}
		}
		switch {
		case len(matches) == 1:
			return matches[0], ""
		case len(matches) > 1:
			a.logger.Error("a client certificate matches several senders; refused", "senders", senderList(matches), "subject", leaf.Subject.String())
			return nil, "client certificate matches several senders"
		case a.clientCert:
			return a.shared, ""
		}
	}

	h := r.Header.Get("Authorization")
	if h == "" {
		switch {
		case certificate:
			return nil, "client certificate matches no sender"
		case !a.has(func(c *credential) bool { return c.token != nil || c.password != nil }):
			return nil, "client certificate required"
		}
		return nil, "authentication required"
	}
	scheme, given, _ := strings.Cut(h, " ")
	var matches []*credential
	switch {
	case strings.EqualFold(scheme, "Bearer") && a.has(func(c *credential) bool { return c.token != nil }):
		d := sha256.Sum256([]byte(strings.TrimSpace(given)))
		// Every token is compared, so that timing does not tell which
		// matched or how many were tried.
		for _, c := range a.creds {
			if c.token != nil && c.token.matches(d) == 1 {
				matches = append(matches, c)
			}
		}
	case strings.EqualFold(scheme, "Basic") && a.has(func(c *credential) bool { return c.password != nil }):
		user, pass, ok := r.BasicAuth()
		u, p := sha256.Sum256([]byte(user)), sha256.Sum256([]byte(pass))
		// Both comparisons always run, for every credential, so timing does
		// not tell which failed.
		for _, c := range a.creds {
			if c.password == nil {
				continue
			}
			if ok && subtle.ConstantTimeCompare(u[:], c.username[:])&c.password.matches(p) == 1 {
				matches = append(matches, c)
			}
		}
	default:
		return nil, "unsupported authorization scheme " + strconv.Quote(clip(scheme, 20))
	}
	switch len(matches) {
	case 0:
		return nil, "invalid credentials"
	case 1:
		return matches[0], ""
	}
	// Refused at the start; possible only after a rotation.
	a.logger.Error("a credential matches several senders; refused", "senders", senderList(matches))
	return nil, "invalid credentials"
}

// certificateNames reports whether name is the certificate's subject
// common name or one of its DNS or URI subject alternative names.
func certificateNames(cert *x509.Certificate, name string) bool {
	if cert.Subject.CommonName == name || slices.Contains(cert.DNSNames, name) {
		return true
	}
	return slices.ContainsFunc(cert.URIs, func(u *url.URL) bool { return u.String() == name })
}

func senderList(cs []*credential) string {
	var names []string
	for _, c := range cs {
		names = append(names, c.sender.Name)
	}
	return strings.Join(names, ", ")
}
