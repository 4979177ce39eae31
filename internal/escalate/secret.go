package escalate

import (
	"log/slog"
	"strings"
	"sync"

	"github.com/autorollbackd/autorollbackd/internal/secretfile"
)

// fileSecret is a notifier's secret, read from its file again at every
// delivery attempt, as Alertmanager reads its *_file secrets: a rotated
// Secret reaches the next page without a restart. A read that fails, or a
// value that parse refuses, keeps the last good value, because a page sent
// with a secret that may still work beats no page; the failure is logged
// and counted in autorollbackd_secret_reloads_total.
type fileSecret struct {
	key, file string
	// parse checks a value read and returns the other forms of it to keep
	// out of errors (the token part of a URL, say). nil accepts any value.
	parse   func(v string) (forms []string, err error)
	reloads *secretfile.Reloads
	log     *slog.Logger

	mu    sync.Mutex
	value string
	// cur and prev are the values to redact: an attempt's error is
	// described after the attempt, and a rotation may come in between.
	cur, prev []string
}

// newFileSecret reads the secret for the first time. Its error names the
// key and the file, never the content.
func newFileSecret(key, file string, parse func(string) ([]string, error), env buildEnv) (*fileSecret, error) {
	s := &fileSecret{key: key, file: file, parse: parse, reloads: env.reloads, log: env.logger}
	v, forms, err := s.read()
	if err != nil {
		return nil, err
	}
	s.value, s.cur = v, append([]string{v}, forms...)
	return s, nil
}

func (s *fileSecret) read() (string, []string, error) {
	b, err := secretfile.Read(s.file)
	if err != nil {
		return "", nil, keyErr(s.key, "read secret file: %w", err)
	}
	v := strings.TrimSpace(string(b))
	clear(b)
	if v == "" {
		return "", nil, keyErr(s.key, "secret file %s is empty", s.file)
	}
	if s.parse == nil {
		return v, nil, nil
	}
	forms, err := s.parse(v)
	if err != nil {
		return "", nil, err
	}
	return v, forms, nil
}

// get reads the file again and returns the secret to use now.
func (s *fileSecret) get() string {
	v, forms, err := s.read()
	s.mu.Lock()
	defer s.mu.Unlock()
	switch {
	case err != nil:
		s.reloads.Failed()
		s.log.Error("cannot re-read a notifier secret, using the last good one", "err", err)
	case v != s.value:
		s.value, s.cur, s.prev = v, append([]string{v}, forms...), s.cur
		s.reloads.Succeeded()
		s.log.Info("notifier secret reloaded", "key", s.key, "file", s.file)
	}
	return s.value
}

// secrets are the values to keep out of errors.
func (s *fileSecret) secrets() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append(append([]string(nil), s.cur...), s.prev...)
}
