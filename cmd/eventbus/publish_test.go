package main

import (
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/marty-msf/eventbus"
)

func TestPublishEventListenReceivesIt(t *testing.T) {
	srv := startServer(t)
	url := srv.ClientURL()
	l := start(t, "listen", "order.created", "--url", url, "--count", "1")
	l.stderr.waitFor(t, "listening to events of type order.created")

	pub := execute(t, "", "publish", "order.created", `{"id":"o-1","total":12.5}`, "--url", url, "--key", "cust-7", "--subject", "o-1")
	if pub.code != 0 {
		t.Fatalf("publish: exit %d, stderr %q", pub.code, pub.stderr)
	}
	id := strings.TrimSpace(pub.stdout)
	if id == "" || strings.Contains(id, "\n") {
		t.Fatalf("publish printed %q, want one message id", pub.stdout)
	}
	if code := l.wait(t); code != 0 {
		t.Fatalf("listen: exit %d, stderr %q", code, l.stderr.String())
	}
	got := lines(t, l.stdout.String())
	if len(got) != 1 {
		t.Fatalf("listen printed %d messages, want 1: %q", len(got), l.stdout.String())
	}
	want := map[string]any{
		"specversion": "1.0", "id": id, "type": "order.created", "source": "eventbus-cli",
		"subject": "o-1", "partitionkey": "cust-7", "datacontenttype": "application/json",
	}
	for k, v := range want {
		if got[0][k] != v {
			t.Errorf("%s = %v, want %v", k, got[0][k], v)
		}
	}
	data, _ := got[0]["data"].(map[string]any)
	if data["id"] != "o-1" || data["total"] != 12.5 {
		t.Errorf("data = %v, want the published payload", got[0]["data"])
	}
	if _, err := time.Parse(time.RFC3339Nano, got[0]["time"].(string)); err != nil {
		t.Errorf("time: %v", err)
	}
}

func TestPublishFromStdin(t *testing.T) {
	srv := startServer(t)
	l := start(t, "listen", "note.added", "--url", srv.ClientURL(), "--count", "2")
	l.stderr.waitFor(t, "listening")
	for i, in := range []string{"[1, 2]\n", "\"text\""} {
		args := []string{"publish", "note.added", "--url", srv.ClientURL()}
		if i == 1 {
			args = append(args, "-")
		}
		if r := execute(t, in, args...); r.code != 0 {
			t.Fatalf("publish %q: exit %d, stderr %q", in, r.code, r.stderr)
		}
	}
	if code := l.wait(t); code != 0 {
		t.Fatalf("listen: exit %d", code)
	}
	if out := l.stdout.String(); !strings.Contains(out, `"data":[1,2]`) || !strings.Contains(out, `"data":"text"`) ||
		strings.Index(out, `"data":[1,2]`) > strings.Index(out, `"data":"text"`) {
		t.Fatalf("listen printed %q, want [1,2] then \"text\"", out)
	}
}

func TestPublishCommandAndStream(t *testing.T) {
	srv := startServer(t)
	var mu sync.Mutex
	got := map[string]*eventbus.Message{}
	arrived := make(chan struct{}, 2)
	keep := func(dest string, m *eventbus.Message) {
		mu.Lock()
		got[dest] = m
		mu.Unlock()
		arrived <- struct{}{}
	}
	startBus(t, srv, func(b *eventbus.Bus) {
		if _, err := b.HandleCommand(context.Background(), "billing", "invoice.create", eventbus.HandlerFunc(func(_ context.Context, m *eventbus.Message) error {
			keep("command", m)
			return nil
		})); err != nil {
			t.Fatal(err)
		}
		if _, err := b.ProcessStream(context.Background(), "clicks", "counter", eventbus.BatchHandlerFunc(func(_ context.Context, ms []*eventbus.Message) error {
			for _, m := range ms {
				keep("stream", m)
			}
			return nil
		}), &eventbus.BatchOptions{Size: 1}); err != nil {
			t.Fatal(err)
		}
	})

	cmd := execute(t, "", "publish", "invoice.create", `{"order":"o-1"}`, "--url", srv.ClientURL(), "--command", "billing")
	str := execute(t, "", "publish", "click", `{"page":"/"}`, "--url", srv.ClientURL(), "--stream", "clicks", "--key", "user-1")
	for _, r := range []result{cmd, str} {
		if r.code != 0 {
			t.Fatalf("publish: exit %d, stderr %q", r.code, r.stderr)
		}
	}
	for range 2 {
		select {
		case <-arrived:
		case <-time.After(10 * time.Second):
			t.Fatal("the command or the stream message never arrived")
		}
	}
	mu.Lock()
	defer mu.Unlock()
	if m := got["command"]; m.ID != strings.TrimSpace(cmd.stdout) || m.Type != "invoice.create" || string(m.Data) != `{"order":"o-1"}` {
		t.Errorf("command received %s %s %s, want id %s", m.ID, m.Type, m.Data, cmd.stdout)
	}
	if m := got["stream"]; m.ID != strings.TrimSpace(str.stdout) || m.Type != "click" || m.Key != "user-1" || string(m.Data) != `{"page":"/"}` {
		t.Errorf("stream received %s %s key %q %s, want id %s", m.ID, m.Type, m.Key, m.Data, str.stdout)
	}
	select {
	case <-arrived:
		t.Error("a message arrived twice")
	case <-time.After(100 * time.Millisecond):
	}
}

func TestPublishBroadcast(t *testing.T) {
	srv := startServer(t)
	l := start(t, "listen", "cache.flush", "--broadcast", "--url", srv.ClientURL(), "--count", "1")
	l.stderr.waitFor(t, "listening to broadcasts")
	pub := execute(t, "", "publish", "cache.flush", `{"region":"eu"}`, "--broadcast", "--url", srv.ClientURL())
	if pub.code != 0 {
		t.Fatalf("publish: exit %d, stderr %q", pub.code, pub.stderr)
	}
	if code := l.wait(t); code != 0 {
		t.Fatalf("listen: exit %d", code)
	}
	got := lines(t, l.stdout.String())
	if len(got) != 1 || got[0]["id"] != strings.TrimSpace(pub.stdout) || got[0]["type"] != "cache.flush" {
		t.Fatalf("listen printed %q, want the broadcast %s", l.stdout.String(), pub.stdout)
	}
}
