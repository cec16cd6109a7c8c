package awsbus_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/marty-msf/eventbus/driver"
)

// TestRedrive: with MaxReceiveCount 2, a message received twice and given
// back both times is moved by SQS itself (the queue's redrive policy) to
// the queue that keeps its destination's dead letters, where
// ReadDeadLetters finds it with its id and content, under the same Ref
// twice; DeleteDeadLetters removes it. For an event group's queue and a
// command queue, on standard and FIFO queues.
func TestRedrive(t *testing.T) {
	for _, fifo := range []bool{false, true} {
		for _, dest := range []driver.Destination{
			driver.NewDestination(driver.Event, "redrive", "event"),
			driver.NewDestination(driver.Command, "redrive", "command"),
		} {
			name := dest.Pattern.String()
			if fifo {
				name += "/fifo"
			}
			t.Run(name, func(t *testing.T) {
				cfg := testConfig(t)
				cfg.FIFO, cfg.MaxReceiveCount = fifo, 2
				d := openDriver(t, cfg)
				ctx := ctxFor(t, 90*time.Second)
				sub, err := d.Subscribe(ctx, dest, driver.SubscribeOptions{Group: "g", Durable: true, AckWait: 2 * time.Second})
				if err != nil {
					t.Fatal(err)
				}
				defer sub.Close(context.Background())
				m := &driver.Message{ID: "poison-1", Source: "/redrive", Type: "redrive.test", Key: "k", Data: []byte("poison")}
				if err := d.Publish(ctx, dest, []*driver.Message{m.Clone()}); err != nil {
					t.Fatal(err)
				}
				for attempt := 1; attempt <= 2; attempt++ {
					ds, err := sub.Receive(ctx, 1)
					if err != nil {
						t.Fatalf("receive %d: %v", attempt, err)
					}
					if ds[0].Message.ID != m.ID || ds[0].Attempt != attempt {
						t.Fatalf("receive %d: %q attempt %d", attempt, ds[0].Message.ID, ds[0].Attempt)
					}
					if err := sub.Nack(ctx, ds, 0); err != nil {
						t.Fatal(err)
					}
				}
				dl := driver.DeadLetterOf(dest)
				var got []driver.DeadLetterEntry
				for ctx.Err() == nil && len(got) == 0 {
					got = nil
					if err := d.ReadDeadLetters(ctx, dl, func(e driver.DeadLetterEntry) bool {
						got = append(got, e)
						return true
					}); err != nil {
						t.Fatal(err)
					}
				}
				if len(got) != 1 || got[0].Message.ID != m.ID || string(got[0].Message.Data) != "poison" || got[0].Message.Key != "k" {
					t.Fatalf("dead letters of %s: %+v, want %q", dl, got, m.ID)
				}
				var again []string
				if err := d.ReadDeadLetters(ctx, dl, func(e driver.DeadLetterEntry) bool {
					again = append(again, e.Ref)
					return true
				}); err != nil {
					t.Fatal(err)
				}
				if len(again) != 1 || again[0] != got[0].Ref {
					t.Fatalf("a second read passed Refs %q, want %q", again, got[0].Ref)
				}
				if n, err := d.DeleteDeadLetters(ctx, dl, []string{got[0].Ref}); n != 1 || err != nil {
					t.Fatalf("DeleteDeadLetters: %d, %v", n, err)
				}
				rctx, cancel := context.WithTimeout(ctx, 3*time.Second)
				defer cancel()
				if ds, err := sub.Receive(rctx, 1); !errors.Is(err, context.DeadlineExceeded) {
					t.Fatalf("the group received %v (%v) after the redrive", ds, err)
				}
			})
		}
	}
}

// TestDeadLetterErrors: a destination that is not a dead-letter one is
// refused with driver.ErrUnsupported.
func TestDeadLetterErrors(t *testing.T) {
	d := openDriver(t, testConfig(t))
	ctx := ctxFor(t, 30*time.Second)
	ev := driver.NewDestination(driver.Event, "not", "deadletter")
	if err := d.ReadDeadLetters(ctx, ev, func(driver.DeadLetterEntry) bool { return true }); !errors.Is(err, driver.ErrUnsupported) {
		t.Errorf("ReadDeadLetters of an event destination: %v", err)
	}
	if _, err := d.PurgeDeadLetters(ctx, ev); !errors.Is(err, driver.ErrUnsupported) {
		t.Errorf("PurgeDeadLetters of an event destination: %v", err)
	}
	if _, err := d.DeleteDeadLetters(ctx, ev, []string{"x"}); !errors.Is(err, driver.ErrUnsupported) {
		t.Errorf("DeleteDeadLetters of an event destination: %v", err)
	}
}
