package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/marty-msf/eventbus/internal/testenv"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// Orders go through the embedded NATS server, the analytics stream and the
// audit events through Redis, as the file's routes say, and every message
// arrives.
func TestRoutesPickTheBackend(t *testing.T) {
	redisURL := testenv.RedisURL(t)
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	var b [4]byte
	_, _ = rand.Read(b[:])
	env := func(k string) (string, bool) {
		if k == "REDIS_URL" {
			return redisURL, true
		}
		return "", false
	}
	var out strings.Builder
	if err := run(ctx, t.TempDir(), "-"+hex.EncodeToString(b[:]), env, &out); err != nil {
		t.Fatalf("%v\n%s", err, out.String())
	}
	want := `backends: core, analytics
audit.login              went through analytics (redis)
order.placed             went through core (nats)
page.viewed              went through analytics (redis)
billing got order.placed
dashboard got page.viewed of user-1
dashboard got page.viewed of user-2
security got audit.login
`
	if out.String() != want {
		t.Errorf("output:\n%s\nwant:\n%s", out.String(), want)
	}
}
