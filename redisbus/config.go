package redisbus

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/marty-msf/eventbus/driver"
)

// Config says how to connect to Redis and how the driver lays out its keys.
// The zero value connects to 127.0.0.1:6379, database 0, without TLS.
type Config struct {
	// Addrs lists host:port addresses. One address is a standalone server;
	// several are the seed nodes of a Redis Cluster; with MasterName they are
	// Sentinels. Empty means 127.0.0.1:6379.
	Addrs []string
	// MasterName selects Redis Sentinel: the name of the monitored master.
	MasterName string
	// Username and Password authenticate (ACL user, or the password alone for
	// requirepass). They never appear in an error.
	Username, Password string
	// SentinelUsername and SentinelPassword authenticate with the Sentinels.
	SentinelUsername, SentinelPassword string
	// DB is the database index (standalone and Sentinel only).
	DB int
	// TLS secures the connection; nil means plain TCP.
	TLS *TLSConfig
	// ClientName names the connection (CLIENT SETNAME).
	ClientName string
	// DialTimeout bounds each connection attempt (default 5 s).
	DialTimeout time.Duration
	// PoolSize is the number of connections per node (default 64). Every
	// Receive in progress holds one for up to BlockTime.
	PoolSize int

	Options
}

// TLSConfig configures TLS from files, or from a ready tls.Config, whose
// fields it overrides: see [driver.TLSConfig].
type TLSConfig = driver.TLSConfig

// Options are the settings of a Driver that do not concern the connection.
// They apply to Open and to New alike.
type Options struct {
	// KeyPrefix starts every key and channel the driver uses, so that several
	// buses share one Redis without meeting (default "eventbus").
	KeyPrefix string
	// MaxLen trims each stream of events, commands, queries and streams to
	// about this many entries (XADD MAXLEN ~). Zero means 1,000,000; a
	// negative value never trims.
	MaxLen int64
	// DeadLetterMaxLen trims each dead-letter stream likewise. Zero or a
	// negative value never trims: dead letters wait for an operator.
	DeadLetterMaxLen int64
	// AckWait is how long a message received by a consumer that stopped
	// (its process died) stays pending before another member of its group
	// reclaims it, unless a subscription asks otherwise (default 30 s, at
	// least 1 s).
	AckWait time.Duration
	// ReclaimInterval is how often a subscription looks for messages to
	// reclaim: pending past the ack wait, or given back by a member that
	// closed (default 1 s, and at most half the ack wait).
	ReclaimInterval time.Duration
	// BlockTime bounds one blocking XREADGROUP; Receive loops over them
	// (default 200 ms). It bounds how long a cancelled Receive takes to
	// return.
	BlockTime time.Duration
	// MaxMessageSize is the largest accepted Message.Size (default 1 MiB, at
	// most 512 MiB less 64 KiB).
	MaxMessageSize int
	// PipelineWorkers is the number of goroutines that send the XADD and
	// XACK commands of concurrent callers together, one pipeline each
	// (default 16).
	PipelineWorkers int
	// ReadAhead is how many new entries a subscription reads at once
	// (XREADGROUP COUNT) when Receive asks for fewer, and reads again in the
	// background while what it read is handed out, so that a consumer
	// rarely waits for a round trip. Entries read ahead are kept fresh like
	// those handed out and given back at Close. A subscription with
	// MaxInFlight reads no more than it may hand out. Default 256; a
	// negative value reads only what Receive asks for.
	ReadAhead int
	// Logger receives operational messages; nil discards them.
	Logger *slog.Logger
}

const (
	defaultAddr            = "127.0.0.1:6379"
	defaultKeyPrefix       = "eventbus"
	defaultMaxLen          = 1_000_000
	defaultAckWait         = 30 * time.Second
	minAckWait             = time.Second
	defaultReclaimInterval = time.Second
	defaultBlockTime       = 200 * time.Millisecond
	defaultMaxMessageSize  = 1 << 20
	maxMessageSizeLimit    = 512<<20 - 64<<10
	defaultPipelineWorkers = 16
	defaultReadAhead       = 256
	defaultPoolSize        = 64
	defaultDialTimeout     = 5 * time.Second
	// replyMaxLen and replyTTL bound a bus instance's reply stream, which a
	// crashed instance leaves behind.
	replyMaxLen = 10_000
	replyTTL    = time.Hour
)

// Validate reports every problem of the configuration at once. Secrets are
// never part of its errors.
func (c *Config) Validate() error {
	if c == nil {
		return nil
	}
	var errs []error
	add := func(format string, args ...any) {
		errs = append(errs, fmt.Errorf("redisbus: config: "+format, args...))
	}
	for i, a := range c.Addrs {
		if _, _, err := net.SplitHostPort(a); err != nil {
			add("Addrs[%d] %q is not host:port", i, a)
		}
	}
	if c.DB < 0 {
		add("DB %d is negative", c.DB)
	}
	if c.DB != 0 && len(c.Addrs) > 1 && c.MasterName == "" {
		add("DB %d: Redis Cluster has only database 0", c.DB)
	}
	if c.DialTimeout < 0 {
		add("DialTimeout %v is negative", c.DialTimeout)
	}
	if c.PoolSize < 0 {
		add("PoolSize %d is negative", c.PoolSize)
	}
	if c.TLS != nil {
		for _, p := range c.TLS.Problems() {
			add("%s", p)
		}
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
	add := func(format string, args ...any) {
		errs = append(errs, fmt.Errorf("redisbus: config: "+format, args...))
	}
	if strings.ContainsAny(o.KeyPrefix, "{} \t\r\n") {
		add("KeyPrefix %q: no braces or white space", o.KeyPrefix)
	}
	if o.AckWait < 0 {
		add("AckWait %v is negative", o.AckWait)
	}
	if o.ReclaimInterval < 0 {
		add("ReclaimInterval %v is negative", o.ReclaimInterval)
	}
	if o.BlockTime < 0 {
		add("BlockTime %v is negative", o.BlockTime)
	} else if o.BlockTime > 0 && o.BlockTime < time.Millisecond {
		add("BlockTime %v: at least 1ms", o.BlockTime)
	}
	if o.MaxMessageSize < 0 || o.MaxMessageSize > maxMessageSizeLimit {
		add("MaxMessageSize %d: want 0 (the default) to %d", o.MaxMessageSize, maxMessageSizeLimit)
	}
	if o.PipelineWorkers < 0 {
		add("PipelineWorkers %d is negative", o.PipelineWorkers)
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
	if r.KeyPrefix == "" {
		r.KeyPrefix = defaultKeyPrefix
	}
	if r.MaxLen == 0 {
		r.MaxLen = defaultMaxLen
	}
	if r.AckWait == 0 {
		r.AckWait = defaultAckWait
	}
	if r.ReclaimInterval == 0 {
		r.ReclaimInterval = defaultReclaimInterval
	}
	if r.BlockTime == 0 {
		r.BlockTime = defaultBlockTime
	}
	if r.MaxMessageSize == 0 {
		r.MaxMessageSize = defaultMaxMessageSize
	}
	if r.PipelineWorkers == 0 {
		r.PipelineWorkers = defaultPipelineWorkers
	}
	if r.ReadAhead == 0 {
		r.ReadAhead = defaultReadAhead
	}
	if r.Logger == nil {
		r.Logger = slog.New(slog.DiscardHandler)
	}
	return r
}

// universalOptions translates the connection settings for go-redis.
func (c *Config) universalOptions() (*redis.UniversalOptions, error) {
	addrs := c.Addrs
	if len(addrs) == 0 {
		addrs = []string{defaultAddr}
	}
	o := &redis.UniversalOptions{
		Addrs:            addrs,
		MasterName:       c.MasterName,
		Username:         c.Username,
		Password:         c.Password,
		SentinelUsername: c.SentinelUsername,
		SentinelPassword: c.SentinelPassword,
		DB:               c.DB,
		ClientName:       clientName(c.ClientName),
		DialTimeout:      defaultDialTimeout,
		PoolSize:         defaultPoolSize,
		// RESP2 replies are what the driver's scripts and raw commands read.
		Protocol:              2,
		ContextTimeoutEnabled: true,
		// The driver reports outages itself; go-redis's identity probe
		// (CLIENT SETINFO) only fills the server's logs on older servers.
		DisableIdentity: true,
	}
	if c.DialTimeout > 0 {
		o.DialTimeout = c.DialTimeout
	}
	if c.PoolSize > 0 {
		o.PoolSize = c.PoolSize
	}
	if c.TLS != nil {
		tc, err := c.TLS.Build()
		if err != nil {
			return nil, fmt.Errorf("redisbus: %w", err)
		}
		o.TLSConfig = tc
	}
	return o, nil
}

// secrets lists the strings that must never appear in an error.
func (c *Config) secrets() []string {
	var s []string
	for _, v := range []string{c.Password, c.SentinelPassword} {
		if v != "" {
			s = append(s, v)
		}
	}
	return s
}

// clientName makes name acceptable to CLIENT SETNAME, which refuses spaces
// and control characters.
func clientName(name string) string {
	return strings.Map(func(r rune) rune {
		if r <= ' ' || r == 0x7f {
			return '-'
		}
		return r
	}, name)
}
