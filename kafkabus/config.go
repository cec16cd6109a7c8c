package kafkabus

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/sasl"
	"github.com/twmb/franz-go/pkg/sasl/plain"
	"github.com/twmb/franz-go/pkg/sasl/scram"

	"github.com/marty-msf/eventbus/driver"
)

// Config says how to reach a Kafka cluster and how the driver uses it. The
// zero value connects to 127.0.0.1:9092 without TLS or SASL.
type Config struct {
	// Brokers lists seed brokers as host:port; empty means 127.0.0.1:9092.
	Brokers []string
	// ClientID identifies the client to the brokers (default: the bus's
	// Source when opened by URL, else "eventbus").
	ClientID string
	// SASL authenticates; nil means no authentication.
	SASL *SASLConfig
	// TLS secures the connections; nil means plaintext.
	TLS *TLSConfig
	// Dialer, when set, opens every connection to a broker instead of
	// net.Dialer (a proxy, an in-memory network, fault injection in tests).
	Dialer func(ctx context.Context, network, host string) (net.Conn, error)
	// Logger receives the driver's operational log; nil discards it.
	Logger *slog.Logger

	Options
}

// SASL mechanisms.
const (
	MechanismPlain       = "PLAIN"
	MechanismScramSHA256 = "SCRAM-SHA-256"
	MechanismScramSHA512 = "SCRAM-SHA-512"
)

// SASLConfig authenticates with a user name and password.
type SASLConfig struct {
	// Mechanism is PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512.
	Mechanism string
	User      string
	Password  string
	// AllowPlaintext allows PLAIN without TLS, which sends the password in
	// clear text: refused unless set.
	AllowPlaintext bool
}

// TLSConfig configures TLS from files, or from a ready tls.Config, whose
// fields it overrides: see [driver.TLSConfig].
type TLSConfig = driver.TLSConfig

// Acks values.
const (
	AcksAll    = "all"
	AcksLeader = "leader"
	AcksNone   = "none"
)

// Options are the settings of a Driver that do not concern the connection.
// Zero values mean the documented defaults.
type Options struct {
	// TopicPrefix is prepended to every topic name, so that several buses
	// share one cluster without meeting.
	TopicPrefix string
	// GroupPrefix is prepended to every consumer group id.
	GroupPrefix string
	// AutoCreateTopics creates a missing topic at the first publish or
	// subscription (default true). With false, topics must exist.
	AutoCreateTopics *bool
	// Partitions and ReplicationFactor of the topics the driver creates;
	// zero means the broker's defaults (num.partitions,
	// default.replication.factor). Partitions bound how many members of a
	// group consume at once.
	Partitions        int32
	ReplicationFactor int16

	// Acks is how many replicas confirm a produce before Publish returns:
	// "all" (the default), "leader", or "none" (at most once: Publish
	// returns once the request was written).
	Acks string
	// Idempotent enables the idempotent producer (default true), so that a
	// retried produce never writes a record twice. It requires Acks "all".
	Idempotent *bool
	// Compression is none, gzip, snappy, lz4 or zstd (default none).
	Compression string
	// Linger is how long a partition's batch waits for more records before
	// it is sent (default 0: concurrent publishers still share batches while
	// a request is in flight). A linger adds its length to every publish
	// that waits for its acknowledgement, as PublishEvent does: on kfake,
	// 16 concurrent PublishEvent callers lost a sixth to a third of their
	// rate at 200 µs and more than four fifths at 5 ms, while a Publisher,
	// which keeps thousands of records in flight, used 6–27% less CPU per
	// message (bench/RESULTS.md).
	Linger time.Duration
	// BatchMaxBytes is the largest record batch (default 1,000,012 bytes,
	// Kafka's message.max.bytes); it bounds MaxMessageSize.
	BatchMaxBytes int32
	// MaxBufferedRecords bounds the records waiting for an acknowledgement;
	// a publish beyond it waits (default 10,000).
	MaxBufferedRecords int

	// FetchMaxBytes and FetchMaxPartitionBytes bound one fetch (defaults
	// 50 MiB and 1 MiB); FetchMaxWait is how long a fetch waits for data
	// (default 5 s; a lower value speeds rebalances on idle topics).
	FetchMaxBytes          int32
	FetchMaxPartitionBytes int32
	FetchMaxWait           time.Duration

	// SessionTimeout is how long the group coordinator waits for a
	// heartbeat of a member before it gives the member's partitions to
	// others (default 45 s). A subscription's AckWait replaces it, raised
	// to MinSessionTimeout.
	SessionTimeout time.Duration
	// MinSessionTimeout is the broker's group.min.session.timeout.ms
	// (default 6 s): no subscription asks for a shorter session.
	MinSessionTimeout time.Duration
	// RebalanceTimeout bounds a rebalance (default 60 s): how long a member
	// may take to finish or give back its in-flight work before it gives up
	// partitions.
	RebalanceTimeout time.Duration
	// HeartbeatInterval is the pause between heartbeats (default 3 s, at
	// most a third of the session timeout). A member learns of a rebalance
	// at its next heartbeat.
	HeartbeatInterval time.Duration
	// Balancer assigns partitions to group members: cooperative-sticky (the
	// default: a rebalance moves only the partitions that must move, and the
	// others keep being consumed), sticky, range or roundrobin.
	Balancer string

	// MaxInFlight is the default bound of deliveries handed out and not
	// settled per subscription (default 1,000).
	MaxInFlight int
	// InPlaceRetries is how many times a nacked message of a consumer group
	// is delivered again from memory before it goes to the tail of the
	// group's retry topic (default 3); see the package documentation.
	InPlaceRetries int
	// MaxMessageSize is the largest Message.Size accepted (default and
	// ceiling: BatchMaxBytes less 64 KiB for the record's framing).
	MaxMessageSize int
}

// Defaults.
const (
	defaultBroker         = "127.0.0.1:9092"
	defaultBatchMaxBytes  = 1_000_012
	defaultMaxBuffered    = 10_000
	defaultSession        = 45 * time.Second
	defaultMinSession     = 6 * time.Second
	defaultRebalance      = 60 * time.Second
	defaultHeartbeat      = 3 * time.Second
	defaultMaxInFlight    = 1000
	defaultInPlaceRetries = 3
	framingReserve        = 64 << 10
)

func (o *Options) autoCreate() bool { return o.AutoCreateTopics == nil || *o.AutoCreateTopics }
func (o *Options) idempotent() bool { return o.Idempotent == nil || *o.Idempotent }
func (o *Options) acks() string     { return or(o.Acks, AcksAll) }
func (o *Options) balancer() string { return or(o.Balancer, "cooperative-sticky") }
func (o *Options) batchMax() int32  { return orInt(o.BatchMaxBytes, defaultBatchMaxBytes) }
func (o *Options) maxInFlight() int { return orInt(o.MaxInFlight, defaultMaxInFlight) }
func (o *Options) inPlaceRetries() int {
	if o.InPlaceRetries < 0 {
		return 0
	}
	return orInt(o.InPlaceRetries, defaultInPlaceRetries)
}
func (o *Options) rebalanceTimeout() time.Duration {
	return orInt(o.RebalanceTimeout, defaultRebalance)
}

func (o *Options) maxMessageSize() int {
	ceiling := int(o.batchMax()) - framingReserve
	if o.MaxMessageSize > 0 && o.MaxMessageSize < ceiling {
		return o.MaxMessageSize
	}
	return ceiling
}

// session returns the session timeout and heartbeat interval of a group
// subscription whose AckWait is ackWait.
func (o *Options) session(ackWait time.Duration) (session, heartbeat time.Duration) {
	session = orInt(o.SessionTimeout, defaultSession)
	if ackWait > 0 {
		session = max(ackWait, orInt(o.MinSessionTimeout, defaultMinSession))
	}
	heartbeat = min(orInt(o.HeartbeatInterval, defaultHeartbeat), session/3)
	return session, heartbeat
}

func or(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

func orInt[T int | int32 | time.Duration](v, def T) T {
	if v <= 0 {
		return def
	}
	return v
}

// Validate reports every problem of o at once.
func (o *Options) Validate() error {
	var errs []error
	bad := func(format string, args ...any) { errs = append(errs, fmt.Errorf("kafkabus: "+format, args...)) }
	switch o.acks() {
	case AcksAll, AcksLeader, AcksNone:
	default:
		bad("Acks %q: want all, leader or none", o.Acks)
	}
	if o.idempotent() && o.acks() != AcksAll && o.Idempotent != nil {
		bad("Idempotent needs Acks \"all\" (Acks is %q)", o.Acks)
	}
	switch strings.ToLower(o.Compression) {
	case "", "none", "gzip", "snappy", "lz4", "zstd":
	default:
		bad("Compression %q: want none, gzip, snappy, lz4 or zstd", o.Compression)
	}
	switch o.balancer() {
	case "cooperative-sticky", "sticky", "range", "roundrobin":
	default:
		bad("Balancer %q: want cooperative-sticky, sticky, range or roundrobin", o.Balancer)
	}
	if o.Partitions < 0 {
		bad("Partitions %d is negative", o.Partitions)
	}
	if o.ReplicationFactor < 0 {
		bad("ReplicationFactor %d is negative", o.ReplicationFactor)
	}
	if o.BatchMaxBytes != 0 && o.BatchMaxBytes < 2*framingReserve {
		bad("BatchMaxBytes %d is below %d", o.BatchMaxBytes, 2*framingReserve)
	}
	for name, v := range map[string]int64{
		"Linger": int64(o.Linger), "FetchMaxWait": int64(o.FetchMaxWait), "SessionTimeout": int64(o.SessionTimeout),
		"MinSessionTimeout": int64(o.MinSessionTimeout), "RebalanceTimeout": int64(o.RebalanceTimeout),
		"HeartbeatInterval": int64(o.HeartbeatInterval), "MaxBufferedRecords": int64(o.MaxBufferedRecords),
		"FetchMaxBytes": int64(o.FetchMaxBytes), "FetchMaxPartitionBytes": int64(o.FetchMaxPartitionBytes),
		"MaxInFlight": int64(o.MaxInFlight), "MaxMessageSize": int64(o.MaxMessageSize),
	} {
		if v < 0 {
			bad("%s is negative", name)
		}
	}
	if len(o.TopicPrefix) > 100 {
		bad("TopicPrefix is longer than 100 characters")
	}
	if strings.ContainsFunc(o.TopicPrefix, func(r rune) bool { return !legalTopicRune(r) }) {
		bad("TopicPrefix %q: a topic name has only ASCII letters, digits, '.', '_' and '-'", o.TopicPrefix)
	}
	return errors.Join(errs...)
}

// Validate reports every problem of c at once. It never repeats the
// password.
func (c *Config) Validate() error {
	errs := []error{c.Options.Validate()}
	for _, b := range c.Brokers {
		if _, _, err := net.SplitHostPort(b); err != nil {
			errs = append(errs, fmt.Errorf("kafkabus: broker %q is not host:port", b))
		}
	}
	if s := c.SASL; s != nil {
		switch strings.ToUpper(s.Mechanism) {
		case MechanismPlain:
			if c.TLS == nil && !s.AllowPlaintext {
				errs = append(errs, errors.New("kafkabus: SASL PLAIN without TLS sends the password in clear text: configure TLS, or set AllowPlaintext"))
			}
		case MechanismScramSHA256, MechanismScramSHA512:
		default:
			errs = append(errs, fmt.Errorf("kafkabus: SASL mechanism %q: want PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512", s.Mechanism))
		}
		if s.User == "" {
			errs = append(errs, errors.New("kafkabus: SASL needs a user"))
		}
	}
	// Not TLSConfig.Problems, which reads the files: CheckURL calls Validate
	// and promises no I/O. Open reports a file it cannot read.
	if t := c.TLS; t != nil && (t.CertFile == "") != (t.KeyFile == "") {
		errs = append(errs, errors.New("kafkabus: TLS CertFile and KeyFile go together"))
	}
	return errors.Join(errs...)
}

func (c *Config) brokers() []string {
	if len(c.Brokers) == 0 {
		return []string{defaultBroker}
	}
	return c.Brokers
}

// clientOpts are the kgo options every client of the driver shares.
func (c *Config) clientOpts() ([]kgo.Opt, error) {
	opts := []kgo.Opt{
		kgo.SeedBrokers(c.brokers()...),
		kgo.ClientID(or(c.ClientID, "eventbus")),
	}
	if c.Logger != nil {
		opts = append(opts, kgo.WithLogger(&logger{l: c.Logger}))
	}
	if c.Dialer != nil {
		opts = append(opts, kgo.Dialer(c.Dialer))
	}
	if c.TLS != nil {
		tc, err := c.TLS.Build()
		if err != nil {
			return nil, fmt.Errorf("kafkabus: %w", err)
		}
		if c.Dialer != nil {
			inner := c.Dialer
			opts[len(opts)-1] = kgo.Dialer(func(ctx context.Context, network, host string) (net.Conn, error) {
				conn, err := inner(ctx, network, host)
				if err != nil {
					return nil, err
				}
				cfg := tc.Clone()
				if cfg.ServerName == "" {
					cfg.ServerName, _, _ = net.SplitHostPort(host)
				}
				return tls.Client(conn, cfg), nil
			})
		} else {
			opts = append(opts, kgo.DialTLSConfig(tc))
		}
	}
	if s := c.SASL; s != nil {
		var m sasl.Mechanism
		switch strings.ToUpper(s.Mechanism) {
		case MechanismPlain:
			m = plain.Auth{User: s.User, Pass: s.Password}.AsMechanism()
		case MechanismScramSHA256:
			m = scram.Auth{User: s.User, Pass: s.Password}.AsSha256Mechanism()
		case MechanismScramSHA512:
			m = scram.Auth{User: s.User, Pass: s.Password}.AsSha512Mechanism()
		}
		opts = append(opts, kgo.SASL(m))
	}
	return opts, nil
}

// producerOpts are the options of the driver's producing client.
func (o *Options) producerOpts() []kgo.Opt {
	opts := []kgo.Opt{
		kgo.ProducerBatchMaxBytes(o.batchMax()),
		kgo.MaxBufferedRecords(orInt(o.MaxBufferedRecords, defaultMaxBuffered)),
		kgo.ProducerLinger(o.Linger),
	}
	switch o.acks() {
	case AcksLeader:
		opts = append(opts, kgo.RequiredAcks(kgo.LeaderAck()), kgo.DisableIdempotentWrite())
	case AcksNone:
		opts = append(opts, kgo.RequiredAcks(kgo.NoAck()), kgo.DisableIdempotentWrite())
	default:
		opts = append(opts, kgo.RequiredAcks(kgo.AllISRAcks()))
		if !o.idempotent() {
			opts = append(opts, kgo.DisableIdempotentWrite())
		}
	}
	switch strings.ToLower(o.Compression) {
	case "", "none":
		opts = append(opts, kgo.ProducerBatchCompression(kgo.NoCompression()))
	case "gzip":
		opts = append(opts, kgo.ProducerBatchCompression(kgo.GzipCompression()))
	case "snappy":
		opts = append(opts, kgo.ProducerBatchCompression(kgo.SnappyCompression()))
	case "lz4":
		opts = append(opts, kgo.ProducerBatchCompression(kgo.Lz4Compression()))
	case "zstd":
		opts = append(opts, kgo.ProducerBatchCompression(kgo.ZstdCompression()))
	}
	return opts
}

// consumerOpts are the options of every consuming client.
func (o *Options) consumerOpts() []kgo.Opt {
	var opts []kgo.Opt
	if o.FetchMaxBytes > 0 {
		opts = append(opts, kgo.FetchMaxBytes(o.FetchMaxBytes))
	}
	if o.FetchMaxPartitionBytes > 0 {
		opts = append(opts, kgo.FetchMaxPartitionBytes(o.FetchMaxPartitionBytes))
	}
	if o.FetchMaxWait > 0 {
		opts = append(opts, kgo.FetchMaxWait(o.FetchMaxWait))
	}
	return opts
}

func (o *Options) balancers() kgo.GroupBalancer {
	switch o.balancer() {
	case "sticky":
		return kgo.StickyBalancer()
	case "range":
		return kgo.RangeBalancer()
	case "roundrobin":
		return kgo.RoundRobinBalancer()
	}
	return kgo.CooperativeStickyBalancer()
}

// logger adapts slog to kgo.Logger.
type logger struct{ l *slog.Logger }

func (l *logger) Level() kgo.LogLevel { return kgo.LogLevelInfo }

func (l *logger) Log(level kgo.LogLevel, msg string, keyvals ...any) {
	lv := slog.LevelInfo
	switch level {
	case kgo.LogLevelError:
		lv = slog.LevelError
	case kgo.LogLevelWarn:
		lv = slog.LevelWarn
	case kgo.LogLevelDebug:
		lv = slog.LevelDebug
	}
	l.l.Log(context.Background(), lv, "kafkabus: "+msg, keyvals...)
}
