package kafkabus_test

import (
	"context"
	"testing"
	"time"

	"github.com/marty-msf/eventbus/driver"
	"github.com/marty-msf/eventbus/internal/testenv"
)

// TestStandaloneBroker talks to the broker of KAFKA_BROKERS (by default the
// standalone kfake that scripts/services.sh starts on 127.0.0.1:9092, which
// kcat, the CLI and the examples use): a group receives what is published
// after it subscribed, intact.
func TestStandaloneBroker(t *testing.T) {
	t.Parallel()
	brokers := testenv.KafkaBrokers(t)
	ctx := ctxFor(t, time.Minute)
	cfg := testConfig()
	cfg.Brokers = brokers
	d := openDriver(t, cfg)
	dst := driver.NewDestination(driver.Event, "standalone."+unique())
	sub, err := d.Subscribe(ctx, dst, driver.SubscribeOptions{Group: "smoke"})
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close(context.Background())
	m := &driver.Message{ID: "smoke-1", Source: "/kafkabus/test", Type: "smoke", Key: "k", Data: []byte(`{"ok":true}`), DataContentType: "application/json"}
	if err := d.Publish(ctx, dst, []*driver.Message{m}); err != nil {
		t.Fatal(err)
	}
	ds, err := sub.Receive(ctx, 1)
	if err != nil {
		t.Fatal(err)
	}
	got := ds[0].Message
	if got.ID != m.ID || got.Type != m.Type || got.Key != m.Key || string(got.Data) != string(m.Data) || got.DataContentType != m.DataContentType || ds[0].Attempt != 1 {
		t.Errorf("received %+v (attempt %d), want %+v", got, ds[0].Attempt, m)
	}
	if err := sub.Ack(ctx, ds); err != nil {
		t.Fatal(err)
	}
}
