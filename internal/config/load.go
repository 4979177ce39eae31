package config

import (
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"regexp"
	"strings"
	"time"

	"github.com/go-viper/mapstructure/v2"
	promconfig "github.com/prometheus/common/config"
	"github.com/spf13/pflag"
	"github.com/spf13/viper"
	"go.yaml.in/yaml/v2"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// EnvPrefix prefixes every environment variable that sets a key: the key
// server.listenAddress is AUTOROLLBACKD_SERVER_LISTENADDRESS.
const EnvPrefix = "AUTOROLLBACKD"

// Source says where to read the configuration from. Precedence is
// flag > environment > file > default.
type Source struct {
	// File is a YAML file; empty means none.
	File string
	// Flags holds the command line flags; only those that were set count.
	Flags *pflag.FlagSet
	// FlagKeys maps a flag name to the configuration key it sets.
	FlagKeys map[string]string
	// Environ lists KEY=value pairs; nil means no environment. It is explicit
	// so tests do not depend on the process environment.
	Environ []string
}

// Load reads, decodes strictly and validates the configuration. An unknown
// key, a value of the wrong type and a bad duration are errors naming the key.
func Load(src Source) (*Config, error) {
	v := viper.New()
	def := Default()
	if err := setDefaults(v, def); err != nil {
		return nil, err
	}
	if src.File != "" {
		v.SetConfigFile(src.File)
		v.SetConfigType("yaml")
		if err := v.ReadInConfig(); err != nil {
			return nil, fmt.Errorf("read config file %s: %w", src.File, err)
		}
	}
	if err := setEnv(v, src.Environ); err != nil {
		return nil, err
	}
	for name, key := range src.FlagKeys {
		f := src.Flags.Lookup(name)
		if f == nil {
			return nil, fmt.Errorf("bind flag --%s to %s: no such flag", name, key)
		}
		if f.Changed {
			v.Set(key, f.Value.String())
		}
	}

	var cfg Config
	err := v.UnmarshalExact(&cfg, func(dc *mapstructure.DecoderConfig) {
		dc.DecodeHook = mapstructure.ComposeDecodeHookFunc(durationHook, httpClientConfigHook, mapstructure.StringToSliceHookFunc(","))
		dc.ErrorUnused = true
		// Values from the environment and flags are strings; weak typing
		// turns "50" into 50 but still rejects "fast" for a number.
		dc.WeaklyTypedInput = true
	})
	if err != nil {
		return nil, decodeError(err)
	}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	return &cfg, nil
}

// setDefaults registers every leaf key of the default configuration. viper
// only consults the environment for keys it knows, so every key needs one.
func setDefaults(v *viper.Viper, def Config) error {
	leaves, err := flatten(def)
	if err != nil {
		return err
	}
	for key, val := range leaves {
		v.SetDefault(key, val)
	}
	return nil
}

// flatten returns the leaf keys of c, as dotted paths, with their values.
func flatten(c Config) (map[string]any, error) {
	raw, err := json.Marshal(c)
	if err != nil {
		return nil, fmt.Errorf("encode defaults: %w", err)
	}
	var tree map[string]any
	if err := json.Unmarshal(raw, &tree); err != nil {
		return nil, fmt.Errorf("decode defaults: %w", err)
	}
	leaves := map[string]any{}
	var walk func(prefix string, m map[string]any)
	walk = func(prefix string, m map[string]any) {
		for k, val := range m {
			key := prefix + k
			if sub, ok := val.(map[string]any); ok && len(sub) > 0 {
				walk(key+".", sub)
				continue
			}
			leaves[key] = val
		}
	}
	walk("", tree)
	return leaves, nil
}

// setEnv applies AUTOROLLBACKD_* variables for known keys. Unknown
// AUTOROLLBACKD_* variables are errors, like unknown keys in the file.
func setEnv(v *viper.Viper, environ []string) error {
	known := map[string]string{}
	for _, key := range v.AllKeys() {
		known[EnvPrefix+"_"+strings.ToUpper(strings.ReplaceAll(key, ".", "_"))] = key
	}
	var errs []error
	for _, kv := range environ {
		name, value, ok := strings.Cut(kv, "=")
		if !ok || !strings.HasPrefix(name, EnvPrefix+"_") {
			continue
		}
		key, ok := known[name]
		if !ok {
			errs = append(errs, fmt.Errorf("environment variable %s: no such configuration key", name))
			continue
		}
		v.Set(key, value)
	}
	return sortedJoin(errs)
}

var durationType = reflect.TypeOf(metav1.Duration{})

// durationHook decodes durations from strings such as "30s" or "5m" only. A
// bare number is refused: 30 would otherwise silently mean 30 nanoseconds.
func durationHook(from, to reflect.Type, data any) (any, error) {
	if to != durationType {
		return data, nil
	}
	s, ok := data.(string)
	if !ok {
		if d, ok := data.(metav1.Duration); ok {
			return d, nil
		}
		return nil, fmt.Errorf("must be a duration string such as \"30s\" or \"5m\", got %v (%s)", data, from)
	}
	d, err := time.ParseDuration(s)
	if err != nil {
		return nil, fmt.Errorf("must be a duration such as \"30s\" or \"5m\": %w", err)
	}
	return metav1.Duration{Duration: d}, nil
}

var httpClientConfigType = reflect.TypeFor[promconfig.HTTPClientConfig]()

// httpClientConfigHook decodes a Prometheus http_config block with
// Prometheus' own rules: its snake_case keys, its defaults and its
// validation, and an unknown key is an error. From the environment the
// block is one YAML (or JSON) string.
func httpClientConfigHook(from, to reflect.Type, data any) (any, error) {
	if to != httpClientConfigType {
		return data, nil
	}
	var raw []byte
	switch d := data.(type) {
	case promconfig.HTTPClientConfig:
		return d, nil
	case string:
		raw = []byte(d)
	default:
		var err error
		if raw, err = yaml.Marshal(d); err != nil {
			return nil, fmt.Errorf("Prometheus http_config: %w", err)
		}
	}
	var c promconfig.HTTPClientConfig
	if err := yaml.UnmarshalStrict(raw, &c); err != nil {
		return nil, fmt.Errorf("Prometheus http_config: %s", yamlProblems(err))
	}
	return c, nil
}

// yamlNoise is what a YAML error says that means nothing to a user here:
// the line numbers are of the block re-encoded, not of the file, and the
// types are Prometheus' internals.
var yamlNoise = strings.NewReplacer("yaml: unmarshal errors:", "", " in type config.plain", "", "config.plain", "http_config")

var yamlLine = regexp.MustCompile(`(?m)^\s*line \d+: `)

// yamlProblems folds a YAML decoding error into one line, "; " between
// problems.
func yamlProblems(err error) string {
	var out []string
	for line := range strings.Lines(yamlLine.ReplaceAllString(yamlNoise.Replace(err.Error()), "")) {
		if line = strings.TrimSpace(line); line != "" {
			out = append(out, line)
		}
	}
	return strings.Join(out, "; ")
}

var errUnknownKey = errors.New("unknown key")

// joinKey names a nested key. mapstructure names the top level after the
// Go type, which means nothing to a user.
func joinKey(parent, key string) string {
	if parent == "" || parent == reflect.TypeFor[Config]().String() {
		return key
	}
	return parent + "." + key
}

// decodeError rewrites mapstructure's errors into one KeyError per key.
func decodeError(err error) error {
	var errs []error
	var walk func(error)
	walk = func(e error) {
		var de *mapstructure.DecodeError
		switch {
		case errors.As(e, &de):
			inner := errors.Unwrap(de)
			if keys, ok := strings.CutPrefix(inner.Error(), "has invalid keys: "); ok {
				for _, k := range strings.Split(keys, ", ") {
					errs = append(errs, &KeyError{Key: joinKey(de.Name(), k), Err: errUnknownKey})
				}
				return
			}
			errs = append(errs, &KeyError{Key: de.Name(), Err: inner})
		default:
			if j, ok := e.(interface{ Unwrap() []error }); ok {
				for _, inner := range j.Unwrap() {
					walk(inner)
				}
				return
			}
			errs = append(errs, e)
		}
	}
	walk(err)
	return sortedJoin(errs)
}
