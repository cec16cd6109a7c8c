package rabbitbus_test

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

// node is a RabbitMQ node of the test's own: its node name, its AMQP and
// distribution ports and its data directory, never the shared broker's. It
// runs in a process group of its own, which the test signals by its id.
type node struct {
	t    *testing.T
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

// newNode starts a node and stops it when the test ends. Without
// rabbitmq-server or epmd the test is skipped, and fails in CI.
func newNode(t *testing.T) *node {
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
	n := &node{
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
	t.Cleanup(n.stop)
	n.start()
	return n
}

// freePorts returns n distinct loopback ports that nothing listens on now:
// all are held open together, so that none is handed out twice.
func freePorts(t *testing.T, n int) []int {
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

// start launches the node on its data directory and waits until it accepts
// AMQP connections.
func (n *node) start() time.Duration {
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
func (n *node) signal(sig syscall.Signal) {
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

// kill ends the node at once, as a crash or a power cut would.
func (n *node) kill() { n.signal(syscall.SIGKILL) }

// stop shuts the node down cleanly (rabbitmq-server stops it on SIGTERM).
func (n *node) stop() { n.signal(syscall.SIGTERM) }
