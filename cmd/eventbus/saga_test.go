package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/marty-msf/eventbus"
	"github.com/marty-msf/eventbus/internal/shop"
	"github.com/marty-msf/eventbus/internal/testenv"
	"github.com/marty-msf/eventbus/saga"
)

var (
	binaryOnce sync.Once
	binaryPath string
	binaryErr  error
)

// binary builds the command once per test run and returns its path.
func binary(t testing.TB) string {
	t.Helper()
	binaryOnce.Do(func() {
		dir, err := os.MkdirTemp("", "eventbus-bin-")
		if err != nil {
			binaryErr = err
			return
		}
		binaryPath = filepath.Join(dir, "eventbus")
		out, err := exec.Command("go", "build", "-o", binaryPath, ".").CombinedOutput()
		if err != nil {
			binaryErr = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if binaryErr != nil {
		t.Fatal(binaryErr)
	}
	return binaryPath
}

// runBinary runs the built command with args to its end, in an environment
// without the tool's variables.
func runBinary(t testing.TB, args ...string) result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, binary(t), args...)
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "EVENTBUS_") && !strings.HasPrefix(kv, "NATS_") {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	err := cmd.Run()
	code := 0
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatalf("%v: %v", args, err)
	}
	return result{code, out.String(), errOut.String()}
}

// sagaEnv is a shop's services and an orchestrator on an embedded server
// and a saga store, as a program of the test's own runs them. Besides the
// demo's order saga, the orchestrator runs a transfer saga that only the
// test defines.
type sagaEnv struct {
	store string // the store's URL
	st    saga.Store
	bus   *eventbus.Bus
	orc   *saga.Orchestrator
	shop  *shop.Shop
	// failRelease makes the inventory's compensation fail while set.
	failRelease atomic.Bool
	declined    sync.Map // order id → true
	// bank records the transfer sagas' effects, in order.
	bankMu sync.Mutex
	bank   []string
}

// orchestratorInstance names the test's orchestrator in the sagas' history.
const orchestratorInstance = "test-orchestrator"

// transferDefinition holds money, then waits for an approval event that
// never comes, so that the saga runs until it is cancelled.
func transferDefinition() saga.Definition {
	return saga.Definition{Name: "transfer", Steps: []saga.Step{
		{Name: "hold", Service: "bank", Command: "bank.hold", Compensation: "bank.release", Timeout: time.Minute},
		{Name: "approval", Event: "transfer.approved", Timeout: time.Hour},
	}}
}

// bankEffects returns the transfer sagas' effects, in order.
func (e *sagaEnv) bankEffects() []string {
	e.bankMu.Lock()
	defer e.bankMu.Unlock()
	return slices.Clone(e.bank)
}

func newSagaEnv(t *testing.T, storeURL string) *sagaEnv {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	e := &sagaEnv{store: storeURL}
	st, err := saga.OpenStore(ctx, storeURL)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = st.(io.Closer).Close() })
	e.st = st
	srv := startServer(t)
	e.shop = shop.New(map[string]int{"book-42": 10}, map[string]int{"alice": 100_00}, &shop.Options{
		Decline: func(o shop.Order) bool { _, ok := e.declined.Load(o.ID); return ok },
		Fault: func(command string, _ shop.Order) error {
			if command == "inventory.release" && e.failRelease.Load() {
				return errors.New("inventory database unavailable")
			}
			return nil
		},
	})
	e.bus = startBus(t, srv, func(bus *eventbus.Bus) {
		if e.orc, err = saga.NewOrchestrator(bus, st, &saga.Options{Instance: orchestratorInstance, PollInterval: 100 * time.Millisecond, Lease: 2 * time.Second}); err != nil {
			t.Fatal(err)
		}
		if err := e.orc.Register(shop.Definition(), transferDefinition()); err != nil {
			t.Fatal(err)
		}
		bank, err := saga.NewParticipant(bus, "bank", st, nil)
		if err != nil {
			t.Fatal(err)
		}
		for _, cmd := range []string{"bank.hold", "bank.release"} {
			if err := bank.Handle(cmd, func(_ context.Context, req *saga.Request) (any, error) {
				e.bankMu.Lock()
				defer e.bankMu.Unlock()
				e.bank = append(e.bank, cmd+" "+req.SagaID)
				return nil, nil
			}); err != nil {
				t.Fatal(err)
			}
		}
		// The payment service starts later, so that its step waits.
		if err := e.shop.Participants(bus, st, "inventory", "shipping"); err != nil {
			t.Fatal(err)
		}
	})
	runCtx, stop := context.WithCancel(context.Background())
	ran := make(chan struct{})
	go func() { defer close(ran); _ = e.orc.Run(runCtx) }()
	t.Cleanup(func() { stop(); <-ran })
	return e
}

func (e *sagaEnv) start(t *testing.T, id string) {
	t.Helper()
	o := shop.Order{ID: id, Customer: "alice", SKU: "book-42", Quantity: 2, Amount: 30_00}
	if _, err := e.orc.Start(context.Background(), shop.SagaName, o, saga.WithID(id)); err != nil {
		t.Fatal(err)
	}
}

// waitState waits until saga id is in state want and returns it.
func (e *sagaEnv) waitState(t *testing.T, id string, want saga.State, cond func(*saga.Instance) bool) *saga.Instance {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		in, err := e.orc.Get(context.Background(), id)
		if err != nil {
			t.Fatal(err)
		}
		if in.State == want && (cond == nil || cond(in)) {
			return in
		}
		if time.Now().After(deadline) {
			t.Fatalf("saga %s is %s (reason %q), want %s", id, in.State, in.Reason, want)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (e *sagaEnv) cli(t *testing.T, args ...string) result {
	t.Helper()
	return runBinary(t, append(args, "--store", e.store)...)
}

// testSagaCommands runs the saga commands, with the built binary, on a
// store that the test's own orchestrator and services share.
func testSagaCommands(t *testing.T, storeURL string) {
	binary(t) // built before the sagas start, so that their steps wait less
	e := newSagaEnv(t, storeURL)

	// cancel: a transfer, whose definition the tool does not know, waits
	// for its approval; the request the tool records is applied by the
	// test's orchestrator, which releases the hold.
	if _, err := e.orc.Start(context.Background(), "transfer", map[string]int{"amount": 5}, saga.WithID("t-cancel")); err != nil {
		t.Fatal(err)
	}
	e.waitState(t, "t-cancel", saga.Running, func(in *saga.Instance) bool { return in.Steps[0].State == saga.StepCompleted })
	r := e.cli(t, "saga", "cancel", "t-cancel")
	m := regexp.MustCompile(`^saga t-cancel: cancel requested \(request ([0-9a-f]+)\)\n` +
		`saga t-cancel: cancelled: compensating its steps \(applied by orchestrator ` + orchestratorInstance + `\); now (compensating|compensated)\n$`).FindStringSubmatch(r.stdout)
	if r.code != exitOK || m == nil {
		t.Fatalf("saga cancel: exit %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
	}
	requestID := m[1]
	in := e.waitState(t, "t-cancel", saga.Compensated, nil)
	if in.Reason != "cancelled" || in.Request != nil {
		t.Errorf("reason %q, pending %+v; want cancelled with no request pending", in.Reason, in.Request)
	}
	if got := e.bankEffects(); !slices.Equal(got, []string{"bank.hold t-cancel", "bank.release t-cancel"}) {
		t.Errorf("transfer effects %v, want the hold, then its release", got)
	}
	r = e.cli(t, "saga", "show", "t-cancel")
	for _, pattern := range []string{
		`(?m)^saga t-cancel \(transfer v1\): compensated$`,
		`(?m)^reason:  cancelled$`,
		`(?m)^  hold +compensated `,
		`(?m)^  approval +failed `,
		`(?m) cancel\.requested by \S+ \(eventbus CLI\) \[request ` + requestID + `\]$`,
		`(?m) cancel\.applied by ` + orchestratorInstance + ` \[request ` + requestID + `\]\n.* saga\.compensating: cancelled$`,
		`(?m) step\.undo\.sent hold \(attempt 1\)$`,
		`(?m) saga\.compensated: cancelled$`,
	} {
		if r.code != exitOK || !regexpMatch(pattern, r.stdout) {
			t.Errorf("saga show t-cancel does not match %q: exit %d, stdout %q, stderr %q", pattern, r.code, r.stdout, r.stderr)
		}
	}

	// cancel --wait 0 returns once the request is recorded; the order saga
	// waits at its payment step, as nobody handles payments yet.
	e.start(t, "o-cancel")
	e.waitState(t, "o-cancel", saga.Running, func(in *saga.Instance) bool { return in.Steps[0].State == saga.StepCompleted })
	if stock, reserved := e.shop.Stock("book-42"); stock != 8 || reserved != 2 {
		t.Fatalf("after the reservation: stock %d, reserved %d", stock, reserved)
	}
	r = e.cli(t, "saga", "cancel", "o-cancel", "--wait", "0")
	if r.code != exitOK || !regexpMatch(`^saga o-cancel: cancel requested \(request [0-9a-f]+\)\nsaga o-cancel: an orchestrator of its definition applies it at its next poll`, r.stdout) {
		t.Fatalf("saga cancel --wait 0: exit %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
	}
	if err := e.shop.Participants(e.bus, e.st, "payment"); err != nil {
		t.Fatal(err)
	}
	in = e.waitState(t, "o-cancel", saga.Compensated, nil)
	if !strings.Contains(in.Reason, "cancel") {
		t.Errorf("reason %q, want a cancellation", in.Reason)
	}
	if stock, reserved := e.shop.Stock("book-42"); stock != 10 || reserved != 0 {
		t.Errorf("after the cancellation: stock %d, reserved %d", stock, reserved)
	}
	if balance, held := e.shop.Balance("alice"); balance != 100_00 || held != 0 {
		t.Errorf("after the cancellation: balance %d, held %d", balance, held)
	}
	r = e.cli(t, "saga", "cancel", "o-cancel")
	if r.code != exitFailure || !strings.Contains(r.stderr, "saga o-cancel is compensated, not running") || strings.Count(r.stderr, "saga") != 2 {
		t.Errorf("second cancel: exit %d, stderr %q", r.code, r.stderr)
	}

	// retry: a declined payment whose compensation keeps failing leaves
	// the saga failed; once the inventory works again, retry finishes it.
	e.declined.Store("o-retry", true)
	e.failRelease.Store(true)
	e.start(t, "o-retry")
	e.waitState(t, "o-retry", saga.Failed, nil)
	r = e.cli(t, "saga", "list", "--state", "failed", "--json")
	var sums []sagaSummary
	for _, l := range strings.Split(strings.TrimSpace(r.stdout), "\n") {
		var s sagaSummary
		if err := json.Unmarshal([]byte(l), &s); err != nil {
			t.Fatalf("saga list --json: line %q: %v (stderr %q)", l, err, r.stderr)
		}
		sums = append(sums, s)
	}
	if r.code != exitOK || len(sums) != 1 || sums[0].ID != "o-retry" || sums[0].State != saga.Failed ||
		sums[0].Step != shop.StepReserve || !strings.Contains(sums[0].Error, "inventory database unavailable") {
		t.Fatalf("saga list --state failed: exit %d, %+v, stderr %q", r.code, sums, r.stderr)
	}
	e.failRelease.Store(false)
	r = e.cli(t, "saga", "retry", "o-retry", "--wait", "60s")
	if r.code != exitOK || !regexpMatch(`^saga o-retry: retry requested \(request [0-9a-f]+\)\n`+
		`saga o-retry: compensation resumed \(applied by orchestrator `+orchestratorInstance+`\); now (compensating|compensated)\n$`, r.stdout) {
		t.Fatalf("saga retry: exit %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
	}
	e.waitState(t, "o-retry", saga.Compensated, nil)
	if stock, reserved := e.shop.Stock("book-42"); stock != 10 || reserved != 0 {
		t.Errorf("after the retry: stock %d, reserved %d", stock, reserved)
	}

	// list and show, human-readable and JSON.
	r = e.cli(t, "saga", "list")
	if r.code != exitOK || !strings.Contains(r.stdout, "ID") ||
		!regexpMatch(`(?m)^o-cancel\s+order\s+compensated\s+-\s+\S+ \S+\s+cancelled`, r.stdout) ||
		!regexpMatch(`(?m)^o-retry\s+order\s+compensated\s+-\s+.*card declined`, r.stdout) {
		t.Errorf("saga list: exit %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
	}
	r = e.cli(t, "saga", "show", "o-retry")
	for _, want := range []string{"saga o-retry (order v1): compensated", "reserve-inventory  compensated", "compensation attempts",
		"error: card declined", "saga.failed", "retry.requested by ", "retry.applied by " + orchestratorInstance, "saga.compensated"} {
		if r.code != exitOK || !strings.Contains(r.stdout, want) {
			t.Errorf("saga show lacks %q: exit %d, stdout %q, stderr %q", want, r.code, r.stdout, r.stderr)
		}
	}
	r = e.cli(t, "saga", "show", "o-retry", "--json")
	var got saga.Instance
	if err := json.Unmarshal([]byte(r.stdout), &got); err != nil || got.ID != "o-retry" || got.State != saga.Compensated || len(got.History) < 8 {
		t.Errorf("saga show --json: %v; %+v", err, got)
	}
	r = e.cli(t, "saga", "show", "o-none")
	if r.code != exitFailure || r.stderr != fmt.Sprintf("error: no saga \"o-none\" in %s; list them with eventbus saga list\n", redactStore(e.store)) {
		t.Errorf("saga show of a missing saga: exit %d, stderr %q", r.code, r.stderr)
	}
	r = e.cli(t, "saga", "retry", "o-cancel")
	if r.code != exitFailure || !strings.Contains(r.stderr, "saga o-cancel is compensated, not failed") {
		t.Errorf("retry of a compensated saga: exit %d, stderr %q", r.code, r.stderr)
	}
}

func redactStore(s string) string {
	u, err := url.Parse(s)
	if err != nil || u.User == nil {
		return s
	}
	u.User = url.User("REDACTED")
	return u.String()
}

func TestSagaCommandsSQLite(t *testing.T) {
	testSagaCommands(t, "sqlite:"+filepath.ToSlash(filepath.Join(t.TempDir(), "saga.db")))
}

func TestSagaCommandsPostgres(t *testing.T) {
	u, err := url.Parse(testenv.DatabaseURL(t))
	if err != nil {
		t.Fatal(err)
	}
	q := u.Query()
	q.Set("table_prefix", fmt.Sprintf("cli%d_", time.Now().UnixNano()))
	u.RawQuery = q.Encode()
	testSagaCommands(t, u.String())
}

func TestSagaCommandErrors(t *testing.T) {
	for _, c := range []struct {
		args []string
		code int
		want string
	}{
		{[]string{"saga", "list"}, exitUsage, "error: no saga store; give --store"},
		{[]string{"saga", "list", "--store", "mysql://db/x"}, exitUsage, `unknown URL scheme "mysql"`},
		{[]string{"saga", "list", "--store", "sqlite:" + filepath.Join(t.TempDir(), "none.db")}, exitFailure, "check --store, or create one with eventbus demo --data DIR"},
		{[]string{"saga", "list", "--store", "postgres://u:secret@127.0.0.1:1/db?connect_timeout=2"}, exitUnavailable, "check that the database runs"},
		{[]string{"saga", "show"}, exitUsage, "error: show: expected ID"},
	} {
		r := execute(t, "", c.args...)
		if r.code != c.code || !strings.Contains(r.stderr, c.want) || !strings.HasPrefix(r.stderr, "error: ") ||
			strings.Contains(r.stderr, "\nerror:") || strings.Contains(r.stderr, "secret") {
			t.Errorf("%v: exit %d (want %d), stderr %q (want %q)", c.args, r.code, c.code, r.stderr, c.want)
		}
	}
	// With no orchestrator running, a request stays recorded: the tool
	// says so, with its own exit status, and show lists it as pending.
	store := "sqlite:" + filepath.ToSlash(filepath.Join(t.TempDir(), "saga.db"))
	st, err := saga.OpenStore(context.Background(), store)
	if err != nil {
		t.Fatal(err)
	}
	defer st.(io.Closer).Close()
	now := time.Now()
	if err := st.Create(context.Background(), &saga.Instance{ID: "s-1", Name: "refund", State: saga.Running, Data: json.RawMessage(`{}`),
		Steps: []saga.StepStatus{{Name: "refund", State: saga.StepRunning}}, Created: now, Updated: now, Version: 1}); err != nil {
		t.Fatal(err)
	}
	r := execute(t, "", "saga", "list", "--store", store, "--state", "gone")
	if r.code != exitUsage || !strings.Contains(r.stderr, `--state "gone"; give one of running`) {
		t.Errorf("list --state gone: exit %d, stderr %q", r.code, r.stderr)
	}
	r = execute(t, "", "saga", "cancel", "s-1", "--store", store, "--wait", "300ms")
	m := regexp.MustCompile(`^saga s-1: cancel requested \(request ([0-9a-f]+)\)\n$`).FindStringSubmatch(r.stdout)
	if r.code != exitTimeout || m == nil || !strings.HasPrefix(r.stderr, "error: no orchestrator applied the cancel request of saga s-1 within 300ms; "+
		`it stays recorded and is applied when an orchestrator of "refund" runs on `) {
		t.Fatalf("cancel with no orchestrator: exit %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
	}
	r = execute(t, "", "saga", "cancel", "s-1", "--store", store, "--wait", "0")
	if r.code != exitOK || !strings.HasPrefix(r.stdout, "saga s-1: cancel requested (request "+m[1]+")\n") {
		t.Errorf("cancel again while pending: exit %d, stdout %q (want request %s again), stderr %q", r.code, r.stdout, m[1], r.stderr)
	}
	// Interrupted while waiting: the request stays, and the tool says so.
	bg := start(t, "saga", "cancel", "s-1", "--store", store, "--wait", "60s")
	for deadline := time.Now().Add(30 * time.Second); !strings.Contains(bg.stdout.String(), "cancel requested"); {
		if time.Now().After(deadline) {
			t.Fatalf("saga cancel in the background printed nothing; stderr %q", bg.stderr.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
	if code := bg.interrupt(t); code != exitFailure || !strings.HasPrefix(bg.stderr.String(),
		"error: interrupted while waiting: the cancel request of saga s-1 stays recorded and is applied when an orchestrator of its definition runs on ") {
		t.Errorf("interrupted cancel: exit %d, stderr %q", code, bg.stderr.String())
	}
	r = execute(t, "", "saga", "retry", "s-1", "--store", store)
	if r.code != exitFailure || !strings.Contains(r.stderr, "saga s-1 is running, not failed") {
		t.Errorf("retry of a running saga: exit %d, stderr %q", r.code, r.stderr)
	}
	r = execute(t, "", "saga", "show", "s-1", "--store", store)
	if r.code != exitOK || !regexpMatch(`(?m)^pending: cancel request `+m[1]+` by \S+ \(eventbus CLI\) at \S+, for an orchestrator of "refund" to apply$`, r.stdout) ||
		!regexpMatch(`(?m) cancel\.requested by \S+ \(eventbus CLI\) \[request `+m[1]+`\]$`, r.stdout) {
		t.Errorf("show of a saga with a pending request: exit %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
	}
	r = execute(t, "", "saga", "cancel", "s-2", "--store", store)
	if r.code != exitFailure || !strings.Contains(r.stderr, `no saga "s-2" in `) {
		t.Errorf("cancel of a missing saga: exit %d, stderr %q", r.code, r.stderr)
	}
}

func regexpMatch(pattern, s string) bool { return regexp.MustCompile(pattern).MatchString(s) }

// Without --store, the saga commands use the configuration file's store —
// its saga.store, or the SQLite file in its data_dir — and else
// $EVENTBUS_SAGA_STORE.
func TestSagaStoreFromConfigAndEnv(t *testing.T) {
	dir := t.TempDir()
	if r := execute(t, "", "demo", "--orders", "2", "--failure-rate", "0", "--data", dir); r.code != exitOK {
		t.Fatalf("demo: exit %d, stderr %q", r.code, r.stderr)
	}
	db := filepath.ToSlash(filepath.Join(dir, "saga.db"))
	declared := filepath.Join(dir, "declared.yaml")
	inDataDir := filepath.Join(dir, "datadir.yaml")
	if err := os.WriteFile(declared, []byte("saga:\n  store: sqlite:"+db+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(inDataDir, []byte("data_dir: "+filepath.ToSlash(dir)+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		args []string
		env  map[string]string
	}{
		{[]string{"--config", declared}, nil},
		{[]string{"--config", inDataDir}, nil},
		{nil, map[string]string{"EVENTBUS_CONFIG": declared}},
		{nil, map[string]string{"EVENTBUS_SAGA_STORE": "sqlite:" + db}},
	} {
		var out, errOut bytes.Buffer
		code := run(context.Background(), append([]string{"saga", "list", "--json"}, c.args...), func(k string) string { return c.env[k] },
			strings.NewReader(""), &out, &errOut)
		if code != exitOK || strings.Count(out.String(), `"state":"completed"`) != 2 {
			t.Errorf("%v %v: exit %d, stdout %q, stderr %q", c.args, c.env, code, out.String(), errOut.String())
		}
	}
}
