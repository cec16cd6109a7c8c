package kafkabus_test

import (
	"context"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"

	"github.com/marty-msf/eventbus/driver"
	"github.com/marty-msf/eventbus/internal/testenv"
	"github.com/marty-msf/eventbus/kafkabus"
)

// secretOutput gathers everything a test could leak a password through:
// the driver's log (franz-go's included) at every level and the text of
// every error.
type secretOutput struct{ testenv.Output }

// TestCredentialsNeverLeak runs a broker that authenticates with SASL and
// puts a sentinel in every password: a wrong password (SCRAM and PLAIN),
// an unreachable broker, bad configurations (by Config and by URL, through
// driver.OpenURL too), and a whole session of a user whose password it is
// (publishing, consuming, closing). No log line and no error may carry the
// sentinel.
func TestCredentialsNeverLeak(t *testing.T) {
	t.Parallel()
	const sentinel = "Sentinel-pw-4b1e"
	c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.EnableSASL(),
		kfake.Superuser("SCRAM-SHA-256", "svc", sentinel+"-right"),
		kfake.Superuser("PLAIN", "plain", sentinel+"-plain"),
		kfake.GroupMinSessionTimeout(100*time.Millisecond), kfake.DefaultNumPartitions(1))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	broker := c.ListenAddrs()[0]
	unreachable := func() string {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer l.Close()
		return l.Addr().String()
	}()
	out := &secretOutput{}
	ctx := ctxFor(t, 2*time.Minute)
	config := func(brokerAddr, mechanism, user, password string) *kafkabus.Config {
		cfg := testConfig()
		cfg.Brokers = []string{brokerAddr}
		cfg.SASL = &kafkabus.SASLConfig{Mechanism: mechanism, User: user, Password: password, AllowPlaintext: true}
		cfg.Logger = out.Logger()
		return cfg
	}
	fails := func(what string, cfg *kafkabus.Config) {
		t.Helper()
		octx, cancel := context.WithTimeout(ctx, 15*time.Second)
		defer cancel()
		d, err := kafkabus.Open(octx, cfg)
		if err == nil {
			_ = d.Close(ctx)
			t.Errorf("%s: Open succeeded", what)
			return
		}
		out.Err(what, err)
	}
	fails("wrong SCRAM password", config(broker, kafkabus.MechanismScramSHA256, "svc", sentinel+"-wrong"))
	fails("wrong PLAIN password", config(broker, kafkabus.MechanismPlain, "plain", sentinel+"-wrong"))
	fails("unreachable broker", config(unreachable, kafkabus.MechanismScramSHA512, "svc", sentinel+"-right"))
	bad := config(broker, "DIGEST-MD5", "", sentinel+"-right")
	bad.Acks = "most"
	fails("bad configuration", bad)
	plain := config(broker, kafkabus.MechanismPlain, "plain", sentinel+"-plain")
	plain.SASL.AllowPlaintext = false
	fails("PLAIN without TLS", plain)
	missingCA := config(broker, kafkabus.MechanismScramSHA256, "svc", sentinel+"-right")
	missingCA.TLS = &kafkabus.TLSConfig{CAFile: "/nonexistent/ca.pem"}
	fails("missing TLS files", missingCA)

	for _, raw := range []string{
		"kafka://svc:" + sentinel + "-wrong@" + broker + "?sasl_mechanism=SCRAM-SHA-256",
		"kafka://svc:" + sentinel + "-right@" + unreachable + "?sasl_mechanism=SCRAM-SHA-256",
		"kafka://svc:" + sentinel + "-right@" + broker + "?sasl_mechanism=PLAIN",
		"kafka://svc:" + sentinel + "-right@" + broker + "?bogus=1",
		"kafka://svc:" + sentinel + "-right@" + broker + "?acks=most&linger=soon",
		"kafka://svc:" + sentinel + "-right@127.0.0.1:notaport",
		"kafka://svc:" + sentinel + "-right@[::1/",
	} {
		_, err := kafkabus.ParseURL(raw)
		out.Err("ParseURL", err)
		octx, cancel := context.WithTimeout(ctx, 15*time.Second)
		d, err := driver.OpenURL(octx, raw, &driver.OpenOptions{Logger: out.Logger()})
		cancel()
		if err == nil {
			_ = d.Close(ctx)
			t.Errorf("driver.OpenURL(%s) succeeded", driver.RedactURL(raw))
			continue
		}
		out.Err("driver.OpenURL", err)
	}

	// A whole session as the user whose password it is.
	d, err := kafkabus.Open(ctx, config(broker, kafkabus.MechanismScramSHA256, "svc", sentinel+"-right"))
	if err != nil {
		t.Fatalf("Open with the right password: %v", err)
	}
	dst := driver.NewDestination(driver.Event, "secret."+unique())
	sub, err := d.Subscribe(ctx, dst, driver.SubscribeOptions{Group: "svc"})
	if err != nil {
		t.Fatal(err)
	}
	m := &driver.Message{ID: "s-1", Source: "/t", Type: "t", Data: []byte("hello")}
	if err := d.Publish(ctx, dst, []*driver.Message{m}); err != nil {
		t.Fatal(err)
	}
	ds, err := sub.Receive(ctx, 1)
	if err != nil {
		t.Fatal(err)
	}
	if got := ds[0].Message; got.ID != "s-1" || string(got.Data) != "hello" {
		t.Errorf("received %+v", got)
	}
	out.Err("Ack", sub.Ack(ctx, ds))
	out.Err("Subscription.Close", sub.Close(ctx))
	out.Err("Driver.Close", d.Close(ctx))
	out.Err("Publish after Close", d.Publish(ctx, dst, []*driver.Message{m}))

	text := out.String()
	if strings.Contains(text, sentinel) {
		t.Errorf("the sentinel password appears in the output:\n%s", text)
	}
	for _, want := range []string{"wrong SCRAM password", "unreachable broker", "bad configuration", "PLAIN without TLS", "missing TLS files", "driver.OpenURL", "Publish after Close"} {
		if !strings.Contains(text, want) {
			t.Errorf("no output for %q: the case did not run or did not fail", want)
		}
	}
	t.Logf("%d bytes of logs and errors checked", len(text))
}
