package redisbus

import (
	"context"
	"errors"
	"net"
	"net/url"
	"strconv"
	"strings"

	"github.com/marty-msf/eventbus/driver"
)

// Importing redisbus registers the redis:// and rediss:// (TLS) URL schemes
// with the driver package.
func init() {
	driver.RegisterScheme("redis", opener{})
	driver.RegisterScheme("rediss", opener{})
}

// ParseURL returns the Config that a redis:// or rediss:// URL describes:
//
//	redis://[user:password@]host:port[/db][?param=value&...]
//	rediss://...   the same over TLS
//
// The user information authenticates (a password alone, :password@, for
// requirepass); the path is the database index. Query parameters set every
// other field of Config:
//
//	addrs               further host:port addresses, comma separated
//	                    (Redis Cluster seeds, or Sentinels with master_name)
//	master_name, sentinel_username, sentinel_password
//	db                  database index (instead of the path)
//	client_name, dial_timeout, pool_size
//	tls_ca_file, tls_cert_file, tls_key_file, tls_server_name,
//	tls_insecure_skip_verify
//	prefix              Options.KeyPrefix
//	max_len, dead_letter_max_len, ack_wait, reclaim_interval, block_time,
//	max_message_size, pipeline_workers, read_ahead
//
// For example rediss://app:s3cret@redis.internal:6380/2?ack_wait=1m&tls_ca_file=/etc/ca.pem.
// Durations are Go durations (30s, 1m30s). An unknown parameter is an error.
// TLSConfig.Config and Options.Logger cannot be given by URL. Errors never
// contain the credentials.
func ParseURL(rawURL string) (*Config, error) {
	u, err := driver.ParseRawURL(rawURL)
	if err != nil {
		return nil, err
	}
	return parseURL(u)
}

func parseURL(u *url.URL) (*Config, error) {
	scheme := strings.ToLower(u.Scheme)
	if scheme != "redis" && scheme != "rediss" {
		return nil, &driver.URLError{URL: driver.RedactURL(u.String()), Err: errors.New("redisbus: scheme must be redis or rediss")}
	}
	c := &Config{}
	p := driver.NewParams(u)
	if u.Host != "" {
		host := u.Host
		if u.Port() == "" {
			host = net.JoinHostPort(u.Hostname(), "6379")
		}
		c.Addrs = []string{host}
	} else {
		p.Fail("", errors.New("redisbus: no host"))
	}
	if u.User != nil {
		c.Username = u.User.Username()
		c.Password, _ = u.User.Password()
	}
	if path := strings.Trim(u.Path, "/"); path != "" {
		db, err := strconv.Atoi(path)
		if err != nil || db < 0 {
			p.Fail("", errors.New("redisbus: the path is the database index, a number"))
		}
		c.DB = db
		if p.Has("db") {
			p.Fail("db", errors.New("redisbus: the database is given by the path already"))
		}
	}
	p.Strings("addrs", &c.Addrs)
	p.String("master_name", &c.MasterName)
	p.String("sentinel_username", &c.SentinelUsername)
	p.String("sentinel_password", &c.SentinelPassword)
	p.Int("db", &c.DB)
	p.String("client_name", &c.ClientName)
	p.Duration("dial_timeout", &c.DialTimeout)
	p.Int("pool_size", &c.PoolSize)
	c.TLS = p.TLS()
	if scheme == "rediss" && c.TLS == nil {
		c.TLS = &TLSConfig{}
	}
	o := &c.Options
	p.String("prefix", &o.KeyPrefix)
	p.Int64("max_len", &o.MaxLen)
	p.Int64("dead_letter_max_len", &o.DeadLetterMaxLen)
	p.Duration("ack_wait", &o.AckWait)
	p.Duration("reclaim_interval", &o.ReclaimInterval)
	p.Duration("block_time", &o.BlockTime)
	p.Int("max_message_size", &o.MaxMessageSize)
	p.Int("pipeline_workers", &o.PipelineWorkers)
	p.Int("read_ahead", &o.ReadAhead)
	if err := p.Err(); err != nil {
		return nil, err
	}
	return c, nil
}

// URL returns the URL that ParseURL turns back into c. It contains c's
// password. TLS.Config and Options.Logger cannot be part of a URL and are
// left out; a Config with TLS gives a rediss:// URL.
func (c *Config) URL() string {
	u := &url.URL{Scheme: "redis", Host: defaultAddr}
	if c.TLS != nil {
		u.Scheme = "rediss"
	}
	if len(c.Addrs) > 0 {
		u.Host = c.Addrs[0]
	}
	switch {
	case c.Password != "":
		u.User = url.UserPassword(c.Username, c.Password)
	case c.Username != "":
		u.User = url.User(c.Username)
	}
	if c.DB != 0 {
		u.Path = "/" + strconv.Itoa(c.DB)
	}
	var q driver.URLQuery
	if len(c.Addrs) > 1 {
		q.Strings("addrs", c.Addrs[1:])
	}
	q.String("master_name", c.MasterName)
	q.String("sentinel_username", c.SentinelUsername)
	q.String("sentinel_password", c.SentinelPassword)
	q.String("client_name", c.ClientName)
	q.Duration("dial_timeout", c.DialTimeout)
	q.Int("pool_size", c.PoolSize)
	q.TLS(c.TLS)
	o := &c.Options
	q.String("prefix", o.KeyPrefix)
	q.Int64("max_len", o.MaxLen)
	q.Int64("dead_letter_max_len", o.DeadLetterMaxLen)
	q.Duration("ack_wait", o.AckWait)
	q.Duration("reclaim_interval", o.ReclaimInterval)
	q.Duration("block_time", o.BlockTime)
	q.Int("max_message_size", o.MaxMessageSize)
	q.Int("pipeline_workers", o.PipelineWorkers)
	q.Int("read_ahead", o.ReadAhead)
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
	if c.ClientName == "" && opts != nil {
		c.ClientName = opts.ClientName
	}
	if opts != nil {
		c.Logger = opts.Logger
	}
	return Open(ctx, c)
}
