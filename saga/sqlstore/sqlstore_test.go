package sqlstore_test

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/marty-msf/eventbus/internal/testenv"
	"github.com/marty-msf/eventbus/saga"
	"github.com/marty-msf/eventbus/saga/sqlstore"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

func forEachStore(t *testing.T, fn func(t *testing.T, s *sqlstore.Store, reopen func() *sqlstore.Store)) {
	ctx := context.Background()
	t.Run("sqlite", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "s.db")
		open := func() *sqlstore.Store {
			s, err := sqlstore.OpenSQLite(ctx, path, nil)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { s.Close() })
			return s
		}
		fn(t, open(), open)
	})
	t.Run("postgres", func(t *testing.T) {
		url := testenv.DatabaseURL(t)
		prefix := fmt.Sprintf("st%d_", time.Now().UnixNano()%1e9)
		open := func() *sqlstore.Store {
			s, err := sqlstore.OpenPostgres(ctx, url, &sqlstore.Options{TablePrefix: prefix})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { s.Close() })
			return s
		}
		s := open()
		t.Cleanup(func() {
			_, _ = s.DB().Exec("DROP TABLE IF EXISTS " + prefix + "instances")
			_, _ = s.DB().Exec("DROP TABLE IF EXISTS " + prefix + "records")
		})
		fn(t, s, open)
	})
}

func instance(id string, state saga.State, deadline time.Time, owner string, lease time.Time) *saga.Instance {
	return &saga.Instance{ID: id, Name: "n", State: state, Version: 1, Deadline: deadline, Owner: owner, LeaseUntil: lease,
		Steps: []saga.StepStatus{{Name: "a", State: saga.StepRunning, Input: []byte(`{"x":1}`)}}, Created: time.Now()}
}

func TestInstances(t *testing.T) {
	forEachStore(t, func(t *testing.T, s *sqlstore.Store, reopen func() *sqlstore.Store) {
		ctx := context.Background()
		now := time.Now()
		if err := s.Create(ctx, instance("i1", saga.Running, now.Add(time.Hour), "A", now.Add(time.Hour))); err != nil {
			t.Fatal(err)
		}
		if err := s.Create(ctx, instance("i1", saga.Running, now, "A", now)); !errors.Is(err, saga.ErrExists) {
			t.Fatalf("second Create: %v, want ErrExists", err)
		}
		if _, err := s.Load(ctx, "nope"); !errors.Is(err, saga.ErrNotFound) {
			t.Fatalf("Load missing: %v, want ErrNotFound", err)
		}
		// Opening again is idempotent and sees the same data.
		in, err := reopen().Load(ctx, "i1")
		if err != nil {
			t.Fatal(err)
		}
		if in.Version != 1 || in.Owner != "A" || string(in.Steps[0].Input) != `{"x":1}` || !in.Deadline.Equal(now.Add(time.Hour)) {
			t.Fatalf("loaded %+v", in)
		}

		// Optimistic versioning: of two writers of version 2, one wins.
		a, b := *in, *in
		a.Version, b.Version = 2, 2
		a.State = saga.Completed
		if err := s.Update(ctx, &a); err != nil {
			t.Fatal(err)
		}
		if err := s.Update(ctx, &b); !errors.Is(err, saga.ErrConflict) {
			t.Fatalf("stale Update: %v, want ErrConflict", err)
		}
		got, _ := s.Load(ctx, "i1")
		if got.State != saga.Completed || got.Version != 2 {
			t.Fatalf("after update: %s v%d", got.State, got.Version)
		}

		// Due: passed deadlines and expired leases of active sagas only.
		for _, in := range []*saga.Instance{
			instance("due-deadline", saga.Running, now.Add(-time.Second), "A", now.Add(time.Hour)),
			instance("due-lease", saga.Compensating, now.Add(time.Hour), "B", now.Add(-time.Second)),
			instance("not-due", saga.Running, now.Add(time.Hour), "A", now.Add(time.Hour)),
			instance("final", saga.Compensated, time.Time{}, "B", now.Add(-time.Second)),
		} {
			if err := s.Create(ctx, in); err != nil {
				t.Fatal(err)
			}
		}
		ids, err := s.Due(ctx, now, 10)
		if err != nil {
			t.Fatal(err)
		}
		if fmt.Sprint(ids) != "[due-deadline due-lease]" {
			t.Fatalf("Due = %v", ids)
		}
		if err := s.RenewLeases(ctx, "B", now.Add(time.Hour)); err != nil {
			t.Fatal(err)
		}
		if ids, _ := s.Due(ctx, now, 10); fmt.Sprint(ids) != "[due-deadline]" {
			t.Fatalf("Due after renewal = %v", ids)
		}
		if err := s.ReleaseLease(ctx, "not-due", "A"); err != nil {
			t.Fatal(err)
		}
		if ids, _ := s.Due(ctx, now, 10); fmt.Sprint(ids) != "[due-deadline not-due]" {
			t.Fatalf("Due after release = %v", ids)
		}

		list, err := s.List(ctx, saga.ListFilter{State: saga.Running})
		if err != nil {
			t.Fatal(err)
		}
		var names []string
		for _, in := range list {
			names = append(names, in.ID)
		}
		if fmt.Sprint(names) != "[due-deadline not-due]" {
			t.Fatalf("List(running) = %v", names)
		}
		if all, _ := s.List(ctx, saga.ListFilter{Limit: 2}); len(all) != 2 {
			t.Fatalf("List limit 2 returned %d", len(all))
		}
	})
}

func TestRecords(t *testing.T) {
	forEachStore(t, func(t *testing.T, s *sqlstore.Store, _ func() *sqlstore.Store) {
		ctx := context.Background()
		now := time.Now()
		rec, claimed, err := s.Claim(ctx, "k", "A", now.Add(time.Hour))
		if err != nil || !claimed || rec.Done {
			t.Fatalf("first Claim: %+v %v %v", rec, claimed, err)
		}
		if rec, claimed, _ := s.Claim(ctx, "k", "B", now.Add(time.Hour)); claimed || rec.Done {
			t.Fatalf("Claim of a running record: %+v claimed %v, want busy", rec, claimed)
		}
		if err := s.Complete(ctx, "k", "B", &saga.Record{Outcome: saga.OutcomeOK}); !errors.Is(err, saga.ErrConflict) {
			t.Fatalf("Complete by a non-owner: %v", err)
		}
		if err := s.Complete(ctx, "k", "A", &saga.Record{Outcome: saga.OutcomeOK, Reply: []byte(`{"r":1}`)}); err != nil {
			t.Fatal(err)
		}
		if rec, err := s.Lookup(ctx, "k"); err != nil || rec == nil || !rec.Done || string(rec.Reply) != `{"r":1}` {
			t.Fatalf("Lookup of a done record: %+v %v", rec, err)
		}
		if rec, err := s.Lookup(ctx, "none"); err != nil || rec != nil {
			t.Fatalf("Lookup of a missing record: %+v %v", rec, err)
		}
		rec, claimed, err = s.Claim(ctx, "k", "B", now.Add(time.Hour))
		if err != nil || claimed || !rec.Done || rec.Outcome != saga.OutcomeOK || string(rec.Reply) != `{"r":1}` {
			t.Fatalf("Claim of a done record: %+v %v %v", rec, claimed, err)
		}

		// An expired claim is taken over, and counted; a renewed one is
		// not; a released one is free again.
		if rec, claimed, _ := s.Claim(ctx, "k2", "A", now.Add(-time.Second)); !claimed || rec.Runs != 1 {
			t.Fatalf("k2 not claimed, or runs %d, want 1", rec.Runs)
		}
		if rec, err := s.Lookup(ctx, "k2"); err != nil || rec.Done || rec.Until.After(now) || rec.Runs != 1 {
			t.Fatalf("Lookup of an expired claim: %+v %v", rec, err)
		}
		if err := s.RenewClaim(ctx, "k2", "B", now.Add(time.Hour)); !errors.Is(err, saga.ErrConflict) {
			t.Fatalf("RenewClaim by a non-owner: %v, want ErrConflict", err)
		}
		rec, claimed, err = s.Claim(ctx, "k2", "B", now.Add(time.Second))
		if err != nil || !claimed || rec.Runs != 2 {
			t.Fatalf("expired claim not taken over: %+v %v %v, want runs 2", rec, claimed, err)
		}
		if err := s.Complete(ctx, "k2", "A", &saga.Record{Outcome: saga.OutcomeOK}); !errors.Is(err, saga.ErrConflict) {
			t.Fatalf("Complete by the dead holder: %v, want ErrConflict", err)
		}
		if err := s.RenewClaim(ctx, "k2", "B", now.Add(time.Hour)); err != nil {
			t.Fatal(err)
		}
		if rec, err := s.Lookup(ctx, "k2"); err != nil || !rec.Until.Equal(time.Unix(0, now.Add(time.Hour).UnixNano())) {
			t.Fatalf("Lookup after RenewClaim: %+v %v", rec, err)
		}
		if _, claimed, _ := s.Claim(ctx, "k2", "C", now.Add(time.Hour)); claimed {
			t.Fatal("renewed claim taken over")
		}
		if err := s.Release(ctx, "k2", "B"); err != nil {
			t.Fatal(err)
		}
		if rec, claimed, _ := s.Claim(ctx, "k2", "C", now.Add(time.Hour)); !claimed || rec.Runs != 1 {
			t.Fatal("released claim not free")
		}
		if err := s.Complete(ctx, "k2", "C", &saga.Record{Outcome: saga.OutcomeOK}); err != nil {
			t.Fatal(err)
		}
		if err := s.RenewClaim(ctx, "k2", "C", now.Add(time.Hour)); !errors.Is(err, saga.ErrConflict) {
			t.Fatalf("RenewClaim of a done record: %v, want ErrConflict", err)
		}

		// Concurrent claims: exactly one wins.
		var wg sync.WaitGroup
		var mu sync.Mutex
		wins := 0
		for i := range 8 {
			wg.Go(func() {
				_, claimed, err := s.Claim(ctx, "k3", fmt.Sprint(i), now.Add(time.Hour))
				if err != nil {
					t.Error(err)
				}
				if claimed {
					mu.Lock()
					wins++
					mu.Unlock()
				}
			})
		}
		wg.Wait()
		if wins != 1 {
			t.Fatalf("%d concurrent claims won, want 1", wins)
		}
	})
}

func TestBadPrefix(t *testing.T) {
	_, err := sqlstore.OpenSQLite(context.Background(), filepath.Join(t.TempDir(), "x.db"), &sqlstore.Options{TablePrefix: "a;drop"})
	if err == nil {
		t.Fatal("a prefix with ';' was accepted")
	}
}

func ExampleOpenSQLite() {
	ctx := context.Background()
	dir, _ := os.MkdirTemp("", "sqlstore")
	defer os.RemoveAll(dir)
	store, err := sqlstore.OpenSQLite(ctx, filepath.Join(dir, "saga.db"), nil)
	if err != nil {
		fmt.Println(err)
		return
	}
	defer store.Close()
	_, err = store.Load(ctx, "unknown")
	fmt.Println(errors.Is(err, saga.ErrNotFound))
	// Output: true
}

// TestUpgrade opens a store on tables made by earlier versions: a records
// table made before records counted their claims, an instances table made
// before manager requests (which Due finds through an index of its own).
func TestUpgrade(t *testing.T) {
	ctx := context.Background()
	old := func(t *testing.T, db *sql.DB, prefix string) {
		for _, stmt := range []string{
			`CREATE TABLE ` + prefix + `records (rkey TEXT PRIMARY KEY, done INTEGER NOT NULL,
			outcome TEXT NOT NULL, reply TEXT NOT NULL, error TEXT NOT NULL, owner TEXT NOT NULL,
			lease_until BIGINT NOT NULL, updated BIGINT NOT NULL)`,
			`INSERT INTO ` + prefix + `records VALUES ('k', 1, 'ok', '', '', 'A', 0, 0)`,
			`CREATE TABLE ` + prefix + `instances (id TEXT PRIMARY KEY, name TEXT NOT NULL, state TEXT NOT NULL,
			version BIGINT NOT NULL, wake_at BIGINT NOT NULL, owner TEXT NOT NULL, lease_until BIGINT NOT NULL,
			created BIGINT NOT NULL, body TEXT NOT NULL)`,
			`CREATE INDEX ` + prefix + `instances_active ON ` + prefix + `instances (state, wake_at)`,
			`INSERT INTO ` + prefix + `instances VALUES ('f', 'n', 'failed', 7, 0, 'A', 0, 1,
			'{"ID":"f","Name":"n","State":"failed","Steps":[{"Name":"a","State":"compensation_failed"}],"History":[{"Time":"2024-01-02T03:04:05Z","Kind":"saga.failed"}]}')`,
		} {
			if _, err := db.ExecContext(ctx, stmt); err != nil {
				t.Fatal(err)
			}
		}
	}
	check := func(t *testing.T, s *sqlstore.Store, indexes string) {
		if rec, err := s.Lookup(ctx, "k"); err != nil || rec == nil || !rec.Done || rec.Runs != 1 {
			t.Fatalf("Lookup of an old record: %+v %v", rec, err)
		}
		if rec, claimed, err := s.Claim(ctx, "new", "A", time.Now().Add(time.Hour)); err != nil || !claimed || rec.Runs != 1 {
			t.Fatalf("Claim on an upgraded table: %+v %v %v", rec, claimed, err)
		}
		var n int
		if err := s.DB().QueryRowContext(ctx, indexes).Scan(&n); err != nil || n != 1 {
			t.Fatalf("wake_at index on the upgraded instances table: %d, %v", n, err)
		}
		if ids, err := s.Due(ctx, time.Now(), 10); err != nil || len(ids) != 0 {
			t.Fatalf("Due before the request = %v, %v", ids, err)
		}
		if _, err := saga.RequestRetry(ctx, s, "f", nil); err != nil {
			t.Fatal(err)
		}
		if ids, err := s.Due(ctx, time.Now(), 10); err != nil || fmt.Sprint(ids) != "[f]" {
			t.Fatalf("Due after a request on an old instance = %v, %v; want [f]", ids, err)
		}
	}
	t.Run("sqlite", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "old.db")
		db, err := sql.Open("sqlite", path)
		if err != nil {
			t.Fatal(err)
		}
		old(t, db, "saga_")
		db.Close()
		s, err := sqlstore.OpenSQLite(ctx, path, nil)
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		check(t, s, `SELECT count(*) FROM sqlite_master WHERE type = 'index' AND name = 'saga_instances_wake'`)
	})
	t.Run("postgres", func(t *testing.T) {
		prefix := fmt.Sprintf("up%d_", time.Now().UnixNano()%1e9)
		db, err := sql.Open("pgx", testenv.DatabaseURL(t))
		if err != nil {
			t.Fatal(err)
		}
		defer db.Close()
		old(t, db, prefix)
		defer func() {
			_, _ = db.Exec("DROP TABLE IF EXISTS " + prefix + "instances")
			_, _ = db.Exec("DROP TABLE IF EXISTS " + prefix + "records")
		}()
		s, err := sqlstore.OpenPostgres(ctx, testenv.DatabaseURL(t), &sqlstore.Options{TablePrefix: prefix})
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		check(t, s, `SELECT count(*) FROM pg_indexes WHERE indexname = '`+prefix+`instances_wake'`)
	})
}

// TestRecordRequest: a request is recorded under the version check without
// touching the lease, and makes the instance due whatever its state.
func TestRecordRequest(t *testing.T) {
	forEachStore(t, func(t *testing.T, s *sqlstore.Store, _ func() *sqlstore.Store) {
		ctx := context.Background()
		now := time.Now()
		for _, in := range []*saga.Instance{
			instance("failed", saga.Failed, time.Time{}, "A", now.Add(time.Hour)),
			instance("running", saga.Running, now.Add(time.Hour), "A", now.Add(time.Hour)),
		} {
			if err := s.Create(ctx, in); err != nil {
				t.Fatal(err)
			}
		}
		if ids, err := s.Due(ctx, now, 10); err != nil || len(ids) != 0 {
			t.Fatalf("Due before the requests = %v, %v", ids, err)
		}
		// RenewLeases extends the active instances' leases only.
		lease := map[string]time.Time{"failed": now.Add(time.Hour), "running": now.Add(2 * time.Hour)}
		for _, id := range []string{"failed", "running"} {
			in, err := s.Load(ctx, id)
			if err != nil {
				t.Fatal(err)
			}
			// The owner renews its lease after the requester loaded the
			// instance: the request must not shorten it.
			if err := s.RenewLeases(ctx, "A", now.Add(2*time.Hour)); err != nil {
				t.Fatal(err)
			}
			in.Version++
			in.Owner = "requester"
			in.Request = &saga.ManagerRequest{ID: "r-" + id, Kind: saga.CancelRequest, At: now.Add(-time.Second)}
			if err := s.RecordRequest(ctx, in); err != nil {
				t.Fatal(err)
			}
			if err := s.RecordRequest(ctx, in); !errors.Is(err, saga.ErrConflict) {
				t.Fatalf("stale RecordRequest: %v, want ErrConflict", err)
			}
			got, err := s.Load(ctx, id)
			if err != nil {
				t.Fatal(err)
			}
			if got.Version != 2 || got.Owner != "A" || !got.LeaseUntil.Equal(lease[id]) || got.Request == nil || got.Request.ID != "r-"+id {
				t.Fatalf("%s after RecordRequest: version %d, owner %q, lease %v, request %+v", id, got.Version, got.Owner, got.LeaseUntil, got.Request)
			}
		}
		if ids, err := s.Due(ctx, now, 10); err != nil || fmt.Sprint(ids) != "[failed running]" {
			t.Fatalf("Due after the requests = %v, %v", ids, err)
		}
		// What package saga reads from the store when recording: a request
		// of the same kind pending is returned, one of another kind
		// refuses the new one.
		if r, err := saga.RequestCancel(ctx, s, "running", nil); err != nil || r.ID != "r-running" {
			t.Errorf("RequestCancel with a cancel pending: %+v, %v; want the pending request", r, err)
		}
		if _, err := saga.RequestRetry(ctx, s, "failed", nil); !errors.Is(err, saga.ErrRequestPending) {
			t.Errorf("RequestRetry with a cancel pending: %v, want ErrRequestPending", err)
		}
		// Applied: the request cleared, the failed instance is no longer
		// due.
		in, _ := s.Load(ctx, "failed")
		in.Version++
		in.Request = nil
		if err := s.Update(ctx, in); err != nil {
			t.Fatal(err)
		}
		if ids, err := s.Due(ctx, now, 10); err != nil || fmt.Sprint(ids) != "[running]" {
			t.Fatalf("Due after the failed saga's request was applied = %v, %v", ids, err)
		}
	})
}
