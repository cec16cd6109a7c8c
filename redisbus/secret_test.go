package redisbus_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/marty-msf/eventbus"
	"github.com/marty-msf/eventbus/driver"
	"github.com/marty-msf/eventbus/faults"
	"github.com/marty-msf/eventbus/internal/testenv"
	"github.com/marty-msf/eventbus/redisbus"
)

// secretOutput gathers everything a test could leak a password through:
// the driver's and the bus's logs at every level, go-redis's own log, and
// the text of every error.
type secretOutput struct{ testenv.Output }

// Printf is go-redis's logging interface.
func (o *secretOutput) Printf(_ context.Context, format string, v ...any) {
	fmt.Fprintf(o, "go-redis: "+format+"\n", v...)
}

// stderrLogger is go-redis's log on stderr, put back when the test ends.
type stderrLogger struct{}

func (stderrLogger) Printf(_ context.Context, format string, v ...any) {
	fmt.Fprintf(os.Stderr, "redis: "+format+"\n", v...)
}

// TestCredentialsNeverLeak runs a redis-server of the test's own that
// requires a password and has an ACL user, and puts a sentinel in every
// password: wrong passwords (ACL user, requirepass, Sentinel), an
// unreachable server, bad configurations and URLs (through driver.OpenURL
// too), and a whole session of the user whose password it is (publishing,
// consuming, a server killed under it, closing). No log line and no error
// may carry the sentinel.
func TestCredentialsNeverLeak(t *testing.T) {
	const sentinel = "S3NTINEL-pw-7c2d"
	serverPath := testenv.Program(t, "redis-server")
	dir := t.TempDir()
	conf := filepath.Join(dir, "redis.conf")
	text := "requirepass " + sentinel + "-default\nuser svc on >" + sentinel + "-svc ~* &* +@all\n"
	if err := os.WriteFile(conf, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	server := startRedisProcess(t, "redis-server", serverPath, func(port int) []string {
		return []string{conf, "--port", fmt.Sprint(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", dir}
	})
	port, err := faults.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	unreachable := fmt.Sprintf("127.0.0.1:%d", port)

	out := &secretOutput{}
	redis.SetLogger(out)
	t.Cleanup(func() { redis.SetLogger(stderrLogger{}) })
	ctx := ctxFor(t, 2*time.Minute)
	config := func(addr, user, password string) *redisbus.Config {
		cfg := &redisbus.Config{Addrs: []string{addr}, Username: user, Password: password, DialTimeout: time.Second}
		cfg.KeyPrefix = "secrets"
		cfg.Logger = out.Logger()
		return cfg
	}
	fails := func(what string, cfg *redisbus.Config) {
		t.Helper()
		octx, cancel := context.WithTimeout(ctx, 3*time.Second)
		defer cancel()
		d, err := redisbus.Open(octx, cfg)
		if err == nil {
			_ = d.Close(ctx)
			t.Errorf("%s: Open succeeded", what)
			return
		}
		out.Err(what, err)
	}
	fails("wrong ACL password", config(server.Addr(), "svc", sentinel+"-wrong"))
	fails("wrong requirepass password", config(server.Addr(), "", sentinel+"-wrong"))
	fails("no password", config(server.Addr(), "", ""))
	fails("unreachable server", config(unreachable, "svc", sentinel+"-svc"))
	sentinelCfg := config(unreachable, "svc", sentinel+"-svc")
	sentinelCfg.MasterName, sentinelCfg.SentinelUsername, sentinelCfg.SentinelPassword = "primary", "watch", sentinel+"-sentinel"
	fails("unreachable Sentinel", sentinelCfg)
	bad := config(server.Addr(), "svc", sentinel+"-svc")
	bad.Addrs = append(bad.Addrs, "not an address")
	bad.DB, bad.PoolSize = -1, -2
	fails("bad configuration", bad)
	missingCA := config(server.Addr(), "svc", sentinel+"-svc")
	missingCA.TLS = &redisbus.TLSConfig{CAFile: "/nonexistent/ca.pem"}
	fails("missing TLS files", missingCA)

	for _, raw := range []string{
		"redis://svc:" + sentinel + "-wrong@" + server.Addr() + "/0",
		"redis://:" + sentinel + "-wrong@" + server.Addr(),
		"redis://svc:" + sentinel + "-svc@" + unreachable + "/0?dial_timeout=1s",
		"redis://svc:" + sentinel + "-svc@" + server.Addr() + "/0?bogus=1",
		"redis://svc:" + sentinel + "-svc@" + server.Addr() + "/zero?ack_wait=soon",
		"redis://svc:" + sentinel + "-svc@127.0.0.1:notaport",
		"redis://svc:" + sentinel + "-svc@[::1/",
		"rediss://svc:" + sentinel + "-svc@" + server.Addr() + "?tls_ca_file=/nonexistent/ca.pem",
		"redis://svc@" + unreachable + "?master_name=primary&sentinel_password=" + sentinel + "-sentinel&dial_timeout=1s",
	} {
		_, err := redisbus.ParseURL(raw)
		out.Err("ParseURL", err)
		octx, cancel := context.WithTimeout(ctx, 3*time.Second)
		d, err := driver.OpenURL(octx, raw, &driver.OpenOptions{Logger: out.Logger()})
		cancel()
		out.Err("driver.OpenURL", err)
		if err == nil {
			_ = d.Close(ctx)
		}
	}

	// A session of the user whose password it is, through the bus, with
	// the server killed under it.
	b := eventbus.New(&eventbus.Options{Source: "secrets-test", Logger: out.Logger()})
	d, err := redisbus.Open(ctx, config(server.Addr(), "svc", sentinel+"-svc"))
	if err != nil {
		t.Fatalf("open with the right password: %v", driver.RedactError(err, sentinel))
	}
	if err := b.Register("redis", d); err != nil {
		t.Fatal(err)
	}
	got := make(chan string, 10)
	if _, err := b.SubscribeEvents(ctx, []string{"secret.checked"}, "g", eventbus.HandlerFunc(func(_ context.Context, m *eventbus.Message) error {
		got <- string(m.Data)
		return nil
	})); err != nil {
		t.Fatal(err)
	}
	if err := b.Start(ctx); err != nil {
		t.Fatal(err)
	}
	if err := b.PublishEvent(ctx, &eventbus.Message{Type: "secret.checked", Data: []byte("hello")}); err != nil {
		t.Fatal(err)
	}
	select {
	case m := <-got:
		if m != "hello" {
			t.Errorf("received %q, want hello", m)
		}
	case <-ctx.Done():
		t.Fatal("the event never arrived")
	}
	if err := server.Kill(); err != nil {
		t.Fatal(err)
	}
	pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	out.Err("publish with the server down", b.PublishEvent(pctx, &eventbus.Message{Type: "secret.checked", Data: []byte("lost")}))
	cancel()
	// The consumer's receive fails and is logged by the bus meanwhile.
	waitFor(t, ctx, func() bool { return strings.Contains(out.String(), "receive failed") })
	cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	out.Err("close with the server down", b.Close(cctx))
	cancel()

	if strings.Contains(out.String(), sentinel) {
		for _, line := range strings.Split(out.String(), "\n") {
			if strings.Contains(line, sentinel) {
				t.Errorf("the password leaked: %s", strings.ReplaceAll(line, sentinel, "<SENTINEL>"))
			}
		}
	}
	if os.Getenv("EVENTBUS_SHOW_SECRET_OUTPUT") != "" {
		t.Log(strings.ReplaceAll(out.String(), sentinel, "<SENTINEL>"))
	}
	if !strings.Contains(out.String(), "wrong ACL password") || !strings.Contains(out.String(), "unreachable server") {
		t.Errorf("the failures were not gathered:\n%s", out.String())
	}
}

// waitFor polls cond until it holds or ctx ends.
func waitFor(t *testing.T, ctx context.Context, cond func() bool) {
	t.Helper()
	for !cond() {
		select {
		case <-ctx.Done():
			t.Fatal("condition not met before the deadline")
		case <-time.After(20 * time.Millisecond):
		}
	}
}
