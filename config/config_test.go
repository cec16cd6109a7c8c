package config_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/marty-msf/eventbus"
	"github.com/marty-msf/eventbus/config"
	"github.com/marty-msf/eventbus/driver"
	_ "github.com/marty-msf/eventbus/membus"
	"github.com/marty-msf/eventbus/natsbus"
	_ "github.com/marty-msf/eventbus/saga/sqlstore"
)

func env(vars map[string]string) *config.Options {
	return &config.Options{
		LookupEnv: func(k string) (string, bool) { v, ok := vars[k]; return v, ok },
		Environ: func() []string {
			var out []string
			for k, v := range vars {
				out = append(out, k+"="+v)
			}
			return out
		},
	}
}

const full = `# every key
source: orders
instance: orders-1
data_dir: /var/lib/orders
default_backend: nats
query_timeout: 10s
backends:
  nats:
    url: nats://orders:${NATS_PASSWORD}@nats.internal:4222
    options:
      jetstream: true
      ack_wait: 1m
      servers: [nats://n2:4222, nats://n3:4222]
  local:
    url: mem://
routes:
  - pattern: event
    match: "audit.*"
    backend: local
  - pattern: streams
    backend: nats
  - match: "x"
    backend: nats
retry:
  max_attempts: 7
  initial_backoff: 200ms
  max_backoff: 1m
saga:
  store: postgres://orders:${PG_PASSWORD:-dev}@db:5432/orders?sslmode=disable&table_prefix=o_
`

func TestParseEveryKey(t *testing.T) {
	c, err := config.Parse("eventbus.yaml", []byte(full), env(map[string]string{"NATS_PASSWORD": "pw"}))
	if err != nil {
		t.Fatal(err)
	}
	want := &config.Config{
		File: "eventbus.yaml", Source: "orders", Instance: "orders-1", DataDir: "/var/lib/orders",
		DefaultBackend: "nats", QueryTimeout: 10 * time.Second,
		Backends: []config.Backend{
			{Name: "nats", URL: "nats://orders:pw@nats.internal:4222?ack_wait=1m&jetstream=true&servers=nats%3A%2F%2Fn2%3A4222&servers=nats%3A%2F%2Fn3%3A4222"},
			{Name: "local", URL: "mem://"},
		},
		Routes: []eventbus.Route{
			{Pattern: eventbus.EventPattern, Match: "audit.*", Backend: "local"},
			{Pattern: eventbus.StreamPattern, Backend: "nats"},
			{Match: "x", Backend: "nats"},
		},
		Retry:     eventbus.RetryPolicy{MaxAttempts: 7, InitialBackoff: 200 * time.Millisecond, MaxBackoff: time.Minute},
		SagaStore: "postgres://orders:dev@db:5432/orders?sslmode=disable&table_prefix=o_",
	}
	if c.File != want.File || c.Source != want.Source || c.Instance != want.Instance || c.DataDir != want.DataDir ||
		c.DefaultBackend != want.DefaultBackend || c.QueryTimeout != want.QueryTimeout || c.SagaStore != want.SagaStore ||
		c.Retry != want.Retry || !reflect.DeepEqual(c.Backends, want.Backends) || !reflect.DeepEqual(c.Routes, want.Routes) {
		t.Fatalf("got  %+v\nwant %+v", c, want)
	}
	// The options reach the driver's configuration.
	nc, err := natsbus.ParseURL(c.Backends[0].URL)
	if err != nil || nc.AckWait != time.Minute || nc.Password != "pw" || len(nc.Servers) != 3 {
		t.Fatalf("natsbus config %+v, %v", nc, err)
	}
	o := c.Options(&eventbus.Options{Source: "base", Routes: []eventbus.Route{{Backend: "local"}}})
	if o.Source != "orders" || o.Retry.MaxAttempts != 7 || len(o.Routes) != 4 || o.Routes[3].Backend != "local" || o.QueryTimeout != 10*time.Second {
		t.Errorf("Options: %+v", o)
	}
}

type wantProblem struct {
	line int
	key  string
	is   error
	text string
}

func checkProblems(t *testing.T, err error, file string, want []wantProblem) {
	t.Helper()
	var ce *config.Error
	if !errors.As(err, &ce) {
		t.Fatalf("error %v (%T), want a *config.Error", err, err)
	}
	t.Log(err)
	if len(ce.Problems) != len(want) {
		t.Errorf("%d problems, want %d", len(ce.Problems), len(want))
	}
	for i, w := range want {
		if i >= len(ce.Problems) {
			break
		}
		p := ce.Problems[i]
		if p.File != file || p.Line != w.line || p.Key != w.key || (w.is != nil && !errors.Is(p, w.is)) ||
			!strings.Contains(p.Error(), w.text) {
			t.Errorf("problem %d: %q (file %q line %d key %q), want line %d key %q matching %v containing %q",
				i, p, p.File, p.Line, p.Key, w.line, w.key, w.is, w.text)
		}
		if !strings.HasPrefix(p.Error(), fmt.Sprintf("%s:%d:", file, w.line)) {
			t.Errorf("problem %d does not start with file:line: %q", i, p)
		}
	}
}

func TestEveryProblemWithFileLineAndKey(t *testing.T) {
	const bad = `source: [a, b]
colour: blue
query_timeout: soon
backends:
  nats:
    url: nats://h:4222?ack_wait=never&bogus=1
    options:
      prefetch: many
      jetstream: true
  kafka:
    url: kafka://broker:9092
  broken:
    url: "::not a url"
  noscheme:
    url: just-a-host
  nourl:
    options: {}
  bad name:
    url: mem://
  dup:
    url: mem://?buffer_size=1
    options:
      buffer_size: 2
routes:
  - pattern: events
    backend: ghost
  - pattern: teleport
    backend: nats
  - match: "["
  - backend: nats
    extra: 1
retry:
  max_attempts: -1
  initial_backoff: 2m
  max_backoff: 1m
default_backend: phantom
saga:
  store: mysql://db/x
  table: y
`
	_, err := config.Parse("bus.yaml", []byte(bad), env(nil))
	checkProblems(t, err, "bus.yaml", []wantProblem{
		{1, "source", config.ErrType, "want a single value, got a list"},
		{2, "colour", config.ErrUnknownKey, "unknown key"},
		{3, "query_timeout", config.ErrType, `"soon" is not a duration`},
		{6, "backends.nats.url", nil, `parameter "ack_wait": "never" is not a duration`},
		{6, "backends.nats.url", driver.ErrUnknownParam, `parameter "bogus"`},
		{8, "backends.nats.options.prefetch", nil, `"many" is not an integer`},
		{11, "backends.kafka.url", driver.ErrUnknownScheme, "import github.com/marty-msf/eventbus/kafkabus"},
		{13, "backends.broken.url", nil, "not a URL"},
		{15, "backends.noscheme.url", nil, "no scheme"},
		{16, "backends.nourl.url", nil, "every backend needs a url"},
		{18, "backends.bad name", nil, "only letters"},
		{23, "backends.dup.options.buffer_size", nil, "also set in the URL"},
		{26, "routes[0].backend", eventbus.ErrUnknownBackend, `"ghost"`},
		{27, "routes[1].pattern", config.ErrType, `"teleport"`},
		{29, "routes[2].backend", nil, "every route names a backend"},
		{31, "routes[3].extra", config.ErrUnknownKey, "known: backend, filter, match, pattern, pipeline"},
		{33, "retry.max_attempts", nil, "negative"},
		{34, "retry.initial_backoff", nil, "exceeds retry.max_backoff"},
		{36, "default_backend", eventbus.ErrUnknownBackend, `"phantom"`},
		{38, "saga.store", driver.ErrUnknownScheme, `"mysql" (registered: postgres, postgresql, sqlite)`},
		{39, "saga.table", config.ErrUnknownKey, "unknown key"},
	})
}

func TestSyntaxAndShapeErrors(t *testing.T) {
	_, err := config.Parse("s.yaml", []byte("source: a\nbackends:\n  x: [\n"), env(nil))
	checkProblems(t, err, "s.yaml", []wantProblem{{3, "", config.ErrSyntax, "YAML syntax error"}})

	_, err = config.Parse("s.yaml", []byte("- a\n- b\n"), env(nil))
	checkProblems(t, err, "s.yaml", []wantProblem{{1, "", config.ErrType, "want a mapping, got a list"}})

	_, err = config.Parse("s.yaml", []byte("backends: [a]\nroutes: {a: 1}\nretry: 3\nsource: a\nsource: b\n"), env(nil))
	checkProblems(t, err, "s.yaml", []wantProblem{
		{1, "backends", config.ErrType, "want a mapping of backend names"},
		{2, "routes", config.ErrType, "want a list of routes"},
		{3, "retry", config.ErrType, "want a mapping, got a number"},
		{5, "source", nil, "given twice"},
	})

	// Anchors and aliases work; empty files are every default.
	c, err := config.Parse("a.yaml", []byte("x: &m mem://\nbackends:\n  a: {url: *m}\n"), env(nil))
	if err == nil || c != nil {
		t.Errorf("unknown key x accepted: %v", err)
	}
	c, err = config.Parse("a.yaml", []byte("# nothing\n"), env(nil))
	if err != nil || len(c.Backends) != 1 || c.Backends[0].Name != config.DefaultBackendName || c.Backends[0].URL != "embedded:eventbus-data" {
		t.Errorf("empty file: %+v %v", c, err)
	}
	if _, err := config.Load(filepath.Join(t.TempDir(), "missing.yaml"), nil); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("missing file: %v", err)
	}
}

func TestEnvironment(t *testing.T) {
	const file = `source: ${SVC:-orders}
data_dir: $${literal}
backends:
  main:
    url: ${MAIN_URL}
    options:
      buffer_size: 8
  side-car:
    url: mem://
`
	vars := map[string]string{
		"MAIN_URL":                       "mem://",
		"EVENTBUS_BACKENDS_SIDE_CAR_URL": "mem://?ack_wait=${WAIT}",
		"WAIT":                           "3s",
		"EVENTBUS_BACKENDS_EXTRA_URL":    "mem://",
		"EVENTBUS_DEFAULT_BACKEND":       "extra",
		"EVENTBUS_QUERY_TIMEOUT":         "4s",
		"EVENTBUS_RETRY_MAX_ATTEMPTS":    "9",
		"EVENTBUS_SAGA_STORE":            "sqlite:x.db",
	}
	c, err := config.Parse("e.yaml", []byte(file), env(vars))
	if err != nil {
		t.Fatal(err)
	}
	want := []config.Backend{{"main", "mem://?buffer_size=8"}, {"side-car", "mem://?ack_wait=${WAIT}"}, {"extra", "mem://"}}
	want[1].URL = "mem://?ack_wait=3s"
	if c.Source != "orders" || c.DataDir != "${literal}" || !reflect.DeepEqual(c.Backends, want) || c.DefaultBackend != "extra" ||
		c.QueryTimeout != 4*time.Second || c.Retry.MaxAttempts != 9 || c.SagaStore != "sqlite:x.db" {
		t.Fatalf("%+v", c)
	}

	// Problems of overrides name the variable; unset variables are errors.
	vars = map[string]string{"EVENTBUS_QUERY_TIMEOUT": "later", "EVENTBUS_BACKENDS_MAIN_URL": "mem://?nope=1"}
	_, err = config.Parse("e.yaml", []byte(file), env(vars))
	var ce *config.Error
	if !errors.As(err, &ce) || len(ce.Problems) != 3 {
		t.Fatalf("%v", err)
	}
	text := err.Error()
	for _, s := range []string{
		"environment variable EVENTBUS_QUERY_TIMEOUT: query_timeout: wrong type",
		"environment variable EVENTBUS_BACKENDS_MAIN_URL: backends.main.url",
		`parameter "nope": unknown parameter`,
		"e.yaml:5:10: backends.main.url: unset environment variable MAIN_URL",
	} {
		if !strings.Contains(text, s) {
			t.Errorf("error lacks %q:\n%s", s, text)
		}
	}
}

// A password given in a URL, in an option, or through the environment
// appears in no error and no log line.
func TestSecretsNeverShown(t *testing.T) {
	const sentinel = "Sentinel-pw-4b1d"
	file := `source: s
backends:
  nats:
    url: nats://svc:${NATS_PASSWORD}@127.0.0.1:1?connect_timeout=300ms&max_reconnects=1
  tok:
    url: nats://` + sentinel + `@127.0.0.1:1?connect_timeout=300ms&bogus=1
  mem:
    url: mem://
    options:
      password: ` + sentinel + `
saga:
  store: postgres://svc:` + sentinel + `@127.0.0.1:1/db?connect_timeout=1&max_conns=x
`
	vars := map[string]string{"NATS_PASSWORD": sentinel}
	_, err := config.Parse("p.yaml", []byte(file), env(vars))
	if err == nil {
		t.Fatal("no error")
	}
	if strings.Contains(err.Error(), sentinel) {
		t.Errorf("Parse error shows the secret:\n%v", err)
	}
	for _, want := range []string{"REDACTED", `parameter "bogus"`, `backends.mem.options.password`, `parameter "max_conns"`} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("Parse error lacks %q:\n%v", want, err)
		}
	}

	// A valid configuration whose brokers refuse: the errors of opening.
	file = `backends:
  nats:
    url: nats://svc:${NATS_PASSWORD}@127.0.0.1:1?connect_timeout=300ms&max_reconnects=1
saga:
  store: postgres://svc:${NATS_PASSWORD}@127.0.0.1:1/db?connect_timeout=1
`
	c, err := config.Parse("p.yaml", []byte(file), env(vars))
	if err != nil {
		t.Fatal(err)
	}
	var logs bytes.Buffer
	log := slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	_, err = c.NewBus(ctx, &eventbus.Options{Logger: log})
	if err == nil || strings.Contains(err.Error(), sentinel) || !strings.Contains(err.Error(), "p.yaml:3:10: backends.nats.url") {
		t.Errorf("NewBus: %v", err)
	}
	_, err = c.OpenSagaStore(ctx)
	if err == nil || strings.Contains(err.Error(), sentinel) || !strings.Contains(err.Error(), "p.yaml:5:10: saga.store") {
		t.Errorf("OpenSagaStore: %v", err)
	}
	if strings.Contains(logs.String(), sentinel) {
		t.Errorf("the log shows the secret:\n%s", logs.String())
	}
	if got := c.Redact(errors.New("x " + sentinel)).Error(); got != "x REDACTED" {
		t.Errorf("Redact: %q", got)
	}

	// Printed, logged or written as JSON, a Config shows its URLs redacted.
	logs.Reset()
	slog.New(slog.NewJSONHandler(&logs, nil)).Info("c", "c", c, "backends", c.Backends)
	js, err := json.Marshal(c)
	if err != nil {
		t.Fatal(err)
	}
	shown := fmt.Sprintf("%v %+v %#v %v %+v %#v %s %s", c, c, c, *c, c.Backends, c.Backends, logs.String(), js)
	if strings.Contains(shown, sentinel) || !strings.Contains(shown, "nats://REDACTED@127.0.0.1:1") {
		t.Errorf("a printed Config shows the secret or no URL:\n%s", shown)
	}
}

func TestOpenBuildsAWorkingBus(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "eventbus.yaml")
	data := fmt.Sprintf(`source: shop
data_dir: %s
backends:
  fast:
    url: mem://
  durable:
    url: embedded:%s
routes:
  - pattern: broadcast
    backend: fast
default_backend: durable
saga:
  store: sqlite:%s
`, dir, filepath.ToSlash(filepath.Join(dir, "nats")), filepath.ToSlash(filepath.Join(dir, "saga.db")))
	if err := os.WriteFile(path, []byte(data), 0o600); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	s, err := config.Open(ctx, path, nil, env(nil))
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		if err := s.Close(context.Background()); err != nil {
			t.Error(err)
		}
	}()
	if s.SagaStore == nil {
		t.Fatal("no saga store")
	}
	if got := s.Bus.Backends(); !reflect.DeepEqual(got, []string{"fast", "durable"}) {
		t.Fatalf("backends %v", got)
	}
	got := make(chan string, 2)
	h := eventbus.HandlerFunc(func(_ context.Context, m *eventbus.Message) error { got <- m.Type; return nil })
	if _, err := s.Bus.SubscribeEvents(ctx, []string{"order.placed"}, "g", h); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Bus.SubscribeBroadcast(ctx, []string{"cache.flush"}, h); err != nil {
		t.Fatal(err)
	}
	if err := s.Bus.Start(ctx); err != nil {
		t.Fatal(err)
	}
	for _, typ := range []string{"order.placed", "cache.flush"} {
		m := &eventbus.Message{Type: typ}
		var err error
		if typ == "cache.flush" {
			err = s.Bus.Broadcast(ctx, m)
		} else {
			err = s.Bus.PublishEvent(ctx, m)
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	seen := map[string]bool{}
	for len(seen) < 2 {
		select {
		case typ := <-got:
			seen[typ] = true
		case <-ctx.Done():
			t.Fatalf("delivered only %v", seen)
		}
	}
}

func TestDefaultIsTheEmbeddedServer(t *testing.T) {
	dir := t.TempDir()
	c, err := config.Parse("d.yaml", []byte("data_dir: "+dir+"\n"), env(nil))
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
	if got := b.Backends(); len(got) != 1 || got[0] != "embedded" {
		t.Fatalf("backends %v", got)
	}
	st, err := c.OpenSagaStore(ctx)
	if err != nil {
		t.Fatal(err)
	}
	st.(io.Closer).Close()
	if _, err := os.Stat(filepath.Join(dir, "saga.db")); err != nil {
		t.Errorf("default saga store: %v", err)
	}
}
