package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"net/url"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/marty-msf/eventbus/internal/testenv"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// The workload runs on every backend, each at the address of its test
// service; a backend whose service is not running is skipped, except under
// CI.
func TestEveryBackend(t *testing.T) {
	for _, c := range []struct {
		name string
		url  func(t *testing.T) string
	}{
		{"embedded", func(t *testing.T) string { return "embedded:" + t.TempDir() }},
		{"nats", func(t *testing.T) string { return testenv.NATSURL(t) + "?ack_wait=30s" }},
		{"kafka", func(t *testing.T) string { return "kafka://" + testenv.KafkaBrokers(t)[0] }},
		{"rabbitmq", func(t *testing.T) string { return testenv.AMQPURL(t) }},
		{"redis", func(t *testing.T) string { return testenv.RedisURL(t) }},
		{"aws", func(t *testing.T) string {
			t.Setenv("AWS_ACCESS_KEY_ID", "test")
			t.Setenv("AWS_SECRET_ACCESS_KEY", "test")
			return "aws://us-east-1?endpoint=" + url.QueryEscape(testenv.AWSEndpoint(t)) + "&prefix=ex" + unique()
		}},
	} {
		t.Run(c.name, func(t *testing.T) {
			u := c.url(t)
			ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
			defer cancel()
			var out strings.Builder
			if err := run(ctx, u, "ex"+unique(), &out); err != nil {
				t.Fatalf("%v\n%s", err, out.String())
			}
			got := out.String()
			for _, want := range []string{"dead letters: browsable", "received: command 1, command 2, command 3, event 1, event 2, event 3, stream user-7/1, stream user-7/2, stream user-7/3\n"} {
				if !strings.Contains(got, want) {
					t.Errorf("output lacks %q:\n%s", want, got)
				}
			}
			t.Log(got)
		})
	}
}

func unique() string {
	var b [4]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}
