package config

import (
	"context"
	"errors"
	"io"
	"path/filepath"

	"github.com/marty-msf/eventbus"
	"github.com/marty-msf/eventbus/driver"
	"github.com/marty-msf/eventbus/saga"
)

// Options returns base completed by the configuration: the file's values
// replace base's where the file sets them, routes of the file come before
// base's. base may be nil; it is not modified. Use it for what a file
// cannot say: Logger, Middleware, Codec.
func (c *Config) Options(base *eventbus.Options) *eventbus.Options {
	var o eventbus.Options
	if base != nil {
		o = *base
	}
	if c.Source != "" {
		o.Source = c.Source
	}
	if c.Instance != "" {
		o.Instance = c.Instance
	}
	if c.DefaultBackend != "" {
		o.DefaultBackend = c.DefaultBackend
	}
	if c.QueryTimeout > 0 {
		o.QueryTimeout = c.QueryTimeout
	}
	if c.Retry.MaxAttempts > 0 {
		o.Retry.MaxAttempts = c.Retry.MaxAttempts
	}
	if c.Retry.InitialBackoff > 0 {
		o.Retry.InitialBackoff = c.Retry.InitialBackoff
	}
	if c.Retry.MaxBackoff > 0 {
		o.Retry.MaxBackoff = c.Retry.MaxBackoff
	}
	if c.Schemas != nil {
		o.Schemas = c.Schemas
	}
	o.Routes = append(append([]eventbus.Route(nil), c.Routes...), o.Routes...)
	return &o
}

// NewBus returns a bus with the configuration's options (over base, see
// Options) and every backend opened and registered; register handlers and
// Start it. It opens all backends it can and reports each failure as a
// *Problem at the backend's url, in an *Error; on error it closes what it
// opened. Errors never contain a secret of the configuration.
func (c *Config) NewBus(ctx context.Context, base *eventbus.Options) (*eventbus.Bus, error) {
	b := eventbus.New(c.Options(base))
	var problems []*Problem
	for _, be := range c.Backends {
		if err := b.RegisterURL(ctx, be.Name, be.URL); err != nil {
			key := "backends." + be.Name + ".url"
			pos := c.pos[key]
			if pos.file == "" {
				pos.file = c.File // the embedded default
			}
			problems = append(problems, &Problem{File: pos.file, Line: pos.line, Column: pos.column, Key: key, Err: err})
		}
	}
	if len(problems) > 0 {
		_ = b.Close(context.WithoutCancel(ctx))
		return nil, c.redact(&Error{Problems: problems})
	}
	return b, nil
}

// DefaultSagaStore is the saga store's URL when the configuration declares
// none: a SQLite file in the data directory.
func (c *Config) DefaultSagaStore() string {
	return "sqlite:" + filepath.ToSlash(filepath.Join(c.DataDir, "saga.db"))
}

// OpenSagaStore opens the declared saga store, or DefaultSagaStore when
// none is declared, through saga.OpenStore: the program imports the
// package of its scheme (saga/sqlstore for postgres:// and sqlite:). Close
// it, when it implements io.Closer, after the orchestrator. Errors are an
// *Error with one *Problem at saga.store.
func (c *Config) OpenSagaStore(ctx context.Context) (saga.Store, error) {
	raw := c.SagaStore
	if raw == "" {
		raw = c.DefaultSagaStore()
	}
	s, err := saga.OpenStore(ctx, raw)
	if err != nil {
		pos := c.pos["saga.store"]
		if pos.file == "" {
			pos.file = c.File
		}
		return nil, c.redact(&Error{Problems: []*Problem{{File: pos.file, Line: pos.line, Column: pos.column, Key: "saga.store", Err: err}}})
	}
	return s, nil
}

// Setup is what Open builds.
type Setup struct {
	Config *Config
	// Bus has every backend registered and is not started.
	Bus *eventbus.Bus
	// SagaStore is open when the configuration declares one, else nil.
	SagaStore saga.Store
}

// Close closes the bus and then the saga store.
func (s *Setup) Close(ctx context.Context) error {
	err := s.Bus.Close(ctx)
	if c, ok := s.SagaStore.(io.Closer); ok {
		err = errors.Join(err, c.Close())
	}
	return err
}

// Open loads the file at path (see Load), builds the bus (see NewBus, base
// completes the options) and, when the file declares one, opens the saga
// store. On error nothing is left open.
func Open(ctx context.Context, path string, base *eventbus.Options, opts *Options) (*Setup, error) {
	c, err := Load(path, opts)
	if err != nil {
		return nil, err
	}
	return c.Open(ctx, base)
}

// Open builds what the configuration describes; see the function Open.
func (c *Config) Open(ctx context.Context, base *eventbus.Options) (*Setup, error) {
	b, err := c.NewBus(ctx, base)
	if err != nil {
		return nil, err
	}
	s := &Setup{Config: c, Bus: b}
	if c.SagaStore != "" {
		if s.SagaStore, err = c.OpenSagaStore(ctx); err != nil {
			_ = b.Close(context.WithoutCancel(ctx))
			return nil, err
		}
	}
	return s, nil
}

// Redact returns err with every secret of the configuration hidden, for
// errors that the program makes itself from configuration values.
func (c *Config) Redact(err error) error { return driver.RedactError(err, c.secrets...) }
