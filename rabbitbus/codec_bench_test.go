package rabbitbus

import (
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/marty-msf/eventbus/driver"
)

// benchMessage is what the bus publishes for an event of the benchmarks: the
// required attributes, a time, 256 bytes of data.
func benchMessage() *driver.Message {
	return &driver.Message{ID: "0123456789abcdefghijkl", Source: "bench", Type: "bench.event",
		Time: time.Now(), Data: make([]byte, 256)}
}

func BenchmarkEncode(b *testing.B) {
	m := benchMessage()
	b.ReportAllocs()
	for b.Loop() {
		_ = encode(m, true)
	}
}

var decoded *driver.Message

func BenchmarkDecode(b *testing.B) {
	p := encode(benchMessage(), true)
	d := amqp.Delivery{Headers: p.Headers, ContentType: p.ContentType, MessageId: p.MessageId, Body: p.Body}
	b.ReportAllocs()
	for b.Loop() {
		m, err := decode(&d)
		if err != nil {
			b.Fatal(err)
		}
		decoded = m
	}
}
