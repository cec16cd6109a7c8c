package natsbus

import (
	"context"
	"fmt"
	"time"

	"github.com/marty-msf/eventbus/driver"
)

var (
	_ driver.UnconfirmedPublisher  = (*Driver)(nil)
	_ driver.Deduplicator          = (*Driver)(nil)
	_ driver.DeduplicatedPublisher = (*Driver)(nil)
)

// PublishUnconfirmed writes msgs to dest's subject on the connection and
// returns without waiting: no flush on core NATS, no stream acknowledgement
// on JetStream (the stream stores what reaches its subjects all the same).
// It is at most once: a message written while the connection is down may
// be lost, and it is never sent again. The messages carry no
// de-duplication header. It refuses what Publish refuses, before the wire.
func (d *Driver) PublishUnconfirmed(ctx context.Context, dest driver.Destination, msgs []*driver.Message) error {
	subj, err := d.checkDest("publish", dest)
	if err != nil {
		return err
	}
	if err := checkPublish(msgs, d.caps.MaxMessageSize); err != nil {
		return fmt.Errorf("natsbus: publish to %q: %w", subj, err)
	}
	for _, m := range msgs {
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("natsbus: publish to %q: %w: %w", subj, driver.ErrUnavailable, err)
		}
		if err := d.publishMsg(subj, m); err != nil {
			return fmt.Errorf("natsbus: publish to %q: %w", subj, d.classify(err))
		}
	}
	return nil
}

// DeduplicationWindow is the streams' duplicate window (Streams.Duplicates,
// at most MaxAge) for the patterns JetStream stores, zero for the others
// and with JetStream off.
func (d *Driver) DeduplicationWindow(p driver.Pattern) time.Duration {
	if d.js == nil || !persistent(p) {
		return 0
	}
	s := d.opts.Streams
	if s.MaxAge > 0 && s.Duplicates > s.MaxAge {
		return s.MaxAge
	}
	return s.Duplicates
}
