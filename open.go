package eventbus

import (
	"context"
	"fmt"

	"github.com/marty-msf/eventbus/driver"
)

// RegisterURL opens a backend from a URL and registers it under name, like
// Register. The URL's scheme must have been registered by an imported driver
// package (see driver.OpenURL): mem:// by membus; nats://, tls:// and the
// embedded server embedded:dir by natsbus. The driver logs to the bus's
// Logger and names its connection after the bus's Source, unless the URL
// says otherwise. Errors never contain the URL's credentials.
//
// The zero-configuration default, an in-process NATS server with JetStream
// file storage in a local folder, is one such URL:
//
//	import _ "github.com/marty-msf/eventbus/natsbus"
//
//	err := bus.RegisterURL(ctx, "embedded", "embedded:eventbus-data")
func (b *Bus) RegisterURL(ctx context.Context, name, rawURL string) error {
	if err := validateToken("backend name", name); err != nil {
		return fmt.Errorf("eventbus: register backend: %w", err)
	}
	if b.closed.Load() {
		return fmt.Errorf("eventbus: register backend %q: %w", name, ErrClosed)
	}
	d, err := driver.OpenURL(ctx, rawURL, &driver.OpenOptions{Logger: b.opts.Logger, ClientName: b.source})
	if err != nil {
		return fmt.Errorf("eventbus: register backend %q: %w", name, err)
	}
	if err := b.Register(name, d); err != nil {
		_ = d.Close(context.WithoutCancel(ctx))
		return err
	}
	return nil
}

// Open returns a bus configured by opts on the one backend rawURL names,
// registered under the URL's scheme ("embedded", "nats", "mem"...). See
// RegisterURL. Register further backends and handlers, then Start.
//
//	import _ "github.com/marty-msf/eventbus/natsbus" // embedded: and nats://
//
//	bus, err := eventbus.Open(ctx, "embedded:eventbus-data", nil)
func Open(ctx context.Context, rawURL string, opts *Options) (*Bus, error) {
	u, _, err := driver.ParseURL(rawURL)
	if err != nil {
		return nil, fmt.Errorf("eventbus: open: %w", err)
	}
	b := New(opts)
	if err := b.RegisterURL(ctx, schemeName(u.Scheme), rawURL); err != nil {
		_ = b.Close(context.WithoutCancel(ctx))
		return nil, err
	}
	return b, nil
}

// schemeName makes a backend name of a URL scheme: sns+sqs becomes sns-sqs.
func schemeName(scheme string) string {
	out := []byte(scheme)
	for i, c := range out {
		if c == '+' || c == '.' {
			out[i] = '-'
		}
	}
	return string(out)
}
