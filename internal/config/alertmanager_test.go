package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"sigs.k8s.io/yaml"
)

func loadYAML(t *testing.T, body string, environ ...string) (*Config, error) {
	t.Helper()
	f := filepath.Join(t.TempDir(), "c.yaml")
	if err := os.WriteFile(f, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	return Load(Source{File: f, Environ: environ})
}

func TestLoadAlertmanagerHTTPConfig(t *testing.T) {
	cfg, err := loadYAML(t, `verify:
  alertResolveGrace: 3m
  alertmanager:
    url: http://alertmanager.monitoring.svc:9093
    timeout: 15s
    httpConfig:
      basic_auth:
        username: autorollbackd
        password: hunter2
      tls_config:
        server_name: alertmanager.internal
        insecure_skip_verify: true
      proxy_url: http://proxy.internal:3128
      follow_redirects: false
      http_headers:
        X-Scope-OrgID:
          values: [tenant-1]
`)
	if err != nil {
		t.Fatal(err)
	}
	v := cfg.Verify
	if v.AlertResolveGrace.Duration != 3*time.Minute || v.Alertmanager.URL != "http://alertmanager.monitoring.svc:9093" || v.Alertmanager.Timeout.Duration != 15*time.Second {
		t.Errorf("verify = alertResolveGrace %s, alertmanager %+v", v.AlertResolveGrace.Duration, v.Alertmanager)
	}
	hc := v.Alertmanager.HTTPConfig
	switch {
	case hc == nil:
		t.Fatal("verify.alertmanager.httpConfig not decoded")
	case hc.BasicAuth == nil || hc.BasicAuth.Username != "autorollbackd" || string(hc.BasicAuth.Password) != "hunter2":
		t.Errorf("basic_auth = %+v", hc.BasicAuth)
	case hc.TLSConfig.ServerName != "alertmanager.internal" || !hc.TLSConfig.InsecureSkipVerify:
		t.Errorf("tls_config = %+v", hc.TLSConfig)
	case hc.ProxyURL.String() != "http://proxy.internal:3128":
		t.Errorf("proxy_url = %s", hc.ProxyURL.String())
	case hc.FollowRedirects || !hc.EnableHTTP2:
		t.Errorf("follow_redirects %v (set false), enable_http2 %v (default true)", hc.FollowRedirects, hc.EnableHTTP2)
	case hc.HTTPHeaders == nil || len(hc.HTTPHeaders.Headers) != 1:
		t.Errorf("http_headers = %+v", hc.HTTPHeaders)
	}

	// check-config prints the configuration so; the password must not show.
	out, err := yaml.Marshal(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(out), "hunter2") || !strings.Contains(string(out), "password: <secret>") {
		t.Errorf("printed configuration shows the password or no <secret>:\n%s", out)
	}
}

func TestLoadAlertmanagerFromEnvironment(t *testing.T) {
	cfg, err := Load(Source{Environ: []string{
		"AUTOROLLBACKD_VERIFY_ALERTRESOLVEGRACE=90s",
		"AUTOROLLBACKD_VERIFY_ALERTMANAGER_URL=http://alertmanager:9093",
		"AUTOROLLBACKD_VERIFY_ALERTMANAGER_HTTPCONFIG={authorization: {credentials_file: /var/run/secrets/alertmanager/token}}",
	}})
	if err != nil {
		t.Fatal(err)
	}
	v := cfg.Verify
	if v.AlertResolveGrace.Duration != 90*time.Second || v.Alertmanager.URL != "http://alertmanager:9093" {
		t.Errorf("alertResolveGrace %s, alertmanager.url %q", v.AlertResolveGrace.Duration, v.Alertmanager.URL)
	}
	if hc := v.Alertmanager.HTTPConfig; hc == nil || hc.Authorization == nil || hc.Authorization.CredentialsFile != "/var/run/secrets/alertmanager/token" || hc.Authorization.Type != "Bearer" {
		t.Errorf("httpConfig from the environment = %+v", hc)
	}
}

func TestLoadAlertmanagerErrorsNameTheKey(t *testing.T) {
	for _, tc := range []struct{ name, body, want string }{
		{
			name: "unknown http_config key",
			body: "verify:\n  alertmanager:\n    httpConfig:\n      bearer_tokn: x\n",
			want: "verify.alertmanager.httpConfig: Prometheus http_config: field bearer_tokn not found",
		},
		{
			name: "two kinds of authentication",
			body: "verify:\n  alertmanager:\n    httpConfig:\n      bearer_token: x\n      basic_auth: {username: u, password: p}\n",
			want: "verify.alertmanager.httpConfig: Prometheus http_config: at most one of basic_auth, oauth2, bearer_token & bearer_token_file must be configured",
		},
		{
			name: "not a map",
			body: "verify:\n  alertmanager:\n    httpConfig: [1, 2]\n",
			want: "verify.alertmanager.httpConfig: Prometheus http_config: ",
		},
		{
			name: "negative grace",
			body: "verify:\n  alertResolveGrace: -1m\n",
			want: "verify.alertResolveGrace: must be a positive duration, got -1m0s",
		},
		{
			name: "override not a URL",
			body: "verify:\n  alertmanager:\n    url: alertmanager:9093\n",
			want: `verify.alertmanager.url: must be an http or https URL, got "alertmanager:9093"`,
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := loadYAML(t, tc.body)
			if err == nil || !strings.HasPrefix(err.Error(), tc.want) {
				t.Fatalf("Load() error = %v, want it to start with %q", err, tc.want)
			}
		})
	}
}

// A notifier's httpConfig is Prometheus' http_config, decoded by
// Prometheus' rules like verify.alertmanager's, and a mistake in it names
// the notifier's key.
func TestLoadAlertmanagerNotifier(t *testing.T) {
	cfg, err := loadYAML(t, `escalation:
  notifiers:
  - name: alertmanager
    type: alertmanager
    alertmanager:
      urls: [http://alertmanager-operated.monitoring.svc:9093]
      labels: {severity: critical}
      holdFor: 12h
    httpConfig:
      basic_auth: {username: autorollbackd, password: hunter2}
      tls_config: {server_name: alertmanager.internal}
  ladder:
  - {after: 5m, level: oncall, notifiers: [alertmanager]}
`)
	if err != nil {
		t.Fatal(err)
	}
	n := cfg.Escalation.Notifiers[0]
	am, hc := n.Alertmanager, n.HTTPConfig
	switch {
	case am == nil:
		t.Fatal("alertmanager block not decoded")
	case am.HoldFor.Duration != 12*time.Hour || am.Labels["severity"] != "critical" || len(am.URLs) != 1:
		t.Errorf("alertmanager = %+v", am)
	case hc == nil || hc.BasicAuth == nil || hc.BasicAuth.Username != "autorollbackd" ||
		string(hc.BasicAuth.Password) != "hunter2" || hc.TLSConfig.ServerName != "alertmanager.internal":
		t.Errorf("httpConfig = %+v", hc)
	}

	_, err = loadYAML(t, `escalation:
  notifiers:
  - name: alertmanager
    type: alertmanager
    alertmanager:
      urls: [http://alertmanager-operated.monitoring.svc:9093]
    httpConfig: {bearer_tokn: x}
`)
	if err == nil || !strings.Contains(err.Error(), "escalation.notifiers[0].httpConfig") || !strings.Contains(err.Error(), "bearer_tokn") {
		t.Errorf("a misspelt http_config key: %v; want an error naming escalation.notifiers[0].httpConfig and the key", err)
	}
}
