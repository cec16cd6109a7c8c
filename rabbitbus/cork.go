package rabbitbus

import (
	"net"
	"os"
	"sync"
	"time"
)

// corkLimit is how many bytes a corked connection gathers before it writes
// them anyway.
const corkLimit = 64 << 10

// maxPending is how many bytes may wait for the socket before writes wait
// for room.
const maxPending = 4 << 20

// corkConn writes behind: a Write appends to a buffer and returns, and a
// writer goroutine (started when there is something to write and none is
// running) writes what gathered in one system call, then what gathered
// meanwhile, and so on. amqp091 flushes every frame it sends (a publish, an
// ack, a heartbeat) under its connection's lock; concurrent publishers
// therefore each made a system call, and the broker as many reads. Written
// behind, the frames of all the publishers that wrote while the socket was
// busy leave together. Nothing is reported published before the broker
// confirmed it, so a write returning before the bytes reach the socket
// changes no guarantee.
//
// While corked (a batch of the Publisher is being written), nothing is
// handed to the writer until the last cork is removed or corkLimit bytes
// wait: a batch leaves in a few large writes.
//
// A write that fails closes the connection, so that amqp091's reader fails
// and every publish waiting for a confirmation learns that it will not
// come; every later Write fails.
type corkConn struct {
	net.Conn

	mu      sync.Mutex
	room    *sync.Cond // the writer wrote or stopped
	corks   int
	buf     []byte // gathered, not handed to the writer yet
	spare   []byte // the writer's last buffer, for reuse
	writing bool   // a writer goroutine runs
	err     error
	// deadline is the write deadline last set: a Write past it fails at
	// once, as the socket's would, though it only appends to buf.
	deadline time.Time
}

func (c *corkConn) SetDeadline(t time.Time) error {
	c.mu.Lock()
	c.deadline = t
	c.mu.Unlock()
	return c.Conn.SetDeadline(t)
}

func (c *corkConn) SetWriteDeadline(t time.Time) error {
	c.mu.Lock()
	c.deadline = t
	c.mu.Unlock()
	return c.Conn.SetWriteDeadline(t)
}

func newCorkConn(c net.Conn) *corkConn {
	cc := &corkConn{Conn: c}
	cc.room = sync.NewCond(&cc.mu)
	return cc
}

func (c *corkConn) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for c.err == nil && len(c.buf) >= maxPending {
		c.room.Wait()
	}
	if c.err != nil {
		return 0, c.err
	}
	if !c.deadline.IsZero() && !time.Now().Before(c.deadline) {
		return 0, &net.OpError{Op: "write", Net: "tcp", Source: c.LocalAddr(), Addr: c.RemoteAddr(), Err: os.ErrDeadlineExceeded}
	}
	c.buf = append(c.buf, p...)
	c.start()
	return len(p), nil
}

// cork starts gathering writes.
func (c *corkConn) cork() {
	c.mu.Lock()
	c.corks++
	c.mu.Unlock()
}

// uncork removes a cork; the last one hands what was gathered to the
// writer.
func (c *corkConn) uncork() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.corks--
	c.start()
}

// ready reports whether what is gathered is to be written now. Called with
// mu held.
func (c *corkConn) ready() bool {
	return c.err == nil && len(c.buf) > 0 && (c.corks == 0 || len(c.buf) >= corkLimit)
}

// start starts the writer if there is something to write and it is not
// running. Called with mu held.
func (c *corkConn) start() {
	if !c.writing && c.ready() {
		c.writing = true
		go c.write()
	}
}

// write writes what is ready until nothing is.
func (c *corkConn) write() {
	c.mu.Lock()
	defer c.mu.Unlock()
	for c.ready() {
		buf := c.buf
		c.buf, c.spare = c.spare[:0], nil
		c.mu.Unlock()
		_, err := c.Conn.Write(buf)
		c.mu.Lock()
		if cap(buf) <= 16*corkLimit { // up to 1 MiB kept for the next round
			c.spare = buf
		}
		if err != nil && c.err == nil {
			c.err = err
			_ = c.Conn.Close()
		}
		c.room.Broadcast()
	}
	c.writing = false
	c.room.Broadcast()
}

// Close lets the writer finish what it writes (within a second: amqp091
// closes after the close handshake, or once the connection failed), then
// closes the connection.
func (c *corkConn) Close() error {
	c.mu.Lock()
	if c.writing && (c.deadline.IsZero() || time.Until(c.deadline) > time.Second) {
		_ = c.Conn.SetWriteDeadline(time.Now().Add(time.Second))
	}
	for c.writing {
		c.room.Wait()
	}
	if c.err == nil {
		c.err = net.ErrClosed
	}
	c.mu.Unlock()
	return c.Conn.Close()
}

// flushed waits until nothing ready waits to be written, and returns the
// connection's error.
func (c *corkConn) flushed() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	for c.writing {
		c.room.Wait()
	}
	return c.err
}
