package kafkabus_test

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/marty-msf/eventbus/driver"
)

// TestNackInPlaceThenRetryTopic nacks one message until its in-place retries
// are spent: it comes back from the group's retry topic with its content and
// attempt count, and the partition's commit moved past it meanwhile.
func TestNackInPlaceThenRetryTopic(t *testing.T) {
	cfg := testConfig()
	cfg.Partitions = 1
	cfg.InPlaceRetries = 2
	d := openDriver(t, cfg)
	ctx := ctxFor(t, 30*time.Second)
	dst := driver.NewDestination(driver.Command, "retry", unique())
	sub, err := d.Subscribe(ctx, dst, driver.SubscribeOptions{Group: "svc"})
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close(context.Background())
	poison := &driver.Message{ID: "p-1", Source: "/t", Type: "t", Key: "k", Header: map[string][]string{"X-A": {"1"}}, Data: []byte("poison")}
	next := &driver.Message{ID: "n-1", Source: "/t", Type: "t", Key: "k", Data: []byte("next")}
	if err := d.Publish(ctx, dst, []*driver.Message{poison, next}); err != nil {
		t.Fatal(err)
	}
	got := map[string][]int{}
	for len(got["p-1"]) < 4 {
		ds, err := sub.Receive(ctx, 1)
		if err != nil {
			t.Fatalf("Receive after %v: %v", got, err)
		}
		dl := ds[0]
		m := dl.Message
		got[m.ID] = append(got[m.ID], dl.Attempt)
		if m.ID == "n-1" || len(got["p-1"]) == 4 {
			if err := sub.Ack(ctx, ds); err != nil {
				t.Fatal(err)
			}
			continue
		}
		if string(m.Data) != "poison" || m.Key != "k" || len(m.Header) != 1 || m.Header["X-A"][0] != "1" {
			t.Errorf("attempt %d arrived changed: %+v", dl.Attempt, m)
		}
		if err := sub.Nack(ctx, ds, 0); err != nil {
			t.Fatal(err)
		}
	}
	if want := []int{1, 2, 3, 4}; !slices.Equal(got["p-1"], want) {
		t.Errorf("attempts of the nacked message %v, want %v (two in place, then the retry topic)", got["p-1"], want)
	}
	if len(got["n-1"]) != 1 {
		t.Errorf("the next message was delivered %d times", len(got["n-1"]))
	}
	// The main topic's commit went past both: the retry topic holds the
	// poison message now.
	kd := d
	topic := kd.Topic(dst)
	deadline := time.Now().Add(10 * time.Second)
	for {
		offs, err := kd.Admin().FetchOffsetsForTopics(ctx, kd.GroupID(dst, "svc"), topic)
		if err != nil {
			t.Fatal(err)
		}
		if o, ok := offs.Lookup(topic, 0); ok && o.At == 2 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("committed offsets of %s: %v, want 2 on partition 0", topic, offs)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
