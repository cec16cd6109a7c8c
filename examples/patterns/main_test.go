package main

import (
	"context"
	"io"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/marty-msf/eventbus/natsbus"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// Each pattern delivers what it promises: events to both groups in full,
// each command and query to one instance, the stream in order per key,
// broadcasts to both instances.
func TestEveryPatternKeepsItsPromise(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	const n = 100
	srv, err := natsbus.StartServer(ctx, &natsbus.EmbeddedOptions{DataDir: t.TempDir(), Port: -1})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Shutdown(context.Background())
	rows, err := run(ctx, srv.ClientURL(), n, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	byPattern := map[string]Row{}
	for _, r := range rows {
		byPattern[r.Pattern] = r
	}
	for pattern, check := range map[string]func(r Row) bool{
		"pub/sub":          func(r Row) bool { return r.Receivers == [2]int{n, n} && r.InOrder },
		"point-to-point":   func(r Row) bool { return r.Receivers[0]+r.Receivers[1] == n },
		"request/response": func(r Row) bool { return r.Receivers[0]+r.Receivers[1] == n && r.Replies == n },
		"streaming":        func(r Row) bool { return r.Receivers[0]+r.Receivers[1] == n && r.InOrder },
		"broadcast":        func(r Row) bool { return r.Receivers == [2]int{n, n} },
	} {
		if r, ok := byPattern[pattern]; !ok || !check(r) {
			t.Errorf("%s: %+v", pattern, r)
		}
	}
}
