package natsbus_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os/exec"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/marty-msf/eventbus/driver"
	"github.com/marty-msf/eventbus/internal/testenv"
	"github.com/marty-msf/eventbus/natsbus"
)

// freePort returns a TCP port that nothing listens on right now.
func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// TestServerRestartLosesNothing stops the embedded server in the middle of
// 10,000 acknowledged publishes (at least once: Publish, without
// de-duplication ids) while a durable group consumes, then starts it again
// on the same port and storage. Every publish that returned nil must reach
// the consumer, which resumes by itself; duplicates are counted and
// reported.
func TestServerRestartLosesNothing(t *testing.T) {
	eo := natsbus.EmbeddedOptions{Port: freePort(t), DataDir: t.TempDir()}
	ctx := ctxFor(t, 80*time.Second)
	srv, err := natsbus.StartServer(ctx, &eo)
	if err != nil {
		t.Fatal(err)
	}
	var srvMu sync.Mutex
	t.Cleanup(func() {
		srvMu.Lock()
		defer srvMu.Unlock()
		_ = srv.Shutdown(context.Background())
	})
	restart := func() error {
		srvMu.Lock()
		defer srvMu.Unlock()
		if err := srv.Shutdown(ctx); err != nil {
			return err
		}
		time.Sleep(300 * time.Millisecond)
		s2, err := natsbus.StartServer(ctx, &eo)
		if err != nil {
			return err
		}
		srv = s2
		return nil
	}
	restartScenario(t, ctx, srv.ClientURL(), false, restart)
}

// TestServerKillLosesNothing does the same with a nats-server process (the
// machine's, 2.9.10 on ours) killed with SIGKILL and started again: no
// graceful shutdown flushes anything. It publishes exactly once
// (PublishDeduplicated): what the driver and the test publish again after
// the kill is stored once.
func TestServerKillLosesNothing(t *testing.T) {
	path, err := exec.LookPath("nats-server")
	if err != nil {
		if testenv.InCI() {
			t.Fatalf("nats-server is not installed: %v", err)
		}
		t.Skipf("nats-server is not installed: %v", err)
	}
	port, dir := freePort(t), t.TempDir()
	url := fmt.Sprintf("nats://127.0.0.1:%d", port)
	var mu sync.Mutex
	var cmd *exec.Cmd
	start := func() error {
		c := exec.Command(path, "-a", "127.0.0.1", "-p", fmt.Sprint(port), "-js", "-sd", dir)
		if err := c.Start(); err != nil {
			return err
		}
		mu.Lock()
		cmd = c
		mu.Unlock()
		for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
			if conn, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", port)); err == nil {
				conn.Close()
				return nil
			}
		}
		return fmt.Errorf("nats-server did not listen on %d", port)
	}
	kill := func() {
		mu.Lock()
		defer mu.Unlock()
		if cmd != nil {
			_ = cmd.Process.Kill()
			_ = cmd.Wait()
			cmd = nil
		}
	}
	if err := start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(kill)
	ctx := ctxFor(t, 80*time.Second)
	restartScenario(t, ctx, url, true, func() error {
		kill()
		time.Sleep(300 * time.Millisecond)
		return start()
	})
}

// restartScenario publishes 10,000 messages in batches to url while a
// durable group consumes them, calls restart after 3,000, and checks that
// every acknowledged message is received. With dedup it publishes through
// PublishDeduplicated and checks that the stream stored each message once
// (a batch published again after an error is acknowledged as duplicates).
func restartScenario(t *testing.T, ctx context.Context, url string, dedup bool, restart func() error) {
	const (
		total     = 10_000
		batch     = 10
		restartAt = 3_000
	)
	cfg := &natsbus.Config{
		Servers:       []string{url},
		ReconnectWait: 50 * time.Millisecond,
		MaxReconnects: -1,
	}
	pub := openDriver(t, cfg)
	send := pub.Publish
	if dedup {
		send = pub.PublishDeduplicated
	}
	con := openDriver(t, cfg)
	dest := driver.NewDestination(driver.Event, "fault", "restart")
	sub, err := con.Subscribe(ctx, dest, driver.SubscribeOptions{Group: "fault", Durable: true, AckWait: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}

	var (
		mu       sync.Mutex
		received = make(map[string]int, total)
		acked    = make(map[string]bool, total)
	)
	consumerCtx, stopConsumer := context.WithCancel(ctx)
	defer stopConsumer()
	var wg sync.WaitGroup
	var receiveErrors atomic.Int64
	wg.Go(func() {
		for {
			ds, err := sub.Receive(consumerCtx, 256)
			if err != nil {
				if consumerCtx.Err() != nil {
					return
				}
				receiveErrors.Add(1)
				time.Sleep(10 * time.Millisecond)
				continue
			}
			mu.Lock()
			for _, d := range ds {
				received[d.Message.ID]++
			}
			mu.Unlock()
			if err := sub.Ack(consumerCtx, ds); err != nil && consumerCtx.Err() == nil {
				t.Logf("ack: %v", err)
			}
		}
	})

	var publishErrors int
	restarted := make(chan struct{})
	var restartOnce sync.Once
	var ackedAtStop, ackedAtStart int
	countAcked := func() int {
		mu.Lock()
		defer mu.Unlock()
		return len(acked)
	}
	doRestart := func() {
		ackedAtStop = countAcked()
		if err := restart(); err != nil {
			t.Errorf("restart: %v", err)
			return
		}
		ackedAtStart = countAcked()
		close(restarted)
	}
	start := time.Now()
	for i := 0; i < total; i += batch {
		msgs := make([]*driver.Message, batch)
		for j := range msgs {
			msgs[j] = &driver.Message{
				ID: fmt.Sprintf("m-%05d", i+j), Source: "/fault", Type: "fault.restart",
				Key: fmt.Sprint((i + j) % 7), Data: []byte(fmt.Sprint(i + j)),
			}
		}
		if i == restartAt {
			restartOnce.Do(func() { wg.Go(doRestart) })
		}
		for {
			pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			err := send(pctx, dest, msgs)
			cancel()
			if err == nil || dedup && errors.Is(err, driver.ErrDuplicate) {
				break
			}
			publishErrors++
			t.Logf("publish of batch %d failed, retrying: %v", i/batch, err)
			if ctx.Err() != nil {
				t.Fatalf("gave up publishing: %v", err)
			}
		}
		mu.Lock()
		for _, m := range msgs {
			acked[m.ID] = true
		}
		mu.Unlock()
	}
	select {
	case <-restarted:
	case <-ctx.Done():
		t.Fatal("the server did not restart")
	}
	published := time.Since(start)

	deadline := time.Now().Add(30 * time.Second)
	var lost []string
	for {
		lost = lost[:0]
		mu.Lock()
		for id := range acked {
			if received[id] == 0 {
				lost = append(lost, id)
			}
		}
		mu.Unlock()
		if len(lost) == 0 || time.Now().After(deadline) {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	stopConsumer()
	wg.Wait()
	// Deduplicated, republished messages carry their id, so the server
	// stored each once; without, some may be stored twice.
	st, err := pub.JetStream().Stream(ctx, pub.StreamName(driver.Event))
	if err != nil {
		t.Fatal(err)
	}
	if info, err := st.Info(ctx); err != nil {
		t.Error(err)
	} else if dedup && info.State.Msgs != total || info.State.Msgs < total {
		t.Errorf("the stream holds %d messages, want %d (de-duplicated: %v)", info.State.Msgs, total, dedup)
	} else {
		t.Logf("the stream holds %d messages for %d published", info.State.Msgs, total)
	}
	if err := sub.Close(context.Background()); err != nil && !errors.Is(err, driver.ErrClosed) {
		t.Error(err)
	}

	mu.Lock()
	defer mu.Unlock()
	duplicates := 0
	for _, n := range received {
		duplicates += n - 1
	}
	t.Logf("server stopped after %d acknowledged publishes, started again after %d", ackedAtStop, ackedAtStart)
	t.Logf("published %d acknowledged messages in %v across a server restart: %d publish errors retried, %d receive errors, %d received, %d duplicates, %d lost",
		len(acked), published.Round(time.Millisecond), publishErrors, receiveErrors.Load(), len(received), duplicates, len(lost))
	if ackedAtStop >= total || ackedAtStart >= total {
		t.Errorf("the restart did not happen in the middle of the stream")
	}
	if len(acked) != total {
		t.Errorf("%d messages acknowledged, want %d", len(acked), total)
	}
	if len(lost) > 0 {
		t.Errorf("%d acknowledged messages never received, e.g. %v", len(lost), lost[:min(5, len(lost))])
	}
}
