package config_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/marty-msf/eventbus"
	"github.com/marty-msf/eventbus/config"
)

const contentFile = `backends:
  fast:
    url: mem://
  durable:
    url: mem://
default_backend: fast
routes:
  - pattern: event
    match: "order.*"
    backend: durable
    filter:
      all:
        - exact: {source: shop}
        - any:
            - prefix: {subject: "eu/"}
            - suffix: {subject: "/vip"}
        - not: {exact: {region: "${SKIP_REGION:-test}"}}
        - sql: "INT(DATA('amount')) > 100"
    pipeline:
      - set_extension: {name: tier, value: gold}
      - rename_extension: {from: region, to: zone}
      - redact_json: [card.number, cvv]
  - pattern: event
    backend: fast
    filter:                   # a list is all of them
      - exact: {type: order.created}
      - sql: "source = 'shop'"
    pipeline:
      - keep: {prefix: {subject: "eu/"}}
      - redact_json: cvv
`

func TestRouteFilterAndPipeline(t *testing.T) {
	c, err := config.Parse("c.yaml", []byte(contentFile), env(nil))
	if err != nil {
		t.Fatal(err)
	}
	if len(c.Routes) != 2 {
		t.Fatalf("routes %+v", c.Routes)
	}
	want := []eventbus.Filter{
		eventbus.All(
			eventbus.Exact("source", "shop"),
			eventbus.Any(eventbus.Prefix("subject", "eu/"), eventbus.Suffix("subject", "/vip")),
			eventbus.Not(eventbus.Exact("region", "test")),
			eventbus.SQL("INT(DATA('amount')) > 100"),
		),
		eventbus.All(eventbus.Exact("type", "order.created"), eventbus.SQL("source = 'shop'")),
	}
	for i, r := range c.Routes {
		if r.Filter.String() != want[i].String() {
			t.Errorf("route %d filter\n got %s\nwant %s", i, r.Filter, want[i])
		}
		if r.Pipeline == nil {
			t.Errorf("route %d: no pipeline", i)
		}
	}
	m, err := eventbus.CompileFilter(c.Routes[0].Filter)
	if err != nil {
		t.Fatal(err)
	}
	in := &eventbus.Message{Type: "order.created", Source: "shop", Subject: "eu/1",
		Extensions: map[string]string{"region": "north"},
		Data:       []byte(`{"amount":250,"card":{"number":"4111","exp":"12/30"},"cvv":"123"}`)}
	if !m.Match(in) {
		t.Error("route 0 filter does not match")
	}
	out, err := c.Routes[0].Pipeline.Apply(context.Background(), in)
	if err != nil || len(out) != 1 {
		t.Fatalf("pipeline: %v %v", out, err)
	}
	got := out[0]
	if got.Extensions["tier"] != "gold" || got.Extensions["zone"] != "north" || got.Extensions["region"] != "" ||
		string(got.Data) != `{"amount":250,"card":{"exp":"12/30"}}` {
		t.Errorf("pipeline output %+v data %s", got, got.Data)
	}
	// keep drops what its filter does not match.
	in.Subject = "us/1"
	if out, err := c.Routes[1].Pipeline.Apply(context.Background(), in); err != nil || len(out) != 0 {
		t.Errorf("keep: %v %v", out, err)
	}
}

// The routes of a file route by content on a running bus, and their
// pipelines run on publish.
func TestContentRoutesOnABus(t *testing.T) {
	const file = `backends:
  fast:
    url: mem://
  durable:
    url: mem://
default_backend: fast
routes:
  - pattern: event
    backend: durable
    filter: {sql: "INT(DATA('amount')) >= 1000"}
    pipeline:
      - set_extension: {name: routed, value: durable}
`
	c, err := config.Parse("r.yaml", []byte(file), env(nil))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	b, err := c.NewBus(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close(context.Background())
	got := make(chan string, 4)
	h := eventbus.HandlerFunc(func(_ context.Context, m *eventbus.Message) error {
		got <- m.Subject + ":" + m.Extensions["routed"]
		return nil
	})
	if _, err := b.SubscribeEvents(ctx, []string{"order.placed"}, "g", h); err != nil {
		t.Fatal(err)
	}
	if err := b.Start(ctx); err != nil {
		t.Fatal(err)
	}
	for _, x := range []struct{ subject, data string }{{"small", `{"amount":5}`}, {"big", `{"amount":5000}`}} {
		if err := b.PublishEvent(ctx, &eventbus.Message{Type: "order.placed", Subject: x.subject, Data: []byte(x.data)}); err != nil {
			t.Fatal(err)
		}
	}
	seen := map[string]bool{}
	for len(seen) < 2 {
		select {
		case s := <-got:
			seen[s] = true
		case <-ctx.Done():
			t.Fatalf("delivered only %v", seen)
		}
	}
	if !seen["small:"] || !seen["big:durable"] {
		t.Errorf("delivered %v, want small: and big:durable", seen)
	}
}

func TestFilterAndPipelineProblems(t *testing.T) {
	const bad = `backends:
  local:
    url: mem://
routes:
  - backend: local
    filter: {sql: "amount >"}
  - backend: local
    filter:
      all:
        - exact: {Type: x}
        - prefix: {subject: a, source: b}
        - regex: {type: x}
        - any: []
        - not: {sql: ""}
        - exact: {type: [a]}
  - backend: local
    filter: {exact: {type: a}, sql: "true"}
  - backend: local
    pattern: query
    filter: {exact: {type: a}}
  - backend: local
    filter: yes
    pipeline:
      - set_extension: {name: Tier, value: gold}
      - set_extension: {name: tier}
      - rename_extension: {from: type, to: kind}
      - rename_extension: {from: a, to: a}
      - redact_json: [card..number, ""]
      - upcast: {from: a, to: b}
      - keep: {sql: "("}
      - {}
  - backend: local
    pipeline: {set_extension: {name: a, value: b}}
`
	_, err := config.Parse("f.yaml", []byte(bad), env(nil))
	checkProblems(t, err, "f.yaml", []wantProblem{
		{6, "routes[0].filter.sql", eventbus.ErrInvalidFilter, "invalid filter: CESQL"},
		{10, "routes[1].filter.all[0].exact.Type", eventbus.ErrInvalidFilter, "only lower-case letters and digits"},
		{11, "routes[1].filter.all[1].prefix", config.ErrType, "want one attribute and its value"},
		{12, "routes[1].filter.all[2].regex", config.ErrUnknownKey, "known: all, any, exact, not, prefix, sql, suffix"},
		{13, "routes[1].filter.all[3].any", eventbus.ErrInvalidFilter, "an empty list of filters"},
		{14, "routes[1].filter.all[4].not.sql", eventbus.ErrInvalidFilter, "empty CESQL expression"},
		{15, "routes[1].filter.all[5].exact.type", config.ErrType, "want a single value, got a list"},
		{17, "routes[2].filter", config.ErrType, "exactly one key"},
		{20, "routes[3].filter", eventbus.ErrInvalidFilter, "queries are not routed by content"},
		{22, "routes[4].filter", config.ErrType, "want a filter"},
		{24, "routes[4].pipeline[0].set_extension.name", nil, `extension name "Tier": only lower-case`},
		{25, "routes[4].pipeline[1].set_extension.value", nil, "missing: want name and value"},
		{26, "routes[4].pipeline[2].rename_extension.from", nil, `"type": shadows a CloudEvents attribute`},
		{27, "routes[4].pipeline[3].rename_extension.to", nil, "to itself"},
		{28, "routes[4].pipeline[4].redact_json[0]", nil, `path "card..number"`},
		{28, "routes[4].pipeline[4].redact_json[1]", nil, `path ""`},
		{29, "routes[4].pipeline[5].upcast", config.ErrUnknownKey, "known: keep, redact_json, rename_extension, set_extension"},
		{30, "routes[4].pipeline[6].keep.sql", eventbus.ErrInvalidFilter, "CESQL"},
		{31, "routes[4].pipeline[7]", config.ErrType, "got 0"},
		{33, "routes[5].pipeline", config.ErrType, "want a list of steps, got a mapping"},
	})
	var fe *eventbus.FilterError
	if !errors.As(err, &fe) {
		t.Errorf("no *eventbus.FilterError in %v", err)
	}
}

func TestSchemas(t *testing.T) {
	dir := t.TempDir()
	if err := os.MkdirAll(filepath.Join(dir, "order"), 0o755); err != nil {
		t.Fatal(err)
	}
	const orderSchema = `{"type":"object","required":["amount"],"properties":{"amount":{"type":"integer","minimum":1}}}`
	if err := os.WriteFile(filepath.Join(dir, "order", "placed.json"), []byte(orderSchema), 0o600); err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/user.json" {
			http.NotFound(w, r)
			return
		}
		fmt.Fprint(w, `{"type":"object","required":["name"]}`)
	}))
	defer srv.Close()

	file := fmt.Sprintf(`backends:
  local:
    url: mem://
schemas:
  fetch: true
  files:
    dir: %s
    base_uri: https://schemas.example.com/
  bind:
    order.placed: https://schemas.example.com/order/placed.json
    user.created: %s/user.json
`, dir, srv.URL)
	c, err := config.Parse("s.yaml", []byte(file), env(nil))
	if err != nil {
		t.Fatal(err)
	}
	if c.Schemas == nil {
		t.Fatal("no schemas")
	}
	for _, x := range []struct {
		typ, data string
		ok        bool
	}{
		{"order.placed", `{"amount":3}`, true},
		{"order.placed", `{"amount":0}`, false},
		{"user.created", `{"name":"a"}`, true},
		{"user.created", `{}`, false},
		{"other", `{}`, true},
	} {
		err := c.Schemas.Validate(&eventbus.Message{Type: x.typ, Data: []byte(x.data)})
		if (err == nil) != x.ok || (err != nil && !errors.Is(err, eventbus.ErrSchema)) {
			t.Errorf("%s %s: %v", x.typ, x.data, err)
		}
	}

	// The bus checks what it publishes.
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	b, err := c.NewBus(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close(context.Background())
	if err := b.Start(ctx); err != nil {
		t.Fatal(err)
	}
	err = b.PublishEvent(ctx, &eventbus.Message{Type: "order.placed", Data: []byte(`{"amount":0}`)})
	if !errors.Is(err, eventbus.ErrSchema) {
		t.Errorf("publish of invalid data: %v", err)
	}
	if err := b.PublishEvent(ctx, &eventbus.Message{Type: "order.placed", Data: []byte(`{"amount":2}`)}); err != nil {
		t.Errorf("publish of valid data: %v", err)
	}
}

func TestSchemaProblems(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "broken.json"), []byte(`{"type":`), 0o600); err != nil {
		t.Fatal(err)
	}
	file := fmt.Sprintf(`schemas:
  fetch: maybe
  files:
    - dir: %s
      base_uri: https://s.example.com/
    - dir: %s
    - {dir: %s, base_uri: "https://t.example.com/", extra: 1}
  bind:
    order.placed: https://s.example.com/order.json
  registry: http://r
`, filepath.Join(dir, "missing"), dir, dir)
	_, err := config.Parse("s.yaml", []byte(file), env(nil))
	checkProblems(t, err, "s.yaml", []wantProblem{
		{2, "schemas.fetch", config.ErrType, `"maybe" is not a boolean`},
		{4, "schemas.files[0].dir", os.ErrNotExist, "no such file"},
		{6, "schemas.files[1].base_uri", nil, "missing: want base_uri and dir"},
		{7, "schemas.files[2].extra", config.ErrUnknownKey, "known: base_uri, dir"},
		{10, "schemas.registry", config.ErrUnknownKey, "known: bind, fetch, files"},
	})

	// A broken file, and a binding to a schema that neither the files nor
	// (without fetch) the network give.
	file = fmt.Sprintf(`schemas:
  files: {dir: %s, base_uri: "https://s.example.com/"}
`, dir)
	_, err = config.Parse("s.yaml", []byte(file), env(nil))
	checkProblems(t, err, "s.yaml", []wantProblem{{2, "schemas.files.dir", nil, "broken.json"}})

	if err := os.Remove(filepath.Join(dir, "broken.json")); err != nil {
		t.Fatal(err)
	}
	file = fmt.Sprintf(`schemas:
  files: {dir: %s, base_uri: "https://s.example.com/"}
  bind:
    order.placed: https://s.example.com/nowhere.json
`, dir)
	_, err = config.Parse("s.yaml", []byte(file), env(nil))
	checkProblems(t, err, "s.yaml", []wantProblem{{4, "schemas.bind.order.placed", eventbus.ErrSchema, "nowhere.json"}})
}
