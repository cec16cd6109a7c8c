package awsbus_test

import (
	"bytes"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/sqs"

	"github.com/marty-msf/eventbus/awsbus"
	"github.com/marty-msf/eventbus/driver"
)

// sentinel starts every secret of TestCredentialsNeverLeak: it must appear
// in no error and no log line.
const sentinel = "S3NTINEL"

// lockedBuffer is a log destination that the driver's goroutines write to
// while the test reads it.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// closedPort returns an address of 127.0.0.1 that refuses connections.
func closedPort(t *testing.T) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	return addr
}

// TestCredentialsNeverLeak drives errors with explicit credentials that are
// sentinels (access key id, secret key, session token), through a Config
// and through aws:// URLs: an endpoint that refuses connections, a
// subscription whose queue disappears (its polls fail and are logged), bad
// parameters, credentials or a password where they do not belong. Every
// error string, everything the driver logged (a slog handler writing to a
// buffer, at debug level) and the printed Config must be free of the
// sentinel. fauxqs accepts any credentials, so a refusal of the
// credentials themselves (AWS's InvalidClientTokenId, SignatureDoesNotMatch)
// cannot be driven here; those errors carry AWS's message and request id,
// not the credentials.
func TestCredentialsNeverLeak(t *testing.T) {
	logs := &lockedBuffer{}
	logger := slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	secret := sentinel + "-secret-Zq81"
	token := sentinel + "-token-Wm27"
	keyID := "AKIA" + sentinel + "KEY01"
	var errs []error
	record := func(what string, err error) {
		t.Helper()
		if err == nil {
			t.Errorf("%s: no error", what)
			return
		}
		errs = append(errs, fmt.Errorf("%s: %w", what, err))
	}
	ctx := ctxFor(t, 90*time.Second)

	// An endpoint that refuses connections.
	refused := &awsbus.Config{
		Region: "us-east-1", Endpoint: "http://" + closedPort(t),
		AccessKeyID: keyID, SecretAccessKey: secret, SessionToken: token, Logger: logger,
	}
	d, err := awsbus.Open(ctx, refused)
	if err != nil {
		t.Fatal(err)
	}
	ev := driver.NewDestination(driver.Event, "secrets", "test")
	err = d.Publish(ctx, ev, []*driver.Message{{ID: "1", Source: "/s", Type: "secrets.test"}})
	if !errors.Is(err, driver.ErrUnavailable) {
		t.Errorf("publish to a closed port: %v, want driver.ErrUnavailable", err)
	}
	record("publish to a closed port", err)
	_, err = d.Subscribe(ctx, ev, driver.SubscribeOptions{Group: "g"})
	record("subscribe at a closed port", err)
	err = d.ReadDeadLetters(ctx, driver.DeadLetterOf(ev), func(driver.DeadLetterEntry) bool { return true })
	record("read dead letters at a closed port", err)
	_, err = d.DeadLetterDestinations(ctx)
	record("list dead letters at a closed port", err)
	if err := d.Close(ctx); err != nil {
		t.Error(err)
	}

	// A subscription whose queue is deleted underneath: every poll fails
	// and is logged.
	cfg := testConfig(t)
	cfg.AccessKeyID, cfg.SecretAccessKey, cfg.SessionToken, cfg.Logger = keyID, secret, token, logger
	d = openDriver(t, cfg)
	cmd := driver.NewDestination(driver.Command, "secrets", "gone")
	sub, err := d.Subscribe(ctx, cmd, driver.SubscribeOptions{Group: "g"})
	if err != nil {
		t.Fatal(err)
	}
	qurl, err := d.QueueURL(ctx, cmd, "g")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := newRawClients(t, cfg.Endpoint).sqs.DeleteQueue(ctx, &sqs.DeleteQueueInput{QueueUrl: aws.String(qurl)}); err != nil {
		t.Fatal(err)
	}
	for !strings.Contains(logs.String(), "awsbus: receive") && ctx.Err() == nil {
		time.Sleep(20 * time.Millisecond)
	}
	if !strings.Contains(logs.String(), "awsbus: receive") {
		t.Error("the failing polls were not logged")
	}
	err = d.Publish(ctx, cmd, []*driver.Message{{ID: "2", Source: "/s", Type: "secrets.test"}})
	record("publish to a deleted queue", err)
	if err := sub.Close(ctx); err != nil {
		errs = append(errs, err)
	}

	// URLs: bad values, credentials in the wrong place, a refused endpoint.
	q := url.Values{
		"access_key_id": {keyID}, "secret_access_key": {secret}, "session_token": {token},
	}
	for _, tc := range []struct{ what, raw string }{
		{"bad value", "aws://us-east-1?visibility_timeout=soon&" + q.Encode()},
		{"unknown parameter", "aws://us-east-1?bogus=1&" + q.Encode()},
		{"user information", "aws://" + keyID + ":" + secret + "@us-east-1"},
		{"password in the endpoint", "aws://us-east-1?endpoint=" + url.QueryEscape("http://user:"+secret+"@127.0.0.1:4566")},
		{"malformed endpoint with a password", "aws://us-east-1?endpoint=" + url.QueryEscape("http://user:"+secret+"@[::1")},
		{"secret without key id", "sns+sqs://us-east-1?secret_access_key=" + secret},
	} {
		_, err := driver.OpenURL(ctx, tc.raw, &driver.OpenOptions{Logger: logger})
		record("open URL with "+tc.what, err)
		record("check URL with "+tc.what, driver.CheckURL(tc.raw))
		_, err = awsbus.ParseURL(tc.raw)
		record("parse URL with "+tc.what, err)
	}
	refusedURL := "aws://us-east-1?endpoint=" + url.QueryEscape(refused.Endpoint) + "&" + q.Encode()
	ud, err := driver.OpenURL(ctx, refusedURL, &driver.OpenOptions{Logger: logger})
	if err != nil {
		t.Fatal(err)
	}
	record("publish through a URL to a closed port", ud.Publish(ctx, ev, []*driver.Message{{ID: "3", Source: "/s", Type: "secrets.test"}}))
	_ = ud.Close(ctx)

	// Configs: a secret without its key id, a password in the endpoint.
	_, err = awsbus.Open(ctx, &awsbus.Config{Region: "us-east-1", SecretAccessKey: secret, Logger: logger})
	record("open a config with a secret and no key id", err)
	_, err = awsbus.Open(ctx, &awsbus.Config{Region: "us-east-1", Endpoint: "http://u:" + secret + "@127.0.0.1:1", Logger: logger})
	record("open a config with a password in the endpoint", err)

	var all strings.Builder
	for _, err := range errs {
		fmt.Fprintf(&all, "%v\n%+v\n", err, err)
	}
	fmt.Fprintf(&all, "%v\n%+v\n%s\n", *refused, *refused, refused)
	slog.New(slog.NewTextHandler(&all, nil)).Info("config", "cfg", *refused)
	all.WriteString(logs.String())
	if n := strings.Count(all.String(), sentinel); n > 0 || len(errs) < 20 {
		t.Errorf("%d errors, %d log bytes: the sentinel appears %d times in:\n%s", len(errs), len(logs.String()), n, all.String())
	}
	t.Logf("%d errors and %d bytes of logs, none with a credential", len(errs), len(logs.String()))
}
