package driver

import "context"

// Pinger is implemented by drivers that can check their connection, for
// health reports. Ping returns nil when the backend serves traffic now, an
// error matching ErrClosed when the driver is closed or its connection is
// lost for good (it will not recover: not live), and any other error while
// it is unavailable but may recover (live, not ready), for instance while
// reconnecting. Ping must return by ctx's deadline and be cheap enough to
// call every few seconds.
type Pinger interface {
	Ping(ctx context.Context) error
}
