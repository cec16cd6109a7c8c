package kafkabus_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/marty-msf/eventbus/driver"
	"github.com/marty-msf/eventbus/driver/drivertest"
	"github.com/marty-msf/eventbus/kafkabus"
)

func TestConformance(t *testing.T) {
	drivertest.RunConformanceTests(t, drivertest.Harness{
		Open:  func(ctx context.Context) (driver.Driver, error) { return openCuttable(ctx) },
		Crash: crash,
	})
}

func TestDeadLetters(t *testing.T) {
	drivertest.RunDeadLetterTests(t, drivertest.Harness{
		Open: func(ctx context.Context) (driver.Driver, error) { return kafkabus.Open(ctx, testConfig()) },
		InjectDeadLetter: func(ctx context.Context, d driver.Driver, dl driver.Destination, body []byte) error {
			kd := d.(*kafkabus.Driver)
			// The topic may not exist yet: the broker of the tests creates
			// none by itself.
			if _, err := kd.Admin().CreateTopic(ctx, 4, -1, nil, kd.Topic(dl)); err != nil && !errors.Is(err, kerr.TopicAlreadyExists) {
				return err
			}
			return kd.Client().ProduceSync(ctx, &kgo.Record{Topic: kd.Topic(dl), Value: body}).FirstErr()
		},
	})
}

// links holds the network of every driver opened by openCuttable.
var links sync.Map // *kafkabus.Driver → *link

// link is a driver's network: cut, it closes every connection it dialled
// and refuses new ones, as the death of the driver's process would, so
// that its group memberships end only with their session timeouts.
type link struct {
	mu    sync.Mutex
	cut   bool
	conns []net.Conn
}

func (l *link) dial(ctx context.Context, network, host string) (net.Conn, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.cut {
		return nil, errors.New("link cut")
	}
	var d net.Dialer
	c, err := d.DialContext(ctx, network, host)
	if err == nil {
		l.conns = append(l.conns, c)
	}
	return c, err
}

func (l *link) sever() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.cut = true
	for _, c := range l.conns {
		_ = c.Close()
	}
}

// openCuttable opens a driver on the test broker whose link crash can cut.
func openCuttable(ctx context.Context) (*kafkabus.Driver, error) {
	l := &link{}
	cfg := testConfig()
	cfg.Dialer = l.dial
	d, err := kafkabus.Open(ctx, cfg)
	if err == nil {
		links.Store(d, l)
	}
	return d, err
}

// crash is Harness.Crash: the driver's connections are cut underneath it,
// once the broker holds the delivered marks of what it handed out. A member
// that dies sooner (within 50 ms and a round trip of a hand-out, the window
// the package documents) leaves the next delivery's Attempt one short, which
// is what the suite's crash test would otherwise catch on a busy machine.
func crash(d driver.Driver) error {
	l, ok := links.Load(d)
	if !ok {
		return errors.New("not a driver of openCuttable")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for {
		done, err := kafkabus.MarksCommitted(ctx, d.(*kafkabus.Driver))
		if done {
			break
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("the delivered marks were not committed within 30s (last error %v)", err)
		case <-time.After(10 * time.Millisecond):
		}
	}
	l.(*link).sever()
	return nil
}
