package config

import "log/slog"

const redacted = "<secret>"

// Secret is a configuration value that must never be printed: it renders as
// <secret> in logs, JSON, YAML and fmt output. Read the value with Reveal.
type Secret string

// Reveal returns the secret value itself.
func (s Secret) Reveal() string { return string(s) }

func (s Secret) String() string   { return redacted }
func (s Secret) GoString() string { return redacted }

// LogValue keeps the secret out of slog output.
func (s Secret) LogValue() slog.Value { return slog.StringValue(redacted) }

// MarshalJSON keeps the secret out of JSON and YAML output (sigs.k8s.io/yaml
// marshals through JSON).
func (s Secret) MarshalJSON() ([]byte, error) { return []byte(`"` + redacted + `"`), nil }
