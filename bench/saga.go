package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/marty-msf/eventbus"
	"github.com/marty-msf/eventbus/driver"
	"github.com/marty-msf/eventbus/membus"
	"github.com/marty-msf/eventbus/natsbus"
	"github.com/marty-msf/eventbus/saga"
	"github.com/marty-msf/eventbus/saga/sqlstore"
)

// Saga rows: a 3-step saga (every participant answers at once), started by
// `concurrency` clients that each start a saga and wait for its completion
// event, back to back. The PostgreSQL rows carry commands on membus, so that
// the store is what is measured; their raw row is a pgxpool loop running the
// same statements on the same kind of tables: the saga's insert, and for each
// step the participant's claim and completion and the orchestrator's
// versioned update (the orchestrator keeps the instances it wrote, so a
// reply needs no load). The embedded row is the default with nothing
// installed: SQLite and an embedded NATS server.
//
// "round trips/s" is sagas per second; p50 and p99 are completion times.
// The database comes from DATABASE_URL (default
// postgres://postgres@127.0.0.1:5432/test?sslmode=disable).
const sagaBrokerPG = "saga on PostgreSQL"

func init() {
	for _, c := range []int{1, 16, 64} {
		broker := fmt.Sprintf("%s, %d clients", sagaBrokerPG, c)
		register(Scenario{Name: "raw pgx loop, same statements", Broker: broker, Role: RoleRaw, Run: func(ctx context.Context, cfg Config) (Result, error) {
			return runSagaRawPG(ctx, cfg, c)
		}})
		register(Scenario{Name: "saga, happy path", Broker: broker, Role: RoleBus, Run: func(ctx context.Context, cfg Config) (Result, error) {
			return runSagaPG(ctx, cfg, c, false, "order", 0)
		}})
		register(Scenario{Name: "saga, parallel group (charge ‖ ship)", Broker: broker, Role: RoleReference, Run: func(ctx context.Context, cfg Config) (Result, error) {
			return runSagaPG(ctx, cfg, c, false, "order-parallel", 0)
		}})
		registerTarget(ratioTarget(broker, "sagas/s ≥ 0.5× raw loop", RoleBus, RoleRaw, Result.PublishRate, 0.5))
		if c != 16 {
			continue
		}
		// The compensation path runs at one concurrency: it costs as much
		// as a scenario of its own at each.
		register(Scenario{Name: "saga, compensation path", Broker: broker, Role: RoleReference, Run: func(ctx context.Context, cfg Config) (Result, error) {
			return runSagaPG(ctx, cfg, c, true, "order", 0)
		}})
		// Steps that take time (a call to another system) are where a
		// parallel group pays: its two steps overlap.
		for _, name := range []string{"order", "order-parallel"} {
			label := "sequential"
			if name == "order-parallel" {
				label = "parallel group (charge ‖ ship)"
			}
			register(Scenario{Name: "saga, 10 ms steps, " + label, Broker: broker, Role: RoleReference, Run: func(ctx context.Context, cfg Config) (Result, error) {
				return runSagaPG(ctx, cfg, c, false, name, 10*time.Millisecond)
			}})
		}
		registerTarget(Target{Broker: broker, Goal: "compensation path sagas/s ≥ 0.5× happy path", Measure: func(g *group) (string, bool, bool) {
			comp, happy := g.name("saga, compensation path"), g.name("saga, happy path")
			if comp == nil || happy == nil || happy.res.PublishRate() == 0 {
				return "", false, false
			}
			r := comp.res.PublishRate() / happy.res.PublishRate()
			return fmt.Sprintf("%.2f×", r), r >= 0.5, true
		}})
	}
	register(Scenario{Name: "saga on SQLite + embedded NATS, 16 clients", Broker: "saga, embedded default", Role: RoleBus, Run: runSagaEmbedded})
}

func databaseURL() string {
	if u := os.Getenv("DATABASE_URL"); u != "" {
		return u
	}
	return "postgres://postgres@127.0.0.1:5432/test?sslmode=disable"
}

func benchPrefix() string {
	var b [4]byte
	_, _ = rand.Read(b[:])
	return "bench_" + hex.EncodeToString(b[:]) + "_"
}

// openBenchPG opens a store on fresh tables and returns it, their prefix,
// and a function that drops them and closes it.
func openBenchPG(ctx context.Context) (*sqlstore.Store, string, func(), error) {
	prefix := benchPrefix()
	s, err := sqlstore.OpenPostgres(ctx, databaseURL(), &sqlstore.Options{TablePrefix: prefix})
	if err != nil {
		return nil, "", nil, err
	}
	return s, prefix, func() {
		_, _ = s.DB().Exec("DROP TABLE IF EXISTS " + prefix + "instances")
		_, _ = s.DB().Exec("DROP TABLE IF EXISTS " + prefix + "records")
		_ = s.Close()
	}, nil
}

var sagaSteps = [][3]string{
	{"inventory", "inventory.reserve", "inventory.release"},
	{"payment", "payment.charge", "payment.refund"},
	{"shipping", "shipping.ship", "shipping.cancel"},
}

// sagaWorld is an orchestrator and three participants on one bus; done
// reports each saga's final event. It registers two definitions of the
// same steps: "order" runs them in sequence, "order-parallel" charges and
// ships at once (a parallel group).
type sagaWorld struct {
	bus     *eventbus.Bus
	orc     *saga.Orchestrator
	mu      sync.Mutex
	waiting map[string]chan string
}

func newSagaWorld(drv driver.Driver, store saga.Store, work time.Duration) (*sagaWorld, error) {
	w := &sagaWorld{waiting: map[string]chan string{}}
	w.bus = eventbus.New(&eventbus.Options{Source: "bench"})
	if err := w.bus.Register("b", drv); err != nil {
		return nil, err
	}
	orc, err := saga.NewOrchestrator(w.bus, store, &saga.Options{Concurrency: 64})
	if err != nil {
		return nil, err
	}
	w.orc = orc
	def := saga.Definition{Name: "order"}
	for _, s := range sagaSteps {
		def.Steps = append(def.Steps, saga.Step{Name: s[0], Service: s[0], Command: s[1], Compensation: s[2], Timeout: 30 * time.Second})
	}
	par := def
	par.Name, par.Steps = "order-parallel", append([]saga.Step(nil), def.Steps...)
	par.Steps[1].Group, par.Steps[2].Group = "charge-and-ship", "charge-and-ship"
	if err := orc.Register(def, par); err != nil {
		return nil, err
	}
	for _, s := range sagaSteps {
		p, err := saga.NewParticipant(w.bus, s[0], store, &saga.ParticipantOptions{Concurrency: 64})
		if err != nil {
			return nil, err
		}
		for _, cmd := range s[1:] {
			err := p.Handle(cmd, func(ctx context.Context, req *saga.Request) (any, error) {
				var d struct{ Fail bool }
				_ = req.Decode(&d)
				if d.Fail && req.Step == "shipping" {
					return nil, saga.Fail(errors.New("refused"))
				}
				if work > 0 {
					time.Sleep(work) // the step's call to another system
				}
				return map[string]string{"ok": req.Step}, nil
			})
			if err != nil {
				return nil, err
			}
		}
	}
	final := eventbus.HandlerFunc(func(_ context.Context, m *eventbus.Message) error {
		w.mu.Lock()
		ch := w.waiting[m.Subject]
		delete(w.waiting, m.Subject)
		w.mu.Unlock()
		if ch != nil {
			ch <- m.Type
		}
		return nil
	})
	if _, err := w.bus.SubscribeEvents(context.Background(), []string{saga.EventCompleted, saga.EventCompensated, saga.EventFailed}, "", final, eventbus.WithConcurrency(16)); err != nil {
		return nil, err
	}
	return w, nil
}

// run starts sagas from clients goroutines, back to back, and times each
// until its final event.
func (w *sagaWorld) run(ctx context.Context, cfg Config, clients int, fail bool, name string) (Result, error) {
	if err := w.bus.Start(ctx); err != nil {
		return Result{}, err
	}
	runCtx, stop := context.WithCancel(ctx)
	ran := make(chan struct{})
	go func() { defer close(ran); _ = w.orc.Run(runCtx) }()
	defer func() { stop(); <-ran }()
	want := saga.EventCompleted
	if fail {
		want = saga.EventCompensated
	}
	var seq atomic.Int64
	one := func(ctx context.Context) error {
		id := "s" + strconv.FormatInt(seq.Add(1), 10)
		ch := make(chan string, 1)
		w.mu.Lock()
		w.waiting[id] = ch
		w.mu.Unlock()
		if _, err := w.orc.Start(ctx, name, map[string]any{"Fail": fail, "Order": id}, saga.WithID(id)); err != nil {
			return err
		}
		select {
		case got := <-ch:
			if got != want {
				return fmt.Errorf("saga %s ended with %s, want %s", id, got, want)
			}
			return nil
		case <-time.After(30 * time.Second):
			return fmt.Errorf("saga %s did not finish", id)
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return concurrentLatency(ctx, cfg, clients, one)
}

func (w *sagaWorld) close() error {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	return w.bus.Close(ctx)
}

func runSagaPG(ctx context.Context, cfg Config, clients int, fail bool, name string, work time.Duration) (Result, error) {
	store, _, drop, err := openBenchPG(ctx)
	if err != nil {
		return Result{}, err
	}
	defer drop()
	w, err := newSagaWorld(membus.New(nil), store, work)
	if err != nil {
		return Result{}, err
	}
	defer w.close()
	res, err := w.run(ctx, cfg, clients, fail, name)
	res.Note = fmt.Sprintf("%d clients; commands, replies and events on membus", clients)
	if work > 0 {
		res.Note += fmt.Sprintf("; each step's handler takes %v", work)
	}
	return res, err
}

func runSagaEmbedded(ctx context.Context, cfg Config) (Result, error) {
	dir, err := os.MkdirTemp("", "bench-saga-")
	if err != nil {
		return Result{}, err
	}
	defer os.RemoveAll(dir)
	store, err := sqlstore.OpenSQLite(ctx, filepath.Join(dir, "saga.db"), nil)
	if err != nil {
		return Result{}, err
	}
	defer store.Close()
	drv, err := natsbus.OpenEmbedded(ctx, &natsbus.EmbeddedOptions{DataDir: filepath.Join(dir, "nats")}, nil)
	if err != nil {
		return Result{}, err
	}
	w, err := newSagaWorld(drv, store, 0)
	if err != nil {
		_ = drv.Close(ctx)
		return Result{}, err
	}
	defer w.close()
	return w.run(ctx, cfg, 16, false, "order")
}

// runSagaRawPG runs the statements a saga makes, with pgxpool, from clients
// goroutines back to back.
func runSagaRawPG(ctx context.Context, cfg Config, clients int) (Result, error) {
	_, prefix, drop, err := openBenchPG(ctx)
	if err != nil {
		return Result{}, err
	}
	defer drop()
	pool, err := pgxpool.New(ctx, databaseURL())
	if err != nil {
		return Result{}, err
	}
	defer pool.Close()
	inst, rec := prefix+"instances", prefix+"records"
	body, _ := json.Marshal(saga.Instance{Name: "order", State: saga.Running, Data: json.RawMessage(`{"Fail":false,"Order":"s1"}`),
		Steps: []saga.StepStatus{{Name: "inventory"}, {Name: "payment"}, {Name: "shipping"}}})
	var seq atomic.Int64
	one := func(ctx context.Context) error {
		id := "r" + strconv.FormatInt(seq.Add(1), 10)
		now := time.Now().UnixNano()
		if _, err := pool.Exec(ctx, `INSERT INTO `+inst+` (id, name, state, version, wake_at, owner, lease_until, created, body)
			VALUES ($1, 'order', 'running', 1, $2, 'me', $2, $2, $3) ON CONFLICT (id) DO NOTHING`, id, now, string(body)); err != nil {
			return err
		}
		for v, step := range []string{"inventory", "payment", "shipping"} {
			key := step + "/" + id + "/" + step + "/do"
			if _, err := pool.Exec(ctx, `INSERT INTO `+rec+` (rkey, done, outcome, reply, error, owner, lease_until, updated)
				VALUES ($1, 0, '', '', '', 'p', $2, $2) ON CONFLICT (rkey) DO NOTHING`, key, now); err != nil {
				return err
			}
			if _, err := pool.Exec(ctx, `UPDATE `+rec+` SET done = 1, outcome = 'ok', reply = $1, error = '', updated = $2
				WHERE rkey = $3 AND owner = 'p' AND done = 0`, `{"ok":"x"}`, now, key); err != nil {
				return err
			}
			version := int64(v + 1)
			if _, err := pool.Exec(ctx, `UPDATE `+inst+` SET state = $1, version = $2, wake_at = $3, owner = 'me', lease_until = $3, body = $4
				WHERE id = $5 AND version = $6`, "running", version+1, now, string(body), id, version); err != nil {
				return err
			}
		}
		return nil
	}
	res, err := concurrentLatency(ctx, cfg, clients, one)
	res.Note = fmt.Sprintf("%d clients; 10 statements per saga", clients)
	return res, err
}

// concurrentLatency runs op from clients goroutines back to back for
// cfg.Duration (or cfg.Messages ops in all) and records every op's time.
func concurrentLatency(ctx context.Context, cfg Config, clients int, op func(ctx context.Context) error) (Result, error) {
	for range 20 {
		if err := op(ctx); err != nil {
			return Result{}, fmt.Errorf("warm-up: %w", err)
		}
	}
	var (
		mu       sync.Mutex
		lat      []time.Duration
		firstErr error
		claimed  atomic.Int64
		stop     atomic.Bool
		wg       sync.WaitGroup
	)
	m := startMeter(cfg)
	start := time.Now()
	if cfg.Messages <= 0 {
		t := time.AfterFunc(cfg.Duration, func() { stop.Store(true) })
		defer t.Stop()
	}
	for range clients {
		wg.Go(func() {
			var mine []time.Duration
			for !stop.Load() {
				if cfg.Messages > 0 && claimed.Add(1) > cfg.Messages {
					break
				}
				t0 := time.Now()
				if err := op(ctx); err != nil {
					mu.Lock()
					firstErr = cmpErr(firstErr, err)
					mu.Unlock()
					stop.Store(true)
					break
				}
				mine = append(mine, time.Since(t0))
			}
			mu.Lock()
			lat = append(lat, mine...)
			mu.Unlock()
		})
	}
	wg.Wait()
	elapsed := time.Since(start)
	res := Result{Messages: int64(len(lat)), Handled: int64(len(lat)), Publish: elapsed, Consume: elapsed, Latencies: lat}
	res.Allocs, res.CPU = m.stop(cfg)
	return res, firstErr
}

func cmpErr(first, err error) error {
	if first != nil {
		return first
	}
	return err
}
