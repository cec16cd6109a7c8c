package kafkabus_test

import (
	"bytes"
	"context"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/IBM/sarama"
	cekafka "github.com/cloudevents/sdk-go/protocol/kafka_sarama/v2"
	cloudevents "github.com/cloudevents/sdk-go/v2"
	"github.com/cloudevents/sdk-go/v2/binding"

	"github.com/marty-msf/eventbus/driver"
	"github.com/marty-msf/eventbus/internal/testenv"
	"github.com/marty-msf/eventbus/kafkabus"
)

// interopDriver opens a driver whose topics have one partition, so that an
// outside client reads them from one place.
func interopDriver(t *testing.T) *kafkabus.Driver {
	cfg := testConfig()
	cfg.Partitions = 1
	return openDriver(t, cfg)
}

func interopMessage(mode driver.ContentMode) *driver.Message {
	return &driver.Message{
		ID: "interop-" + time.Now().Format("150405.000000"), Source: "/orders", Type: "order.created",
		Subject: "o-1", Time: time.Date(2026, 1, 2, 3, 4, 5, 6000000, time.UTC), DataContentType: "application/json",
		CorrelationID: "c-1", Extensions: map[string]string{"tenant": "acme"}, Key: "customer-7",
		Header: map[string][]string{"X-Trace": {"a", "b"}}, Data: []byte(`{"total":42}`), Mode: mode,
	}
}

// receiveOne receives one delivery, failing the test after 10 s.
func receiveOne(t *testing.T, sub driver.Subscription) *driver.Delivery {
	t.Helper()
	ds, err := sub.Receive(ctxFor(t, 10*time.Second), 1)
	if err != nil {
		t.Fatalf("Receive: %v", err)
	}
	return ds[0]
}

// TestCloudEventsSDKReadsOurs reads our events, in both content modes, with
// the CloudEvents Go SDK's Kafka binding over a sarama consumer.
func TestCloudEventsSDKReadsOurs(t *testing.T) {
	d := interopDriver(t)
	for _, mode := range []driver.ContentMode{driver.Binary, driver.Structured} {
		dst := driver.NewDestination(driver.Event, "interop", "sdkreads", unique())
		m := interopMessage(mode)
		if err := d.Publish(ctxFor(t, 10*time.Second), dst, []*driver.Message{m}); err != nil {
			t.Fatal(err)
		}
		cm := saramaConsumeOne(t, d.Topic(dst))
		if string(cm.Key) != m.Key {
			t.Errorf("mode %d: key %q, want %q", mode, cm.Key, m.Key)
		}
		ev, err := binding.ToEvent(context.Background(), cekafka.NewMessageFromConsumerMessage(cm))
		if err != nil {
			t.Fatalf("mode %d: the SDK cannot read our event: %v", mode, err)
		}
		if ev.ID() != m.ID || ev.Source() != m.Source || ev.Type() != m.Type || ev.Subject() != m.Subject ||
			!ev.Time().Equal(m.Time) || ev.DataContentType() != m.DataContentType || string(ev.Data()) != string(m.Data) {
			t.Errorf("mode %d: the SDK read %s", mode, ev)
		}
		ext := ev.Extensions()
		if ext["tenant"] != "acme" || ext["correlationid"] != "c-1" || ext["partitionkey"] != m.Key {
			t.Errorf("mode %d: extensions %v", mode, ext)
		}
		t.Logf("mode %d: the CloudEvents SDK read %s/%s with key %q", mode, ev.Type(), ev.ID(), cm.Key)
	}
}

// TestCloudEventsSDKWritesOne sends events with the SDK's Kafka sender, in
// both content modes, and receives them with the driver.
func TestCloudEventsSDKWritesOne(t *testing.T) {
	d := interopDriver(t)
	for _, structured := range []bool{false, true} {
		dst := driver.NewDestination(driver.Event, "interop", "sdkwrites", unique())
		ctx := ctxFor(t, 10*time.Second)
		sub, err := d.Subscribe(ctx, dst, driver.SubscribeOptions{Group: "g", StartAt: driver.StartFirst})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = sub.Close(context.Background()) })
		sender, err := cekafka.NewSender(cluster.ListenAddrs(), saramaConfig(), d.Topic(dst))
		if err != nil {
			t.Fatal(err)
		}
		ev := cloudevents.NewEvent()
		ev.SetID("sdk-1")
		ev.SetSource("/sdk")
		ev.SetType("sdk.sent")
		ev.SetExtension("partitionkey", "k-9")
		ev.SetExtension("tenant", "acme")
		if err := ev.SetData(cloudevents.ApplicationJSON, map[string]int{"n": 1}); err != nil {
			t.Fatal(err)
		}
		sctx := ctx
		if structured {
			sctx = binding.WithForceStructured(ctx)
		}
		if err := sender.Send(sctx, binding.ToMessage(&ev)); err != nil {
			t.Fatal(err)
		}
		_ = sender.Close(ctx)
		got := receiveOne(t, sub)
		m := got.Message
		if got.Err != nil || m.ID != "sdk-1" || m.Source != "/sdk" || m.Type != "sdk.sent" || m.Key != "k-9" ||
			m.Extensions["tenant"] != "acme" || m.DataContentType != "application/json" || string(m.Data) != `{"n":1}` {
			t.Errorf("structured %v: received %+v (err %v)", structured, m, got.Err)
		}
		if want := map[bool]driver.ContentMode{false: driver.Binary, true: driver.Structured}[structured]; m.Mode != want {
			t.Errorf("structured %v: Mode %d", structured, m.Mode)
		}
		if err := sub.Ack(ctx, []*driver.Delivery{got}); err != nil {
			t.Fatal(err)
		}
	}
}

func saramaConfig() *sarama.Config {
	c := sarama.NewConfig()
	c.Version = sarama.V2_8_0_0
	c.Producer.Return.Successes = true
	c.Producer.RequiredAcks = sarama.WaitForAll
	return c
}

// saramaConsumeOne reads the first record of partition 0 of topic.
func saramaConsumeOne(t *testing.T, topic string) *sarama.ConsumerMessage {
	t.Helper()
	c, err := sarama.NewConsumer(cluster.ListenAddrs(), saramaConfig())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	pc, err := c.ConsumePartition(topic, 0, sarama.OffsetOldest)
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	select {
	case cm := <-pc.Messages():
		return cm
	case <-time.After(10 * time.Second):
		t.Fatalf("sarama received nothing from %s", topic)
		return nil
	}
}

// kcat returns the path of Debian's kcat: a missing one skips the test, or
// fails it in CI (scripts/services.sh kcat installs it).
func kcat(t *testing.T) string {
	t.Helper()
	path, err := exec.LookPath("kcat")
	if err != nil {
		msg := "kcat is not installed; install it with scripts/services.sh kcat"
		if testenv.InCI() {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
	return path
}

// TestKcatReadsOurs has kcat consume one of our events and print its key,
// headers and value.
func TestKcatReadsOurs(t *testing.T) {
	bin := kcat(t)
	d := interopDriver(t)
	dst := driver.NewDestination(driver.Event, "interop", "kcatreads", unique())
	m := interopMessage(driver.Binary)
	if err := d.Publish(ctxFor(t, 10*time.Second), dst, []*driver.Message{m}); err != nil {
		t.Fatal(err)
	}
	ctx := ctxFor(t, 30*time.Second)
	out, err := exec.CommandContext(ctx, bin, "-C", "-b", cluster.ListenAddrs()[0], "-t", d.Topic(dst),
		"-o", "beginning", "-c", "1", "-e", "-q", "-f", "key=%k\nheaders=%h\nvalue=%s\n").CombinedOutput()
	if err != nil {
		t.Fatalf("kcat: %v\n%s", err, out)
	}
	t.Logf("kcat printed:\n%s", out)
	for _, want := range []string{
		"key=customer-7", "ce_specversion=1.0", "ce_id=" + m.ID, "ce_source=/orders", "ce_type=order.created",
		"ce_time=2026-01-02T03:04:05.006Z", "content-type=application/json", "ce_tenant=acme",
		"ce_correlationid=c-1", "X-Trace=a", "X-Trace=b", `value={"total":42}`,
	} {
		if !bytes.Contains(out, []byte(want)) {
			t.Errorf("kcat output lacks %q", want)
		}
	}
}

// TestKcatWritesOne has kcat produce a binary-mode CloudEvent that the
// driver receives.
func TestKcatWritesOne(t *testing.T) {
	bin := kcat(t)
	d := interopDriver(t)
	dst := driver.NewDestination(driver.Command, "interop", "kcatwrites", unique())
	ctx := ctxFor(t, 30*time.Second)
	sub, err := d.Subscribe(ctx, dst, driver.SubscribeOptions{Group: "svc"})
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close(context.Background())
	cmd := exec.CommandContext(ctx, bin, "-P", "-b", cluster.ListenAddrs()[0], "-t", d.Topic(dst), "-k", "k-1",
		"-H", "ce_specversion=1.0", "-H", "ce_id=kcat-1", "-H", "ce_source=/shell", "-H", "ce_type=shell.typed",
		"-H", "content-type=text/plain", "-H", "ce_tenant=acme", "-H", "Origin=kcat")
	cmd.Stdin = strings.NewReader("hello from kcat\n")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("kcat: %v\n%s", err, out)
	}
	got := receiveOne(t, sub)
	m := got.Message
	if got.Err != nil || m.ID != "kcat-1" || m.Source != "/shell" || m.Type != "shell.typed" || m.Key != "k-1" ||
		m.DataContentType != "text/plain" || m.Extensions["tenant"] != "acme" || string(m.Data) != "hello from kcat" ||
		len(m.Header["Origin"]) != 1 {
		t.Errorf("received %+v (err %v)", m, got.Err)
	}
	_ = sub.Ack(ctx, []*driver.Delivery{got})
}
