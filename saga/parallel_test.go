package saga_test

import (
	"context"
	"errors"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/marty-msf/eventbus/saga"
)

// parallelOrder reserves, then charges and ships at once (a parallel
// group).
func parallelOrder() saga.Definition {
	d := orderDefinition(stepTimeout, saga.Retry{})
	d.Steps[1].Group, d.Steps[2].Group = "charge-and-ship", "charge-and-ship"
	return d
}

// gateUntil blocks a hook until cond holds, generously bounded; it reports
// whether cond held.
func gateUntil(cond func() bool) bool {
	for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
		if cond() {
			return true
		}
	}
	return false
}

func sorted(s []string) []string {
	s = slices.Clone(s)
	slices.Sort(s)
	return s
}

func TestParallelGroup(t *testing.T) {
	forEachStore(t, func(t *testing.T, open func(*testing.T) saga.Store) {
		w := newWorld(t, open(t), worldOptions{def: parallelOrder()})
		// The charge waits until the shipment ran: the group's steps run
		// at once, or this saga would time out.
		var shipped atomic.Bool
		w.hooks.set("shipping.ship", func(*saga.Request) error { shipped.Store(true); return nil })
		w.hooks.set("payment.charge", func(req *saga.Request) error {
			if !gateUntil(shipped.Load) {
				return saga.Fail(errors.New("shipping never ran while the charge ran"))
			}
			return nil
		})
		w.start("par", 12)
		in := w.wait("par")
		if in.State != saga.Completed {
			t.Fatalf("state %s (%s), want completed", in.State, in.Reason)
		}
		equal(t, "effects", w.effects.of("par"), []string{"inventory.reserve", "shipping.ship", "payment.charge"})
		equal(t, "steps", stepStates(in), []saga.StepState{saga.StepCompleted, saga.StepCompleted, saga.StepCompleted})
		// The charge's input came from the step before the group.
		if !strings.Contains(string(in.Steps[1].Input), `"amount":12`) {
			t.Errorf("payment input %s, want the price inventory replied", in.Steps[1].Input)
		}
		h := historyKinds(in)
		equal(t, "history up to the group", h[:4], []string{"saga.started:", "step.do.sent:inventory", "saga.step.completed:inventory", "step.do.sent:payment"})
		if h[4] != "step.do.sent:shipping" || h[len(h)-1] != "saga.completed:" {
			t.Errorf("history %v: both commands of the group go out in one transition", h)
		}
	})
}

func TestParallelGroupFailure(t *testing.T) {
	forEachStore(t, func(t *testing.T, open func(*testing.T) saga.Store) {
		w := newWorld(t, open(t), worldOptions{def: parallelOrder()})
		// "done": the charge completes before the shipment is refused; it
		// is refunded. "inflight": the shipment is refused while the
		// charge still runs; the charge is interrupted, and refunded once
		// it finished (the refund waits for it at the participant).
		// The shipment of "inflight" is refused only once the charge runs:
		// on a loaded machine the charge's command may otherwise reach the
		// participant after the refund, which then bars it instead.
		var charged, charging atomic.Bool
		w.hooks.set("shipping.ship", func(req *saga.Request) error {
			if req.SagaID == "done" && !gateUntil(charged.Load) {
				return errors.New("charge not done yet")
			}
			if req.SagaID == "inflight" && !gateUntil(charging.Load) {
				return errors.New("charge not running yet")
			}
			return saga.Fail(errors.New("address refused"))
		})
		w.hooks.set("payment.charge", func(req *saga.Request) error {
			if req.SagaID == "inflight" {
				charging.Store(true)
				gateUntil(func() bool {
					in, err := w.orc.Get(context.Background(), "inflight")
					return err == nil && in.State != saga.Running
				})
				return nil
			}
			charged.Store(true)
			return nil
		})
		for _, id := range []string{"done", "inflight"} {
			w.start(id, 4)
			in := w.wait(id)
			if in.State != saga.Compensated {
				t.Fatalf("%s: state %s (%s), want compensated", id, in.State, in.Reason)
			}
			got := w.effects.of(id)
			equal(t, id+" effects", sorted(got[:2]), []string{"inventory.reserve", "payment.charge"})
			equal(t, id+" effects", got[2:], []string{"payment.refund", "inventory.release"})
			equal(t, id+" steps", stepStates(in), []saga.StepState{saga.StepCompensated, saga.StepCompensated, saga.StepFailed})
			if id == "inflight" && !in.Steps[1].Uncertain {
				t.Errorf("%s: the interrupted charge is not marked uncertain", id)
			}
			if !strings.Contains(in.Reason, "address refused") {
				t.Errorf("%s: reason %q", id, in.Reason)
			}
		}
	})
}

func TestParallelCompensationRetry(t *testing.T) {
	forEachStore(t, func(t *testing.T, open func(*testing.T) saga.Store) {
		// Reserve and charge at once, then ship; the shipment is refused,
		// so the group is undone at once; the refund fails until fixed.
		d := orderDefinition(stepTimeout, saga.Retry{})
		d.Steps[0].Group, d.Steps[1].Group, d.Steps[1].Input = "g", "g", nil
		w := newWorld(t, open(t), worldOptions{def: d})
		var healthy atomic.Bool
		w.hooks.set("shipping.ship", func(*saga.Request) error { return saga.Fail(errors.New("address refused")) })
		w.hooks.set("payment.refund", func(*saga.Request) error {
			if !healthy.Load() {
				return errors.New("bank down")
			}
			return nil
		})
		w.start("pc", 2)
		in := w.wait("pc")
		if in.State != saga.Failed || !strings.Contains(in.Error, "compensation of step payment") {
			t.Fatalf("state %s (%q), want failed at the refund", in.State, in.Error)
		}
		equal(t, "steps", stepStates(in), []saga.StepState{saga.StepCompensated, saga.StepCompensationFailed, saga.StepFailed})
		healthy.Store(true)
		if err := w.orc.Retry(context.Background(), "pc"); err != nil {
			t.Fatal(err)
		}
		in = w.wait("pc")
		if in.State != saga.Compensated {
			t.Fatalf("after Retry: %s (%s), want compensated", in.State, in.Error)
		}
		got := w.effects.of("pc")
		equal(t, "effects", sorted(got), sorted([]string{"inventory.reserve", "payment.charge", "inventory.release", "payment.refund"}))
	})
}

func TestGroupValidation(t *testing.T) {
	d := parallelOrder()
	d.Steps[2].Compensation = ""
	d.Steps = append(d.Steps,
		saga.Step{Name: "bill", Service: "billing", Command: "bill.send", Compensation: "bill.void", Timeout: time.Second},
		saga.Step{Name: "audit", Service: "audit", Command: "audit.log", Compensation: "audit.unlog", Timeout: time.Second, Group: "charge-and-ship"},
		saga.Step{Name: "notify", Kind: saga.Retriable, Service: "n", Command: "n.send", Timeout: time.Second, Group: "late"},
	)
	err := d.Validate()
	for _, want := range []string{
		`step "shipping": no compensation command (required on a step of a parallel group)`,
		`step "audit": the steps of group "charge-and-ship" are not adjacent`,
		`step "notify": a retriable step in parallel group "late"`,
	} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("Validate: %v\n want a problem %q", err, want)
		}
	}
}
