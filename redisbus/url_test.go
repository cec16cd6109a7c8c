package redisbus_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/marty-msf/eventbus/driver"
	"github.com/marty-msf/eventbus/redisbus"
)

func TestParseURL(t *testing.T) {
	c, err := redisbus.ParseURL("rediss://app:s3cret@redis.internal:6380/2?addrs=r2:6379,r3:6379&master_name=mymaster" +
		"&client_name=svc&dial_timeout=2s&pool_size=10&tls_ca_file=/ca.pem&tls_cert_file=/c.pem&tls_key_file=/k.pem" +
		"&tls_server_name=redis&tls_insecure_skip_verify=true&prefix=tenant1&max_len=5000&dead_letter_max_len=100" +
		"&ack_wait=1m&reclaim_interval=2s&block_time=50ms&max_message_size=4096&pipeline_workers=8" +
		"&sentinel_username=s&sentinel_password=sp")
	if err != nil {
		t.Fatal(err)
	}
	want := redisbus.Config{
		Addrs: []string{"redis.internal:6380", "r2:6379", "r3:6379"}, MasterName: "mymaster",
		Username: "app", Password: "s3cret", SentinelUsername: "s", SentinelPassword: "sp", DB: 2,
		TLS:        &redisbus.TLSConfig{CAFile: "/ca.pem", CertFile: "/c.pem", KeyFile: "/k.pem", ServerName: "redis", InsecureSkipVerify: true},
		ClientName: "svc", DialTimeout: 2 * time.Second, PoolSize: 10,
		Options: redisbus.Options{KeyPrefix: "tenant1", MaxLen: 5000, DeadLetterMaxLen: 100, AckWait: time.Minute,
			ReclaimInterval: 2 * time.Second, BlockTime: 50 * time.Millisecond, MaxMessageSize: 4096, PipelineWorkers: 8},
	}
	if got := *c; !equalConfig(got, want) {
		t.Fatalf("got %+v (TLS %+v), want %+v", got, got.TLS, want)
	}
	// URL is the inverse of ParseURL.
	again, err := redisbus.ParseURL(c.URL())
	if err != nil {
		t.Fatal(err)
	}
	if !equalConfig(*again, want) {
		t.Fatalf("round trip through %s gave %+v", c.URL(), again)
	}
}

func equalConfig(a, b redisbus.Config) bool {
	if (a.TLS == nil) != (b.TLS == nil) || a.TLS != nil && *a.TLS != *b.TLS {
		return false
	}
	a.TLS, b.TLS = nil, nil
	return strings.Join(a.Addrs, ",") == strings.Join(b.Addrs, ",") && func() bool {
		a.Addrs, b.Addrs = nil, nil
		return a.MasterName == b.MasterName && a.Username == b.Username && a.Password == b.Password &&
			a.SentinelUsername == b.SentinelUsername && a.SentinelPassword == b.SentinelPassword && a.DB == b.DB &&
			a.ClientName == b.ClientName && a.DialTimeout == b.DialTimeout && a.PoolSize == b.PoolSize && a.Options == b.Options
	}()
}

func TestParseURLErrors(t *testing.T) {
	for _, raw := range []string{
		"redis://:hunter22@localhost:6379?bogus=1",
		"redis://:hunter22@localhost:6379/x",
		"redis://:hunter22@localhost:6379?ack_wait=soon",
		"http://:hunter22@localhost:6379",
	} {
		_, err := redisbus.ParseURL(raw)
		if err == nil {
			t.Errorf("%s: no error", raw)
			continue
		}
		if strings.Contains(err.Error(), "hunter22") {
			t.Errorf("%s: the error shows the password: %v", raw, err)
		}
	}
	_, err := redisbus.ParseURL("redis://localhost?bogus=1")
	if !errors.Is(err, driver.ErrUnknownParam) {
		t.Errorf("unknown parameter: %v, want ErrUnknownParam", err)
	}
}

// TestOpenURL opens the registered schemes; a wrong password never shows in
// the error.
func TestOpenURL(t *testing.T) {
	cfg := testConfig(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	d, err := driver.OpenURL(ctx, cfg.URL(), nil)
	if err != nil {
		t.Fatal(err)
	}
	if d.Capabilities().Name != "redis" {
		t.Errorf("opened %s", d.Capabilities().Name)
	}
	_ = d.Close(ctx)
	bad := *cfg
	bad.Username, bad.Password = "nobody", "wrong-pass-xyz"
	_, err = driver.OpenURL(ctx, bad.URL(), nil)
	if err == nil {
		t.Fatal("a wrong password opened a connection")
	}
	if strings.Contains(err.Error(), "wrong-pass-xyz") {
		t.Errorf("the error shows the password: %v", err)
	}
	if err := driver.CheckURL("rediss://h:1?tls_ca_file=/nonexistent/ca.pem"); err == nil {
		t.Error("CheckURL accepted a CA file that does not exist")
	}
}
