package eventbus_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/marty-msf/eventbus"
	"github.com/marty-msf/eventbus/driver"
	"github.com/marty-msf/eventbus/membus"
)

// collector records what a handler received, keyed for assertions.
type collector struct {
	mu   sync.Mutex
	msgs []*eventbus.Message
}

func (c *collector) Handle(_ context.Context, m *eventbus.Message) error {
	c.mu.Lock()
	c.msgs = append(c.msgs, m)
	c.mu.Unlock()
	return nil
}

func (c *collector) ids() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make([]string, len(c.msgs))
	for i, m := range c.msgs {
		out[i] = m.ID
	}
	return out
}

// waitUntil polls cond with a generous bound: the machine is shared.
func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func orderMsg(t *testing.T, id, typ string, amount int, ext map[string]string) *eventbus.Message {
	t.Helper()
	m, err := eventbus.NewMessage(typ, map[string]any{"amount": amount, "customer": map[string]any{"tier": "gold", "card": "4111"}})
	must(t, err)
	m.ID = id
	m.Subject = "orders/" + id
	m.Extensions = ext
	return m
}

func TestFilterMatcherDialects(t *testing.T) {
	m := orderMsg(t, "o1", "com.shop.order.created", 250, map[string]string{"region": "eu-west"})
	m.Key = "cust-7"
	cases := []struct {
		f    eventbus.Filter
		want bool
	}{
		{eventbus.Exact("type", "com.shop.order.created"), true},
		{eventbus.Exact("type", "com.shop.order"), false},
		{eventbus.Prefix("type", "com.shop."), true},
		{eventbus.Suffix("type", ".created"), true},
		{eventbus.Suffix("type", ".paid"), false},
		{eventbus.Exact("region", "eu-west"), true},
		{eventbus.Exact("missing", ""), false},
		{eventbus.Exact("partitionkey", "cust-7"), true},
		{eventbus.Exact("specversion", "1.0"), true},
		{eventbus.All(eventbus.Prefix("region", "eu-"), eventbus.Suffix("subject", "/o1")), true},
		{eventbus.All(eventbus.Prefix("region", "eu-"), eventbus.Exact("subject", "x")), false},
		{eventbus.Any(eventbus.Exact("region", "us"), eventbus.Exact("region", "eu-west")), true},
		{eventbus.Not(eventbus.Exact("region", "eu-west")), false},
		{eventbus.SQL("type LIKE 'com.shop.%' AND region = 'eu-west'"), true},
		{eventbus.SQL("INT(DATA('amount')) > 100"), true},
		{eventbus.SQL("INT(DATA('amount')) > 1000"), false},
		{eventbus.SQL("DATA('customer.tier') = 'gold' AND EXISTS region"), true},
		{eventbus.SQL("nosuchattribute = 'x'"), false}, // evaluation error: no match
		{eventbus.SQL("1 + 1"), false},                 // not a boolean
		{eventbus.Filter{}, true},
	}
	for _, c := range cases {
		mt, err := eventbus.CompileFilter(c.f)
		if err != nil {
			t.Fatalf("%s: %v", c.f, err)
		}
		if got := mt.Match(m); got != c.want {
			t.Errorf("%s: match = %v, want %v", c.f, got, c.want)
		}
	}
}

// TestFilterSQLAttributesAndData covers what a CESQL expression reads:
// every attribute by its name (each copied into the evaluated event only
// when the expression names it), and DATA's paths into nested objects and
// arrays, keys with characters that are operators elsewhere, objects as
// compact JSON, and data that is not JSON.
func TestFilterSQLAttributesAndData(t *testing.T) {
	m := &eventbus.Message{
		ID: "d1", Source: "https://shop.example/orders", Type: "order.created", Subject: "orders/d1",
		DataContentType: "application/json", DataSchema: "https://shop.example/schemas/order.json",
		CorrelationID: "corr-1", Key: "cust-1", Time: time.Date(2026, 11, 27, 10, 0, 0, 0, time.UTC),
		Extensions: map[string]string{"region": "eu", "tier": "gold"},
		Data:       []byte(`{"order":{"amount":1500,"items":[{"sku":"a-1"},{"sku":"b-2"}],"tags":{"x":1, "y":[1, 2]}},"we*ird":"w","n":null}`),
	}
	notJSON := *m
	notJSON.Data = []byte("order=1500")
	cases := []struct {
		m    *eventbus.Message
		expr string
		want bool
	}{
		{m, "source = 'https://shop.example/orders' AND subject = 'orders/d1'", true},
		{m, "dataschema = 'https://shop.example/schemas/order.json' AND datacontenttype = 'application/json'", true},
		{m, "correlationid = 'corr-1' AND partitionkey = 'cust-1' AND tier = 'gold'", true},
		{m, "EXISTS causationid", false},
		{m, "time = '2026-11-27T10:00:00Z'", true},
		{m, "TIER = 'gold'", true},
		{m, "region = 'eu' AND 'tier' = 'tier'", true},
		{m, "DATA('order.items.1.sku') = 'b-2'", true},
		{m, "DATA('order.items.2.sku') = ''", true},
		{m, `DATA('order.tags') = '{"x":1,"y":[1,2]}'`, true},
		{m, "DATA('we*ird') = 'w' AND DATA('we?ird') = ''", true},
		{m, "DATA('n') = '' AND DATA('order.missing') = ''", true},
		{m, "INT(DATA('order.amount')) = 1500", true},
		{&notJSON, "DATA('order') = ''", true},
	}
	for _, c := range cases {
		mt, err := eventbus.CompileFilter(eventbus.SQL(c.expr))
		if err != nil {
			t.Fatalf("%s: %v", c.expr, err)
		}
		if got := mt.Match(c.m); got != c.want {
			t.Errorf("%s: match = %v, want %v", c.expr, got, c.want)
		}
	}
}

func TestFilterCompileErrors(t *testing.T) {
	for _, f := range []eventbus.Filter{
		eventbus.SQL("type = = 'x'"),
		eventbus.SQL(""),
		eventbus.Exact("Type", "x"),
		eventbus.Exact("", "x"),
		eventbus.All(),
		eventbus.Any(eventbus.Exact("type", "a"), eventbus.SQL("AND")),
		eventbus.Not(eventbus.Filter{}),
	} {
		_, err := eventbus.CompileFilter(f)
		var fe *eventbus.FilterError
		if !errors.Is(err, eventbus.ErrInvalidFilter) || !errors.As(err, &fe) {
			t.Errorf("%s: err = %v, want a *FilterError", f, err)
		}
	}

	// At subscribe time, before and after Start.
	broker := membus.New(nil)
	defer broker.Close(context.Background())
	b := eventbus.New(nil)
	must(t, b.Register("mem", broker.Connect()))
	_, err := b.SubscribeEvents(ctxT(t), []string{"order.created"}, "g", &collector{}, eventbus.WithFilter(eventbus.SQL("amount >")))
	if !errors.Is(err, eventbus.ErrInvalidFilter) {
		t.Fatalf("subscribe before Start: %v", err)
	}
	must(t, b.Start(ctxT(t)))
	defer b.Close(context.Background())
	_, err = b.SubscribeEvents(ctxT(t), []string{"order.created"}, "g", &collector{}, eventbus.WithFilter(eventbus.Prefix("BAD", "x")))
	if !errors.Is(err, eventbus.ErrInvalidFilter) {
		t.Fatalf("subscribe after Start: %v", err)
	}
	_, err = b.HandleQuery(ctxT(t), "svc", "q", eventbus.QueryHandlerFunc(func(context.Context, *eventbus.Message) (*eventbus.Message, error) { return nil, nil }),
		eventbus.WithFilter(eventbus.Exact("type", "q")))
	if !errors.Is(err, eventbus.ErrInvalidFilter) {
		t.Fatalf("filtered query handler: %v", err)
	}
	// A bad content route is a Start problem.
	b2 := eventbus.New(&eventbus.Options{Routes: []eventbus.Route{{Backend: "mem", Filter: eventbus.SQL("(")}}})
	must(t, b2.Register("mem", broker.Connect()))
	err = b2.Start(ctxT(t))
	var ce *eventbus.ConfigError
	if !errors.As(err, &ce) || !errors.Is(err, eventbus.ErrInvalidFilter) {
		t.Fatalf("start with a bad content route: %v", err)
	}
	must(t, b2.Close(context.Background()))
}

// runFilterSubscription publishes a mix of orders and checks that exactly
// the matching ones reach the handler, the others are acked, counted as
// Filtered and never dead-lettered.
func runFilterSubscription(t *testing.T, b *eventbus.Bus) {
	ctx := ctxT(t)
	got := &collector{}
	_, err := b.SubscribeEvents(ctx, []string{"order.created"}, "billing", got,
		eventbus.WithFilter(eventbus.Any(
			eventbus.Exact("region", "eu"),
			eventbus.SQL("INT(DATA('amount')) >= 1000"),
		)),
		eventbus.WithFilter(eventbus.Not(eventbus.Prefix("subject", "orders/test-"))))
	must(t, err)

	var want []string
	for i := range 40 {
		region := []string{"eu", "us", "apac"}[i%3]
		amount := []int{10, 1500}[i%2]
		id := fmt.Sprintf("o%02d", i)
		m := orderMsg(t, id, "order.created", amount, map[string]string{"region": region})
		if i%10 == 9 {
			m.Subject = "orders/test-" + id
		}
		if (region == "eu" || amount >= 1000) && i%10 != 9 {
			want = append(want, id)
		}
		must(t, b.PublishEvent(ctx, m))
	}
	last := orderMsg(t, "last", "order.created", 5000, nil)
	must(t, b.PublishEvent(ctx, last))
	want = append(want, "last")
	waitUntil(t, "the last matching order", func() bool { return slices.Contains(got.ids(), "last") })
	if ids := got.ids(); !slices.Equal(ids, want) {
		t.Fatalf("delivered %v\nwant      %v", ids, want)
	}
	st := b.Stats()
	if wantFiltered := uint64(41 - len(want)); st.Filtered != wantFiltered {
		t.Errorf("Stats.Filtered = %d, want %d", st.Filtered, wantFiltered)
	}
	if st.DeadLettered != 0 || st.Failed != 0 {
		t.Errorf("stats %+v: filtered messages must not fail nor be dead-lettered", st)
	}
}

func TestFilterSubscriptionMembus(t *testing.T) {
	broker := membus.New(nil)
	defer broker.Close(context.Background())
	b := startedBus(t, broker.Connect(), &eventbus.Options{Retry: fastRetry})
	runFilterSubscription(t, b)
}

func TestFilterStreamBatches(t *testing.T) {
	broker := membus.New(nil)
	defer broker.Close(context.Background())
	b := startedBus(t, broker.Connect(), &eventbus.Options{Retry: fastRetry})
	ctx := ctxT(t)
	var mu sync.Mutex
	var got []string
	_, err := b.ProcessStream(ctx, "clicks", "analytics", eventbus.BatchHandlerFunc(func(_ context.Context, ms []*eventbus.Message) error {
		mu.Lock()
		defer mu.Unlock()
		for _, m := range ms {
			got = append(got, m.ID)
		}
		return nil
	}), &eventbus.BatchOptions{Size: 4, MaxWait: 20 * time.Millisecond}, eventbus.WithFilter(eventbus.Suffix("id", "-keep")))
	must(t, err)
	var msgs []*eventbus.Message
	for i := range 10 {
		suffix := "-drop"
		if i%2 == 0 {
			suffix = "-keep"
		}
		msgs = append(msgs, &eventbus.Message{ID: fmt.Sprint(i, suffix), Type: "click"})
	}
	must(t, b.PublishStream(ctx, "clicks", msgs...))
	waitUntil(t, "5 kept clicks", func() bool { mu.Lock(); defer mu.Unlock(); return len(got) == 5 })
	waitUntil(t, "5 filtered clicks", func() bool { return b.Stats().Filtered == 5 })
	mu.Lock()
	defer mu.Unlock()
	if !slices.Equal(got, []string{"0-keep", "2-keep", "4-keep", "6-keep", "8-keep"}) {
		t.Fatalf("batches held %v", got)
	}
}

func TestContentRoutingTwoBackends(t *testing.T) {
	ctx := ctxT(t)
	fast, durable := membus.New(nil), membus.New(nil)
	defer fast.Close(context.Background())
	defer durable.Close(context.Background())
	b := eventbus.New(&eventbus.Options{Routes: []eventbus.Route{
		{Pattern: eventbus.EventPattern, Match: "order.*", Backend: "durable", Filter: eventbus.SQL("INT(DATA('amount')) >= 1000")},
		{Pattern: eventbus.EventPattern, Backend: "fast"},
	}})
	must(t, b.Register("fast", fast.Connect()))
	must(t, b.Register("durable", durable.Connect()))
	got := &collector{}
	_, err := b.SubscribeEvents(ctx, []string{"order.created"}, "billing", got)
	must(t, err)
	must(t, b.Start(ctx))
	defer b.Close(context.Background())

	// Side subscribers on each broker directly show where each order went.
	onFast, onDurable := &collector{}, &collector{}
	for _, x := range []struct {
		d *membus.Driver
		c *collector
	}{{fast, onFast}, {durable, onDurable}} {
		side := eventbus.New(nil)
		must(t, side.Register("mem", x.d.Connect()))
		_, err := side.SubscribeEvents(ctx, []string{"order.created"}, "audit", x.c)
		must(t, err)
		must(t, side.Start(ctx))
		defer side.Close(context.Background())
	}

	var big, small []string
	for i := range 20 {
		amount := 10
		if i%4 == 0 {
			amount = 5000
		}
		id := fmt.Sprint("o", i)
		must(t, b.PublishEvent(ctx, orderMsg(t, id, "order.created", amount, nil)))
		if amount >= 1000 {
			big = append(big, id)
		} else {
			small = append(small, id)
		}
	}
	waitUntil(t, "every order at the bus subscriber", func() bool { return len(got.ids()) == 20 })
	waitUntil(t, "every order on the brokers", func() bool { return len(onFast.ids())+len(onDurable.ids()) == 20 })
	if ids := onDurable.ids(); !slices.Equal(ids, big) {
		t.Errorf("durable backend got %v, want %v", ids, big)
	}
	if ids := onFast.ids(); !slices.Equal(ids, small) {
		t.Errorf("fast backend got %v, want %v", ids, small)
	}
	all := got.ids()
	slices.Sort(all)
	want := append(slices.Clone(big), small...)
	slices.Sort(want)
	if !slices.Equal(all, want) {
		t.Errorf("subscriber got %v, want %v", all, want)
	}
}

func TestContentRouteCapabilityChecked(t *testing.T) {
	mem := membus.New(nil)
	defer mem.Close(context.Background())
	b := eventbus.New(&eventbus.Options{Routes: []eventbus.Route{
		{Pattern: eventbus.StreamPattern, Backend: "nodurable", Filter: eventbus.Exact("type", "x")},
		{Backend: "mem"},
	}})
	must(t, b.Register("mem", mem.Connect()))
	must(t, b.Register("nodurable", noRedelivery{mem.Connect()}))
	_, err := b.ProcessStream(ctxT(t), "s", "g", eventbus.BatchHandlerFunc(func(context.Context, []*eventbus.Message) error { return nil }), nil)
	must(t, err)
	err = b.Start(ctxT(t))
	if !errors.Is(err, eventbus.ErrCapability) {
		t.Fatalf("start: %v, want ErrCapability", err)
	}
	must(t, b.Close(context.Background()))
}

// threeSteps: enrich, fan a multi-item order out into one message per
// item, drop items of a cancelled kind.
func threeSteps() *eventbus.Pipeline {
	type order struct {
		Items []string `json:"items"`
	}
	return eventbus.NewPipeline(
		eventbus.SetExtension("enriched", "yes"),
		eventbus.StepFunc(func(_ context.Context, m *eventbus.Message) ([]*eventbus.Message, error) {
			var o order
			if err := json.Unmarshal(m.Data, &o); err != nil {
				return nil, eventbus.Permanent(err)
			}
			var out []*eventbus.Message
			for i, it := range o.Items {
				c := m.Clone()
				c.ID = fmt.Sprintf("%s-%d", m.ID, i)
				c.Type = "order.item"
				c.Data, _ = json.Marshal(map[string]string{"sku": it})
				out = append(out, c)
			}
			return out, nil
		}),
		eventbus.Keep(mustMatcher(eventbus.Not(eventbus.SQL("DATA('sku') LIKE 'void-%'")))),
	)
}

func mustMatcher(f eventbus.Filter) *eventbus.Matcher {
	m, err := eventbus.CompileFilter(f)
	if err != nil {
		panic(err)
	}
	return m
}

func TestPipelineAlone(t *testing.T) {
	in := &eventbus.Message{ID: "a", Type: "order.placed", Data: []byte(`{"items":["x","void-y","z"]}`)}
	outs, err := threeSteps().Apply(context.Background(), in)
	must(t, err)
	var skus []string
	for _, o := range outs {
		if o.Extensions["enriched"] != "yes" || o.Type != "order.item" {
			t.Errorf("output %+v not enriched", o)
		}
		skus = append(skus, string(o.Data))
	}
	if want := []string{`{"sku":"x"}`, `{"sku":"z"}`}; !slices.Equal(skus, want) {
		t.Fatalf("outputs %v, want %v", skus, want)
	}
	if in.Extensions != nil {
		t.Error("Apply modified its input")
	}
	_, err = threeSteps().Apply(context.Background(), &eventbus.Message{ID: "b", Type: "t", Data: []byte("nope")})
	if !eventbus.IsPermanent(err) {
		t.Fatalf("bad data: %v, want a permanent error", err)
	}
	// A step that panics fails the pipeline with a *PanicError naming the step.
	boom := eventbus.NewPipeline(eventbus.SetExtension("a", "1"), eventbus.StepFunc(func(context.Context, *eventbus.Message) ([]*eventbus.Message, error) {
		panic("step exploded")
	}))
	var pe *eventbus.PanicError
	if _, err := boom.Apply(context.Background(), in); !errors.As(err, &pe) || !strings.Contains(err.Error(), "pipeline step 2") {
		t.Fatalf("panicking step: %v, want a *PanicError from step 2", err)
	}
}

func TestPipelineOnConsumeAndPublish(t *testing.T) {
	broker := membus.New(nil)
	defer broker.Close(context.Background())
	b := eventbus.New(&eventbus.Options{Retry: fastRetry, Routes: []eventbus.Route{
		{Pattern: eventbus.EventPattern, Match: "public.*", Backend: "mem", Pipeline: eventbus.NewPipeline(eventbus.RedactJSON("customer.card"))},
	}})
	must(t, b.Register("mem", broker.Connect()))
	ctx := ctxT(t)
	items := &collector{}
	_, err := b.SubscribeEvents(ctx, []string{"order.placed"}, "shipping", items, eventbus.WithPipeline(threeSteps()))
	must(t, err)
	redacted := &collector{}
	_, err = b.SubscribeEvents(ctx, []string{"public.order"}, "", redacted)
	must(t, err)
	must(t, b.Start(ctx))
	defer b.Close(context.Background())

	must(t, b.PublishEvent(ctx, &eventbus.Message{ID: "p1", Type: "order.placed", Data: []byte(`{"items":["a","void-b","c"]}`)}))
	must(t, b.PublishEvent(ctx, &eventbus.Message{ID: "p2", Type: "order.placed", Data: []byte(`{"items":["void-d"]}`)}))
	must(t, b.PublishEvent(ctx, &eventbus.Message{ID: "p3", Type: "order.placed", Data: []byte(`{"items":["e"]}`)}))
	waitUntil(t, "3 items", func() bool { return len(items.ids()) == 3 })
	if ids := items.ids(); !slices.Equal(ids, []string{"p1-0", "p1-2", "p3-0"}) {
		t.Fatalf("items %v", ids)
	}

	must(t, b.PublishEvent(ctx, orderMsg(t, "pub1", "public.order", 5, nil)))
	waitUntil(t, "the redacted order", func() bool { return len(redacted.ids()) == 1 })
	redacted.mu.Lock()
	data := string(redacted.msgs[0].Data)
	redacted.mu.Unlock()
	if strings.Contains(data, "4111") || !strings.Contains(data, `"tier":"gold"`) {
		t.Fatalf("published data %s, want the card redacted", data)
	}
}

func TestPipelineErrorDeadLetters(t *testing.T) {
	broker := membus.New(nil)
	defer broker.Close(context.Background())
	b := startedBus(t, broker.Connect(), &eventbus.Options{Retry: fastRetry})
	ctx := ctxT(t)
	dl, err := broker.Connect().Subscribe(ctx, driver.DeadLetterOf(driver.NewDestination(driver.Event, "order.placed")), driver.SubscribeOptions{Group: "dlq", Durable: true})
	must(t, err)
	defer dl.Close(context.Background())
	_, err = b.SubscribeEvents(ctx, []string{"order.placed"}, "shipping", &collector{}, eventbus.WithPipeline(threeSteps()))
	must(t, err)
	must(t, b.PublishEvent(ctx, &eventbus.Message{ID: "bad", Type: "order.placed", Data: []byte("not json")}))
	ds, err := dl.Receive(ctx, 1)
	must(t, err)
	if ds[0].Message.ID != "bad" || !strings.Contains(ds[0].Message.Extensions[driver.ExtDeadLetterReason], "pipeline step 2") {
		t.Fatalf("dead letter %+v", ds[0].Message)
	}
	must(t, dl.Ack(ctx, ds))
}

// recordingTarget confirms publishes through a membus driver and records
// what it confirmed.
type recordingTarget struct {
	*membus.Driver
	mu   sync.Mutex
	seen map[string]int
}

func (r *recordingTarget) Publish(ctx context.Context, dest driver.Destination, msgs []*driver.Message) error {
	if err := r.Driver.Publish(ctx, dest, msgs); err != nil {
		return err
	}
	r.mu.Lock()
	for _, m := range msgs {
		r.seen[m.ID]++
	}
	r.mu.Unlock()
	return nil
}

func (r *recordingTarget) count() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.seen)
}

func TestBridgeMembusToMembus(t *testing.T) {
	src, dst := membus.New(nil), membus.New(nil)
	defer src.Close(context.Background())
	defer dst.Close(context.Background())
	ctx := ctxT(t)
	b := eventbus.New(&eventbus.Options{Routes: []eventbus.Route{{Backend: "src"}}})
	must(t, b.Register("src", src.Connect()))
	target := &recordingTarget{Driver: dst.Connect(), seen: map[string]int{}}
	must(t, b.Register("dst", target))
	_, err := b.Bridge(ctx, eventbus.Bridge{From: "src", To: "dst", Pattern: eventbus.EventPattern, Name: "order.created",
		Filter: eventbus.Not(eventbus.Exact("region", "test"))})
	must(t, err)
	must(t, b.Start(ctx))
	defer b.Close(context.Background())
	for i := range 30 {
		region := "eu"
		if i%5 == 0 {
			region = "test"
		}
		must(t, b.PublishEvent(ctx, orderMsg(t, fmt.Sprint("b", i), "order.created", i, map[string]string{"region": region})))
	}
	waitUntil(t, "24 forwarded", func() bool { return target.count() == 24 })
	waitUntil(t, "6 filtered", func() bool { return b.Stats().Filtered == 6 })

	_, err = b.Bridge(ctx, eventbus.Bridge{From: "src", To: "src", Pattern: eventbus.EventPattern, Name: "x"})
	if err == nil {
		t.Fatal("bridge to its own source accepted")
	}
	_, err = b.Bridge(ctx, eventbus.Bridge{From: "src", To: "nope", Pattern: eventbus.EventPattern, Name: "y"})
	if !errors.Is(err, eventbus.ErrUnknownBackend) {
		t.Fatalf("bridge to an unknown backend: %v", err)
	}
}

const orderSchema = `{
  "$schema": "https://json-schema.org/draft/2020-12/schema",
  "type": "object",
  "required": ["amount"],
  "properties": {"amount": {"type": "integer", "minimum": 1}}
}`

func TestSchemaOverHTTP(t *testing.T) {
	var fetches sync.Map
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n, _ := fetches.LoadOrStore(r.URL.Path, new(int))
		*n.(*int)++
		if r.URL.Path != "/order.json" {
			http.NotFound(w, r)
			return
		}
		w.Header().Set("Content-Type", "application/schema+json")
		_, _ = w.Write([]byte(orderSchema))
	}))
	defer srv.Close()
	uri := srv.URL + "/order.json"

	schemas := eventbus.NewSchemas(&eventbus.SchemaOptions{Fetch: true})
	must(t, schemas.Bind("order.created", uri))
	if err := schemas.Bind("other", srv.URL+"/missing.json"); !errors.Is(err, eventbus.ErrSchema) {
		t.Fatalf("bind to a missing schema: %v", err)
	}

	broker := membus.New(nil)
	defer broker.Close(context.Background())
	ctx := ctxT(t)
	b := startedBus(t, broker.Connect(), &eventbus.Options{Retry: fastRetry, Schemas: schemas})
	got := &collector{}
	_, err := b.SubscribeEvents(ctx, []string{"order.created"}, "billing", got)
	must(t, err)

	// On publish: a typed error listing the violations, nothing sent.
	bad := &eventbus.Message{ID: "bad", Type: "order.created", Data: []byte(`{"amount": 0}`)}
	err = b.PublishEvent(ctx, bad)
	var se *eventbus.SchemaError
	if !errors.As(err, &se) || !errors.Is(err, eventbus.ErrSchema) || len(se.Violations) != 1 || !strings.Contains(se.Violations[0], "/amount") {
		t.Fatalf("publish invalid: %v", err)
	}
	must(t, b.PublishEvent(ctx, &eventbus.Message{ID: "ok", Type: "order.created", Data: []byte(`{"amount": 3}`)}))

	// On consume: a message published without the check (another
	// producer) is dead-lettered with the violations as its reason.
	dl, err := broker.Connect().Subscribe(ctx, driver.DeadLetterOf(driver.NewDestination(driver.Event, "order.created")), driver.SubscribeOptions{Group: "dlq", Durable: true})
	must(t, err)
	defer dl.Close(context.Background())
	raw := broker.Connect()
	defer raw.Close(context.Background())
	must(t, raw.Publish(ctx, driver.NewDestination(driver.Event, "order.created"), []*driver.Message{
		{ID: "foreign", Source: "other", Type: "order.created", DataSchema: uri, Data: []byte(`{"amount": "many"}`), Time: time.Now()},
	}))
	ds, err := dl.Receive(ctx, 1)
	must(t, err)
	reason := ds[0].Message.Extensions[driver.ExtDeadLetterReason]
	if ds[0].Message.ID != "foreign" || !strings.Contains(reason, "/amount") {
		t.Fatalf("dead letter %s: %q", ds[0].Message.ID, reason)
	}
	must(t, dl.Ack(ctx, ds))
	if ids := got.ids(); !slices.Equal(ids, []string{"ok"}) {
		t.Fatalf("handler got %v", ids)
	}
	got.mu.Lock()
	if got.msgs[0].DataSchema != uri {
		t.Errorf("published dataschema %q, want %q", got.msgs[0].DataSchema, uri)
	}
	got.mu.Unlock()
	if n, _ := fetches.Load("/order.json"); *n.(*int) != 1 {
		t.Errorf("schema fetched %d times, want once", *n.(*int))
	}
}
