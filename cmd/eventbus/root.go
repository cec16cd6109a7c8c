package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"regexp"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/spf13/cobra"

	"github.com/marty-msf/eventbus"
	"github.com/marty-msf/eventbus/config"
	"github.com/marty-msf/eventbus/driver"
	"github.com/marty-msf/eventbus/natsbus"
)

// Exit statuses; see the package documentation.
const (
	exitOK = iota
	exitFailure
	exitUsage
	exitTimeout
	exitNoResponders
	exitRemote
	exitUnavailable
)

const defaultURL = "nats://127.0.0.1:4222"

// maxInput bounds a payload read from standard input, above any broker's
// message size, so that a runaway pipe fails instead of exhausting memory.
const maxInput = 64 << 20

// usageError is a mistake in the command line itself: exit status 2.
type usageError struct{ err error }

func (e *usageError) Error() string { return e.err.Error() }
func (e *usageError) Unwrap() error { return e.err }

func usagef(format string, args ...any) error {
	return &usageError{fmt.Errorf(format, args...)}
}

// exitError carries a specific exit status with its error.
type exitError struct {
	code int
	err  error
}

func (e *exitError) Error() string { return e.err.Error() }
func (e *exitError) Unwrap() error { return e.err }

// run executes the command line args and returns the exit status. getenv
// supplies the environment, so that tests need not change the process's.
func run(ctx context.Context, args []string, getenv func(string) string, stdin io.Reader, stdout, stderr io.Writer) int {
	started := false
	root := newRoot(getenv, stdin, &started)
	root.SetArgs(args)
	root.SetIn(stdin)
	root.SetOut(stdout)
	root.SetErr(stderr)
	cmd, err := root.ExecuteContextC(ctx)
	if err == nil {
		return exitOK
	}
	var ee *exitError
	var ue *usageError
	code := exitFailure
	switch {
	case errors.As(err, &ee):
		code = ee.code
	case errors.As(err, &ue), errors.Is(err, eventbus.ErrInvalidName), !started:
		code = exitUsage
	}
	fmt.Fprintln(stderr, "error:", message(err, code, cmd))
	return code
}

// packagePrefix matches the message of an error that a package of the
// project made ("eventbus: ...", "natsbus: ...", "config: ...").
var packagePrefix = regexp.MustCompile(`^(eventbus|membus|natsbus|kafkabus|rabbitbus|redisbus|awsbus|config|saga|sqlstore|outbox|driver): `)

// message is err as one line that says what to do next. The packages'
// errors say what failed, each part once; the tool's own errors say what to
// do next, most after "; ". A usage error or a package's error that the
// tool gave no advice gets the advice of its kind: the command's help for a
// usage error.
func message(err error, code int, cmd *cobra.Command) string {
	msg := err.Error()
	// What the tool itself said around the packages' error: msg without
	// the innermost error that a package made (the packages' own layers
	// around it give no advice).
	own, packaged := msg, false
	for e := err; e != nil; e = errors.Unwrap(e) {
		if inner := e.Error(); packagePrefix.MatchString(inner) {
			own, packaged = strings.Replace(msg, inner, "", 1), true
		}
	}
	// A multi-line error (a configuration's problems, one per line)
	// becomes one line: its lines joined with "; ".
	lines := strings.Split(msg, "\n")
	for i := range lines {
		lines[i] = strings.TrimPrefix(strings.TrimSpace(lines[i]), "- ")
	}
	msg = lines[0]
	if len(lines) > 1 {
		msg = strings.TrimSuffix(msg, ":") + ": " + strings.Join(lines[1:], "; ")
	}
	if (packaged || code == exitUsage) && !strings.Contains(own, "; ") {
		msg += "; " + advice(err, code, cmd)
	}
	return msg
}

// advice says what to do next about an error whose message does not.
func advice(err error, code int, cmd *cobra.Command) string {
	help := `"eventbus --help"`
	if cmd != nil {
		help = fmt.Sprintf("%q", cmd.CommandPath()+" --help")
	}
	var ce *eventbus.ConfigError
	switch {
	case code == exitUsage:
		return "see " + help
	case errors.Is(err, eventbus.ErrTooLarge):
		return "send a smaller payload: the backend takes messages up to the limit above"
	case errors.Is(err, eventbus.ErrInvalid):
		return "change the attribute or extension named above"
	case errors.Is(err, eventbus.ErrSchema):
		return "change the payload to satisfy the schema"
	case errors.As(err, &ce), errors.Is(err, eventbus.ErrNoBackend), errors.Is(err, eventbus.ErrUnknownBackend), errors.Is(err, eventbus.ErrCapability):
		return "check the backends and routes of the configuration file (--config)"
	case errors.Is(err, eventbus.ErrClosed), errors.Is(err, driver.ErrUnavailable):
		return `check that the server runs ("eventbus server" starts one), then try again`
	}
	return "try again"
}

// connFlags are the connection settings shared by the client commands.
type connFlags struct {
	configFile                        string
	getenv                            func(string) string
	url, user, password, token, creds string
	tlsCA, tlsCert, tlsKey            string
	connectTimeout                    time.Duration
	streamPrefix, subjectPrefix       string
	// stderr receives the notices of the connection: waiting for the
	// server, disconnected, reconnected.
	stderr io.Writer
}

func newRoot(getenv func(string) string, stdin io.Reader, started *bool) *cobra.Command {
	root := &cobra.Command{
		Use:           "eventbus",
		Short:         "Run a server, publish, listen, query and respond on an eventbus system",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.CompletionOptions.DisableDefaultCmd = true
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return &usageError{err} })

	cf := &connFlags{}
	client := func(cmd *cobra.Command) *cobra.Command {
		f := cmd.Flags()
		// Defaults from the environment are applied after parsing, so that
		// help never prints a password taken from it.
		f.StringVar(&cf.configFile, "config", "", "YAML configuration file of the services' backends, instead of the connection flags (default $EVENTBUS_CONFIG)")
		f.StringVar(&cf.url, "url", "", "server URLs, comma separated; host:port means nats:// (default $NATS_URL, else "+defaultURL+")")
		f.StringVar(&cf.user, "user", "", "user name (default $NATS_USER)")
		f.StringVar(&cf.password, "password", "", "password (default $NATS_PASSWORD)")
		f.StringVar(&cf.token, "token", "", "authentication token (default $NATS_TOKEN)")
		f.StringVar(&cf.creds, "creds", "", "JWT credentials file (default $NATS_CREDS)")
		f.StringVar(&cf.tlsCA, "tls-ca", "", "PEM file of the authorities of the server's certificate")
		f.StringVar(&cf.tlsCert, "tls-cert", "", "PEM client certificate")
		f.StringVar(&cf.tlsKey, "tls-key", "", "PEM key of the client certificate")
		f.DurationVar(&cf.connectTimeout, "connect-timeout", 10*time.Second, "how long to keep trying to reach the server, e.g. while it starts")
		f.StringVar(&cf.streamPrefix, "stream-prefix", "", "JetStream stream name prefix of the services (default EVENTBUS)")
		f.StringVar(&cf.subjectPrefix, "subject-prefix", "", "subject prefix of the services, if they use one")
		cmd.PreRunE = func(cmd *cobra.Command, _ []string) error {
			cf.stderr = cmd.ErrOrStderr()
			return cf.fromEnv(getenv)
		}
		return cmd
	}
	root.AddCommand(
		newServerCmd(),
		client(newPublishCmd(cf, stdin)),
		client(newListenCmd(cf)),
		client(newQueryCmd(cf, stdin)),
		client(newRespondCmd(cf)),
		newSagaCmd(cf, getenv),
		newDLQCmd(cf, client),
		newBenchCmd(cf, getenv, client),
		newDemoCmd(),
		newVersionCmd(),
	)
	// Cobra reports unknown commands, bad flags and wrong arguments before
	// RunE; started tells such usage errors from failures.
	// A group of subcommands (saga, dlq) shows its help, and names an
	// unknown subcommand as a usage error.
	for _, cmd := range root.Commands() {
		if cmd.HasSubCommands() && cmd.RunE == nil {
			cmd.Args = cobra.ArbitraryArgs
			cmd.RunE = func(cmd *cobra.Command, args []string) error {
				if len(args) > 0 {
					return usagef("unknown command %q for %q", args[0], cmd.CommandPath())
				}
				return cmd.Help()
			}
		}
	}
	var mark func(*cobra.Command)
	mark = func(parent *cobra.Command) {
		for _, cmd := range parent.Commands() {
			mark(cmd)
			if runE := cmd.RunE; runE != nil {
				cmd.RunE = func(cmd *cobra.Command, args []string) error {
					*started = true
					return runE(cmd, args)
				}
			}
		}
	}
	mark(root)
	return root
}

func (cf *connFlags) fromEnv(getenv func(string) string) error {
	cf.getenv = getenv
	if cf.configFile == "" && cf.url == "" {
		cf.configFile = getenv("EVENTBUS_CONFIG")
	}
	if cf.configFile != "" {
		if cf.url != "" {
			return usagef("--config and --url exclude each other")
		}
		return nil
	}
	for _, v := range []struct {
		dst *string
		env string
	}{
		{&cf.url, "NATS_URL"}, {&cf.user, "NATS_USER"}, {&cf.password, "NATS_PASSWORD"},
		{&cf.token, "NATS_TOKEN"}, {&cf.creds, "NATS_CREDS"},
	} {
		if *v.dst == "" {
			*v.dst = getenv(v.env)
		}
	}
	if cf.url == "" {
		cf.url = defaultURL
	}
	if cf.connectTimeout <= 0 {
		return usagef("--connect-timeout must be positive")
	}
	return nil
}

func (cf *connFlags) config() *natsbus.Config {
	cfg := &natsbus.Config{
		Name:            "eventbus-cli",
		User:            cf.user,
		Password:        cf.password,
		Token:           cf.token,
		CredentialsFile: cf.creds,
		ConnectTimeout:  cf.connectTimeout,
		Options: natsbus.Options{
			StreamPrefix:  cf.streamPrefix,
			SubjectPrefix: cf.subjectPrefix,
		},
	}
	for _, u := range strings.Split(cf.url, ",") {
		u = strings.TrimSpace(u)
		if u != "" && !strings.Contains(u, "://") {
			u = "nats://" + u
		}
		if u != "" {
			cfg.Servers = append(cfg.Servers, u)
		}
	}
	if cf.tlsCA != "" || cf.tlsCert != "" || cf.tlsKey != "" {
		cfg.TLS = &natsbus.TLSConfig{CAFile: cf.tlsCA, CertFile: cf.tlsCert, KeyFile: cf.tlsKey}
	}
	return cfg
}

// servers lists the configured URLs without their user information, the
// only form in which the tool shows them.
func (cf *connFlags) servers() string {
	if cf.configFile != "" {
		return "the backends of " + cf.configFile
	}
	var out []string
	for _, s := range cf.config().Servers {
		out = append(out, driver.RedactURL(s))
	}
	return strings.Join(out, ",")
}

// openBus starts a bus, on the backends of the configuration file or on the
// NATS servers of the connection flags, after setup registered its
// handlers. Reaching the backends is retried until --connect-timeout, so
// that a client started together with its server waits for it. The bus
// never dead-letters: a message the tool gives back is redelivered to its
// group rather than lost to the dead-letter stream.
func openBus(ctx context.Context, cf *connFlags, source string, setup func(*eventbus.Bus) error) (*eventbus.Bus, error) {
	opts := &eventbus.Options{Source: source, Retry: eventbus.RetryPolicy{MaxAttempts: 1 << 30}, Logger: cf.logger()}
	bus, err := connect(ctx, cf, opts)
	if err != nil {
		return nil, err
	}
	if setup != nil {
		if err := setup(bus); err != nil {
			_ = bus.Close(context.WithoutCancel(ctx))
			return nil, err
		}
	}
	// Starting also creates or updates the JetStream streams, which may
	// take a little longer than reaching the server.
	sctx, cancel := context.WithTimeout(ctx, cf.connectTimeout+5*time.Second)
	defer cancel()
	if err := bus.Start(sctx); err != nil {
		_ = bus.Close(context.WithoutCancel(ctx))
		return nil, err
	}
	return bus, nil
}

// connect opens the backends, trying again until --connect-timeout passed
// when they cannot be reached: a mistake (bad file, bad credentials) fails
// at once.
func connect(ctx context.Context, cf *connFlags, opts *eventbus.Options) (*eventbus.Bus, error) {
	deadline := time.Now().Add(cf.connectTimeout)
	pause := 50 * time.Millisecond
	waiting := false
	for {
		left := time.Until(deadline)
		actx, cancel := context.WithTimeout(ctx, max(left, 0)+5*time.Second)
		var bus *eventbus.Bus
		var err error
		if cf.configFile != "" {
			bus, err = configuredBus(actx, cf, opts)
		} else {
			bus, err = natsBus(actx, cf, opts, left)
		}
		cancel()
		switch {
		case err == nil:
			if waiting {
				fmt.Fprintf(cf.stderr, "connected to %s\n", cf.servers())
			}
			return bus, nil
		case ctx.Err() != nil:
			return nil, ctx.Err()
		case !retryable(err):
			return nil, err
		case time.Until(deadline) <= pause:
			return nil, &exitError{exitUnavailable, fmt.Errorf("cannot connect to %s within %s: %w; "+
				"is the server running? start one with \"eventbus server\", check --url or $NATS_URL, or wait longer with --connect-timeout",
				cf.servers(), cf.connectTimeout, err)}
		}
		if !waiting {
			waiting = true
			fmt.Fprintf(cf.stderr, "waiting for %s (up to %s)...\n", cf.servers(), cf.connectTimeout)
		}
		t := time.NewTimer(pause)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil, ctx.Err()
		case <-t.C:
		}
		pause = min(2*pause, 500*time.Millisecond)
	}
}

// retryable tells a backend that could not be reached yet from a mistake
// that waiting does not mend.
func retryable(err error) bool {
	var ue *usageError
	var ce *eventbus.ConfigError
	switch {
	case errors.As(err, &ue), errors.As(err, &ce),
		errors.Is(err, eventbus.ErrInvalidName),
		errors.Is(err, nats.ErrAuthorization), errors.Is(err, nats.ErrAuthExpired),
		errors.Is(err, nats.ErrAuthRevoked), errors.Is(err, nats.ErrPermissionViolation):
		return false
	}
	return true
}

// natsBus connects to the servers of the flags, giving the first contact at
// most left.
func natsBus(ctx context.Context, cf *connFlags, opts *eventbus.Options, left time.Duration) (*eventbus.Bus, error) {
	cfg := cf.config()
	cfg.Logger = opts.Logger
	if left > 0 && left < cfg.ConnectTimeout {
		cfg.ConnectTimeout = left
	}
	if err := cfg.Validate(); err != nil {
		return nil, &usageError{err}
	}
	d, err := natsbus.Open(ctx, cfg)
	if err != nil {
		return nil, err
	}
	bus := eventbus.New(opts)
	if err := bus.Register("nats", d); err != nil {
		_ = d.Close(context.WithoutCancel(ctx))
		return nil, err
	}
	return bus, nil
}

// configuredBus opens the backends of the configuration file, with the
// tool's source and retry policy. A file without backends means the
// embedded server in its data_dir.
func configuredBus(ctx context.Context, cf *connFlags, opts *eventbus.Options) (*eventbus.Bus, error) {
	lookup := func(k string) (string, bool) { v := cf.getenv(k); return v, v != "" }
	c, err := config.Load(cf.configFile, &config.Options{LookupEnv: lookup})
	if err != nil {
		return nil, &usageError{err}
	}
	c.Source, c.Retry = opts.Source, opts.Retry
	return c.NewBus(ctx, opts)
}

// closeBus closes bus even when ctx was cancelled by an interrupt, within a
// bound, and reports the first of err and Close's error.
func closeBus(ctx context.Context, bus *eventbus.Bus, err error) error {
	cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	if cerr := bus.Close(cctx); cerr != nil && err == nil {
		return cerr
	}
	return err
}

// readPayload returns the JSON payload from args[i] or, when it is absent or
// "-", from stdin. It must be valid JSON.
func readPayload(args []string, i int, stdin io.Reader) ([]byte, error) {
	var data []byte
	if i < len(args) && args[i] != "-" {
		data = []byte(args[i])
	} else {
		b, err := io.ReadAll(io.LimitReader(stdin, maxInput+1))
		if err != nil {
			return nil, fmt.Errorf("read standard input: %w", err)
		}
		if len(b) > maxInput {
			return nil, usagef("payload on standard input exceeds %d bytes", maxInput)
		}
		data = b
	}
	data = bytes.TrimSpace(data)
	if len(data) == 0 {
		return nil, usagef("no payload: give JSON as an argument or on standard input")
	}
	if !json.Valid(data) {
		var v any
		err := json.Unmarshal(data, &v)
		return nil, usagef("payload is not valid JSON: %v", err)
	}
	return data, nil
}

// newMessage builds a JSON message of msgType carrying data.
func newMessage(msgType string, data []byte) *eventbus.Message {
	return &eventbus.Message{Type: msgType, DataContentType: "application/json", Data: data}
}
