package natsbus

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"path/filepath"
	"strings"

	"github.com/marty-msf/eventbus/driver"
)

// Importing natsbus registers its URL schemes with the driver package:
// nats://, tls://, ws://, wss:// open a connection to NATS servers ([Open]),
// embedded: runs a server in the process ([OpenEmbedded]).
func init() {
	for _, s := range []string{"nats", "tls", "ws", "wss"} {
		driver.RegisterScheme(s, serverOpener{})
	}
	driver.RegisterScheme("embedded", embeddedOpener{})
}

// URL query parameters, shared by both forms; see ParseURL.
func optionParams(p *driver.Params, o *Options) {
	p.BoolPtr("jetstream", &o.JetStream)
	p.String("stream_prefix", &o.StreamPrefix)
	p.String("subject_prefix", &o.SubjectPrefix)
	p.Duration("ack_wait", &o.AckWait)
	p.Int("max_message_size", &o.MaxMessageSize)
	p.Int("publish_window", &o.PublishWindow)
	p.Int("prefetch", &o.Prefetch)
	s := &o.Streams
	p.Int64("stream_max_msgs", &s.MaxMsgs)
	p.Int64("stream_max_bytes", &s.MaxBytes)
	p.Duration("stream_max_age", &s.MaxAge)
	var r, st string
	p.String("stream_retention", &r)
	p.String("stream_storage", &st)
	s.Retention, s.Storage = Retention(r), Storage(st)
	p.Int("stream_replicas", &s.Replicas)
	p.Duration("stream_duplicates", &s.Duplicates)
}

// ParseURL returns the Config that a nats://, tls://, ws:// or wss:// URL
// describes. Its user information authenticates: user:password@, or a bare
// token@. Query parameters set every other field of Config:
//
//	servers             further server URLs, comma separated
//	name                connection name (default: the bus's Source)
//	max_reconnects, reconnect_wait, connect_timeout
//	nkey_seed_file, credentials_file
//	tls_ca_file, tls_cert_file, tls_key_file, tls_server_name,
//	tls_insecure_skip_verify
//	jetstream           true or false
//	stream_prefix, subject_prefix, ack_wait, max_message_size,
//	publish_window, prefetch
//	stream_max_msgs, stream_max_bytes, stream_max_age, stream_retention,
//	stream_replicas, stream_storage, stream_duplicates
//
// For example nats://app:s3cret@nats1:4222?servers=nats://nats2:4222&jetstream=true&ack_wait=1m.
// Durations are Go durations (30s, 1m30s). An unknown parameter is an error.
// Neither TLSConfig.Config nor Options.Logger can be given by URL. Errors
// never contain the credentials.
func ParseURL(rawURL string) (*Config, error) {
	u, err := driver.ParseRawURL(rawURL)
	if err != nil {
		return nil, err
	}
	return parseServerURL(u)
}

func parseServerURL(u *url.URL) (*Config, error) {
	redacted := driver.RedactURL(u.String())
	switch strings.ToLower(u.Scheme) {
	case "nats", "tls", "ws", "wss":
	default:
		return nil, &driver.URLError{URL: redacted, Err: errors.New("natsbus: scheme must be nats, tls, ws or wss")}
	}
	c := &Config{}
	p := driver.NewParams(u)
	if u.Host == "" {
		p.Fail("", errors.New("natsbus: no host"))
	}
	if u.Path != "" && u.Path != "/" {
		p.Fail("", errors.New("natsbus: a NATS URL has no path"))
	}
	if u.User != nil {
		if pw, ok := u.User.Password(); ok {
			c.User, c.Password = u.User.Username(), pw
		} else {
			c.Token = u.User.Username()
		}
	}
	base := *u
	base.User, base.RawQuery, base.Path, base.RawPath, base.Fragment = nil, "", "", "", ""
	c.Servers = []string{base.String()}
	p.Strings("servers", &c.Servers)
	p.String("name", &c.Name)
	p.Int("max_reconnects", &c.MaxReconnects)
	p.Duration("reconnect_wait", &c.ReconnectWait)
	p.Duration("connect_timeout", &c.ConnectTimeout)
	p.String("nkey_seed_file", &c.NKeySeedFile)
	p.String("credentials_file", &c.CredentialsFile)
	c.TLS = p.TLS()
	optionParams(p, &c.Options)
	if err := p.Err(); err != nil {
		return nil, err
	}
	return c, nil
}

// URL returns the URL that ParseURL turns back into c: the first server
// with c's credentials as user information, every other field a query
// parameter. It contains c's password or token. TLS.Config and
// Options.Logger cannot be part of a URL and are left out.
func (c *Config) URL() string {
	var u *url.URL
	servers := c.Servers
	if len(servers) == 0 {
		servers = []string{defaultURL}
	}
	u, err := url.Parse(servers[0])
	if err != nil || u.Host == "" {
		u = &url.URL{Scheme: "nats", Host: servers[0]}
	}
	switch {
	case c.User != "":
		u.User = url.UserPassword(c.User, c.Password)
	case c.Token != "":
		u.User = url.User(c.Token)
	}
	var q driver.URLQuery
	q.Strings("servers", servers[1:])
	q.String("name", c.Name)
	q.Int("max_reconnects", c.MaxReconnects)
	q.Duration("reconnect_wait", c.ReconnectWait)
	q.Duration("connect_timeout", c.ConnectTimeout)
	q.String("nkey_seed_file", c.NKeySeedFile)
	q.String("credentials_file", c.CredentialsFile)
	q.TLS(c.TLS)
	optionQuery(&q, &c.Options)
	u.RawQuery = q.Encode()
	return u.String()
}

func optionQuery(q *driver.URLQuery, o *Options) {
	q.BoolPtr("jetstream", o.JetStream)
	q.String("stream_prefix", o.StreamPrefix)
	q.String("subject_prefix", o.SubjectPrefix)
	q.Duration("ack_wait", o.AckWait)
	q.Int("max_message_size", o.MaxMessageSize)
	q.Int("publish_window", o.PublishWindow)
	q.Int("prefetch", o.Prefetch)
	s := &o.Streams
	q.Int64("stream_max_msgs", s.MaxMsgs)
	q.Int64("stream_max_bytes", s.MaxBytes)
	q.Duration("stream_max_age", s.MaxAge)
	q.String("stream_retention", string(s.Retention))
	q.String("stream_storage", string(s.Storage))
	q.Int("stream_replicas", s.Replicas)
	q.Duration("stream_duplicates", s.Duplicates)
}

type serverOpener struct{}

func (serverOpener) CheckURL(u *url.URL) error {
	c, err := parseServerURL(u)
	if err != nil {
		return err
	}
	return c.Options.Validate()
}

func (serverOpener) OpenURL(ctx context.Context, u *url.URL, opts *driver.OpenOptions) (driver.Driver, error) {
	c, err := parseServerURL(u)
	if err != nil {
		return nil, err
	}
	if c.Name == "" {
		c.Name = opts.ClientName
	}
	c.Logger = opts.Logger
	return Open(ctx, c)
}

// EmbeddedURL returns the embedded: URL of a server keeping its data in
// dataDir: embedded:relative/dir, or embedded:///absolute/dir. An empty
// dataDir means a temporary directory, removed when the driver closes.
func EmbeddedURL(dataDir string) string {
	if dataDir == "" {
		return "embedded:"
	}
	p := filepath.ToSlash(dataDir)
	if filepath.IsAbs(dataDir) {
		if !strings.HasPrefix(p, "/") {
			p = "/" + p // C:/data
		}
		return (&url.URL{Scheme: "embedded", Path: p}).String()
	}
	return "embedded:" + (&url.URL{Path: p}).EscapedPath()
}

// ParseEmbeddedURL returns the server options and the driver configuration
// that an embedded: URL describes. The path is the data directory:
// embedded:///var/lib/app/bus (absolute), embedded:data/bus (relative to
// the working directory), or embedded: alone for a temporary directory
// removed at Close. Query parameters:
//
//	host, port          listening address; port 0 (the default) does not
//	                    listen, -1 picks a free port
//	max_payload, max_memory, max_store, server_name
//	name                connection name (default: the bus's Source)
//	jetstream, stream_prefix, subject_prefix, ack_wait, max_message_size,
//	publish_window, prefetch, stream_* (as for ParseURL)
//
// For example embedded:///var/lib/app/bus?port=4222 also lets other
// processes connect on 127.0.0.1:4222. An unknown parameter is an error.
func ParseEmbeddedURL(rawURL string) (*EmbeddedOptions, *Config, error) {
	u, err := driver.ParseRawURL(rawURL)
	if err != nil {
		return nil, nil, err
	}
	return parseEmbeddedURL(u)
}

func parseEmbeddedURL(u *url.URL) (*EmbeddedOptions, *Config, error) {
	if !strings.EqualFold(u.Scheme, "embedded") {
		return nil, nil, &driver.URLError{URL: driver.RedactURL(u.String()), Err: errors.New("natsbus: scheme must be embedded")}
	}
	p := driver.NewParams(u)
	eo, c := &EmbeddedOptions{}, &Config{}
	switch {
	case u.Host != "" || u.User != nil:
		p.Fail("", errors.New("natsbus: an embedded URL names no host: write embedded:relative/dir or embedded:///absolute/dir"))
	case u.Opaque != "":
		dir, err := url.PathUnescape(u.Opaque)
		if err != nil {
			p.Fail("", errors.New("natsbus: malformed path"))
		}
		eo.DataDir = filepath.FromSlash(dir)
	default:
		dir := u.Path
		if len(dir) > 2 && dir[0] == '/' && dir[2] == ':' {
			dir = dir[1:] // /C:/data on Windows
		}
		eo.DataDir = filepath.FromSlash(dir)
	}
	p.String("host", &eo.Host)
	p.Int("port", &eo.Port)
	p.Int32("max_payload", &eo.MaxPayload)
	p.Int64("max_memory", &eo.MaxMemory)
	p.Int64("max_store", &eo.MaxStore)
	p.String("server_name", &eo.ServerName)
	p.String("name", &c.Name)
	optionParams(p, &c.Options)
	if eo.Port < -1 || eo.Port > 65535 {
		p.Fail("port", errors.New("natsbus: want 0 (no listener), -1 (a free port) or 1 to 65535"))
	}
	if eo.MaxPayload < 0 {
		p.Fail("max_payload", errors.New("natsbus: negative"))
	}
	if err := p.Err(); err != nil {
		return nil, nil, err
	}
	return eo, c, nil
}

// URL returns the URL that ParseEmbeddedURL turns into o and c's
// Name and Options. Other fields of c, o.TLS and the loggers cannot be part
// of an embedded URL and are left out.
func (o *EmbeddedOptions) URL(c *Config) string {
	raw := EmbeddedURL(o.DataDir)
	var q driver.URLQuery
	q.String("host", o.Host)
	q.Int("port", o.Port)
	q.Int32("max_payload", o.MaxPayload)
	q.Int64("max_memory", o.MaxMemory)
	q.Int64("max_store", o.MaxStore)
	q.String("server_name", o.ServerName)
	if c != nil {
		q.String("name", c.Name)
		optionQuery(&q, &c.Options)
	}
	if query := q.Encode(); query != "" {
		raw += "?" + query
	}
	return raw
}

type embeddedOpener struct{}

func (embeddedOpener) CheckURL(u *url.URL) error {
	_, c, err := parseEmbeddedURL(u)
	if err != nil {
		return err
	}
	return c.Options.Validate()
}

func (embeddedOpener) OpenURL(ctx context.Context, u *url.URL, opts *driver.OpenOptions) (driver.Driver, error) {
	eo, c, err := parseEmbeddedURL(u)
	if err != nil {
		return nil, err
	}
	if c.Name == "" {
		c.Name = opts.ClientName
	}
	eo.Logger, c.Logger = opts.Logger, opts.Logger
	d, err := OpenEmbedded(ctx, eo, c)
	if err != nil {
		where := eo.DataDir
		if where == "" {
			where = "a temporary directory"
		}
		return nil, fmt.Errorf("natsbus: start the embedded server in %q: %w", where, err)
	}
	return d, nil
}
