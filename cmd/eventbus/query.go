package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/spf13/cobra"

	"github.com/marty-msf/eventbus"
)

func newQueryCmd(cf *connFlags, stdin io.Reader) *cobra.Command {
	var timeout time.Duration
	var source string
	cmd := &cobra.Command{
		Use:     "query SERVICE TYPE [JSON|-]",
		Aliases: []string{"request"},
		Short:   "Send a query and print the reply's data",
		Long: "Send a query of type TYPE to SERVICE and print the reply's data. The request is\n" +
			"the JSON argument, or standard input when it is absent or \"-\".\n" +
			"While nobody handles the query, it is asked again until --timeout.\n" +
			"Exit status 3: no reply in time; 4: nobody handles the query; 5: the handler\n" +
			"returned an error, printed with its code.",
		Args: argsBetween(2, 3),
		RunE: func(cmd *cobra.Command, args []string) error {
			if timeout <= 0 {
				return usagef("--timeout must be positive")
			}
			data, err := readPayload(args, 2, stdin)
			if err != nil {
				return err
			}
			ctx := cmd.Context()
			bus, err := openBus(ctx, cf, source, nil)
			if err != nil {
				return err
			}
			reply, err := ask(ctx, bus, args[0], newMessage(args[1], data), timeout)
			if err == nil {
				out := cmd.OutOrStdout()
				_, err = out.Write(reply.Data)
				if err == nil && !bytes.HasSuffix(reply.Data, []byte("\n")) {
					_, err = io.WriteString(out, "\n")
				}
			}
			return closeBus(ctx, bus, err)
		},
	}
	cmd.Flags().DurationVar(&timeout, "timeout", 5*time.Second, "how long to wait for the reply")
	cmd.Flags().StringVar(&source, "source", "eventbus-cli", "CloudEvents source attribute")
	return cmd
}

// ask sends the query and gives each typed failure its exit status.
func ask(ctx context.Context, bus *eventbus.Bus, service string, m *eventbus.Message, timeout time.Duration) (*eventbus.Message, error) {
	qctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	// Nobody answering yet may be a responder still starting, as when a
	// shell starts both at once: ask again until the timeout.
	pause := 20 * time.Millisecond
	reply, err := bus.Query(qctx, service, m)
	for errors.Is(err, eventbus.ErrNoResponders) {
		t := time.NewTimer(pause)
		select {
		case <-qctx.Done():
			t.Stop()
		case <-t.C:
		}
		if qctx.Err() != nil {
			break
		}
		pause = min(2*pause, 250*time.Millisecond)
		reply, err = bus.Query(qctx, service, m)
	}
	var re *eventbus.RemoteError
	switch {
	case err == nil:
		return reply, nil
	case errors.As(err, &re):
		if re.Code != "" {
			return nil, &exitError{exitRemote, fmt.Errorf("%s.%s failed: [%s] %s", service, m.Type, re.Code, re.Message)}
		}
		return nil, &exitError{exitRemote, fmt.Errorf("%s.%s failed: %s", service, m.Type, re.Message)}
	case errors.Is(err, eventbus.ErrNoResponders):
		return nil, &exitError{exitNoResponders, fmt.Errorf("no responders: nobody handled %s.%s within %s (%w); start a service that does, or try \"eventbus respond\"", service, m.Type, timeout, err)}
	case errors.Is(err, eventbus.ErrTimeout) && ctx.Err() == nil:
		return nil, &exitError{exitTimeout, fmt.Errorf("timeout: no reply from %s.%s within %s (%w)", service, m.Type, timeout, err)}
	default:
		return nil, err
	}
}
