package redisbus_test

import (
	"context"
	"testing"

	"github.com/redis/go-redis/v9"

	"github.com/marty-msf/eventbus/driver"
	"github.com/marty-msf/eventbus/driver/drivertest"
	"github.com/marty-msf/eventbus/redisbus"
)

// TestConformance runs the driver suite against the Redis at REDIS_URL
// (Debian's redis-server 7.0 on our machines). Crash closes the client
// underneath the driver: nothing is settled or given back.
func TestConformance(t *testing.T) {
	cfg := testConfig(t)
	drivertest.RunConformanceTests(t, drivertest.Harness{
		Open: func(ctx context.Context) (driver.Driver, error) { return redisbus.Open(ctx, cfg) },
		Crash: func(d driver.Driver) error {
			return d.(*redisbus.Driver).Client().Close()
		},
	})
}

// TestDeadLetters runs the dead-letter store suite. A body that is no
// envelope is an entry with a data field alone, as another program would
// write it.
func TestDeadLetters(t *testing.T) {
	cfg := testConfig(t)
	drivertest.RunDeadLetterTests(t, drivertest.Harness{
		Open: func(ctx context.Context) (driver.Driver, error) { return redisbus.Open(ctx, cfg) },
		InjectDeadLetter: func(ctx context.Context, d driver.Driver, dl driver.Destination, body []byte) error {
			rd := d.(*redisbus.Driver)
			return rd.Client().XAdd(ctx, &redis.XAddArgs{Stream: rd.StreamKey(dl), Values: []any{"data", body}}).Err()
		},
	})
}
