package membus

import (
	"context"
	"errors"
	"net/url"

	"github.com/marty-msf/eventbus/driver"
)

// Importing membus registers the mem:// URL scheme with the driver package.
func init() { driver.RegisterScheme("mem", opener{}) }

// ParseURL returns the Options that a mem:// URL describes. Each URL opens a
// new, independent broker. Query parameters: max_message_size (bytes),
// buffer_size (messages per queue) and ack_wait (a Go duration such as 30s),
// for example mem://?buffer_size=1024&ack_wait=5s. An unknown parameter, a
// host or a path is an error.
func ParseURL(rawURL string) (*Options, error) {
	u, err := driver.ParseRawURL(rawURL)
	if err != nil {
		return nil, err
	}
	return parseURL(u)
}

func parseURL(u *url.URL) (*Options, error) {
	p := driver.NewParams(u)
	if u.Scheme != "mem" {
		p.Fail("", errors.New("membus: scheme must be mem"))
	}
	if u.Host != "" || u.User != nil || u.Opaque != "" || (u.Path != "" && u.Path != "/") {
		p.Fail("", errors.New("membus: a mem URL names no host or path; write mem:// and parameters"))
	}
	o := &Options{}
	p.Int("max_message_size", &o.MaxMessageSize)
	p.Int("buffer_size", &o.BufferSize)
	p.Duration("ack_wait", &o.AckWait)
	if o.MaxMessageSize < 0 {
		p.Fail("max_message_size", errors.New("membus: negative"))
	}
	if o.BufferSize < 0 {
		p.Fail("buffer_size", errors.New("membus: negative"))
	}
	if o.AckWait < 0 {
		p.Fail("ack_wait", errors.New("membus: negative"))
	}
	if err := p.Err(); err != nil {
		return nil, err
	}
	return o, nil
}

// URL returns the mem:// URL that ParseURL turns back into o.
func (o *Options) URL() string {
	var q driver.URLQuery
	q.Int("max_message_size", o.MaxMessageSize)
	q.Int("buffer_size", o.BufferSize)
	q.Duration("ack_wait", o.AckWait)
	if query := q.Encode(); query != "" {
		return "mem://?" + query
	}
	return "mem://"
}

type opener struct{}

func (opener) CheckURL(u *url.URL) error {
	_, err := parseURL(u)
	return err
}

func (opener) OpenURL(_ context.Context, u *url.URL, _ *driver.OpenOptions) (driver.Driver, error) {
	o, err := parseURL(u)
	if err != nil {
		return nil, err
	}
	return New(o), nil
}
