package webhook

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"io"
	"log"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/autorollbackd/autorollbackd/internal/secretfile/secretfiletest"
)

// testCA issues certificates for the TLS tests.
type testCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	pem  []byte
}

func newSerial() *big.Int {
	n, err := rand.Int(rand.Reader, big.NewInt(1<<62))
	if err != nil {
		panic(err)
	}
	return n
}

func newTestCA(t *testing.T, name string) *testCA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          newSerial(),
		Subject:               pkix.Name{CommonName: name},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return &testCA{cert: cert, key: key, pem: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})}
}

// issue returns a leaf certificate and key in PEM, for a server (on
// 127.0.0.1) or a client.
func (ca *testCA) issue(t *testing.T, name string, server bool) (certPEM, keyPEM []byte, serialNumber *big.Int) {
	t.Helper()
	return ca.issueWith(t, name, server, nil)
}

// issueWith is issue with the template changed by edit, if not nil.
func (ca *testCA) issueWith(t *testing.T, name string, server bool, edit func(*x509.Certificate)) (certPEM, keyPEM []byte, serialNumber *big.Int) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: newSerial(),
		Subject:      pkix.Name{CommonName: name},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	if server {
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
		tmpl.IPAddresses = []net.IP{net.IPv4(127, 0, 0, 1)}
	}
	if edit != nil {
		edit(tmpl)
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder}), tmpl.SerialNumber
}

func (ca *testCA) clientCert(t *testing.T, name string) tls.Certificate {
	t.Helper()
	c, k, _ := ca.issue(t, name, false)
	cert, err := tls.X509KeyPair(c, k)
	if err != nil {
		t.Fatal(err)
	}
	return cert
}

// mtlsEnv serves the webhook over TLS from a Kubernetes-style Secret volume
// holding tls.crt, tls.key and ca.crt, as cert-manager writes them.
type mtlsEnv struct {
	srv    *httptest.Server
	vol    *secretfiletest.Volume
	ca     *testCA
	reg    *prometheus.Registry
	serial *big.Int
}

func newMTLSEnv(t *testing.T, auth AuthConfig) *mtlsEnv {
	t.Helper()
	e := &mtlsEnv{ca: newTestCA(t, "webhook-ca"), reg: prometheus.NewPedanticRegistry()}
	crt, key, sn := e.ca.issue(t, "autorollbackd", true)
	e.serial = sn
	e.vol = secretfiletest.NewVolume(t, map[string][]byte{"tls.crt": crt, "tls.key": key, "ca.crt": e.ca.pem})
	tlsConf, err := ServerTLS(TLSConfig{
		CertFile:     e.vol.Path("tls.crt"),
		KeyFile:      e.vol.Path("tls.key"),
		ClientCAFile: e.vol.Path("ca.crt"),
	}, discard(), WithRegisterer(e.reg))
	if err != nil {
		t.Fatal(err)
	}
	a, err := NewAuthenticator(auth, discard())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = a.Close() })
	h, err := NewHandler(Config{MaxBodyBytes: 1 << 20, Auth: auth}, a, IntakeFunc(func(context.Context, *Notification) (Receipt, error) {
		return Receipt{Accepted: 1}, nil
	}), discard(), e.reg)
	if err != nil {
		t.Fatal(err)
	}
	e.srv = httptest.NewUnstartedServer(h)
	e.srv.TLS = tlsConf
	e.srv.Config.ErrorLog = log.New(io.Discard, "", 0) // refused handshakes are expected here
	e.srv.StartTLS()
	t.Cleanup(e.srv.Close)
	return e
}

// post sends the firing fixture on a new connection, trusting roots and
// presenting cert if not nil, and returns the status and the serial number of
// the server's certificate.
func (e *mtlsEnv) post(t *testing.T, roots *x509.CertPool, cert *tls.Certificate) (int, *big.Int, error) {
	t.Helper()
	tc := &tls.Config{RootCAs: roots}
	if cert != nil {
		// Present the certificate whatever CAs the server asks for; with
		// Certificates, Go's client would send none from a foreign CA.
		tc.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return cert, nil }
	}
	client := &http.Client{Transport: &http.Transport{TLSClientConfig: tc, DisableKeepAlives: true}, Timeout: 10 * time.Second}
	req, err := http.NewRequest(http.MethodPost, e.srv.URL+"/webhook", strings.NewReader(string(fixture(t, "firing.json"))))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := client.Do(req)
	if err != nil {
		return 0, nil, err
	}
	readAll(t, resp.Body)
	return resp.StatusCode, resp.TLS.PeerCertificates[0].SerialNumber, nil
}

// handshake connects presenting cert and returns the server's refusal of
// it, which with TLS 1.3 the client learns on its first read. Nothing is
// written: data arriving after the server closed could reset the connection
// and lose the alert. The deadline only bounds a test that is failing.
func (e *mtlsEnv) handshake(t *testing.T, cert *tls.Certificate) error {
	t.Helper()
	conn, err := tls.Dial("tcp", e.srv.Listener.Addr().String(), &tls.Config{
		RootCAs:              e.roots(),
		GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return cert, nil },
	})
	if err != nil {
		return err
	}
	defer conn.Close()
	if err := conn.SetReadDeadline(time.Now().Add(5 * time.Second)); err != nil {
		t.Fatal(err)
	}
	_, err = conn.Read(make([]byte, 1))
	if ne, ok := err.(net.Error); ok && ne.Timeout() {
		return nil // accepted: the server waits for a request
	}
	return err
}

func (e *mtlsEnv) roots() *x509.CertPool {
	p := x509.NewCertPool()
	p.AddCert(e.ca.cert)
	return p
}

func TestMTLS(t *testing.T) {
	e := newMTLSEnv(t, AuthConfig{Credential: Credential{RequireClientCert: true}})
	good := e.ca.clientCert(t, "alertmanager")
	stranger := newTestCA(t, "other-ca").clientCert(t, "alertmanager")

	code, _, err := e.post(t, e.roots(), nil)
	if err != nil || code != http.StatusUnauthorized {
		t.Errorf("no client certificate: got %d, %v; want 401", code, err)
	}
	if code, _, err := e.post(t, e.roots(), &stranger); err == nil {
		t.Errorf("a certificate from another CA: got %d, want the connection refused", code)
	}
	// How the refusal reaches an HTTP client varies (with TLS 1.3 it may
	// see a reset while writing); on a bare connection it is the alert.
	if err := e.handshake(t, &stranger); err == nil || !strings.Contains(err.Error(), "tls: unknown certificate authority") {
		t.Errorf("a certificate from another CA: got %v, want the handshake refused for an unknown CA", err)
	}
	code, sn, err := e.post(t, e.roots(), &good)
	if err != nil || code != http.StatusOK {
		t.Errorf("good client certificate: got %d, %v; want 200", code, err)
	}
	if sn.Cmp(e.serial) != 0 {
		t.Errorf("server certificate serial %v, want ours %v (not httptest's)", sn, e.serial)
	}
}

// TestMTLSOrBearer: several methods, any one passes.
func TestMTLSOrBearer(t *testing.T) {
	token := filepath.Join(t.TempDir(), "token")
	writeFile(t, token, []byte(testToken))
	e := newMTLSEnv(t, AuthConfig{Credential: Credential{RequireClientCert: true, BearerTokenFile: token}})
	good := e.ca.clientCert(t, "alertmanager")
	if code, _, err := e.post(t, e.roots(), &good); err != nil || code != http.StatusOK {
		t.Errorf("client certificate: got %d, %v; want 200", code, err)
	}
	if code, _, err := e.post(t, e.roots(), nil); err != nil || code != http.StatusUnauthorized {
		t.Errorf("neither: got %d, %v; want 401", code, err)
	}
}

func TestServerTLSRotation(t *testing.T) {
	e := newMTLSEnv(t, AuthConfig{Credential: Credential{RequireClientCert: true}})
	client := e.ca.clientCert(t, "alertmanager")

	// A new server certificate, swapped in the way the kubelet does.
	crt, key, sn := e.ca.issue(t, "autorollbackd", true)
	e.vol.Update(map[string][]byte{"tls.crt": crt, "tls.key": key, "ca.crt": e.ca.pem})
	var got *big.Int
	eventually(t, 10*time.Second, "the new server certificate", func() bool {
		_, got, _ = e.post(t, e.roots(), &client)
		return got != nil && got.Cmp(sn) == 0
	})

	// A new client CA: certificates of the old one stop passing.
	newCA := newTestCA(t, "webhook-ca-2")
	e.vol.Update(map[string][]byte{"tls.crt": crt, "tls.key": key, "ca.crt": newCA.pem})
	newClient := newCA.clientCert(t, "alertmanager")
	eventually(t, 10*time.Second, "the new client CA", func() bool {
		code, _, err := e.post(t, e.roots(), &newClient)
		return err == nil && code == http.StatusOK
	})
	if _, _, err := e.post(t, e.roots(), &client); err == nil {
		t.Error("a client certificate of the replaced CA still passes the handshake")
	}
	if got := reloads(t, e.reg, "success"); got != 2 {
		t.Errorf("reloads{success} = %v, want 2", got)
	}
}

func TestServerTLSKeepsLastGood(t *testing.T) {
	e := newMTLSEnv(t, AuthConfig{Credential: Credential{RequireClientCert: true}})
	client := e.ca.clientCert(t, "alertmanager")
	// A key that does not match the certificate: keep serving the old pair.
	_, otherKey, _ := e.ca.issue(t, "other", true)
	writeFile(t, filepath.Join(e.vol.Dir(), "..data", "tls.key"), otherKey)
	for range 3 {
		code, sn, err := e.post(t, e.roots(), &client)
		if err != nil || code != http.StatusOK || sn.Cmp(e.serial) != 0 {
			t.Fatalf("after a bad key: got %d %v %v; want 200 from the old certificate", code, sn, err)
		}
	}
	// Reported once per change of the files, not per handshake.
	if got := reloads(t, e.reg, "failure"); got != 1 {
		t.Errorf("reloads{failure} = %v, want 1", got)
	}
}

func TestServerTLSErrors(t *testing.T) {
	dir := t.TempDir()
	ca := newTestCA(t, "ca")
	crt, key, _ := ca.issue(t, "server", true)
	_, otherKey, _ := ca.issue(t, "other", true)
	files := map[string][]byte{"tls.crt": crt, "tls.key": key, "other.key": otherKey, "ca.crt": ca.pem, "junk": []byte("not PEM")}
	for name, b := range files {
		writeFile(t, filepath.Join(dir, name), b)
	}
	p := func(name string) string { return filepath.Join(dir, name) }
	tests := []struct {
		name string
		cfg  TLSConfig
		want string
	}{
		{"cert without key", TLSConfig{CertFile: p("tls.crt")}, "server.tls: keyFile: required with certFile"},
		{"missing cert", TLSConfig{CertFile: p("nope"), KeyFile: p("tls.key")},
			"server.tls.certFile: read certificate: open " + p("nope") + ": no such file or directory"},
		{"missing key", TLSConfig{CertFile: p("tls.crt"), KeyFile: p("nope")},
			"server.tls.keyFile: read key: open " + p("nope") + ": no such file or directory"},
		{"mismatched key", TLSConfig{CertFile: p("tls.crt"), KeyFile: p("other.key")},
			"server.tls: load certificate " + p("tls.crt") + " and key " + p("other.key") + ": tls: private key does not match public key"},
		{"missing CA", TLSConfig{CertFile: p("tls.crt"), KeyFile: p("tls.key"), ClientCAFile: p("nope")},
			"server.tls.clientCAFile: read client CA: open " + p("nope") + ": no such file or directory"},
		{"CA not PEM", TLSConfig{CertFile: p("tls.crt"), KeyFile: p("tls.key"), ClientCAFile: p("junk")},
			"server.tls.clientCAFile: no PEM certificate in " + p("junk")},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ServerTLS(tc.cfg, discard())
			if err == nil || err.Error() != tc.want {
				t.Errorf("got  %v\nwant %s", err, tc.want)
			}
		})
	}

	conf, err := ServerTLS(TLSConfig{}, discard())
	if conf != nil || err != nil {
		t.Errorf("no TLS configured: got %v, %v; want nil, nil", conf, err)
	}
	conf, err = ServerTLS(TLSConfig{CertFile: p("tls.crt"), KeyFile: p("tls.key")}, discard())
	if err != nil {
		t.Fatal(err)
	}
	per, err := conf.GetConfigForClient(&tls.ClientHelloInfo{})
	if err != nil {
		t.Fatal(err)
	}
	if per.ClientAuth != tls.NoClientCert || per.ClientCAs != nil || per.MinVersion != tls.VersionTLS12 {
		t.Errorf("without a client CA: ClientAuth %v, ClientCAs %v, MinVersion %x", per.ClientAuth, per.ClientCAs, per.MinVersion)
	}
}
