package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/spf13/cobra"

	"github.com/marty-msf/eventbus"
)

// publishTarget says where publish sends its messages.
type publishTarget struct {
	service, stream string
	broadcast       bool
}

func (pt publishTarget) send(ctx context.Context, bus *eventbus.Bus, m *eventbus.Message) error {
	switch {
	case pt.service != "":
		return bus.SendCommand(ctx, pt.service, m)
	case pt.broadcast:
		return bus.Broadcast(ctx, m)
	case pt.stream != "":
		return bus.PublishStream(ctx, pt.stream, m)
	}
	return bus.PublishEvent(ctx, m)
}

// publish hands m to the pipelined Publisher p, to where pt says.
func (pt publishTarget) publish(ctx context.Context, p *eventbus.Publisher, m *eventbus.Message) *eventbus.PublishResult {
	switch {
	case pt.service != "":
		return p.SendCommand(ctx, pt.service, m)
	case pt.broadcast:
		return p.Broadcast(ctx, m)
	case pt.stream != "":
		return p.PublishStream(ctx, pt.stream, m)
	}
	return p.PublishEvent(ctx, m)
}

func newPublishCmd(cf *connFlags, stdin io.Reader) *cobra.Command {
	var pt publishTarget
	var key, subject, source, file string
	var jsonLines bool
	var window int
	cmd := &cobra.Command{
		Use:   "publish TYPE [JSON|-]",
		Short: "Publish an event, command, broadcast or stream message; or many, from JSON lines",
		Long: "Publish a message of type TYPE: an event by default, a command to SERVICE with\n" +
			"--command, a broadcast with --broadcast, or a stream message with --stream.\n" +
			"The payload is the JSON argument, the file of --file, or standard input when\n" +
			"both are absent or the argument is \"-\". Prints the message id once the server\n" +
			"confirmed it.\n\n" +
			"With --lines, every line of the input is a payload of its own, handed to the\n" +
			"pipelined Publisher: up to --window messages await their confirmation at once\n" +
			"(1 keeps the input's order), progress is shown on standard error, and the ids\n" +
			"are printed in the input's order. A line whose publish failed prints no id; the\n" +
			"exit status is then 1.",
		Example: "  eventbus publish order.placed '{\"order_id\":\"o-1\"}'\n" +
			"  eventbus publish inventory.reserve '{\"sku\":\"s-1\"}' --command inventory\n" +
			"  eventbus publish page.viewed --lines --file views.jsonl --stream clicks",
		Args: argsBetween(1, 2),
		RunE: func(cmd *cobra.Command, args []string) error {
			if file != "" && len(args) == 2 && args[1] != "-" {
				return usagef("give the payload as an argument or with --file, not both")
			}
			if window < 1 {
				return usagef("--window must be at least 1")
			}
			in := stdin
			if file != "" {
				f, err := os.Open(file)
				if err != nil {
					return usagef("cannot read --file: %v", err)
				}
				defer f.Close()
				in = f
				args = args[:1]
			}
			template := func(data []byte) *eventbus.Message {
				m := newMessage(args[0], data)
				m.Key, m.Subject = key, subject
				return m
			}
			if jsonLines {
				if len(args) == 2 && args[1] != "-" {
					return usagef("--lines reads its payloads from standard input or --file, not an argument")
				}
				return publishLines(cmd.Context(), cf, source, pt, template, in, window, cmd.OutOrStdout(), cmd.ErrOrStderr())
			}
			data, err := readPayload(args, 1, in)
			if err != nil {
				return err
			}
			m := template(data)
			ctx := cmd.Context()
			bus, err := openBus(ctx, cf, source, nil)
			if err != nil {
				return err
			}
			// The bus's error names the operation and the destination.
			if err = pt.send(ctx, bus, m); err == nil {
				fmt.Fprintln(cmd.OutOrStdout(), m.ID)
			}
			return closeBus(ctx, bus, err)
		},
	}
	f := cmd.Flags()
	f.StringVar(&pt.service, "command", "", "send a command to this service")
	f.BoolVar(&pt.broadcast, "broadcast", false, "broadcast to every running instance")
	f.StringVar(&pt.stream, "stream", "", "append to this stream")
	f.StringVar(&key, "key", "", "partition key: messages with one key keep their order")
	f.StringVar(&subject, "subject", "", "CloudEvents subject attribute")
	f.StringVar(&source, "source", "eventbus-cli", "CloudEvents source attribute")
	f.StringVar(&file, "file", "", "read the payload (or, with --lines, the payloads) from this file")
	f.BoolVar(&jsonLines, "lines", false, "publish one message per line of JSON")
	f.IntVar(&window, "window", 64, "with --lines, how many messages may await their confirmation at once")
	cmd.MarkFlagsMutuallyExclusive("command", "broadcast", "stream")
	return cmd
}

// publishLines publishes one message per non-empty line of in, with up to
// window publishes awaiting confirmation at once. Every line is checked
// before anything is sent, so that a typo on line 900 does not leave 899
// messages published.
func publishLines(ctx context.Context, cf *connFlags, source string, pt publishTarget, template func([]byte) *eventbus.Message,
	in io.Reader, window int, stdout, stderr io.Writer) error {
	var msgs []*eventbus.Message
	sc := bufio.NewScanner(io.LimitReader(in, maxInput+1))
	sc.Buffer(make([]byte, 0, 64<<10), maxInput)
	for n := 1; sc.Scan(); n++ {
		line := bytes.TrimSpace(sc.Bytes())
		if len(line) == 0 {
			continue
		}
		if !json.Valid(line) {
			var v any
			return usagef("line %d is not valid JSON: %v", n, json.Unmarshal(line, &v))
		}
		msgs = append(msgs, template(bytes.Clone(line)))
	}
	if err := sc.Err(); err != nil {
		return usagef("read the JSON lines: %v", err)
	}
	if len(msgs) == 0 {
		return usagef("no payload: --lines found no JSON line to publish")
	}
	bus, err := openBus(ctx, cf, source, nil)
	if err != nil {
		return err
	}
	// The pipelined Publisher: up to window messages await their
	// confirmation at once, sent to the backend in batches.
	bar := newProgress(stderr, len(msgs), "published")
	pub := bus.NewPublisher(&eventbus.PublisherOptions{Window: window, OnResult: func(_ *eventbus.Message, err error) {
		if err == nil {
			bar.add(1)
		}
	}})
	results := make([]*eventbus.PublishResult, len(msgs))
	for i, m := range msgs {
		results[i] = pt.publish(ctx, pub, m)
	}
	// Close waits for every outcome; the results report each failure.
	_ = pub.Close(ctx)
	bar.done()
	errs := make([]error, len(msgs))
	for i, r := range results {
		errs[i] = r.Err()
	}
	failed := 0
	var first error
	for i, m := range msgs {
		if errs[i] != nil {
			if first == nil {
				first = fmt.Errorf("line %d: %w", i+1, errs[i])
			}
			failed++
			continue
		}
		fmt.Fprintln(stdout, m.ID)
	}
	if failed > 0 {
		first = fmt.Errorf("%d of %d messages not published, the first on %w", failed, len(msgs), first)
	}
	return closeBus(ctx, bus, first)
}

// progress shows how far a long operation got on standard error: a bar
// redrawn in place on a terminal, a line every few seconds elsewhere, and a
// summary at the end.
type progress struct {
	w        io.Writer
	tty      bool
	total    int
	verb     string
	began    time.Time
	mu       sync.Mutex
	n        int
	lastDraw time.Time
}

func newProgress(w io.Writer, total int, verb string) *progress {
	return &progress{w: w, tty: isTerminal(w), total: total, verb: verb, began: time.Now(), lastDraw: time.Now()}
}

func (p *progress) add(n int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.n += n
	every := 3 * time.Second
	if p.tty {
		every = 100 * time.Millisecond
	}
	if time.Since(p.lastDraw) >= every {
		p.lastDraw = time.Now()
		p.draw()
	}
}

func (p *progress) draw() {
	const width = 30
	filled := width * p.n / max(p.total, 1)
	line := fmt.Sprintf("[%s%s] %d/%d %s", strings.Repeat("#", filled), strings.Repeat(".", width-filled), p.n, p.total, p.verb)
	if p.tty {
		fmt.Fprintf(p.w, "\r%s", line)
	} else {
		fmt.Fprintln(p.w, line)
	}
}

// done draws the bar a last time and prints the rate.
func (p *progress) done() {
	p.mu.Lock()
	defer p.mu.Unlock()
	took := time.Since(p.began)
	if p.tty {
		p.draw()
		fmt.Fprintln(p.w)
	}
	fmt.Fprintf(p.w, "%s %d of %d in %s (%.0f/s)\n", p.verb, p.n, p.total, took.Round(time.Millisecond), float64(p.n)/max(took.Seconds(), 1e-9))
}

// isTerminal tells whether w is a terminal (a character device).
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}

func argsBetween(min, max int) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		if len(args) < min || len(args) > max {
			return usagef("%s: expected %s", cmd.Name(), cmd.Use[len(cmd.Name())+1:])
		}
		return nil
	}
}
