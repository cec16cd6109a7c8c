package natsbus

import (
	"context"
	"fmt"

	"github.com/nats-io/nats.go"

	"github.com/marty-msf/eventbus/driver"
)

var (
	_ driver.Pinger      = (*Driver)(nil)
	_ driver.LagReporter = (*storedSub)(nil)
)

// Ping checks the connection with a round trip to the server (a flush),
// and, when the driver uses JetStream, JetStream's account information. It
// fails with driver.ErrClosed once the driver or its connection is closed,
// and with driver.ErrUnavailable while the client reconnects or the server
// does not answer in time.
func (d *Driver) Ping(ctx context.Context) error {
	switch {
	case d.isClosed() || d.nc.IsClosed():
		return fmt.Errorf("natsbus: ping: %w", driver.ErrClosed)
	case d.nc.Status() != nats.CONNECTED:
		return fmt.Errorf("natsbus: ping: connection is %v: %w", d.nc.Status(), driver.ErrUnavailable)
	}
	if err := d.nc.FlushWithContext(ctx); err != nil {
		return fmt.Errorf("natsbus: ping: %w: %w", driver.ErrUnavailable, err)
	}
	if d.js != nil && d.caps.Durable {
		if _, err := d.js.AccountInfo(ctx); err != nil {
			return fmt.Errorf("natsbus: ping: jetstream: %w: %w", driver.ErrUnavailable, err)
		}
	}
	return nil
}

// Lag returns the number of messages on the stream that the subscription's
// JetStream consumer has not yet been delivered (the consumer's pending
// count), from one consumer info request to the server.
func (s *storedSub) Lag(ctx context.Context) (uint64, error) {
	// Looking the consumer up fetches its info: one round trip.
	cons, err := s.d.js.Consumer(ctx, s.stream, s.consumer)
	if err != nil {
		return 0, fmt.Errorf("natsbus: lag of %s: %w", s.consumer, s.d.classify(err))
	}
	return cons.CachedInfo().NumPending, nil
}
