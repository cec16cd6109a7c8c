package redisbus_test

import (
	"context"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/marty-msf/eventbus/driver"
	"github.com/marty-msf/eventbus/internal/testenv"
)

// redisCLI runs the real redis-cli against the test server.
func redisCLI(t *testing.T, args ...string) string {
	t.Helper()
	bin, err := exec.LookPath("redis-cli")
	if err != nil {
		if testenv.InCI() {
			t.Fatalf("redis-cli: %v", err)
		}
		t.Skipf("redis-cli is not installed: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, bin, append([]string{"-u", testenv.RedisURL(t), "--no-raw"}, args...)...).CombinedOutput()
	if err != nil {
		t.Fatalf("redis-cli %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

func ctxFor(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// TestInteropRedisCLIReadsOurs: redis-cli XRANGE shows a readable event and
// XREADGROUP in a group of its own reads it.
func TestInteropRedisCLIReadsOurs(t *testing.T) {
	d := openDriver(t, testConfig(t))
	dest := driver.NewDestination(driver.Event, "interop", "ours")
	m := &driver.Message{
		ID: "ours-1", Source: "redisbus-test", Type: "order.created", Time: time.Now(),
		DataContentType: "application/json", Key: "order-42",
		Header: map[string][]string{"X-Trace": {"a", "b"}},
		Data:   []byte(`{"order":42}`),
	}
	if err := d.Publish(ctxFor(t, 10*time.Second), dest, []*driver.Message{m}); err != nil {
		t.Fatal(err)
	}
	key := d.StreamKey(dest)
	out := redisCLI(t, "XRANGE", key, "-", "+")
	for _, want := range []string{`"ce_specversion"`, `"1.0"`, `"ce_id"`, `"ours-1"`, `"ce_type"`, `"order.created"`,
		`"content-type"`, `"application/json"`, `"ce_partitionkey"`, `"order-42"`, `"hdr:X-Trace"`, `"data"`, `"{\"order\":42}"`} {
		if !strings.Contains(out, want) {
			t.Errorf("XRANGE output lacks %s:\n%s", want, out)
		}
	}
	redisCLI(t, "XGROUP", "CREATE", key, "cli", "0")
	out = redisCLI(t, "XREADGROUP", "GROUP", "cli", "c1", "COUNT", "10", "STREAMS", key, ">")
	if !strings.Contains(out, `"ours-1"`) || !strings.Contains(out, `"{\"order\":42}"`) {
		t.Errorf("XREADGROUP output lacks the event:\n%s", out)
	}
}

// TestInteropRedisCLIWritesOurs: entries written by redis-cli XADD, in
// binary mode and in structured mode, reach a group member intact.
func TestInteropRedisCLIWritesOurs(t *testing.T) {
	d := openDriver(t, testConfig(t))
	dest := driver.NewDestination(driver.Event, "interop", "theirs")
	sub, err := d.Subscribe(ctxFor(t, 10*time.Second), dest, driver.SubscribeOptions{Group: "ours"})
	if err != nil {
		t.Fatal(err)
	}
	key := d.StreamKey(dest)
	redisCLI(t, "XADD", key, "*", "ce_specversion", "1.0", "ce_id", "cli-1", "ce_source", "redis-cli",
		"ce_type", "greeting", "ce_time", "2024-05-01T12:00:00Z", "ce_tenant", "acme",
		"content-type", "text/plain", "data", "hello")
	redisCLI(t, "XADD", key, "*", "content-type", "application/cloudevents+json",
		"data", `{"specversion":"1.0","id":"cli-2","source":"redis-cli","type":"greeting","datacontenttype":"application/json","data":{"n":2}}`)
	var got []*driver.Delivery
	for len(got) < 2 {
		ds, err := sub.Receive(ctxFor(t, 10*time.Second), 2)
		if err != nil {
			t.Fatalf("after %d deliveries: %v", len(got), err)
		}
		got = append(got, ds...)
	}
	if err := sub.Ack(ctxFor(t, 10*time.Second), got); err != nil {
		t.Fatal(err)
	}
	b, s := got[0].Message, got[1].Message
	if got[0].Err != nil || b.ID != "cli-1" || b.Source != "redis-cli" || b.Type != "greeting" || string(b.Data) != "hello" ||
		b.DataContentType != "text/plain" || b.Extensions["tenant"] != "acme" || !b.Time.Equal(time.Date(2024, 5, 1, 12, 0, 0, 0, time.UTC)) ||
		b.Mode != driver.Binary {
		t.Errorf("binary entry read as %+v (err %v)", b, got[0].Err)
	}
	if got[1].Err != nil || s.ID != "cli-2" || s.Type != "greeting" || string(s.Data) != `{"n":2}` || s.Mode != driver.Structured {
		t.Errorf("structured entry read as %+v (err %v)", s, got[1].Err)
	}
}

// TestInteropRawGoRedis: raw go-redis reads one of ours and writes one that
// we read.
func TestInteropRawGoRedis(t *testing.T) {
	cfg := testConfig(t)
	d := openDriver(t, cfg)
	rdb := d.Client()
	ctx := ctxFor(t, 10*time.Second)
	dest := driver.NewDestination(driver.Command, "billing", "charge")
	key := d.StreamKey(dest)
	if err := rdb.XGroupCreateMkStream(ctx, key, "raw", "$").Err(); err != nil {
		t.Fatal(err)
	}
	sub, err := d.Subscribe(ctx, dest, driver.SubscribeOptions{Group: "bus"})
	if err != nil {
		t.Fatal(err)
	}
	m := &driver.Message{ID: "cmd-1", Source: "bus", Type: "charge", Data: []byte("10 EUR")}
	if err := d.Publish(ctx, dest, []*driver.Message{m}); err != nil {
		t.Fatal(err)
	}
	res, err := rdb.XReadGroup(ctx, &redis.XReadGroupArgs{Group: "raw", Consumer: "r1", Streams: []string{key, ">"}, Count: 1}).Result()
	if err != nil {
		t.Fatal(err)
	}
	v := res[0].Messages[0].Values
	if v["ce_id"] != "cmd-1" || v["ce_type"] != "charge" || v["data"] != "10 EUR" {
		t.Errorf("raw go-redis read %v", v)
	}
	if err := rdb.XAdd(ctx, &redis.XAddArgs{Stream: key, Values: []any{
		"ce_specversion", "1.0", "ce_id", "raw-1", "ce_source", "raw", "ce_type", "charge", "data", "20 EUR"}}).Err(); err != nil {
		t.Fatal(err)
	}
	var ids []string
	for len(ids) < 2 {
		ds, err := sub.Receive(ctx, 2)
		if err != nil {
			t.Fatal(err)
		}
		for _, dl := range ds {
			if dl.Err != nil {
				t.Errorf("delivery %s: %v", dl.Message.ID, dl.Err)
			}
			ids = append(ids, dl.Message.ID+"="+string(dl.Message.Data))
		}
		_ = sub.Ack(ctx, ds)
	}
	if strings.Join(ids, ",") != "cmd-1=10 EUR,raw-1=20 EUR" {
		t.Errorf("received %v", ids)
	}
}

// TestMalformedEntryDelivered: an entry that is no event arrives with
// Delivery.Err, its data kept, so that the bus can dead-letter it.
func TestMalformedEntryDelivered(t *testing.T) {
	d := openDriver(t, testConfig(t))
	dest := driver.NewDestination(driver.Event, "interop", "malformed")
	ctx := ctxFor(t, 10*time.Second)
	sub, err := d.Subscribe(ctx, dest, driver.SubscribeOptions{Group: "g"})
	if err != nil {
		t.Fatal(err)
	}
	if err := d.Client().XAdd(ctx, &redis.XAddArgs{Stream: d.StreamKey(dest), Values: []any{"data", "not an event"}}).Err(); err != nil {
		t.Fatal(err)
	}
	ds, err := sub.Receive(ctx, 1)
	if err != nil {
		t.Fatal(err)
	}
	if ds[0].Err == nil || string(ds[0].Message.Data) != "not an event" {
		t.Fatalf("got err %v, data %q", ds[0].Err, ds[0].Message.Data)
	}
	_ = sub.Term(ctx, ds)
}
