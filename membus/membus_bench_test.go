package membus_test

import (
	"context"
	"testing"

	"github.com/marty-msf/eventbus/driver"
	"github.com/marty-msf/eventbus/membus"
)

// benchPublishReceive publishes b.N messages in batches of batch while one
// consumer receives up to 64 at a time and acks each batch.
func benchPublishReceive(b *testing.B, batch int) {
	ctx := context.Background()
	d := membus.New(nil)
	defer d.Close(ctx)
	sub, err := d.Subscribe(ctx, events, driver.SubscribeOptions{Group: "bench"})
	if err != nil {
		b.Fatal(err)
	}
	m := &driver.Message{ID: "id", Source: "bench", Type: "order.created", Key: "k", Data: make([]byte, 256)}
	ms := make([]*driver.Message, batch)
	for i := range ms {
		ms[i] = m
	}
	done := make(chan error, 1)
	b.ReportAllocs()
	b.ResetTimer()
	go func() {
		for n := 0; n < b.N; {
			ds, err := sub.Receive(ctx, 64)
			if err != nil {
				done <- err
				return
			}
			if err := sub.Ack(ctx, ds); err != nil {
				done <- err
				return
			}
			n += len(ds)
		}
		done <- nil
	}()
	for sent := 0; sent < b.N; sent += batch {
		if err := d.Publish(ctx, events, ms[:min(batch, b.N-sent)]); err != nil {
			b.Fatal(err)
		}
	}
	if err := <-done; err != nil {
		b.Fatal(err)
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "msg/s")
}

func BenchmarkPublishReceive(b *testing.B)        { benchPublishReceive(b, 1) }
func BenchmarkPublishReceiveBatch64(b *testing.B) { benchPublishReceive(b, 64) }
