package faults

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os/exec"
	"strconv"
	"sync"
	"syscall"
	"time"
)

// Process is a broker that a test runs as a child process on a port of its
// own, and kills and restarts by its process id.
type Process struct {
	name string
	addr string
	path string
	args []string

	mu   sync.Mutex
	cmd  *exec.Cmd
	done chan struct{} // closed when cmd has been waited for
	out  *syncBuffer
}

// FreePort returns a TCP port of 127.0.0.1 that nothing listens on now.
func FreePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// StartProcess runs path with args and returns once addr (the broker's
// host:port) accepts TCP connections, or fails when ctx ends first or the
// process exits. name is for messages.
func StartProcess(ctx context.Context, name, addr, path string, args ...string) (*Process, error) {
	p := &Process{name: name, addr: addr, path: path, args: args, out: &syncBuffer{}}
	return p, p.Start(ctx)
}

// Addr is the broker's host:port.
func (p *Process) Addr() string { return p.addr }

// Pid is the process id of the running broker, 0 when it is not running.
func (p *Process) Pid() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd == nil {
		return 0
	}
	return p.cmd.Process.Pid
}

// Output is what the broker wrote to stdout and stderr, over all its runs.
func (p *Process) Output() string { return p.out.String() }

// Start starts the broker again after Kill (StartProcess starts it the
// first time) and waits until it accepts connections.
func (p *Process) Start(ctx context.Context) error {
	p.mu.Lock()
	if p.cmd != nil {
		p.mu.Unlock()
		return fmt.Errorf("faults: %s is running already (pid %d)", p.name, p.cmd.Process.Pid)
	}
	cmd := exec.Command(p.path, p.args...)
	cmd.Stdout, cmd.Stderr = p.out, p.out
	// Its own process group: a signal meant for the test never reaches it,
	// and it never outlives a test that fails to kill it by more than the
	// test's own cleanup.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		p.mu.Unlock()
		return fmt.Errorf("faults: start %s: %w", p.name, err)
	}
	done := make(chan struct{})
	p.cmd, p.done = cmd, done
	p.mu.Unlock()
	go func() {
		_ = cmd.Wait()
		close(done)
	}()
	for {
		var d net.Dialer
		dctx, cancel := context.WithTimeout(ctx, time.Second)
		conn, err := d.DialContext(dctx, "tcp", p.addr)
		cancel()
		if err == nil {
			conn.Close()
			return nil
		}
		select {
		case <-done:
			p.reap()
			return fmt.Errorf("faults: %s exited before listening on %s: %s", p.name, p.addr, lastLines(p.out.String(), 5))
		case <-ctx.Done():
			_ = p.Kill()
			return fmt.Errorf("faults: %s did not listen on %s: %w", p.name, p.addr, ctx.Err())
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// Kill sends SIGKILL to the broker's process and waits until it is gone:
// nothing is flushed, nothing is closed cleanly. Killing a broker that is
// not running does nothing.
func (p *Process) Kill() error {
	p.mu.Lock()
	cmd, done := p.cmd, p.done
	p.mu.Unlock()
	if cmd == nil {
		return nil
	}
	if err := syscall.Kill(cmd.Process.Pid, syscall.SIGKILL); err != nil && !errors.Is(err, syscall.ESRCH) {
		return fmt.Errorf("faults: kill %s (pid %d): %w", p.name, cmd.Process.Pid, err)
	}
	<-done
	p.reap()
	return nil
}

func (p *Process) reap() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.cmd, p.done = nil, nil
}

// syncBuffer is a bytes.Buffer that the process's two output pipes may
// write at once.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func lastLines(s string, n int) string {
	lines := bytes.Split(bytes.TrimSpace([]byte(s)), []byte("\n"))
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strconv.Quote(string(bytes.Join(lines, []byte("\n"))))
}
