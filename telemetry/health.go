package telemetry

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/marty-msf/eventbus"
	"github.com/marty-msf/eventbus/saga"
)

// Check is one dependency of a health report besides the bus's backends.
type Check struct {
	// Name names the dependency in reports.
	Name string
	// Ready returns nil when the dependency serves now. An error matching
	// ErrDead means it will not recover (the process is not live).
	Ready func(ctx context.Context) error
}

// ErrDead marks a Check error after which the process is not live.
var ErrDead = errors.New("telemetry: dependency lost for good")

// SagaStoreCheck checks a saga store: its database's ping when it has one
// (saga/sqlstore), else a Load of an id that no saga has, which must answer
// saga.ErrNotFound.
func SagaStoreCheck(name string, store saga.Store) Check {
	return Check{Name: name, Ready: func(ctx context.Context) error {
		if db, ok := store.(interface{ DB() *sql.DB }); ok {
			return db.DB().PingContext(ctx)
		}
		_, err := store.Load(ctx, "eventbus-health-probe")
		if errors.Is(err, saga.ErrNotFound) {
			return nil
		}
		if err == nil {
			return errors.New("health probe found an instance")
		}
		return err
	}}
}

// Health reports the readiness and liveness of a bus's backends and of
// further dependencies (the saga store). It is an http.Handler: a request
// whose path ends in "livez" gets the liveness report, any other the
// readiness report, as JSON with status 200 when live (ready), else 503.
type Health struct {
	// Bus is checked backend by backend (eventbus.Bus.Health); nil: none.
	Bus *eventbus.Bus
	// Checks are further dependencies, checked concurrently.
	Checks []Check
	// Timeout bounds each check. Default 2s.
	Timeout time.Duration
}

// Status is one dependency's part of a Report.
type Status struct {
	Name  string `json:"name"`
	Live  bool   `json:"live"`
	Ready bool   `json:"ready"`
	Error string `json:"error,omitempty"`
}

// Report is the outcome of Health.Check. Live is true while every
// dependency is live; Ready while every one is ready.
type Report struct {
	Live   bool     `json:"live"`
	Ready  bool     `json:"ready"`
	Checks []Status `json:"checks"`
}

// Check checks every backend and dependency and reports on them.
func (h *Health) Check(ctx context.Context) Report {
	timeout := h.Timeout
	if timeout <= 0 {
		timeout = 2 * time.Second
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	rep := Report{Live: true, Ready: true}
	if h.Bus != nil {
		for _, b := range h.Bus.Health(ctx) {
			s := Status{Name: "backend " + b.Backend, Live: b.Live, Ready: b.Ready}
			if b.Err != nil {
				s.Error = b.Err.Error()
			}
			rep.Checks = append(rep.Checks, s)
		}
	}
	statuses := make([]Status, len(h.Checks))
	var wg sync.WaitGroup
	for i, c := range h.Checks {
		wg.Go(func() {
			s := Status{Name: c.Name, Live: true, Ready: true}
			if err := c.Ready(ctx); err != nil {
				s.Ready, s.Error = false, err.Error()
				s.Live = !errors.Is(err, ErrDead)
			}
			statuses[i] = s
		})
	}
	wg.Wait()
	rep.Checks = append(rep.Checks, statuses...)
	for _, s := range rep.Checks {
		rep.Live = rep.Live && s.Live
		rep.Ready = rep.Ready && s.Ready
	}
	return rep
}

// ServeHTTP serves the liveness report at paths ending in "livez" and the
// readiness report at any other.
func (h *Health) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	rep := h.Check(r.Context())
	ok := rep.Ready
	if strings.HasSuffix(r.URL.Path, "livez") {
		ok = rep.Live
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	if !ok {
		w.WriteHeader(http.StatusServiceUnavailable)
	}
	_ = json.NewEncoder(w).Encode(rep)
}
