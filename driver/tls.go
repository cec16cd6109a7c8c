package driver

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
)

// TLSConfig configures a driver's TLS from PEM files, from a ready
// tls.Config, or both. Every driver names it in its Config (natsbus.TLSConfig,
// kafkabus.TLSConfig... are this type) and reads it from the same URL
// parameters ([Params.TLS], [URLQuery.TLS]).
//
// [TLSConfig.Build] starts from a clone of Config (or, when Config is nil,
// from a configuration requiring TLS 1.2 or later) and applies every field
// that is set on top of it: a field set here always wins.
type TLSConfig struct {
	// CAFile is a PEM bundle of the authorities that signed the server's
	// certificate. They are added to Config's RootCAs, or, without those,
	// replace the system pool.
	CAFile string
	// CertFile and KeyFile are the PEM client certificate and its key, for
	// servers that verify clients (mTLS, RabbitMQ's EXTERNAL mechanism). The
	// certificate is added to Config's Certificates.
	CertFile, KeyFile string
	// ServerName overrides the name checked in the server's certificate
	// (default: the host the driver dials).
	ServerName string
	// InsecureSkipVerify disables verification of the server's certificate.
	// For tests only.
	InsecureSkipVerify bool
	// Config is the base configuration, cloned and never modified; nil means
	// a default one. It cannot be given by URL.
	Config *tls.Config
}

// Build returns the tls.Config that t describes: a clone of t.Config, or a
// default one with MinVersion TLS 1.2, with the CA file's certificates added
// to RootCAs, the client key pair appended to Certificates, and ServerName
// and InsecureSkipVerify set when t sets them. Errors name the field at
// fault; drivers wrap them with their package name.
func (t *TLSConfig) Build() (*tls.Config, error) {
	var tc *tls.Config
	if t.Config != nil {
		tc = t.Config.Clone()
	} else {
		tc = &tls.Config{MinVersion: tls.VersionTLS12}
	}
	if t.CAFile != "" {
		pem, err := os.ReadFile(t.CAFile)
		if err != nil {
			return nil, fmt.Errorf("TLS.CAFile: %w", err)
		}
		pool := tc.RootCAs
		if pool == nil {
			pool = x509.NewCertPool()
		} else {
			pool = pool.Clone()
		}
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("TLS.CAFile %q holds no PEM certificate", t.CAFile)
		}
		tc.RootCAs = pool
	}
	if t.CertFile != "" {
		cert, err := tls.LoadX509KeyPair(t.CertFile, t.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("TLS client certificate: %w", err)
		}
		tc.Certificates = append(tc.Certificates[:len(tc.Certificates):len(tc.Certificates)], cert)
	}
	if t.ServerName != "" {
		tc.ServerName = t.ServerName
	}
	if t.InsecureSkipVerify {
		tc.InsecureSkipVerify = true //nolint:gosec // documented test option
	}
	return tc, nil
}

// Problems lists what would make Build fail, without parsing anything: a
// CertFile without its KeyFile (or the reverse), and a file that cannot be
// read (it stats the files: a Validate that promises no I/O checks only
// the pair). A driver's Validate prefixes each with its package name.
// Fields are named as in a driver's Config, whose field is always TLS.
func (t *TLSConfig) Problems() []string {
	var out []string
	if (t.CertFile == "") != (t.KeyFile == "") {
		out = append(out, "TLS.CertFile and TLS.KeyFile go together")
	}
	for _, f := range []struct{ field, path string }{{"TLS.CAFile", t.CAFile}, {"TLS.CertFile", t.CertFile}, {"TLS.KeyFile", t.KeyFile}} {
		if f.path == "" {
			continue
		}
		if _, err := os.Stat(f.path); err != nil {
			cause := err
			if u := errors.Unwrap(err); u != nil {
				cause = u
			}
			out = append(out, fmt.Sprintf("%s %q cannot be read: %v", f.field, f.path, cause))
		}
	}
	return out
}

// TLS reads the URL parameters of a TLSConfig: tls_ca_file, tls_cert_file,
// tls_key_file, tls_server_name and tls_insecure_skip_verify. It returns nil
// when the URL gives none of them.
func (p *Params) TLS() *TLSConfig {
	t := &TLSConfig{}
	p.String("tls_ca_file", &t.CAFile)
	p.String("tls_cert_file", &t.CertFile)
	p.String("tls_key_file", &t.KeyFile)
	p.String("tls_server_name", &t.ServerName)
	p.Bool("tls_insecure_skip_verify", &t.InsecureSkipVerify)
	if *t == (TLSConfig{}) {
		return nil
	}
	return t
}

// TLS writes the URL parameters that [Params.TLS] reads back into t's
// fields; a nil t writes none. t.Config cannot be part of a URL.
func (q *URLQuery) TLS(t *TLSConfig) {
	if t == nil {
		return
	}
	q.String("tls_ca_file", t.CAFile)
	q.String("tls_cert_file", t.CertFile)
	q.String("tls_key_file", t.KeyFile)
	q.String("tls_server_name", t.ServerName)
	q.Bool("tls_insecure_skip_verify", t.InsecureSkipVerify)
}
