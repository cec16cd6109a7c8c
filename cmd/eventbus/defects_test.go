package main

import (
	"context"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/marty-msf/eventbus/natsbus"
)

// freePort returns a port that nothing listens on right now.
func freePort(t testing.TB) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// A client started before its server waits for it, as long as
// --connect-timeout allows, instead of failing with "no servers available".
func TestClientWaitsForTheServer(t *testing.T) {
	port := strconv.Itoa(freePort(t))
	url := "nats://127.0.0.1:" + port
	l := start(t, "listen", "order.placed", "--url", url, "--count", "1", "--connect-timeout", "15s")
	l.stderr.waitFor(t, "waiting for "+url)
	p := start(t, "publish", "order.placed", `{"order_id":"o-1"}`, "--url", url, "--connect-timeout", "15s")
	p.stderr.waitFor(t, "waiting for "+url)

	s := start(t, "server", "--data", t.TempDir(), "--port", port)
	s.stdout.waitFor(t, url)
	l.stderr.waitFor(t, "listening")
	// The publish may have connected before the listen subscribed: the
	// listen sees events published while it runs, so publish again if so.
	if code := p.wait(t); code != 0 {
		t.Fatalf("publish: exit %d, stderr %q", code, p.stderr.String())
	}
	id := strings.TrimSpace(p.stdout.String())
	deadline := time.Now().Add(15 * time.Second)
	for !strings.Contains(l.stdout.String(), "o-1") && time.Now().Before(deadline) {
		again := execute(t, "", "publish", "order.placed", `{"order_id":"o-1"}`, "--url", url)
		if again.code != 0 {
			t.Fatalf("publish: exit %d, stderr %q", again.code, again.stderr)
		}
		id = strings.TrimSpace(again.stdout)
		time.Sleep(100 * time.Millisecond)
	}
	if code := l.wait(t); code != 0 {
		t.Fatalf("listen: exit %d, stderr %q", code, l.stderr.String())
	}
	got := lines(t, l.stdout.String())
	if len(got) != 1 || got[0]["data"].(map[string]any)["order_id"] != "o-1" {
		t.Fatalf("listen printed %q; want the event (last id %s)", l.stdout.String(), id)
	}
}

// A second server on a data directory that a running server holds fails at
// once and names the holder.
func TestServerRefusesAHeldDataDirectory(t *testing.T) {
	dir := t.TempDir()
	first := start(t, "server", "--data", dir, "--port", "-1")
	first.stdout.waitFor(t, "nats://")
	began := time.Now()
	r := execute(t, "", "server", "--data", dir, "--port", "-1")
	if took := time.Since(began); r.code != exitFailure || took > 5*time.Second ||
		!strings.Contains(r.stderr, "is in use by another eventbus server (pid "+strconv.Itoa(os.Getpid())+")") ||
		!strings.Contains(r.stderr, "another --data") {
		t.Fatalf("exit %d after %v, stderr %q", r.code, took, r.stderr)
	}
	if code := first.interrupt(t); code != 0 {
		t.Fatalf("first server: exit %d, stderr %q", code, first.stderr.String())
	}
	// Released at exit: the directory serves again.
	again := start(t, "server", "--data", dir, "--port", "-1")
	again.stdout.waitFor(t, "nats://")
	if code := again.interrupt(t); code != 0 {
		t.Fatalf("server after release: exit %d, stderr %q", code, again.stderr.String())
	}
}

// A taken port and a data directory that cannot be made are immediate,
// named errors that say what to do.
func TestServerStartFailuresAreImmediate(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	file := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(file, []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		args []string
		want []string
	}{
		{"busy port", []string{"--data", t.TempDir(), "--port", strconv.Itoa(ln.Addr().(*net.TCPAddr).Port)},
			[]string{"cannot listen on " + ln.Addr().String(), "address already in use", "choose another --port"}},
		{"data under a file", []string{"--data", filepath.Join(file, "data"), "--port", "-1"},
			[]string{"cannot use " + filepath.Join(file, "data"), "not a directory", "give --data a directory you can write"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			began := time.Now()
			r := execute(t, "", append([]string{"server"}, tc.args...)...)
			took := time.Since(began)
			if r.code != exitFailure || took > 5*time.Second {
				t.Fatalf("exit %d after %v, stderr %q", r.code, took, r.stderr)
			}
			for _, w := range tc.want {
				if !strings.Contains(r.stderr, w) {
					t.Errorf("stderr %q lacks %q", r.stderr, w)
				}
			}
			if strings.Count(r.stderr, "error:") != 1 || strings.Contains(r.stderr, "deadline") {
				t.Errorf("stderr %q", r.stderr)
			}
		})
	}
}

// listen says on stderr when the server goes away and when it is back, and
// prints what is published after.
func TestListenReportsDisconnectAndReconnect(t *testing.T) {
	dir, port := t.TempDir(), freePort(t)
	startAt := func() *natsbus.Server {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		srv, err := natsbus.StartServer(ctx, &natsbus.EmbeddedOptions{DataDir: dir, Port: port})
		if err != nil {
			t.Fatal(err)
		}
		return srv
	}
	srv := startAt()
	url := srv.ClientURL()
	l := start(t, "listen", "order.placed", "--url", url, "--group", "audit", "--count", "1")
	l.stderr.waitFor(t, "listening")
	if err := srv.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	l.stderr.waitFor(t, "disconnected")
	srv = startAt()
	defer func() {
		if err := srv.Shutdown(context.Background()); err != nil {
			t.Error(err)
		}
	}()
	l.stderr.waitFor(t, "reconnected")
	p := execute(t, "", "publish", "order.placed", `{"order_id":"o-2"}`, "--url", url)
	if p.code != 0 {
		t.Fatalf("publish: exit %d, stderr %q", p.code, p.stderr)
	}
	if code := l.wait(t); code != 0 {
		t.Fatalf("listen: exit %d, stderr %q", code, l.stderr.String())
	}
	if got := lines(t, l.stdout.String()); len(got) != 1 || got[0]["id"] != strings.TrimSpace(p.stdout) {
		t.Fatalf("listen printed %q, want %s", l.stdout.String(), p.stdout)
	}
}
