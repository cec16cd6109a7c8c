package main

import (
	"strings"
	"testing"
)

// server serves other processes until interrupted and keeps messages in its
// data directory across restarts.
func TestServerKeepsMessagesAcrossRestarts(t *testing.T) {
	dir := t.TempDir()
	serve := func() (*running, string) {
		s := start(t, "server", "--data", dir, "--port", "-1")
		s.stdout.waitFor(t, "\n")
		url := strings.TrimSpace(s.stdout.String())
		if !strings.HasPrefix(url, "nats://127.0.0.1:") {
			t.Fatalf("server printed %q, want its client URL", url)
		}
		return s, url
	}

	s, url := serve()
	pub := execute(t, "", "publish", "order.created", `{"id":"o-1"}`, "--url", url)
	if pub.code != 0 {
		t.Fatalf("publish: exit %d, stderr %q", pub.code, pub.stderr)
	}
	if code := s.interrupt(t); code != 0 {
		t.Fatalf("server: exit %d, stderr %q", code, s.stderr.String())
	}

	s, url = serve()
	l := execute(t, "", "listen", "order.created", "--url", url, "--group", "replay", "--from-start", "--count", "1")
	got := lines(t, l.stdout)
	if l.code != 0 || len(got) != 1 || got[0]["id"] != strings.TrimSpace(pub.stdout) {
		t.Fatalf("listen after restart: exit %d, printed %q, stderr %q; want message %s", l.code, l.stdout, l.stderr, pub.stdout)
	}
	if code := s.interrupt(t); code != 0 {
		t.Fatalf("server: exit %d", code)
	}
}

func TestServerBadPort(t *testing.T) {
	r := execute(t, "", "server", "--data", t.TempDir(), "--port", "70000")
	if r.code != exitUsage || !strings.Contains(r.stderr, "out of range") {
		t.Fatalf("exit %d, stderr %q", r.code, r.stderr)
	}
}
