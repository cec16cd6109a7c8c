package saga_test

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/marty-msf/eventbus/saga"
)

// deadHolder leaves the record of a step's command as a participant process
// killed while running the handler leaves it: claimed, not done, no longer
// renewed, expiring at until.
func deadHolder(t *testing.T, store saga.Store, service, sagaID, step string, until time.Time) {
	t.Helper()
	key := service + "/" + sagaID + "/" + step + "/do"
	if _, claimed, err := store.Claim(context.Background(), key, "killed-process", until); err != nil || !claimed {
		t.Fatalf("claim %s: %v %v", key, claimed, err)
	}
}

// A step whose handler's process died is taken over by a later attempt
// once the dead claim expires, well before the step's attempts are spent.
func TestDeadHolderStepTakenOver(t *testing.T) {
	forEachStore(t, func(t *testing.T, open func(*testing.T) saga.Store) {
		store := open(t)
		deadHolder(t, store, "payment", "d1", "payment", time.Now().Add(1500*time.Millisecond))
		w := newWorld(t, store, worldOptions{def: shortStep("payment", time.Second, saga.Retry{Attempts: 8}), part: &saga.ParticipantOptions{Claim: time.Second}})
		var resumed atomic.Bool
		w.hooks.set("payment.charge", func(req *saga.Request) error {
			resumed.Store(req.Resumed)
			return nil
		})
		w.start("d1", 5)
		in := w.wait("d1")
		if in.State != saga.Completed {
			t.Fatalf("state %s (%s), want completed", in.State, in.Reason)
		}
		equal(t, "effects", w.effects.of("d1"), allDone)
		if !resumed.Load() {
			t.Error("the handler that took the dead claim over did not see Request.Resumed")
		}
	})
}

// A compensation takes over the record of a step whose handler's process
// died, bars the step, and runs as Uncertain: the step may have taken
// effect.
func TestDeadHolderCompensation(t *testing.T) {
	forEachStore(t, func(t *testing.T, open func(*testing.T) saga.Store) {
		store := open(t)
		deadHolder(t, store, "payment", "d2", "payment", time.Now().Add(1500*time.Millisecond))
		def := shortStep("payment", 200*time.Millisecond, saga.Retry{Attempts: 2})
		def.CompensationRetry = saga.Retry{Attempts: 30, Backoff: 100 * time.Millisecond}
		// The step's commands find no handler: redelivered once the dead
		// claim expired, they would race the compensation for the record,
		// and either winner is correct.
		w := newWorld(t, store, worldOptions{def: def, part: &saga.ParticipantOptions{Claim: time.Second}, skip: map[string]bool{"payment.charge": true}})
		var uncertain atomic.Bool
		w.hooks.set("payment.refund", func(req *saga.Request) error {
			uncertain.Store(req.Uncertain && req.Reply == nil)
			return nil
		})
		w.start("d2", 5)
		in := w.wait("d2")
		if in.State != saga.Compensated {
			t.Fatalf("state %s (%s, %s), want compensated", in.State, in.Reason, in.Error)
		}
		equal(t, "effects", w.effects.of("d2"), []string{"inventory.reserve", "payment.refund", "inventory.release"})
		equal(t, "steps", stepStates(in), []saga.StepState{saga.StepCompensated, saga.StepCompensated, saga.StepPending})
		if !uncertain.Load() {
			t.Error("the compensation of a step whose handler died did not see Request.Uncertain")
		}
	})
}

// A compensation that gave up while a step's dead holder still seemed alive
// fails the saga; Retry finishes it once the claim has expired.
func TestRetryAfterDeadHolder(t *testing.T) {
	forEachStore(t, func(t *testing.T, open func(*testing.T) saga.Store) {
		store := open(t)
		until := time.Now().Add(3 * time.Second)
		deadHolder(t, store, "payment", "d3", "payment", until)
		def := shortStep("payment", 200*time.Millisecond, saga.Retry{Attempts: 2})
		def.CompensationRetry = saga.Retry{Attempts: 2, Backoff: 20 * time.Millisecond}
		w := newWorld(t, store, worldOptions{def: def, part: &saga.ParticipantOptions{Claim: time.Second}})
		var charged, resumed, uncertain atomic.Int32
		w.hooks.set("payment.charge", func(req *saga.Request) error {
			charged.Add(1)
			if req.Resumed {
				resumed.Add(1)
			}
			return nil
		})
		w.hooks.set("payment.refund", func(req *saga.Request) error {
			if req.Uncertain && req.Reply == nil {
				uncertain.Add(1)
			}
			return nil
		})
		// Once the dead claim expires, the charge's commands (still
		// redelivered, as the bus does with a command whose record was
		// busy) and the refund race for the record. Either winner is
		// correct: the charge runs, resumed, and the refund undoes it with
		// its reply; or the refund bars the charge and runs uncertain.
		// Never a charge after the refund, nor one left standing.
		check := func(in *saga.Instance) {
			t.Helper()
			got := w.effects.of("d3")
			if charged.Load() > 0 {
				equal(t, "effects", got, []string{"inventory.reserve", "payment.charge", "payment.refund", "inventory.release"})
				if resumed.Load() != 1 || uncertain.Load() != 0 {
					t.Errorf("the charge that took the dead claim over: resumed %d times; its refund uncertain %d times; want 1 and 0", resumed.Load(), uncertain.Load())
				}
			} else {
				equal(t, "effects", got, []string{"inventory.reserve", "payment.refund", "inventory.release"})
				if uncertain.Load() != 1 {
					t.Errorf("the refund of a charge whose handler died ran %d times as uncertain, want once", uncertain.Load())
				}
			}
			equal(t, "steps", stepStates(in), []saga.StepState{saga.StepCompensated, saga.StepCompensated, saga.StepPending})
		}
		w.start("d3", 5)
		in := w.wait("d3")
		if in.State != saga.Failed {
			// The machine was too slow to fail it before the claim
			// expired; then it must have compensated.
			if in.State != saga.Compensated {
				t.Fatalf("state %s, want failed or compensated", in.State)
			}
			check(in)
			t.Skip("compensated before the claim expired; nothing to retry")
		}
		// Retry once the dead claim has expired (or a redelivered charge
		// has finished it). A charge that took the record over just then
		// may hold it through the refund's two short attempts: the saga
		// fails again, and the operator retries again.
		for retries := 1; in.State == saga.Failed; retries++ {
			if retries > 20 {
				t.Fatalf("still failed after %d retries: %s", retries-1, in.Error)
			}
			waitUntil(t, func() bool {
				rec, err := store.Lookup(context.Background(), "payment/d3/payment/do")
				return err == nil && rec != nil && (rec.Done || !rec.Until.After(time.Now()))
			})
			if err := w.orc.Retry(context.Background(), "d3"); err != nil {
				t.Fatal(err)
			}
			in = w.wait("d3")
		}
		if in.State != saga.Compensated {
			t.Fatalf("after Retry: state %s (%s), want compensated", in.State, in.Error)
		}
		check(in)
		// A charge command delivered after the refund finds the step
		// barred.
		rec, err := store.Lookup(context.Background(), "payment/d3/payment/do")
		if err != nil || rec == nil || !rec.Done {
			t.Errorf("the charge's record after compensation: %+v, %v; want it done", rec, err)
		}
	})
}

// A handler running longer than the participant's Claim keeps its claim:
// later attempts wait for its outcome instead of running it again.
func TestClaimRenewedWhileRunning(t *testing.T) {
	forEachStore(t, func(t *testing.T, open func(*testing.T) saga.Store) {
		w := newWorld(t, open(t), worldOptions{def: shortStep("payment", 400*time.Millisecond, saga.Retry{Attempts: 20}), part: &saga.ParticipantOptions{Claim: 300 * time.Millisecond}})
		var runs atomic.Int32
		w.hooks.set("payment.charge", func(req *saga.Request) error {
			if runs.Add(1) == 1 {
				time.Sleep(1500 * time.Millisecond) // a long charge: five claim periods
			}
			return nil
		})
		w.start("long", 5)
		in := w.wait("long")
		if in.State != saga.Completed {
			t.Fatalf("state %s (%s), want completed", in.State, in.Reason)
		}
		if n := runs.Load(); n != 1 {
			t.Errorf("charge handler ran %d times, want 1", n)
		}
		if in.Steps[1].Attempts < 2 {
			t.Errorf("%d attempts of the charge; the test wants attempts that overlap the long run", in.Steps[1].Attempts)
		}
		equal(t, "effects", w.effects.of("long"), allDone)
	})
}

// waitUntil waits, with a generous bound, until cond holds.
func waitUntil(t *testing.T, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(30 * time.Second); !cond(); {
		if time.Now().After(deadline) {
			t.Fatal("condition not reached in 30s")
		}
		time.Sleep(20 * time.Millisecond)
	}
}
