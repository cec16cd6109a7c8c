package saga_test

import (
	"context"
	"errors"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/marty-msf/eventbus/saga"
)

// checkoutWithPivot reserves (compensable), charges (the pivot) and ships
// (retriable).
func checkoutWithPivot() saga.Definition {
	d := orderDefinition(stepTimeout, saga.Retry{})
	d.Name, d.Timeout = "order", time.Minute
	d.Steps[1].Kind, d.Steps[1].Compensation = saga.Pivot, ""
	d.Steps[2].Kind, d.Steps[2].Compensation = saga.Retriable, ""
	d.Steps[2].Retry = saga.Retry{Attempts: 1, Backoff: 20 * time.Millisecond}
	return d
}

func TestPivotAndRetriableSteps(t *testing.T) {
	forEachStore(t, func(t *testing.T, open func(*testing.T) saga.Store) {
		w := newWorld(t, open(t), worldOptions{def: checkoutWithPivot()})
		var healthy atomic.Bool
		var shipTries atomic.Int32
		w.hooks.set("payment.charge", func(req *saga.Request) error {
			if req.SagaID == "declined" {
				return saga.Fail(errors.New("card declined"))
			}
			return nil
		})
		w.hooks.set("shipping.ship", func(req *saga.Request) error {
			if shipTries.Add(1)%2 == 0 {
				return errors.New("carrier busy")
			}
			if !healthy.Load() {
				return saga.Fail(errors.New("carrier down"))
			}
			return nil
		})

		// A pivot that fails undoes the compensable steps before it.
		w.start("declined", 3)
		in := w.wait("declined")
		if in.State != saga.Compensated {
			t.Fatalf("declined: state %s, want compensated", in.State)
		}
		equal(t, "declined effects", w.effects.of("declined"), []string{"inventory.reserve", "inventory.release"})

		// Past the pivot the saga only goes forward: failures, even
		// definitive ones, are retried beyond Retry.Attempts; Cancel and
		// the saga's timeout no longer apply.
		w.start("p1", 3)
		in = waitFor(t, w.orc, "p1", func(in *saga.Instance) bool { return in.Current == 2 && in.Steps[2].Attempts >= 4 })
		if in.State != saga.Running || !in.SagaDeadline.IsZero() {
			t.Errorf("at the retriable step: state %s, saga deadline %v; want running with no deadline", in.State, in.SagaDeadline)
		}
		if err := w.orc.Cancel(context.Background(), "p1"); !errors.Is(err, saga.ErrPastPivot) {
			t.Errorf("Cancel past the pivot: %v, want ErrPastPivot", err)
		}
		healthy.Store(true)
		in = w.wait("p1")
		if in.State != saga.Completed {
			t.Fatalf("p1: state %s (%s), want completed", in.State, in.Reason)
		}
		equal(t, "p1 effects", w.effects.of("p1"), allDone)
	})
}

func TestStepKindValidation(t *testing.T) {
	d := checkoutWithPivot()
	d.Steps[0].Compensation = "" // needed: the pivot after it can fail
	d.Steps[1].Compensation = "payment.refund"
	d.Steps = append(d.Steps, saga.Step{Name: "audit", Kind: saga.Pivot, Service: "audit", Command: "audit.log", Timeout: time.Second})
	err := d.Validate()
	for _, want := range []string{
		`step "inventory": no compensation command`,
		`step "payment": a pivot step has no compensation`,
		`step "audit": a second pivot step`,
		`step "audit": a pivot step after a retriable step`,
	} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("Validate: %v\n want a problem %q", err, want)
		}
	}
	// Compensable steps followed only by retriable ones need no
	// compensation.
	ok := checkoutWithPivot()
	ok.Steps[1].Kind, ok.Steps[1].Compensation = saga.Retriable, ""
	ok.Steps[0].Compensation = ""
	if err := ok.Validate(); err != nil {
		t.Errorf("compensable then retriable steps: %v", err)
	}
}
