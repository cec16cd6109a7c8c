package drivertest

import (
	"errors"
	"testing"
	"time"

	"github.com/marty-msf/eventbus/driver"
)

const (
	// maxDeliveredSize is the largest MaxMessageSize whose message the suite
	// sends through the broker; beyond it only the refusal is checked.
	maxDeliveredSize = 64 << 20
	// maxRefusedSize is the largest MaxMessageSize for which the suite builds
	// a message one byte too large (the driver refuses it before reading its
	// data, so the pages are never touched).
	maxRefusedSize = 1 << 30
)

// sizedMessage returns a message with every kind of attribute whose Size is
// exactly size, or nil when its attributes alone are larger.
func sizedMessage(name string, size int) *driver.Message {
	id := name + "-" + unique()
	m := &driver.Message{
		ID:              id,
		Source:          "/drivertest",
		Type:            "drivertest.size",
		Time:            time.Now(),
		DataContentType: "application/octet-stream",
		CorrelationID:   "corr-" + id,
		Key:             "size",
		Extensions:      map[string]string{"sizeext": "x"},
		Header:          map[string][]string{"X-Size": {"a", "b"}},
	}
	n := size - m.Size()
	if n < 0 {
		return nil
	}
	m.Data = make([]byte, n)
	if size <= maxDeliveredSize {
		for i := range m.Data {
			m.Data[i] = byte(i % 251)
		}
	}
	return m
}

// testMaxMessageSize checks the boundary: Size == MaxMessageSize passes and
// arrives intact, one byte more is refused before the wire.
func (s *suite) testMaxMessageSize(t *testing.T) {
	limit := s.caps.MaxMessageSize
	if limit <= 0 {
		t.Fatalf("Capabilities.MaxMessageSize = %d", limit)
	}
	if limit >= maxRefusedSize {
		t.Skipf("MaxMessageSize %d is too large to build a message of that size", limit)
	}
	dst := dest(s.anyPattern(t), "size")
	sub := subscribe(t, s.open(t), dst, driver.SubscribeOptions{Group: s.group()})
	pub := s.open(t)

	if limit <= maxDeliveredSize {
		exact := sizedMessage("size-exact", limit)
		if exact == nil {
			t.Fatalf("MaxMessageSize %d is smaller than the attributes of an ordinary message", limit)
		}
		publish(t, pub, dst, exact)
		d := receiveOne(t, sub)
		checkMessage(t, exact, d.Message)
		ack(t, sub, d)
	} else {
		t.Logf("MaxMessageSize %d: not sending a message of that size through the broker", limit)
	}

	tooLarge := sizedMessage("size-too-large", limit+1)
	small := newMessage("size-small")
	for _, batch := range [][]*driver.Message{{tooLarge}, {small, tooLarge}} {
		err := pub.Publish(timeout(t, opTimeout), dst, batch)
		if !errors.Is(err, driver.ErrTooLarge) {
			t.Errorf("Publish of %v with a message of Size %d over the limit %d: %v, want an error matching driver.ErrTooLarge",
				ids(batch), limit+1, limit, err)
		}
		var tle *driver.TooLargeError
		if !errors.As(err, &tle) {
			t.Errorf("Publish error %v is not a *driver.TooLargeError", err)
		} else if tle.Size != limit+1 || tle.Limit != limit {
			t.Errorf("TooLargeError{Size: %d, Limit: %d}, want {Size: %d, Limit: %d}", tle.Size, tle.Limit, limit+1, limit)
		}
	}

	// Nothing of a refused batch reaches the broker: the next delivery is the
	// marker published after it.
	marker := newMessage("size-marker")
	publish(t, pub, dst, marker)
	d := receiveOne(t, sub)
	if d.Message.ID != marker.ID {
		t.Errorf("received %q from a refused batch", d.Message.ID)
	}
	ack(t, sub, d)
	expectNone(t, sub, quietWindow, "every other message was refused")
}
