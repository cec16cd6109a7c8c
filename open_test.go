package eventbus_test

import (
	"context"
	"errors"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/marty-msf/eventbus"
	"github.com/marty-msf/eventbus/driver"
	_ "github.com/marty-msf/eventbus/membus"
	"github.com/marty-msf/eventbus/natsbus"
)

// The root package, and a program that uses it with membus alone, link no
// broker client or server.
func TestRootLinksNoBroker(t *testing.T) {
	goTool, err := exec.LookPath("go")
	if err != nil {
		t.Fatalf("the go command is needed to list dependencies: %v", err)
	}
	for _, pkgs := range [][]string{
		{"github.com/marty-msf/eventbus"},
		{"github.com/marty-msf/eventbus", "github.com/marty-msf/eventbus/membus"},
	} {
		out, err := exec.Command(goTool, append([]string{"list", "-deps"}, pkgs...)...).CombinedOutput()
		if err != nil {
			t.Fatalf("go list -deps %v: %v\n%s", pkgs, err, out)
		}
		for _, dep := range strings.Fields(string(out)) {
			for _, broker := range []string{
				"github.com/nats-io/", "github.com/jackc/", "modernc.org/", "github.com/twmb/franz-go",
				"github.com/IBM/sarama", "github.com/segmentio/kafka-go", "github.com/rabbitmq/",
				"github.com/redis/", "github.com/aws/", "go.yaml.in/", "gopkg.in/yaml",
				"github.com/marty-msf/eventbus/natsbus", "github.com/marty-msf/eventbus/saga/sqlstore",
			} {
				if strings.HasPrefix(dep, broker) {
					t.Errorf("%v links %s", pkgs, dep)
				}
			}
		}
	}
}

func TestRegisterURL(t *testing.T) {
	b := eventbus.New(&eventbus.Options{Source: "url"})
	must(t, b.RegisterURL(ctxT(t), "fast", "mem://?buffer_size=64"))
	got := make(chan string, 1)
	_, err := b.SubscribeEvents(ctxT(t), []string{"order.placed"}, "", eventbus.Typed(func(_ context.Context, _ *eventbus.Message, v string) error {
		got <- v
		return nil
	}))
	must(t, err)
	must(t, b.Start(ctxT(t)))
	defer b.Close(context.Background())
	must(t, b.PublishEvent(ctxT(t), event(t, "order.placed", "o-1")))
	select {
	case v := <-got:
		if v != "o-1" {
			t.Fatalf("got %q", v)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("not delivered")
	}
	if names := b.Backends(); len(names) != 1 || names[0] != "fast" {
		t.Fatalf("backends %v", names)
	}
}

func TestRegisterURLErrors(t *testing.T) {
	b := eventbus.New(nil)
	defer b.Close(context.Background())
	if err := b.RegisterURL(ctxT(t), "k", "kafka://u:sentinel-9d2@broker:9092"); !errors.Is(err, driver.ErrUnknownScheme) ||
		!strings.Contains(err.Error(), "import github.com/marty-msf/eventbus/kafkabus") || strings.Contains(err.Error(), "sentinel-9d2") {
		t.Errorf("unknown scheme: %v", err)
	}
	if err := b.RegisterURL(ctxT(t), "m", "mem://?bogus=1"); !errors.Is(err, driver.ErrUnknownParam) {
		t.Errorf("unknown parameter: %v", err)
	}
	if err := b.RegisterURL(ctxT(t), "bad name", "mem://"); !errors.Is(err, eventbus.ErrInvalidName) {
		t.Errorf("bad name: %v", err)
	}
	must(t, b.RegisterURL(ctxT(t), "m", "mem://"))
	if err := b.RegisterURL(ctxT(t), "m", "mem://"); err == nil {
		t.Error("a second backend named m was registered")
	}
	must(t, b.Close(ctxT(t)))
	if err := b.RegisterURL(ctxT(t), "n", "mem://"); !errors.Is(err, eventbus.ErrClosed) {
		t.Errorf("after Close: %v", err)
	}
}

func TestOpenNamesTheBackendAfterTheScheme(t *testing.T) {
	b, err := eventbus.Open(ctxT(t), "mem://", nil)
	must(t, err)
	defer b.Close(context.Background())
	if names := b.Backends(); len(names) != 1 || names[0] != "mem" {
		t.Fatalf("backends %v", names)
	}
	if _, err := eventbus.Open(ctxT(t), "amqp://h", nil); !errors.Is(err, driver.ErrUnknownScheme) {
		t.Fatalf("Open amqp: %v", err)
	}
}

func TestStartWithoutBackendSaysWhatToDo(t *testing.T) {
	b := eventbus.New(nil)
	defer b.Close(context.Background())
	err := b.Start(ctxT(t))
	var ce *eventbus.ConfigError
	if !errors.As(err, &ce) || !errors.Is(err, eventbus.ErrNoBackend) ||
		!strings.Contains(err.Error(), `bus.RegisterURL(ctx, "embedded", "embedded:eventbus-data")`) ||
		!strings.Contains(err.Error(), "github.com/marty-msf/eventbus/natsbus") {
		t.Fatalf("Start: %v", err)
	}
}

// The embedded default, one RegisterURL away, keeps what it stores across a
// restart of the process's bus.
func TestEmbeddedDefaultPersists(t *testing.T) {
	dir := t.TempDir()
	got := make(chan string, 10)
	start := func(subscribe bool) *eventbus.Bus {
		b := eventbus.New(&eventbus.Options{Source: "ledger"})
		must(t, b.RegisterURL(ctxT(t), "embedded", natsbus.EmbeddedURL(dir)))
		if subscribe {
			_, err := b.SubscribeEvents(ctxT(t), []string{"entry.posted"}, "ledger", eventbus.Typed(func(_ context.Context, _ *eventbus.Message, v string) error {
				got <- v
				return nil
			}))
			must(t, err)
		}
		must(t, b.Start(ctxT(t)))
		return b
	}
	b := start(true)
	must(t, b.PublishEvent(ctxT(t), event(t, "entry.posted", "first")))
	if v := <-got; v != "first" {
		t.Fatalf("got %q", v)
	}
	must(t, b.Close(ctxT(t)))

	// Published while the group's only member is down...
	b = start(false)
	must(t, b.PublishEvent(ctxT(t), event(t, "entry.posted", "second")))
	must(t, b.Close(ctxT(t)))

	// ...and handled once it is back, from the data directory.
	b = start(true)
	defer b.Close(context.Background())
	select {
	case v := <-got:
		if v != "second" {
			t.Fatalf("after restart got %q, want second", v)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the event published while the group was down never arrived")
	}
}
