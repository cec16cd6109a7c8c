package rabbitbus_test

import (
	"context"
	"errors"
	"net"
	"strconv"
	"sync"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
	"go.uber.org/goleak"

	"github.com/marty-msf/eventbus/driver"
	"github.com/marty-msf/eventbus/internal/testenv"
	"github.com/marty-msf/eventbus/rabbitbus"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// broker is the shared RabbitMQ of the tests, with a prefix of this test's
// own: its queues expire a minute after their last use, and its exchanges
// are deleted when the test ends.
type broker struct {
	url    string
	prefix string

	mu      sync.Mutex
	conns   map[*rabbitbus.Driver]net.Conn
	crashed map[*rabbitbus.Driver]bool
}

func newBroker(t *testing.T) *broker {
	t.Helper()
	b := &broker{
		url:     testenv.AMQPURL(t),
		prefix:  "rbt" + strconv.FormatInt(time.Now().UnixNano(), 36),
		conns:   map[*rabbitbus.Driver]net.Conn{},
		crashed: map[*rabbitbus.Driver]bool{},
	}
	t.Cleanup(func() { b.deleteExchanges(t) })
	return b
}

func (b *broker) config() *rabbitbus.Config {
	return &rabbitbus.Config{URL: b.url, Options: rabbitbus.Options{Prefix: b.prefix, QueueExpiry: time.Minute, GroupExpiry: time.Minute}}
}

// open opens a driver whose TCP connection crash can cut.
func (b *broker) open(ctx context.Context, cfg *rabbitbus.Config) (*rabbitbus.Driver, error) {
	var conn net.Conn
	var self *rabbitbus.Driver
	cfg.Dial = func(network, addr string) (net.Conn, error) {
		b.mu.Lock()
		dead := self != nil && b.crashed[self]
		b.mu.Unlock()
		if dead {
			return nil, errors.New("the process crashed")
		}
		c, err := net.DialTimeout(network, addr, 10*time.Second)
		conn = c
		return c, err
	}
	d, err := rabbitbus.Open(ctx, cfg)
	if err != nil {
		return nil, err
	}
	b.mu.Lock()
	self = d
	b.conns[d] = conn
	b.mu.Unlock()
	return d, nil
}

func (b *broker) harnessOpen(cfg func() *rabbitbus.Config) func(ctx context.Context) (driver.Driver, error) {
	return func(ctx context.Context) (driver.Driver, error) { return b.open(ctx, cfg()) }
}

// crash cuts d's TCP connection under it, as a dying process would: the
// broker requeues what it held. The driver must not reconnect and take its
// deliveries again, so its reconnection dials fail.
func (b *broker) crash(d driver.Driver) error {
	b.mu.Lock()
	c := b.conns[d.(*rabbitbus.Driver)]
	b.crashed[d.(*rabbitbus.Driver)] = true
	b.mu.Unlock()
	return c.Close()
}

func (b *broker) deleteExchanges(t *testing.T) {
	conn, err := amqp.Dial(b.url)
	if err != nil {
		t.Errorf("cleanup: %v", err)
		return
	}
	defer conn.Close()
	ch, err := conn.Channel()
	if err != nil {
		t.Errorf("cleanup: %v", err)
		return
	}
	for _, name := range []string{"events", "commands", "queries", "streams", "broadcast", "replies", "deadletter", "wait", "requeue"} {
		if err := ch.ExchangeDelete(b.prefix+"."+name, false, false); err != nil {
			t.Errorf("cleanup: delete exchange: %v", err)
			return
		}
	}
}

func ctxFor(t testing.TB, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}
