package saga

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"
)

// RequestKind is what a manager request asks for.
type RequestKind string

// The kinds of manager requests.
const (
	// CancelRequest asks to cancel a running saga, as Orchestrator.Cancel.
	CancelRequest RequestKind = "cancel"
	// RetryRequest asks to resume a Failed saga's compensation, as
	// Orchestrator.Retry.
	RetryRequest RequestKind = "retry"
)

// Errors of manager requests; match them with errors.Is.
var (
	// ErrRequestPending: the saga has a request of another kind that no
	// orchestrator has applied yet.
	ErrRequestPending = errors.New("another request is pending")
	// ErrUnknownRequest: an orchestrator refused a request of a kind it
	// does not know (recorded by a newer version of the package), or
	// RequestOutcome was given an id the saga has no trace of.
	ErrUnknownRequest = errors.New("unknown request")
)

// ManagerRequest is a request to cancel a saga or to retry its compensation,
// recorded in its store by RequestCancel or RequestRetry for an orchestrator
// that has the saga's definition to apply (Instance.Request).
type ManagerRequest struct {
	// ID is random; the saga's history entries about the request carry it.
	ID   string
	Kind RequestKind
	// By is who made the request, as RequestOptions.By gave it.
	By string `json:",omitempty"`
	// At is when it was made; the saga is due from then on.
	At time.Time
}

// RequestOptions tunes RequestCancel and RequestRetry. nil means defaults.
type RequestOptions struct {
	// By says who makes the request (a person, a tool), for the saga's
	// history. Default empty.
	By string
}

// RequestCancel records in store a request to cancel the running saga id,
// for a program that does not have the saga's definition (the eventbus CLI,
// an operator's tool). Any orchestrator instance on store that registered
// the definition applies it at its next poll (Options.PollInterval), with
// the rules of Orchestrator.Cancel, and records the outcome in the saga's
// history: "cancel.applied", or "cancel.refused" with the reason (the saga
// is past its pivot, or finished meanwhile). WaitRequest waits for it.
//
// RequestCancel checks what the stored state tells: it fails with an error
// matching ErrNotFound when there is no saga id and ErrNotRunning when the
// saga is not running. A cancel request already pending is returned as it
// is, without recording another.
func RequestCancel(ctx context.Context, store Store, id string, opts *RequestOptions) (*ManagerRequest, error) {
	return request(ctx, store, id, CancelRequest, opts)
}

// RequestRetry records in store a request to resume the compensation of the
// Failed saga id, like RequestCancel: an orchestrator that has the saga's
// definition applies it with the rules of Orchestrator.Retry and records
// "retry.applied" or "retry.refused". It fails with an error matching
// ErrNotFound, ErrNotFailed when the saga is not Failed, or
// ErrRequestPending when a cancel request recorded while the saga ran is
// still pending; a retry request already pending is returned.
func RequestRetry(ctx context.Context, store Store, id string, opts *RequestOptions) (*ManagerRequest, error) {
	return request(ctx, store, id, RetryRequest, opts)
}

func request(ctx context.Context, store Store, id string, kind RequestKind, opts *RequestOptions) (*ManagerRequest, error) {
	var by string
	if opts != nil {
		by = opts.By
	}
	for {
		in, err := store.Load(ctx, id)
		if err != nil {
			return nil, fmt.Errorf("saga: %s request: %w", kind, err)
		}
		switch {
		case kind == CancelRequest && in.State != Running:
			return nil, fmt.Errorf("saga: cancel %s (%s): %w", id, in.State, ErrNotRunning)
		case kind == RetryRequest && in.State != Failed:
			return nil, fmt.Errorf("saga: retry %s (%s): %w", id, in.State, ErrNotFailed)
		}
		if r := in.Request; r != nil {
			if r.Kind == kind {
				return r, nil
			}
			return nil, fmt.Errorf("saga: %s %s: %w: %s, made at %s", kind, id, ErrRequestPending, r.Kind, r.At.Format(time.RFC3339))
		}
		now := time.Now()
		r := &ManagerRequest{ID: randomID(), Kind: kind, By: by, At: now}
		next := in.clone()
		next.Request = r
		next.History = append(next.History, Event{Time: now, Kind: string(kind) + ".requested", Request: r.ID, By: by})
		next.Version, next.Updated = in.Version+1, now
		// The version check makes the request and a concurrent transition
		// exclusive: whichever loses reloads and sees the other's change.
		if err := store.RecordRequest(ctx, next); errors.Is(err, ErrConflict) {
			continue
		} else if err != nil {
			return nil, fmt.Errorf("saga: %s request: %w", kind, err)
		}
		return r, nil
	}
}

// RequestOutcome reports what became of the manager request requestID of
// the saga: done false while it is pending; done true with a nil error once
// an orchestrator applied it, or with a *RefusedError once one refused it.
// An id the saga has no trace of fails with ErrUnknownRequest.
func (in *Instance) RequestOutcome(requestID string) (done bool, err error) {
	for i := len(in.History) - 1; i >= 0; i-- {
		ev := in.History[i]
		if ev.Request != requestID {
			continue
		}
		kind, outcome, _ := strings.Cut(ev.Kind, ".")
		switch outcome {
		case "applied":
			return true, nil
		case "refused":
			return true, &RefusedError{SagaID: in.ID, RequestID: requestID, Kind: RequestKind(kind), Reason: ev.Error, By: ev.By}
		}
	}
	if in.Request != nil && in.Request.ID == requestID {
		return false, nil
	}
	return false, fmt.Errorf("saga %s: request %s: %w", in.ID, requestID, ErrUnknownRequest)
}

// RefusedError is the outcome of a manager request that an orchestrator
// refused. It matches, with errors.Is, the error that Orchestrator.Cancel or
// Retry would have returned: ErrNotRunning, ErrPastPivot, ErrNotFailed.
type RefusedError struct {
	SagaID    string
	RequestID string
	Kind      RequestKind
	// Reason is the error Cancel or Retry would have returned, as text.
	Reason string
	// By is the orchestrator instance that refused the request.
	By string
}

func (e *RefusedError) Error() string { return e.Reason }

// Unwrap returns the sentinel error the refusal's reason names.
func (e *RefusedError) Unwrap() error {
	for _, s := range []error{ErrNotRunning, ErrPastPivot, ErrNotFailed, ErrUnknownRequest} {
		if strings.HasSuffix(e.Reason, s.Error()) {
			return s
		}
	}
	return nil
}

// WaitRequest waits until an orchestrator applied or refused the manager
// request requestID of saga id, polling store, and returns the instance as
// it was then: with a nil error when the request was applied, with a
// *RefusedError when it was refused. It returns ctx's error when ctx ends
// first: the request stays recorded, and an orchestrator applies it when one
// runs.
func WaitRequest(ctx context.Context, store Store, id, requestID string) (*Instance, error) {
	delay := 20 * time.Millisecond
	for {
		in, err := store.Load(ctx, id)
		if err != nil {
			return nil, fmt.Errorf("saga: wait for request %s: %w", requestID, err)
		}
		if done, err := in.RequestOutcome(requestID); done || err != nil {
			return in, err
		}
		select {
		case <-ctx.Done():
			return in, fmt.Errorf("saga: wait for request %s of saga %s: %w", requestID, id, ctx.Err())
		case <-time.After(delay):
		}
		delay = min(2*delay, 500*time.Millisecond)
	}
}
