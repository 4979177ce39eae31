package webhook

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/autorollbackd/autorollbackd/internal/secretfile"
)

// TLSOption configures ServerTLS.
type TLSOption func(*tlsOptions)

type tlsOptions struct {
	reg prometheus.Registerer
}

// WithRegisterer counts certificate reloads in
// autorollbackd_secret_reloads_total on reg, next to the webhook secrets.
func WithRegisterer(reg prometheus.Registerer) TLSOption {
	return func(o *tlsOptions) { o.reg = reg }
}

// ServerTLS builds the server's tls.Config from cfg, or returns nil when TLS
// is not configured. The certificate, key and client CA are read at once (an
// unreadable or invalid file is an error naming its key) and again on the
// first handshake after any of their files changed, so a rotated
// cert-manager Secret needs no restart. A failed re-read keeps the previous
// certificate and CA, and is logged once per change of the files.
//
// With a client CA, a client certificate is verified when one is presented
// (tls.VerifyClientCertIfGiven): kubelet probes carry none and must still
// pass; webhook.auth.requireClientCert is what demands one.
//
// Changes are noticed by comparing the files' stat on each handshake rather
// than by a watcher: the returned *tls.Config has no Close, and a goroutine
// per call would outlive it.
func ServerTLS(cfg TLSConfig, logger *slog.Logger, opts ...TLSOption) (*tls.Config, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("server.tls: %w", err)
	}
	if !cfg.enabled() {
		return nil, nil
	}
	if logger == nil {
		return nil, errors.New("server TLS: nil logger")
	}
	var o tlsOptions
	for _, opt := range opts {
		opt(&o)
	}
	f := &tlsFiles{cfg: cfg, logger: logger.With("component", "webhook")}
	if o.reg != nil {
		if err := secretfile.RegisterReloads(o.reg, &f.stats); err != nil {
			return nil, fmt.Errorf("server TLS: %w", err)
		}
	}
	f.seen = f.stamp()
	st, err := f.load()
	if err != nil {
		return nil, err
	}
	f.cur.Store(st)

	return &tls.Config{
		MinVersion: tls.VersionTLS12,
		NextProtos: []string{"h2", "http/1.1"},
		// GetConfigForClient replaces this whole config for the connection,
		// so that a server which fills in Certificates (httptest does) cannot
		// shadow the reloaded certificate. GetCertificate is there for
		// callers that clone the config and drop GetConfigForClient.
		GetConfigForClient: func(*tls.ClientHelloInfo) (*tls.Config, error) {
			return f.current().conf, nil
		},
		GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) {
			return f.current().cert, nil
		},
	}, nil
}

// tlsFiles holds what was last loaded from the TLS files.
type tlsFiles struct {
	cfg    TLSConfig
	logger *slog.Logger
	stats  secretfile.Reloads
	cur    atomic.Pointer[tlsState]

	mu   sync.Mutex // serialises stat and reload
	seen []fileStamp
}

// tlsState is one consistent load of certificate, key and client CA.
type tlsState struct {
	cert *tls.Certificate
	conf *tls.Config // the per-connection config
}

// fileStamp identifies a version of a file; os.SameFile catches the
// Kubernetes symlink swap even when size and time happen to match.
type fileStamp struct {
	fi  os.FileInfo
	err bool
}

func (s fileStamp) same(o fileStamp) bool {
	if s.err || o.err {
		return s.err == o.err
	}
	return os.SameFile(s.fi, o.fi) && s.fi.ModTime().Equal(o.fi.ModTime()) && s.fi.Size() == o.fi.Size()
}

func (f *tlsFiles) paths() []string {
	p := []string{f.cfg.CertFile, f.cfg.KeyFile}
	if f.cfg.ClientCAFile != "" {
		p = append(p, f.cfg.ClientCAFile)
	}
	return p
}

func (f *tlsFiles) stamp() []fileStamp {
	var out []fileStamp
	for _, p := range f.paths() {
		fi, err := os.Stat(p)
		out = append(out, fileStamp{fi: fi, err: err != nil})
	}
	return out
}

// current reloads the files if they changed since the last attempt, and
// returns the state to serve.
func (f *tlsFiles) current() *tlsState {
	f.mu.Lock()
	defer f.mu.Unlock()
	now := f.stamp()
	changed := false
	for i := range now {
		if !now[i].same(f.seen[i]) {
			changed = true
		}
	}
	if !changed {
		return f.cur.Load()
	}
	// Remember the attempt even if it fails: a broken file is reported once,
	// not on every handshake, and retried when it changes again.
	f.seen = now
	st, err := f.load()
	if err != nil {
		f.stats.Failed()
		f.logger.Error("cannot reload TLS files, keeping the previous certificate", "err", err)
		return f.cur.Load()
	}
	f.stats.Succeeded()
	f.cur.Store(st)
	attrs := []any{"file", f.cfg.CertFile}
	if st.cert.Leaf != nil {
		attrs = append(attrs, "not_after", st.cert.Leaf.NotAfter.Format(time.RFC3339))
	}
	f.logger.Info("TLS certificate reloaded", attrs...)
	return st
}

func (f *tlsFiles) load() (*tlsState, error) {
	certPEM, err := secretfile.Read(f.cfg.CertFile)
	if err != nil {
		return nil, &KeyError{Key: "server.tls.certFile", Err: fmt.Errorf("read certificate: %w", err)}
	}
	keyPEM, err := secretfile.Read(f.cfg.KeyFile)
	if err != nil {
		return nil, &KeyError{Key: "server.tls.keyFile", Err: fmt.Errorf("read key: %w", err)}
	}
	defer clear(keyPEM)
	cert, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return nil, &KeyError{Key: "server.tls", Err: fmt.Errorf("load certificate %s and key %s: %w", f.cfg.CertFile, f.cfg.KeyFile, err)}
	}
	conf := &tls.Config{
		MinVersion:   tls.VersionTLS12,
		NextProtos:   []string{"h2", "http/1.1"},
		Certificates: []tls.Certificate{cert},
	}
	if f.cfg.ClientCAFile != "" {
		pem, err := secretfile.Read(f.cfg.ClientCAFile)
		if err != nil {
			return nil, &KeyError{Key: "server.tls.clientCAFile", Err: fmt.Errorf("read client CA: %w", err)}
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, &KeyError{Key: "server.tls.clientCAFile", Err: fmt.Errorf("no PEM certificate in %s", f.cfg.ClientCAFile)}
		}
		conf.ClientCAs = pool
		conf.ClientAuth = tls.VerifyClientCertIfGiven
	}
	return &tlsState{cert: &cert, conf: conf}, nil
}
