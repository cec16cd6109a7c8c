package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/user"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/marty-msf/eventbus/config"
	"github.com/marty-msf/eventbus/driver"
	"github.com/marty-msf/eventbus/saga"
	"github.com/marty-msf/eventbus/saga/sqlstore"
)

// sagaFlags are the flags of the saga commands.
type sagaFlags struct {
	store       string
	json        bool
	state, name string
	limit       int
	wait        time.Duration
}

func newSagaCmd(cf *connFlags, getenv func(string) string) *cobra.Command {
	sf := &sagaFlags{}
	cmd := &cobra.Command{
		Use:   "saga",
		Short: "List, show, cancel and retry sagas in a saga store",
		Long: "Reads and manages the sagas of a saga store (package saga/sqlstore): --store names it by URL\n" +
			"(postgres://user@host:5432/db or sqlite:FILE), else the store of the configuration file\n" +
			"(--config, $EVENTBUS_CONFIG: its saga.store, or the SQLite file in its data_dir), else\n" +
			"$EVENTBUS_SAGA_STORE. list and show read the store; cancel and retry record a request in it\n" +
			"for any saga, which a running orchestrator of the saga's definition applies.",
	}
	storeFlag := func(c *cobra.Command) *cobra.Command {
		c.Flags().StringVar(&sf.store, "store", "", "saga store URL: postgres://user@host:5432/db or sqlite:FILE (default: the configuration's, else $EVENTBUS_SAGA_STORE)")
		if c.Flags().Lookup("config") == nil {
			c.Flags().StringVar(&cf.configFile, "config", "", "YAML configuration file whose saga store to use (default $EVENTBUS_CONFIG)")
		}
		return c
	}
	list := &cobra.Command{
		Use:   "list",
		Short: "List the sagas, oldest first: id, definition, state, current step, reason",
		Args:  noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return withStore(cmd.Context(), cf, sf, getenv, func(st saga.Store, where string) error {
				return sagaList(cmd.Context(), st, sf, cmd.OutOrStdout())
			})
		},
	}
	list.Flags().StringVar(&sf.state, "state", "", "only sagas in this state: running, compensating, completed, compensated, failed")
	list.Flags().StringVar(&sf.name, "name", "", "only sagas of this definition")
	list.Flags().IntVar(&sf.limit, "limit", 0, "at most this many (default 1000)")
	show := &cobra.Command{
		Use:   "show ID",
		Short: "Show a saga: its data, each step's state and attempts, and its history",
		Args:  argsBetween(1, 1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return withStore(cmd.Context(), cf, sf, getenv, func(st saga.Store, where string) error {
				in, err := loadSaga(cmd.Context(), st, args[0], where)
				if err != nil {
					return err
				}
				if sf.json {
					return writeJSON(cmd.OutOrStdout(), in)
				}
				printSaga(cmd.OutOrStdout(), in)
				return nil
			})
		},
	}
	manage := func(kind saga.RequestKind, short, long string) *cobra.Command {
		c := &cobra.Command{
			Use:   string(kind) + " ID",
			Short: short,
			Long: long + "\n\n" +
				"The request is recorded in the saga store; the tool needs no definition and no backend. An\n" +
				"orchestrator that runs the saga's definition on that store (any of its instances) applies\n" +
				"it at its next poll and records the outcome in the saga's history (saga show ID). The\n" +
				"command waits up to --wait for the outcome and prints it; when no orchestrator applied the\n" +
				"request in time it exits with status 3, and the request stays recorded until one does.",
			Args: argsBetween(1, 1),
			RunE: func(cmd *cobra.Command, args []string) error {
				return withStore(cmd.Context(), cf, sf, getenv, func(st saga.Store, where string) error {
					return sagaRequest(cmd.Context(), st, sf, where, args[0], kind, cmd.OutOrStdout())
				})
			},
		}
		c.Flags().DurationVar(&sf.wait, "wait", 30*time.Second, "wait up to this long for an orchestrator to apply the request, and print the outcome (0: return once it is recorded)")
		return c
	}
	cancel := manage(saga.CancelRequest, "Cancel a running saga: compensate the steps that took effect, in reverse order",
		"Asks for the running saga ID to be cancelled: the steps that took effect are compensated, in\n"+
			"reverse order. The orchestrator refuses when the saga is past its point of no return (at a\n"+
			"retriable step), or when it is no longer running by then.")
	retry := manage(saga.RetryRequest, "Resume the compensation of a failed saga where it gave up",
		"Asks for the compensation of the failed saga ID to resume where it gave up, with a fresh\n"+
			"budget of attempts; fix what made it fail first.")
	for _, c := range []*cobra.Command{list, show} {
		c.Flags().BoolVar(&sf.json, "json", false, "print JSON (list: one line per saga; show: the instance)")
	}
	for _, c := range []*cobra.Command{list, show, cancel, retry} {
		c.PreRunE = func(*cobra.Command, []string) error { cf.getenv = getenv; return nil }
		cmd.AddCommand(storeFlag(c))
	}
	return cmd
}

// storeURL resolves the saga store: --store, else the configuration
// file's, else $EVENTBUS_SAGA_STORE.
func storeURL(cf *connFlags, sf *sagaFlags, getenv func(string) string) (string, error) {
	if sf.store != "" {
		return sf.store, nil
	}
	file := cf.configFile
	if file == "" {
		file = getenv("EVENTBUS_CONFIG")
	}
	if file != "" {
		lookup := func(k string) (string, bool) { v := getenv(k); return v, v != "" }
		c, err := config.Load(file, &config.Options{LookupEnv: lookup})
		if err != nil {
			return "", &usageError{err}
		}
		if c.SagaStore != "" {
			return c.SagaStore, nil
		}
		return c.DefaultSagaStore(), nil
	}
	if s := getenv("EVENTBUS_SAGA_STORE"); s != "" {
		return s, nil
	}
	return "", usagef("no saga store; give --store postgres://user@host:5432/db or --store sqlite:FILE, or --config with a saga.store")
}

// withStore opens the saga store and runs fn on it. where names the store
// without credentials, for messages.
func withStore(ctx context.Context, cf *connFlags, sf *sagaFlags, getenv func(string) string, fn func(st saga.Store, where string) error) error {
	raw, err := storeURL(cf, sf, getenv)
	if err != nil {
		return err
	}
	where := driver.RedactURL(raw)
	if err := saga.CheckStoreURL(raw); err != nil {
		return usagef("%v; --store takes postgres://user@host:5432/db or sqlite:FILE", err)
	}
	if postgres, path, _, err := sqlstore.ParseURL(raw); err == nil && !postgres {
		// Opening a SQLite store creates it: a mistyped path would show an
		// empty store instead of the one meant.
		if _, err := os.Stat(path); err != nil {
			return fmt.Errorf("no saga store at %s (%v); check --store, or create one with eventbus demo --data DIR", path, errors.Unwrap(err))
		}
	}
	st, err := saga.OpenStore(ctx, raw)
	if err != nil {
		return &exitError{exitUnavailable, fmt.Errorf("cannot open the saga store %s: %w; check that the database runs and that --store names it", where, err)}
	}
	if c, ok := st.(io.Closer); ok {
		defer c.Close()
	}
	return fn(st, where)
}

func loadSaga(ctx context.Context, st saga.Store, id, where string) (*saga.Instance, error) {
	in, err := st.Load(ctx, id)
	if errors.Is(err, saga.ErrNotFound) {
		return nil, fmt.Errorf("no saga %q in %s; list them with eventbus saga list", id, where)
	}
	if err != nil {
		return nil, &exitError{exitUnavailable, fmt.Errorf("cannot read saga %q from %s: %w; check that the database runs", id, where, err)}
	}
	return in, nil
}

var sagaStates = []saga.State{saga.Running, saga.Compensating, saga.Completed, saga.Compensated, saga.Failed}

func sagaList(ctx context.Context, st saga.Store, sf *sagaFlags, w io.Writer) error {
	f := saga.ListFilter{Name: sf.name, State: saga.State(strings.ToLower(sf.state)), Limit: sf.limit}
	if f.State != "" && !containsState(f.State) {
		return usagef("--state %q; give one of running, compensating, completed, compensated, failed", sf.state)
	}
	if sf.limit < 0 {
		return usagef("--limit must not be negative")
	}
	ins, err := st.List(ctx, f)
	if err != nil {
		return &exitError{exitUnavailable, fmt.Errorf("cannot list the sagas: %w; check that the database runs", err)}
	}
	if sf.json {
		enc := json.NewEncoder(w)
		for _, in := range ins {
			if err := enc.Encode(summarize(in)); err != nil {
				return err
			}
		}
		return nil
	}
	if len(ins) == 0 {
		fmt.Fprintln(w, "no sagas")
		return nil
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tNAME\tSTATE\tSTEP\tUPDATED\tREASON")
	for _, in := range ins {
		s := summarize(in)
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", s.ID, s.Name, s.State, dash(s.Step), s.Updated.Local().Format(time.DateTime), dash(oneLine(s.Reason)))
	}
	return tw.Flush()
}

func containsState(s saga.State) bool {
	for _, st := range sagaStates {
		if st == s {
			return true
		}
	}
	return false
}

// sagaSummary is a line of saga list --json.
type sagaSummary struct {
	ID      string     `json:"id"`
	Name    string     `json:"name"`
	Version int        `json:"version"`
	State   saga.State `json:"state"`
	// Step is the step running or being compensated; empty once the saga
	// completed or compensated.
	Step    string    `json:"step,omitempty"`
	Reason  string    `json:"reason,omitempty"`
	Error   string    `json:"error,omitempty"`
	Created time.Time `json:"created"`
	Updated time.Time `json:"updated"`
}

func summarize(in *saga.Instance) sagaSummary {
	s := sagaSummary{ID: in.ID, Name: in.Name, Version: max(in.DefinitionVersion, 1), State: in.State,
		Reason: in.Reason, Error: in.Error, Created: in.Created, Updated: in.Updated}
	if (in.State.Active() || in.State == saga.Failed) && in.Current >= 0 && in.Current < len(in.Steps) {
		s.Step = in.Steps[in.Current].Name
	}
	return s
}

func printSaga(w io.Writer, in *saga.Instance) {
	fmt.Fprintf(w, "saga %s (%s v%d): %s\n", in.ID, in.Name, max(in.DefinitionVersion, 1), in.State)
	if in.Reason != "" {
		fmt.Fprintf(w, "reason:  %s\n", oneLine(in.Reason))
	}
	if in.Error != "" {
		fmt.Fprintf(w, "error:   %s\n", oneLine(in.Error))
	}
	fmt.Fprintf(w, "created: %s\nupdated: %s (%s later)\n", in.Created.Local().Format(time.RFC3339Nano), in.Updated.Local().Format(time.RFC3339Nano), round(in.Updated.Sub(in.Created)))
	if !in.Deadline.IsZero() && in.State.Active() {
		fmt.Fprintf(w, "next deadline: %s\n", in.Deadline.Local().Format(time.RFC3339Nano))
	}
	if r := in.Request; r != nil {
		fmt.Fprintf(w, "pending: %s request %s by %s at %s, for an orchestrator of %q to apply\n",
			r.Kind, r.ID, dash(r.By), r.At.Local().Format(time.RFC3339Nano), in.Name)
	}
	fmt.Fprintf(w, "data:    %s\n", in.Data)
	fmt.Fprintln(w, "steps:")
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	for _, st := range in.Steps {
		var notes []string
		if st.Attempts > 0 {
			notes = append(notes, "attempts "+strconv.Itoa(st.Attempts))
		}
		if st.CompensationAttempts > 0 {
			notes = append(notes, "compensation attempts "+strconv.Itoa(st.CompensationAttempts))
		}
		if st.Uncertain {
			notes = append(notes, "unanswered attempt")
		}
		if !st.Started.IsZero() && !st.Finished.IsZero() {
			notes = append(notes, "took "+round(st.Finished.Sub(st.Started)).String())
		}
		if st.Error != "" {
			notes = append(notes, "error: "+oneLine(st.Error))
		}
		if len(st.Reply) > 0 {
			notes = append(notes, "reply "+string(st.Reply))
		}
		fmt.Fprintf(tw, "  %s\t%s\t%s\n", st.Name, st.State, strings.Join(notes, ", "))
	}
	_ = tw.Flush()
	fmt.Fprintln(w, "history:")
	for _, ev := range in.History {
		line := fmt.Sprintf("  %s  %s", ev.Time.Local().Format("15:04:05.000"), ev.Kind)
		if ev.Step != "" {
			line += " " + ev.Step
		}
		if ev.Attempt > 0 {
			line += fmt.Sprintf(" (attempt %d)", ev.Attempt)
		}
		if ev.By != "" {
			line += " by " + ev.By
		}
		if ev.Request != "" {
			line += " [request " + ev.Request + "]"
		}
		if ev.Error != "" {
			line += ": " + oneLine(ev.Error)
		}
		fmt.Fprintln(w, line)
	}
}

// sagaRequest records a cancel or retry request for saga id and waits up to
// --wait for an orchestrator to apply it.
func sagaRequest(ctx context.Context, st saga.Store, sf *sagaFlags, where, id string, kind saga.RequestKind, w io.Writer) error {
	if sf.wait < 0 {
		return usagef("--wait must not be negative")
	}
	record := saga.RequestCancel
	if kind == saga.RetryRequest {
		record = saga.RequestRetry
	}
	r, err := record(ctx, st, id, &saga.RequestOptions{By: requester()})
	if err != nil {
		return requestError(ctx, st, where, id, kind, err)
	}
	fmt.Fprintf(w, "saga %s: %s requested (request %s)\n", id, kind, r.ID)
	if sf.wait == 0 {
		fmt.Fprintf(w, "saga %s: an orchestrator of its definition applies it at its next poll; follow it with eventbus saga show %s\n", id, id)
		return nil
	}
	wctx, cancel := context.WithTimeout(ctx, sf.wait)
	defer cancel()
	in, err := saga.WaitRequest(wctx, st, id, r.ID)
	var refused *saga.RefusedError
	switch {
	case errors.As(err, &refused):
		return requestError(ctx, st, where, id, kind, err)
	case wctx.Err() != nil && ctx.Err() == nil:
		name := "its definition"
		if in != nil {
			name = fmt.Sprintf("%q", in.Name)
		}
		return &exitError{exitTimeout, fmt.Errorf("no orchestrator applied the %s request of saga %s within %s; it stays recorded "+
			"and is applied when an orchestrator of %s runs on %s: check that one runs, and follow it with eventbus saga show %s",
			kind, id, sf.wait, name, where, id)}
	case ctx.Err() != nil:
		return &exitError{exitFailure, fmt.Errorf("interrupted while waiting: the %s request of saga %s stays recorded and is applied "+
			"when an orchestrator of its definition runs on %s; follow it with eventbus saga show %s", kind, id, where, id)}
	case errors.Is(err, saga.ErrUnknownRequest):
		return &exitError{exitFailure, fmt.Errorf("the %s request of saga %s is no longer in the saga, with no outcome: an orchestrator "+
			"built before requests existed wrote over it; upgrade every orchestrator of %s and ask again", kind, id, where)}
	case err != nil:
		return &exitError{exitUnavailable, fmt.Errorf("the %s request of saga %s is recorded, but its outcome cannot be read from %s: %w; "+
			"check that the database runs, and follow it with eventbus saga show %s", kind, id, where, err, id)}
	}
	applied := "cancelled: compensating its steps"
	if kind == saga.RetryRequest {
		applied = "compensation resumed"
	}
	fmt.Fprintf(w, "saga %s: %s (applied by orchestrator %s); now %s\n", id, applied, appliedBy(in, r.ID), in.State)
	return nil
}

// requestError explains why a request could not be recorded or was refused.
func requestError(ctx context.Context, st saga.Store, where, id string, kind saga.RequestKind, err error) error {
	var refused *saga.RefusedError
	by := ""
	if errors.As(err, &refused) {
		by = fmt.Sprintf(" (orchestrator %s refused the request)", refused.By)
	}
	switch {
	case errors.Is(err, saga.ErrNotFound):
		return fmt.Errorf("no saga %q in %s; list them with eventbus saga list", id, where)
	case errors.Is(err, saga.ErrNotRunning):
		return fmt.Errorf("saga %s is %s, not running: only a running saga can be cancelled%s", id, stateOf(ctx, st, id), by)
	case errors.Is(err, saga.ErrPastPivot):
		return fmt.Errorf("saga %s is past its point of no return (its retriable steps run until they succeed): it cannot be cancelled%s", id, by)
	case errors.Is(err, saga.ErrNotFailed):
		return fmt.Errorf("saga %s is %s, not failed: retry resumes only a failed saga's compensation%s", id, stateOf(ctx, st, id), by)
	case errors.Is(err, saga.ErrRequestPending):
		return fmt.Errorf("saga %s has another request pending, which no orchestrator has applied yet: see eventbus saga show %s", id, id)
	case refused != nil:
		return fmt.Errorf("the %s request of saga %s was refused: %s", kind, id, refused.Reason)
	}
	return &exitError{exitUnavailable, fmt.Errorf("cannot record the %s request of saga %s in %s: %w; check that the database runs", kind, id, where, err)}
}

// appliedBy returns the orchestrator instance that applied request id.
func appliedBy(in *saga.Instance, id string) string {
	for _, ev := range in.History {
		if ev.Request == id && strings.HasSuffix(ev.Kind, ".applied") {
			return ev.By
		}
	}
	return "?"
}

// requester names who makes a request, for the saga's history: the user
// and host, and the tool.
func requester() string {
	name := "unknown"
	if u, err := user.Current(); err == nil {
		name = u.Username
	}
	if host, err := os.Hostname(); err == nil {
		name += "@" + host
	}
	return name + " (eventbus CLI)"
}

func stateOf(ctx context.Context, st saga.Store, id string) string {
	if in, err := st.Load(ctx, id); err == nil {
		return string(in.State)
	}
	return "in a state that cannot be read now"
}

func writeJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func oneLine(s string) string { return strings.Join(strings.Fields(s), " ") }
