package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"sync"

	"github.com/spf13/cobra"

	"github.com/marty-msf/eventbus"
)

func newRespondCmd(cf *connFlags) *cobra.Command {
	var reply, command, source string
	var count int
	cmd := &cobra.Command{
		Use:   "respond SERVICE TYPE (--reply JSON | --exec COMMAND)",
		Short: "Answer queries with a fixed reply or a shell command's output",
		Long: "Handle the queries of type TYPE sent to SERVICE until --count were answered or\n" +
			"the command is interrupted, so that request/reply can be tried without writing\n" +
			"Go. --reply answers every query with the same JSON. --exec runs COMMAND with\n" +
			"sh -c for each query, the query's data on its standard input and $EVENTBUS_TYPE,\n" +
			"$EVENTBUS_ID and $EVENTBUS_SOURCE set: its standard output is the reply (JSON,\n" +
			"or else text), and a non-zero exit status is a remote error with code\n" +
			"exit_<status> and the command's standard error as its message. Each answered\n" +
			"query is reported on standard error.",
		Example: "  eventbus respond inventory stock.get --reply '{\"sku\":\"s-1\",\"available\":7}'\n" +
			"  eventbus respond math sum.get --exec 'jq \"add\"'",
		Args: argsBetween(2, 2),
		RunE: func(cmd *cobra.Command, args []string) error {
			switch {
			case (reply == "") == (command == ""):
				return usagef("give exactly one of --reply and --exec")
			case reply != "" && !json.Valid([]byte(reply)):
				var v any
				return usagef("--reply is not valid JSON: %v", json.Unmarshal([]byte(reply), &v))
			case count < 0:
				return usagef("--count must not be negative")
			}
			answer := func(ctx context.Context, m *eventbus.Message) (*eventbus.Message, error) {
				return newMessage(m.Type+".reply", []byte(reply)), nil
			}
			if command != "" {
				answer = func(ctx context.Context, m *eventbus.Message) (*eventbus.Message, error) {
					return runResponder(ctx, command, m)
				}
			}
			return respond(cmd.Context(), cf, source, args[0], args[1], count, answer, cmd.ErrOrStderr())
		},
	}
	f := cmd.Flags()
	f.StringVar(&reply, "reply", "", "answer every query with this JSON")
	f.StringVar(&command, "exec", "", "answer each query with this shell command's output")
	f.IntVar(&count, "count", 0, "stop after answering this many queries (0: until interrupted)")
	f.StringVar(&source, "source", "eventbus-cli", "CloudEvents source attribute of the replies")
	return cmd
}

func respond(ctx context.Context, cf *connFlags, source, service, qType string, count int,
	answer func(context.Context, *eventbus.Message) (*eventbus.Message, error), stderr io.Writer) error {
	enough := make(chan struct{})
	var mu sync.Mutex
	answered := 0
	h := eventbus.QueryHandlerFunc(func(ctx context.Context, m *eventbus.Message) (*eventbus.Message, error) {
		mu.Lock()
		if count > 0 && answered >= count {
			mu.Unlock()
			// Given back unanswered: another responder, or the caller's
			// timeout, deals with it.
			return nil, errEnough
		}
		answered++
		last := count > 0 && answered == count
		mu.Unlock()
		r, err := answer(ctx, m)
		if err != nil {
			fmt.Fprintf(stderr, "query %s from %s: error: %v\n", m.ID, m.Source, err)
		} else {
			fmt.Fprintf(stderr, "query %s from %s: answered %s\n", m.ID, m.Source, bytes.TrimSpace(r.Data))
		}
		if last {
			// The reply goes out when the handler returns; the bus drains
			// it on close.
			close(enough)
		}
		return r, err
	})
	bus, err := openBus(ctx, cf, source, func(b *eventbus.Bus) error {
		_, err := b.HandleQuery(ctx, service, qType, h)
		return err
	})
	if err != nil {
		return err
	}
	fmt.Fprintf(stderr, "answering %s.%s on %s\n", service, qType, cf.servers())
	select {
	case <-ctx.Done():
	case <-enough:
	}
	return closeBus(ctx, bus, nil)
}

// runResponder answers m with the output of the shell command.
func runResponder(ctx context.Context, command string, m *eventbus.Message) (*eventbus.Message, error) {
	c := exec.CommandContext(ctx, "sh", "-c", command)
	c.Stdin = bytes.NewReader(m.Data)
	c.Env = append(os.Environ(), "EVENTBUS_TYPE="+m.Type, "EVENTBUS_ID="+m.ID, "EVENTBUS_SOURCE="+m.Source)
	var out, errOut bytes.Buffer
	c.Stdout, c.Stderr = &out, &errOut
	err := c.Run()
	var ee *exec.ExitError
	switch {
	case errors.As(err, &ee):
		msg := string(bytes.TrimSpace(errOut.Bytes()))
		if msg == "" {
			msg = ee.Error()
		}
		return nil, eventbus.Errorf("exit_"+strconv.Itoa(ee.ExitCode()), "%s", msg)
	case err != nil:
		return nil, eventbus.Errorf("exec", "%v", err)
	}
	data := bytes.TrimSpace(out.Bytes())
	r := newMessage(m.Type+".reply", data)
	if !json.Valid(data) {
		r.DataContentType = "text/plain; charset=utf-8"
	}
	return r, nil
}
