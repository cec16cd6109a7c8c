package rabbitbus

import (
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"strings"
	"time"

	"github.com/marty-msf/eventbus/driver"
)

// DefaultURL is the broker a Config without URL connects to.
const DefaultURL = "amqp://guest:guest@127.0.0.1:5672/"

// Config says how to reach RabbitMQ and how the driver lays out its topology.
// The zero value connects to [DefaultURL] with the defaults of [Options].
type Config struct {
	// URL is the AMQP 0-9-1 URL of the broker: amqp:// or amqps://, with
	// user information and the virtual host as path. Its query, if any, is
	// ignored here: [ParseURL] turns query parameters into Config fields.
	URL string

	// TLS configures amqps:// connections (and forces TLS on amqp://).
	TLS *TLSConfig

	// Heartbeat is the AMQP heartbeat interval (default 10s); a connection
	// silent for two intervals is considered dead.
	Heartbeat time.Duration

	// ConnectionName is shown by the broker for this connection
	// (rabbitmqctl list_connections client_properties). Default: the bus's
	// Source when opened by URL.
	ConnectionName string

	// Dial, when set, opens the TCP connection (an escape hatch for proxies
	// and for tests that cut a connection). Default: net.Dialer with a 30 s
	// timeout.
	Dial func(network, addr string) (net.Conn, error)

	// Logger receives the driver's operational log; nil discards it.
	Logger *slog.Logger

	Options
}

// TLSConfig configures TLS from files, or from a ready tls.Config, whose
// fields it overrides: see [driver.TLSConfig]. The server name defaults to
// the URL's host.
type TLSConfig = driver.TLSConfig

// QueueType is the RabbitMQ queue type of durable consumer-group queues.
type QueueType string

// Queue types.
const (
	// Classic queues: the lowest latency on one node; a consumer group's
	// messages live on the node that declared the queue.
	Classic QueueType = "classic"
	// Quorum queues: replicated (Raft), with a delivery count on every
	// redelivery and an optional delivery limit.
	Quorum QueueType = "quorum"
)

// Options lays out the topology and bounds the driver's work.
type Options struct {
	// Prefix starts the name of every exchange and queue the driver declares
	// (default "eventbus"): exchanges PREFIX.events, PREFIX.commands...,
	// queues PREFIX.<destination>.<group>. Programs that must never meet
	// on one broker (tests, tenants) use different prefixes.
	Prefix string

	// QueueType of durable group queues: Classic (default) or Quorum.
	// Non-durable groups, queries, broadcasts and private subscriptions always
	// use classic queues (quorum queues cannot be exclusive or transient).
	QueueType QueueType

	// DeliveryLimit, with Quorum queues, is the x-delivery-limit after which
	// the broker dead-letters (to PREFIX.deadletter) or drops a message that
	// keeps coming back. Zero: no limit (the bus dead-letters at its own
	// attempt limit).
	DeliveryLimit int

	// GroupExpiry is the x-expires of the queues of non-durable groups: a
	// queue without consumers for that long is deleted with its messages
	// (default 5m).
	GroupExpiry time.Duration

	// QueueExpiry, when positive, is the x-expires of durable group and
	// dead-letter queues too. Zero (the default) keeps them forever. Tests
	// set it so that what they leave on a shared broker goes away.
	QueueExpiry time.Duration

	// Prefetch is the default bound of deliveries handed out and not settled
	// per subscription, the channel's QoS prefetch count, when
	// SubscribeOptions.MaxInFlight is zero (default 256).
	Prefetch int

	// PublishChannels is the number of channels in confirm mode that
	// concurrent publishers share (default 4). Each pipelines its
	// confirmations: a publisher never waits for another's.
	PublishChannels int

	// MaxMessageSize is the largest Message.Size the driver accepts (default
	// 16 MiB; RabbitMQ 3.10 accepts up to max_message_size, 128 MiB by
	// default).
	MaxMessageSize int
}

func (o *Options) withDefaults() Options {
	c := *o
	if c.Prefix == "" {
		c.Prefix = "eventbus"
	}
	if c.QueueType == "" {
		c.QueueType = Classic
	}
	if c.GroupExpiry == 0 {
		c.GroupExpiry = 5 * time.Minute
	}
	if c.Prefetch == 0 {
		c.Prefetch = 256
	}
	if c.PublishChannels == 0 {
		c.PublishChannels = 4
	}
	if c.MaxMessageSize == 0 {
		c.MaxMessageSize = 16 << 20
	}
	return c
}

// Validate reports every problem of o at once.
func (o *Options) Validate() error { return errors.Join(o.validate()...) }

func (o *Options) validate() []error {
	var errs []error
	bad := func(format string, args ...any) {
		errs = append(errs, fmt.Errorf("rabbitbus: "+format, args...))
	}
	if strings.ContainsAny(o.Prefix, "*# ") || len(o.Prefix) > 64 {
		bad("Prefix %q: at most 64 characters, without '*', '#' or spaces", o.Prefix)
	}
	switch o.QueueType {
	case "", Classic, Quorum:
	default:
		bad("QueueType %q: want classic or quorum", o.QueueType)
	}
	if o.DeliveryLimit < 0 {
		bad("DeliveryLimit %d: negative", o.DeliveryLimit)
	}
	if o.DeliveryLimit > 0 && o.QueueType != Quorum {
		bad("DeliveryLimit needs QueueType quorum")
	}
	if o.GroupExpiry < 0 || (o.GroupExpiry > 0 && o.GroupExpiry < time.Second) {
		bad("GroupExpiry %s: want at least 1s", o.GroupExpiry)
	}
	if o.QueueExpiry < 0 || (o.QueueExpiry > 0 && o.QueueExpiry < time.Second) {
		bad("QueueExpiry %s: want at least 1s", o.QueueExpiry)
	}
	if o.Prefetch < 0 || o.Prefetch > 65535 {
		bad("Prefetch %d: want 0 to 65535", o.Prefetch)
	}
	if o.PublishChannels < 0 || o.PublishChannels > 256 {
		bad("PublishChannels %d: want 0 to 256", o.PublishChannels)
	}
	if o.MaxMessageSize < 0 || o.MaxMessageSize > 128<<20 {
		bad("MaxMessageSize %d: want 0 to 128 MiB", o.MaxMessageSize)
	}
	return errs
}

// Validate reports every problem of c at once. Errors never contain the
// password of the URL.
func (c *Config) Validate() error {
	var errs []error
	if c.URL != "" {
		u, err := url.Parse(c.URL)
		switch {
		case err != nil:
			errs = append(errs, errors.New("rabbitbus: URL is not a URL"))
		case u.Scheme != "amqp" && u.Scheme != "amqps":
			errs = append(errs, fmt.Errorf("rabbitbus: URL scheme %q: want amqp or amqps", u.Scheme))
		case u.Host == "":
			errs = append(errs, errors.New("rabbitbus: URL has no host"))
		}
	}
	if c.Heartbeat < 0 {
		errs = append(errs, fmt.Errorf("rabbitbus: Heartbeat %s: negative", c.Heartbeat))
	}
	// Not TLSConfig.Problems, which reads the files: CheckURL calls Validate
	// and promises no I/O. Open reports a file it cannot read.
	if t := c.TLS; t != nil && (t.CertFile == "") != (t.KeyFile == "") {
		errs = append(errs, errors.New("rabbitbus: TLS needs both CertFile and KeyFile, or neither"))
	}
	errs = append(errs, c.Options.validate()...)
	return errors.Join(errs...)
}

func (c *Config) url() string {
	if c.URL == "" {
		return DefaultURL
	}
	return c.URL
}

// tlsConfig returns the tls.Config of t for a broker at host, the server
// name unless t names another.
func tlsConfig(t *TLSConfig, host string) (*tls.Config, error) {
	tc, err := t.Build()
	if err != nil {
		return nil, fmt.Errorf("rabbitbus: %w", err)
	}
	if tc.ServerName == "" {
		tc.ServerName = host
	}
	return tc, nil
}

// String shows c without credentials: the URL without its password.
func (c Config) String() string {
	type plain Config // without the methods, so that formatting does not recurse
	r := plain(c)
	if r.URL != "" {
		r.URL = driver.RedactURL(r.URL)
	}
	return fmt.Sprintf("rabbitbus.Config%+v", r)
}

// GoString is String, so that %#v shows no credentials either.
func (c Config) GoString() string { return c.String() }

// LogValue implements slog.LogValuer: a Config logged with slog shows no
// credentials.
func (c Config) LogValue() slog.Value { return slog.StringValue(c.String()) }
