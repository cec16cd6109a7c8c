package eventbus_test

import (
	"context"
	"errors"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/marty-msf/eventbus"
	"github.com/marty-msf/eventbus/driver"
	"github.com/marty-msf/eventbus/internal/testenv"
	"github.com/marty-msf/eventbus/membus"
	"github.com/marty-msf/eventbus/natsbus"
)

// packagePrefix finds the "<package>: " prefixes of the project's packages
// in an error message.
var packagePrefix = regexp.MustCompile(`\b(eventbus|membus|natsbus|kafkabus|rabbitbus|redisbus|awsbus|outbox|saga|middleware|telemetry|driver|config): `)

// checkSaidOnce fails when msg names a package prefix more than once, or an
// error of the root package does not start with its prefix.
func checkSaidOnce(t *testing.T, msg string) {
	t.Helper()
	if !strings.HasPrefix(msg, "eventbus: ") {
		t.Errorf("%q does not start with \"eventbus: \"", msg)
	}
	seen := map[string]int{}
	for _, m := range packagePrefix.FindAllStringSubmatch(msg, -1) {
		seen[m[1]]++
	}
	for pkg, n := range seen {
		if n > 1 {
			t.Errorf("%q says %q %d times", msg, pkg+": ", n)
		}
	}
}

// errorCase provokes one failure through the public API. is lists the
// sentinels the error must match, as lists pointers to the typed errors it
// must unwrap to; have is a part of the message that says what failed.
type errorCase struct {
	name string
	run  func(t *testing.T) error
	is   []error
	as   []any
	have string
}

// memBus returns a started bus over a connection to a fresh membus
// (messages up to maxSize bytes), closed at the end of the test, and the
// connection.
func memBus(t *testing.T, maxSize int, opts *eventbus.Options) (*eventbus.Bus, driver.Driver) {
	t.Helper()
	broker := membus.New(&membus.Options{MaxMessageSize: maxSize})
	conn := broker.Connect()
	bus := eventbus.New(opts)
	must(t, bus.Register("mem", conn))
	must(t, bus.Start(ctxT(t)))
	t.Cleanup(func() {
		_ = bus.Close(context.Background())
		_ = broker.Close(context.Background())
	})
	return bus, conn
}

// natsBus returns a started bus over the test NATS server, closed at the
// end of the test.
func natsBus(t *testing.T) *eventbus.Bus {
	t.Helper()
	d, err := natsbus.Open(ctxT(t), &natsbus.Config{Servers: []string{testenv.NATSURL(t)}})
	if err != nil {
		t.Fatal(err)
	}
	bus := eventbus.New(nil)
	must(t, bus.Register("nats", d))
	must(t, bus.Start(ctxT(t)))
	t.Cleanup(func() { _ = bus.Close(context.Background()) })
	return bus
}

func plain(typ string) *eventbus.Message {
	return &eventbus.Message{Type: typ, Data: []byte(`{}`), DataContentType: "application/json"}
}

// Every error names each package once, however many layers of the bus
// added context, and still matches its sentinels and typed errors.
func TestErrorsSayEachPrefixOnce(t *testing.T) {
	var (
		tooLarge *driver.TooLargeError
		filter   *eventbus.FilterError
		config   *eventbus.ConfigError
		remote   *eventbus.RemoteError
		schema   *eventbus.SchemaError
		decode   *eventbus.DecodeError
	)
	cases := []errorCase{
		{name: "publish an event with an invalid type", is: []error{eventbus.ErrInvalidName}, have: `publish event: message type "order..created": invalid name`,
			run: func(t *testing.T) error {
				bus, _ := memBus(t, 0, nil)
				return bus.PublishEvent(ctxT(t), plain("order..created"))
			}},
		{name: "publish a nil message", is: []error{eventbus.ErrMalformed}, have: "publish event: malformed message: nil message",
			run: func(t *testing.T) error {
				bus, _ := memBus(t, 0, nil)
				return bus.PublishEvent(ctxT(t), nil)
			}},
		{name: "send a command to an invalid service", is: []error{eventbus.ErrInvalidName}, have: `send command: service "bil.ling": invalid name`,
			run: func(t *testing.T) error {
				bus, _ := memBus(t, 0, nil)
				return bus.SendCommand(ctxT(t), "bil.ling", plain("charge"))
			}},
		{name: "broadcast an invalid type", is: []error{eventbus.ErrInvalidName}, have: "broadcast: message type",
			run: func(t *testing.T) error {
				bus, _ := memBus(t, 0, nil)
				return bus.Broadcast(ctxT(t), plain("a b"))
			}},
		{name: "publish to an invalid stream", is: []error{eventbus.ErrInvalidName}, have: `publish stream: stream "a b": invalid name`,
			run: func(t *testing.T) error {
				bus, _ := memBus(t, 0, nil)
				return bus.PublishStream(ctxT(t), "a b", plain("x"))
			}},
		{name: "publish to a closed bus", is: []error{eventbus.ErrClosed}, have: "publish events.order.created",
			run: func(t *testing.T) error {
				bus, _ := memBus(t, 0, nil)
				must(t, bus.Close(ctxT(t)))
				return bus.PublishEvent(ctxT(t), plain("order.created"))
			}},
		{name: "publish on a closed backend", is: []error{eventbus.ErrClosed}, have: "publish events.order.created via mem: membus: ",
			run: func(t *testing.T) error {
				bus, conn := memBus(t, 0, nil)
				must(t, conn.Close(ctxT(t)))
				return bus.PublishEvent(ctxT(t), plain("order.created"))
			}},
		{name: "publish an oversize event", is: []error{eventbus.ErrTooLarge}, as: []any{&tooLarge}, have: "publish events.big via mem",
			run: func(t *testing.T) error {
				bus, _ := memBus(t, 256, nil)
				m := plain("big")
				m.Data = []byte(`"` + strings.Repeat("x", 512) + `"`)
				return bus.PublishEvent(ctxT(t), m)
			}},
		{name: "publish an event with an invalid extension", is: []error{eventbus.ErrInvalid}, have: "publish events.order.created",
			run: func(t *testing.T) error {
				bus, _ := memBus(t, 0, nil)
				m := plain("order.created")
				m.Extensions = map[string]string{"Bad-Name": "x"}
				return bus.PublishEvent(ctxT(t), m)
			}},
		{name: "publish a stream that no backend serves", is: []error{eventbus.ErrNoBackend}, have: "publish streams.clicks: no backend",
			run: func(t *testing.T) error {
				bus := eventbus.New(nil)
				must(t, bus.Register("mem", eventsOnly{membus.New(nil).Connect()}))
				must(t, bus.Start(ctxT(t)))
				t.Cleanup(func() { _ = bus.Close(context.Background()) })
				return bus.PublishStream(ctxT(t), "clicks", plain("click"))
			}},
		{name: "publish before Start through a schema", is: []error{eventbus.ErrNotStarted}, have: "publish events.order.created: bus not started",
			run: func(t *testing.T) error {
				bus := eventbus.New(&eventbus.Options{Schemas: eventbus.NewSchemas(nil)})
				must(t, bus.Register("mem", membus.New(nil).Connect()))
				t.Cleanup(func() { _ = bus.Close(context.Background()) })
				return bus.PublishEvent(ctxT(t), plain("order.created"))
			}},
		{name: "publish data that violates its schema", is: []error{eventbus.ErrSchema}, as: []any{&schema}, have: "publish events.order.created: order.created data violates schema",
			run: func(t *testing.T) error {
				schemas := eventbus.NewSchemas(nil)
				must(t, schemas.Add("urn:order", []byte(`{"type":"object","required":["id"]}`)))
				must(t, schemas.Bind("order.created", "urn:order"))
				bus, _ := memBus(t, 0, &eventbus.Options{Schemas: schemas})
				return bus.PublishEvent(ctxT(t), plain("order.created"))
			}},
		{name: "publish through a failing route pipeline", have: "publish events.order.created: pipeline step 1: refused",
			run: func(t *testing.T) error {
				refuse := eventbus.StepFunc(func(context.Context, *eventbus.Message) ([]*eventbus.Message, error) {
					return nil, errors.New("refused")
				})
				bus, _ := memBus(t, 0, &eventbus.Options{Routes: []eventbus.Route{{Backend: "mem", Pipeline: eventbus.NewPipeline(refuse)}}})
				return bus.PublishEvent(ctxT(t), plain("order.created"))
			}},
		{name: "pipelined publish with an invalid type", is: []error{eventbus.ErrInvalidName}, have: "publish event: message type",
			run: func(t *testing.T) error {
				bus, _ := memBus(t, 0, nil)
				p := bus.NewPublisher(nil)
				defer p.Close(ctxT(t))
				return p.PublishEvent(ctxT(t), plain("a..b")).Wait(ctxT(t))
			}},
		{name: "pipelined publish oversize", is: []error{eventbus.ErrTooLarge}, as: []any{&tooLarge}, have: "publish events.big via mem",
			run: func(t *testing.T) error {
				bus, _ := memBus(t, 256, nil)
				p := bus.NewPublisher(nil)
				defer p.Close(ctxT(t))
				m := plain("big")
				m.Data = []byte(`"` + strings.Repeat("x", 512) + `"`)
				return p.PublishEvent(ctxT(t), m).Wait(ctxT(t))
			}},
		{name: "pipelined publish after Close", is: []error{eventbus.ErrClosed}, have: "publish events.order.created: closed",
			run: func(t *testing.T) error {
				bus, _ := memBus(t, 0, nil)
				p := bus.NewPublisher(nil)
				must(t, p.Close(ctxT(t)))
				return p.PublishEvent(ctxT(t), plain("order.created")).Wait(ctxT(t))
			}},
		{name: "pipelined publishes counted by Flush", is: []error{eventbus.ErrTooLarge}, as: []any{&tooLarge}, have: "flush: 2 publishes failed, the first: publish events.big via mem: message too large",
			run: func(t *testing.T) error {
				bus, _ := memBus(t, 256, nil)
				p := bus.NewPublisher(nil)
				defer p.Close(ctxT(t))
				for range 2 {
					m := plain("big")
					m.Data = []byte(`"` + strings.Repeat("x", 512) + `"`)
					p.PublishEvent(ctxT(t), m)
				}
				return p.Flush(ctxT(t))
			}},
		{name: "query that times out", is: []error{eventbus.ErrTimeout, context.DeadlineExceeded}, have: "query queries.inventory.stock.get via mem: timeout",
			run: func(t *testing.T) error {
				bus, _ := memBus(t, 0, nil)
				release := make(chan struct{})
				t.Cleanup(func() { close(release) }) // before the bus closes
				must(t, errOnly(bus.HandleQuery(ctxT(t), "inventory", "stock.get", eventbus.QueryHandlerFunc(
					func(context.Context, *eventbus.Message) (*eventbus.Message, error) {
						<-release
						return nil, errors.New("too late")
					}))))
				ctx, cancel := context.WithTimeout(ctxT(t), 100*time.Millisecond)
				defer cancel()
				_, err := bus.Query(ctx, "inventory", plain("stock.get"))
				return err
			}},
		{name: "query that nobody handles", is: []error{eventbus.ErrNoResponders}, have: "query queries.inventory.stock.get via mem: membus: ",
			run: func(t *testing.T) error {
				bus, _ := memBus(t, 0, nil)
				_, err := bus.Query(ctxT(t), "inventory", plain("stock.get"))
				return err
			}},
		{name: "query whose handler fails with a bus error", as: []any{&remote}, have: `query inventory.stock.get failed remotely: decode: decode "application/json" data`,
			run: func(t *testing.T) error {
				bus, _ := memBus(t, 0, nil)
				must(t, errOnly(bus.HandleQuery(ctxT(t), "inventory", "stock.get", eventbus.TypedQuery(
					func(_ context.Context, _ *eventbus.Message, req struct{ SKU int }) (int, error) { return 0, nil }))))
				m := plain("stock.get")
				m.Data = []byte(`{"SKU":"not a number"}`)
				_, err := bus.Query(ctxT(t), "inventory", m)
				return err
			}},
		{name: "query whose handler returns an error of its bus", as: []any{&remote}, have: `query inventory.stock.get failed remotely: publish event: message type "a..b": invalid name`,
			run: func(t *testing.T) error {
				bus, _ := memBus(t, 0, nil)
				must(t, errOnly(bus.HandleQuery(ctxT(t), "inventory", "stock.get", eventbus.QueryHandlerFunc(
					func(ctx context.Context, _ *eventbus.Message) (*eventbus.Message, error) {
						return nil, bus.PublishEvent(ctx, plain("a..b"))
					}))))
				_, err := bus.Query(ctxT(t), "inventory", plain("stock.get"))
				var re *eventbus.RemoteError
				if errors.As(err, &re) && strings.Contains(re.Message, "eventbus: ") {
					t.Errorf("the remote message %q repeats the prefix", re.Message)
				}
				return err
			}},
		{name: "publish an oversize event on NATS", is: []error{eventbus.ErrTooLarge}, as: []any{&tooLarge}, have: "publish events.big via nats: natsbus: publish to",
			run: func(t *testing.T) error {
				bus := natsBus(t)
				m := plain("big")
				m.Data = []byte(`"` + strings.Repeat("x", 2<<20) + `"`)
				return bus.PublishEvent(ctxT(t), m)
			}},
		{name: "query that nobody handles on NATS", is: []error{eventbus.ErrNoResponders}, have: "via nats: natsbus: request to",
			run: func(t *testing.T) error {
				bus := natsBus(t)
				_, err := bus.Query(ctxT(t), "nobody"+strconv.FormatInt(time.Now().UnixNano(), 36), plain("stock.get"))
				return err
			}},
		{name: "subscribe with a malformed filter", is: []error{eventbus.ErrInvalidFilter}, as: []any{&filter}, have: "register events.order.created: invalid filter",
			run: func(t *testing.T) error {
				bus, _ := memBus(t, 0, nil)
				_, err := bus.SubscribeEvents(ctxT(t), []string{"order.created"}, "g", eventbus.HandlerFunc(
					func(context.Context, *eventbus.Message) error { return nil }), eventbus.WithFilter(eventbus.SQL("type =")))
				return err
			}},
		{name: "subscribe with an invalid group", is: []error{eventbus.ErrInvalidName}, have: `subscribe events: group "g.1": invalid name`,
			run: func(t *testing.T) error {
				bus, _ := memBus(t, 0, nil)
				_, err := bus.SubscribeEvents(ctxT(t), []string{"order.created"}, "g.1", eventbus.HandlerFunc(
					func(context.Context, *eventbus.Message) error { return nil }))
				return err
			}},
		{name: "subscribe a nil handler", is: []error{eventbus.ErrNilHandler}, have: "register events.order.created: nil handler",
			run: func(t *testing.T) error {
				bus, _ := memBus(t, 0, nil)
				_, err := bus.SubscribeEvents(ctxT(t), []string{"order.created"}, "g", nil)
				return err
			}},
		{name: "subscribe twice", is: []error{eventbus.ErrDuplicateHandler}, have: "duplicate handler",
			run: func(t *testing.T) error {
				bus, _ := memBus(t, 0, nil)
				h := eventbus.HandlerFunc(func(context.Context, *eventbus.Message) error { return nil })
				must(t, errOnly(bus.SubscribeEvents(ctxT(t), []string{"order.created"}, "g", h)))
				_, err := bus.SubscribeEvents(ctxT(t), []string{"order.created"}, "g", h)
				return err
			}},
		{name: "subscribe on a closed backend", is: []error{eventbus.ErrClosed}, have: "subscribe events.order.created on mem: membus: ",
			run: func(t *testing.T) error {
				bus, conn := memBus(t, 0, nil)
				must(t, conn.Close(ctxT(t)))
				_, err := bus.SubscribeEvents(ctxT(t), []string{"order.created"}, "g", eventbus.HandlerFunc(
					func(context.Context, *eventbus.Message) error { return nil }))
				return err
			}},
		{name: "Start with bad routes", is: []error{eventbus.ErrUnknownBackend, eventbus.ErrInvalidFilter}, as: []any{&config, &filter}, have: "invalid configuration (2 problems)",
			run: func(t *testing.T) error {
				bus := eventbus.New(&eventbus.Options{Routes: []eventbus.Route{
					{Pattern: eventbus.EventPattern, Backend: "nope"},
					{Pattern: eventbus.EventPattern, Backend: "mem", Filter: eventbus.SQL("type =")},
				}})
				must(t, bus.Register("mem", membus.New(nil).Connect()))
				t.Cleanup(func() { _ = bus.Close(context.Background()) })
				return bus.Start(ctxT(t))
			}},
		{name: "Start with a handler the backend cannot serve", is: []error{eventbus.ErrCapability}, as: []any{&config}, have: `group "g": missing capability`,
			run: func(t *testing.T) error {
				bus := eventbus.New(nil)
				must(t, bus.Register("mem", noGroups{membus.New(nil).Connect()}))
				t.Cleanup(func() { _ = bus.Close(context.Background()) })
				must(t, errOnly(bus.SubscribeEvents(ctxT(t), []string{"order.created"}, "g", eventbus.HandlerFunc(
					func(context.Context, *eventbus.Message) error { return nil }))))
				return bus.Start(ctxT(t))
			}},
		{name: "Start twice", is: []error{eventbus.ErrStarted}, have: "start: bus already started",
			run: func(t *testing.T) error {
				bus, _ := memBus(t, 0, nil)
				return bus.Start(ctxT(t))
			}},
		{name: "register a backend twice", have: `register backend "mem": already registered`,
			run: func(t *testing.T) error {
				bus := eventbus.New(nil)
				must(t, bus.Register("mem", membus.New(nil).Connect()))
				t.Cleanup(func() { _ = bus.Close(context.Background()) })
				return bus.Register("mem", membus.New(nil).Connect())
			}},
		{name: "bridge a query", is: []error{eventbus.ErrInvalidName}, have: "bridge",
			run: func(t *testing.T) error {
				bus, _ := memBus(t, 0, nil)
				_, err := bus.Bridge(ctxT(t), eventbus.Bridge{From: "mem", To: "mem", Pattern: eventbus.QueryPattern, Name: "a.b"})
				return err
			}},
		{name: "declare an event group with an invalid type", is: []error{eventbus.ErrInvalidName}, have: `declare event group: event type "a..b": invalid name`,
			run: func(t *testing.T) error {
				bus, _ := memBus(t, 0, nil)
				return bus.DeclareEventGroup(ctxT(t), []string{"a..b"}, "g")
			}},
		{name: "get an unknown dead letter", is: []error{eventbus.ErrDeadLetterNotFound}, have: `dead letter "nope": dead letter not found`,
			run: func(t *testing.T) error {
				bus, _ := memBus(t, 0, nil)
				_, err := bus.DeadLetters().Get(ctxT(t), "nope")
				return err
			}},
		{name: "replay to an invalid destination", is: []error{eventbus.ErrInvalidName}, have: "replay dead letters: invalid name: destination",
			run: func(t *testing.T) error {
				bus, _ := memBus(t, 0, nil)
				_, err := bus.DeadLetters().Replay(ctxT(t), eventbus.DeadLetterFilter{}, &eventbus.ReplayOptions{To: "events"})
				return err
			}},
		{name: "compile a malformed filter", is: []error{eventbus.ErrInvalidFilter}, as: []any{&filter}, have: "invalid filter",
			run: func(*testing.T) error {
				_, err := eventbus.CompileFilter(eventbus.SQL("type ="))
				return err
			}},
		{name: "validate data against its schema", is: []error{eventbus.ErrSchema}, as: []any{&schema}, have: "order.created data violates schema urn:order",
			run: func(t *testing.T) error {
				schemas := eventbus.NewSchemas(nil)
				must(t, schemas.Add("urn:order", []byte(`{"type":"object","required":["id"]}`)))
				must(t, schemas.Bind("order.created", "urn:order"))
				return schemas.Validate(plain("order.created"))
			}},
		{name: "bind an unknown schema", is: []error{eventbus.ErrSchema}, as: []any{&schema}, have: "order.created schema urn:nope",
			run: func(*testing.T) error {
				return eventbus.NewSchemas(nil).Bind("order.created", "urn:nope")
			}},
		{name: "apply a failing pipeline", have: "pipeline step 1: refused",
			run: func(t *testing.T) error {
				_, err := eventbus.NewPipeline(eventbus.StepFunc(func(context.Context, *eventbus.Message) ([]*eventbus.Message, error) {
					return nil, errors.New("refused")
				})).Apply(ctxT(t), plain("order.created"))
				return err
			}},
		{name: "decode data of the wrong shape", as: []any{&decode}, have: `decode "application/json" data into *int`,
			run: func(t *testing.T) error {
				bus, _ := memBus(t, 0, nil)
				var n int
				return bus.Decode(plain("order.created"), &n)
			}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			err := c.run(t)
			if err == nil {
				t.Fatal("no error")
			}
			msg := err.Error()
			t.Log(msg)
			checkSaidOnce(t, msg)
			if !strings.Contains(msg, c.have) {
				t.Errorf("%q does not say %q", msg, c.have)
			}
			for _, target := range c.is {
				if !errors.Is(err, target) {
					t.Errorf("%q does not match %v", msg, target)
				}
			}
			for _, target := range c.as {
				if !errors.As(err, target) {
					t.Errorf("%q is not a %T", msg, target)
				}
			}
		})
	}
}

// eventsOnly is a driver that serves events alone.
type eventsOnly struct{ driver.Driver }

func (d eventsOnly) Capabilities() driver.Capabilities {
	c := d.Driver.Capabilities()
	c.Patterns = []driver.Pattern{driver.Event}
	return c
}

// noGroups is a driver without consumer groups.
type noGroups struct{ driver.Driver }

func (d noGroups) Capabilities() driver.Capabilities {
	c := d.Driver.Capabilities()
	c.ConsumerGroups = false
	return c
}
