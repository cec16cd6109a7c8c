package saga_test

import (
	"context"
	"errors"
	"testing"

	"github.com/marty-msf/eventbus"
	"github.com/marty-msf/eventbus/saga"
)

// A saga runs to its end on the definition version it started with, while
// new sagas take the newest; an orchestrator that lacks an instance's
// version leaves it alone, says why, and lists it.
func TestDefinitionVersions(t *testing.T) {
	forEachStore(t, func(t *testing.T, open func(*testing.T) saga.Store) {
		store := open(t)
		v1 := orderDefinition(stepTimeout, saga.Retry{})
		w := newWorld(t, store, worldOptions{def: v1})
		gate := make(chan struct{})
		w.hooks.set("payment.charge", func(req *saga.Request) error {
			if req.SagaID == "old" {
				<-gate
			}
			return nil
		})
		w.start("old", 5)
		waitFor(t, w.orc, "old", func(in *saga.Instance) bool { return in.Current == 1 })

		// Version 2 ships digital goods: no shipping step.
		v2 := orderDefinition(stepTimeout, saga.Retry{})
		v2.Version, v2.Steps = 2, v2.Steps[:2]
		if err := w.orc.Register(v2); err != nil {
			t.Fatal(err)
		}
		if err := w.orc.Register(v2); !errors.Is(err, saga.ErrDuplicateDefinition) {
			t.Errorf("second Register of version 2: %v, want ErrDuplicateDefinition", err)
		}
		w.start("new", 7)

		// An orchestrator deployed with version 2 only cannot run "old".
		other := eventbus.New(busOptions(false))
		if err := other.Register("mem", w.broker.Connect()); err != nil {
			t.Fatal(err)
		}
		orc2, err := saga.NewOrchestrator(other, store, &saga.Options{Service: "other"})
		if err != nil {
			t.Fatal(err)
		}
		if err := orc2.Register(v2); err != nil {
			t.Fatal(err)
		}
		w.startBus(other)
		if err := orc2.Cancel(context.Background(), "old"); !errors.Is(err, saga.ErrUnknownVersion) {
			t.Errorf("Cancel of a version-1 saga by a version-2 orchestrator: %v, want ErrUnknownVersion", err)
		}
		un, err := orc2.Unrunnable(context.Background(), 0)
		if err != nil || len(un) != 1 || un[0].ID != "old" || un[0].DefinitionVersion != 1 {
			t.Errorf("Unrunnable = %v, %v; want the version-1 saga", un, err)
		}

		close(gate)
		old, nw := w.wait("old"), w.wait("new")
		if old.State != saga.Completed || len(old.Steps) != 3 || old.DefinitionVersion != 1 {
			t.Errorf("old: %s with %d steps on version %d, want completed with 3 on version 1", old.State, len(old.Steps), old.DefinitionVersion)
		}
		if nw.State != saga.Completed || len(nw.Steps) != 2 || nw.DefinitionVersion != 2 {
			t.Errorf("new: %s with %d steps on version %d, want completed with 2 on version 2", nw.State, len(nw.Steps), nw.DefinitionVersion)
		}
		equal(t, "old effects", w.effects.of("old"), allDone)
		equal(t, "new effects", w.effects.of("new"), allDone[:2])
		if un, err := orc2.Unrunnable(context.Background(), 0); err != nil || len(un) != 0 {
			t.Errorf("Unrunnable after the old saga finished = %v, %v; want none", un, err)
		}
	})
}
