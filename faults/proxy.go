package faults

import (
	"errors"
	"io"
	"net"
	"sync"
)

// Proxy forwards TCP connections from its own address to a target, and can
// cut them all at once (Reset) or keep them open while dropping every byte
// in both directions (Blackhole), the way a dead peer or a silent network
// partition looks to a client: nothing is refused, nothing answers.
//
// All methods are safe for concurrent use.
type Proxy struct {
	ln     net.Listener
	target string

	mu         sync.Mutex
	links      map[*link]struct{}
	blackholed bool
	closed     bool
	wg         sync.WaitGroup
}

// link is one proxied connection: the client's side and the target's.
type link struct {
	client, server net.Conn
}

// StartProxy listens on a free port of 127.0.0.1 and forwards every
// connection to target.
func StartProxy(target string) (*Proxy, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	p := &Proxy{ln: ln, target: target, links: map[*link]struct{}{}}
	p.wg.Go(p.accept)
	return p, nil
}

// Addr is the proxy's host:port, for the client to dial.
func (p *Proxy) Addr() string { return p.ln.Addr().String() }

func (p *Proxy) accept() {
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		p.wg.Go(func() { p.serve(c) })
	}
}

func (p *Proxy) serve(client net.Conn) {
	l := &link{client: client}
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		client.Close()
		return
	}
	p.links[l] = struct{}{}
	holed := p.blackholed
	p.mu.Unlock()
	defer p.forget(l)
	if holed {
		// A connection made into a black hole is never forwarded: its
		// bytes are read and dropped until it is cut.
		_, _ = io.Copy(io.Discard, client)
		return
	}
	server, err := net.Dial("tcp", p.target)
	if err != nil {
		return
	}
	p.mu.Lock()
	l.server = server
	cut := p.closed
	p.mu.Unlock()
	if cut {
		server.Close()
		return
	}
	var wg sync.WaitGroup
	wg.Go(func() { p.pipe(server, client) })
	p.pipe(client, server)
	wg.Wait()
}

// pipe copies from src to dst while the proxy is not black-holed, drops
// what it reads while it is, and closes both ends when either fails.
func (p *Proxy) pipe(dst, src net.Conn) {
	defer dst.Close()
	defer src.Close()
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			p.mu.Lock()
			holed := p.blackholed
			p.mu.Unlock()
			if !holed {
				if _, werr := dst.Write(buf[:n]); werr != nil {
					return
				}
			}
		}
		if err != nil {
			return
		}
	}
}

func (p *Proxy) forget(l *link) {
	p.mu.Lock()
	defer p.mu.Unlock()
	delete(p.links, l)
	l.close(false)
}

func (l *link) close(reset bool) {
	for _, c := range []net.Conn{l.client, l.server} {
		if c == nil {
			continue
		}
		if tc, ok := c.(*net.TCPConn); ok && reset {
			_ = tc.SetLinger(0) // close with RST, not FIN
		}
		c.Close()
	}
}

// Reset cuts every open connection with a TCP reset, on both sides, and
// returns how many it cut. New connections are forwarded as before.
func (p *Proxy) Reset() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	n := len(p.links)
	for l := range p.links {
		l.close(true)
	}
	return n
}

// Blackhole keeps every connection open but forwards nothing more, in
// either direction, and forwards no new connection, until Restore.
func (p *Proxy) Blackhole() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.blackholed = true
}

// Restore ends a black hole: the connections that were in it are cut, as a
// client that detected a dead peer has given them up, and new connections
// are forwarded again.
func (p *Proxy) Restore() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.blackholed = false
	for l := range p.links {
		l.close(true)
	}
}

// Close stops accepting, cuts every connection and returns when the proxy's
// goroutines have ended.
func (p *Proxy) Close() error {
	err := p.ln.Close()
	p.mu.Lock()
	p.closed = true
	for l := range p.links {
		l.close(true)
	}
	p.mu.Unlock()
	p.wg.Wait()
	if errors.Is(err, net.ErrClosed) {
		err = nil
	}
	return err
}
