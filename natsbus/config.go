package natsbus

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/marty-msf/eventbus/driver"
)

// Config says how to connect to NATS and how to lay out JetStream. The zero
// value connects to nats://127.0.0.1:4222 with JetStream on.
type Config struct {
	// Servers lists server URLs (nats://, tls://, ws://, wss://). Several URLs
	// are tried in turn; empty means nats://127.0.0.1:4222. A URL may carry
	// user:password@, which is never repeated in errors.
	Servers []string
	// Name identifies the connection in the server's monitoring.
	Name string

	// User and Password authenticate with a user name; Token with a token.
	User, Password, Token string
	// NKeySeedFile authenticates with an NKey seed; CredentialsFile with a
	// JWT credentials (.creds) file.
	NKeySeedFile, CredentialsFile string
	// TLS secures the connection; nil means TLS only when a URL asks for it.
	TLS *TLSConfig

	// MaxReconnects bounds reconnect attempts after a lost connection: zero
	// means the default (forever), a positive number that many attempts, and
	// a negative one forever.
	MaxReconnects int
	// ReconnectWait is the pause between reconnect attempts to one server
	// (default 2 s).
	ReconnectWait time.Duration
	// ConnectTimeout bounds the first connection to each server (default 5 s).
	ConnectTimeout time.Duration

	Options
}

// TLSConfig configures TLS from files, or from a ready tls.Config, whose
// fields it overrides: see [driver.TLSConfig].
type TLSConfig = driver.TLSConfig

// Options are the settings of a Driver that do not concern the connection.
// They apply to Open and to New alike.
type Options struct {
	// JetStream selects persistence: nil or true stores events, commands,
	// streams and dead letters in JetStream; false serves what core NATS can
	// honestly do (see the package documentation).
	JetStream *bool
	// StreamPrefix names the JetStream streams: PREFIX_EVENTS,
	// PREFIX_COMMANDS, PREFIX_STREAMS, PREFIX_DEADLETTER. Default "EVENTBUS".
	StreamPrefix string
	// SubjectPrefix, when set, prefixes every subject, so that several buses
	// share one server (one account) without meeting: with "tenant1",
	// events.order.created travels on tenant1.events.order.created, stored in
	// a stream of tenant1.events.>. Give each such bus its own StreamPrefix.
	SubjectPrefix string
	// Streams configures the streams, created or updated at Open.
	Streams StreamConfig
	// AckWait is how long the server waits for a settlement before it
	// redelivers, unless a subscription asks otherwise (default 30 s).
	AckWait time.Duration
	// MaxMessageSize lowers the largest accepted Message.Size. Zero means the
	// server's max_payload less an allowance for the header block.
	MaxMessageSize int
	// PublishWindow bounds the asynchronous JetStream publishes awaiting
	// their acknowledgement, over all concurrent Publish calls (default 4096).
	PublishWindow int
	// Prefetch is how many messages a subscription pulls ahead of Receive
	// (default 256, or MaxInFlight when a subscription sets it).
	Prefetch int
	// Logger receives connection events (disconnects, reconnects, consumer
	// errors). Nil discards them.
	Logger *slog.Logger
}

// StreamConfig configures the JetStream streams of the persistent patterns.
// Zero values take the server's defaults: no limit, file storage, one replica.
type StreamConfig struct {
	// MaxMsgs and MaxBytes limit each stream; zero or -1 means no limit.
	MaxMsgs, MaxBytes int64
	// MaxAge expires messages older than this; zero keeps them.
	MaxAge time.Duration
	// Retention of events, commands and streams. Dead letters always use
	// limits retention, so that none is dropped for want of a consumer.
	Retention Retention
	// Replicas in a clustered deployment (1 to 5).
	Replicas int
	// Storage of the streams.
	Storage Storage
	// Duplicates is the window in which a repeated message id is dropped by
	// the server (default 2 minutes). Only messages published with an id
	// carry one (PublishDeduplicated: exactly-once routes and dead
	// letters); the shorter the window, the smaller the server's table of
	// ids.
	Duplicates time.Duration
}

// Retention is a JetStream retention policy.
type Retention string

// Retention policies.
const (
	RetentionLimits    Retention = "limits"
	RetentionWorkQueue Retention = "workqueue"
	RetentionInterest  Retention = "interest"
)

// Storage is a JetStream storage kind.
type Storage string

// Storage kinds.
const (
	StorageFile   Storage = "file"
	StorageMemory Storage = "memory"
)

const (
	defaultURL           = "nats://127.0.0.1:4222"
	defaultStreamPrefix  = "EVENTBUS"
	defaultAckWait       = 30 * time.Second
	defaultPublishWindow = 4096
	defaultPrefetch      = 256
	defaultDuplicates    = 2 * time.Minute
	defaultReconnectWait = 2 * time.Second
	defaultConnTimeout   = 5 * time.Second
	// headerAllowance is subtracted from the server's max_payload: Size
	// counts names and values, while the wire adds the ce- prefixes, the
	// separators, the de-duplication id and percent-encoding.
	headerAllowance = 8 << 10
)

// Validate reports every problem of the configuration at once. Secrets are
// never part of its errors.
func (c *Config) Validate() error {
	if c == nil {
		return nil
	}
	var errs []error
	add := func(format string, args ...any) { errs = append(errs, fmt.Errorf("natsbus: config: "+format, args...)) }
	for i, s := range c.Servers {
		u, err := url.Parse(s)
		if err != nil {
			add("Servers[%d] is not a URL", i)
			continue
		}
		switch u.Scheme {
		case "nats", "tls", "ws", "wss":
		default:
			add("Servers[%d] %q: scheme must be nats, tls, ws or wss", i, u.Redacted())
		}
		if u.Hostname() == "" {
			add("Servers[%d] %q: no host", i, u.Redacted())
		}
	}
	if c.Token != "" && (c.User != "" || c.Password != "") {
		add("set either Token or User and Password, not both")
	}
	if c.Password != "" && c.User == "" {
		add("Password is set without User")
	}
	if c.NKeySeedFile != "" && c.CredentialsFile != "" {
		add("set either NKeySeedFile or CredentialsFile, not both")
	}
	checkFile := func(field, path string) {
		if path == "" {
			return
		}
		if _, err := os.Stat(path); err != nil {
			add("%s %q cannot be read: %v", field, path, errors.Unwrap(err))
		}
	}
	checkFile("NKeySeedFile", c.NKeySeedFile)
	checkFile("CredentialsFile", c.CredentialsFile)
	if c.TLS != nil {
		for _, p := range c.TLS.Problems() {
			add("%s", p)
		}
	}
	if c.ReconnectWait < 0 {
		add("ReconnectWait %v is negative", c.ReconnectWait)
	}
	if c.ConnectTimeout < 0 {
		add("ConnectTimeout %v is negative", c.ConnectTimeout)
	}
	errs = append(errs, c.Options.validate()...)
	return errors.Join(errs...)
}

// Validate reports every problem of the options at once.
func (o *Options) Validate() error {
	if o == nil {
		return nil
	}
	return errors.Join(o.validate()...)
}

func (o *Options) validate() []error {
	var errs []error
	add := func(format string, args ...any) { errs = append(errs, fmt.Errorf("natsbus: config: "+format, args...)) }
	for _, c := range o.StreamPrefix {
		if !(c >= 'A' && c <= 'Z' || c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '_' || c == '-') {
			add("StreamPrefix %q: only letters, digits, _ and - are allowed", o.StreamPrefix)
			break
		}
	}
	if o.SubjectPrefix != "" {
		if _, err := subjectOf(driver.Destination{Pattern: driver.Event, Name: "events." + o.SubjectPrefix}); err != nil {
			add("SubjectPrefix %q: dot-separated literal tokens, without spaces or wildcards", o.SubjectPrefix)
		}
	}
	s := o.Streams
	switch s.Retention {
	case "", RetentionLimits, RetentionWorkQueue, RetentionInterest:
	default:
		add("Streams.Retention %q: want limits, workqueue or interest", s.Retention)
	}
	switch s.Storage {
	case "", StorageFile, StorageMemory:
	default:
		add("Streams.Storage %q: want file or memory", s.Storage)
	}
	if s.Replicas < 0 || s.Replicas > 5 {
		add("Streams.Replicas %d: want 1 to 5", s.Replicas)
	}
	if s.MaxMsgs < -1 {
		add("Streams.MaxMsgs %d is negative", s.MaxMsgs)
	}
	if s.MaxBytes < -1 {
		add("Streams.MaxBytes %d is negative", s.MaxBytes)
	}
	if s.MaxAge < 0 {
		add("Streams.MaxAge %v is negative", s.MaxAge)
	}
	if s.Duplicates < 0 {
		add("Streams.Duplicates %v is negative", s.Duplicates)
	}
	if o.AckWait < 0 {
		add("AckWait %v is negative", o.AckWait)
	}
	if o.MaxMessageSize < 0 {
		add("MaxMessageSize %d is negative", o.MaxMessageSize)
	}
	if o.PublishWindow < 0 {
		add("PublishWindow %d is negative", o.PublishWindow)
	}
	if o.Prefetch < 0 {
		add("Prefetch %d is negative", o.Prefetch)
	}
	return errs
}

// withDefaults returns a copy of o with every zero value replaced by its
// default.
func (o *Options) withDefaults() Options {
	var r Options
	if o != nil {
		r = *o
	}
	if r.JetStream == nil {
		on := true
		r.JetStream = &on
	}
	if r.StreamPrefix == "" {
		r.StreamPrefix = defaultStreamPrefix
	}
	if r.AckWait == 0 {
		r.AckWait = defaultAckWait
	}
	if r.PublishWindow == 0 {
		r.PublishWindow = defaultPublishWindow
	}
	if r.Prefetch == 0 {
		r.Prefetch = defaultPrefetch
	}
	if r.Streams.Duplicates == 0 {
		r.Streams.Duplicates = defaultDuplicates
	}
	if r.Logger == nil {
		r.Logger = slog.New(slog.DiscardHandler)
	}
	return r
}

// natsOptions translates the connection settings into nats.go options.
func (c *Config) natsOptions(log *slog.Logger) ([]nats.Option, error) {
	opts := []nats.Option{
		nats.MaxReconnects(-1),
		nats.ReconnectWait(defaultReconnectWait),
		nats.Timeout(defaultConnTimeout),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			if err != nil {
				log.Warn("natsbus: disconnected", "err", err)
			}
		}),
		nats.ReconnectHandler(func(nc *nats.Conn) {
			log.Info("natsbus: reconnected", "server", nc.ConnectedUrlRedacted())
		}),
		nats.ErrorHandler(func(_ *nats.Conn, sub *nats.Subscription, err error) {
			if sub != nil {
				log.Warn("natsbus: subscription error", "subject", sub.Subject, "err", err)
				return
			}
			log.Warn("natsbus: connection error", "err", err)
		}),
	}
	if c.Name != "" {
		opts = append(opts, nats.Name(c.Name))
	}
	if c.User != "" {
		opts = append(opts, nats.UserInfo(c.User, c.Password))
	}
	if c.Token != "" {
		opts = append(opts, nats.Token(c.Token))
	}
	if c.NKeySeedFile != "" {
		o, err := nats.NkeyOptionFromSeed(c.NKeySeedFile)
		if err != nil {
			return nil, fmt.Errorf("natsbus: NKeySeedFile: %w", err)
		}
		opts = append(opts, o)
	}
	if c.CredentialsFile != "" {
		opts = append(opts, nats.UserCredentials(c.CredentialsFile))
	}
	if c.TLS != nil {
		tc, err := c.TLS.Build()
		if err != nil {
			return nil, fmt.Errorf("natsbus: %w", err)
		}
		opts = append(opts, nats.Secure(tc))
	}
	switch {
	case c.MaxReconnects > 0:
		opts = append(opts, nats.MaxReconnects(c.MaxReconnects))
	case c.MaxReconnects < 0:
		opts = append(opts, nats.MaxReconnects(-1))
	}
	if c.ReconnectWait > 0 {
		opts = append(opts, nats.ReconnectWait(c.ReconnectWait))
	}
	if c.ConnectTimeout > 0 {
		opts = append(opts, nats.Timeout(c.ConnectTimeout))
	}
	return opts, nil
}

// servers returns the server list for nats.Connect.
func (c *Config) servers() string {
	if len(c.Servers) == 0 {
		return defaultURL
	}
	return strings.Join(c.Servers, ",")
}

// secrets lists the strings that must never appear in an error.
func (c *Config) secrets() []string {
	var s []string
	for _, v := range []string{c.Password, c.Token} {
		if v != "" {
			s = append(s, v)
		}
	}
	for _, raw := range c.Servers {
		if u, err := url.Parse(raw); err == nil && u.User != nil {
			if p, ok := u.User.Password(); ok && p != "" {
				s = append(s, p)
			} else if n := u.User.Username(); n != "" && !ok {
				// A bare user in a URL is a token.
				s = append(s, n)
			}
		}
	}
	return s
}

// redactedError hides secrets from an error's text while keeping its chain
// for errors.Is and errors.As.
type redactedError struct {
	msg string
	err error
}

func (e *redactedError) Error() string { return e.msg }
func (e *redactedError) Unwrap() error { return e.err }

func redact(err error, secrets []string) error {
	if err == nil {
		return nil
	}
	msg := err.Error()
	changed := false
	for _, s := range secrets {
		if strings.Contains(msg, s) {
			msg = strings.ReplaceAll(msg, s, "REDACTED")
			changed = true
		}
	}
	if !changed {
		return err
	}
	return &redactedError{msg: msg, err: err}
}

// connect dials the servers of c, bounded by ctx.
func (c *Config) connect(ctx context.Context, log *slog.Logger, extra ...nats.Option) (*nats.Conn, error) {
	opts, err := c.natsOptions(log)
	if err != nil {
		return nil, redact(err, c.secrets())
	}
	if dl, ok := ctx.Deadline(); ok {
		if left := time.Until(dl); left > 0 && (c.ConnectTimeout == 0 || left < c.ConnectTimeout) {
			opts = append(opts, nats.Timeout(left))
		}
	}
	opts = append(opts, extra...)
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("natsbus: connect: %w", err)
	}
	// nats.Connect takes no context; the timeout above bounds it by ctx's
	// deadline instead.
	nc, err := nats.Connect(c.servers(), opts...)
	if err != nil {
		return nil, redact(fmt.Errorf("natsbus: connect: %w", err), c.secrets())
	}
	return nc, nil
}

// String shows c without its credentials: Password and Token as REDACTED
// when set, and the servers' URLs without their user information.
func (c Config) String() string {
	type plain Config // without the methods, so that formatting does not recurse
	r := plain(c)
	if r.Password != "" {
		r.Password = "REDACTED"
	}
	if r.Token != "" {
		r.Token = "REDACTED"
	}
	if len(c.Servers) > 0 {
		r.Servers = make([]string, len(c.Servers))
		for i, s := range c.Servers {
			r.Servers[i] = driver.RedactURL(s)
		}
	}
	return fmt.Sprintf("natsbus.Config%+v", r)
}

// GoString is String, so that %#v shows no credentials either.
func (c Config) GoString() string { return c.String() }

// LogValue implements slog.LogValuer: a Config logged with slog shows no
// credentials.
func (c Config) LogValue() slog.Value { return slog.StringValue(c.String()) }
