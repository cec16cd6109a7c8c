package eventbus

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/marty-msf/eventbus/driver"
)

// Errors that callers match with errors.Is. The driver sentinels are the same
// values, so an error from any layer matches.
var (
	// ErrClosed: the bus (or a driver) was closed.
	ErrClosed = driver.ErrClosed
	// ErrNoResponders: a query found nobody handling it.
	ErrNoResponders = driver.ErrNoResponders
	// ErrTooLarge: a message exceeds its backend's MaxMessageSize; it was not
	// sent. errors.As with *driver.TooLargeError gives the sizes.
	ErrTooLarge = driver.ErrTooLarge
	// ErrMalformed: a received message is not a valid envelope.
	ErrMalformed = driver.ErrMalformed
	// ErrInvalid: a message to publish has an attribute, extension or header
	// that cannot travel unchanged on every backend (control characters,
	// surrounding white space, an extension name outside the CloudEvents
	// rule...). It was not sent; errors.As with *driver.InvalidError names the
	// field.
	ErrInvalid = driver.ErrInvalid
	// ErrDuplicate: the backend recognised the message as a duplicate of one
	// it stored already (same source, id and destination) and did not store
	// it again. A caller that retries a publish may take it as success.
	ErrDuplicate = driver.ErrDuplicate
	// ErrTimeout: a query got no reply before its deadline. Errors matching it
	// also match context.DeadlineExceeded.
	ErrTimeout = errors.New("timeout")
	// ErrInvalidName: an empty or malformed type, service, stream or group name.
	ErrInvalidName = errors.New("invalid name")
	// ErrNilHandler: a nil handler was registered.
	ErrNilHandler = errors.New("nil handler")
	// ErrDuplicateHandler: a handler for the same destination and group is
	// already registered on this bus.
	ErrDuplicateHandler = errors.New("duplicate handler")
	// ErrUnknownBackend: a route or option names a backend that is not
	// registered.
	ErrUnknownBackend = errors.New("unknown backend")
	// ErrNoBackend: no registered backend can serve a destination.
	ErrNoBackend = errors.New("no backend")
	// ErrCapability: a backend lacks a capability that a route or handler
	// needs.
	ErrCapability = errors.New("missing capability")
	// ErrStarted: the operation is only allowed before Start.
	ErrStarted = errors.New("bus already started")
	// ErrNotStarted: the operation needs a started bus.
	ErrNotStarted = errors.New("bus not started")
)

// ConfigError lists every configuration problem that Start found. It unwraps
// to each of them, so errors.Is(err, ErrUnknownBackend) works.
type ConfigError struct {
	Problems []error
}

func (e *ConfigError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "eventbus: invalid configuration (%d problem", len(e.Problems))
	if len(e.Problems) != 1 {
		b.WriteByte('s')
	}
	b.WriteString("):")
	for _, p := range e.Problems {
		b.WriteString("\n  - ")
		b.WriteString(p.Error())
	}
	return b.String()
}

// Unwrap returns the problems.
func (e *ConfigError) Unwrap() []error { return e.Problems }

// RemoteError is a query handler's error, carried back to the caller of Query.
// Code is the handler's error code (see [Errorf]), empty when it gave none.
type RemoteError struct {
	Service string
	Type    string
	Code    string
	Message string
}

func (e *RemoteError) Error() string {
	if e.Code != "" {
		return fmt.Sprintf("eventbus: query %s.%s failed remotely: %s: %s", e.Service, e.Type, e.Code, e.Message)
	}
	return fmt.Sprintf("eventbus: query %s.%s failed remotely: %s", e.Service, e.Type, e.Message)
}

// CodedError is an error with a machine-readable code, carried to a remote
// caller as RemoteError.Code. Build one with Errorf.
type CodedError struct {
	Code string
	Err  error
}

func (e *CodedError) Error() string { return e.Code + ": " + e.Err.Error() }

// Unwrap returns the wrapped error.
func (e *CodedError) Unwrap() error { return e.Err }

// Errorf returns an error carrying code, formatted like fmt.Errorf. A query
// handler returns it to give the caller a RemoteError with that Code.
func Errorf(code, format string, args ...any) error {
	return &CodedError{Code: code, Err: fmt.Errorf(format, args...)}
}

// DecodeError reports data that could not be decoded into the handler's type.
// Typed handlers return it as a permanent error: the message is dead-lettered
// with the error as its reason, not retried.
//
// Like FilterError, SchemaError and PanicError, its message names no
// package: the operation that returns it adds "eventbus: " and its own
// context, once.
type DecodeError struct {
	ContentType string
	Target      string
	Err         error
}

func (e *DecodeError) Error() string {
	return fmt.Sprintf("decode %q data into %s: %v", e.ContentType, e.Target, e.Err)
}

// Unwrap returns the codec's error.
func (e *DecodeError) Unwrap() error { return e.Err }

type permanentError struct{ err error }

func (e *permanentError) Error() string { return e.err.Error() }
func (e *permanentError) Unwrap() error { return e.err }

// Permanent marks err as not worth retrying: a handler that returns it has its
// message dead-lettered at once. Permanent(nil) is nil.
func Permanent(err error) error {
	if err == nil {
		return nil
	}
	return &permanentError{err: err}
}

// IsPermanent reports whether err (or any error it wraps) was marked Permanent.
func IsPermanent(err error) bool {
	var p *permanentError
	return errors.As(err, &p)
}

// timeoutError is returned by Query when its deadline passes.
type timeoutError struct{ what string }

func (e *timeoutError) Error() string { return "eventbus: " + e.what + ": timeout" }

func (e *timeoutError) Is(target error) bool {
	return target == ErrTimeout || target == context.DeadlineExceeded
}

// PanicError is the error a handler's panic becomes.
type PanicError struct {
	Value any
	Stack []byte
}

func (e *PanicError) Error() string { return fmt.Sprintf("handler panicked: %v", e.Value) }
