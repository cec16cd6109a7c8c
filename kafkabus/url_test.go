package kafkabus_test

import (
	"context"
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/marty-msf/eventbus/driver"
	"github.com/marty-msf/eventbus/kafkabus"
)

func TestURLRoundTripsEveryOption(t *testing.T) {
	on, off := true, false
	full := &kafkabus.Config{
		Brokers:  []string{"k1.example:9093", "k2.example:9093"},
		ClientID: "orders",
		SASL:     &kafkabus.SASLConfig{Mechanism: kafkabus.MechanismScramSHA256, User: "svc", Password: "p@ss:w/rd"},
		TLS:      &kafkabus.TLSConfig{CAFile: "/ca.pem", CertFile: "/c.pem", KeyFile: "/k.pem", ServerName: "kafka", InsecureSkipVerify: true},
		Options: kafkabus.Options{
			TopicPrefix: "t1.", GroupPrefix: "g1.", AutoCreateTopics: &off, Partitions: 12, ReplicationFactor: 3,
			Acks: kafkabus.AcksAll, Idempotent: &on, Compression: "zstd", Linger: 5 * time.Millisecond,
			BatchMaxBytes: 2 << 20, MaxBufferedRecords: 500, FetchMaxBytes: 1 << 20, FetchMaxPartitionBytes: 1 << 19,
			FetchMaxWait: time.Second, SessionTimeout: 30 * time.Second, MinSessionTimeout: 3 * time.Second,
			RebalanceTimeout: time.Minute, HeartbeatInterval: time.Second, Balancer: "sticky",
			MaxInFlight: 64, InPlaceRetries: 5, MaxMessageSize: 4096,
		},
	}
	// Every option is set above, so that one added without a URL parameter
	// fails this test.
	o := reflect.ValueOf(full.Options)
	for i := range o.NumField() {
		if o.Field(i).IsZero() {
			t.Errorf("the test sets no value for Options.%s", o.Type().Field(i).Name)
		}
	}
	plain := &kafkabus.Config{
		Brokers: []string{"127.0.0.1:9092"},
		SASL:    &kafkabus.SASLConfig{Mechanism: kafkabus.MechanismPlain, User: "u", Password: "p", AllowPlaintext: true},
		TLS:     &kafkabus.TLSConfig{},
	}
	for name, c := range map[string]*kafkabus.Config{"full": full, "plain": plain, "bare": {Brokers: []string{"h:1"}}} {
		raw := c.URL()
		got, err := kafkabus.ParseURL(raw)
		if err != nil {
			t.Fatalf("%s: ParseURL(%q): %v", name, raw, err)
		}
		if !reflect.DeepEqual(got, c) {
			t.Errorf("%s: %q\n got %+v\nwant %+v", name, raw, got, c)
		}
	}
}

func TestURLErrors(t *testing.T) {
	const secret = "hunter2secret"
	for _, tc := range []struct {
		url, param string
	}{
		{"kafka://u:" + secret + "@h:9092?bogus=1", "bogus"},
		{"kafka://u:" + secret + "@h:9092?linger=soon", "linger"},
		{"kafka://h:9092?partitions=many", "partitions"},
		{"kafka://h:9092?sasl_mechanism=PLAIN", "sasl_mechanism"},
	} {
		err := driver.CheckURL(tc.url)
		var ue *driver.URLError
		if !errors.As(err, &ue) || ue.Param != tc.param {
			t.Errorf("CheckURL(%q) = %v, want a URLError of parameter %q", tc.url, err, tc.param)
		}
		if err != nil && strings.Contains(err.Error(), secret) {
			t.Errorf("CheckURL(%q) reveals the password: %v", tc.url, err)
		}
	}
	if err := driver.CheckURL("kafka://u:" + secret + "@h:9092?bogus=1"); !errors.Is(err, driver.ErrUnknownParam) {
		t.Errorf("an unknown parameter: %v, want ErrUnknownParam", err)
	}
	// PLAIN sends the password in clear text: refused without TLS unless
	// allowed.
	err := driver.CheckURL("kafka://u:" + secret + "@h:9092?sasl_mechanism=PLAIN")
	if err == nil || !strings.Contains(err.Error(), "clear text") || strings.Contains(err.Error(), secret) {
		t.Errorf("PLAIN over plaintext: %v", err)
	}
	for _, ok := range []string{
		"kafka://u:p@h:9092?sasl_mechanism=PLAIN&tls=true",
		"kafka://u:p@h:9092?sasl_mechanism=PLAIN&sasl_allow_plaintext=true",
		"kafka://u:p@h:9092",
	} {
		if err := driver.CheckURL(ok); err != nil {
			t.Errorf("CheckURL(%q): %v", ok, err)
		}
	}
	if err := driver.CheckURL("kafka://h:9092?acks=some&balancer=greedy"); err == nil ||
		!strings.Contains(err.Error(), "Acks") || !strings.Contains(err.Error(), "Balancer") {
		t.Errorf("two bad options: %v, want both reported", err)
	}
	// A broker that does not answer: the error names no password.
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	_, err = driver.OpenURL(ctx, "kafka://u:"+secret+"@127.0.0.1:1?sasl_allow_plaintext=true&sasl_mechanism=PLAIN", nil)
	if err == nil || strings.Contains(err.Error(), secret) {
		t.Errorf("OpenURL of an unreachable broker: %v", err)
	}
}

func TestOpenURL(t *testing.T) {
	ctx := ctxFor(t, 30*time.Second)
	d, err := driver.OpenURL(ctx, "kafka://"+cluster.ListenAddrs()[0]+"?partitions=2&fetch_max_wait=200ms&topic_prefix=url.", &driver.OpenOptions{ClientName: "url-test"})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close(context.Background())
	dst := driver.NewDestination(driver.Event, "url", "opened")
	if got := d.(*kafkabus.Driver).Topic(dst); got != "url.events.url.opened" {
		t.Errorf("topic %q", got)
	}
	sub, err := d.Subscribe(ctx, dst, driver.SubscribeOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close(context.Background())
	m := &driver.Message{ID: "1", Source: "/t", Type: "t", Data: []byte("x")}
	if err := d.Publish(ctx, dst, []*driver.Message{m}); err != nil {
		t.Fatal(err)
	}
	ds, err := sub.Receive(ctx, 1)
	if err != nil || string(ds[0].Message.Data) != "x" {
		t.Fatalf("Receive: %v %v", ds, err)
	}
}
