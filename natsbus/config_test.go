package natsbus_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"

	"github.com/marty-msf/eventbus/driver"
	"github.com/marty-msf/eventbus/natsbus"
)

func TestConfigValidateReportsEveryProblem(t *testing.T) {
	const secret = "s3cr3t-pa55"
	cfg := &natsbus.Config{
		Servers:         []string{"http://h:1", "nats://user:" + secret + "@:4222", "nats://ok:4222"},
		User:            "",
		Password:        secret,
		Token:           "tok",
		NKeySeedFile:    "/does/not/exist.nk",
		CredentialsFile: "/does/not/exist.creds",
		TLS:             &natsbus.TLSConfig{CertFile: "/no/cert.pem"},
		ReconnectWait:   -time.Second,
		Options: natsbus.Options{
			StreamPrefix: "BAD.PREFIX",
			AckWait:      -1,
			Streams: natsbus.StreamConfig{
				Retention: "forever", Storage: "tape", Replicas: 7, MaxMsgs: -5, MaxAge: -time.Hour,
			},
			MaxMessageSize: -1,
		},
	}
	err := cfg.Validate()
	if err == nil {
		t.Fatal("Validate accepted a broken configuration")
	}
	msg := err.Error()
	for _, want := range []string{
		"Servers[0]", "scheme", "Servers[1]", "no host",
		"Token or User", "Password is set without User",
		"NKeySeedFile or CredentialsFile", "NKeySeedFile", "CredentialsFile",
		"TLS.CertFile and TLS.KeyFile", "ReconnectWait", "StreamPrefix",
		"AckWait", "Retention", "Storage", "Replicas", "MaxMsgs", "MaxAge", "MaxMessageSize",
	} {
		if !strings.Contains(msg, want) {
			t.Errorf("Validate does not mention %q:\n%s", want, msg)
		}
	}
	if strings.Contains(msg, secret) {
		t.Errorf("Validate leaks the password:\n%s", msg)
	}
	if n := len(strings.Split(msg, "\n")); n < 15 {
		t.Errorf("Validate reported %d problems, want every one:\n%s", n, msg)
	}
	if err := (&natsbus.Config{}).Validate(); err != nil {
		t.Errorf("the zero Config is invalid: %v", err)
	}
	if _, err := natsbus.Open(context.Background(), cfg); err == nil {
		t.Error("Open accepted a configuration that Validate refuses")
	}
}

// startAuthServer starts a plain nats-server (no JetStream) that requires a
// user and password.
func startAuthServer(t *testing.T, user, password string) *server.Server {
	t.Helper()
	ns, err := server.NewServer(&server.Options{Host: "127.0.0.1", Port: -1, NoSigs: true, Username: user, Password: password})
	if err != nil {
		t.Fatal(err)
	}
	ns.Start()
	if !ns.ReadyForConnections(10 * time.Second) {
		t.Fatal("server not ready")
	}
	t.Cleanup(func() { ns.Shutdown(); ns.WaitForShutdown() })
	return ns
}

func TestCredentialsNeverInErrors(t *testing.T) {
	const right, wrong = "right-horse-battery", "wrong-staple-9f2c"
	ns := startAuthServer(t, "svc", right)
	off := false
	addr := ns.Addr().String()
	for name, cfg := range map[string]*natsbus.Config{
		"Password": {Servers: []string{"nats://" + addr}, User: "svc", Password: wrong, Options: natsbus.Options{JetStream: &off}},
		"URL":      {Servers: []string{"nats://svc:" + wrong + "@" + addr}, Options: natsbus.Options{JetStream: &off}},
		"Token":    {Servers: []string{"nats://" + addr}, Token: wrong, Options: natsbus.Options{JetStream: &off}},
	} {
		t.Run(name, func(t *testing.T) {
			cfg.MaxReconnects = 1
			_, err := natsbus.Open(ctxFor(t, 10*time.Second), cfg)
			if err == nil {
				t.Fatal("Open succeeded with a wrong secret")
			}
			t.Log(err)
			if strings.Contains(err.Error(), wrong) {
				t.Errorf("the error shows the secret: %v", err)
			}
			if !strings.Contains(strings.ToLower(err.Error()), "authorization") {
				t.Errorf("the error does not say why: %v", err)
			}
		})
	}
	d := openDriver(t, &natsbus.Config{Servers: []string{"nats://" + addr}, User: "svc", Password: right, Options: natsbus.Options{JetStream: &off}})
	if d.Capabilities().Durable {
		t.Error("a core NATS driver claims Durable")
	}
}

// writeCert writes a self-signed certificate for 127.0.0.1 and its key, and
// returns their paths.
func writeCert(t *testing.T) (certFile, keyFile string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "natsbus test"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		IPAddresses:           []net.IP{net.ParseIP("127.0.0.1")},
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	certFile, keyFile = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder}), 0o600); err != nil {
		t.Fatal(err)
	}
	return certFile, keyFile
}

func TestTLS(t *testing.T) {
	certFile, keyFile := writeCert(t)
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		t.Fatal(err)
	}
	srv := startServer(t, &natsbus.EmbeddedOptions{Port: -1, TLS: &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}})
	url := strings.Replace(srv.ClientURL(), "nats://", "tls://", 1)

	d := openDriver(t, &natsbus.Config{Servers: []string{url}, TLS: &natsbus.TLSConfig{CAFile: certFile}})
	dest := driver.NewDestination(driver.Event, "tls", "hello")
	ctx := ctxFor(t, 10*time.Second)
	sub, err := d.Subscribe(ctx, dest, driver.SubscribeOptions{Group: "tls"})
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close(context.Background())
	if err := d.Publish(ctx, dest, []*driver.Message{{ID: "1", Source: "/tls", Type: "tls.hello", Data: []byte("over TLS")}}); err != nil {
		t.Fatal(err)
	}
	ds, err := sub.Receive(ctx, 1)
	if err != nil || string(ds[0].Message.Data) != "over TLS" {
		t.Fatalf("Receive over TLS = %v, %v", ds, err)
	}
	_ = sub.Ack(ctx, ds)

	_, err = natsbus.Open(ctxFor(t, 10*time.Second), &natsbus.Config{Servers: []string{url}, MaxReconnects: 1})
	if err == nil {
		t.Fatal("Open trusted a self-signed certificate without its CA")
	}
	if !strings.Contains(err.Error(), "certificate") {
		t.Errorf("the error does not name the certificate problem: %v", err)
	}
	if err := (&natsbus.Config{TLS: &natsbus.TLSConfig{CAFile: keyFile}}).Validate(); err != nil {
		t.Fatalf("Validate checks file presence only: %v", err)
	}
	if _, err := natsbus.Open(ctxFor(t, 10*time.Second), &natsbus.Config{Servers: []string{url}, TLS: &natsbus.TLSConfig{CAFile: keyFile}}); err == nil || !strings.Contains(err.Error(), "CAFile") {
		t.Errorf("Open with a CA file holding no certificate: %v", err)
	}
}

func TestStreamConflict(t *testing.T) {
	srv := startServer(t, nil)
	cfg := serverConfig(srv)
	cfg.StreamPrefix = "CONFLICT"
	cfg.Streams.Storage = natsbus.StorageMemory
	cfg.Streams.MaxMsgs = 100
	d := openDriver(t, cfg)
	_ = d.Close(context.Background())

	// Limits are updated in place.
	cfg.Streams.MaxMsgs = 200
	d = openDriver(t, cfg)
	st, err := d.JetStream().Stream(ctxFor(t, 5*time.Second), "CONFLICT_EVENTS")
	if err != nil {
		t.Fatal(err)
	}
	if got := st.CachedInfo().Config.MaxMsgs; got != 200 {
		t.Errorf("MaxMsgs after reopening = %d, want 200", got)
	}
	_ = d.Close(context.Background())

	// Storage cannot change: a clear error names the field.
	cfg.Streams.Storage = natsbus.StorageFile
	cfg.Streams.Retention = natsbus.RetentionInterest
	_, err = natsbus.Open(ctxFor(t, 10*time.Second), cfg)
	var conflict *natsbus.StreamConflictError
	if !errors.As(err, &conflict) {
		t.Fatalf("Open over a conflicting stream: %v, want a *StreamConflictError", err)
	}
	fields := map[string]bool{}
	for _, d := range conflict.Diffs {
		fields[d.Field] = true
	}
	if !fields["storage"] || !fields["retention"] {
		t.Errorf("conflict names %v, want storage and retention", conflict.Diffs)
	}
	if !strings.Contains(err.Error(), "storage is Memory, configured File") {
		t.Errorf("error text: %v", err)
	}
}

// TestJetStreamOff: with JetStream off the driver serves what core NATS can
// do and refuses the rest with ErrUnsupported; on a server without
// JetStream, asking for it fails at Open.
func TestJetStreamOff(t *testing.T) {
	ns, err := server.NewServer(&server.Options{Host: "127.0.0.1", Port: -1, NoSigs: true})
	if err != nil {
		t.Fatal(err)
	}
	ns.Start()
	t.Cleanup(func() { ns.Shutdown(); ns.WaitForShutdown() })
	if !ns.ReadyForConnections(10 * time.Second) {
		t.Fatal("server not ready")
	}
	url := ns.ClientURL()

	_, err = natsbus.Open(ctxFor(t, 10*time.Second), &natsbus.Config{Servers: []string{url}})
	if !errors.Is(err, driver.ErrUnsupported) || !strings.Contains(err.Error(), "JetStream is not enabled") {
		t.Fatalf("Open with JetStream on a server without it: %v, want ErrUnsupported naming JetStream", err)
	}

	off := false
	d := openDriver(t, &natsbus.Config{Servers: []string{url}, Options: natsbus.Options{JetStream: &off}})
	caps := d.Capabilities()
	if caps.Durable || caps.Redelivery || caps.NativeDelay {
		t.Errorf("core NATS claims persistence: %+v", caps)
	}
	if caps.Serves(driver.Stream) || caps.Serves(driver.DeadLetter) {
		t.Errorf("core NATS claims the stream or dead-letter pattern: %v", caps.Patterns)
	}
	for _, p := range []driver.Pattern{driver.Event, driver.Command, driver.Query, driver.Broadcast, driver.Reply} {
		if !caps.Serves(p) {
			t.Errorf("core NATS does not serve %v", p)
		}
	}
	if d.JetStream() != nil || d.StreamName(driver.Event) != "" {
		t.Error("JetStream off still has a JetStream context or streams")
	}
	ctx := ctxFor(t, 10*time.Second)
	msg := []*driver.Message{{ID: "1", Source: "/s", Type: "t"}}
	stream := driver.NewDestination(driver.Stream, "clicks")
	if err := d.Publish(ctx, stream, msg); !errors.Is(err, driver.ErrUnsupported) {
		t.Errorf("Publish to a stream without JetStream: %v, want ErrUnsupported", err)
	}
	if _, err := d.Subscribe(ctx, stream, driver.SubscribeOptions{Group: "g"}); !errors.Is(err, driver.ErrUnsupported) {
		t.Errorf("Subscribe to a stream without JetStream: %v, want ErrUnsupported", err)
	}
	events := driver.NewDestination(driver.Event, "x")
	if _, err := d.Subscribe(ctx, events, driver.SubscribeOptions{Group: "g", Durable: true}); !errors.Is(err, driver.ErrUnsupported) {
		t.Errorf("durable Subscribe without JetStream: %v, want ErrUnsupported", err)
	}
}

// TestMalformedDelivered: a message that is not a CloudEvent reaches the
// subscriber as a delivery with Err set and the raw body, never dropped.
func TestMalformedDelivered(t *testing.T) {
	srv := startServer(t, nil)
	d := openDriver(t, serverConfig(srv))
	dest := driver.NewDestination(driver.Command, "svc", "do")
	ctx := ctxFor(t, 10*time.Second)
	sub, err := d.Subscribe(ctx, dest, driver.SubscribeOptions{Group: "svc"})
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close(context.Background())
	nc := d.Conn()
	if err := nc.Publish(dest.Name, []byte("not an event")); err != nil {
		t.Fatal(err)
	}
	ds, err := sub.Receive(ctx, 1)
	if err != nil {
		t.Fatal(err)
	}
	if !errors.Is(ds[0].Err, driver.ErrMalformed) || string(ds[0].Message.Data) != "not an event" || ds[0].Attempt != 1 {
		t.Errorf("delivery = %+v (err %v), want ErrMalformed with the raw body", ds[0], ds[0].Err)
	}
	if err := sub.Term(ctx, ds); err != nil {
		t.Error(err)
	}
}

// TestSubjectPrefix: two drivers with their own subject and stream prefixes
// share a server without meeting; a third without prefixes would collide
// with the default streams and gets a clear error.
func TestSubjectPrefix(t *testing.T) {
	srv := startServer(t, nil)
	open := func(prefix string) *natsbus.Driver {
		cfg := serverConfig(srv)
		cfg.SubjectPrefix = "tenant." + prefix
		cfg.StreamPrefix = "T_" + prefix
		return openDriver(t, cfg)
	}
	a, b := open("a"), open("b")
	ctx := ctxFor(t, 10*time.Second)
	dest := driver.NewDestination(driver.Event, "shared", "name")
	subA, err := a.Subscribe(ctx, dest, driver.SubscribeOptions{Group: "g"})
	if err != nil {
		t.Fatal(err)
	}
	defer subA.Close(context.Background())
	subB, err := b.Subscribe(ctx, dest, driver.SubscribeOptions{Group: "g"})
	if err != nil {
		t.Fatal(err)
	}
	defer subB.Close(context.Background())
	if err := a.Publish(ctx, dest, []*driver.Message{{ID: "a1", Source: "/a", Type: "t"}}); err != nil {
		t.Fatal(err)
	}
	ds, err := subA.Receive(ctx, 10)
	if err != nil || len(ds) != 1 || ds[0].Message.ID != "a1" {
		t.Fatalf("tenant a received %v, %v", ds, err)
	}
	short, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
	defer cancel()
	if ds, err := subB.Receive(short, 10); err == nil {
		t.Errorf("tenant b received tenant a's message %v", ds[0].Message.ID)
	}
	if a.StreamName(driver.Event) != "T_a_EVENTS" {
		t.Errorf("stream name %q", a.StreamName(driver.Event))
	}

	cfg := serverConfig(srv)
	cfg.StreamPrefix = "OTHER"
	openDriver(t, cfg) // stores events.>
	cfg.StreamPrefix = "THIRD"
	_, err = natsbus.Open(ctx, cfg)
	if err == nil || !strings.Contains(err.Error(), "SubjectPrefix") {
		t.Errorf("Open over streams storing the same subjects: %v, want a hint at SubjectPrefix", err)
	}
	if err := (&natsbus.Config{Options: natsbus.Options{SubjectPrefix: "bad prefix.*"}}).Validate(); err == nil {
		t.Error("Validate accepted a SubjectPrefix with a wildcard")
	}
}
