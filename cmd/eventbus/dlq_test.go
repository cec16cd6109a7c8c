package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/marty-msf/eventbus"
	"github.com/marty-msf/eventbus/driver"
	"github.com/marty-msf/eventbus/internal/testenv"
)

// A command that its handler refuses is dead-lettered; dlq list and show
// find it, dlq replay puts it back and it is processed, dlq purge empties;
// on the embedded server and on Redis.
func TestDLQ(t *testing.T) {
	t.Run("nats", func(t *testing.T) {
		// A short de-duplication window, so that a replay of a message
		// stored a moment ago is accepted within the test.
		testDLQ(t, startServer(t).ClientURL()+"?stream_duplicates=1s", "billing", true)
	})
	t.Run("redis", func(t *testing.T) {
		var b [4]byte
		_, _ = rand.Read(b[:])
		testDLQ(t, testenv.RedisURL(t), "billing-"+hex.EncodeToString(b[:]), false)
	})
}

// testDLQ runs the dlq commands on the backend of url, where service is the
// test's own; own tells that nobody else uses the backend, so that the
// commands may act on every dead letter.
func testDLQ(t *testing.T, url, service string, own bool) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cfg := filepath.Join(t.TempDir(), "eventbus.yaml")
	if err := os.WriteFile(cfg, []byte("backends:\n  main:\n    url: "+url+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	d, err := driver.OpenURL(ctx, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	bus := eventbus.New(&eventbus.Options{Source: "test"})
	if err := bus.Register("main", d); err != nil {
		t.Fatal(err)
	}
	origin := "commands." + service + ".charge"
	var broken atomic.Bool
	broken.Store(true)
	processed := make(chan string, 10)
	if _, err := bus.HandleCommand(ctx, service, "charge", eventbus.HandlerFunc(func(_ context.Context, m *eventbus.Message) error {
		if broken.Load() {
			return eventbus.Permanent(errors.New("invalid merchant"))
		}
		processed <- m.ID
		return nil
	})); err != nil {
		t.Fatal(err)
	}
	if err := bus.Start(ctx); err != nil {
		t.Fatal(err)
	}
	defer bus.Close(context.Background())
	send := func() string {
		m := newMessage("charge", []byte(`{"amount":1200}`))
		if err := bus.SendCommand(ctx, service, m); err != nil {
			t.Fatal(err)
		}
		return m.ID
	}
	dlq := func(args ...string) result {
		return execute(t, "", append(append([]string{"dlq"}, args...), "--config", cfg)...)
	}
	// Only this test's dead letters, unless the backend is its own.
	mine := []string{"--origin", origin}
	waitList := func(n int) []map[string]any {
		t.Helper()
		deadline := time.Now().Add(30 * time.Second)
		for {
			r := dlq(append([]string{"list", "--json"}, mine...)...)
			if r.code != exitOK {
				t.Fatalf("dlq list: exit %d, stderr %q", r.code, r.stderr)
			}
			got := lines(t, r.stdout)
			if len(got) == n {
				return got
			}
			if time.Now().After(deadline) {
				t.Fatalf("dlq list shows %d dead letters, want %d: %s", len(got), n, r.stdout)
			}
			time.Sleep(100 * time.Millisecond)
		}
	}

	id := send()
	got := waitList(1)[0]
	if got["id"] != id || got["type"] != "charge" || got["origin"] != origin || got["backend"] != "main" ||
		!strings.Contains(got["reason"].(string), "invalid merchant") || got["data"].(map[string]any)["amount"] != 1200.0 {
		t.Errorf("dlq list: %v", got)
	}
	r := dlq(append([]string{"list"}, mine...)...)
	if r.code != exitOK || !strings.Contains(r.stdout, id) || !strings.Contains(r.stdout, origin) {
		t.Errorf("dlq list: exit %d, stdout %q", r.code, r.stdout)
	}
	r = dlq("show", id)
	if r.code != exitOK || !strings.Contains(r.stdout, "id:            "+id) || !strings.Contains(r.stdout, "invalid merchant") ||
		!strings.Contains(r.stdout, `data:          {"amount":1200}`) {
		t.Errorf("dlq show: exit %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
	}
	if r = dlq("replay"); r.code != exitUsage || !strings.Contains(r.stderr, "no dead letters selected") {
		t.Errorf("dlq replay without a selection: exit %d, stderr %q", r.code, r.stderr)
	}

	broken.Store(false)
	deadline := time.Now().Add(30 * time.Second)
	for {
		r = dlq("replay", id)
		if r.code == exitOK {
			break
		}
		// Within the de-duplication window the server drops the replay as
		// a duplicate, and the tool says so.
		if !strings.Contains(r.stderr, "de-duplication window") || time.Now().After(deadline) {
			t.Fatalf("dlq replay: exit %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
		}
		time.Sleep(200 * time.Millisecond)
	}
	if !strings.Contains(r.stdout, "replayed "+id+" to "+origin+"\nreplayed 1 of 1 dead letters\n") {
		t.Errorf("dlq replay: stdout %q", r.stdout)
	}
	select {
	case got := <-processed:
		if got != id {
			t.Errorf("processed %s, want %s", got, id)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("the replayed command was not processed")
	}
	if r = dlq(append([]string{"list"}, mine...)...); r.code != exitOK || !strings.HasPrefix(r.stdout, "no dead letters") {
		t.Errorf("dlq list after the replay: exit %d, stdout %q", r.code, r.stdout)
	}
	if r = dlq("show", id); r.code != exitFailure || !strings.Contains(r.stderr, "list them with eventbus dlq list") {
		t.Errorf("dlq show of a replayed one: exit %d, stderr %q", r.code, r.stderr)
	}

	broken.Store(true)
	send()
	send()
	waitList(2)
	purge := append([]string{"purge"}, mine...)
	if own {
		purge = []string{"purge", "--all"}
	}
	if r = dlq(purge...); r.code != exitOK || r.stdout != "purged 2 dead letters\n" {
		t.Errorf("dlq purge: exit %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
	}
	if r = dlq(append([]string{"list"}, mine...)...); r.code != exitOK || !strings.HasPrefix(r.stdout, "no dead letters") {
		t.Errorf("dlq list after the purge: exit %d, stdout %q", r.code, r.stdout)
	}
}
