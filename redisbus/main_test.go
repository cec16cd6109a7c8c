package redisbus_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"go.uber.org/goleak"

	"github.com/marty-msf/eventbus/internal/testenv"
	"github.com/marty-msf/eventbus/redisbus"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// testConfig returns the configuration of the Redis at REDIS_URL with a key
// prefix of this test's own, so that runs sharing the server never meet;
// every key under it is deleted when the test ends.
func testConfig(t testing.TB) *redisbus.Config {
	t.Helper()
	cfg, err := redisbus.ParseURL(testenv.RedisURL(t))
	if err != nil {
		t.Fatal(err)
	}
	var b [6]byte
	_, _ = rand.Read(b[:])
	cfg.KeyPrefix = "redisbus-test-" + hex.EncodeToString(b[:])
	t.Cleanup(func() { deleteKeys(t, cfg) })
	return cfg
}

// deleteKeys removes every key under cfg's prefix.
func deleteKeys(t testing.TB, cfg *redisbus.Config) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	rdb := redis.NewClient(&redis.Options{Addr: cfg.Addrs[0], Username: cfg.Username, Password: cfg.Password, DB: cfg.DB})
	defer rdb.Close()
	iter := rdb.Scan(ctx, 0, cfg.KeyPrefix+":*", 1000).Iterator()
	var keys []string
	for iter.Next(ctx) {
		keys = append(keys, iter.Val())
	}
	if err := iter.Err(); err != nil {
		t.Errorf("cleanup: scan: %v", err)
		return
	}
	for len(keys) > 0 {
		n := min(len(keys), 500)
		if err := rdb.Del(ctx, keys[:n]...).Err(); err != nil {
			t.Errorf("cleanup: del: %v", err)
			return
		}
		keys = keys[n:]
	}
}

// openDriver opens a driver on cfg, closed when the test ends.
func openDriver(t testing.TB, cfg *redisbus.Config) *redisbus.Driver {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	d, err := redisbus.Open(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = d.Close(context.Background()) })
	return d
}
