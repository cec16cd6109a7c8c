package driver_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net/url"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/marty-msf/eventbus/driver"
)

// pki writes a CA certificate and a client certificate signed by it, with
// its key, to files in a temporary directory.
type pki struct {
	ca                *x509.Certificate
	caFile            string
	certFile, keyFile string
	leaf              *x509.Certificate
}

func newPKI(t *testing.T) *pki {
	t.Helper()
	dir := t.TempDir()
	write := func(name, typ string, der []byte) string {
		path := filepath.Join(dir, name)
		if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
			t.Fatal(err)
		}
		return path
	}
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	caTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, err := x509.ParseCertificate(caDER)
	if err != nil {
		t.Fatal(err)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	leafTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "client"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}, KeyUsage: x509.KeyUsageDigitalSignature,
	}
	leafDER, err := x509.CreateCertificate(rand.Reader, leafTmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := x509.ParseCertificate(leafDER)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return &pki{
		ca: ca, caFile: write("ca.pem", "CERTIFICATE", caDER), leaf: leaf,
		certFile: write("client.pem", "CERTIFICATE", leafDER), keyFile: write("client.key", "EC PRIVATE KEY", keyDER),
	}
}

// trusts reports whether pool verifies the client certificate of p, which
// only p's CA signed.
func (p *pki) trusts(pool *x509.CertPool) bool {
	_, err := p.leaf.Verify(x509.VerifyOptions{Roots: pool, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}})
	return err == nil
}

func TestTLSBuildFromFiles(t *testing.T) {
	p := newPKI(t)
	tc, err := (&driver.TLSConfig{CAFile: p.caFile, CertFile: p.certFile, KeyFile: p.keyFile, ServerName: "broker.internal"}).Build()
	if err != nil {
		t.Fatal(err)
	}
	if tc.MinVersion != tls.VersionTLS12 {
		t.Errorf("MinVersion = %#x, want TLS 1.2", tc.MinVersion)
	}
	if !p.trusts(tc.RootCAs) {
		t.Error("RootCAs does not hold the CA file's certificate")
	}
	if len(tc.Certificates) != 1 || !tc.Certificates[0].Leaf.Equal(p.leaf) {
		t.Errorf("Certificates = %d, want the client certificate", len(tc.Certificates))
	}
	if tc.ServerName != "broker.internal" || tc.InsecureSkipVerify {
		t.Errorf("ServerName %q, InsecureSkipVerify %v", tc.ServerName, tc.InsecureSkipVerify)
	}
}

// Fields are applied on top of a clone of Config, which stays as it was.
func TestTLSBuildAppliesFieldsOnTopOfConfig(t *testing.T) {
	p := newPKI(t)
	other := newPKI(t)
	basePool := x509.NewCertPool()
	basePool.AddCert(other.ca)
	otherPair, err := tls.LoadX509KeyPair(other.certFile, other.keyFile)
	if err != nil {
		t.Fatal(err)
	}
	base := &tls.Config{RootCAs: basePool, Certificates: make([]tls.Certificate, 1, 4), ServerName: "base", MinVersion: tls.VersionTLS13}
	base.Certificates[0] = otherPair

	tc, err := (&driver.TLSConfig{CAFile: p.caFile, CertFile: p.certFile, KeyFile: p.keyFile, InsecureSkipVerify: true, Config: base}).Build()
	if err != nil {
		t.Fatal(err)
	}
	if tc == base {
		t.Fatal("Build returned Config itself, not a clone")
	}
	if tc.MinVersion != tls.VersionTLS13 || tc.ServerName != "base" || !tc.InsecureSkipVerify {
		t.Errorf("MinVersion %#x, ServerName %q, InsecureSkipVerify %v: want Config's, with the fields on top", tc.MinVersion, tc.ServerName, tc.InsecureSkipVerify)
	}
	if !p.trusts(tc.RootCAs) || !other.trusts(tc.RootCAs) {
		t.Error("RootCAs should hold Config's authorities and the CA file's")
	}
	if len(tc.Certificates) != 2 || !tc.Certificates[1].Leaf.Equal(p.leaf) {
		t.Errorf("Certificates = %d, want Config's and the client certificate", len(tc.Certificates))
	}
	// Config is never modified.
	if p.trusts(base.RootCAs) || len(base.Certificates) != 1 || base.Certificates[:2][1].Certificate != nil || base.InsecureSkipVerify {
		t.Error("Build modified Config")
	}

	tc, err = (&driver.TLSConfig{ServerName: "override", Config: base}).Build()
	if err != nil || tc.ServerName != "override" {
		t.Errorf("ServerName = %q, %v: a field set wins over Config", tc.ServerName, err)
	}
}

func TestTLSBuildErrors(t *testing.T) {
	p := newPKI(t)
	missing := filepath.Join(t.TempDir(), "missing.pem")
	for name, tc := range map[string]struct {
		cfg  driver.TLSConfig
		want string
	}{
		"no CA file":      {driver.TLSConfig{CAFile: missing}, "TLS.CAFile"},
		"CA file not PEM": {driver.TLSConfig{CAFile: p.keyFile}, "holds no PEM certificate"},
		"key not cert's":  {driver.TLSConfig{CertFile: p.certFile, KeyFile: p.caFile}, "TLS client certificate"},
		"no key file":     {driver.TLSConfig{CertFile: p.certFile, KeyFile: missing}, "TLS client certificate"},
	} {
		if _, err := tc.cfg.Build(); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: Build() = %v, want an error mentioning %q", name, err, tc.want)
		}
	}
}

func TestTLSProblems(t *testing.T) {
	p := newPKI(t)
	if got := (&driver.TLSConfig{CAFile: p.caFile, CertFile: p.certFile, KeyFile: p.keyFile}).Problems(); len(got) != 0 {
		t.Errorf("Problems of a good configuration: %q", got)
	}
	if got := (&driver.TLSConfig{}).Problems(); len(got) != 0 {
		t.Errorf("Problems of the zero configuration: %q", got)
	}
	missing := filepath.Join(t.TempDir(), "missing.pem")
	_, statErr := os.Stat(missing)
	got := (&driver.TLSConfig{CAFile: missing, CertFile: p.certFile}).Problems()
	want := []string{
		"TLS.CertFile and TLS.KeyFile go together",
		fmt.Sprintf("TLS.CAFile %q cannot be read: %v", missing, errors.Unwrap(statErr)),
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("Problems:\n got %q\nwant %q", got, want)
	}
}

func TestTLSURLParameters(t *testing.T) {
	full := &driver.TLSConfig{CAFile: "/ca.pem", CertFile: "/c.pem", KeyFile: "/k.pem", ServerName: "broker", InsecureSkipVerify: true}
	var q driver.URLQuery
	q.TLS(full)
	if got, want := q.Encode(), "tls_ca_file=%2Fca.pem&tls_cert_file=%2Fc.pem&tls_insecure_skip_verify=true&tls_key_file=%2Fk.pem&tls_server_name=broker"; got != want {
		t.Errorf("URLQuery.TLS wrote %s, want %s", got, want)
	}
	for name, c := range map[string]*driver.TLSConfig{"full": full, "server name": {ServerName: "broker"}, "none": nil} {
		var q driver.URLQuery
		q.TLS(c)
		p := driver.NewParams(&url.URL{Scheme: "x", Host: "h", RawQuery: q.Encode()})
		got := p.TLS()
		if err := p.Err(); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if !reflect.DeepEqual(got, c) {
			t.Errorf("%s: read back %+v, want %+v", name, got, c)
		}
	}
	p := driver.NewParams(&url.URL{Scheme: "x", Host: "h", RawQuery: "tls_insecure_skip_verify=maybe"})
	if got := p.TLS(); got != nil {
		t.Errorf("TLS() = %+v for a bad value only", got)
	}
	if err := p.Err(); err == nil || !strings.Contains(err.Error(), "tls_insecure_skip_verify") {
		t.Errorf("Err() = %v, want the parameter named", err)
	}
}
