package saga_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/marty-msf/eventbus"
	"github.com/marty-msf/eventbus/membus"
	"github.com/marty-msf/eventbus/saga"
)

var allDone = []string{"inventory.reserve", "payment.charge", "shipping.ship"}

func TestHappyPath(t *testing.T) {
	forEachStore(t, func(t *testing.T, open func(*testing.T) saga.Store) {
		w := newWorld(t, open(t), worldOptions{})
		ids := []string{w.start("o1", 10), w.start("o2", 20), w.start("o3", 30)}
		for i, id := range ids {
			in := w.wait(id)
			if in.State != saga.Completed {
				t.Fatalf("%s: state %s (%s), want completed", id, in.State, in.Reason)
			}
			equal(t, id+" effects", w.effects.of(id), allDone)
			equal(t, id+" steps", stepStates(in), []saga.StepState{saga.StepCompleted, saga.StepCompleted, saga.StepCompleted})
			var charged map[string]int
			if err := json.Unmarshal(in.Steps[1].Input, &charged); err != nil || charged["amount"] != (i+1)*10 {
				t.Errorf("%s: payment input %s, want the price inventory replied", id, in.Steps[1].Input)
			}
			var r struct{ Reservation string }
			if err := json.Unmarshal(in.Steps[0].Reply, &r); err != nil || r.Reservation != "r-"+id {
				t.Errorf("%s: inventory reply %s", id, in.Steps[0].Reply)
			}
			equal(t, id+" history", historyKinds(in), []string{
				"saga.started:", "step.do.sent:inventory", "saga.step.completed:inventory",
				"step.do.sent:payment", "saga.step.completed:payment",
				"step.do.sent:shipping", "saga.step.completed:shipping", "saga.completed:",
			})
		}
		list, err := w.orc.List(context.Background(), saga.ListFilter{State: saga.Completed})
		if err != nil || len(list) != 3 {
			t.Fatalf("List(completed) = %d instances, %v; want 3", len(list), err)
		}
		if _, err := w.orc.Start(context.Background(), "order", orderData{}, saga.WithID("o1")); !errors.Is(err, saga.ErrExists) {
			t.Errorf("Start with a taken id: %v, want ErrExists", err)
		}
		if _, err := w.orc.Start(context.Background(), "nope", nil); !errors.Is(err, saga.ErrUnknownSaga) {
			t.Errorf("Start unknown saga: %v, want ErrUnknownSaga", err)
		}
		if _, err := w.orc.Get(context.Background(), "missing"); !errors.Is(err, saga.ErrNotFound) {
			t.Errorf("Get missing: %v, want ErrNotFound", err)
		}
	})
}

func TestFailureAtEachStep(t *testing.T) {
	forEachStore(t, func(t *testing.T, open func(*testing.T) saga.Store) {
		w := newWorld(t, open(t), worldOptions{})
		want := map[int][]string{
			0: nil,
			1: {"inventory.reserve", "inventory.release"},
			2: {"inventory.reserve", "payment.charge", "payment.refund", "inventory.release"},
		}
		for k, s := range orderSteps {
			id := fmt.Sprintf("fail-%d", k)
			w.hooks.set(s[1], func(req *saga.Request) error {
				if req.SagaID == id {
					return saga.Fail(errors.New("declined"))
				}
				return nil
			})
			w.start(id, 5)
			in := w.wait(id)
			if in.State != saga.Compensated {
				t.Fatalf("%s: state %s, want compensated", id, in.State)
			}
			equal(t, id+" effects", w.effects.of(id), want[k])
			for i, st := range in.Steps {
				wantState := saga.StepPending
				switch {
				case i < k:
					wantState = saga.StepCompensated
				case i == k:
					wantState = saga.StepFailed
				}
				if st.State != wantState {
					t.Errorf("%s: step %s is %s, want %s", id, st.Name, st.State, wantState)
				}
			}
			if !strings.Contains(in.Reason, "declined") || in.Steps[k].Error != "declined" {
				t.Errorf("%s: reason %q, step error %q; want the participant's error", id, in.Reason, in.Steps[k].Error)
			}
		}
	})
}

func TestCompensationRetries(t *testing.T) {
	forEachStore(t, func(t *testing.T, open func(*testing.T) saga.Store) {
		w := newWorld(t, open(t), worldOptions{})
		w.hooks.set("payment.charge", func(*saga.Request) error { return saga.Fail(errors.New("declined")) })
		var releases atomic.Int32
		var healthy atomic.Bool
		w.hooks.set("inventory.release", func(req *saga.Request) error {
			n := releases.Add(1)
			if req.SagaID == "flaky" && n <= 2 {
				return errors.New("database busy")
			}
			if req.SagaID == "broken" && !healthy.Load() {
				return saga.Fail(errors.New("cannot release"))
			}
			return nil
		})

		w.start("flaky", 1)
		in := w.wait("flaky")
		if in.State != saga.Compensated || in.Steps[0].CompensationAttempts != 3 {
			t.Fatalf("flaky: state %s after %d compensation attempts, want compensated after 3", in.State, in.Steps[0].CompensationAttempts)
		}
		equal(t, "flaky effects", w.effects.of("flaky"), []string{"inventory.reserve", "inventory.release"})

		w.start("broken", 1)
		in = w.wait("broken")
		if in.State != saga.Failed || in.Steps[0].State != saga.StepCompensationFailed || !strings.Contains(in.Error, "cannot release") {
			t.Fatalf("broken: state %s, step %s, error %q; want failed needing attention", in.State, in.Steps[0].State, in.Error)
		}
		if in.Steps[0].CompensationAttempts != 3 {
			t.Errorf("broken: %d compensation attempts, want 3 (the limit)", in.Steps[0].CompensationAttempts)
		}
		failed, err := w.orc.List(context.Background(), saga.ListFilter{State: saga.Failed})
		if err != nil || len(failed) != 1 || failed[0].ID != "broken" {
			t.Fatalf("List(failed) = %v, %v", failed, err)
		}
		if err := w.orc.Retry(context.Background(), "flaky"); !errors.Is(err, saga.ErrNotFailed) {
			t.Errorf("Retry of a compensated saga: %v, want ErrNotFailed", err)
		}
		// The participant's failures were recorded; a retry is a new
		// attempt with a fresh command, which the participant runs again
		// only after its record allows it, so the operator fixes the cause
		// and retries.
		healthy.Store(true)
		if err := w.orc.Retry(context.Background(), "broken"); err != nil {
			t.Fatal(err)
		}
		in = w.wait("broken")
		if in.State != saga.Compensated {
			t.Fatalf("broken after Retry: %s (%s), want compensated", in.State, in.Error)
		}
		equal(t, "broken effects", w.effects.of("broken"), []string{"inventory.reserve", "inventory.release"})
	})
}

func TestStepTimeout(t *testing.T) {
	forEachStore(t, func(t *testing.T, open func(*testing.T) saga.Store) {
		var mu sync.Mutex
		charges := map[string]int{} // command id → deliveries
		def := shortStep("payment", 150*time.Millisecond, saga.Retry{Attempts: 2})
		// The refund has the step's short timeout too: on a busy machine
		// it may time out and be resent; that is not what is tested here.
		def.CompensationRetry = saga.Retry{Attempts: 100, Backoff: 20 * time.Millisecond}
		w := newWorld(t, open(t), worldOptions{
			def:  def,
			skip: map[string]bool{"payment.charge": true},
			setup: func(b *eventbus.Bus) {
				// A payment service that takes the command and never replies.
				swallow := eventbus.HandlerFunc(func(_ context.Context, m *eventbus.Message) error {
					mu.Lock()
					charges[m.ID]++
					mu.Unlock()
					return nil
				})
				if _, err := b.HandleCommand(context.Background(), "payment", "payment.charge", swallow); err != nil {
					t.Fatal(err)
				}
			},
		})
		w.start("slow", 7)
		in := w.wait("slow")
		if in.State != saga.Compensated {
			t.Fatalf("state %s (%s), want compensated", in.State, in.Reason)
		}
		if in.Steps[1].Attempts != 2 {
			t.Errorf("step records %d attempts; want 2 (Retry.Attempts)", in.Steps[1].Attempts)
		}
		// Both attempts were sent; the second may reach the service after
		// the saga moved on.
		commands := func() []string {
			mu.Lock()
			defer mu.Unlock()
			var ids []string
			for id := range charges {
				ids = append(ids, id)
			}
			slices.Sort(ids)
			return ids
		}
		waitUntil(t, func() bool { return len(commands()) >= 2 })
		equal(t, "charge commands", commands(), []string{saga.CommandID("slow", "payment", false, 1), saga.CommandID("slow", "payment", false, 2)})
		if !in.Steps[1].Uncertain || in.Steps[1].State != saga.StepCompensated {
			t.Errorf("timed-out step: uncertain %v, state %s; want it compensated as uncertain", in.Steps[1].Uncertain, in.Steps[1].State)
		}
		// The refund overtook a charge that never ran: the participant
		// completes it without calling the handler.
		equal(t, "effects", w.effects.of("slow"), []string{"inventory.reserve", "inventory.release"})
		timeouts := 0
		for _, e := range in.History {
			if e.Kind == "step.do.timeout" {
				timeouts++
				if e.Step != "payment" {
					t.Errorf("step %s timed out; only payment has a short timeout", e.Step)
				}
			}
		}
		if timeouts != 2 {
			t.Errorf("%d timeouts in history, want 2: %v", timeouts, historyKinds(in))
		}
	})
}

func TestSagaTimeout(t *testing.T) {
	forEachStore(t, func(t *testing.T, open func(*testing.T) saga.Store) {
		def := orderDefinition(stepTimeout, saga.Retry{})
		def.Timeout = time.Second
		def.Steps[2].Retry = saga.Retry{Attempts: 1000, Backoff: 10 * time.Millisecond}
		w := newWorld(t, open(t), worldOptions{def: def})
		w.hooks.set("shipping.ship", func(*saga.Request) error { return errors.New("no trucks") })
		w.start("late", 1)
		in := w.wait("late")
		if in.State != saga.Compensated || in.Reason != "saga timed out" {
			t.Fatalf("state %s reason %q, want compensated after the saga timeout", in.State, in.Reason)
		}
		// The timeout normally ends the shipping retries; on a busy
		// machine it may come earlier. Either way, every step that took
		// effect is undone, in reverse order, and nothing else.
		got := w.effects.of("late")
		outcomes := map[int][]string{
			0: nil,
			1: {"inventory.reserve", "inventory.release"},
			2: {"inventory.reserve", "payment.charge", "payment.refund", "inventory.release"},
		}
		done := len(got) / 2
		equal(t, "effects", got, outcomes[done])
		for _, st := range in.Steps[:done] {
			if st.State != saga.StepCompensated {
				t.Errorf("step %s took effect and is %s, want compensated", st.Name, st.State)
			}
		}
		if done < 2 {
			t.Logf("the saga timed out at step %d, before shipping (a busy machine)", done)
		}
	})
}

func TestCancel(t *testing.T) {
	forEachStore(t, func(t *testing.T, open func(*testing.T) saga.Store) {
		w := newWorld(t, open(t), worldOptions{})
		charging := make(chan struct{})
		release := make(chan struct{})
		w.hooks.set("payment.charge", func(*saga.Request) error {
			close(charging)
			<-release
			return nil
		})
		w.start("c1", 3)
		<-charging
		if err := w.orc.Cancel(context.Background(), "c1"); err != nil {
			t.Fatal(err)
		}
		// The charge completes after the cancel: the refund waits for it and
		// undoes it.
		close(release)
		in := w.wait("c1")
		if in.State != saga.Compensated || in.Reason != "cancelled" {
			t.Fatalf("state %s reason %q, want compensated after cancel", in.State, in.Reason)
		}
		equal(t, "effects", w.effects.of("c1"), []string{"inventory.reserve", "payment.charge", "payment.refund", "inventory.release"})
		if err := w.orc.Cancel(context.Background(), "c1"); !errors.Is(err, saga.ErrNotRunning) {
			t.Errorf("Cancel of a finished saga: %v, want ErrNotRunning", err)
		}
		if err := w.orc.Cancel(context.Background(), "missing"); !errors.Is(err, saga.ErrNotFound) {
			t.Errorf("Cancel of a missing saga: %v, want ErrNotFound", err)
		}
	})
}

// TestDuplicateDelivery delivers every command and every reply twice.
func TestDuplicateDelivery(t *testing.T) {
	forEachStore(t, func(t *testing.T, open func(*testing.T) saga.Store) {
		w := newWorld(t, open(t), worldOptions{duplicate: true})
		w.hooks.set("shipping.ship", func(req *saga.Request) error {
			if req.SagaID == "d2" {
				return saga.Fail(errors.New("no address"))
			}
			return nil
		})
		w.start("d1", 4)
		w.start("d2", 4)
		in := w.wait("d1")
		if in.State != saga.Completed {
			t.Fatalf("d1: %s", in.State)
		}
		equal(t, "d1 effects", w.effects.of("d1"), allDone)
		in2 := w.wait("d2")
		equal(t, "d2 effects", w.effects.of("d2"), []string{"inventory.reserve", "payment.charge", "payment.refund", "inventory.release"})
		if in2.State != saga.Compensated {
			t.Fatalf("d2: %s", in2.State)
		}

		// Late copies of every reply change nothing.
		for _, st := range in.Steps {
			for _, action := range []string{"do", "undo"} {
				m := &eventbus.Message{Type: saga.ReplyType, Data: []byte(`{}`), Extensions: map[string]string{
					"sagaid": "d1", "sagastep": st.Name, "sagaaction": action, "sagaattempt": "1", "sagaoutcome": saga.OutcomeOK,
				}}
				if err := w.bus.SendCommand(context.Background(), "saga", m); err != nil {
					t.Fatal(err)
				}
			}
		}
		time.Sleep(200 * time.Millisecond)
		again, err := w.orc.Get(context.Background(), "d1")
		if err != nil {
			t.Fatal(err)
		}
		if again.Version != in.Version || len(again.History) != len(in.History) || again.State != saga.Completed {
			t.Errorf("late replies changed the saga: version %d→%d, history %d→%d", in.Version, again.Version, len(in.History), len(again.History))
		}
	})
}

// TestParticipantDedup sends one step command twice, by hand.
func TestParticipantDedup(t *testing.T) {
	forEachStore(t, func(t *testing.T, open func(*testing.T) saga.Store) {
		store := open(t)
		broker := membus.New(nil)
		b := eventbus.New(busOptions(false))
		if err := b.Register("mem", broker); err != nil {
			t.Fatal(err)
		}
		var runs atomic.Int32
		p, err := saga.NewParticipant(b, "inventory", store, nil)
		if err != nil {
			t.Fatal(err)
		}
		if err := p.Handle("inventory.reserve", func(ctx context.Context, req *saga.Request) (any, error) {
			return map[string]any{"run": runs.Add(1), "key": req.Key, "attempt": req.Attempt}, nil
		}); err != nil {
			t.Fatal(err)
		}
		replies := make(chan *eventbus.Message, 4)
		if _, err := b.HandleCommand(context.Background(), "collector", saga.ReplyType, eventbus.HandlerFunc(func(_ context.Context, m *eventbus.Message) error {
			replies <- m
			return nil
		})); err != nil {
			t.Fatal(err)
		}
		w := &world{t: t}
		w.startBus(b)
		cmd := func(attempt string) *eventbus.Message {
			return &eventbus.Message{ID: "s1/reserve/do/" + attempt, Type: "inventory.reserve", Data: []byte(`{"qty":1}`), Extensions: map[string]string{
				"sagaid": "s1", "saganame": "order", "sagastep": "reserve", "sagaaction": "do", "sagaattempt": attempt, "sagareplyto": "collector",
			}}
		}
		var got []string
		for _, attempt := range []string{"1", "1", "2"} {
			if err := b.SendCommand(context.Background(), "inventory", cmd(attempt)); err != nil {
				t.Fatal(err)
			}
			select {
			case r := <-replies:
				if r.Extensions["sagaoutcome"] != saga.OutcomeOK || r.Extensions["sagaattempt"] != attempt {
					t.Errorf("reply %v", r.Extensions)
				}
				got = append(got, string(r.Data))
			case <-time.After(60 * time.Second):
				t.Fatal("no reply")
			}
		}
		if runs.Load() != 1 {
			t.Errorf("handler ran %d times, want once", runs.Load())
		}
		want := `{"attempt":1,"key":"inventory/s1/reserve/do","run":1}`
		equal(t, "replies", got, []string{want, want, want})
	})
}

func TestValidation(t *testing.T) {
	def := saga.Definition{Name: "bad", Steps: []saga.Step{
		{Name: "a", Service: "s", Command: "c.a", Timeout: time.Second},
		{Name: "a", Service: "s", Command: "c.b", Compensation: "c.b.undo"},
		{Name: "", Command: "", Timeout: -time.Second, Retry: saga.Retry{Attempts: -1}},
	}}
	err := def.Validate()
	if !errors.Is(err, saga.ErrInvalidDefinition) {
		t.Fatalf("Validate: %v, want ErrInvalidDefinition", err)
	}
	var problems []string
	for _, e := range err.(interface{ Unwrap() []error }).Unwrap() {
		var de *saga.DefinitionError
		if !errors.As(e, &de) {
			t.Fatalf("%v is not a *DefinitionError", e)
		}
		problems = append(problems, de.Step+": "+de.Problem)
	}
	equal(t, "problems", problems, []string{
		"a: no compensation command (required on a compensable step followed by one that can fail)",
		"a: duplicate step name",
		"a: timeout must be positive, got 0s",
		"#3: empty name",
		"#3: no service",
		"#3: no command type",
		"#3: timeout must be positive, got -1s",
		"#3: negative retry",
	})
	if err := (&saga.Definition{}).Validate(); err == nil || !strings.Contains(err.Error(), "empty name") || !strings.Contains(err.Error(), "no steps") {
		t.Errorf("empty definition: %v", err)
	}

	w := newWorld(t, openSQLite(t, t.TempDir()+"/v.db"), worldOptions{noRun: true})
	if err := w.orc.Register(def); !errors.Is(err, saga.ErrInvalidDefinition) {
		t.Errorf("Register invalid: %v", err)
	}
	if err := w.orc.Register(orderDefinition(time.Second, saga.Retry{})); !errors.Is(err, saga.ErrDuplicateDefinition) {
		t.Errorf("Register twice: %v, want ErrDuplicateDefinition", err)
	}
}

func TestLifecycleEvents(t *testing.T) {
	var mu sync.Mutex
	var got []string
	w := newWorld(t, openSQLite(t, t.TempDir()+"/e.db"), worldOptions{setup: func(b *eventbus.Bus) {
		types := []string{saga.EventStarted, saga.EventStepCompleted, saga.EventStepFailed, saga.EventStepCompensated,
			saga.EventCompleted, saga.EventCompensating, saga.EventCompensated, saga.EventFailed}
		if _, err := b.SubscribeEvents(context.Background(), types, "audit", eventbus.HandlerFunc(func(_ context.Context, m *eventbus.Message) error {
			var ev saga.LifecycleEvent
			if err := json.Unmarshal(m.Data, &ev); err != nil {
				return err
			}
			mu.Lock()
			got = append(got, m.Type+":"+ev.Step+":"+string(ev.State))
			mu.Unlock()
			return nil
		})); err != nil {
			t.Fatal(err)
		}
	}})
	w.hooks.set("shipping.ship", func(*saga.Request) error { return saga.Fail(errors.New("no")) })
	w.start("ev", 1)
	w.wait("ev")
	want := []string{
		"saga.started::running", "saga.step.completed:inventory:running", "saga.step.completed:payment:running",
		"saga.step.failed:shipping:compensating", "saga.compensating::compensating",
		"saga.step.compensated:payment:compensating", "saga.step.compensated:inventory:compensated", "saga.compensated::compensated",
	}
	deadline := time.Now().Add(60 * time.Second)
	for {
		mu.Lock()
		n := len(got)
		mu.Unlock()
		if n >= len(want) || time.Now().After(deadline) {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	mu.Lock()
	defer mu.Unlock()
	// Each event type is its own destination: no order across types.
	slices.Sort(got)
	slices.Sort(want)
	equal(t, "events", got, want)
}
