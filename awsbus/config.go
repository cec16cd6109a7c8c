package awsbus

import (
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
)

// Config says where the driver connects and how it lays out topics and
// queues. The zero value of every field is its documented default; only the
// region is needed (from Region, the URL or the standard AWS chain).
type Config struct {
	// Region is the AWS region. Empty: the standard chain (AWS_REGION,
	// the shared config file's profile).
	Region string

	// Endpoint overrides the SNS and SQS endpoints (an emulator such as
	// fauxqs, a VPC endpoint): http://127.0.0.1:4566.
	Endpoint string

	// AccessKeyID, SecretAccessKey and SessionToken are optional explicit
	// credentials. Empty: the standard AWS credential chain (environment,
	// shared files, SSO, web identity, ECS/EC2 roles). They are never logged
	// nor written into an error.
	AccessKeyID     string
	SecretAccessKey string
	SessionToken    string

	// Profile selects a shared config profile for the standard chain.
	Profile string

	// Prefix starts every topic and queue name this driver creates, so that
	// several applications (or test runs) share an account without meeting.
	// Letters, digits, '-' and '_', at most 32 characters. Default
	// "eventbus".
	Prefix string

	// FIFO puts events, commands and broadcasts on FIFO topics and queues:
	// ordered per key (the key is the message group id) and de-duplicated.
	// Streams are FIFO whatever FIFO says.
	FIFO bool

	// ContentBasedDeduplication lets SNS and SQS de-duplicate FIFO messages
	// by a hash of their body instead of the (source, id) de-duplication id
	// the driver sets by default.
	ContentBasedDeduplication bool

	// KMSKeyID enables server-side encryption of topics and queues with
	// this KMS key (id, alias or ARN; "alias/aws/sns" and "alias/aws/sqs" are
	// the AWS-managed keys).
	KMSKeyID string

	// VisibilityTimeout is how long a received message stays hidden from the
	// other members of its group when the process holding it dies; the
	// driver extends it while the message waits or runs. It is the queues'
	// default, and a subscription's AckWait overrides it. Whole seconds,
	// 2 s to 12 h. Default 30 s.
	VisibilityTimeout time.Duration

	// WaitTime bounds one long poll of ReceiveMessage. Closing a subscription
	// waits for the poll in flight (unless its context ends first), so
	// this is also how long a Close may take. Whole seconds, 1 s to 20 s.
	// Default 1 s.
	WaitTime time.Duration

	// MaxReceiveCount, when positive, gives every group queue a redrive
	// policy: a message received that many times moves to the dead-letter
	// queue of its destination. Zero leaves dead-lettering to the bus.
	MaxReceiveCount int

	// Retention is how long SQS keeps an unconsumed message: 1 min to
	// 14 days. Zero keeps SQS's default (4 days).
	Retention time.Duration

	// MaxInFlight is the default bound on the deliveries a subscription holds
	// (prefetched plus handed out and unsettled). Default 100.
	MaxInFlight int

	// AWSConfig, when set, is used as it is instead of loading the standard
	// configuration: Region, Endpoint, the credentials and Profile are then
	// ignored. The driver does not close its HTTP client.
	AWSConfig *aws.Config

	// Logger receives the driver's operational log; nil discards it.
	Logger *slog.Logger
}

const (
	defaultPrefix      = "eventbus"
	defaultVisibility  = 30 * time.Second
	defaultWaitTime    = time.Second
	defaultMaxInFlight = 100
	minVisibility      = 2 * time.Second
	maxVisibility      = 12 * time.Hour
	maxPrefixLen       = 32
)

// Validate reports every problem of c at once.
func (c *Config) Validate() error {
	var errs []error
	bad := func(field, format string, args ...any) {
		errs = append(errs, fmt.Errorf("awsbus: config %s: %s", field, fmt.Sprintf(format, args...)))
	}
	if c.Prefix != "" {
		if len(c.Prefix) > maxPrefixLen {
			bad("Prefix", "longer than %d characters", maxPrefixLen)
		}
		for i := 0; i < len(c.Prefix); i++ {
			if !nameChar(c.Prefix[i]) {
				bad("Prefix", "character %q not allowed (letters, digits, '-', '_')", c.Prefix[i])
				break
			}
		}
	}
	wholeSeconds := func(field string, d, lo, hi time.Duration) {
		if d == 0 {
			return
		}
		if d%time.Second != 0 || d < lo || d > hi {
			bad(field, "%s: want whole seconds from %s to %s", d, lo, hi)
		}
	}
	wholeSeconds("VisibilityTimeout", c.VisibilityTimeout, minVisibility, maxVisibility)
	wholeSeconds("WaitTime", c.WaitTime, time.Second, 20*time.Second)
	wholeSeconds("Retention", c.Retention, time.Minute, 14*24*time.Hour)
	if c.MaxReceiveCount < 0 || c.MaxReceiveCount > 1000 {
		bad("MaxReceiveCount", "%d: want 0 (none) to 1000", c.MaxReceiveCount)
	}
	if c.MaxInFlight < 0 {
		bad("MaxInFlight", "%d is negative", c.MaxInFlight)
	}
	if (c.AccessKeyID == "") != (c.SecretAccessKey == "") {
		bad("AccessKeyID", "explicit credentials need both AccessKeyID and SecretAccessKey")
	}
	if c.Endpoint != "" {
		// The endpoint is not shown: it may carry user information.
		switch e, err := url.Parse(c.Endpoint); {
		case err != nil || (e.Scheme != "http" && e.Scheme != "https") || e.Host == "":
			bad("Endpoint", "want an http:// or https:// URL")
		case e.User != nil:
			bad("Endpoint", "user information is not allowed (credentials go in AccessKeyID and SecretAccessKey, or the AWS chain)")
		}
	}
	return errors.Join(errs...)
}

// String describes c without its credentials (AccessKeyID, SecretAccessKey
// and SessionToken show as REDACTED), so that printing a Config with fmt
// shows none.
func (c Config) String() string {
	return fmt.Sprintf("awsbus.Config{Region:%q Endpoint:%q Profile:%q AccessKeyID:%s SecretAccessKey:%s SessionToken:%s Prefix:%q FIFO:%v ContentBasedDeduplication:%v KMSKeyID:%q VisibilityTimeout:%v WaitTime:%v MaxReceiveCount:%d Retention:%v MaxInFlight:%d AWSConfig:%v}",
		c.Region, c.Endpoint, c.Profile, redacted(c.AccessKeyID), redacted(c.SecretAccessKey), redacted(c.SessionToken), c.Prefix,
		c.FIFO, c.ContentBasedDeduplication, c.KMSKeyID, c.VisibilityTimeout, c.WaitTime, c.MaxReceiveCount, c.Retention,
		c.MaxInFlight, c.AWSConfig != nil)
}

// LogValue implements slog.LogValuer: a Config logged with slog shows no
// credential.
func (c Config) LogValue() slog.Value { return slog.StringValue(c.String()) }

func redacted(s string) string {
	if s == "" {
		return `""`
	}
	return "REDACTED"
}

func (c *Config) prefix() string {
	if c.Prefix == "" {
		return defaultPrefix
	}
	return c.Prefix
}

func (c *Config) visibility() time.Duration {
	if c.VisibilityTimeout == 0 {
		return defaultVisibility
	}
	return c.VisibilityTimeout
}

func (c *Config) waitTime() time.Duration {
	if c.WaitTime == 0 {
		return defaultWaitTime
	}
	return c.WaitTime
}

func (c *Config) maxInFlight() int {
	if c.MaxInFlight == 0 {
		return defaultMaxInFlight
	}
	return c.MaxInFlight
}
