package saga_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/marty-msf/eventbus/saga"
)

// TestErrorsSayEachPrefixOnce: the package's errors name the package once
// and still match its sentinels.
func TestErrorsSayEachPrefixOnce(t *testing.T) {
	store := openSQLite(t, t.TempDir()+"/errors.db")
	w := newWorld(t, store, worldOptions{})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	id := w.start("e1", 10)
	w.wait(id)

	_, startErr := w.orc.Start(ctx, "no-such-saga", nil)
	_, loadErr := w.orc.Get(ctx, "no-such-id")
	_, requestErr := saga.RequestCancel(ctx, store, id, nil)
	// The world runs the orchestrator in a goroutine of its own; a second
	// Run, with a context that has ended, returns at once either way.
	ended, end := context.WithCancel(ctx)
	end()
	var runErr error
	for deadline := time.Now().Add(30 * time.Second); runErr == nil && time.Now().Before(deadline); {
		runErr = w.orc.Run(ended)
	}
	cases := []struct {
		name string
		err  error
		is   error
	}{
		{"start of an unknown definition", startErr, saga.ErrUnknownSaga},
		{"get of an unknown id", loadErr, saga.ErrNotFound},
		{"cancel of a finished saga", w.orc.Cancel(ctx, id), saga.ErrNotRunning},
		{"retry of a finished saga", w.orc.Retry(ctx, id), saga.ErrNotFailed},
		{"cancel request on a finished saga", requestErr, saga.ErrNotRunning},
		{"second Run", runErr, saga.ErrAlreadyRunning},
		{"duplicate definition", w.orc.Register(orderDefinition(time.Second, saga.Retry{})), saga.ErrDuplicateDefinition},
	}
	for _, c := range cases {
		if c.err == nil {
			t.Errorf("%s: no error", c.name)
			continue
		}
		msg := c.err.Error()
		if !errors.Is(c.err, c.is) {
			t.Errorf("%s: %q does not match %v", c.name, msg, c.is)
		}
		if n := strings.Count(": "+msg, ": saga: "); n != 1 {
			t.Errorf("%s: %q says \"saga: \" %d times, want once", c.name, msg, n)
		}
	}
}
