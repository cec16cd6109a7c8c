package membus_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"testing"

	"github.com/marty-msf/eventbus/driver"
	"github.com/marty-msf/eventbus/driver/drivertest"
	"github.com/marty-msf/eventbus/membus"
)

func TestDeadLetterConformance(t *testing.T) {
	base := membus.New(nil)
	t.Cleanup(func() { _ = base.Close(context.Background()) })
	drivertest.RunDeadLetterTests(t, drivertest.Harness{
		Open: func(ctx context.Context) (driver.Driver, error) { return base.Connect(), nil },
	})
}

// readIDs returns the ids of the dead letters held on dl, oldest first.
func readIDs(t *testing.T, d *membus.Driver, dl driver.Destination) []string {
	t.Helper()
	var ids []string
	err := d.ReadDeadLetters(context.Background(), dl, func(e driver.DeadLetterEntry) bool {
		ids = append(ids, e.Message.ID)
		return true
	})
	if err != nil {
		t.Fatal(err)
	}
	return ids
}

// The store keeps the newest dead letters of the whole broker within its
// bounds and counts what it dropped.
func TestDeadLetterBounds(t *testing.T) {
	d := open(t, &membus.Options{DeadLetterLimit: 5})
	a := driver.DeadLetterOf(driver.NewDestination(driver.Event, "a"))
	b := driver.DeadLetterOf(driver.NewDestination(driver.Event, "b"))
	publish(t, d, a, msgs(0, 3))
	publish(t, d, b, msgs(3, 6))
	publish(t, d.Connect(), a, msgs(6, 7))
	if got, want := readIDs(t, d, a), []string{"2", "6"}; !slices.Equal(got, want) {
		t.Fatalf("%s holds %v, want %v", a, got, want)
	}
	if got, want := readIDs(t, d, b), []string{"3", "4", "5"}; !slices.Equal(got, want) {
		t.Fatalf("%s holds %v, want %v", b, got, want)
	}
	if n := d.DeadLettersDropped(); n != 2 {
		t.Fatalf("DeadLettersDropped = %d, want 2", n)
	}
	// Room made by a purge is room again.
	if n, err := d.PurgeDeadLetters(context.Background(), b); err != nil || n != 3 {
		t.Fatalf("purge: %d, %v", n, err)
	}
	publish(t, d, b, msgs(7, 10))
	if got, want := readIDs(t, d, a), []string{"2", "6"}; !slices.Equal(got, want) {
		t.Fatalf("%s holds %v after a purge made room, want %v", a, got, want)
	}
	if n := d.DeadLettersDropped(); n != 2 {
		t.Fatalf("DeadLettersDropped = %d after a purge made room, want 2", n)
	}

	big := &membus.Options{DeadLetterMaxBytes: 3 * msg(0).Size()}
	d = open(t, big)
	publish(t, d, a, msgs(0, 5))
	if got, want := readIDs(t, d, a), []string{"2", "3", "4"}; !slices.Equal(got, want) {
		t.Fatalf("with a byte bound of three messages %s holds %v, want %v", a, got, want)
	}
}

// Other destinations keep no copy; a closed connection refuses.
func TestDeadLetterStoreScope(t *testing.T) {
	d := open(t, nil)
	events := driver.NewDestination(driver.Event, "order.created")
	subscribe(t, d, events, driver.SubscribeOptions{Group: "g"})
	publish(t, d, events, msgs(0, 2))
	dests, err := d.DeadLetterDestinations(context.Background())
	if err != nil || len(dests) != 0 {
		t.Fatalf("DeadLetterDestinations = %v, %v; want none", dests, err)
	}
	c := d.Connect()
	_ = c.Close(context.Background())
	dl := driver.DeadLetterOf(events)
	for name, err := range map[string]error{
		"list":   errOf(c.DeadLetterDestinations(context.Background())),
		"read":   c.ReadDeadLetters(context.Background(), dl, func(driver.DeadLetterEntry) bool { return true }),
		"delete": errOf(c.DeleteDeadLetters(context.Background(), dl, []string{"1"})),
		"purge":  errOf(c.PurgeDeadLetters(context.Background(), dl)),
	} {
		if !errors.Is(err, driver.ErrClosed) {
			t.Errorf("%s after Close: %v, want ErrClosed", name, err)
		}
	}
}

func errOf[T any](_ T, err error) error { return err }

func ExampleDriver_ReadDeadLetters() {
	ctx := context.Background()
	d := membus.New(nil)
	defer d.Close(ctx)
	dl := driver.DeadLetterOf(driver.NewDestination(driver.Event, "order.created"))
	m := &driver.Message{ID: "1", Source: "/shop", Type: "order.created",
		Extensions: map[string]string{driver.ExtDeadLetterReason: "no such customer"}}
	_ = d.Publish(ctx, dl, []*driver.Message{m})
	_ = d.ReadDeadLetters(ctx, dl, func(e driver.DeadLetterEntry) bool {
		fmt.Println(e.Message.ID, e.Message.Extensions[driver.ExtDeadLetterReason])
		return true
	})
	// Output: 1 no such customer
}
