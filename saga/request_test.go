package saga_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/marty-msf/eventbus/saga"
)

// gateCharge makes the payment's charge of every saga wait until the
// returned function is called; charging receives each saga id whose charge
// started.
func gateCharge(w *world) (charging chan string, open func()) {
	charging = make(chan string, 100)
	gate := make(chan struct{})
	w.hooks.set("payment.charge", func(req *saga.Request) error {
		charging <- req.SagaID
		<-gate
		return nil
	})
	closed := false
	open = func() {
		if !closed {
			closed = true
			close(gate)
		}
	}
	w.t.Cleanup(open)
	return charging, open
}

// awaitCharges waits until the charges of n sagas started.
func awaitCharges(t *testing.T, charging chan string, n int) {
	t.Helper()
	for range n {
		select {
		case <-charging:
		case <-time.After(60 * time.Second):
			t.Fatal("a charge never started")
		}
	}
}

// waitRequest waits up to a minute for the outcome of request r of saga id.
func waitRequest(t *testing.T, store saga.Store, id string, r *saga.ManagerRequest) (*saga.Instance, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	in, err := saga.WaitRequest(ctx, store, id, r.ID)
	if ctx.Err() != nil {
		t.Fatalf("request %s of saga %s not applied within a minute: %v", r.ID, id, err)
	}
	return in, err
}

// waitCancelled waits until saga id ends, and checks that it was cancelled
// while its charge ran: compensated, the charge refunded, then the
// reservation released.
func waitCancelled(t *testing.T, w *world, id string) *saga.Instance {
	t.Helper()
	in := w.wait(id)
	if in.State != saga.Compensated || in.Reason != "cancelled" {
		t.Errorf("%s: state %s reason %q, want compensated after cancel", id, in.State, in.Reason)
	}
	equal(t, id+" effects", w.effects.of(id), []string{"inventory.reserve", "payment.charge", "payment.refund", "inventory.release"})
	return in
}

// requestEntries returns the history entries about request r, as
// "kind by".
func requestEntries(in *saga.Instance, r *saga.ManagerRequest) []string {
	var out []string
	for _, ev := range in.History {
		if ev.Request == r.ID {
			out = append(out, ev.Kind+" "+ev.By)
		}
	}
	return out
}

func TestRequestCancel(t *testing.T) {
	forEachStore(t, func(t *testing.T, open func(*testing.T) saga.Store) {
		store := open(t)
		w := newWorld(t, store, worldOptions{orc: &saga.Options{Instance: "A"}})
		charging, release := gateCharge(w)
		w.start("rc", 3)
		awaitCharges(t, charging, 1)
		ctx := context.Background()
		r, err := saga.RequestCancel(ctx, store, "rc", &saga.RequestOptions{By: "ops@desk"})
		if err != nil {
			t.Fatal(err)
		}
		if r.Kind != saga.CancelRequest || r.By != "ops@desk" || r.ID == "" || time.Since(r.At) > time.Minute {
			t.Errorf("request %+v", r)
		}
		// Asked again while pending: the same request.
		if again, err := saga.RequestCancel(ctx, store, "rc", nil); err != nil || again.ID != r.ID {
			t.Errorf("second RequestCancel while pending: %+v, %v; want request %s", again, err, r.ID)
		}
		in, err := waitRequest(t, store, "rc", r)
		if err != nil {
			t.Fatalf("cancel request refused: %v", err)
		}
		if in.State != saga.Compensating || in.Request != nil {
			t.Errorf("after the request: state %s, pending %+v; want compensating with no request pending", in.State, in.Request)
		}
		// The charge completes after the cancel: the refund waits for it
		// and undoes it, then the reservation is released.
		release()
		in = waitCancelled(t, w, "rc")
		equal(t, "request's history", requestEntries(in, r), []string{"cancel.requested ops@desk", "cancel.applied A"})
		k := historyKinds(in)
		if i := slices.Index(k, "cancel.applied:"); i < 0 || k[i+1] != "saga.compensating:" {
			t.Errorf("history %v: want cancel.applied followed by saga.compensating", k)
		}
		if done, err := in.RequestOutcome(r.ID); !done || err != nil {
			t.Errorf("RequestOutcome = %v, %v; want applied", done, err)
		}
		if _, err := in.RequestOutcome("nope"); !errors.Is(err, saga.ErrUnknownRequest) {
			t.Errorf("RequestOutcome of an unknown id: %v, want ErrUnknownRequest", err)
		}

		// What the stored state tells is checked when recording.
		if _, err := saga.RequestCancel(ctx, store, "rc", nil); !errors.Is(err, saga.ErrNotRunning) {
			t.Errorf("RequestCancel of a compensated saga: %v, want ErrNotRunning", err)
		}
		if _, err := saga.RequestRetry(ctx, store, "rc", nil); !errors.Is(err, saga.ErrNotFailed) {
			t.Errorf("RequestRetry of a compensated saga: %v, want ErrNotFailed", err)
		}
		if _, err := saga.RequestCancel(ctx, store, "missing", nil); !errors.Is(err, saga.ErrNotFound) {
			t.Errorf("RequestCancel of a missing saga: %v, want ErrNotFound", err)
		}
	})
}

func TestRequestRetry(t *testing.T) {
	forEachStore(t, func(t *testing.T, open func(*testing.T) saga.Store) {
		store := open(t)
		w := newWorld(t, store, worldOptions{orc: &saga.Options{Instance: "A"}})
		w.hooks.set("payment.charge", func(*saga.Request) error { return saga.Fail(errors.New("declined")) })
		var healthy atomic.Bool
		w.hooks.set("inventory.release", func(*saga.Request) error {
			if !healthy.Load() {
				return saga.Fail(errors.New("cannot release"))
			}
			return nil
		})
		w.start("rr", 1)
		if in := w.wait("rr"); in.State != saga.Failed {
			t.Fatalf("state %s, want failed", in.State)
		}
		ctx := context.Background()
		if _, err := saga.RequestCancel(ctx, store, "rr", nil); !errors.Is(err, saga.ErrNotRunning) {
			t.Errorf("RequestCancel of a failed saga: %v, want ErrNotRunning", err)
		}
		healthy.Store(true)
		r, err := saga.RequestRetry(ctx, store, "rr", &saga.RequestOptions{By: "ops"})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := waitRequest(t, store, "rr", r); err != nil {
			t.Fatalf("retry request refused: %v", err)
		}
		in := w.wait("rr")
		if in.State != saga.Compensated {
			t.Fatalf("after the retry request: %s (%s), want compensated", in.State, in.Error)
		}
		equal(t, "effects", w.effects.of("rr"), []string{"inventory.reserve", "inventory.release"})
		equal(t, "request's history", requestEntries(in, r), []string{"retry.requested ops", "retry.applied A"})
		if in.Steps[0].State != saga.StepCompensated || in.Steps[0].CompensationAttempts != 4 {
			t.Errorf("inventory: %s after %d compensation attempts, want compensated after 4", in.Steps[0].State, in.Steps[0].CompensationAttempts)
		}
	})
}

// TestRequestRefused: a request that the stored state allowed is refused
// by the orchestrator when the saga is past its pivot, or finished before
// the request was applied; the refusal is in the history.
func TestRequestRefused(t *testing.T) {
	forEachStore(t, func(t *testing.T, open func(*testing.T) saga.Store) {
		store := open(t)
		ctx := context.Background()
		w := newWorld(t, store, worldOptions{def: checkoutWithPivot(), noRun: true, orc: &saga.Options{Instance: "A"}})
		var healthy atomic.Bool
		w.hooks.set("shipping.ship", func(req *saga.Request) error {
			if req.SagaID == "pivot" && !healthy.Load() {
				return saga.Fail(errors.New("carrier down"))
			}
			return nil
		})
		charging, release := gateCharge(w)

		// Finished meanwhile: the cancel request is recorded while the
		// saga runs, and the saga completes (its replies need no Run)
		// before an orchestrator polls.
		w.start("late", 2)
		awaitCharges(t, charging, 1)
		r, err := saga.RequestCancel(ctx, store, "late", &saga.RequestOptions{By: "ops"})
		if err != nil {
			t.Fatal(err)
		}
		release()
		in := w.wait("late")
		if in.State != saga.Completed || in.Request == nil || in.Request.ID != r.ID {
			t.Fatalf("before any poll: state %s, pending %+v; want completed with request %s pending", in.State, in.Request, r.ID)
		}
		w.run(w.orc)
		in, err = waitRequest(t, store, "late", r)
		var refused *saga.RefusedError
		if !errors.As(err, &refused) || !errors.Is(err, saga.ErrNotRunning) || refused.By != "A" || refused.Kind != saga.CancelRequest {
			t.Fatalf("outcome %v (%#v), want a refusal matching ErrNotRunning", err, err)
		}
		if in.State != saga.Completed || in.Request != nil {
			t.Errorf("after the refusal: state %s, pending %+v", in.State, in.Request)
		}
		equal(t, "late effects", w.effects.of("late"), allDone)
		equal(t, "request's history", requestEntries(in, r), []string{"cancel.requested ops", "cancel.refused A"})

		// Past the pivot, a cancel is refused and the saga goes on.
		w.start("pivot", 2)
		waitFor(t, w.orc, "pivot", func(in *saga.Instance) bool { return in.Current == 2 && in.Steps[2].Attempts >= 2 })
		r, err = saga.RequestCancel(ctx, store, "pivot", nil)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := waitRequest(t, store, "pivot", r); !errors.Is(err, saga.ErrPastPivot) {
			t.Fatalf("cancel request past the pivot: %v, want a refusal matching ErrPastPivot", err)
		}
		healthy.Store(true)
		in = w.wait("pivot")
		if in.State != saga.Completed {
			t.Fatalf("pivot: %s (%s), want completed", in.State, in.Reason)
		}
		equal(t, "pivot effects", w.effects.of("pivot"), allDone)
		if ev := in.History[slices.IndexFunc(in.History, func(e saga.Event) bool { return e.Kind == "cancel.refused" })]; ev.Error == "" {
			t.Errorf("refusal recorded without its reason: %+v", ev)
		}
	})
}

// TestRequestTakeover: the orchestrator that owns a saga dies; the request
// recorded meanwhile is applied by another one, which takes the saga over.
func TestRequestTakeover(t *testing.T) {
	forEachStore(t, func(t *testing.T, open func(*testing.T) saga.Store) {
		store := open(t)
		def := orderDefinition(stepTimeout, saga.Retry{})
		w := newWorld(t, store, worldOptions{def: def, noRun: true, orc: &saga.Options{Service: "idle"}})
		opts := func(name string) *saga.Options {
			return &saga.Options{Instance: name, PollInterval: 20 * time.Millisecond, Lease: 300 * time.Millisecond}
		}
		orcA, busA := w.orchestratorOn(store, def, opts("A"), false)
		w.orc = orcA
		w.run(orcA)
		charging, release := gateCharge(w)
		w.start("rt", 4)
		awaitCharges(t, charging, 1)
		w.stop()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := busA.Close(ctx); err != nil {
			t.Fatal(err)
		}
		r, err := saga.RequestCancel(context.Background(), store, "rt", &saga.RequestOptions{By: "ops"})
		if err != nil {
			t.Fatal(err)
		}
		in, err := orcA.Get(context.Background(), "rt")
		if err != nil || in.Owner != "A" || in.Request == nil {
			t.Fatalf("after recording: owner %q, pending %+v, %v; want A's lease kept and the request pending", in.Owner, in.Request, err)
		}

		orcB, _ := w.orchestratorOn(store, def, opts("B"), false)
		w.orc = orcB
		w.run(orcB)
		if in, err = waitRequest(t, store, "rt", r); err != nil {
			t.Fatalf("cancel request refused: %v", err)
		}
		if in.Owner != "B" {
			t.Errorf("owner %q after the request, want B", in.Owner)
		}
		release()
		in = waitCancelled(t, w, "rt")
		equal(t, "request's history", requestEntries(in, r), []string{"cancel.requested ops", "cancel.applied B"})
	})
}

// TestRequestTwoOrchestrators: two orchestrators poll the same store; each
// request is applied once.
func TestRequestTwoOrchestrators(t *testing.T) {
	forEachStore(t, func(t *testing.T, open func(*testing.T) saga.Store) {
		store := open(t)
		def := orderDefinition(stepTimeout, saga.Retry{})
		// Every charge runs at once, so that every saga is at its charge
		// when it is cancelled.
		w := newWorld(t, store, worldOptions{def: def, orc: &saga.Options{Instance: "A"}, part: &saga.ParticipantOptions{Concurrency: 16}})
		orcB, _ := w.orchestratorOn(store, def, &saga.Options{Instance: "B", PollInterval: 20 * time.Millisecond}, false)
		w.run(orcB)
		charging, release := gateCharge(w)
		const n = 12
		var ids []string
		for i := range n {
			ids = append(ids, w.start(fmt.Sprintf("r2-%02d", i), i))
		}
		awaitCharges(t, charging, n)
		requests := map[string]*saga.ManagerRequest{}
		for _, id := range ids {
			r, err := saga.RequestCancel(context.Background(), store, id, &saga.RequestOptions{By: "ops"})
			if err != nil {
				t.Fatal(err)
			}
			requests[id] = r
		}
		for _, id := range ids {
			if _, err := waitRequest(t, store, id, requests[id]); err != nil {
				t.Fatalf("%s: cancel request refused: %v", id, err)
			}
		}
		release()
		for _, id := range ids {
			in := waitCancelled(t, w, id)
			entries := requestEntries(in, requests[id])
			if len(entries) != 2 || entries[0] != "cancel.requested ops" ||
				entries[1] != "cancel.applied A" && entries[1] != "cancel.applied B" {
				t.Errorf("%s: request's history %v, want it requested and applied once", id, entries)
			}
			if k := historyKinds(in); countOf(k, "saga.compensating:") != 1 || countOf(k, "step.undo.sent:inventory") != 1 {
				t.Errorf("%s: history %v, want one compensation", id, k)
			}
		}
	})
}

func countOf(s []string, v string) int {
	n := 0
	for _, x := range s {
		if x == v {
			n++
		}
	}
	return n
}

// A pending request makes a saga due at once, whatever the state and
// whatever the requester's clock said (it may be ahead of the
// orchestrators'), before any deadline.
func TestWakeAtWithRequest(t *testing.T) {
	now := time.Now()
	atOnce := time.Unix(0, 1)
	for _, c := range []struct {
		state    saga.State
		deadline time.Time
		at       time.Time
	}{
		{saga.Failed, time.Time{}, now},
		{saga.Completed, time.Time{}, now},
		{saga.Running, now.Add(time.Minute), now},
		{saga.Running, now.Add(time.Minute), now.Add(time.Hour)},
		{saga.Failed, time.Time{}, now.Add(time.Hour)},
	} {
		in := &saga.Instance{State: c.state, Deadline: c.deadline, Request: &saga.ManagerRequest{ID: "r", Kind: saga.CancelRequest, At: c.at}}
		if got := in.WakeAt(); !got.Equal(atOnce) || !got.Before(now) {
			t.Errorf("%s, deadline %v, request at %v: WakeAt %v, want %v", c.state, c.deadline, c.at, got, atOnce)
		}
		in.Request = nil
		if got := in.WakeAt(); !got.Equal(c.deadline) {
			t.Errorf("%s, deadline %v, no request: WakeAt %v, want the deadline", c.state, c.deadline, got)
		}
	}
}

// TestRequestsOfForeignSagasDoNotStarveOwn: more due sagas than a poll's
// batch belong to a definition this orchestrator lacks (another service's,
// sharing the store), each with a retry request; the orchestrator passes
// over them and applies a cancel request on its own saga promptly.
func TestRequestsOfForeignSagasDoNotStarveOwn(t *testing.T) {
	store := openSQLite(t, t.TempDir()+"/foreign.db")
	ctx := context.Background()
	past := time.Now().Add(-time.Minute)
	for i := range 300 {
		id := fmt.Sprintf("foreign-%03d", i)
		in := &saga.Instance{ID: id, Name: "foreign", State: saga.Failed, Data: []byte("{}"),
			Steps: []saga.StepStatus{{Name: "elsewhere"}}, Created: past, Updated: past, Version: 1}
		if err := store.Create(ctx, in); err != nil {
			t.Fatal(err)
		}
		if _, err := saga.RequestRetry(ctx, store, id, nil); err != nil {
			t.Fatal(err)
		}
	}
	w := newWorld(t, store, worldOptions{})
	charging, release := gateCharge(w)
	defer release()
	w.start("own", 3)
	awaitCharges(t, charging, 1)
	r, err := saga.RequestCancel(ctx, store, "own", nil)
	if err != nil {
		t.Fatal(err)
	}
	// A few polls (20 ms apart) on a loaded machine; starved, it never
	// happens.
	wctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	if _, err := saga.WaitRequest(wctx, store, "own", r.ID); err != nil {
		t.Fatalf("cancel request of the orchestrator's own saga behind 300 foreign ones: %v", err)
	}
	release()
	waitCancelled(t, w, "own")
	// The foreign sagas keep their requests for their own orchestrator.
	in, err := store.Load(ctx, "foreign-000")
	if err != nil {
		t.Fatal(err)
	}
	if in.Request == nil || in.Request.Kind != saga.RetryRequest {
		t.Errorf("foreign saga's request: %+v, want its retry request still pending", in.Request)
	}
}
