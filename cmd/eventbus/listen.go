package main

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/spf13/cobra"

	"github.com/marty-msf/eventbus"
	"github.com/marty-msf/eventbus/driver"
)

// errEnough gives back a message received after the last one asked for, so
// that it is redelivered (to another member of the group) instead of being
// acknowledged without being printed.
var errEnough = errors.New("listen: enough messages printed")

func newListenCmd(cf *connFlags) *cobra.Command {
	var group string
	var broadcast, fromStart bool
	var count int
	var format string
	cmd := &cobra.Command{
		Use:     "listen TYPE...",
		Aliases: []string{"tail"},
		Short:   "Print received events or broadcasts as they arrive",
		Long: "Print every event (or broadcast, with --broadcast) of the given types as it\n" +
			"arrives, until --count messages were printed or the command is interrupted:\n" +
			"--format json prints one JSON line each in the CloudEvents JSON format, --format\n" +
			"text one readable line (time, type, id, data); the default is text on a terminal\n" +
			"and JSON lines otherwise. A lost connection and each reconnection are reported\n" +
			"on standard error while it keeps waiting.",
		Example: "  eventbus listen order.placed order.shipped\n" +
			"  eventbus tail order.placed --group audit --from-start --format json",
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) == 0 {
				return usagef("listen: expected at least one TYPE")
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, types []string) error {
			switch {
			case count < 0:
				return usagef("--count must not be negative")
			case broadcast && group != "":
				return usagef("--group does not apply to broadcasts: every instance receives each one")
			case fromStart && group == "":
				return usagef("--from-start needs --group")
			}
			var show func(*eventbus.Message) ([]byte, error)
			switch format {
			case "json":
				show = envelope
			case "text":
				show = textLine
			case "":
				show = envelope
				if isTerminal(cmd.OutOrStdout()) {
					show = textLine
				}
			default:
				return usagef("--format %q: want json or text", format)
			}
			return listen(cmd.Context(), cf, types, group, broadcast, fromStart, count, show, cmd.OutOrStdout(), cmd.ErrOrStderr())
		},
	}
	f := cmd.Flags()
	f.StringVar(&group, "group", "", "join this consumer group (durable) instead of seeing every event")
	f.BoolVar(&broadcast, "broadcast", false, "listen to broadcasts instead of events")
	f.BoolVar(&fromStart, "from-start", false, "a new group starts with every retained message")
	f.IntVar(&count, "count", 0, "stop after this many messages (0: until interrupted)")
	f.StringVar(&format, "format", "", "json (CloudEvents JSON lines) or text (default: text on a terminal, else json)")
	return cmd
}

func listen(ctx context.Context, cf *connFlags, types []string, group string, broadcast, fromStart bool, count int,
	show func(*eventbus.Message) ([]byte, error), stdout, stderr io.Writer) error {
	enough := make(chan struct{})
	var (
		mu      sync.Mutex
		printed int
		werr    error
	)
	h := eventbus.HandlerFunc(func(_ context.Context, m *eventbus.Message) error {
		mu.Lock()
		defer mu.Unlock()
		if werr != nil || (count > 0 && printed >= count) {
			return errEnough
		}
		line, err := show(m)
		if err == nil {
			_, err = fmt.Fprintf(stdout, "%s\n", line)
		}
		if err != nil {
			werr = fmt.Errorf("print message %s: %w", m.ID, err)
			close(enough)
			return errEnough
		}
		printed++
		if printed == count {
			close(enough)
		}
		return nil
	})
	var opts []eventbus.SubscribeOption
	if fromStart {
		opts = append(opts, eventbus.WithStartFirst())
	}
	bus, err := openBus(ctx, cf, "eventbus-cli", func(b *eventbus.Bus) error {
		var err error
		if broadcast {
			_, err = b.SubscribeBroadcast(ctx, types, h, opts...)
		} else {
			_, err = b.SubscribeEvents(ctx, types, group, h, opts...)
		}
		return err
	})
	if err != nil {
		return err
	}
	what := "events"
	if broadcast {
		what = "broadcasts"
	}
	fmt.Fprintf(stderr, "listening to %s of type %s on %s\n", what, strings.Join(types, ", "), cf.servers())
	select {
	case <-ctx.Done():
	case <-enough:
	}
	err = closeBus(ctx, bus, nil)
	mu.Lock()
	defer mu.Unlock()
	if werr != nil {
		return werr
	}
	return err
}

// envelope is m in the CloudEvents JSON event format, its attributes in the
// order of the specification (specversion, id, source, type...) for the
// reader's sake: the payload is "data" when it is JSON or text, else
// "data_base64".
func envelope(m *eventbus.Message) ([]byte, error) {
	var b bytes.Buffer
	var err error
	add := func(name string, v any) {
		if err != nil {
			return
		}
		sep := byte(',')
		if b.Len() == 0 {
			sep = '{'
		}
		b.WriteByte(sep)
		k, _ := json.Marshal(name)
		b.Write(k)
		b.WriteByte(':')
		var val []byte
		if val, err = json.Marshal(v); err == nil {
			b.Write(val)
		}
	}
	m.EachAttribute(func(name, value string) { add(name, value) })
	if m.Key != "" {
		add(driver.ExtPartitionKey, m.Key)
	}
	switch {
	case len(m.Data) == 0:
	case isJSON(m.DataContentType) && json.Valid(m.Data):
		add("data", json.RawMessage(m.Data))
	case utf8.Valid(m.Data):
		add("data", string(m.Data))
	default:
		add("data_base64", base64.StdEncoding.EncodeToString(m.Data))
	}
	b.WriteByte('}')
	return b.Bytes(), err
}

// textLine is m in one line for a person: the time it was sent, its type,
// id, source, key and subject when set, and its data.
func textLine(m *eventbus.Message) ([]byte, error) {
	var b bytes.Buffer
	t := m.Time
	if t.IsZero() {
		t = time.Now()
	}
	fmt.Fprintf(&b, "%s %s id=%s source=%s", t.Local().Format("15:04:05.000"), m.Type, m.ID, m.Source)
	if m.Key != "" {
		fmt.Fprintf(&b, " key=%s", m.Key)
	}
	if m.Subject != "" {
		fmt.Fprintf(&b, " subject=%s", m.Subject)
	}
	switch {
	case len(m.Data) == 0:
	case utf8.Valid(m.Data):
		b.WriteByte(' ')
		b.Write(bytes.Join(bytes.Fields(m.Data), []byte(" ")))
	default:
		fmt.Fprintf(&b, " (%d bytes of %s)", len(m.Data), m.DataContentType)
	}
	return b.Bytes(), nil
}

func isJSON(contentType string) bool {
	if contentType == "" {
		// CloudEvents' JSON format presumes JSON when no type is given.
		return true
	}
	mt, _, err := mime.ParseMediaType(contentType)
	if err != nil {
		return false
	}
	return mt == "application/json" || mt == "text/json" || strings.HasSuffix(mt, "+json")
}
