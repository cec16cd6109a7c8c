// Package testenv tells tests where the real services they talk to live.
//
// Each accessor (NATSURL, DatabaseURL, RedisURL, AMQPURL, KafkaBrokers,
// AWSEndpoint) reads one environment variable, falls back to the local
// default that scripts/services.sh starts, and checks that the service
// accepts TCP connections before returning. The check dials for at most
// about five seconds (each dial at most two seconds), so a service that is
// still starting is waited for briefly.
//
// When the service cannot be reached the test does not continue:
//
//   - with the CI environment variable non-empty (see InCI) the test fails
//     through t.Fatalf, because a missing service in CI is a broken build,
//     not a reason to test less;
//   - otherwise the test is skipped through t.Skipf.
//
// Both messages name the environment variable to set and the script that
// starts the service locally. Messages never contain credentials: every
// address is passed through Redact first. The returned value is the address
// as configured, credentials included, for the test's client to use.
//
// An unreachable address is remembered for the life of the test binary, so
// a package with many tests against a missing service waits once, not once
// per test. Reachable addresses are checked again on every call. All
// functions are safe for concurrent use by parallel tests.
package testenv

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"
)

// Environment variables read by this package.
const (
	EnvCI          = "CI"
	EnvNATS        = "NATS_URL"
	EnvDatabase    = "DATABASE_URL"
	EnvRedis       = "REDIS_URL"
	EnvAMQP        = "AMQP_URL"
	EnvKafka       = "KAFKA_BROKERS"
	EnvAWSEndpoint = "AWS_ENDPOINT_URL"
)

// Local defaults: where scripts/services.sh runs each service.
const (
	DefaultNATSURL      = "nats://127.0.0.1:4222"
	DefaultDatabaseURL  = "postgres://postgres@127.0.0.1:5432/test?sslmode=disable"
	DefaultRedisURL     = "redis://127.0.0.1:6379/0"
	DefaultAMQPURL      = "amqp://guest:guest@127.0.0.1:5672/"
	DefaultKafkaBrokers = "127.0.0.1:9092"
	DefaultAWSEndpoint  = "http://127.0.0.1:4566"
)

// servicesScript starts the local services; messages name it, relative to
// the repository root, with the service to pass it.
const servicesScript = "scripts/services.sh"

// service describes how to find and probe one kind of service.
type service struct {
	name     string // human name for messages
	env      string
	fallback string
	script   string // argument to scripts/services.sh
	// endpoints turns the configured value into network/address pairs.
	endpoints func(value string) ([]endpoint, error)
}

type endpoint struct {
	network string // "tcp" or "unix"
	address string
}

func (e endpoint) String() string {
	if e.network == "tcp" {
		return e.address
	}
	return e.network + ":" + e.address
}

var (
	natsService = service{
		name: "NATS", env: EnvNATS, fallback: DefaultNATSURL, script: "nats",
		endpoints: func(v string) ([]endpoint, error) { return urlList(v, "nats", natsPorts) },
	}
	databaseService = service{
		name: "PostgreSQL", env: EnvDatabase, fallback: DefaultDatabaseURL, script: "postgres",
		endpoints: postgresEndpoints,
	}
	redisService = service{
		name: "Redis", env: EnvRedis, fallback: DefaultRedisURL, script: "redis",
		endpoints: func(v string) ([]endpoint, error) { return urlList(v, "redis", redisPorts) },
	}
	amqpService = service{
		name: "RabbitMQ", env: EnvAMQP, fallback: DefaultAMQPURL, script: "rabbitmq",
		endpoints: func(v string) ([]endpoint, error) { return urlList(v, "amqp", amqpPorts) },
	}
	kafkaService = service{
		name: "Kafka", env: EnvKafka, fallback: DefaultKafkaBrokers, script: "kafka",
		endpoints: kafkaEndpoints,
	}
	awsService = service{
		name: "AWS (SNS/SQS)", env: EnvAWSEndpoint, fallback: DefaultAWSEndpoint, script: "aws",
		endpoints: func(v string) ([]endpoint, error) { return urlList(v, "http", httpPorts) },
	}
)

// NATSURL returns the NATS server URL from NATS_URL (default
// nats://127.0.0.1:4222). The value may list several comma-separated URLs;
// the service counts as reachable when any of them is.
func NATSURL(t testing.TB) string {
	t.Helper()
	return natsService.require(t, defaultProbe)
}

// DatabaseURL returns the PostgreSQL connection string from DATABASE_URL
// (default postgres://postgres@127.0.0.1:5432/test?sslmode=disable). URL and
// keyword/value forms are accepted.
func DatabaseURL(t testing.TB) string {
	t.Helper()
	return databaseService.require(t, defaultProbe)
}

// RedisURL returns the Redis URL from REDIS_URL (default
// redis://127.0.0.1:6379/0).
func RedisURL(t testing.TB) string {
	t.Helper()
	return redisService.require(t, defaultProbe)
}

// AMQPURL returns the RabbitMQ URL from AMQP_URL (default
// amqp://guest:guest@127.0.0.1:5672/).
func AMQPURL(t testing.TB) string {
	t.Helper()
	return amqpService.require(t, defaultProbe)
}

// KafkaBrokers returns the seed brokers from the comma-separated KAFKA_BROKERS
// (default 127.0.0.1:9092), ready for kgo.SeedBrokers. The service counts as
// reachable when any broker is.
func KafkaBrokers(t testing.TB) []string {
	t.Helper()
	return splitList(kafkaService.require(t, defaultProbe))
}

// AWSEndpoint returns the SNS/SQS endpoint URL from AWS_ENDPOINT_URL
// (default http://127.0.0.1:4566).
func AWSEndpoint(t testing.TB) string {
	t.Helper()
	return awsService.require(t, defaultProbe)
}

// InCI reports whether the tests run in continuous integration, that is
// whether the CI environment variable is non-empty. In CI an unreachable
// service fails the test instead of skipping it.
func InCI() bool {
	return os.Getenv(EnvCI) != ""
}

// probe bounds the reachability check; tests of this package shorten it.
type probe struct {
	dialTimeout time.Duration // one dial
	budget      time.Duration // all attempts together
	pause       time.Duration // between attempts
}

var defaultProbe = probe{dialTimeout: 2 * time.Second, budget: 5 * time.Second, pause: 250 * time.Millisecond}

// unreachable remembers failed checks by configured value so that the many
// tests of one package wait for a missing service once, not each in turn.
var unreachable sync.Map // string → error

func (s service) value() string {
	if v := strings.TrimSpace(os.Getenv(s.env)); v != "" {
		return v
	}
	return s.fallback
}

// require returns the configured value when the service answers, and
// otherwise ends the test with Fatalf in CI or Skipf elsewhere.
func (s service) require(t testing.TB, p probe) string {
	t.Helper()
	value := s.value()
	err := s.check(value, p)
	if err == nil {
		return value
	}
	msg := fmt.Sprintf("testenv: %s not reachable at %s: %v; start it with %q or point %s at a running one",
		s.name, Redact(value), err, servicesScript+" "+s.script, s.env)
	if InCI() {
		t.Fatalf("%s (%s is set, so a missing service fails the test)", msg, EnvCI)
	} else {
		t.Skipf("%s (set %s=1 to fail instead of skip)", msg, EnvCI)
	}
	return value
}

func (s service) check(value string, p probe) error {
	key := s.env + "\x00" + value
	if cached, ok := unreachable.Load(key); ok {
		return cached.(error)
	}
	eps, err := s.endpoints(value)
	if err != nil {
		err = fmt.Errorf("cannot parse %s: %w", s.env, err)
	} else {
		err = reach(eps, p)
	}
	if err != nil {
		unreachable.Store(key, err)
	}
	return err
}

// reach dials every endpoint until one accepts or the budget is spent.
func reach(eps []endpoint, p probe) error {
	ctx, cancel := context.WithTimeout(context.Background(), p.budget)
	defer cancel()
	var last error
	for {
		for _, ep := range eps {
			conn, err := dial(ctx, ep, p.dialTimeout)
			if err == nil {
				conn.Close()
				return nil
			}
			last = err
		}
		select {
		case <-ctx.Done():
			return last
		case <-time.After(p.pause):
		}
	}
}

func dial(ctx context.Context, ep endpoint, timeout time.Duration) (net.Conn, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var d net.Dialer
	return d.DialContext(ctx, ep.network, ep.address)
}

// Program returns the path of the installed program name: without it the
// test is skipped, or fails when CI is set.
func Program(t testing.TB, name string) string {
	t.Helper()
	path, err := exec.LookPath(name)
	if err != nil {
		if InCI() {
			t.Fatalf("%s is not installed: %v (CI is set, so a missing service fails the test; scripts/services.sh installs it)", name, err)
		}
		t.Skipf("%s is not installed: %v (set CI=1 to fail instead of skip)", name, err)
	}
	return path
}
