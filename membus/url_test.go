package membus_test

import (
	"context"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/marty-msf/eventbus/driver"
	"github.com/marty-msf/eventbus/membus"
)

func TestURLRoundTrips(t *testing.T) {
	for _, o := range []*membus.Options{{}, {MaxMessageSize: 512, BufferSize: 16, AckWait: 2 * time.Second}} {
		raw := o.URL()
		got, err := membus.ParseURL(raw)
		if err != nil || !reflect.DeepEqual(got, o) {
			t.Errorf("%q: %+v %v, want %+v", raw, got, err, o)
		}
	}
	d, err := driver.OpenURL(context.Background(), "mem://?max_message_size=512", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close(context.Background())
	if got := d.Capabilities().MaxMessageSize; got != 512 {
		t.Errorf("MaxMessageSize %d, want 512", got)
	}
}

func TestURLErrors(t *testing.T) {
	for raw, want := range map[string]string{
		"mem://?buffer=1":          `parameter "buffer": unknown parameter`,
		"mem://?buffer_size=-1":    `parameter "buffer_size"`,
		"mem://?ack_wait=1":        `parameter "ack_wait"`,
		"mem://host":               "no host or path",
		"mem:name":                 "no host or path",
		"mem://?max_message_size=": `parameter "max_message_size"`,
	} {
		if err := driver.CheckURL(raw); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%q: %v, want %q", raw, err, want)
		}
	}
}
