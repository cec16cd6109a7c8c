// Package rabbitnode runs a RabbitMQ node of a test's own, for the tests
// that kill, stop and restart a broker: its own node name, AMQP and
// distribution ports, Erlang cookie and data directory, never the shared
// broker's. It runs in a process group of its own, which the test signals
// by its id.
package rabbitnode

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/marty-msf/eventbus/internal/testenv"
)

// Node is a RabbitMQ node of the test's own.
type Node struct {
	t    testing.TB
	dir  string
	port int
	url  string
	env  []string
	bin  string

	cmd    *exec.Cmd
	exited chan struct{}
	out    *bytes.Buffer
}

// rabbitServer finds the rabbitmq-server start script itself: the Debian
// wrapper in /usr/sbin switches user through su, whose process is not the
// node's.
func rabbitServer() (string, error) {
	for _, p := range []string{"/usr/lib/rabbitmq/bin/rabbitmq-server", "/usr/lib/rabbitmq/sbin/rabbitmq-server"} {
		if _, err := os.Stat(p); err == nil {
			return p, nil
		}
	}
	return exec.LookPath("rabbitmq-server")
}

// Start starts a node and stops it when the test ends. Without
// rabbitmq-server or epmd the test is skipped, and fails in CI.
func Start(t testing.TB) *Node {
	t.Helper()
	bin, err := rabbitServer()
	if err == nil {
		// Before any other Erlang program, or the node starts an epmd on
		// every address.
		err = exec.Command("epmd", "-address", "127.0.0.1", "-daemon").Run()
	}
	if err != nil {
		msg := fmt.Sprintf("a RabbitMQ node of the test's own needs rabbitmq-server and epmd (scripts/services.sh installs them): %v", err)
		if testenv.InCI() {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
	dir := t.TempDir()
	ports := freePorts(t, 2)
	port, dist := ports[0], ports[1]
	for _, sub := range []string{"mnesia", "log", "home"} {
		if err := os.Mkdir(filepath.Join(dir, sub), 0o700); err != nil {
			t.Fatal(err)
		}
	}
	write := func(name, content string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	n := &Node{
		t: t, dir: dir, port: port, bin: bin,
		url: "amqp://guest:guest@127.0.0.1:" + strconv.Itoa(port) + "/",
		env: append(os.Environ(),
			"HOME="+filepath.Join(dir, "home"), // its own Erlang cookie
			"RABBITMQ_NODENAME=eventbus-fault-"+strconv.Itoa(os.Getpid())+"-"+strconv.Itoa(port)+"@localhost",
			"RABBITMQ_NODE_PORT="+strconv.Itoa(port),
			"RABBITMQ_DIST_PORT="+strconv.Itoa(dist),
			"RABBITMQ_MNESIA_BASE="+filepath.Join(dir, "mnesia"),
			"RABBITMQ_LOG_BASE="+filepath.Join(dir, "log"),
			// Not the machine's configuration: it names the shared node's
			// listener and plugins.
			"RABBITMQ_CONFIG_FILE="+write("rabbitmq.conf", "listeners.tcp.local = 127.0.0.1:"+strconv.Itoa(port)+"\n"),
			"RABBITMQ_CONF_ENV_FILE="+write("rabbitmq-env.conf", ""),
			"RABBITMQ_ENABLED_PLUGINS_FILE="+write("enabled_plugins", "[].\n"),
			"ERL_EPMD_ADDRESS=127.0.0.1",
			"ERL_FLAGS=-kernel inet_dist_use_interface {127,0,0,1}",
		),
	}
	t.Cleanup(n.Stop)
	n.Start()
	return n
}

// freePorts returns n distinct loopback ports that nothing listens on now:
// all are held open together, so that none is handed out twice.
func freePorts(t testing.TB, n int) []int {
	t.Helper()
	ports := make([]int, n)
	for i := range ports {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer l.Close()
		ports[i] = l.Addr().(*net.TCPAddr).Port
	}
	return ports
}

// URL is the node's amqp:// URL, as guest.
func (n *Node) URL() string { return n.url }

// Addr is the node's AMQP host:port.
func (n *Node) Addr() string { return "127.0.0.1:" + strconv.Itoa(n.port) }

// Start launches the node again on its data directory, after Kill or Stop,
// and waits until it accepts AMQP connections. It returns how long that
// took.
func (n *Node) Start() time.Duration {
	n.t.Helper()
	began := time.Now()
	n.out = &bytes.Buffer{}
	cmd := exec.Command(n.bin)
	cmd.Env, cmd.Dir = n.env, n.dir
	cmd.Stdout, cmd.Stderr = n.out, n.out
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		n.t.Fatalf("start rabbitmq-server: %v", err)
	}
	n.cmd, n.exited = cmd, make(chan struct{})
	go func(exited chan struct{}) {
		_ = cmd.Wait()
		close(exited)
	}(n.exited)
	deadline := time.Now().Add(2 * time.Minute) // a loaded machine; 5–9 s when idle
	for {
		if conn, err := amqp.DialConfig(n.url, amqp.Config{Dial: amqp.DefaultDial(2 * time.Second)}); err == nil {
			_ = conn.Close()
			return time.Since(began)
		}
		select {
		case <-n.exited:
			n.t.Fatalf("rabbitmq-server exited before it accepted connections:\n%s", n.out)
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			n.signal(syscall.SIGKILL)
			n.t.Fatalf("rabbitmq-server did not accept connections within 2 minutes:\n%s", n.out)
		}
	}
}

// signal sends sig to the node's process group (the start script and the
// Erlang VM under it) and waits for the script to end and the node's port
// to be free again.
func (n *Node) signal(sig syscall.Signal) {
	n.t.Helper()
	if n.cmd == nil {
		return
	}
	if err := syscall.Kill(-n.cmd.Process.Pid, sig); err != nil && !errors.Is(err, syscall.ESRCH) {
		n.t.Errorf("signal the node: %v", err)
	}
	select {
	case <-n.exited:
	case <-time.After(time.Minute):
		_ = syscall.Kill(-n.cmd.Process.Pid, syscall.SIGKILL)
		<-n.exited
	}
	n.cmd = nil
	// The VM may outlive the script by a moment; its listener goes with it.
	deadline := time.Now().Add(time.Minute)
	for {
		l, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(n.port))
		if err == nil {
			_ = l.Close()
			return
		}
		if time.Now().After(deadline) {
			n.t.Fatalf("the node's port %d is still taken a minute after it was stopped", n.port)
		}
		time.Sleep(20 * time.Millisecond) // polling the kernel; nothing to wait on
	}
}

// Kill ends the node at once (SIGKILL), as a crash or a power cut would.
func (n *Node) Kill() { n.signal(syscall.SIGKILL) }

// Stop shuts the node down cleanly (rabbitmq-server stops it on SIGTERM).
func (n *Node) Stop() { n.signal(syscall.SIGTERM) }
