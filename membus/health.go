package membus

import (
	"context"
	"fmt"

	"github.com/marty-msf/eventbus/driver"
)

var _ driver.Pinger = (*Driver)(nil)

// Ping reports whether the connection is open: the in-memory broker is
// always reachable, so it fails only with driver.ErrClosed after Close or
// Crash.
func (d *Driver) Ping(context.Context) error {
	if d.closed.Load() {
		return fmt.Errorf("membus: ping: %w", driver.ErrClosed)
	}
	return nil
}
