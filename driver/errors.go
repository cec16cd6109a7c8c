package driver

import (
	"errors"
	"fmt"
)

// Sentinels that drivers return (wrapped, so errors.Is matches) and that the
// eventbus package re-exports.
var (
	// ErrClosed: the driver or subscription was closed.
	ErrClosed = errors.New("closed")
	// ErrNoResponders: nobody subscribes to the request's destination.
	ErrNoResponders = errors.New("no responders")
	// ErrTooLarge: a message exceeds the driver's MaxMessageSize.
	ErrTooLarge = errors.New("message too large")
	// ErrMalformed: a received message is not a valid envelope.
	ErrMalformed = errors.New("malformed message")
	// ErrUnsupported: the driver cannot do what was asked (a capability it
	// does not have).
	ErrUnsupported = errors.New("unsupported")
	// ErrInvalid: a message to publish has an attribute, extension or header
	// that cannot travel unchanged (see CheckEnvelope). It was not sent.
	ErrInvalid = errors.New("invalid message")
	// ErrDuplicate: the broker recognised a published message as a duplicate
	// of one it already stored (same source, id and destination within its
	// de-duplication window) and did not store it again. A caller retrying a
	// publish may treat it as success; anyone else learns that the message
	// was not delivered a second time.
	ErrDuplicate = errors.New("duplicate message")
	// ErrUnavailable: the broker cannot be reached; the operation may succeed
	// when retried.
	ErrUnavailable = errors.New("broker unavailable")
)

// TooLargeError reports a message refused before the wire because its Size
// exceeds the limit. It matches ErrTooLarge.
type TooLargeError struct {
	Size  int
	Limit int
}

func (e *TooLargeError) Error() string {
	return fmt.Sprintf("message too large: %d bytes, limit %d", e.Size, e.Limit)
}

// Is reports whether target is ErrTooLarge.
func (e *TooLargeError) Is(target error) bool { return target == ErrTooLarge }

// CheckSize returns a *TooLargeError for the first message of msgs whose Size
// exceeds limit. A limit of zero or less means no limit.
func CheckSize(msgs []*Message, limit int) error {
	if limit <= 0 {
		return nil
	}
	for _, m := range msgs {
		if s := m.Size(); s > limit {
			return &TooLargeError{Size: s, Limit: limit}
		}
	}
	return nil
}

// MalformedError reports a received message that cannot be read as an
// envelope. It matches ErrMalformed.
type MalformedError struct {
	Reason string
	Err    error
}

func (e *MalformedError) Error() string {
	if e.Err != nil {
		return "malformed message: " + e.Reason + ": " + e.Err.Error()
	}
	return "malformed message: " + e.Reason
}

// Is reports whether target is ErrMalformed.
func (e *MalformedError) Is(target error) bool { return target == ErrMalformed }

// Unwrap returns the underlying error, if any.
func (e *MalformedError) Unwrap() error { return e.Err }
