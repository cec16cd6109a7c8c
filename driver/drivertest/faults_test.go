package drivertest_test

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"regexp"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/marty-msf/eventbus/driver"
	"github.com/marty-msf/eventbus/driver/drivertest"
	"github.com/marty-msf/eventbus/membus"
)

// A fault turns membus into a driver that breaks one promise of the
// contract. The suite must notice it in the subtest named by failIn.
type fault struct {
	name   string
	failIn string
}

var faults = []fault{
	{"drop-every-500th", "Load"},
	{"receive-over-max", "Batches"},
	{"claims-smaller-limit", "MaxMessageSize"},
	{"strips-headers", "Attributes"},
	{"coarse-time", "Attributes"},
	{"ack-is-noop", "Settlement/AckNoRedelivery"},
	{"term-is-nack", "Settlement/TermNoRedelivery"},
	{"attempt-always-1", "Settlement/NackRedelivers"},
	{"nack-ignores-delay", "Settlement/NackDelay"},
	{"reverses-batches", "OrderByKey"},
	{"duplicates", "CompetingConsumers"},
	{"hides-request-replier", "Capabilities"},
	{"closed-is-not-errclosed", "Close"},
	{"swaps-replies", "RequestReply/Concurrent"},
	{"ignores-max-in-flight", "Settlement/MaxInFlight"},
	{"forgets-durable", "Settlement/DurableResume"},
}

const faultEnv = "DRIVERTEST_FAULT"

// TestSuiteDetectsFaults runs the suite on each faulty driver in a child
// process and checks that it fails where it should.
func TestSuiteDetectsFaults(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the suite once per fault")
	}
	for _, f := range faults {
		t.Run(f.name, func(t *testing.T) {
			t.Parallel()
			run := "^TestFaultyDriver$"
			for _, name := range strings.Split(f.failIn, "/") {
				run += "/^" + name + "$"
			}
			cmd := exec.CommandContext(t.Context(), os.Args[0], "-test.run="+run, "-test.v", "-test.count=1")
			cmd.Env = append(os.Environ(), faultEnv+"="+f.name)
			out, err := cmd.CombinedOutput()
			var exit *exec.ExitError
			if !errors.As(err, &exit) {
				t.Fatalf("the suite passed on a driver with fault %s (err %v):\n%s", f.name, err, out)
			}
			want := regexp.MustCompile(`(?m)^\s*--- FAIL: TestFaultyDriver/` + regexp.QuoteMeta(f.failIn) + `\b`)
			if !want.Match(out) {
				t.Errorf("fault %s: the suite did not fail in %s:\n%s", f.name, f.failIn, out)
			}
		})
	}
}

// TestFaultyDriver is run by TestSuiteDetectsFaults in a child process.
func TestFaultyDriver(t *testing.T) {
	name := os.Getenv(faultEnv)
	if name == "" {
		t.Skip("run by TestSuiteDetectsFaults")
	}
	broker := membus.New(nil)
	t.Cleanup(func() { _ = broker.Close(context.Background()) })
	drivertest.RunConformanceTests(t, drivertest.Harness{
		Open: func(context.Context) (driver.Driver, error) {
			return newFaulty(name, broker.Connect()), nil
		},
	})
}

// faulty wraps a membus connection and breaks the contract as its fault says.
type faulty struct {
	fault string
	*membus.Driver
	published atomic.Int64

	mu        sync.Mutex
	held      *driver.Delivery
	heldReply *driver.Message
}

// faultyRR is a faulty driver that still exposes request/reply.
type faultyRR struct{ *faulty }

func newFaulty(name string, d *membus.Driver) driver.Driver {
	f := &faulty{fault: name, Driver: d}
	if name == "hides-request-replier" {
		return struct{ driver.Driver }{f}
	}
	return faultyRR{f}
}

func (f *faulty) Capabilities() driver.Capabilities {
	c := f.Driver.Capabilities()
	if f.fault == "claims-smaller-limit" {
		c.MaxMessageSize = 4096
	}
	return c
}

func (f *faulty) wrapErr(err error) error {
	if f.fault == "closed-is-not-errclosed" && errors.Is(err, driver.ErrClosed) {
		return errors.New("connection is gone")
	}
	return err
}

func (f *faulty) Publish(ctx context.Context, dest driver.Destination, msgs []*driver.Message) error {
	if f.fault == "drop-every-500th" {
		kept := msgs[:0:0]
		for _, m := range msgs {
			if f.published.Add(1)%500 != 0 {
				kept = append(kept, m)
			}
		}
		msgs = kept
	}
	return f.wrapErr(f.Driver.Publish(ctx, dest, msgs))
}

func (f *faulty) Subscribe(ctx context.Context, dest driver.Destination, opts driver.SubscribeOptions) (driver.Subscription, error) {
	switch f.fault {
	case "ignores-max-in-flight":
		opts.MaxInFlight = 0
	case "forgets-durable":
		opts.Durable = false
	}
	sub, err := f.Driver.Subscribe(ctx, dest, opts)
	if err != nil {
		return nil, f.wrapErr(err)
	}
	return &faultySub{f: f, Subscription: sub}, nil
}

func (r faultyRR) Request(ctx context.Context, dest driver.Destination, req *driver.Message) (*driver.Message, error) {
	reply, err := r.Driver.Request(ctx, dest, req)
	return reply, r.wrapErr(err)
}

func (r faultyRR) Reply(ctx context.Context, d *driver.Delivery, reply *driver.Message) error {
	if r.fault == "swaps-replies" {
		// Hold every other reply back, then answer each of a pair of
		// requests with the other's reply.
		r.mu.Lock()
		held, heldReply := r.held, r.heldReply
		r.held, r.heldReply = nil, nil
		if held == nil {
			r.held, r.heldReply = d, reply
		}
		r.mu.Unlock()
		if held == nil {
			return nil
		}
		if err := r.Driver.Reply(ctx, held, reply); err != nil {
			return err
		}
		reply = heldReply
	}
	return r.wrapErr(r.Driver.Reply(ctx, d, reply))
}

type faultySub struct {
	f *faulty
	driver.Subscription
}

func (s *faultySub) Receive(ctx context.Context, max int) ([]*driver.Delivery, error) {
	if s.f.fault == "receive-over-max" && max > 1 {
		max++
	}
	ds, err := s.Subscription.Receive(ctx, max)
	if err != nil {
		return nil, s.f.wrapErr(err)
	}
	switch s.f.fault {
	case "strips-headers":
		for _, d := range ds {
			d.Message.Header = nil
		}
	case "coarse-time":
		for _, d := range ds {
			d.Message.Time = d.Message.Time.Truncate(time.Second)
		}
	case "attempt-always-1":
		for _, d := range ds {
			d.Attempt = 1
		}
	case "reverses-batches":
		slices.Reverse(ds)
	case "duplicates":
		for _, d := range ds[:len(ds):len(ds)] {
			dup := *d
			dup.Message = d.Message.Clone()
			ds = append(ds, &dup)
		}
	}
	return ds, nil
}

func (s *faultySub) Ack(ctx context.Context, ds []*driver.Delivery) error {
	switch s.f.fault {
	case "ack-is-noop":
		return nil
	case "duplicates":
		ds = uniqueDeliveries(ds)
	}
	return s.f.wrapErr(s.Subscription.Ack(ctx, ds))
}

func (s *faultySub) Nack(ctx context.Context, ds []*driver.Delivery, delay time.Duration) error {
	if s.f.fault == "nack-ignores-delay" {
		delay = 0
	}
	return s.f.wrapErr(s.Subscription.Nack(ctx, ds, delay))
}

func (s *faultySub) Term(ctx context.Context, ds []*driver.Delivery) error {
	if s.f.fault == "term-is-nack" {
		return s.Subscription.Nack(ctx, ds, 0)
	}
	return s.f.wrapErr(s.Subscription.Term(ctx, ds))
}

func (s *faultySub) Close(ctx context.Context) error {
	return s.f.wrapErr(s.Subscription.Close(ctx))
}

// uniqueDeliveries drops the duplicates that the "duplicates" fault made, so
// that membus settles each delivery once.
func uniqueDeliveries(ds []*driver.Delivery) []*driver.Delivery {
	seen := make(map[string]bool, len(ds))
	out := ds[:0:0]
	for _, d := range ds {
		if !seen[d.Message.ID] {
			seen[d.Message.ID] = true
			out = append(out, d)
		}
	}
	return out
}
