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
	"strconv"
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

// The crash test runs the orchestrator in a child process (this test binary,
// selected by crashHelperEnv) and kills it with SIGKILL again and again.
const (
	crashHelperEnv = "SAGA_CRASH_HELPER"
	crashNATSEnv   = "SAGA_CRASH_NATS"
	crashDBEnv     = "SAGA_CRASH_DB"
	crashPrefixEnv = "SAGA_CRASH_PREFIX"
	crashCountEnv  = "SAGA_CRASH_COUNT"

	crashSagas   = 1000
	initialStock = 100_000
	initialMoney = 1_000_000
)

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

// crashHelperMain is the orchestrator process: it starts every saga not
// started yet and drives them until it is killed.
func crashHelperMain() int {
	ctx := context.Background()
	fail := func(err error) int { fmt.Fprintln(os.Stderr, "crash helper:", err); return 2 }
	n, err := strconv.Atoi(os.Getenv(crashCountEnv))
	if err != nil {
		return fail(err)
	}
	store, err := sqlstore.OpenPostgres(ctx, os.Getenv(crashDBEnv), &sqlstore.Options{TablePrefix: os.Getenv(crashPrefixEnv), MaxConns: 10})
	if err != nil {
		return fail(err)
	}
	drv, err := natsbus.Open(ctx, &natsbus.Config{Servers: []string{os.Getenv(crashNATSEnv)}, Options: natsbus.Options{AckWait: 2 * time.Second}})
	if err != nil {
		return fail(err)
	}
	b := eventbus.New(&eventbus.Options{Source: "crash-orchestrator", Retry: eventbus.RetryPolicy{MaxAttempts: 100, MaxBackoff: time.Second}, Logger: debugLogger()})
	if err := b.Register("nats", drv); err != nil {
		return fail(err)
	}
	orc, err := saga.NewOrchestrator(b, store, &saga.Options{Lease: time.Second, PollInterval: 100 * time.Millisecond, Concurrency: 32, Logger: debugLogger()})
	if err != nil {
		return fail(err)
	}
	if err := orc.Register(crashDefinition()); err != nil {
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
				for {
					_, err := orc.Start(ctx, "checkout", data, saga.WithID(crashID(i)))
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

// crashParticipants serves the three services, each effect and its
// bookkeeping in one PostgreSQL transaction.
func crashParticipants(t *testing.T, b *eventbus.Bus, store saga.Store, db *sql.DB, prefix string) {
	effect := func(ctx context.Context, req *saga.Request, action string, stmts ...string) error {
		var d crashData
		if err := req.Decode(&d); err != nil {
			return saga.Fail(err)
		}
		tx, err := db.BeginTx(ctx, nil)
		if err != nil {
			return err
		}
		defer tx.Rollback()
		for _, s := range stmts {
			if _, err := tx.ExecContext(ctx, s, d.Amount); err != nil {
				return err
			}
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
		return `UPDATE ` + prefix + `stock SET available = available ` + da + ` 1, reserved = reserved ` + dr + ` 1 WHERE $1::bigint > 0`
	}
	// One statement for both accounts, so that charges and refunds lock
	// the rows in the same order and never deadlock.
	move := func(from, to string) string {
		return `UPDATE ` + prefix + `accounts SET balance = balance + CASE name WHEN '` + to + `' THEN $1::bigint ELSE -$1::bigint END WHERE name IN ('customer', 'merchant')`
	}
	handlers := map[string]map[string]saga.StepHandler{
		"inventory": {
			"inventory.reserve": func(ctx context.Context, req *saga.Request) (any, error) {
				if reserveFlakyOnce(number(req)) && req.Attempt == 1 {
					return nil, errors.New("warehouse busy")
				}
				return "reserved", effect(ctx, req, "do", stock("-", "+"))
			},
			"inventory.release": func(ctx context.Context, req *saga.Request) (any, error) {
				return "released", effect(ctx, req, "undo", stock("+", "-"))
			},
		},
		"payment": {
			"payment.charge": func(ctx context.Context, req *saga.Request) (any, error) {
				if paymentDeclined(number(req)) {
					return nil, saga.Fail(errors.New("card declined"))
				}
				return "charged", effect(ctx, req, "do", move("customer", "merchant"))
			},
			"payment.refund": func(ctx context.Context, req *saga.Request) (any, error) {
				return "refunded", effect(ctx, req, "undo", move("merchant", "customer"))
			},
		},
		"shipping": {
			"shipping.ship": func(ctx context.Context, req *saga.Request) (any, error) {
				if shippingRefused(number(req)) {
					return nil, saga.Fail(errors.New("address refused"))
				}
				return "shipped", effect(ctx, req, "do")
			},
			"shipping.cancel": func(ctx context.Context, req *saga.Request) (any, error) {
				return "cancelled", effect(ctx, req, "undo")
			},
		},
	}
	for service, hs := range handlers {
		p, err := saga.NewParticipant(b, service, store, &saga.ParticipantOptions{Concurrency: 16, Logger: debugLogger()})
		if err != nil {
			t.Fatal(err)
		}
		for cmd, h := range hs {
			if err := p.Handle(cmd, h); err != nil {
				t.Fatal(err)
			}
		}
	}
}

func TestCrashRecovery(t *testing.T) {
	if testing.Short() {
		t.Skip("crash test is long")
	}
	dbURL := testenv.DatabaseURL(t)
	ctx := context.Background()
	prefix := uniquePrefix(t)
	store := openPostgres(t, prefix)
	db := store.DB()
	for _, s := range []string{
		`CREATE TABLE ` + prefix + `stock (id INT PRIMARY KEY, available BIGINT NOT NULL, reserved BIGINT NOT NULL)`,
		`CREATE TABLE ` + prefix + `accounts (name TEXT PRIMARY KEY, balance BIGINT NOT NULL)`,
		`CREATE TABLE ` + prefix + `effects (saga_id TEXT NOT NULL, step TEXT NOT NULL, action TEXT NOT NULL)`,
		`INSERT INTO ` + prefix + `stock VALUES (1, ` + strconv.Itoa(initialStock) + `, 0)`,
		`INSERT INTO ` + prefix + `accounts VALUES ('customer', ` + strconv.Itoa(initialMoney) + `), ('merchant', 0)`,
	} {
		if _, err := db.ExecContext(ctx, s); err != nil {
			t.Fatal(err)
		}
	}
	t.Cleanup(func() {
		for _, tbl := range []string{"stock", "accounts", "effects"} {
			_, _ = db.Exec("DROP TABLE IF EXISTS " + prefix + tbl)
		}
	})

	srv, err := natsbus.StartServer(ctx, &natsbus.EmbeddedOptions{Port: -1, DataDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = srv.Shutdown(context.Background()) })
	drv, err := natsbus.Open(ctx, &natsbus.Config{Servers: []string{srv.ClientURL()}, Options: natsbus.Options{AckWait: 2 * time.Second}})
	if err != nil {
		t.Fatal(err)
	}
	b := eventbus.New(&eventbus.Options{Source: "crash-participants", Retry: eventbus.RetryPolicy{MaxAttempts: 100, MaxBackoff: time.Second}, Logger: debugLogger()})
	if err := b.Register("nats", drv); err != nil {
		t.Fatal(err)
	}
	crashParticipants(t, b, store, db, prefix)
	if err := b.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = b.Close(cctx)
	})

	spawn := func() (*exec.Cmd, <-chan string) {
		cmd := exec.Command(os.Args[0], "-test.run=^$")
		cmd.Env = append(os.Environ(), crashHelperEnv+"=1", crashNATSEnv+"="+srv.ClientURL(), crashDBEnv+"="+dbURL,
			crashPrefixEnv+"="+prefix, crashCountEnv+"="+strconv.Itoa(crashSagas))
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
		return cmd, lines
	}
	kill := func(cmd *exec.Cmd, lines <-chan string) {
		if cmd.ProcessState != nil {
			return
		}
		_ = cmd.Process.Signal(syscall.SIGKILL)
		for range lines {
		}
		_ = cmd.Wait()
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
	finishedBefore := 0
	rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 7))
	// Two orchestrator processes run at once. Each round kills one at a
	// random moment (the other takes its sagas over when their leases
	// expire), then the other (nobody runs: the next round restarts them).
	rounds := 3
	if v, err := strconv.Atoi(os.Getenv("SAGA_CRASH_ROUNDS")); err == nil {
		rounds = v
	}
	type proc struct {
		cmd   *exec.Cmd
		lines <-chan string
	}
	start := func() proc {
		cmd, lines := spawn()
		if l := <-lines; l != "ready" {
			kill(cmd, lines)
			t.Fatalf("orchestrator process said %q, want ready", l)
		}
		return proc{cmd, lines}
	}
	kills := 0
	killLater := func(p proc) {
		// Kill at a random moment, once the processes made some progress,
		// so that every kill lands in the middle of the work.
		time.Sleep(time.Duration(200+rng.IntN(1000)) * time.Millisecond)
		for wait := time.Now().Add(10 * time.Second); time.Now().Before(wait) && finished(counts()) < finishedBefore+40; {
			time.Sleep(50 * time.Millisecond)
		}
		kill(p.cmd, p.lines)
		kills++
		c := counts()
		finishedBefore = finished(c)
		t.Logf("SIGKILL %d: %v", kills, c)
	}
	for range rounds {
		p1, p2 := start(), start()
		killLater(p1)
		killLater(p2)
	}
	p1, p2 := start(), start()
	defer kill(p1.cmd, p1.lines)
	defer kill(p2.cmd, p2.lines)
	deadline := time.Now().Add(60 * time.Second)
	var c map[saga.State]int
	for {
		c = counts()
		if c[saga.Completed]+c[saga.Compensated]+c[saga.Failed] == crashSagas {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("sagas not finished after the last restart: %v", c)
		}
		if os.Getenv("SAGA_CRASH_DEBUG") != "" {
			t.Logf("%v", c)
		}
		time.Sleep(200 * time.Millisecond)
	}

	// Every saga ended as its participants' rules say.
	wantCompleted, wantCompensated := 0, 0
	want := map[string]map[string]int{}
	for i := range crashSagas {
		e := map[string]int{}
		switch {
		case paymentDeclined(i):
			e["inventory/do"], e["inventory/undo"] = 1, 1
			wantCompensated++
		case shippingRefused(i):
			e["inventory/do"], e["payment/do"], e["payment/undo"], e["inventory/undo"] = 1, 1, 1, 1
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
	totalEffects := 0
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
	}
	rows.Close()
	bad := 0
	for id, e := range want {
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

	var available, reserved, customer, merchant, charged int
	if err := db.QueryRowContext(ctx, `SELECT available, reserved FROM `+prefix+`stock`).Scan(&available, &reserved); err != nil {
		t.Fatal(err)
	}
	if err := db.QueryRowContext(ctx, `SELECT
		(SELECT balance FROM `+prefix+`accounts WHERE name = 'customer'),
		(SELECT balance FROM `+prefix+`accounts WHERE name = 'merchant')`).Scan(&customer, &merchant); err != nil {
		t.Fatal(err)
	}
	for i := range crashSagas {
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
	t.Logf("crash test: %d sagas, %d SIGKILLs, two orchestrator processes at a time; %d completed, %d compensated, %d failed; %d effects recorded; stock %d+%d, money %d+%d",
		crashSagas, kills, c[saga.Completed], c[saga.Compensated], c[saga.Failed], totalEffects, available, reserved, customer, merchant)
}
