package saga_test

import (
	"context"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/marty-msf/eventbus"
	"github.com/marty-msf/eventbus/saga"
)

// approvalOrder reserves, waits for payment.confirmed, then ships.
func approvalOrder(wait time.Duration) saga.Definition {
	d := orderDefinition(stepTimeout, saga.Retry{})
	d.Steps[1] = saga.Step{Name: "payment", Event: "payment.confirmed", Timeout: wait}
	return d
}

func publish(t *testing.T, b *eventbus.Bus, typ, sagaID, data string) {
	t.Helper()
	m := &eventbus.Message{ID: typ + "/" + sagaID + "/" + data, Type: typ, CorrelationID: sagaID, Key: sagaID, DataContentType: "application/json", Data: []byte(data)}
	if err := b.PublishEvent(context.Background(), m); err != nil {
		t.Fatal(err)
	}
}

func TestWaitForEvent(t *testing.T) {
	forEachStore(t, func(t *testing.T, open func(*testing.T) saga.Store) {
		w := newWorld(t, open(t), worldOptions{def: approvalOrder(time.Minute)})
		w.start("w1", 3)
		in := waitFor(t, w.orc, "w1", func(in *saga.Instance) bool { return in.Steps[1].State == saga.StepRunning })
		if d := time.Until(in.Deadline); d < 30*time.Second || d > time.Minute {
			t.Errorf("deadline in %v, want the wait's timeout", d)
		}
		// Events of other sagas and of no saga change nothing; of two
		// events for the saga (in order: same Key), the first wins.
		publish(t, w.bus, "payment.confirmed", "someone-else", `{"ref":"x"}`)
		publish(t, w.bus, "payment.confirmed", "", `{"ref":"y"}`)
		publish(t, w.bus, "payment.confirmed", "w1", `{"ref":"p-42"}`)
		publish(t, w.bus, "payment.confirmed", "w1", `{"ref":"late duplicate"}`)
		in = w.wait("w1")
		if in.State != saga.Completed {
			t.Fatalf("state %s (%s), want completed", in.State, in.Reason)
		}
		if string(in.Steps[1].Reply) != `{"ref":"p-42"}` {
			t.Errorf("wait step reply %s, want the event's data", in.Steps[1].Reply)
		}
		equal(t, "effects", w.effects.of("w1"), []string{"inventory.reserve", "shipping.ship"})
		equal(t, "history", historyKinds(in), []string{
			"saga.started:", "step.do.sent:inventory", "saga.step.completed:inventory",
			"step.wait:payment", "event.received:payment", "saga.step.completed:payment",
			"step.do.sent:shipping", "saga.step.completed:shipping", "saga.completed:",
		})
	})
}

func TestEventBeforeItsStep(t *testing.T) {
	forEachStore(t, func(t *testing.T, open func(*testing.T) saga.Store) {
		w := newWorld(t, open(t), worldOptions{def: approvalOrder(time.Minute)})
		// The reservation waits until the confirmation was received: the
		// saga then completes its wait at once.
		w.hooks.set("inventory.reserve", func(req *saga.Request) error {
			gateUntil(func() bool {
				in, err := w.orc.Get(context.Background(), "early")
				return err == nil && in.Received["payment.confirmed"] != nil
			})
			return nil
		})
		w.start("early", 3)
		publish(t, w.bus, "payment.confirmed", "early", `{"ref":"fast"}`)
		in := w.wait("early")
		if in.State != saga.Completed || string(in.Steps[1].Reply) != `{"ref":"fast"}` || len(in.Received) != 0 {
			t.Fatalf("state %s, reply %s, received %v; want completed with the early event", in.State, in.Steps[1].Reply, in.Received)
		}
		h := historyKinds(in)
		if i, j := slices.Index(h, "event.received:payment"), slices.Index(h, "step.wait:payment"); i < 0 || j < i {
			t.Errorf("history %v: the event arrives before the wait", h)
		}
	})
}

// TestWaitTimeoutAfterRestart: the orchestrator that began the wait goes
// down; the wait's timeout, persisted, fires in another one after its
// deadline passed, and the saga compensates.
func TestWaitTimeoutAfterRestart(t *testing.T) {
	forEachStore(t, func(t *testing.T, open func(*testing.T) saga.Store) {
		store := open(t)
		def := approvalOrder(time.Second)
		w := newWorld(t, store, worldOptions{def: def, noRun: true, orc: &saga.Options{Service: "idle"}})
		orcA, busA := w.orchestratorOn(store, def, &saga.Options{Instance: "A", PollInterval: 20 * time.Millisecond}, false)
		w.orc = orcA
		w.run(orcA)
		w.start("slow", 3)
		in := waitFor(t, orcA, "slow", func(in *saga.Instance) bool { return in.Steps[1].State == saga.StepRunning })
		w.stop()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := busA.Close(ctx); err != nil {
			t.Fatal(err)
		}
		if !gateUntil(func() bool { return time.Now().After(in.Deadline) }) {
			t.Fatal("deadline never passed")
		}
		orcB, _ := w.orchestratorOn(store, def, &saga.Options{Instance: "B", PollInterval: 20 * time.Millisecond}, false)
		w.orc = orcB
		w.run(orcB)
		in = w.wait("slow")
		if in.State != saga.Compensated || in.Steps[1].State != saga.StepFailed || !strings.Contains(in.Reason, "no payment.confirmed event within 1s") {
			t.Fatalf("state %s, wait step %s, reason %q; want compensated after the wait timed out", in.State, in.Steps[1].State, in.Reason)
		}
		equal(t, "effects", w.effects.of("slow"), []string{"inventory.reserve", "inventory.release"})
		// Too late: the saga is over.
		publish(t, w.bus, "payment.confirmed", "slow", `{}`)
	})
}

func TestWaitValidation(t *testing.T) {
	d := approvalOrder(time.Second)
	d.Steps[1].Service, d.Steps[1].Retry = "payment", saga.Retry{Attempts: 2}
	d.Steps[2] = saga.Step{Name: "again", Kind: saga.Retriable, Event: "payment.confirmed", Timeout: time.Second}
	err := d.Validate()
	for _, want := range []string{
		`step "payment": a wait step (Event "payment.confirmed") has no service, command or compensation`,
		`step "payment": a wait step has no retry`,
		`step "again": a wait step cannot be retriable`,
		`step "again": a second step waits for event "payment.confirmed"`,
	} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("Validate: %v\n want a problem %q", err, want)
		}
	}
}
