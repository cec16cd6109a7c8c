package awsbus

import (
	"context"
	"errors"
	"net/url"
	"strings"

	"github.com/marty-msf/eventbus/driver"
)

// Importing awsbus registers the URL schemes aws:// and sns+sqs:// with the
// driver package.
func init() {
	driver.RegisterScheme("aws", opener{})
	driver.RegisterScheme("sns+sqs", opener{})
}

// ParseURL returns the Config that an aws:// or sns+sqs:// URL describes.
// The host, when present, is the region: aws://us-east-1. Query parameters
// set every other field of Config:
//
//	region                    the region (instead of the host)
//	endpoint                  SNS and SQS endpoint override (http://127.0.0.1:4566)
//	profile                   shared config profile
//	access_key_id, secret_access_key, session_token
//	                          explicit credentials (default: the AWS chain)
//	prefix                    topic and queue name prefix
//	fifo                      true: FIFO topics and queues for every pattern
//	content_based_dedup       true: FIFO de-duplication by body digest
//	kms_key_id                server-side encryption key
//	visibility_timeout        e.g. 30s
//	wait_time                 long-poll bound, e.g. 1s
//	max_receive_count         redrive to the dead-letter queue after n receives
//	retention                 e.g. 96h
//	max_in_flight             deliveries held per subscription
//
// An unknown parameter, a path, user information or a bad value is an error
// naming the parameter; secrets never appear in it.
func ParseURL(rawURL string) (*Config, error) {
	u, err := driver.ParseRawURL(rawURL)
	if err != nil {
		return nil, err
	}
	return configFromURL(u)
}

func configFromURL(u *url.URL) (*Config, error) {
	if q := u.Query(); strings.Contains(q.Get("endpoint"), "@") {
		// User information in the endpoint is refused below; errors show
		// the URL without it (the endpoint is no secret-named parameter).
		q.Set("endpoint", driver.RedactURL(q.Get("endpoint")))
		redacted := *u
		redacted.RawQuery = q.Encode()
		u = &redacted
	}
	p := driver.NewParams(u)
	c := &Config{Region: u.Hostname()}
	if u.Port() != "" {
		p.Fail("", errors.New("the host is the region and takes no port; use endpoint= for an address"))
	}
	if u.User != nil {
		p.Fail("", errors.New("credentials go in access_key_id and secret_access_key, or the AWS chain"))
	}
	if u.Path != "" && u.Path != "/" {
		p.Fail("", errors.New("no path allowed"))
	}
	if u.Opaque != "" {
		p.Fail("", errors.New("want aws://[region][?parameters]"))
	}
	if p.Has("region") {
		if c.Region != "" {
			p.Fail("region", errors.New("the host already names the region"))
		}
		p.String("region", &c.Region)
	}
	p.String("endpoint", &c.Endpoint)
	p.String("profile", &c.Profile)
	p.String("access_key_id", &c.AccessKeyID)
	p.String("secret_access_key", &c.SecretAccessKey)
	p.String("session_token", &c.SessionToken)
	p.String("prefix", &c.Prefix)
	p.Bool("fifo", &c.FIFO)
	p.Bool("content_based_dedup", &c.ContentBasedDeduplication)
	p.String("kms_key_id", &c.KMSKeyID)
	p.Duration("visibility_timeout", &c.VisibilityTimeout)
	p.Duration("wait_time", &c.WaitTime)
	p.Int("max_receive_count", &c.MaxReceiveCount)
	p.Duration("retention", &c.Retention)
	p.Int("max_in_flight", &c.MaxInFlight)
	if c.Endpoint != "" {
		switch e, err := url.Parse(c.Endpoint); {
		case err != nil || (e.Scheme != "http" && e.Scheme != "https") || e.Host == "":
			p.Fail("endpoint", errors.New("want an http:// or https:// URL"))
		case e.User != nil:
			p.Fail("endpoint", errors.New("user information is not allowed (credentials go in access_key_id and secret_access_key)"))
		}
	}
	if err := p.Err(); err != nil {
		return nil, err
	}
	if err := c.Validate(); err != nil {
		return nil, &driver.URLError{URL: driver.RedactURL(u.String()), Err: err}
	}
	return c, nil
}

type opener struct{}

// OpenURL implements driver.URLOpener.
func (opener) OpenURL(ctx context.Context, u *url.URL, opts *driver.OpenOptions) (driver.Driver, error) {
	c, err := configFromURL(u)
	if err != nil {
		return nil, err
	}
	if opts != nil {
		c.Logger = opts.Logger
	}
	d, err := Open(ctx, c)
	if err != nil {
		return nil, driver.RedactError(err, c.SecretAccessKey, c.SessionToken, c.AccessKeyID)
	}
	return d, nil
}

// CheckURL implements driver.URLChecker.
func (opener) CheckURL(u *url.URL) error {
	_, err := configFromURL(u)
	return err
}
