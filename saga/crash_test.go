package saga_test

import (
	"bufio"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/marty-msf/eventbus"
	"github.com/marty-msf/eventbus/internal/testenv"
	"github.com/marty-msf/eventbus/natsbus"
	"github.com/marty-msf/eventbus/saga"
	"github.com/marty-msf/eventbus/saga/sqlstore"
)

// The crash test runs orchestrators and participants in child processes
// (this test binary, selected by crashRoleEnv) and kills them with SIGKILL
// again and again: participants, orchestrators, one of each at once, and
// every process at once.
const (
	crashRoleEnv   = "SAGA_CRASH_ROLE" // "orchestrator" or "participants"
	crashNATSEnv   = "SAGA_CRASH_NATS"
	crashStoreEnv  = "SAGA_CRASH_STORE" // "postgres" or "sqlite"
	crashDBEnv     = "SAGA_CRASH_DB"    // PostgreSQL URL or SQLite file
	crashPrefixEnv = "SAGA_CRASH_PREFIX"
	crashCountEnv  = "SAGA_CRASH_COUNT"

	initialStock = 100_000
	initialMoney = 1_000_000
)

// crashServices are the participant services and their command types.
var crashServices = map[string][]string{
	"inventory": {"inventory.reserve", "inventory.release"},
	"payment":   {"payment.charge", "payment.refund"},
	"shipping":  {"shipping.ship", "shipping.cancel"},
}

type crashData struct {
	I      int `json:"i"`
	Amount int `json:"amount"`
}

// debugLogger logs to stderr when SAGA_CRASH_DEBUG is set.
func debugLogger() *slog.Logger {
	if os.Getenv("SAGA_CRASH_DEBUG") == "" {
		return nil
	}
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
}

func crashID(i int) string { return fmt.Sprintf("crash-%04d", i) }

// The failure rules of the crash test's participants, by saga number.
func paymentDeclined(i int) bool  { return i%7 == 3 }
func shippingRefused(i int) bool  { return i%5 == 4 && !paymentDeclined(i) }
func reserveFlakyOnce(i int) bool { return i%11 == 0 }

func crashDefinition() saga.Definition {
	steps := [][3]string{
		{"inventory", "inventory.reserve", "inventory.release"},
		{"payment", "payment.charge", "payment.refund"},
		{"shipping", "shipping.ship", "shipping.cancel"},
	}
	d := saga.Definition{Name: "checkout", CompensationRetry: saga.Retry{Attempts: 50, Backoff: 100 * time.Millisecond}}
	// Generous retries: a busy shared database refuses a connection now and
	// then, a transient error that must not change a saga's outcome.
	for _, s := range steps {
		d.Steps = append(d.Steps, saga.Step{Name: s[0], Service: s[0], Command: s[1], Compensation: s[2],
			Timeout: 5 * time.Second, Retry: saga.Retry{Attempts: 20, Backoff: 20 * time.Millisecond}})
	}
	return d
}

// crashParallel reports whether saga number i is a checkout-parallel one:
// it charges and ships at once, in a parallel group.
func crashParallel(i int) bool { return i%2 == 1 }

func crashParallelDefinition() saga.Definition {
	d := crashDefinition()
	d.Name = "checkout-parallel"
	d.Steps[1].Group, d.Steps[2].Group = "charge-and-ship", "charge-and-ship"
	return d
}

// openCrashStore opens the store the crash test's processes share.
func openCrashStore(ctx context.Context, kind, db, prefix string) (*sqlstore.Store, error) {
	if kind == "sqlite" {
		return sqlstore.OpenSQLite(ctx, db, &sqlstore.Options{TablePrefix: prefix})
	}
	return sqlstore.OpenPostgres(ctx, db, &sqlstore.Options{TablePrefix: prefix, MaxConns: 10})
}

// crashHelperMain is a child process: an orchestrator, which starts every
// saga not started yet and drives them, or the participants of the three
// services. It runs until it is killed.
func crashHelperMain() int {
	ctx := context.Background()
	fail := func(err error) int { fmt.Fprintln(os.Stderr, "crash helper:", err); return 2 }
	role := os.Getenv(crashRoleEnv)
	prefix := os.Getenv(crashPrefixEnv)
	// A busy shared database refuses connections now and then; a process
	// restarted by its supervisor tries again.
	var store *sqlstore.Store
	var err error
	for deadline := time.Now().Add(60 * time.Second); ; time.Sleep(200 * time.Millisecond) {
		store, err = openCrashStore(ctx, os.Getenv(crashStoreEnv), os.Getenv(crashDBEnv), prefix)
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			return fail(err)
		}
	}
	drv, err := natsbus.Open(ctx, &natsbus.Config{Servers: []string{os.Getenv(crashNATSEnv)}, Options: natsbus.Options{AckWait: 2 * time.Second}})
	if err != nil {
		return fail(err)
	}
	b := eventbus.New(&eventbus.Options{Source: "crash-" + role, Retry: eventbus.RetryPolicy{MaxAttempts: 100, MaxBackoff: time.Second}, Logger: debugLogger()})
	if err := b.Register("nats", drv); err != nil {
		return fail(err)
	}
	if role == "participants" {
		if err := crashParticipants(b, store, store.DB(), prefix); err != nil {
			return fail(err)
		}
		if err := b.Start(ctx); err != nil {
			return fail(err)
		}
		fmt.Println("ready")
		select {}
	}
	n, err := strconv.Atoi(os.Getenv(crashCountEnv))
	if err != nil {
		return fail(err)
	}
	orc, err := saga.NewOrchestrator(b, store, &saga.Options{Lease: time.Second, PollInterval: 100 * time.Millisecond, Concurrency: 32, Logger: debugLogger()})
	if err != nil {
		return fail(err)
	}
	if err := orc.Register(crashDefinition(), crashParallelDefinition()); err != nil {
		return fail(err)
	}
	if err := b.Start(ctx); err != nil {
		return fail(err)
	}
	go func() { _ = orc.Run(ctx) }()
	fmt.Println("ready")
	var wg sync.WaitGroup
	next := make(chan int)
	for range 16 {
		wg.Go(func() {
			for i := range next {
				data := crashData{I: i, Amount: 1 + i%10}
				name := "checkout"
				if crashParallel(i) {
					name = "checkout-parallel"
				}
				for {
					_, err := orc.Start(ctx, name, data, saga.WithID(crashID(i)))
					if err == nil || errors.Is(err, saga.ErrExists) {
						break
					}
					fmt.Fprintln(os.Stderr, "crash helper: start:", err)
					time.Sleep(100 * time.Millisecond)
				}
			}
		})
	}
	for i := range n {
		next <- i
	}
	close(next)
	wg.Wait()
	fmt.Println("all started")
	select {}
}

// crashParticipants serves the three services. Each effect and its
// bookkeeping is one transaction that also records the command's Key, so
// that a handler run again after its process died between its commit and
// the participant's record (the window saga's doc describes) changes
// nothing: such re-runs are counted in the reruns table.
func crashParticipants(b *eventbus.Bus, store saga.Store, db *sql.DB, prefix string) error {
	effect := func(ctx context.Context, req *saga.Request, stmts ...string) error {
		var d crashData
		if err := req.Decode(&d); err != nil {
			return saga.Fail(err)
		}
		tx, err := db.BeginTx(ctx, nil)
		if err != nil {
			return err
		}
		defer tx.Rollback()
		res, err := tx.ExecContext(ctx, `INSERT INTO `+prefix+`applied (rkey) VALUES ($1) ON CONFLICT DO NOTHING`, req.Key)
		if err != nil {
			return err
		}
		if n, err := res.RowsAffected(); err != nil {
			return err
		} else if n == 0 {
			if _, err := tx.ExecContext(ctx, `INSERT INTO `+prefix+`reruns (rkey) VALUES ($1)`, req.Key); err != nil {
				return err
			}
			return tx.Commit()
		}
		if req.Compensation {
			// An Uncertain compensation undoes the step only if it took
			// effect.
			var did int
			doKey := strings.TrimSuffix(req.Key, "/undo") + "/do"
			if err := tx.QueryRowContext(ctx, `SELECT count(*) FROM `+prefix+`applied WHERE rkey = $1`, doKey).Scan(&did); err != nil {
				return err
			}
			if did == 0 {
				return tx.Commit()
			}
		}
		for _, s := range stmts {
			if _, err := tx.ExecContext(ctx, s, d.Amount); err != nil {
				return err
			}
		}
		action := "do"
		if req.Compensation {
			action = "undo"
		}
		if _, err := tx.ExecContext(ctx, `INSERT INTO `+prefix+`effects (saga_id, step, action) VALUES ($1, $2, $3)`, req.SagaID, req.Step, action); err != nil {
			return err
		}
		return tx.Commit()
	}
	number := func(req *saga.Request) int {
		var d crashData
		_ = req.Decode(&d)
		return d.I
	}
	stock := func(da, dr string) string {
		return `UPDATE ` + prefix + `stock SET available = available ` + da + ` 1, reserved = reserved ` + dr + ` 1 WHERE CAST($1 AS BIGINT) > 0`
	}
	// One statement for both accounts, so that charges and refunds lock
	// the rows in the same order and never deadlock.
	move := func(from, to string) string {
		return `UPDATE ` + prefix + `accounts SET balance = balance + CASE name WHEN '` + to + `' THEN CAST($1 AS BIGINT) ELSE -CAST($1 AS BIGINT) END WHERE name IN ('customer', 'merchant')`
	}
	handlers := map[string]saga.StepHandler{
		"inventory.reserve": func(ctx context.Context, req *saga.Request) (any, error) {
			if reserveFlakyOnce(number(req)) && req.Attempt == 1 {
				return nil, errors.New("warehouse busy")
			}
			return "reserved", effect(ctx, req, stock("-", "+"))
		},
		"inventory.release": func(ctx context.Context, req *saga.Request) (any, error) {
			return "released", effect(ctx, req, stock("+", "-"))
		},
		"payment.charge": func(ctx context.Context, req *saga.Request) (any, error) {
			if paymentDeclined(number(req)) {
				return nil, saga.Fail(errors.New("card declined"))
			}
			return "charged", effect(ctx, req, move("customer", "merchant"))
		},
		"payment.refund": func(ctx context.Context, req *saga.Request) (any, error) {
			return "refunded", effect(ctx, req, move("merchant", "customer"))
		},
		"shipping.ship": func(ctx context.Context, req *saga.Request) (any, error) {
			if shippingRefused(number(req)) {
				return nil, saga.Fail(errors.New("address refused"))
			}
			return "shipped", effect(ctx, req)
		},
		"shipping.cancel": func(ctx context.Context, req *saga.Request) (any, error) {
			return "cancelled", effect(ctx, req)
		},
	}
	for service, cmds := range crashServices {
		p, err := saga.NewParticipant(b, service, store, &saga.ParticipantOptions{Concurrency: 16, Logger: debugLogger()})
		if err != nil {
			return err
		}
		for _, cmd := range cmds {
			if err := p.Handle(cmd, handlers[cmd]); err != nil {
				return err
			}
		}
	}
	return nil
}

// crashProc is a child process of the crash test.
type crashProc struct {
	role  string
	cmd   *exec.Cmd
	lines <-chan string
}

func TestCrashRecovery(t *testing.T) {
	if testing.Short() {
		t.Skip("crash test is long")
	}
	sagas, rounds := 150, 4
	if os.Getenv("EVENTBUS_SOAK") != "" {
		sagas, rounds = 1000, 12
	}
	if v, err := strconv.Atoi(os.Getenv("SAGA_CRASH_SAGAS")); err == nil {
		sagas = v
	}
	if v, err := strconv.Atoi(os.Getenv("SAGA_CRASH_ROUNDS")); err == nil {
		rounds = v
	}
	t.Run("postgres", func(t *testing.T) {
		prefix := uniquePrefix(t)
		openPostgres(t, prefix) // creates the tables, drops them at the end
		crashRun(t, "postgres", testenv.DatabaseURL(t), prefix, sagas, rounds)
	})
	t.Run("sqlite", func(t *testing.T) {
		crashRun(t, "sqlite", filepath.Join(t.TempDir(), "saga.db"), "saga_", sagas, rounds)
	})
}

// crashRun runs sagas sagas through two orchestrator and two participant
// processes on one store, killing some of them rounds times, then checks
// that every saga ended as its participants' rules say, each effect made
// exactly once.
func crashRun(t *testing.T, storeKind, dbURL, prefix string, sagas, rounds int) {
	ctx := context.Background()
	began := time.Now()
	store, err := openCrashStore(ctx, storeKind, dbURL, prefix)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { store.Close() })
	db := store.DB()
	for _, s := range []string{
		`CREATE TABLE ` + prefix + `stock (id INT PRIMARY KEY, available BIGINT NOT NULL, reserved BIGINT NOT NULL)`,
		`CREATE TABLE ` + prefix + `accounts (name TEXT PRIMARY KEY, balance BIGINT NOT NULL)`,
		`CREATE TABLE ` + prefix + `effects (saga_id TEXT NOT NULL, step TEXT NOT NULL, action TEXT NOT NULL)`,
		`CREATE TABLE ` + prefix + `applied (rkey TEXT PRIMARY KEY)`,
		`CREATE TABLE ` + prefix + `reruns (rkey TEXT NOT NULL)`,
		`INSERT INTO ` + prefix + `stock VALUES (1, ` + strconv.Itoa(initialStock) + `, 0)`,
		`INSERT INTO ` + prefix + `accounts VALUES ('customer', ` + strconv.Itoa(initialMoney) + `), ('merchant', 0)`,
	} {
		if _, err := db.ExecContext(ctx, s); err != nil {
			t.Fatal(err)
		}
	}
	t.Cleanup(func() {
		for _, tbl := range []string{"stock", "accounts", "effects", "applied", "reruns"} {
			_, _ = db.Exec("DROP TABLE IF EXISTS " + prefix + tbl)
		}
	})

	srv, err := natsbus.StartServer(ctx, &natsbus.EmbeddedOptions{Port: -1, DataDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = srv.Shutdown(context.Background()) })
	// The queues exist before any process runs, so that nothing sent
	// while a service's every process is down is lost.
	declareCrashQueues(t, srv.ClientURL())

	spawn := func(role string) crashProc {
		cmd := exec.Command(os.Args[0], "-test.run=^$")
		cmd.Env = append(os.Environ(), crashRoleEnv+"="+role, crashNATSEnv+"="+srv.ClientURL(), crashStoreEnv+"="+storeKind,
			crashDBEnv+"="+dbURL, crashPrefixEnv+"="+prefix, crashCountEnv+"="+strconv.Itoa(sagas))
		cmd.Stderr = os.Stderr
		out, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		lines := make(chan string, 4)
		go func() {
			defer close(lines)
			sc := bufio.NewScanner(out)
			for sc.Scan() {
				lines <- sc.Text()
			}
		}()
		return crashProc{role, cmd, lines}
	}
	kill := func(p crashProc) {
		if p.cmd.ProcessState != nil {
			return
		}
		_ = p.cmd.Process.Signal(syscall.SIGKILL)
		for range p.lines {
		}
		_ = p.cmd.Wait()
	}
	ready := func(p crashProc) {
		select {
		case l := <-p.lines:
			if l == "ready" {
				return
			}
			kill(p)
			t.Fatalf("%s process said %q, want ready", p.role, l)
		case <-time.After(90 * time.Second):
			kill(p)
			t.Fatalf("%s process not ready after 90s", p.role)
		}
	}
	counts := func() map[saga.State]int {
		rows, err := db.QueryContext(ctx, `SELECT state, count(*) FROM `+prefix+`instances GROUP BY state`)
		if err != nil {
			t.Fatal(err)
		}
		defer rows.Close()
		c := map[saga.State]int{}
		for rows.Next() {
			var s string
			var n int
			if err := rows.Scan(&s, &n); err != nil {
				t.Fatal(err)
			}
			c[saga.State(s)] = n
		}
		return c
	}
	finished := func(c map[saga.State]int) int { return c[saga.Completed] + c[saga.Compensated] + c[saga.Failed] }

	// Two orchestrator and two participant processes run. Each round waits
	// a random moment, once some sagas finished since the last kill, and
	// kills by turn: a participant process, an orchestrator process, one of
	// each at once, or all four; then restarts them.
	procs := []crashProc{spawn("participants"), spawn("participants"), spawn("orchestrator"), spawn("orchestrator")}
	for _, p := range procs {
		ready(p)
	}
	defer func() {
		for _, p := range procs {
			kill(p)
		}
	}()
	rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 7))
	kinds := []string{"participant", "orchestrator", "both", "all"}
	killsByKind := map[string]int{}
	processesKilled := map[string]int{}
	finishedBefore := 0
	for r := range rounds {
		kind := kinds[r%len(kinds)]
		time.Sleep(time.Duration(200+rng.IntN(800)) * time.Millisecond)
		for wait := time.Now().Add(10 * time.Second); time.Now().Before(wait) && finished(counts()) < finishedBefore+max(sagas/20, 5); {
			time.Sleep(50 * time.Millisecond)
		}
		var victims []int
		switch kind {
		case "participant":
			victims = []int{rng.IntN(2)}
		case "orchestrator":
			victims = []int{2 + rng.IntN(2)}
		case "both":
			victims = []int{rng.IntN(2), 2 + rng.IntN(2)}
		default:
			victims = []int{0, 1, 2, 3}
		}
		for _, v := range victims {
			_ = procs[v].cmd.Process.Signal(syscall.SIGKILL)
		}
		for _, v := range victims {
			kill(procs[v])
			processesKilled[procs[v].role]++
		}
		killsByKind[kind]++
		c := counts()
		finishedBefore = finished(c)
		t.Logf("SIGKILL %d (%s): %v", r+1, kind, c)
		for _, v := range victims {
			procs[v] = spawn(procs[v].role)
		}
		for _, v := range victims {
			ready(procs[v])
		}
	}
	lastRestart := time.Now()
	var c map[saga.State]int
	for deadline := time.Now().Add(3 * time.Minute); ; {
		c = counts()
		if finished(c) == sagas {
			break
		}
		if time.Now().After(deadline) {
			t.Errorf("sagas not finished 3 minutes after the last restart: %v", c)
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	finishedIn := time.Since(lastRestart)

	// Every saga ended as its participants' rules say. In a parallel
	// saga whose charge or shipment failed, the other step of the group
	// either ran and was undone, or was barred by its compensation: its
	// effects are optional, done and undone once or not at all.
	wantCompleted, wantCompensated, parallel := 0, 0, 0
	want := map[string]map[string]int{}
	optional := map[string]string{}
	for i := range sagas {
		e := map[string]int{}
		if crashParallel(i) {
			parallel++
		}
		switch {
		case paymentDeclined(i):
			e["inventory/do"], e["inventory/undo"] = 1, 1
			if crashParallel(i) {
				optional[crashID(i)] = "shipping"
			}
			wantCompensated++
		case shippingRefused(i):
			e["inventory/do"], e["inventory/undo"] = 1, 1
			if crashParallel(i) {
				optional[crashID(i)] = "payment"
			} else {
				e["payment/do"], e["payment/undo"] = 1, 1
			}
			wantCompensated++
		default:
			e["inventory/do"], e["payment/do"], e["shipping/do"] = 1, 1, 1
			wantCompleted++
		}
		want[crashID(i)] = e
	}
	if c[saga.Completed] != wantCompleted || c[saga.Compensated] != wantCompensated || c[saga.Failed] != 0 {
		t.Errorf("states %v, want %d completed and %d compensated", c, wantCompleted, wantCompensated)
	}
	got := map[string]map[string]int{}
	rows, err := db.QueryContext(ctx, `SELECT saga_id, step, action, count(*) FROM `+prefix+`effects GROUP BY saga_id, step, action`)
	if err != nil {
		t.Fatal(err)
	}
	totalEffects, duplicates := 0, 0
	for rows.Next() {
		var id, step, action string
		var n int
		if err := rows.Scan(&id, &step, &action, &n); err != nil {
			t.Fatal(err)
		}
		if got[id] == nil {
			got[id] = map[string]int{}
		}
		got[id][step+"/"+action] = n
		totalEffects += n
		duplicates += n - 1
	}
	rows.Close()
	bad, optionalRan := 0, 0
	for id, e := range want {
		if step := optional[id]; step != "" && got[id][step+"/do"] == 1 && got[id][step+"/undo"] == 1 {
			e[step+"/do"], e[step+"/undo"] = 1, 1
			optionalRan++
		}
		if fmt.Sprint(got[id]) != fmt.Sprint(e) {
			if bad++; bad <= 10 {
				t.Errorf("%s: effects %v, want %v", id, got[id], e)
				if in, err := store.Load(ctx, id); err == nil {
					for _, h := range in.History {
						t.Logf("  %s %s %s #%d %s", h.Time.Format("15:04:05.000"), h.Kind, h.Step, h.Attempt, h.Error)
					}
				}
			}
		}
	}
	if bad > 0 {
		t.Errorf("%d sagas with wrong effects", bad)
	}

	var available, reserved, customer, merchant, charged, reruns int
	if err := db.QueryRowContext(ctx, `SELECT available, reserved FROM `+prefix+`stock`).Scan(&available, &reserved); err != nil {
		t.Fatal(err)
	}
	if err := db.QueryRowContext(ctx, `SELECT
		(SELECT balance FROM `+prefix+`accounts WHERE name = 'customer'),
		(SELECT balance FROM `+prefix+`accounts WHERE name = 'merchant'),
		(SELECT count(*) FROM `+prefix+`reruns)`).Scan(&customer, &merchant, &reruns); err != nil {
		t.Fatal(err)
	}
	for i := range sagas {
		if !paymentDeclined(i) && !shippingRefused(i) {
			charged += 1 + i%10
		}
	}
	if available+reserved != initialStock || reserved != wantCompleted {
		t.Errorf("stock: available %d + reserved %d, want %d with %d reserved", available, reserved, initialStock, wantCompleted)
	}
	if customer+merchant != initialMoney || merchant != charged {
		t.Errorf("money: customer %d + merchant %d, want %d with %d charged", customer, merchant, initialMoney, charged)
	}
	timeouts, takeovers := 0, 0
	all, err := store.List(ctx, saga.ListFilter{Limit: sagas + 1})
	if err != nil {
		t.Fatal(err)
	}
	for _, in := range all {
		for _, h := range in.History {
			switch h.Kind {
			case "step.do.timeout", "step.undo.timeout":
				timeouts++
			case "takeover":
				takeovers++
			}
		}
	}
	t.Logf("crash test (%s): %d sagas (%d with a parallel group; in %d of %d failed ones the sibling ran and was undone); "+
		"SIGKILL rounds %v, processes killed %v; %d completed, %d compensated, %d failed, %d stuck; "+
		"%d effects, %d duplicates, %d handler re-runs absorbed by Request.Key; %d attempt timeouts, %d saga takeovers; "+
		"finished %.1fs after the last restart, %.1fs in all",
		storeKind, sagas, parallel, optionalRan, len(optional), killsByKind, processesKilled,
		c[saga.Completed], c[saga.Compensated], c[saga.Failed], c[saga.Running]+c[saga.Compensating],
		totalEffects, duplicates, reruns, timeouts, takeovers, finishedIn.Seconds(), time.Since(began).Seconds())
}

// declareCrashQueues creates the durable queues of the participants'
// commands and the orchestrators' replies.
func declareCrashQueues(t *testing.T, natsURL string) {
	ctx := context.Background()
	drv, err := natsbus.Open(ctx, &natsbus.Config{Servers: []string{natsURL}})
	if err != nil {
		t.Fatal(err)
	}
	b := eventbus.New(nil)
	if err := b.Register("nats", drv); err != nil {
		t.Fatal(err)
	}
	if err := b.Start(ctx); err != nil {
		t.Fatal(err)
	}
	defer func() {
		cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		_ = b.Close(cctx)
	}()
	for service, cmds := range crashServices {
		if err := b.DeclareCommands(ctx, service, cmds...); err != nil {
			t.Fatal(err)
		}
	}
	if err := b.DeclareCommands(ctx, "saga", saga.ReplyType); err != nil {
		t.Fatal(err)
	}
}
