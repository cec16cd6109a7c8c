package natsbus_test

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/marty-msf/eventbus/driver"
	"github.com/marty-msf/eventbus/natsbus"
)

// The publish and consume benchmarks compare the driver with the raw
// jetstream client on the same embedded server: 256-byte messages, 16
// concurrent publishers.
const benchPublishers = 16

// benchSeq keeps message ids unique across benchmark runs: the server drops
// a repeated id as a duplicate.
var benchSeq atomic.Int64

func benchMessage() *driver.Message {
	return &driver.Message{
		ID: "bench-" + strconv.FormatInt(benchSeq.Add(1), 10), Source: "/bench", Type: "bench.event",
		Time: time.Now(), DataContentType: "application/octet-stream", Data: make([]byte, 256),
	}
}

// benchServer starts a fresh server for one benchmark, with the RAW stream
// of the raw client's benchmarks.
func benchServer(b *testing.B) *natsbus.Server {
	srv := startServer(b, nil)
	nc, err := nats.Connect(srv.ClientURL())
	if err != nil {
		b.Fatal(err)
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)
	if _, err := js.CreateOrUpdateStream(context.Background(), jetstream.StreamConfig{Name: "RAW", Subjects: []string{"raw.>"}}); err != nil {
		b.Fatal(err)
	}
	return srv
}

func BenchmarkPublish(b *testing.B) {
	b.Run("raw-async", func(b *testing.B) {
		srv := benchServer(b)
		nc, err := nats.Connect(srv.ClientURL())
		if err != nil {
			b.Fatal(err)
		}
		defer nc.Close()
		js, _ := jetstream.New(nc)
		var n atomic.Int64
		data := make([]byte, 256)
		b.ResetTimer()
		var wg sync.WaitGroup
		for range benchPublishers {
			wg.Go(func() {
				for n.Add(1) <= int64(b.N) {
					for {
						_, err := js.PublishAsync("raw.bench", data)
						if err == nil {
							break
						}
						if !errors.Is(err, jetstream.ErrTooManyStalledMsgs) {
							b.Error(err)
							return
						}
					}
				}
			})
		}
		wg.Wait()
		<-js.PublishAsyncComplete()
	})
	for _, ceHeaders := range []bool{false, true} {
		b.Run(fmt.Sprintf("raw-batch-100-wait/ce-headers=%v", ceHeaders), func(b *testing.B) {
			srv := benchServer(b)
			nc, err := nats.Connect(srv.ClientURL())
			if err != nil {
				b.Fatal(err)
			}
			defer nc.Close()
			js, _ := jetstream.New(nc)
			var n atomic.Int64
			b.ResetTimer()
			var wg sync.WaitGroup
			for range benchPublishers {
				wg.Go(func() {
					fs := make([]jetstream.PubAckFuture, 100)
					for n.Add(100) <= int64(b.N)+99 {
						for j := range fs {
							id := "r" + strconv.FormatInt(benchSeq.Add(1), 10)
							h := nats.Header{"Nats-Msg-Id": {id}}
							if ceHeaders {
								h["ce-specversion"] = []string{"1.0"}
								h["ce-id"] = []string{id}
								h["ce-source"] = []string{"/bench"}
								h["ce-type"] = []string{"bench.event"}
								h["ce-time"] = []string{time.Now().UTC().Format(time.RFC3339Nano)}
								h["ce-datacontenttype"] = []string{"application/octet-stream"}
							}
							m := &nats.Msg{Subject: "raw.bench", Data: make([]byte, 256), Header: h}
							if fs[j], err = js.PublishMsgAsync(m); err != nil {
								b.Error(err)
								return
							}
						}
						for _, f := range fs {
							select {
							case <-f.Ok():
							case err := <-f.Err():
								b.Error(err)
								return
							}
						}
					}
				})
			}
			wg.Wait()
		})
	}
	for _, batch := range []int{1, 10, 100} {
		b.Run(fmt.Sprintf("driver-batch-%d", batch), func(b *testing.B) {
			srv := benchServer(b)
			d := openDriver(b, serverConfig(srv))
			dest := driver.NewDestination(driver.Event, "bench", strconv.Itoa(batch))
			var n atomic.Int64
			b.ResetTimer()
			var wg sync.WaitGroup
			for range benchPublishers {
				wg.Go(func() {
					msgs := make([]*driver.Message, batch)
					for {
						start := n.Add(int64(batch)) - int64(batch)
						if start >= int64(b.N) {
							return
						}
						for j := range msgs {
							msgs[j] = benchMessage()
						}
						if err := d.Publish(context.Background(), dest, msgs); err != nil {
							b.Error(err)
							return
						}
					}
				})
			}
			wg.Wait()
		})
	}
}

func BenchmarkConsume(b *testing.B) {
	srv := benchServer(b)
	ctx := context.Background()
	d := openDriver(b, serverConfig(srv))
	fill := func(b *testing.B, dest driver.Destination) {
		b.Helper()
		msgs := make([]*driver.Message, 0, 1000)
		for i := 0; i < b.N; i++ {
			msgs = append(msgs, benchMessage())
			if len(msgs) == cap(msgs) || i == b.N-1 {
				if err := d.Publish(ctx, dest, msgs); err != nil {
					b.Fatal(err)
				}
				msgs = msgs[:0]
			}
		}
	}
	b.Run("raw-consume", func(b *testing.B) {
		b.StopTimer()
		dest := driver.NewDestination(driver.Event, "consume", "raw", strconv.Itoa(b.N))
		fill(b, dest)
		js := d.JetStream()
		cons, err := js.CreateConsumer(ctx, d.StreamName(driver.Event), jetstream.ConsumerConfig{
			AckPolicy: jetstream.AckExplicitPolicy, FilterSubject: dest.Name, DeliverPolicy: jetstream.DeliverAllPolicy,
		})
		if err != nil {
			b.Fatal(err)
		}
		done := make(chan struct{})
		var got atomic.Int64
		b.StartTimer()
		cc, err := cons.Consume(func(m jetstream.Msg) {
			_ = m.Ack()
			if got.Add(1) == int64(b.N) {
				close(done)
			}
		})
		if err != nil {
			b.Fatal(err)
		}
		<-done
		b.StopTimer()
		cc.Stop()
		<-cc.Closed()
	})
	b.Run("driver-receive", func(b *testing.B) {
		b.StopTimer()
		dest := driver.NewDestination(driver.Event, "consume", "driver", strconv.Itoa(b.N))
		fill(b, dest)
		sub, err := d.Subscribe(ctx, dest, driver.SubscribeOptions{Group: "bench", StartAt: driver.StartFirst})
		if err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
		for got := 0; got < b.N; {
			ds, err := sub.Receive(ctx, 256)
			if err != nil {
				b.Fatal(err)
			}
			if err := sub.Ack(ctx, ds); err != nil {
				b.Fatal(err)
			}
			got += len(ds)
		}
		b.StopTimer()
		_ = sub.Close(ctx)
	})
}
