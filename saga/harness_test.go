package saga_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/marty-msf/eventbus"
	"github.com/marty-msf/eventbus/internal/testenv"
	"github.com/marty-msf/eventbus/membus"
	"github.com/marty-msf/eventbus/saga"
	"github.com/marty-msf/eventbus/saga/sqlstore"
)

func TestMain(m *testing.M) {
	if os.Getenv(crashRoleEnv) != "" {
		os.Exit(crashHelperMain())
	}
	goleak.VerifyTestMain(m)
}

// forEachStore runs fn once per store implementation.
func forEachStore(t *testing.T, fn func(t *testing.T, open func(t *testing.T) saga.Store)) {
	t.Run("sqlite", func(t *testing.T) {
		fn(t, func(t *testing.T) saga.Store { return openSQLite(t, t.TempDir()+"/saga.db") })
	})
	t.Run("postgres", func(t *testing.T) {
		fn(t, func(t *testing.T) saga.Store { return openPostgres(t, uniquePrefix(t)) })
	})
}

func openSQLite(t *testing.T, path string) *sqlstore.Store {
	t.Helper()
	s, err := sqlstore.OpenSQLite(context.Background(), path, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func openPostgres(t *testing.T, prefix string) *sqlstore.Store {
	t.Helper()
	url := testenv.DatabaseURL(t)
	s, err := sqlstore.OpenPostgres(context.Background(), url, &sqlstore.Options{TablePrefix: prefix})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		for _, tbl := range []string{"instances", "records"} {
			_, _ = s.DB().Exec("DROP TABLE IF EXISTS " + prefix + tbl)
		}
		s.Close()
	})
	return s
}

var nonWord = regexp.MustCompile(`[^a-z0-9]+`)

// uniquePrefix isolates a test's tables in the shared test database.
func uniquePrefix(t *testing.T) string {
	name := nonWord.ReplaceAllString(strings.ToLower(t.Name()), "_")
	if len(name) > 30 {
		name = name[len(name)-30:]
	}
	return fmt.Sprintf("t%d_%s_", time.Now().UnixNano()%1e9, name)
}

// effects is the participants' log of what took effect, in order.
type effects struct {
	mu  sync.Mutex
	log []string
}

func (e *effects) add(s string) {
	e.mu.Lock()
	e.log = append(e.log, s)
	e.mu.Unlock()
}

// of returns the effects of one saga, without its id.
func (e *effects) of(id string) []string {
	e.mu.Lock()
	defer e.mu.Unlock()
	var out []string
	for _, s := range e.log {
		if rest, ok := strings.CutSuffix(s, " "+id); ok {
			out = append(out, rest)
		}
	}
	return out
}

// steps of the test saga: service, command, compensation.
var orderSteps = [][3]string{
	{"inventory", "inventory.reserve", "inventory.release"},
	{"payment", "payment.charge", "payment.refund"},
	{"shipping", "shipping.ship", "shipping.cancel"},
}

type orderData struct {
	Order  string `json:"order"`
	Amount int    `json:"amount"`
}

func orderDefinition(timeout time.Duration, retry saga.Retry) saga.Definition {
	d := saga.Definition{Name: "order", CompensationRetry: saga.Retry{Attempts: 3, Backoff: 20 * time.Millisecond}}
	for _, s := range orderSteps {
		d.Steps = append(d.Steps, saga.Step{Name: s[0], Service: s[0], Command: s[1], Compensation: s[2], Timeout: timeout, Retry: retry})
	}
	// Payment charges what inventory priced: an input from an earlier reply.
	d.Steps[1].Input = func(in saga.Input) (any, error) {
		var r struct{ Price int }
		if err := in.Reply("inventory", &r); err != nil {
			return nil, err
		}
		return map[string]int{"amount": r.Price}, nil
	}
	return d
}

// shortStep is orderDefinition with one step under test given timeout and
// retry; the other steps get stepTimeout, so that only the step under test
// times out however slow the machine.
func shortStep(name string, timeout time.Duration, retry saga.Retry) saga.Definition {
	d := orderDefinition(stepTimeout, saga.Retry{})
	for i := range d.Steps {
		if d.Steps[i].Name == name {
			d.Steps[i].Timeout, d.Steps[i].Retry = timeout, retry
		}
	}
	return d
}

// hooks lets a test change a command's handling: a non-nil error is
// returned instead of the effect.
type hooks struct {
	mu sync.Mutex
	fn map[string]func(req *saga.Request) error
}

func (h *hooks) set(cmd string, fn func(req *saga.Request) error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.fn == nil {
		h.fn = map[string]func(*saga.Request) error{}
	}
	h.fn[cmd] = fn
}

func (h *hooks) get(cmd string) func(req *saga.Request) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.fn[cmd]
}

// world is a bus with an orchestrator and the three participants.
type world struct {
	t       *testing.T
	store   saga.Store
	broker  *membus.Driver
	bus     *eventbus.Bus
	orc     *saga.Orchestrator
	effects *effects
	hooks   *hooks
	stop    func()
}

type worldOptions struct {
	def       saga.Definition
	duplicate bool                // deliver every message twice
	skip      map[string]bool     // commands with no participant handler
	setup     func(*eventbus.Bus) // extra registrations before Start
	orc       *saga.Options
	noRun     bool
	part      *saga.ParticipantOptions
}

func busOptions(duplicate bool) *eventbus.Options {
	o := &eventbus.Options{Retry: eventbus.RetryPolicy{MaxAttempts: 1000, InitialBackoff: 5 * time.Millisecond, MaxBackoff: 50 * time.Millisecond}}
	if duplicate {
		o.Middleware = []eventbus.Middleware{func(h eventbus.Handler) eventbus.Handler {
			return eventbus.HandlerFunc(func(ctx context.Context, m *eventbus.Message) error {
				if err := h.Handle(ctx, m.Clone()); err != nil {
					return err
				}
				return h.Handle(ctx, m)
			})
		}}
	}
	return o
}

func newWorld(t *testing.T, store saga.Store, o worldOptions) *world {
	t.Helper()
	w := &world{t: t, store: store, effects: &effects{}, hooks: &hooks{}}
	w.broker = membus.New(nil)
	w.bus = eventbus.New(busOptions(o.duplicate))
	if err := w.bus.Register("mem", w.broker); err != nil {
		t.Fatal(err)
	}
	opts := o.orc
	if opts == nil {
		opts = &saga.Options{}
	}
	if opts.PollInterval == 0 {
		opts.PollInterval = 20 * time.Millisecond
	}
	orc, err := saga.NewOrchestrator(w.bus, store, opts)
	if err != nil {
		t.Fatal(err)
	}
	w.orc = orc
	if o.def.Name == "" {
		// Generous: on a loaded machine a step can take seconds, and a
		// timeout here would compensate a saga that should complete.
		o.def = orderDefinition(stepTimeout, saga.Retry{})
	}
	if err := orc.Register(o.def); err != nil {
		t.Fatal(err)
	}
	w.addParticipants(w.bus, store, o.skip, o.part)
	if o.setup != nil {
		o.setup(w.bus)
	}
	w.startBus(w.bus)
	if !o.noRun {
		w.run(orc)
	}
	return w
}

// addParticipants registers the three participant services on b.
func (w *world) addParticipants(b *eventbus.Bus, store saga.Store, skip map[string]bool, opts *saga.ParticipantOptions) {
	w.t.Helper()
	for _, s := range orderSteps {
		p, err := saga.NewParticipant(b, s[0], store, opts)
		if err != nil {
			w.t.Fatal(err)
		}
		for i, cmd := range s[1:] {
			if skip[cmd] {
				continue
			}
			if err := p.Handle(cmd, w.handler(cmd, i == 1)); err != nil {
				w.t.Fatal(err)
			}
		}
	}
}

func (w *world) handler(cmd string, undo bool) saga.StepHandler {
	return func(ctx context.Context, req *saga.Request) (any, error) {
		if r, ok := saga.RequestFrom(ctx); !ok || r != req {
			return nil, saga.Fail(errors.New("request missing from context"))
		}
		if req.Compensation != undo {
			return nil, saga.Fail(fmt.Errorf("compensation flag %v on %s", req.Compensation, cmd))
		}
		if hook := w.hooks.get(cmd); hook != nil {
			if err := hook(req); err != nil {
				return nil, err
			}
		}
		w.effects.add(cmd + " " + req.SagaID)
		if cmd == "inventory.reserve" {
			var d orderData
			if err := req.Decode(&d); err != nil {
				return nil, saga.Fail(err)
			}
			return map[string]any{"Price": d.Amount, "Reservation": "r-" + d.Order}, nil
		}
		return map[string]string{"done": cmd}, nil
	}
}

func (w *world) startBus(b *eventbus.Bus) {
	w.t.Helper()
	if err := b.Start(context.Background()); err != nil {
		w.t.Fatal(err)
	}
	w.t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := b.Close(ctx); err != nil {
			w.t.Error(err)
		}
	})
}

// run keeps orc.Run running until the test ends or w.stop is called.
func (w *world) run(orc *saga.Orchestrator) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := orc.Run(ctx); err != nil {
			w.t.Error(err)
		}
	}()
	var once sync.Once
	w.stop = func() { once.Do(func() { cancel(); <-done }) }
	w.t.Cleanup(w.stop)
}

func (w *world) start(id string, amount int) string {
	w.t.Helper()
	got, err := w.orc.Start(context.Background(), "order", orderData{Order: id, Amount: amount}, saga.WithID(id))
	if err != nil {
		w.t.Fatal(err)
	}
	return got
}

// wait waits until saga id reaches a final state and returns it.
func (w *world) wait(id string) *saga.Instance {
	w.t.Helper()
	return waitFor(w.t, w.orc, id, func(in *saga.Instance) bool { return !in.State.Active() })
}

// stepTimeout is the step timeout of tests whose subject is not timeouts.
const stepTimeout = 15 * time.Second

func waitFor(t *testing.T, orc *saga.Orchestrator, id string, cond func(*saga.Instance) bool) *saga.Instance {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		in, err := orc.Get(context.Background(), id)
		if err != nil && !errors.Is(err, saga.ErrNotFound) {
			t.Fatal(err)
		}
		if err == nil && cond(in) {
			return in
		}
		if time.Now().After(deadline) {
			t.Fatalf("saga %s: condition not reached; last state %+v", id, in)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func stepStates(in *saga.Instance) []saga.StepState {
	var out []saga.StepState
	for _, s := range in.Steps {
		out = append(out, s.State)
	}
	return out
}

func historyKinds(in *saga.Instance) []string {
	var out []string
	for _, e := range in.History {
		out = append(out, e.Kind+":"+e.Step)
	}
	return out
}

func equal[T comparable](t *testing.T, what string, got, want []T) {
	t.Helper()
	if !slices.Equal(got, want) {
		t.Errorf("%s:\n got  %v\n want %v", what, got, want)
	}
}
