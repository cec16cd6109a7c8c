package redisbus_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/marty-msf/eventbus/driver"
)

// TestReadDeadLettersPages: a dead-letter stream longer than one XRANGE
// page is read whole, oldest first, each entry once; messages added during
// the read are not waited for.
func TestReadDeadLettersPages(t *testing.T) {
	cfg := testConfig(t)
	d := openDriver(t, cfg)
	ctx := ctxFor(t, 30*time.Second)
	dl := driver.DeadLetterOf(driver.NewDestination(driver.Event, "pages"))
	const total = 700
	msgs := make([]*driver.Message, total)
	for i := range msgs {
		msgs[i] = &driver.Message{ID: fmt.Sprintf("m%04d", i), Source: "dl-test", Type: "pages"}
	}
	if err := d.Publish(ctx, dl, msgs); err != nil {
		t.Fatal(err)
	}
	var got []string
	err := d.ReadDeadLetters(ctx, dl, func(e driver.DeadLetterEntry) bool {
		got = append(got, e.Message.ID)
		if len(got) == 1 {
			// Added after the read began: not part of it.
			if err := d.Publish(ctx, dl, []*driver.Message{{ID: "late", Source: "dl-test", Type: "pages"}}); err != nil {
				t.Error(err)
			}
		}
		return true
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != total {
		t.Fatalf("read %d dead letters, want %d", len(got), total)
	}
	for i, id := range got {
		if want := fmt.Sprintf("m%04d", i); id != want {
			t.Fatalf("dead letter %d is %s, want %s", i, id, want)
		}
	}
}
