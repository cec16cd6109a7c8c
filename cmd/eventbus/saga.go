package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/marty-msf/eventbus"
	"github.com/marty-msf/eventbus/config"
	"github.com/marty-msf/eventbus/driver"
	"github.com/marty-msf/eventbus/internal/shop"
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

func newSagaCmd(cf *connFlags, getenv func(string) string, client func(*cobra.Command) *cobra.Command) *cobra.Command {
	sf := &sagaFlags{}
	cmd := &cobra.Command{
		Use:   "saga",
		Short: "List, show, cancel and retry sagas in a saga store",
		Long: "Reads and manages the sagas of a saga store (package saga/sqlstore): --store names it by URL\n" +
			"(postgres://user@host:5432/db or sqlite:FILE), else the store of the configuration file\n" +
			"(--config, $EVENTBUS_CONFIG: its saga.store, or the SQLite file in its data_dir), else\n" +
			"$EVENTBUS_SAGA_STORE. list and show read the store only; cancel and retry also connect to\n" +
			"the backends, to send the compensation commands, and know the definitions of the demo's\n" +
			"order saga.",
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
	manage := func(use, short string, op func(*saga.Orchestrator, context.Context, string) error, done string) *cobra.Command {
		c := &cobra.Command{
			Use:   use + " ID",
			Short: short,
			Args:  argsBetween(1, 1),
			RunE: func(cmd *cobra.Command, args []string) error {
				return withStore(cmd.Context(), cf, sf, getenv, func(st saga.Store, where string) error {
					return sagaManage(cmd.Context(), cf, sf, st, where, args[0], op, done, cmd.OutOrStdout())
				})
			},
		}
		c.Flags().DurationVar(&sf.wait, "wait", 0, "wait up to this long for the saga to end, and print its state (0: return once the command is sent)")
		return c
	}
	cancel := manage("cancel", "Cancel a running saga: compensate the steps that took effect, in reverse order",
		(*saga.Orchestrator).Cancel, "cancelled: compensating its steps")
	retry := manage("retry", "Resume the compensation of a failed saga where it gave up",
		(*saga.Orchestrator).Retry, "compensation resumed")
	for _, c := range []*cobra.Command{list, show} {
		c.Flags().BoolVar(&sf.json, "json", false, "print JSON (list: one line per saga; show: the instance)")
		c.PreRunE = func(*cobra.Command, []string) error { cf.getenv = getenv; return nil }
	}
	cmd.AddCommand(storeFlag(list), storeFlag(show), storeFlag(client(cancel)), storeFlag(client(retry)))
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
		if ev.Error != "" {
			line += ": " + oneLine(ev.Error)
		}
		fmt.Fprintln(w, line)
	}
}

// sagaManage runs a manager operation (Cancel, Retry) on saga id through an
// orchestrator of the tool's own, on the backends of the connection flags.
func sagaManage(ctx context.Context, cf *connFlags, sf *sagaFlags, st saga.Store, where, id string,
	op func(*saga.Orchestrator, context.Context, string) error, done string, w io.Writer) error {
	if sf.wait < 0 {
		return usagef("--wait must not be negative")
	}
	in, err := loadSaga(ctx, st, id, where)
	if err != nil {
		return err
	}
	def := shop.Definition()
	if in.Name != def.Name {
		// Compensating needs the definition: the services and commands of
		// the steps, which only the program that defines the saga knows.
		return fmt.Errorf("saga %s runs the definition %q, which this tool does not know (it knows %q, the demo's): "+
			"call Orchestrator.Cancel or Retry in a program that registers %q", id, in.Name, def.Name, in.Name)
	}
	instance := fmt.Sprintf("eventbus-cli-%d", os.Getpid())
	var orc *saga.Orchestrator
	bus, err := openBus(ctx, cf, "eventbus-cli", func(bus *eventbus.Bus) error {
		var err error
		if orc, err = saga.NewOrchestrator(bus, st, &saga.Options{Instance: instance}); err != nil {
			return err
		}
		return orc.Register(def)
	})
	if err != nil {
		return err
	}
	err = op(orc, ctx, id)
	switch {
	case errors.Is(err, saga.ErrNotRunning):
		err = fmt.Errorf("saga %s is %s, not running: only a running saga can be cancelled", id, stateOf(ctx, st, id))
	case errors.Is(err, saga.ErrPastPivot):
		err = fmt.Errorf("saga %s is past its point of no return (its retriable steps run until they succeed): it cannot be cancelled", id)
	case errors.Is(err, saga.ErrNotFailed):
		err = fmt.Errorf("saga %s is %s, not failed: retry resumes only a failed saga's compensation", id, stateOf(ctx, st, id))
	case errors.Is(err, saga.ErrNotFound):
		err = fmt.Errorf("no saga %q in %s; list them with eventbus saga list", id, where)
	case err != nil:
		err = fmt.Errorf("%w; check that the backends and the saga store run, then try again", err)
	}
	if err == nil {
		// Hand the saga to whichever orchestrator runs, at once, rather
		// than when this process's lease expires.
		_ = st.ReleaseLease(context.WithoutCancel(ctx), id, instance)
		fmt.Fprintf(w, "saga %s: %s\n", id, done)
	}
	if err == nil && sf.wait > 0 {
		wctx, cancel := context.WithTimeout(ctx, sf.wait)
		in, werr := shop.Wait(wctx, orc, id)
		cancel()
		switch {
		case werr == nil:
			fmt.Fprintf(w, "saga %s: %s\n", id, in.State)
		case wctx.Err() != nil && ctx.Err() == nil:
			err = &exitError{exitTimeout, fmt.Errorf("saga %s did not end within %s; its participants may not be running: follow it with eventbus saga show %s", id, sf.wait, id)}
		default:
			err = werr
		}
	}
	return closeBus(ctx, bus, err)
}

func stateOf(ctx context.Context, st saga.Store, id string) saga.State {
	if in, err := st.Load(ctx, id); err == nil {
		return in.State
	}
	return "not running"
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
