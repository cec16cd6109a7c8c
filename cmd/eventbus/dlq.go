package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strconv"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/marty-msf/eventbus"
)

// dlqFlags are the flags of the dlq commands.
type dlqFlags struct {
	filter           eventbus.DeadLetterFilter
	json, all        bool
	to, toBackend    string
	altered          bool
	since, olderThan time.Duration
}

func newDLQCmd(cf *connFlags, client func(*cobra.Command) *cobra.Command) *cobra.Command {
	df := &dlqFlags{}
	cmd := &cobra.Command{
		Use:   "dlq",
		Short: "List, show, replay and purge dead letters",
		Long: "Browses the dead letters that the backends hold (Bus.DeadLetters): messages that a\n" +
			"handler gave up on (a permanent error, or every retry spent), with why, from where and\n" +
			"by which group. replay publishes them again to where they came from (or --to another\n" +
			"destination) and removes each once the backend confirmed it; purge removes them.\n" +
			"Backends whose driver cannot browse dead letters are left out. replay and purge act on\n" +
			"the dead letters given by id, or on those the filters select; with neither, --all is\n" +
			"required.",
	}
	filters := func(c *cobra.Command) *cobra.Command {
		f := c.Flags()
		f.StringVar(&df.filter.Backend, "backend", "", "only the dead letters of this backend (as the configuration names it)")
		f.StringVar(&df.filter.Origin, "origin", "", "only those consumed from this destination, e.g. events.order.placed or commands.billing.charge")
		f.StringVar(&df.filter.Type, "type", "", "only messages of this type")
		f.StringVar(&df.filter.Source, "source", "", "only messages of this source")
		f.StringVar(&df.filter.Reason, "reason", "", "only those whose reason contains this text (any case)")
		f.StringVar(&df.filter.Group, "group", "", "only those given up by this consumer group")
		f.DurationVar(&df.since, "since", 0, "only those dead-lettered within this long, e.g. 1h")
		f.DurationVar(&df.olderThan, "older-than", 0, "only those dead-lettered at least this long ago")
		f.IntVar(&df.filter.Limit, "limit", 0, "at most this many (0: no limit)")
		return c
	}
	list := &cobra.Command{
		Use:   "list",
		Short: "List dead letters, oldest first: id, origin, group, attempts, time, reason",
		Args:  noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return withDeadLetters(cmd.Context(), cf, func(dl *eventbus.DeadLetters) error {
				f, err := df.selection(nil, false)
				if err != nil {
					return err
				}
				dls, err := dl.List(cmd.Context(), f)
				if err != nil {
					return dlqError(err)
				}
				return printDeadLetters(cmd.OutOrStdout(), dls, df.json)
			})
		},
	}
	show := &cobra.Command{
		Use:   "show ID",
		Short: "Show a dead letter: its attributes, why and where it was given up, and its data",
		Args:  argsBetween(1, 1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return withDeadLetters(cmd.Context(), cf, func(dl *eventbus.DeadLetters) error {
				dls, err := dl.Get(cmd.Context(), args[0])
				if err != nil {
					return dlqError(err)
				}
				if df.json {
					return printDeadLetters(cmd.OutOrStdout(), dls, true)
				}
				for i, d := range dls {
					if i > 0 {
						fmt.Fprintln(cmd.OutOrStdout())
					}
					printDeadLetter(cmd.OutOrStdout(), d)
				}
				return nil
			})
		},
	}
	for _, c := range []*cobra.Command{list, show} {
		c.Flags().BoolVar(&df.json, "json", false, "print one JSON line per dead letter")
	}
	replay := &cobra.Command{
		Use:   "replay [ID...]",
		Short: "Publish dead letters again to where they came from, and remove each once confirmed",
		RunE: func(cmd *cobra.Command, args []string) error {
			f, err := df.selection(args, true)
			if err != nil {
				return err
			}
			return withDeadLetters(cmd.Context(), cf, func(dl *eventbus.DeadLetters) error {
				rs, err := dl.Replay(cmd.Context(), f, &eventbus.ReplayOptions{To: df.to, Backend: df.toBackend, Altered: df.altered})
				if err != nil {
					return dlqError(err)
				}
				return reportReplay(cmd.OutOrStdout(), rs)
			})
		},
	}
	replay.Flags().StringVar(&df.to, "to", "", "publish to this destination instead of each one's origin, e.g. events.order.placed")
	replay.Flags().StringVar(&df.toBackend, "to-backend", "", "publish on this backend instead of the one that holds the dead letter")
	replay.Flags().BoolVar(&df.altered, "altered", false, "also replay dead letters that were cut to fit their backend")
	purge := &cobra.Command{
		Use:   "purge [ID...]",
		Short: "Remove dead letters",
		RunE: func(cmd *cobra.Command, args []string) error {
			f, err := df.selection(args, true)
			if err != nil {
				return err
			}
			return withDeadLetters(cmd.Context(), cf, func(dl *eventbus.DeadLetters) error {
				n, err := dl.Purge(cmd.Context(), f)
				if err != nil {
					return dlqError(fmt.Errorf("%w (%d removed before the error)", err, n))
				}
				fmt.Fprintf(cmd.OutOrStdout(), "purged %d dead letters\n", n)
				return nil
			})
		},
	}
	for _, c := range []*cobra.Command{replay, purge} {
		c.Flags().BoolVar(&df.all, "all", false, "act on every dead letter of every backend, when no id or filter is given")
	}
	cmd.AddCommand(client(filters(list)), client(show), client(filters(replay)), client(filters(purge)))
	return cmd
}

// selection is the filter of the flags and ids; acting on every dead letter
// needs --all.
func (df *dlqFlags) selection(ids []string, needAll bool) (eventbus.DeadLetterFilter, error) {
	f := df.filter
	f.IDs = ids
	if needAll && len(ids) == 0 && !df.all && f.Backend == "" && f.Origin == "" && f.Type == "" && f.Source == "" &&
		f.Reason == "" && f.Group == "" && df.since == 0 && df.olderThan == 0 {
		return f, usagef("no dead letters selected; give their ids, a filter such as --origin or --type, or --all for every one")
	}
	if df.since < 0 || df.olderThan < 0 || f.Limit < 0 {
		return f, usagef("--since, --older-than and --limit must not be negative")
	}
	now := time.Now()
	if df.since > 0 {
		f.Since = now.Add(-df.since)
	}
	if df.olderThan > 0 {
		f.Until = now.Add(-df.olderThan)
	}
	return f, nil
}

// withDeadLetters connects to the backends and runs fn on their dead
// letters.
func withDeadLetters(ctx context.Context, cf *connFlags, fn func(*eventbus.DeadLetters) error) error {
	bus, err := openBus(ctx, cf, "eventbus-cli", nil)
	if err != nil {
		return err
	}
	return closeBus(ctx, bus, fn(bus.DeadLetters()))
}

// dlqError says what to do about an error of the dead-letter API.
func dlqError(err error) error {
	switch {
	case errors.Is(err, eventbus.ErrDeadLetterNotFound):
		return fmt.Errorf("%w; list them with eventbus dlq list", err)
	case errors.Is(err, eventbus.ErrCapability):
		return fmt.Errorf("%w; this backend keeps no dead letters the tool can browse (see the backends table of the README): "+
			"read them with the broker's own tools, or give --backend one that does", err)
	case errors.Is(err, eventbus.ErrUnknownBackend):
		return &usageError{fmt.Errorf("%w; --backend and --to-backend take the names of the configuration's backends", err)}
	case errors.Is(err, eventbus.ErrInvalidName):
		return &usageError{fmt.Errorf("%w; --to takes a destination such as events.order.placed or commands.billing.charge", err)}
	}
	return err
}

// deadLetterJSON is a line of dlq list --json.
type deadLetterJSON struct {
	ID          string            `json:"id"`
	Type        string            `json:"type"`
	Source      string            `json:"source"`
	Backend     string            `json:"backend"`
	Origin      string            `json:"origin"`
	Destination string            `json:"destination"`
	Group       string            `json:"group,omitempty"`
	Reason      string            `json:"reason"`
	Attempts    int               `json:"attempts,omitempty"`
	Time        time.Time         `json:"time,omitzero"`
	Altered     bool              `json:"altered,omitempty"`
	Extensions  map[string]string `json:"extensions,omitempty"`
	Data        json.RawMessage   `json:"data,omitempty"`
	DataBase64  []byte            `json:"data_base64,omitempty"`
}

func printDeadLetters(w io.Writer, dls []*eventbus.DeadLetter, asJSON bool) error {
	if asJSON {
		enc := json.NewEncoder(w)
		for _, d := range dls {
			j := deadLetterJSON{ID: d.Message.ID, Type: d.Message.Type, Source: d.Message.Source, Backend: d.Backend, Origin: d.Origin,
				Destination: d.Destination, Group: d.Group, Reason: d.Reason, Attempts: d.Attempts, Time: d.Time, Altered: d.Altered()}
			if json.Valid(d.Message.Data) {
				j.Data = d.Message.Data
			} else {
				j.DataBase64 = d.Message.Data
			}
			if err := enc.Encode(j); err != nil {
				return err
			}
		}
		return nil
	}
	if len(dls) == 0 {
		// AMQP cannot list queues: a RabbitMQ backend lists only the
		// dead-letter destinations this process declared, none here.
		fmt.Fprintln(w, "no dead letters (on RabbitMQ, which cannot list its queues, name the origin with --origin)")
		return nil
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tTYPE\tORIGIN\tGROUP\tATTEMPTS\tDEAD-LETTERED\tREASON")
	for _, d := range dls {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", d.Message.ID, d.Message.Type, d.Origin, dash(d.Group), attempts(d.Attempts), when(d.Time), oneLine(d.Reason))
	}
	return tw.Flush()
}

func printDeadLetter(w io.Writer, d *eventbus.DeadLetter) {
	m := d.Message
	fmt.Fprintf(w, "id:            %s\ntype:          %s\nsource:        %s\n", m.ID, m.Type, m.Source)
	if m.Subject != "" {
		fmt.Fprintf(w, "subject:       %s\n", m.Subject)
	}
	if m.Key != "" {
		fmt.Fprintf(w, "key:           %s\n", m.Key)
	}
	fmt.Fprintf(w, "backend:       %s\norigin:        %s\ngroup:         %s\nattempts:      %s\ndead-lettered: %s\nreason:        %s\n",
		d.Backend, d.Origin, dash(d.Group), attempts(d.Attempts), when(d.Time), oneLine(d.Reason))
	if d.Altered() {
		fmt.Fprintln(w, "altered:       cut to fit the backend; replay it with --altered")
	}
	if json.Valid(m.Data) {
		fmt.Fprintf(w, "data:          %s\n", m.Data)
	} else {
		fmt.Fprintf(w, "data:          %d bytes of %s\n", len(m.Data), dash(m.DataContentType))
	}
}

func attempts(n int) string {
	if n == 0 {
		return "-"
	}
	return strconv.Itoa(n)
}

func when(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return t.Local().Format(time.DateTime)
}

// reportReplay prints what Replay did with each dead letter and fails when
// one was not replayed, saying why and what to do.
func reportReplay(w io.Writer, rs []eventbus.ReplayResult) error {
	failed := 0
	var dup bool
	var first error
	for _, r := range rs {
		id := r.DeadLetter.Message.ID
		switch {
		case r.Replayed && r.Removed:
			fmt.Fprintf(w, "replayed %s to %s\n", id, r.Destination)
		case r.Replayed:
			fmt.Fprintf(w, "replayed %s to %s, but the dead letter stays: %v\n", id, r.Destination, r.Err)
		default:
			failed++
			dup = dup || errors.Is(r.Err, eventbus.ErrDuplicate)
			if first == nil {
				first = r.Err
			}
			fmt.Fprintf(w, "not replayed %s: %v\n", id, r.Err)
		}
	}
	fmt.Fprintf(w, "replayed %d of %d dead letters\n", len(rs)-failed, len(rs))
	switch {
	case failed == 0:
		return nil
	case dup:
		return fmt.Errorf("%d dead letters not replayed: the backend dropped them as duplicates of the messages it stored with the same ids "+
			"within its de-duplication window (JetStream: 2 minutes by default); replay them once it has passed, or --to another destination", failed)
	default:
		return fmt.Errorf("%d dead letters not replayed (the first: %v); they stay: replay them again once the cause is fixed", failed, first)
	}
}
