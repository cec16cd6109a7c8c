package rabbitbus_test

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/marty-msf/eventbus/driver"
	"github.com/marty-msf/eventbus/rabbitbus"
)

func TestParseURL(t *testing.T) {
	c, err := rabbitbus.ParseURL("amqps://app:s3cret@mq:5671/prod?prefix=shop&queue_type=quorum&delivery_limit=5" +
		"&group_expiry=2m&queue_expiry=1h&prefetch=64&publish_channels=2&max_message_size=1024&heartbeat=5s" +
		"&connection_name=orders&tls_ca_file=/ca.pem&tls_cert_file=/c.pem&tls_key_file=/k.pem&tls_server_name=mq.internal")
	if err != nil {
		t.Fatal(err)
	}
	if c.URL != "amqps://app:s3cret@mq:5671/prod" || c.Prefix != "shop" || c.QueueType != rabbitbus.Quorum ||
		c.DeliveryLimit != 5 || c.GroupExpiry != 2*time.Minute || c.QueueExpiry != time.Hour || c.Prefetch != 64 ||
		c.PublishChannels != 2 || c.MaxMessageSize != 1024 || c.Heartbeat != 5*time.Second || c.ConnectionName != "orders" ||
		c.TLS == nil || c.TLS.CAFile != "/ca.pem" || c.TLS.CertFile != "/c.pem" || c.TLS.KeyFile != "/k.pem" || c.TLS.ServerName != "mq.internal" {
		t.Fatalf("parsed %+v", c)
	}
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	again, err := rabbitbus.ParseURL(c.URLString())
	if err != nil {
		t.Fatal(err)
	}
	if again.URLString() != c.URLString() {
		t.Fatalf("round trip: %s != %s", again.URLString(), c.URLString())
	}
}

func TestURLErrorsHideThePassword(t *testing.T) {
	for _, raw := range []string{
		"amqp://app:s3cret@mq/?bogus=1",
		"amqp://app:s3cret@mq/?prefetch=many",
		"amqp://app:s3cret@mq/?queue_type=stream",
		"amqp://app:s3cret@127.0.0.1:1/?heartbeat=1s",
	} {
		err := driver.CheckURL(raw)
		if err == nil {
			_, err = driver.OpenURL(ctxFor(t, 10*time.Second), raw, nil)
		}
		if err == nil {
			t.Errorf("%s: no error", raw)
			continue
		}
		if strings.Contains(err.Error(), "s3cret") {
			t.Errorf("%s: the error shows the password: %v", raw, err)
		}
	}
	err := driver.CheckURL("amqp://app:s3cret@mq/?bogus=1")
	if !errors.Is(err, driver.ErrUnknownParam) {
		t.Errorf("unknown parameter: %v", err)
	}
}

// TestConflictingQueue shows that a group queue declared as classic, then
// as quorum, fails with an error that names the difference.
func TestConflictingQueue(t *testing.T) {
	b := newBroker(t)
	ctx := ctxFor(t, 30*time.Second)
	classic, err := rabbitbus.Open(ctx, b.config())
	if err != nil {
		t.Fatal(err)
	}
	defer classic.Close(ctx)
	qc := b.config()
	qc.QueueType = rabbitbus.Quorum
	quorum, err := rabbitbus.Open(ctx, qc)
	if err != nil {
		t.Fatal(err)
	}
	defer quorum.Close(ctx)
	dest := driver.NewDestination(driver.Event, "conflict", "seen")
	opts := driver.SubscribeOptions{Group: "g", Durable: true}
	if err := classic.DeclareGroup(ctx, dest, opts); err != nil {
		t.Fatal(err)
	}
	err = quorum.DeclareGroup(ctx, dest, opts)
	var ce *rabbitbus.ConflictError
	if !errors.As(err, &ce) || !strings.Contains(err.Error(), "x-queue-type") {
		t.Fatalf("got %v, want a *ConflictError naming x-queue-type", err)
	}
	t.Log(err)
	// The driver goes on working after the refused declaration.
	if err := classic.DeclareGroup(ctx, dest, opts); err != nil {
		t.Fatal(err)
	}
}
