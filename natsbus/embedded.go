package natsbus

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
)

// EmbeddedOptions configures a NATS server run inside the process.
type EmbeddedOptions struct {
	// DataDir holds the JetStream file storage. Empty means a temporary
	// directory, removed at Shutdown: messages then last only as long as the
	// server.
	DataDir string
	// Host is the listening address (default 127.0.0.1).
	Host string
	// Port: 0 does not listen at all (only this process connects, in
	// memory); -1 listens on a random free port; a positive number on that
	// port, so that other processes can join.
	Port int
	// MaxPayload is the largest message, headers included (default 1 MiB).
	MaxPayload int32
	// MaxMemory and MaxStore bound JetStream's memory and file storage
	// (default: the server's, a share of the machine's).
	MaxMemory, MaxStore int64
	// TLS, when set, makes the listener require TLS.
	TLS *tls.Config
	// ServerName names the server (default: its generated id).
	ServerName string
	// Logger receives the server's log at Info level and above; nil discards
	// it.
	Logger *slog.Logger
}

// Server is a NATS server with JetStream, running in this process.
type Server struct {
	ns      *server.Server
	tmpDir  string
	release func() // the data directory's lock
	once    sync.Once
}

// StartServer starts an embedded NATS server with JetStream file storage in
// opts.DataDir and returns once it accepts connections. The server holds the
// data directory until Shutdown: a second server on it, in this process or
// another, fails at once with a *DataDirError matching ErrDataDirInUse.
func StartServer(ctx context.Context, opts *EmbeddedOptions) (*Server, error) {
	var o EmbeddedOptions
	if opts != nil {
		o = *opts
	}
	s := &Server{}
	if o.DataDir == "" {
		dir, err := os.MkdirTemp("", "natsbus-")
		if err != nil {
			return nil, fmt.Errorf("natsbus: embedded server: %w", err)
		}
		o.DataDir, s.tmpDir = dir, dir
	}
	release, err := lockDataDir(o.DataDir)
	if err != nil {
		s.removeTemp()
		return nil, err
	}
	s.release = release
	so := &server.Options{
		ServerName:         o.ServerName,
		Host:               o.Host,
		Port:               o.Port,
		DontListen:         o.Port == 0,
		JetStream:          true,
		StoreDir:           o.DataDir,
		JetStreamMaxMemory: o.MaxMemory,
		JetStreamMaxStore:  o.MaxStore,
		MaxPayload:         o.MaxPayload,
		NoSigs:             true,
		TLSConfig:          o.TLS,
	}
	if so.Host == "" {
		so.Host = "127.0.0.1"
	}
	if o.TLS != nil {
		so.TLS = true
	}
	ns, err := server.NewServer(so)
	if err != nil {
		s.release()
		s.removeTemp()
		return nil, fmt.Errorf("natsbus: embedded server: %w", err)
	}
	s.ns = ns
	log := o.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	// The server reports a listener it cannot open through Fatalf and then
	// never becomes ready: the logger remembers it, so that StartServer
	// fails at once instead of at its deadline.
	fatal := new(atomic.Pointer[string])
	ns.SetLogger(serverLogger{l: log, fatal: fatal}, false, false)
	ns.Start()
	deadline := time.Now().Add(30 * time.Second)
	for !ns.ReadyForConnections(50 * time.Millisecond) {
		if msg := fatal.Load(); msg != nil {
			_ = s.Shutdown(context.Background())
			return nil, fmt.Errorf("natsbus: embedded server: %s", *msg)
		}
		if ctx.Err() != nil || time.Now().After(deadline) {
			_ = s.Shutdown(context.Background())
			err := ctx.Err()
			if err == nil {
				err = context.DeadlineExceeded
			}
			return nil, fmt.Errorf("natsbus: embedded server not ready: %w", err)
		}
	}
	return s, nil
}

// ClientURL is the URL other processes connect to, or "" when the server
// does not listen (Port 0).
func (s *Server) ClientURL() string {
	if s.ns.Addr() == nil {
		return ""
	}
	return s.ns.ClientURL()
}

// NATSServer returns the underlying nats-server, an escape hatch.
func (s *Server) NATSServer() *server.Server { return s.ns }

// Connect opens a client connection to the server, in memory (no socket).
func (s *Server) Connect(opts ...nats.Option) (*nats.Conn, error) {
	nc, err := nats.Connect("", append([]nats.Option{nats.InProcessServer(s.ns)}, opts...)...)
	if err != nil {
		return nil, fmt.Errorf("natsbus: connect to embedded server: %w", err)
	}
	return nc, nil
}

// Shutdown stops the server, which first flushes JetStream storage to disk,
// and removes the temporary data directory, if it made one. It keeps ctx's
// deadline: when ctx ends first it returns ctx's error, and the server
// finishes shutting down (and removes that directory) in the background.
func (s *Server) Shutdown(ctx context.Context) error {
	var err error
	s.once.Do(func() {
		done := make(chan struct{})
		go func() {
			defer close(done)
			s.ns.Shutdown()
			s.ns.WaitForShutdown()
			// Storage must be closed before its directory goes, or another
			// server takes it.
			s.release()
			s.removeTemp()
		}()
		select {
		case <-done:
		case <-ctx.Done():
			err = fmt.Errorf("natsbus: embedded server shutdown: %w", ctx.Err())
		}
	})
	return err
}

func (s *Server) removeTemp() {
	if s.tmpDir != "" {
		_ = os.RemoveAll(s.tmpDir)
	}
}

// OpenEmbedded starts an embedded server and opens a driver on it, connected
// in memory. cfg's Servers and credentials are ignored; its Options apply.
// Closing the driver shuts the server down.
func OpenEmbedded(ctx context.Context, opts *EmbeddedOptions, cfg *Config) (*Driver, error) {
	var c Config
	if cfg != nil {
		c = Config{Name: cfg.Name, Options: cfg.Options}
	}
	if err := c.Validate(); err != nil {
		return nil, err
	}
	s, err := StartServer(ctx, opts)
	if err != nil {
		return nil, err
	}
	o := c.Options.withDefaults()
	nc, err := c.connect(ctx, o.Logger, nats.InProcessServer(s.ns))
	if err == nil {
		var d *Driver
		if d, err = newDriver(ctx, nc, o, true); err == nil {
			d.server = s
			return d, nil
		}
		nc.Close()
	}
	return nil, errors.Join(err, s.Shutdown(context.Background()))
}

// serverLogger sends the server's log to slog, leaving out debug and trace,
// and keeps the first fatal error.
type serverLogger struct {
	l     *slog.Logger
	fatal *atomic.Pointer[string]
}

func (l serverLogger) Noticef(format string, v ...any) { l.l.Info(fmt.Sprintf(format, v...)) }
func (l serverLogger) Warnf(format string, v ...any)   { l.l.Warn(fmt.Sprintf(format, v...)) }
func (l serverLogger) Fatalf(format string, v ...any) {
	msg := fmt.Sprintf(format, v...)
	l.fatal.CompareAndSwap(nil, &msg)
	l.l.Error(msg)
}
func (l serverLogger) Errorf(format string, v ...any) { l.l.Error(fmt.Sprintf(format, v...)) }
func (l serverLogger) Debugf(string, ...any)          {}
func (l serverLogger) Tracef(string, ...any)          {}
