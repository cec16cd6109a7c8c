package rabbitbus_test

import (
	"context"
	"errors"
	"net"
	"net/url"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/marty-msf/eventbus"
	"github.com/marty-msf/eventbus/driver"
	"github.com/marty-msf/eventbus/internal/testenv"
	"github.com/marty-msf/eventbus/rabbitbus"
)

// secretOutput gathers everything a test could leak a password through:
// the driver's log at every level and the text of every error.
type secretOutput struct{ testenv.Output }

// TestCredentialsNeverLeak puts a sentinel password in the URL and checks
// that no log line and no error carries it: a wrong password, an
// unreachable host, bad configurations (by Config and by URL, through
// driver.OpenURL too), bad TLS files, and a whole session as a user whose
// password it is (created with rabbitmqctl): publishing, consuming, a cut
// connection and the reconnection it logs, closing.
func TestCredentialsNeverLeak(t *testing.T) {
	t.Parallel()
	const sentinel = "Sentinel-pw-7f3a9c"
	base, err := url.Parse(testenv.AMQPURL(t))
	if err != nil {
		t.Fatal(err)
	}
	withPassword := func(host, user string) string {
		u := *base
		u.Host = host
		u.User = url.UserPassword(user, sentinel)
		return u.String()
	}
	out := &secretOutput{}
	ctx := ctxFor(t, 3*time.Minute)
	unreachable := func() string {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer l.Close()
		return l.Addr().String()
	}()
	fails := func(what string, cfg *rabbitbus.Config) {
		t.Helper()
		cfg.Logger = out.Logger()
		octx, cancel := context.WithTimeout(ctx, 20*time.Second)
		defer cancel()
		d, err := rabbitbus.Open(octx, cfg)
		if err == nil {
			_ = d.Close(ctx)
			t.Errorf("%s: Open succeeded", what)
			return
		}
		out.Err(what, err)
	}
	fails("wrong password", &rabbitbus.Config{URL: withPassword(base.Host, "guest")})
	fails("unreachable host", &rabbitbus.Config{URL: withPassword(unreachable, "guest")})
	fails("bad options", &rabbitbus.Config{URL: withPassword(base.Host, "guest"), Options: rabbitbus.Options{QueueType: "fast", DeliveryLimit: -1}})
	fails("missing TLS files", &rabbitbus.Config{URL: withPassword(base.Host, "guest"), TLS: &rabbitbus.TLSConfig{CAFile: "/nonexistent/ca.pem"}})
	fails("bad port", &rabbitbus.Config{URL: "amqp://guest:" + sentinel + "@127.0.0.1:99999/"})
	for _, raw := range []string{
		withPassword(base.Host, "guest") + "?queue_type=fast",
		withPassword(base.Host, "guest") + "?bogus=1",
		withPassword(base.Host, "guest") + "?heartbeat=soon",
		"amqp://guest:" + sentinel + "@127.0.0.1:notaport/",
		"amqp://guest:" + sentinel + "@[::1/",
		"amqps://guest:" + sentinel + "@" + base.Host + "/?tls_ca_file=/nonexistent/ca.pem",
	} {
		_, err := rabbitbus.ParseURL(raw)
		out.Err("ParseURL", err)
		octx, cancel := context.WithTimeout(ctx, 20*time.Second)
		d, err := driver.OpenURL(octx, raw, &driver.OpenOptions{Logger: out.Logger()})
		cancel()
		if err == nil {
			_ = d.Close(ctx)
			t.Errorf("driver.OpenURL(%s) succeeded", driver.RedactURL(raw))
			continue
		}
		out.Err("driver.OpenURL", err)
	}
	octx, cancel := context.WithTimeout(ctx, 20*time.Second)
	d, err := driver.OpenURL(octx, withPassword(unreachable, "guest"), &driver.OpenOptions{Logger: out.Logger()})
	cancel()
	if err == nil {
		_ = d.Close(ctx)
		t.Error("driver.Open of an unreachable host succeeded")
	}
	out.Err("driver.OpenURL unreachable", err)

	user := "eventbus-secret-" + strconv.FormatInt(time.Now().UnixNano(), 36)
	if err := rabbitmqctl(ctx, "add_user", user, sentinel); err != nil {
		if testenv.InCI() {
			t.Fatalf("create a user with rabbitmqctl: %v", err)
		}
		t.Logf("the session as a user of the test's own is not checked: rabbitmqctl: %v", err)
	} else {
		t.Cleanup(func() {
			if err := rabbitmqctl(context.Background(), "delete_user", user); err != nil {
				t.Errorf("delete user %s: %v", user, err)
			}
		})
		if err := rabbitmqctl(ctx, "set_permissions", "-p", vhost(base), user, ".*", ".*", ".*"); err != nil {
			t.Fatal(err)
		}
		session(t, ctx, out, withPassword(base.Host, user))
	}

	text := out.String()
	if strings.Contains(text, sentinel) {
		t.Fatalf("the password appears in the output:\n%s", text)
	}
	for _, want := range []string{"wrong password", "unreachable host", "bad options", "ParseURL", "driver.OpenURL", "connection lost"} {
		if !strings.Contains(text, want) && (want != "connection lost" || testenv.InCI()) {
			t.Errorf("the output has nothing about %q: the test checked less than it claims:\n%s", want, text)
		}
	}
	t.Logf("%d bytes of log and errors, no password in them", len(text))
}

// session runs a bus on rawURL: it publishes and receives, cuts its own
// connection and waits for the driver to log the loss and reconnect,
// publishes again and closes.
func session(t *testing.T, ctx context.Context, out *secretOutput, rawURL string) {
	t.Helper()
	cfg, err := rabbitbus.ParseURL(rawURL + "?prefix=secret" + strconv.FormatInt(time.Now().UnixNano(), 36) + "&queue_expiry=1m")
	if err != nil {
		t.Fatal(err)
	}
	cfg.Logger = out.Logger()
	var (
		mu   sync.Mutex
		conn net.Conn
	)
	cfg.Dial = func(network, addr string) (net.Conn, error) {
		c, err := net.DialTimeout(network, addr, 10*time.Second)
		mu.Lock()
		conn = c
		mu.Unlock()
		return c, err
	}
	d, err := rabbitbus.Open(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	b := eventbus.New(&eventbus.Options{Source: "secret-test"})
	if err := b.Register("rabbit", d); err != nil {
		t.Fatal(err)
	}
	got := make(chan string, 4)
	if _, err := b.SubscribeEvents(ctx, []string{"secret.ping"}, "g", eventbus.HandlerFunc(func(_ context.Context, m *eventbus.Message) error {
		got <- string(m.Data)
		return nil
	})); err != nil {
		t.Fatal(err)
	}
	if err := b.Start(ctx); err != nil {
		t.Fatal(err)
	}
	defer func() { out.Err("close", b.Close(context.WithoutCancel(ctx))) }()
	roundTrip := func(data string) {
		t.Helper()
		if err := b.PublishEvent(ctx, &eventbus.Message{Type: "secret.ping", Data: []byte(data)}); err != nil {
			t.Fatal(err)
		}
		select {
		case g := <-got:
			if g != data {
				t.Fatalf("received %q, want %q", g, data)
			}
		case <-ctx.Done():
			t.Fatalf("%q never arrived", data)
		}
	}
	roundTrip("before")
	mu.Lock()
	_ = conn.Close()
	mu.Unlock()
	for !strings.Contains(out.String(), "rabbitbus: reconnected") {
		select {
		case <-ctx.Done():
			t.Fatal("the driver never reconnected")
		case <-time.After(20 * time.Millisecond): // polling the log
		}
	}
	roundTrip("after")
	out.Err("publish to a bad destination", d.Publish(ctx, driver.Destination{Pattern: driver.Event, Name: "nope"}, nil))
}

func vhost(u *url.URL) string {
	if v := strings.TrimPrefix(u.Path, "/"); v != "" {
		return v
	}
	return "/"
}

// rabbitmqctl runs the shared broker's control tool.
func rabbitmqctl(ctx context.Context, args ...string) error {
	cmd := exec.CommandContext(ctx, "rabbitmqctl", args...)
	cmd.Env = append(cmd.Environ(), "ERL_EPMD_ADDRESS=127.0.0.1")
	if out, err := cmd.CombinedOutput(); err != nil {
		return errors.New(strings.TrimSpace(string(out)) + ": " + err.Error())
	}
	return nil
}
