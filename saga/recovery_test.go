package saga_test

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/marty-msf/eventbus"
	"github.com/marty-msf/eventbus/saga"
)

// orchestratorOn adds an orchestrator with its own bus on w's broker.
func (w *world) orchestratorOn(store saga.Store, def saga.Definition, opts *saga.Options, duplicate bool) (*saga.Orchestrator, *eventbus.Bus) {
	w.t.Helper()
	b := eventbus.New(busOptions(duplicate))
	if err := b.Register("mem", w.broker.Connect()); err != nil {
		w.t.Fatal(err)
	}
	orc, err := saga.NewOrchestrator(b, store, opts)
	if err != nil {
		w.t.Fatal(err)
	}
	if err := orc.Register(def); err != nil {
		w.t.Fatal(err)
	}
	w.startBus(b)
	return orc, b
}

func TestRestartResumes(t *testing.T) {
	forEachStore(t, func(t *testing.T, open func(*testing.T) saga.Store) {
		store := open(t)
		// Only the charge times out; it has attempts enough to outlast a
		// busy machine between its takeover and the end of the test.
		def := shortStep("payment", 300*time.Millisecond, saga.Retry{Attempts: 200})
		// The world's bus holds the participants; A and B have buses of
		// their own, as separate processes would.
		w := newWorld(t, store, worldOptions{def: def, noRun: true, orc: &saga.Options{Service: "idle"}})
		orcA, busA := w.orchestratorOn(store, def, &saga.Options{Instance: "A", PollInterval: 20 * time.Millisecond, Lease: 300 * time.Millisecond}, false)
		w.orc = orcA
		w.run(orcA)
		gate := make(chan struct{})
		charging := make(chan struct{})
		var once sync.Once
		w.hooks.set("payment.charge", func(req *saga.Request) error {
			if req.Attempt == 1 {
				once.Do(func() { close(charging) })
				<-gate
			}
			return nil
		})
		w.start("r1", 9)
		// A goes down while the charge runs: the first attempt's handler
		// has started (not merely been sent, which A may not finish when
		// it stops).
		select {
		case <-charging:
		case <-time.After(60 * time.Second):
			t.Fatal("the charge never started")
		}
		w.stop()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := busA.Close(ctx); err != nil {
			t.Fatal(err)
		}
		// The charge's deadline and A's lease pass while no orchestrator
		// runs.
		in, err := orcA.Get(context.Background(), "r1")
		if err != nil {
			t.Fatal(err)
		}
		waitUntil(t, func() bool { return time.Now().After(in.Deadline) && time.Now().After(in.LeaseUntil) })

		orcB, _ := w.orchestratorOn(store, def, &saga.Options{Instance: "B", PollInterval: 20 * time.Millisecond, Lease: 300 * time.Millisecond}, false)
		w.run(orcB)
		w.orc = orcB
		// B fires the timeout and sends the next attempt, which waits at
		// the participant for the first one's outcome.
		waitFor(t, orcB, "r1", func(in *saga.Instance) bool { return in.Steps[1].Attempt >= 2 })
		close(gate)
		in = w.wait("r1")
		if in.State != saga.Completed {
			t.Fatalf("state %s (%s), want completed", in.State, in.Reason)
		}
		equal(t, "effects", w.effects.of("r1"), allDone)
		if in.Owner != "B" {
			t.Errorf("owner %q, want B", in.Owner)
		}
		if !slices.Contains(historyKinds(in), "step.do.timeout:payment") {
			t.Errorf("no timeout in history: %v", historyKinds(in))
		}
	})
}

func TestTwoOrchestrators(t *testing.T) {
	forEachStore(t, func(t *testing.T, open func(*testing.T) saga.Store) {
		store := open(t)
		def := orderDefinition(stepTimeout, saga.Retry{})
		w := newWorld(t, store, worldOptions{def: def, duplicate: true, orc: &saga.Options{Instance: "A"}})
		orcB, _ := w.orchestratorOn(store, def, &saga.Options{Instance: "B", PollInterval: 20 * time.Millisecond}, true)
		w.run(orcB)
		w.hooks.set("payment.charge", func(req *saga.Request) error {
			if req.SagaID[len(req.SagaID)-1] == '3' {
				return saga.Fail(fmt.Errorf("declined"))
			}
			return nil
		})
		const n = 40
		for i := range n {
			orc := w.orc
			if i%2 == 1 {
				orc = orcB
			}
			if _, err := orc.Start(context.Background(), "order", orderData{Order: "x", Amount: i}, saga.WithID(fmt.Sprintf("two-%02d", i))); err != nil {
				t.Fatal(err)
			}
		}
		for i := range n {
			id := fmt.Sprintf("two-%02d", i)
			in := w.wait(id)
			want, state := allDone, saga.Completed
			if id[len(id)-1] == '3' {
				want, state = []string{"inventory.reserve", "inventory.release"}, saga.Compensated
			}
			if in.State != state {
				t.Errorf("%s: %s, want %s", id, in.State, state)
			}
			equal(t, id+" effects", w.effects.of(id), want)
			seen := map[string]bool{}
			for _, k := range historyKinds(in) {
				if seen[k] && k != "takeover:" {
					t.Errorf("%s: transition %s applied twice: %v", id, k, historyKinds(in))
				}
				seen[k] = true
			}
		}
	})
}

// TestTakeoverResends: an orchestrator persists a saga's start but cannot
// send its first command; another instance takes the saga over and sends it.
func TestTakeoverResends(t *testing.T) {
	forEachStore(t, func(t *testing.T, open func(*testing.T) saga.Store) {
		store := open(t)
		w := newWorld(t, store, worldOptions{orc: &saga.Options{Instance: "B", Lease: 200 * time.Millisecond}})
		// A's bus never starts: every send fails after the transition was
		// persisted, as when a process dies between the two.
		busA := eventbus.New(nil)
		if err := busA.Register("mem", w.broker.Connect()); err != nil {
			t.Fatal(err)
		}
		defer busA.Close(context.Background())
		orcA, err := saga.NewOrchestrator(busA, store, &saga.Options{Instance: "A", Service: "a"})
		if err != nil {
			t.Fatal(err)
		}
		if err := orcA.Register(orderDefinition(time.Minute, saga.Retry{})); err != nil {
			t.Fatal(err)
		}
		id, err := orcA.Start(context.Background(), "order", orderData{Order: "t1", Amount: 2}, saga.WithID("t1"))
		if err != nil {
			t.Fatal(err)
		}
		in := w.wait(id)
		if in.State != saga.Completed {
			t.Fatalf("state %s, want completed", in.State)
		}
		equal(t, "effects", w.effects.of(id), allDone)
		if k := historyKinds(in); !slices.Contains(k, "takeover:") {
			t.Errorf("no takeover in history: %v", k)
		}
	})
}

func TestStepRetry(t *testing.T) {
	forEachStore(t, func(t *testing.T, open func(*testing.T) saga.Store) {
		w := newWorld(t, open(t), worldOptions{def: orderDefinition(time.Minute, saga.Retry{Attempts: 3, Backoff: 10 * time.Millisecond})})
		var mu sync.Mutex
		tries := map[string]int{}
		w.hooks.set("inventory.reserve", func(req *saga.Request) error {
			mu.Lock()
			defer mu.Unlock()
			tries[req.SagaID]++
			if req.SagaID == "patient" && tries[req.SagaID] <= 2 || req.SagaID == "hopeless" {
				return fmt.Errorf("warehouse busy (%d)", req.Attempt)
			}
			return nil
		})
		w.start("patient", 1)
		w.start("hopeless", 1)
		in := w.wait("patient")
		if in.State != saga.Completed || in.Steps[0].Attempts != 3 {
			t.Errorf("patient: %s after %d attempts, want completed after 3", in.State, in.Steps[0].Attempts)
		}
		equal(t, "patient effects", w.effects.of("patient"), allDone)
		in = w.wait("hopeless")
		if in.State != saga.Compensated || in.Steps[0].State != saga.StepFailed || in.Reason != "step inventory gave up after 3 attempts: warehouse busy (3)" {
			t.Errorf("hopeless: %s, step %s, reason %q", in.State, in.Steps[0].State, in.Reason)
		}
		if len(w.effects.of("hopeless")) != 0 {
			t.Errorf("hopeless effects %v, want none", w.effects.of("hopeless"))
		}
	})
}
