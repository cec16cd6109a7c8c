package faults_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"github.com/marty-msf/eventbus"
	"github.com/marty-msf/eventbus/config"
	"github.com/marty-msf/eventbus/driver"
	"github.com/marty-msf/eventbus/natsbus"
	"github.com/marty-msf/eventbus/telemetry"

	// The schemes the configuration tests name.
	_ "github.com/marty-msf/eventbus/awsbus"
	_ "github.com/marty-msf/eventbus/kafkabus"
	_ "github.com/marty-msf/eventbus/rabbitbus"
	_ "github.com/marty-msf/eventbus/redisbus"
	_ "github.com/marty-msf/eventbus/saga/sqlstore"
)

// sentinel starts every secret of the credential tests: it must appear in
// no error, log line, printed value, metric label or span attribute.
const sentinel = "S3NTINEL"

// exposure gathers everything a user could see: log output, errors in
// their %v and %+v forms, and printed values.
type exposure struct {
	mu    sync.Mutex
	items []string
}

// Write makes exposure the output of a slog handler.
func (e *exposure) Write(p []byte) (int, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.items = append(e.items, "log: "+string(p))
	return len(p), nil
}

func (e *exposure) add(what, s string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.items = append(e.items, what+": "+s)
}

// err records err, which must not be nil.
func (e *exposure) err(t *testing.T, what string, err error) {
	t.Helper()
	if err == nil {
		t.Errorf("%s: no error", what)
		return
	}
	e.add(what, fmt.Sprintf("%v | %+v", err, err))
}

// value records v printed with %v and %+v.
func (e *exposure) value(what string, v any) {
	e.add(what, fmt.Sprintf("%v | %+v", v, v))
}

// logger returns a logger at debug level that writes text and JSON records
// into e.
func (e *exposure) logger() *slog.Logger {
	o := &slog.HandlerOptions{Level: slog.LevelDebug}
	return slog.New(slog.NewMultiHandler(slog.NewTextHandler(e, o), slog.NewJSONHandler(e, o)))
}

func (e *exposure) contains(s string) bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	for _, it := range e.items {
		if strings.Contains(it, s) {
			return true
		}
	}
	return false
}

// check fails t for every item that shows the sentinel, and when fewer than
// min items were gathered (a test that saw nothing proves nothing).
func (e *exposure) check(t *testing.T, min int) {
	t.Helper()
	e.mu.Lock()
	defer e.mu.Unlock()
	leaks := 0
	for _, it := range e.items {
		if strings.Contains(it, sentinel) {
			leaks++
			t.Errorf("the secret shows in %s", it)
		}
	}
	if len(e.items) < min {
		t.Errorf("%d outputs gathered, want at least %d", len(e.items), min)
	}
	t.Logf("%d outputs gathered, %d show the secret", len(e.items), leaks)
}

// startAuthNATS runs a NATS server with JetStream in the test process that
// lets in user svc with password, on port (-1: a free one) and store.
func startAuthNATS(t *testing.T, port int, store, password string) *server.Server {
	t.Helper()
	ns, err := server.NewServer(&server.Options{
		Host: "127.0.0.1", Port: port, NoSigs: true,
		Username: "svc", Password: password,
		JetStream: true, StoreDir: store,
	})
	if err != nil {
		t.Fatal(err)
	}
	ns.Start()
	if !ns.ReadyForConnections(30 * time.Second) {
		ns.Shutdown()
		t.Fatal("nats-server not ready")
	}
	t.Cleanup(func() { ns.Shutdown(); ns.WaitForShutdown() })
	return ns
}

// TestSecretsNATS: the password and token of a NATS connection appear in
// no error, log line, printed value, metric or span: refused with a wrong
// password or token, on a port nobody listens on, with bad parameters and
// malformed URLs, and on a working bus whose server goes away and comes
// back (disconnect and reconnect logs).
func TestSecretsNATS(t *testing.T) {
	password := sentinel + "-nats-right-7Qw"
	store := t.TempDir()
	ns := startAuthNATS(t, -1, store, password)
	port := ns.Addr().(*net.TCPAddr).Port
	addr := ns.Addr().String()
	var seen exposure
	log := seen.logger()
	opts := func() *eventbus.Options { return &eventbus.Options{Source: "secrets", Logger: log} }

	refused := map[string]string{
		"wrong password":          "nats://svc:" + sentinel + "-nats-wrong@" + addr + "?max_reconnects=1",
		"token in user info":      "nats://" + sentinel + "-nats-token@" + addr + "?max_reconnects=1",
		"unreachable":             "nats://svc:" + password + "@127.0.0.1:1?connect_timeout=300ms",
		"secret-named parameter":  "nats://svc:" + password + "@127.0.0.1:1?connect_timeout=300ms&password=" + sentinel + "-q",
		"unknown parameter":       "nats://svc:" + password + "@" + addr + "?bogus=1",
		"bad parameter":           "nats://svc:" + password + "@" + addr + "?ack_wait=-1s&jetstream=maybe",
		"path":                    "nats://svc:" + password + "@" + addr + "/somewhere",
		"unescaped slash":         "nats://svc:123/" + sentinel + "-slash@" + addr,
		"unescaped hash":          "nats://svc:" + sentinel + "#hash@" + addr,
		"bad escape":              "nats://svc:" + sentinel + "%zz@" + addr,
		"malformed query":         "nats://" + addr + "?password=" + sentinel + ";semicolon&connect_timeout=300ms",
		"servers parameter":       "nats://" + addr + "?servers=nats://svc:" + sentinel + "-second@127.0.0.1:1&connect_timeout=300ms",
		"wrong scheme":            "tcp://svc:" + password + "@" + addr,
		"tls to a plain listener": "tls://svc:" + password + "@" + addr + "?connect_timeout=1s",
	}
	for name, raw := range refused {
		ctx := ctxFor(t, 20*time.Second)
		if _, err := eventbus.Open(ctx, raw, opts()); err == nil {
			t.Errorf("%s: Open succeeded", name)
		} else {
			seen.err(t, name+": Open", err)
		}
		b := eventbus.New(opts())
		seen.err(t, name+": RegisterURL", b.RegisterURL(ctx, "nats", raw))
		if err := b.Close(ctx); err != nil {
			t.Error(err)
		}
		seen.err(t, name+": CheckURL or OpenURL", errors.Join(driver.CheckURL(raw), openURL(ctx, raw, log)))
	}
	off := false
	for name, cfg := range map[string]*natsbus.Config{
		"Config.Password": {Servers: []string{"nats://" + addr}, User: "svc", Password: sentinel + "-cfg-wrong"},
		"Config.Token":    {Servers: []string{"nats://" + addr}, Token: sentinel + "-cfg-token"},
		"Config.Servers":  {Servers: []string{"nats://svc:" + sentinel + "-cfg-url@" + addr}},
		"Config invalid":  {Servers: []string{"nats://svc:" + sentinel + "-cfg-bad@"}, Token: sentinel + "-both", Password: password},
	} {
		cfg.MaxReconnects, cfg.Logger, cfg.JetStream = 1, log, &off
		seen.err(t, name+": Validate or Open", errors.Join(cfg.Validate(), openConfig(ctxFor(t, 20*time.Second), cfg)))
	}

	// A working bus, observed by telemetry, whose server shuts down and
	// starts again on its port and store.
	tp, spans := tracingProvider(t)
	reader := sdkmetric.NewManualReader()
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))
	t.Cleanup(func() { _ = mp.Shutdown(context.Background()) })
	obs, err := telemetry.New(&telemetry.Options{TracerProvider: tp, MeterProvider: mp, Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	o := opts()
	o.Observer = obs
	o.Retry = eventbus.RetryPolicy{MaxAttempts: 2, InitialBackoff: time.Millisecond, MaxBackoff: time.Millisecond}
	ctx := ctxFor(t, 2*time.Minute)
	bus, err := eventbus.Open(ctx, "nats://svc:"+password+"@"+addr+"?reconnect_wait=50ms&ack_wait=2s&stream_prefix=SECRETS", o)
	if err != nil {
		t.Fatalf("open with the right password: %v", err)
	}
	t.Cleanup(func() {
		if err := bus.Close(context.Background()); err != nil && !errors.Is(err, eventbus.ErrClosed) {
			t.Error(err)
		}
	})
	delivered := make(chan string, 16)
	_, err = bus.SubscribeEvents(ctx, []string{"secret.checked"}, "auditors", eventbus.HandlerFunc(func(_ context.Context, m *eventbus.Message) error {
		delivered <- m.ID
		if m.ID == "poison" {
			return eventbus.Permanent(errors.New("refused"))
		}
		return nil
	}))
	if err != nil {
		t.Fatal(err)
	}
	if err := bus.Start(ctx); err != nil {
		t.Fatal(err)
	}
	stopWatch, err := obs.Watch(bus)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = stopWatch() }()
	// awaitID waits for id; the message published while the server was
	// down may come before, once the client's buffer is flushed.
	awaitID := func(id string) {
		t.Helper()
		for {
			select {
			case got := <-delivered:
				if got == id {
					return
				}
			case <-ctx.Done():
				t.Fatalf("%q never delivered", id)
			}
		}
	}
	for _, id := range []string{"a", "poison"} {
		if err := bus.PublishEvent(ctx, &eventbus.Message{ID: id, Type: "secret.checked", Data: []byte(`{}`)}); err != nil {
			t.Fatal(err)
		}
		awaitID(id)
	}
	_, err = bus.Query(ctxFor(t, 5*time.Second), "nobody", &eventbus.Message{Type: "secret.asked"})
	seen.err(t, "query without responders", err)
	seen.value("Backends", bus.Backends())
	seen.value("Health", bus.Health(ctx))
	seen.value("Lag", bus.Lag(ctx))
	seen.value("readiness", (&telemetry.Health{Bus: bus}).Check(ctx))

	ns.Shutdown()
	ns.WaitForShutdown()
	waitUntil(t, ctx, "a disconnect logged", func() bool { return seen.contains("disconnected") })
	pctx, cancel := context.WithTimeout(ctx, time.Second)
	seen.err(t, "publish while the server is down", bus.PublishEvent(pctx, &eventbus.Message{Type: "secret.checked"}))
	cancel()
	seen.value("Health while down", bus.Health(ctx))
	seen.value("readiness while down", (&telemetry.Health{Bus: bus}).Check(ctx))
	startAuthNATS(t, port, store, password)
	waitUntil(t, ctx, "a reconnect logged", func() bool { return seen.contains("reconnected") })
	if err := bus.PublishEvent(ctx, &eventbus.Message{ID: "b", Type: "secret.checked", Data: []byte(`{}`)}); err != nil {
		t.Fatal(err)
	}
	awaitID("b")
	seen.value("Stats", bus.Stats())
	if s := bus.Stats(); s.Handled < 2 || s.DeadLettered != 1 {
		t.Errorf("stats %+v, want 2 or 3 handled and 1 dead-lettered", s)
	}
	if err := bus.Close(ctx); err != nil {
		t.Error(err)
	}
	seen.err(t, "publish after close", bus.PublishEvent(ctx, &eventbus.Message{Type: "secret.checked"}))

	var rm metricdata.ResourceMetrics
	if err := reader.Collect(ctx, &rm); err != nil {
		t.Fatal(err)
	}
	var metrics []string
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			// The data points with their labels.
			metrics = append(metrics, fmt.Sprintf("metric %s: %+v", m.Name, m.Data))
		}
	}
	if all := strings.Join(metrics, "\n"); len(metrics) < 5 || !strings.Contains(all, "events.secret.checked") {
		t.Errorf("%d metrics, want a few labelled with their destination:\n%s", len(metrics), all)
	}
	for _, m := range metrics {
		seen.add("metric", m)
	}
	ended := spans.Ended()
	if len(ended) < 6 {
		t.Errorf("%d spans, want at least 6", len(ended))
	}
	for _, s := range ended {
		seen.value("span "+s.Name(), []any{s.Attributes(), s.Events(), s.Links(), s.Status(), s.Resource().Attributes()})
	}
	if !seen.contains(`msg="natsbus: reconnected"`) {
		t.Error("no reconnect logged")
	}
	seen.check(t, 80)
}

func openURL(ctx context.Context, raw string, log *slog.Logger) error {
	d, err := driver.OpenURL(ctx, raw, &driver.OpenOptions{Logger: log})
	if err == nil {
		_ = d.Close(ctx)
		return errors.New("opened")
	}
	return err
}

func openConfig(ctx context.Context, cfg *natsbus.Config) error {
	d, err := natsbus.Open(ctx, cfg)
	if err == nil {
		_ = d.Close(ctx)
		return errors.New("opened")
	}
	return err
}

func tracingProvider(t *testing.T) (*sdktrace.TracerProvider, *tracetest.SpanRecorder) {
	sr := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(sr))
	t.Cleanup(func() { _ = tp.Shutdown(context.Background()) })
	return tp, sr
}

// waitUntil polls cond until it holds or ctx ends.
func waitUntil(t *testing.T, ctx context.Context, what string, cond func() bool) {
	t.Helper()
	for !cond() {
		select {
		case <-ctx.Done():
			t.Fatalf("timed out waiting for %s", what)
		case <-time.After(10 * time.Millisecond):
		}
	}
}

// secretsYAML is a configuration with a secret in every backend URL and in
// the saga store's, none of which can be reached. Its backends are those
// named in only, or all when only is empty.
func secretsYAML(only ...string) string {
	backends := []struct{ name, yaml string }{
		{"nats", "url: nats://svc:" + sentinel + "-nats-pw@127.0.0.1:1?connect_timeout=300ms&max_reconnects=1"},
		{"tok", "url: nats://" + sentinel + "-nats-token@127.0.0.1:1?connect_timeout=300ms&max_reconnects=1"},
		{"kafka", "url: kafka://svc:" + sentinel + "-kafka-pw@127.0.0.1:1?sasl_mechanism=PLAIN&sasl_allow_plaintext=true"},
		{"rabbit", "url: amqp://svc:${RABBIT_PASSWORD}@127.0.0.1:1/"},
		{"redis", "url: redis://svc:" + sentinel + "-redis-pw@127.0.0.1:1/0\n    options:\n      dial_timeout: 300ms\n      sentinel_password: " + sentinel + "-redis-sentinel"},
		{"aws", "url: aws://us-east-1?endpoint=http://127.0.0.1:1&access_key_id=AKIDSECRETS&secret_access_key=" + sentinel + "-aws-secret&session_token=" + sentinel + "-aws-token"},
	}
	var b strings.Builder
	b.WriteString("source: secrets\nbackends:\n")
	for _, be := range backends {
		if len(only) == 0 || strings.Contains(strings.Join(only, ","), be.name) {
			fmt.Fprintf(&b, "  %s:\n    %s\n", be.name, be.yaml)
		}
	}
	b.WriteString("saga:\n  store: postgres://svc:" + sentinel + "-pg-pw@127.0.0.1:1/orders?sslmode=disable&connect_timeout=1\n")
	return b.String()
}

// secretsEnv is the environment of secretsYAML.
var secretsEnv = map[string]string{"RABBIT_PASSWORD": sentinel + "-rabbit-pw"}

func secretsLookup() *config.Options {
	return &config.Options{LookupEnv: func(k string) (string, bool) { v, ok := secretsEnv[k]; return v, ok }}
}

// TestSecretsConfig: a configuration with a secret in every backend URL
// (NATS password and token, Kafka SASL, RabbitMQ through an environment
// variable, Redis and its Sentinel, AWS secret key and session token) and in
// the saga store's shows none of them: printed, logged, in the problems of
// a bad file, and in the errors of opening backends that cannot be reached.
func TestSecretsConfig(t *testing.T) {
	var seen exposure
	log := seen.logger()
	c, err := config.Parse("secrets.yaml", []byte(secretsYAML()), secretsLookup())
	if err != nil {
		t.Fatalf("a valid configuration: %v", err)
	}
	if len(c.Backends) != 6 || !strings.Contains(c.Backends[0].URL, sentinel) {
		t.Fatalf("backends %d, the first without its password", len(c.Backends))
	}
	seen.value("Config", c)
	seen.value("*Config", *c)
	seen.value("Backends", c.Backends)
	seen.value("Backend", c.Backends[3])
	log.Info("configuration", "config", c, "backends", c.Backends, "backend", c.Backends[3])
	for _, v := range []any{c, c.Backends} {
		js, err := json.Marshal(v)
		if err != nil {
			t.Fatal(err)
		}
		seen.add("JSON", string(js))
	}
	seen.value("Options", c.Options(nil))
	seen.err(t, "Redact", c.Redact(fmt.Errorf("made of %s", c.Backends[2].URL)))

	// Problems of the file, each next to a secret.
	for name, edit := range map[string]func(string) string{
		"unknown key": func(s string) string {
			return strings.Replace(s, "    url: amqp", "    urls: amqp", 1)
		},
		"unknown backend": func(s string) string { return s + "default_backend: nowhere\n" },
		"unknown scheme": func(s string) string {
			return strings.Replace(s, "url: kafka://", "url: kafkax://", 1)
		},
		"unknown parameter": func(s string) string {
			return strings.Replace(s, "max_reconnects=1", "max_reconnects=1&bogus="+sentinel+"-param", -1)
		},
		"bad parameter": func(s string) string {
			return strings.Replace(s, "connect_timeout=300ms", "connect_timeout=soon", -1)
		},
		"unset variable": func(s string) string { return strings.Replace(s, "RABBIT_PASSWORD", "NOT_SET", 1) },
		"wrong type": func(s string) string {
			return strings.Replace(s, "sentinel_password: "+sentinel+"-redis-sentinel", "sentinel_password: {v: "+sentinel+"-redis-sentinel}", 1)
		},
		"malformed URL": func(s string) string {
			return strings.Replace(s, "-kafka-pw@", "-kafka-pw%zz@", 1)
		},
		"unescaped slash": func(s string) string {
			return strings.Replace(s, "svc:"+sentinel+"-nats-pw@", "svc:123/"+sentinel+"-nats-pw@", 1)
		},
		"bad store": func(s string) string { return strings.Replace(s, "connect_timeout=1", "max_conns=many", 1) },
		"YAML syntax": func(s string) string {
			return strings.Replace(s, "  kafka:\n", "  kafka: [\n", 1)
		},
	} {
		data := edit(secretsYAML())
		if data == secretsYAML() {
			t.Fatalf("%s: the edit changed nothing", name)
		}
		_, err := config.Parse("secrets.yaml", []byte(data), secretsLookup())
		seen.err(t, "Parse, "+name, err)
		path := filepath.Join(t.TempDir(), "eventbus.yaml")
		if err := os.WriteFile(path, []byte(data), 0o600); err != nil {
			t.Fatal(err)
		}
		_, err = config.Open(ctxFor(t, 20*time.Second), path, &eventbus.Options{Logger: log}, secretsLookup())
		seen.err(t, "Open, "+name, err)
	}
	env := map[string]string{
		"EVENTBUS_BACKENDS_EXTRA_URL": "nats://svc:" + sentinel + "-env-pw@127.0.0.1:1?bogus=1",
		"EVENTBUS_SAGA_STORE":         "postgres://svc:" + sentinel + "-env-pg@127.0.0.1:1/db?max_conns=x",
	}
	_, err = config.Parse("env.yaml", nil, &config.Options{
		LookupEnv: func(k string) (string, bool) { v, ok := env[k]; return v, ok },
		Environ:   func() []string { return []string{"EVENTBUS_BACKENDS_EXTRA_URL=x", "EVENTBUS_SAGA_STORE=x"} },
	})
	seen.err(t, "Parse, environment", err)

	// Each backend alone, so that each reports its own failure to connect,
	// concurrently to bound the time.
	var wg sync.WaitGroup
	for _, be := range c.Backends {
		wg.Go(func() {
			one, err := config.Parse("one.yaml", []byte(secretsYAML(be.Name)), secretsLookup())
			if err != nil {
				t.Errorf("%s: %v", be.Name, err)
				return
			}
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			s, err := one.Open(ctx, &eventbus.Options{Logger: log})
			if err == nil {
				_ = s.Close(ctx)
				t.Errorf("%s: opened a backend that cannot be reached", be.Name)
				return
			}
			seen.err(t, "open "+be.Name, err)
		})
	}
	wg.Go(func() {
		_, err := c.OpenSagaStore(ctxFor(t, 10*time.Second))
		seen.err(t, "OpenSagaStore", err)
	})
	wg.Wait()
	seen.check(t, 30)
}

// TestSecretsCLI: the eventbus command, given secrets by flag, URL,
// environment or configuration file, shows none on its output, whether the
// server refuses them, cannot be reached, or the file is bad.
func TestSecretsCLI(t *testing.T) {
	start := time.Now()
	bin := buildCLI(t)
	t.Logf("built the command in %v", time.Since(start).Round(time.Millisecond))
	start = time.Now()
	password := sentinel + "-cli-right"
	ns := startAuthNATS(t, -1, t.TempDir(), password)
	addr := ns.Addr().String()
	dir := t.TempDir()
	good := filepath.Join(dir, "unreachable.yaml")
	if err := os.WriteFile(good, []byte(secretsYAML("nats", "rabbit", "redis")), 0o600); err != nil {
		t.Fatal(err)
	}
	bad := filepath.Join(dir, "bad.yaml")
	if err := os.WriteFile(bad, []byte(strings.Replace(secretsYAML(), "max_reconnects=1", "max_reconnects=1&bogus=1", -1)+"nonsense: "+sentinel+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	short := []string{"--connect-timeout", "1s"}
	type run struct {
		args []string
		env  []string
	}
	runs := map[string]run{
		"wrong password in URL":  {args: []string{"publish", "secret.checked", "{}", "--url", "nats://svc:" + sentinel + "-cli-wrong@" + addr}},
		"wrong password flag":    {args: []string{"listen", "secret.checked", "--count", "1", "--url", addr, "--user", "svc", "--password", sentinel + "-cli-flag"}},
		"wrong token flag":       {args: []string{"query", "svc", "secret.asked", "{}", "--url", addr, "--token", sentinel + "-cli-token"}},
		"token in URL":           {args: []string{"publish", "secret.checked", "{}", "--url", sentinel + "-cli-token@" + addr}},
		"password from env":      {args: []string{"publish", "secret.checked", "{}", "--url", addr, "--user", "svc"}, env: []string{"NATS_PASSWORD=" + sentinel + "-cli-env"}},
		"URL from env":           {args: []string{"listen", "secret.checked", "--count", "1"}, env: []string{"NATS_URL=nats://svc:" + sentinel + "-cli-envurl@" + addr}},
		"unreachable":            {args: []string{"publish", "secret.checked", "{}", "--url", "nats://svc:" + password + "@127.0.0.1:1"}},
		"unreachable listen":     {args: []string{"listen", "secret.checked", "--url", "nats://svc:" + password + "@127.0.0.1:1"}},
		"unreachable query":      {args: []string{"query", "svc", "secret.asked", "{}", "--url", "nats://svc:" + password + "@127.0.0.1:1,nats://" + sentinel + "-cli-tok2@127.0.0.1:2"}},
		"malformed URL":          {args: []string{"publish", "secret.checked", "{}", "--url", "nats://svc:" + sentinel + "%zz@" + addr}},
		"config unreachable":     {args: []string{"publish", "secret.checked", "{}", "--config", good}, env: []string{"RABBIT_PASSWORD=" + secretsEnv["RABBIT_PASSWORD"]}},
		"config listen":          {args: []string{"listen", "secret.checked", "--config", good}, env: []string{"RABBIT_PASSWORD=" + secretsEnv["RABBIT_PASSWORD"]}},
		"config query":           {args: []string{"query", "svc", "secret.asked", "{}"}, env: []string{"EVENTBUS_CONFIG=" + good, "RABBIT_PASSWORD=" + secretsEnv["RABBIT_PASSWORD"]}},
		"bad config":             {args: []string{"publish", "secret.checked", "{}", "--config", bad}, env: []string{"RABBIT_PASSWORD=" + secretsEnv["RABBIT_PASSWORD"]}},
		"config and URL":         {args: []string{"publish", "secret.checked", "{}", "--config", bad, "--url", "nats://svc:" + sentinel + "-cli-both@" + addr}},
		"respond unreachable":    {args: []string{"respond", "svc", "secret.asked", "--reply", "{}", "--url", "nats://svc:" + password + "@127.0.0.1:1"}},
		"dead letters":           {args: []string{"dlq", "list", "--url", "nats://svc:" + sentinel + "-cli-dlq@" + addr}},
		"saga store flag":        {args: []string{"saga", "list", "--store", "postgres://svc:" + sentinel + "-cli-pg@127.0.0.1:1/db?connect_timeout=1&bogus=1"}},
		"saga store env":         {args: []string{"saga", "show", "x"}, env: []string{"EVENTBUS_SAGA_STORE=postgres://svc:" + sentinel + "-cli-pgenv@127.0.0.1:1/db?connect_timeout=1"}},
		"right password, no one": {args: []string{"query", "svc", "secret.asked", "{}", "--url", "nats://svc:" + password + "@" + addr, "--timeout", "1s"}},
	}
	defer func() { t.Logf("%d runs in %v", len(runs), time.Since(start).Round(time.Millisecond)) }()
	var seen exposure
	var wg sync.WaitGroup
	sem := make(chan struct{}, 8)
	for name, r := range runs {
		wg.Go(func() {
			sem <- struct{}{}
			defer func() { <-sem }()
			ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
			defer cancel()
			cmd := exec.CommandContext(ctx, bin, append(r.args, short...)...)
			cmd.Env = append(cleanEnv(), r.env...)
			var out bytes.Buffer
			cmd.Stdout, cmd.Stderr = &out, &out
			err := cmd.Run()
			var ee *exec.ExitError
			if !errors.As(err, &ee) || !strings.Contains(out.String(), "error: ") {
				t.Errorf("%s: %v, want a failure exit status and an error\n%s", name, err, out.String())
			}
			seen.add(name+" (exit "+strconv.Itoa(cmd.ProcessState.ExitCode())+")", out.String())
		})
	}
	wg.Wait()
	seen.check(t, len(runs))
}

// buildCLI builds the eventbus command into a directory of the test.
func buildCLI(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "eventbus")
	// Without a symbol table and DWARF the link takes half the time.
	out, err := exec.Command(goTool(), "build", "-ldflags=-s -w", "-o", bin, "../cmd/eventbus").CombinedOutput()
	if err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

// cleanEnv is the environment without the tool's variables.
func cleanEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "EVENTBUS_") && !strings.HasPrefix(kv, "NATS_") {
			env = append(env, kv)
		}
	}
	return env
}
