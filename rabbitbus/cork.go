package rabbitbus

import (
	"net"
	"sync"
)

// corkLimit is how many bytes a corked connection gathers before it writes
// them anyway.
const corkLimit = 64 << 10

// corkConn gathers the writes made while it is corked and writes them at
// once when the last cork is removed, or when corkLimit bytes are waiting.
// amqp091 flushes every publish to the socket on its own (a system call
// per message, and as many reads for the broker); a batch published
// between cork and uncork leaves in a few large writes instead. Nothing
// waits for the network while corked: publishing only writes.
//
// A write that fails closes the connection, so that amqp091's reader fails
// and every publish waiting for a confirmation learns that it will not
// come.
type corkConn struct {
	net.Conn

	mu    sync.Mutex
	corks int
	buf   []byte
	err   error
}

func newCorkConn(c net.Conn) *corkConn { return &corkConn{Conn: c} }

func (c *corkConn) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.err != nil {
		return 0, c.err
	}
	if c.corks == 0 {
		return c.Conn.Write(p)
	}
	c.buf = append(c.buf, p...)
	if len(c.buf) >= corkLimit {
		c.flush()
	}
	return len(p), nil
}

// cork starts gathering writes.
func (c *corkConn) cork() {
	c.mu.Lock()
	c.corks++
	c.mu.Unlock()
}

// uncork removes a cork; the last one writes what was gathered.
func (c *corkConn) uncork() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.corks--; c.corks == 0 && len(c.buf) > 0 {
		c.flush()
	}
}

// flush writes what was gathered. Called with mu held.
func (c *corkConn) flush() {
	if c.err != nil {
		return
	}
	if _, err := c.Conn.Write(c.buf); err != nil {
		c.err = err
		_ = c.Conn.Close()
	}
	if cap(c.buf) > 4*corkLimit {
		c.buf = nil
	} else {
		c.buf = c.buf[:0]
	}
}
