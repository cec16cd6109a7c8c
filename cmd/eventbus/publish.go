package main

import (
	"fmt"
	"io"

	"github.com/spf13/cobra"
)

func newPublishCmd(cf *connFlags, stdin io.Reader) *cobra.Command {
	var service, stream, key, subject, source string
	var broadcast bool
	cmd := &cobra.Command{
		Use:   "publish TYPE [JSON|-]",
		Short: "Publish an event, command, broadcast or stream message",
		Long: "Publish a message of type TYPE: an event by default, a command to SERVICE with\n" +
			"--command, a broadcast with --broadcast, or a stream message with --stream.\n" +
			"The payload is the JSON argument, or standard input when it is absent or \"-\".\n" +
			"Prints the message id once the server confirmed it.",
		Args: argsBetween(1, 2),
		RunE: func(cmd *cobra.Command, args []string) error {
			data, err := readPayload(args, 1, stdin)
			if err != nil {
				return err
			}
			m := newMessage(args[0], data)
			m.Key, m.Subject = key, subject
			ctx := cmd.Context()
			bus, err := openBus(ctx, cf, source, nil)
			if err != nil {
				return err
			}
			var what string
			switch {
			case service != "":
				what = "command"
				err = bus.SendCommand(ctx, service, m)
			case broadcast:
				what = "broadcast"
				err = bus.Broadcast(ctx, m)
			case stream != "":
				what = "stream message"
				err = bus.PublishStream(ctx, stream, m)
			default:
				what = "event"
				err = bus.PublishEvent(ctx, m)
			}
			if err != nil {
				err = fmt.Errorf("publish %s: %w", what, err)
			} else {
				fmt.Fprintln(cmd.OutOrStdout(), m.ID)
			}
			return closeBus(ctx, bus, err)
		},
	}
	f := cmd.Flags()
	f.StringVar(&service, "command", "", "send a command to this service")
	f.BoolVar(&broadcast, "broadcast", false, "broadcast to every running instance")
	f.StringVar(&stream, "stream", "", "append to this stream")
	f.StringVar(&key, "key", "", "partition key: messages with one key keep their order")
	f.StringVar(&subject, "subject", "", "CloudEvents subject attribute")
	f.StringVar(&source, "source", "eventbus-cli", "CloudEvents source attribute")
	cmd.MarkFlagsMutuallyExclusive("command", "broadcast", "stream")
	return cmd
}

func argsBetween(min, max int) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		if len(args) < min || len(args) > max {
			return usagef("%s: expected %s", cmd.Name(), cmd.Use[len(cmd.Name())+1:])
		}
		return nil
	}
}
