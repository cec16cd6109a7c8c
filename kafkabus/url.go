package kafkabus

import (
	"context"
	"errors"
	"net/url"
	"strings"

	"github.com/marty-msf/eventbus/driver"
)

// Importing kafkabus registers the kafka:// URL scheme with the driver
// package ([ParseURL] describes it).
func init() {
	driver.RegisterScheme("kafka", opener{})
}

// ParseURL returns the Config that a kafka:// URL describes. The host is the
// first seed broker; user information authenticates with SASL (SCRAM-SHA-512
// unless sasl_mechanism says otherwise). Query parameters set every other
// field of Config:
//
//	brokers              further seed brokers, comma separated
//	client_id
//	sasl_mechanism       PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512
//	sasl_allow_plaintext allow PLAIN without TLS
//	tls                  true for TLS with the system roots
//	tls_ca_file, tls_cert_file, tls_key_file, tls_server_name,
//	tls_insecure_skip_verify
//	topic_prefix, group_prefix, auto_create_topics, partitions,
//	replication_factor
//	acks (all, leader, none), idempotent, compression, linger,
//	batch_max_bytes, max_buffered_records
//	fetch_max_bytes, fetch_max_partition_bytes, fetch_max_wait
//	session_timeout, min_session_timeout, rebalance_timeout,
//	heartbeat_interval, balancer
//	max_in_flight, in_place_retries, max_message_size
//
// For example kafka://app:s3cret@kafka1:9092?brokers=kafka2:9092&tls=true&acks=all.
// Durations are Go durations (30s, 1m30s). An unknown parameter is an error.
// TLSConfig.Config, Dialer and Logger cannot be given by URL. Errors never
// contain the credentials.
func ParseURL(rawURL string) (*Config, error) {
	u, err := driver.ParseRawURL(rawURL)
	if err != nil {
		return nil, err
	}
	return parseURL(u)
}

func parseURL(u *url.URL) (*Config, error) {
	if !strings.EqualFold(u.Scheme, "kafka") {
		return nil, &driver.URLError{URL: driver.RedactURL(u.String()), Err: errors.New("kafkabus: scheme must be kafka")}
	}
	c := &Config{}
	p := driver.NewParams(u)
	if u.Host == "" {
		p.Fail("", errors.New("kafkabus: no broker host:port"))
	} else {
		c.Brokers = []string{u.Host}
	}
	if u.Path != "" && u.Path != "/" {
		p.Fail("", errors.New("kafkabus: a Kafka URL has no path"))
	}
	p.Strings("brokers", &c.Brokers)
	p.String("client_id", &c.ClientID)
	mech := ""
	p.String("sasl_mechanism", &mech)
	allowPlain := false
	p.Bool("sasl_allow_plaintext", &allowPlain)
	if u.User != nil {
		pw, _ := u.User.Password()
		c.SASL = &SASLConfig{Mechanism: or(strings.ToUpper(mech), MechanismScramSHA512), User: u.User.Username(), Password: pw, AllowPlaintext: allowPlain}
	} else if mech != "" || allowPlain {
		p.Fail("sasl_mechanism", errors.New("kafkabus: SASL needs user:password@ in the URL"))
	}
	useTLS := false
	p.Bool("tls", &useTLS)
	c.TLS = p.TLS()
	if useTLS && c.TLS == nil {
		c.TLS = &TLSConfig{}
	}
	o := &c.Options
	p.String("topic_prefix", &o.TopicPrefix)
	p.String("group_prefix", &o.GroupPrefix)
	p.BoolPtr("auto_create_topics", &o.AutoCreateTopics)
	p.Int32("partitions", &o.Partitions)
	var rf int32
	p.Int32("replication_factor", &rf)
	if rf > 1<<15-1 || rf < 0 {
		p.Fail("replication_factor", errors.New("kafkabus: out of range"))
	}
	o.ReplicationFactor = int16(rf)
	p.String("acks", &o.Acks)
	p.BoolPtr("idempotent", &o.Idempotent)
	p.String("compression", &o.Compression)
	p.Duration("linger", &o.Linger)
	p.Int32("batch_max_bytes", &o.BatchMaxBytes)
	p.Int("max_buffered_records", &o.MaxBufferedRecords)
	p.Int32("fetch_max_bytes", &o.FetchMaxBytes)
	p.Int32("fetch_max_partition_bytes", &o.FetchMaxPartitionBytes)
	p.Duration("fetch_max_wait", &o.FetchMaxWait)
	p.Duration("session_timeout", &o.SessionTimeout)
	p.Duration("min_session_timeout", &o.MinSessionTimeout)
	p.Duration("rebalance_timeout", &o.RebalanceTimeout)
	p.Duration("heartbeat_interval", &o.HeartbeatInterval)
	p.String("balancer", &o.Balancer)
	p.Int("max_in_flight", &o.MaxInFlight)
	p.Int("in_place_retries", &o.InPlaceRetries)
	p.Int("max_message_size", &o.MaxMessageSize)
	if err := p.Err(); err != nil {
		return nil, err
	}
	return c, nil
}

// URL returns the URL that ParseURL turns back into c. It contains c's
// password. TLS.Config, Dialer and Logger cannot be part of a URL and are
// left out.
func (c *Config) URL() string {
	brokers := c.brokers()
	u := &url.URL{Scheme: "kafka", Host: brokers[0]}
	var q driver.URLQuery
	q.Strings("brokers", brokers[1:])
	q.String("client_id", c.ClientID)
	if s := c.SASL; s != nil {
		u.User = url.UserPassword(s.User, s.Password)
		q.Set("sasl_mechanism", strings.ToUpper(s.Mechanism))
		q.Bool("sasl_allow_plaintext", s.AllowPlaintext)
	}
	if t := c.TLS; t != nil && *t == (TLSConfig{Config: t.Config}) {
		q.Set("tls", "true")
	}
	q.TLS(c.TLS)
	o := &c.Options
	q.String("topic_prefix", o.TopicPrefix)
	q.String("group_prefix", o.GroupPrefix)
	q.BoolPtr("auto_create_topics", o.AutoCreateTopics)
	q.Int32("partitions", o.Partitions)
	q.Int32("replication_factor", int32(o.ReplicationFactor))
	q.String("acks", o.Acks)
	q.BoolPtr("idempotent", o.Idempotent)
	q.String("compression", o.Compression)
	q.Duration("linger", o.Linger)
	q.Int32("batch_max_bytes", o.BatchMaxBytes)
	q.Int("max_buffered_records", o.MaxBufferedRecords)
	q.Int32("fetch_max_bytes", o.FetchMaxBytes)
	q.Int32("fetch_max_partition_bytes", o.FetchMaxPartitionBytes)
	q.Duration("fetch_max_wait", o.FetchMaxWait)
	q.Duration("session_timeout", o.SessionTimeout)
	q.Duration("min_session_timeout", o.MinSessionTimeout)
	q.Duration("rebalance_timeout", o.RebalanceTimeout)
	q.Duration("heartbeat_interval", o.HeartbeatInterval)
	q.String("balancer", o.Balancer)
	q.Int("max_in_flight", o.MaxInFlight)
	q.Int("in_place_retries", o.InPlaceRetries)
	q.Int("max_message_size", o.MaxMessageSize)
	u.RawQuery = q.Encode()
	return u.String()
}

type opener struct{}

func (opener) CheckURL(u *url.URL) error {
	c, err := parseURL(u)
	if err != nil {
		return err
	}
	return c.Validate()
}

func (opener) OpenURL(ctx context.Context, u *url.URL, opts *driver.OpenOptions) (driver.Driver, error) {
	c, err := parseURL(u)
	if err != nil {
		return nil, err
	}
	if c.ClientID == "" {
		c.ClientID = opts.ClientName
	}
	c.Logger = opts.Logger
	return Open(ctx, c)
}
