package faults_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/marty-msf/eventbus"
	"github.com/marty-msf/eventbus/driver"
	"github.com/marty-msf/eventbus/faults"
)

// binDir holds the broker programs built from testdata, once per test
// binary.
var (
	binDir    string
	buildOnce sync.Once
	buildErr  error
)

func TestMain(m *testing.M) {
	code := m.Run()
	if binDir != "" {
		_ = os.RemoveAll(binDir)
	}
	if code == 0 {
		if err := goleak.Find(); err != nil {
			fmt.Fprintln(os.Stderr, "goleak:", err)
			code = 1
		}
	}
	os.Exit(code)
}

// soak says whether the long variants run (EVENTBUS_SOAK=1).
var soak = os.Getenv("EVENTBUS_SOAK") != ""

// scaled is short in a default run and long with EVENTBUS_SOAK=1.
func scaled(short, long int) int {
	if soak {
		return long
	}
	return short
}

// program returns the path of the broker program testdata/<name>, built
// with the go command on first use.
func program(t *testing.T, name string) string {
	t.Helper()
	buildOnce.Do(func() {
		binDir, buildErr = os.MkdirTemp("", "eventbus-faults-")
		if buildErr != nil {
			return
		}
		cmd := exec.Command(goTool(), "build", "-o", binDir+string(filepath.Separator),
			"./testdata/natsserver", "./testdata/kafkaserver")
		out, err := cmd.CombinedOutput()
		if err != nil {
			buildErr = fmt.Errorf("go build: %w\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatalf("build the broker programs: %v", buildErr)
	}
	return filepath.Join(binDir, name)
}

// startBroker starts a broker process on a free port and kills it when the
// test ends. args builds the command line from the port.
func startBroker(t *testing.T, name, path string, args func(port int) []string) *faults.Process {
	t.Helper()
	port, err := faults.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	p, err := faults.StartProcess(ctx, name, fmt.Sprintf("127.0.0.1:%d", port), path, args(port)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := p.Kill(); err != nil {
			t.Error(err)
		}
		if t.Failed() {
			t.Logf("%s output:\n%s", name, p.Output())
		}
	})
	return p
}

// restart kills p with SIGKILL, and starts it again on its port and data.
func restart(t *testing.T, p *faults.Process) {
	t.Helper()
	pid := p.Pid()
	if err := p.Kill(); err != nil {
		t.Error(err)
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if err := p.Start(ctx); err != nil {
		t.Error(err)
		return
	}
	t.Logf("killed pid %d with SIGKILL, started again as pid %d", pid, p.Pid())
}

func unique() string {
	var b [4]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

func ctxFor(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// startBus starts a bus on d after setup registered its handlers, and
// closes it when the test ends.
func startBus(t *testing.T, name string, d driver.Driver, setup func(*eventbus.Bus) error) *eventbus.Bus {
	t.Helper()
	b := eventbus.New(&eventbus.Options{
		Source: name,
		Retry:  eventbus.RetryPolicy{MaxAttempts: eventbus.RetryForever, InitialBackoff: 20 * time.Millisecond, MaxBackoff: 500 * time.Millisecond},
	})
	if err := b.Register("backend", d); err != nil {
		t.Fatal(err)
	}
	if setup != nil {
		if err := setup(b); err != nil {
			t.Fatal(err)
		}
	}
	if err := b.Start(ctxFor(t, 60*time.Second)); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := b.Close(ctx); err != nil && !errors.Is(err, eventbus.ErrClosed) {
			t.Errorf("close bus %s: %v", name, err)
		}
	})
	return b
}

// streamRun describes one stream through a fault.
type streamRun struct {
	// total messages, published by four publishers; the fault is injected
	// once faultAfter publishes were confirmed.
	total, faultAfter int
	// open returns a new connection to the broker, once for the consumer
	// and once for the publisher.
	open func(t *testing.T) driver.Driver
	// fault injects the fault and returns when the broker (or the
	// connection) is back.
	fault func(t *testing.T)
	// deliveryBound bounds the wait for the last deliveries.
	deliveryBound time.Duration
}

// run publishes through a Bus, one event at a time and with a retry of the
// same message (same id) until the broker confirms it, while a durable group
// on another Bus consumes; it injects the fault in the middle of the stream
// and checks that every confirmed publish was delivered at least once. It
// prints and returns the figures.
func (r streamRun) run(t *testing.T) faults.Report {
	t.Helper()
	ctx := ctxFor(t, 4*time.Minute)
	typ := "faults.stream." + unique()
	tally := faults.NewTally()
	startBus(t, "consumer", r.open(t), func(b *eventbus.Bus) error {
		_, err := b.SubscribeEvents(ctx, []string{typ}, "faults", eventbus.HandlerFunc(func(_ context.Context, m *eventbus.Message) error {
			tally.Delivered(m.ID)
			return nil
		}), eventbus.WithConcurrency(4))
		return err
	})
	pub := startBus(t, "publisher", r.open(t), nil)

	ids := make(chan string)
	var confirmed, publishErrors atomic.Int64
	faultDone := make(chan struct{})
	var faultOnce sync.Once
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			for id := range ids {
				m := &eventbus.Message{ID: id, Type: typ, Key: id[len(id)-1:], Data: []byte(id)}
				for {
					pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
					err := pub.PublishEvent(pctx, m)
					cancel()
					if err == nil {
						break
					}
					publishErrors.Add(1)
					if ctx.Err() != nil {
						return
					}
					time.Sleep(20 * time.Millisecond)
				}
				tally.Confirmed(id)
				if confirmed.Add(1) == int64(r.faultAfter) {
					faultOnce.Do(func() {
						wg.Go(func() {
							defer close(faultDone)
							tally.Fault()
							at := confirmed.Load()
							r.fault(t)
							t.Logf("fault injected after %d confirmed publishes, over after %d", at, confirmed.Load())
						})
					})
				}
			}
		})
	}
	for i := range r.total {
		select {
		case ids <- fmt.Sprintf("m-%06d", i):
		case <-ctx.Done():
		}
	}
	close(ids)
	wg.Wait()
	select {
	case <-faultDone:
	default:
		t.Fatal("the fault was never injected")
	}
	lost := tally.AwaitDelivered(ctxFor(t, r.deliveryBound))
	rep := tally.Report()
	t.Logf("%s; %d publish attempts failed and were retried", rep, publishErrors.Load())
	if rep.Confirmed != r.total {
		t.Errorf("%d publishes confirmed, want %d", rep.Confirmed, r.total)
	}
	if len(lost) > 0 {
		t.Errorf("%d confirmed messages never delivered, e.g. %v", len(lost), lost[:min(len(lost), 5)])
	}
	return rep
}

// goTool is the go command that builds the broker programs.
func goTool() string {
	if path, err := exec.LookPath("go"); err == nil {
		return path
	}
	if root := os.Getenv("GOROOT"); root != "" {
		return filepath.Join(root, "bin", "go")
	}
	return "go"
}
