package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strconv"
	"time"

	"github.com/spf13/cobra"

	"github.com/marty-msf/eventbus/natsbus"
)

func newServerCmd() *cobra.Command {
	opts := natsbus.EmbeddedOptions{}
	cmd := &cobra.Command{
		Use:   "server",
		Short: "Run a NATS server with JetStream file storage until interrupted",
		Args:  noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if opts.DataDir == "" {
				return usagef("--data must name a directory")
			}
			if opts.Port < -1 || opts.Port > 65535 {
				return usagef("--port %d out of range (-1 for a free port)", opts.Port)
			}
			return serve(cmd.Context(), &opts, cmd)
		},
	}
	f := cmd.Flags()
	f.StringVar(&opts.DataDir, "data", "eventbus-data", "JetStream storage directory")
	f.StringVar(&opts.Host, "host", "127.0.0.1", "listening address")
	f.IntVar(&opts.Port, "port", 4222, "listening port, -1 for a free one")
	return cmd
}

func serve(ctx context.Context, opts *natsbus.EmbeddedOptions, cmd *cobra.Command) error {
	if opts.Port > 0 {
		// The server reports a taken port in its log only; checking first
		// names the cause and the way out.
		addr := net.JoinHostPort(opts.Host, strconv.Itoa(opts.Port))
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			return fmt.Errorf("cannot listen on %s: %w; stop what uses it, or choose another --port (-1 picks a free one)", addr, err)
		}
		ln.Close()
	}
	srv, err := natsbus.StartServer(ctx, opts)
	var dirErr *natsbus.DataDirError
	switch {
	case errors.As(err, &dirErr) && errors.Is(err, natsbus.ErrDataDirInUse):
		who := "another eventbus server"
		if dirErr.PID > 0 {
			who += " (pid " + strconv.Itoa(dirErr.PID) + ")"
		}
		return fmt.Errorf("data directory %s is in use by %s; stop that one, or give this one another --data", opts.DataDir, who)
	case errors.As(err, &dirErr):
		return fmt.Errorf("cannot use %s as the data directory: %w; give --data a directory you can write", opts.DataDir, dirErr.Err)
	case err != nil:
		return fmt.Errorf("cannot start the server: %w", err)
	}
	fmt.Fprintln(cmd.OutOrStdout(), srv.ClientURL())
	fmt.Fprintf(cmd.ErrOrStderr(), "serving on %s with data in %s; interrupt to stop\n", srv.ClientURL(), opts.DataDir)
	<-ctx.Done()
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		return fmt.Errorf("shut down server: %w", err)
	}
	return nil
}

func noArgs(_ *cobra.Command, args []string) error {
	if len(args) > 0 {
		return usagef("unexpected argument %q", args[0])
	}
	return nil
}
