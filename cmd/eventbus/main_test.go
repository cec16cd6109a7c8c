package main

import (
	"bytes"
	"context"
	"encoding/json"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/marty-msf/eventbus"
	"github.com/marty-msf/eventbus/natsbus"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// startServer runs an embedded server on a free port for one test.
func startServer(t testing.TB) *natsbus.Server {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	srv, err := natsbus.StartServer(ctx, &natsbus.EmbeddedOptions{DataDir: t.TempDir(), Port: -1})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := srv.Shutdown(context.Background()); err != nil {
			t.Error(err)
		}
	})
	return srv
}

// startBus starts a bus of the test itself on srv, after setup registered its
// handlers; it is closed when the test ends.
func startBus(t testing.TB, srv *natsbus.Server, setup func(*eventbus.Bus)) *eventbus.Bus {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	d, err := natsbus.Open(ctx, &natsbus.Config{Servers: []string{srv.ClientURL()}})
	if err != nil {
		t.Fatal(err)
	}
	bus := eventbus.New(&eventbus.Options{Source: "test"})
	if err := bus.Register("nats", d); err != nil {
		t.Fatal(err)
	}
	setup(bus)
	if err := bus.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := bus.Close(context.Background()); err != nil {
			t.Error(err)
		}
	})
	return bus
}

// syncBuffer is an output that a running command writes while the test reads.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// waitFor waits until the output contains s.
func (b *syncBuffer) waitFor(t testing.TB, s string) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !strings.Contains(b.String(), s) {
		if time.Now().After(deadline) {
			t.Fatalf("output never contained %q; it is %q", s, b.String())
		}
		time.Sleep(5 * time.Millisecond)
	}
}

type result struct {
	code           int
	stdout, stderr string
}

// noEnv is an empty environment.
func noEnv(string) string { return "" }

// execute runs a command line to its end with stdin as standard input.
func execute(t testing.TB, stdin string, args ...string) result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	var out, errOut bytes.Buffer
	code := run(ctx, args, noEnv, strings.NewReader(stdin), &out, &errOut)
	return result{code, out.String(), errOut.String()}
}

// running is a command running in the background.
type running struct {
	stdout, stderr syncBuffer
	cancel         context.CancelFunc
	done           chan int
}

// start runs a command line in the background; wait collects it. The command
// is interrupted when the test ends, if it is still running.
func start(t testing.TB, args ...string) *running {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	r := &running{cancel: cancel, done: make(chan int, 1)}
	go func() { r.done <- run(ctx, args, noEnv, strings.NewReader(""), &r.stdout, &r.stderr) }()
	t.Cleanup(func() { r.cancel(); <-r.done; r.done <- 0 })
	return r
}

// wait returns the command's exit status once it ended by itself.
func (r *running) wait(t testing.TB) int {
	t.Helper()
	select {
	case code := <-r.done:
		r.done <- code
		return code
	case <-time.After(45 * time.Second):
		t.Fatalf("command did not end; stdout %q, stderr %q", r.stdout.String(), r.stderr.String())
		return -1
	}
}

// interrupt cancels the command's context as SIGINT does and returns its
// exit status.
func (r *running) interrupt(t testing.TB) int {
	t.Helper()
	r.cancel()
	return r.wait(t)
}

// lines decodes the JSON lines a listen printed.
func lines(t testing.TB, out string) []map[string]any {
	t.Helper()
	var ms []map[string]any
	for _, l := range strings.Split(strings.TrimSuffix(out, "\n"), "\n") {
		if l == "" {
			continue
		}
		var m map[string]any
		if err := json.Unmarshal([]byte(l), &m); err != nil {
			t.Fatalf("line %q is not JSON: %v", l, err)
		}
		ms = append(ms, m)
	}
	return ms
}
