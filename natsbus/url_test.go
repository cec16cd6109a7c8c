package natsbus_test

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/marty-msf/eventbus/driver"
	"github.com/marty-msf/eventbus/natsbus"
)

func TestURLRoundTripsEveryOption(t *testing.T) {
	on := true
	full := &natsbus.Config{
		Servers:         []string{"tls://n1.example:4222", "tls://n2.example:4223"},
		Name:            "orders",
		User:            "svc",
		Password:        "p@ss:w/rd",
		NKeySeedFile:    "/etc/nats/seed.nk",
		CredentialsFile: "",
		TLS:             &natsbus.TLSConfig{CAFile: "/ca.pem", CertFile: "/c.pem", KeyFile: "/k.pem", InsecureSkipVerify: true},
		MaxReconnects:   -1,
		ReconnectWait:   3 * time.Second,
		ConnectTimeout:  7 * time.Second,
		Options: natsbus.Options{
			JetStream:      &on,
			StreamPrefix:   "ORD",
			SubjectPrefix:  "tenant1",
			AckWait:        time.Minute,
			MaxMessageSize: 1000,
			PublishWindow:  64,
			Prefetch:       32,
			Streams: natsbus.StreamConfig{
				MaxMsgs: 10, MaxBytes: 2048, MaxAge: time.Hour, Retention: natsbus.RetentionWorkQueue,
				Replicas: 3, Storage: natsbus.StorageMemory, Duplicates: 5 * time.Minute,
			},
		},
	}
	token := &natsbus.Config{Servers: []string{"nats://h:4222"}, Token: "t0k", CredentialsFile: "/x.creds"}
	for name, c := range map[string]*natsbus.Config{"full": full, "token": token} {
		raw := c.URL()
		got, err := natsbus.ParseURL(raw)
		if err != nil {
			t.Fatalf("%s: ParseURL(%q): %v", name, raw, err)
		}
		if !reflect.DeepEqual(got, c) {
			t.Errorf("%s: %q\n got %+v\nwant %+v", name, raw, got, c)
		}
	}

	c, err := natsbus.ParseURL("nats://h:4222?jetstream=false&ack_wait=30s&name=x")
	if err != nil || c.JetStream == nil || *c.JetStream || c.AckWait != 30*time.Second || c.Name != "x" ||
		!reflect.DeepEqual(c.Servers, []string{"nats://h:4222"}) {
		t.Fatalf("ParseURL: %+v, %v", c, err)
	}
}

func TestEmbeddedURLRoundTrips(t *testing.T) {
	off := false
	for _, o := range []*natsbus.EmbeddedOptions{
		{},
		{DataDir: "data/bus"},
		{DataDir: "/var/lib/app/bus", Host: "0.0.0.0", Port: 4222, MaxPayload: 2 << 20, MaxMemory: 1 << 30, MaxStore: 1 << 34, ServerName: "n1"},
		{DataDir: "dir with spaces/and?query#frag", Port: -1},
	} {
		c := &natsbus.Config{Name: "svc", Options: natsbus.Options{JetStream: &off, StreamPrefix: "P", AckWait: time.Second}}
		raw := o.URL(c)
		gotO, gotC, err := natsbus.ParseEmbeddedURL(raw)
		if err != nil {
			t.Fatalf("ParseEmbeddedURL(%q): %v", raw, err)
		}
		if !reflect.DeepEqual(gotO, o) || !reflect.DeepEqual(gotC, c) {
			t.Errorf("%q:\n got %+v %+v\nwant %+v %+v", raw, gotO, gotC, o, c)
		}
	}
	for raw, dir := range map[string]string{
		"embedded:":                             "",
		"embedded://":                           "",
		"embedded:rel/dir":                      "rel/dir",
		"embedded:./rel":                        "./rel",
		"embedded:///var/lib/app/bus":           "/var/lib/app/bus",
		"EMBEDDED:///var/lib/app/bus?port=4222": "/var/lib/app/bus",
	} {
		o, _, err := natsbus.ParseEmbeddedURL(raw)
		if err != nil || o.DataDir != dir {
			t.Errorf("%q: %+v %v, want DataDir %q", raw, o, err, dir)
		}
	}
	if got := natsbus.EmbeddedURL("/abs/d"); got != "embedded:///abs/d" {
		t.Errorf("EmbeddedURL(/abs/d) = %q", got)
	}
	if got := natsbus.EmbeddedURL("rel"); got != "embedded:rel" {
		t.Errorf("EmbeddedURL(rel) = %q", got)
	}
}

func TestURLErrorsNameTheParameter(t *testing.T) {
	for raw, params := range map[string][]string{
		"nats://h?ack_wait=soon&jetstream=perhaps&bogus=1":   {"ack_wait", "jetstream", "bogus"},
		"nats://h?stream_replicas=x&prefetch=1.5":            {"stream_replicas", "prefetch"},
		"embedded:d?port=70000&server=x":                     {"port", "server"},
		"embedded:d?max_payload=-1&stream_max_age=forever":   {"max_payload", "stream_max_age"},
		"nats://h?servers=a&servers=b&connect_timeout=never": {"connect_timeout"},
	} {
		err := driver.CheckURL(raw)
		if err == nil {
			t.Errorf("%q: no error", raw)
			continue
		}
		for _, p := range params {
			if !strings.Contains(err.Error(), `parameter "`+p+`"`) {
				t.Errorf("%q: error does not name %s: %v", raw, p, err)
			}
		}
	}
	for raw, want := range map[string]string{
		"nats://":                          "no host",
		"nats://h/path":                    "no path",
		"embedded://host/d":                "names no host",
		"nats://h?stream_retention=sorted": "Retention",
		"nats://h?stream_prefix=a.b":       "StreamPrefix",
	} {
		if err := driver.CheckURL(raw); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%q: %v, want an error saying %q", raw, err, want)
		}
	}
	if _, err := natsbus.ParseURL("mem://"); err == nil {
		t.Error("ParseURL took a mem URL")
	}
}

// A password in a URL appears in no error and no log line, whether the
// server refuses it or cannot be reached at all.
func TestURLPasswordNeverShown(t *testing.T) {
	const sentinel = "sentinel-Pa55-7c1e"
	ns := startAuthServer(t, "svc", "right-one")
	var logs bytes.Buffer
	log := slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	for _, raw := range []string{
		"nats://svc:" + sentinel + "@" + ns.Addr().String() + "?jetstream=false&max_reconnects=1",
		"nats://" + sentinel + "@" + ns.Addr().String() + "?jetstream=false&max_reconnects=1",
		"nats://svc:" + sentinel + "@127.0.0.1:1?connect_timeout=200ms",
		"nats://svc:" + sentinel + "@127.0.0.1:1?connect_timeout=200ms&ack_wait=-1s&bogus=" + sentinel,
	} {
		_, err := driver.OpenURL(ctxFor(t, 10*time.Second), raw, &driver.OpenOptions{Logger: log})
		if err == nil {
			t.Fatalf("opened with a wrong password")
		}
		if strings.Contains(err.Error(), sentinel) {
			t.Errorf("the error shows the password: %v", err)
		}
	}
	if strings.Contains(logs.String(), sentinel) {
		t.Errorf("the log shows the password:\n%s", logs.String())
	}
}

func TestOpenEmbeddedByURL(t *testing.T) {
	ctx := ctxFor(t, 30*time.Second)
	d, err := driver.OpenURL(ctx, natsbus.EmbeddedURL(t.TempDir())+"?max_message_size=4096&stream_prefix=URLT&stream_duplicates=15s", &driver.OpenOptions{ClientName: "t"})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close(context.Background())
	if got := d.Capabilities().MaxMessageSize; got != 4096 {
		t.Errorf("MaxMessageSize %d, want 4096 from the URL", got)
	}
	// The embedded server's duplicate window is the streams' own.
	nd := d.(*natsbus.Driver)
	if got := nd.DeduplicationWindow(driver.Event); got != 15*time.Second {
		t.Errorf("DeduplicationWindow %v, want 15s from the URL", got)
	}
	st, err := nd.JetStream().Stream(ctx, nd.StreamName(driver.Event))
	if err != nil {
		t.Fatal(err)
	}
	if info, err := st.Info(ctx); err != nil {
		t.Fatal(err)
	} else if info.Config.Duplicates != 15*time.Second {
		t.Errorf("stream %s Duplicates %v, want 15s from the URL", info.Config.Name, info.Config.Duplicates)
	}
	_, err = driver.OpenURL(ctx, "embedded:"+t.TempDir()+"?port=-1&host=256.0.0.1", nil)
	if err == nil || !strings.Contains(err.Error(), "embedded server") {
		t.Errorf("bad host: %v", err)
	}
	var ue *driver.URLError
	if _, err := driver.OpenURL(ctx, "tls://h?nope=1", nil); !errors.As(err, &ue) || ue.Param != "nope" {
		t.Errorf("unknown parameter: %v", err)
	}
}
