package rabbitbus

import (
	"context"
	"errors"
	"net/url"
	"strings"

	"github.com/marty-msf/eventbus/driver"
)

// Importing rabbitbus registers the amqp:// and amqps:// URL schemes with
// the driver package ([ParseURL], [Open]).
func init() {
	driver.RegisterScheme("amqp", opener{})
	driver.RegisterScheme("amqps", opener{})
}

// ParseURL returns the Config that an amqp:// or amqps:// URL describes:
// user information, host, port and virtual host (the path) as RabbitMQ URLs
// have them, and every other field of Config as a query parameter:
//
//	prefix, queue_type (classic or quorum), delivery_limit,
//	group_expiry, queue_expiry, prefetch, publish_channels,
//	max_message_size, heartbeat, connection_name,
//	tls_ca_file, tls_cert_file, tls_key_file, tls_server_name,
//	tls_insecure_skip_verify
//
// For example amqps://app:s3cret@mq:5671/prod?queue_type=quorum&tls_ca_file=/etc/ca.pem.
// Durations are Go durations (30s, 5m). An unknown parameter is an error.
// TLSConfig.Config, Dial and Logger cannot be given by URL. Errors never
// contain the password.
func ParseURL(rawURL string) (*Config, error) {
	u, err := driver.ParseRawURL(rawURL)
	if err != nil {
		return nil, err
	}
	return parseURL(u)
}

func parseURL(u *url.URL) (*Config, error) {
	switch strings.ToLower(u.Scheme) {
	case "amqp", "amqps":
	default:
		return nil, &driver.URLError{URL: driver.RedactURL(u.String()), Err: errors.New("rabbitbus: scheme must be amqp or amqps")}
	}
	p := driver.NewParams(u)
	if u.Host == "" {
		p.Fail("", errors.New("rabbitbus: no host"))
	}
	c := &Config{}
	base := *u
	base.RawQuery, base.Fragment = "", ""
	base.Scheme = strings.ToLower(u.Scheme)
	c.URL = base.String()
	o := &c.Options
	p.String("prefix", &o.Prefix)
	var qt string
	p.String("queue_type", &qt)
	o.QueueType = QueueType(qt)
	p.Int("delivery_limit", &o.DeliveryLimit)
	p.Duration("group_expiry", &o.GroupExpiry)
	p.Duration("queue_expiry", &o.QueueExpiry)
	p.Int("prefetch", &o.Prefetch)
	p.Int("publish_channels", &o.PublishChannels)
	p.Int("max_message_size", &o.MaxMessageSize)
	p.Duration("heartbeat", &c.Heartbeat)
	p.String("connection_name", &c.ConnectionName)
	c.TLS = p.TLS()
	if err := p.Err(); err != nil {
		return nil, err
	}
	return c, nil
}

// URLString returns the URL that ParseURL turns back into c. It contains c's
// password. TLS.Config, Dial and Logger are left out.
func (c *Config) URLString() string {
	u, err := url.Parse(c.url())
	if err != nil {
		return c.url()
	}
	var q driver.URLQuery
	o := &c.Options
	q.String("prefix", o.Prefix)
	q.String("queue_type", string(o.QueueType))
	q.Int("delivery_limit", o.DeliveryLimit)
	q.Duration("group_expiry", o.GroupExpiry)
	q.Duration("queue_expiry", o.QueueExpiry)
	q.Int("prefetch", o.Prefetch)
	q.Int("publish_channels", o.PublishChannels)
	q.Int("max_message_size", o.MaxMessageSize)
	q.Duration("heartbeat", c.Heartbeat)
	q.String("connection_name", c.ConnectionName)
	q.TLS(c.TLS)
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
	if c.ConnectionName == "" {
		c.ConnectionName = opts.ClientName
	}
	c.Logger = opts.Logger
	return Open(ctx, c)
}
