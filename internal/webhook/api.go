package webhook

import (
	"crypto/subtle"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net/http"
	"os"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/autorollbackd/autorollbackd/internal/secretfile"
)

// DefaultAPIBearerTokenFile is where the chart mounts the read token of the
// incidents API.
const DefaultAPIBearerTokenFile = "/etc/autorollbackd/api/token"

// DefaultAPICredential returns api.auth as it is when not set.
func DefaultAPICredential() Credential {
	return Credential{BearerTokenFile: DefaultAPIBearerTokenFile}
}

// NewAPIAuthenticator returns the authenticator of api.auth, the read
// credential of the incidents API, kept apart from webhook's, the
// authenticator of webhook.auth: a credential that webhook also accepts is
// refused, at the start as an error naming the key, and after a rotation
// request by request, so that no credential both sends alerts and reads
// incidents.
//
// When api.auth is left at its default and DefaultAPIBearerTokenFile does
// not exist, as in an install that predates api.auth, the API is off:
// every request gets 404 with a message naming the key, and a warning is
// logged. The daemon still takes alerts. A file configured in any other way
// must exist, as for the webhook.
func NewAPIAuthenticator(cfg Credential, webhook *Authenticator, logger *slog.Logger) (*Authenticator, error) {
	return NewAPIAuthenticatorDefaulting(cfg, webhook, DefaultAPIBearerTokenFile, logger)
}

// NewAPIAuthenticatorDefaulting is NewAPIAuthenticator with defaultFile in
// the place of DefaultAPIBearerTokenFile, for a caller that runs where
// that path may exist, such as a test of the daemon.
func NewAPIAuthenticatorDefaulting(cfg Credential, webhook *Authenticator, defaultFile string, logger *slog.Logger) (*Authenticator, error) {
	return newAPIAuthenticator(cfg, webhook, defaultFile, logger, authOptions{interval: defaultRefreshInterval, useFSNotify: true})
}

func newAPIAuthenticator(cfg Credential, webhook *Authenticator, defaultFile string, logger *slog.Logger, opts authOptions) (*Authenticator, error) {
	switch {
	case logger == nil:
		return nil, errors.New("new API authenticator: nil logger")
	case webhook == nil:
		return nil, errors.New("new API authenticator: nil webhook authenticator")
	}
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("new API authenticator: %w", inSection("api", err))
	}
	logger = logger.With("component", "api")
	if cfg == (Credential{BearerTokenFile: defaultFile}) {
		if _, err := os.Stat(defaultFile); errors.Is(err, fs.ErrNotExist) {
			a := &Authenticator{section: apiSection.key, logger: logger,
				off: "the incidents API is off: api.auth is not configured, and its default api.auth.bearerTokenFile " + defaultFile + " does not exist"}
			logger.Warn(a.off + "; mount the read token there or set api.auth")
			return a, nil
		}
	}
	a, err := build(apiSection, AuthConfig{Credential: cfg}, logger, opts)
	if err != nil {
		return nil, fmt.Errorf("new API authenticator: %w", err)
	}
	a.exclude = webhook
	if err := a.apartFrom(webhook); err != nil {
		_ = a.Close()
		return nil, fmt.Errorf("new API authenticator: %w", err)
	}
	return a, nil
}

// apartFrom returns an error for each secret of a that a credential of
// other holds too.
func (a *Authenticator) apartFrom(other *Authenticator) error {
	var errs []error
	const why = "a credential that sends alerts must not read incidents"
	for _, c := range a.creds {
		for _, o := range other.creds {
			if c.token != nil && o.token != nil && c.token.matches(*o.token.digest.Load()) == 1 {
				errs = append(errs, &KeyError{Key: c.token.key, Err: fmt.Errorf("holds the same token as %s; %s", o.token.key, why)})
			}
			if c.password != nil && o.password != nil && subtle.ConstantTimeCompare(c.username[:], o.username[:]) == 1 &&
				c.password.matches(*o.password.digest.Load()) == 1 {
				errs = append(errs, &KeyError{Key: c.password.key, Err: fmt.Errorf("the same user name and password as %s; %s", o.key+".basicAuth", why)})
			}
		}
	}
	return errors.Join(errs...)
}

// inSection puts section in front of the keys of err's KeyErrors.
func inSection(section string, err error) error {
	var list []error
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		list = j.Unwrap()
	} else {
		list = []error{err}
	}
	out := make([]error, 0, len(list))
	for _, e := range list {
		if ke, ok := errors.AsType[*KeyError](e); ok {
			e = &KeyError{Key: section + "." + ke.Key, Err: ke.Err}
		}
		out = append(out, e)
	}
	return errors.Join(out...)
}

// excluded reports whether the authenticator a must refuse r because its
// credential also passes a.exclude.
func (a *Authenticator) excluded(r *http.Request) bool {
	if a.exclude == nil || a.exclude.disabled {
		return false
	}
	c, _ := a.exclude.identify(r)
	if c == nil {
		return false
	}
	a.logger.Error("a credential of "+a.exclude.section+" was sent to read; refused", "credential", c.key, "remote", r.RemoteAddr)
	return true
}

// RegisterAPIMetrics registers the metrics of a, the authenticator of
// api.auth, on reg: autorollbackd_api_auth_failures_total, and its reloads
// in autorollbackd_secret_reloads_total.
func RegisterAPIMetrics(reg prometheus.Registerer, a *Authenticator) error {
	if err := reg.Register(prometheus.NewCounterFunc(prometheus.CounterOpts{
		Name: "autorollbackd_api_auth_failures_total",
		Help: "Incidents API requests refused for missing or invalid credentials, or for a webhook credential.",
	}, func() float64 { return float64(a.failures.Load()) })); err != nil {
		return fmt.Errorf("register API metrics: %w", err)
	}
	return secretfile.RegisterReloads(reg, &a.reloads)
}
