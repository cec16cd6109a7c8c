package drivertest_test

import (
	"context"
	"errors"
	"maps"
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
	{"expires-held", "Settlement/HeldBatch"},
	{"acks-whole-batches", "Settlement/HeldBatch"},
	{"close-is-crash", "Settlement/CloseGivesBack"},
	{"crash-loses-unsettled", "Settlement/CrashRedelivers"},
	{"close-ignores-deadline", "Close/DeadlineKept"},
	{"dedups-by-id", "Deduplication/DistinctSourcesAndDestinations"},
	{"claims-dedup", "Deduplication/Republish"},
	{"trims-ids", "Envelope/DistinctIDs"},
	{"drops-bad-extensions", "Envelope/ExtensionNames"},
	{"drops-bad-headers", "Envelope/HeaderNames"},
	{"loses-mode", "ContentMode"},
	{"declare-is-noop", "DeclareGroup"},
}

const faultEnv = "DRIVERTEST_FAULT"

// concurrentFaults is how many child processes run at once. They spend most
// of their time waiting out timeouts, not computing, so more of them than
// there are CPUs run at once.
const concurrentFaults = 8

// TestSuiteDetectsFaults runs the suite on each faulty driver in a child
// process and checks that it fails where it should.
func TestSuiteDetectsFaults(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the suite once per fault")
	}
	type result struct {
		out []byte
		err error
	}
	results := make([]chan result, len(faults))
	slots := make(chan struct{}, concurrentFaults)
	for i, f := range faults {
		results[i] = make(chan result, 1)
		go func() {
			slots <- struct{}{}
			defer func() { <-slots }()
			run := "^TestFaultyDriver$"
			for _, name := range strings.Split(f.failIn, "/") {
				run += "/^" + name + "$"
			}
			cmd := exec.CommandContext(t.Context(), os.Args[0], "-test.run="+run, "-test.v", "-test.count=1")
			cmd.Env = append(os.Environ(), faultEnv+"="+f.name)
			out, err := cmd.CombinedOutput()
			results[i] <- result{out, err}
		}()
	}
	// Every subtest waits for its child, so no goroutine outlives the test.
	for i, f := range faults {
		t.Run(f.name, func(t *testing.T) {
			r := <-results[i]
			var exit *exec.ExitError
			if !errors.As(r.err, &exit) {
				t.Fatalf("the suite passed on a driver with fault %s (err %v):\n%s", f.name, r.err, r.out)
			}
			want := regexp.MustCompile(`(?m)^\s*--- FAIL: TestFaultyDriver/` + regexp.QuoteMeta(f.failIn) + `\b`)
			if !want.Match(r.out) {
				t.Errorf("fault %s: the suite did not fail in %s:\n%s", f.name, f.failIn, r.out)
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
	// The faulty drivers lose messages on purpose: waiting 10 s for each is
	// time lost.
	drivertest.SetDeliveryTimeout(3 * time.Second)
	broker := membus.New(nil)
	t.Cleanup(func() { _ = broker.Close(context.Background()) })
	seen := &seenIDs{ids: make(map[string]bool)}
	drivertest.RunConformanceTests(t, drivertest.Harness{
		Open: func(context.Context) (driver.Driver, error) {
			return newFaulty(name, broker.Connect(), seen), nil
		},
		Crash:        func(d driver.Driver) error { faultyOf(d).crash(); return nil },
		Deduplicates: name == "dedups-by-id" || name == "claims-dedup",
	})
}

// seenIDs is the memory of the "dedups-by-id" fault, shared by the
// connections of one broker.
type seenIDs struct {
	mu  sync.Mutex
	ids map[string]bool
}

// faulty wraps a membus connection and breaks the contract as its fault says.
type faulty struct {
	fault string
	*membus.Driver
	published atomic.Int64
	seen      *seenIDs

	mu        sync.Mutex
	held      *driver.Delivery
	heldReply *driver.Message
	subs      []*faultySub
}

// faultyRR is a faulty driver that still exposes request/reply.
type faultyRR struct{ *faulty }

func newFaulty(name string, d *membus.Driver, seen *seenIDs) driver.Driver {
	f := &faulty{fault: name, Driver: d, seen: seen}
	if name == "hides-request-replier" {
		return struct{ driver.Driver }{f}
	}
	return faultyRR{f}
}

// faultyOf returns the faulty driver that newFaulty wrapped.
func faultyOf(d driver.Driver) *faulty {
	switch d := d.(type) {
	case faultyRR:
		return d.faulty
	case struct{ driver.Driver }:
		return d.Driver.(*faulty)
	}
	panic("not a faulty driver")
}

// crash is Harness.Crash: membus's simulated crash, which the
// "crash-loses-unsettled" fault precedes by settling for good what its
// subscriptions hold, so that nothing is redelivered.
func (f *faulty) crash() {
	if f.fault == "crash-loses-unsettled" {
		f.mu.Lock()
		subs := slices.Clone(f.subs)
		f.mu.Unlock()
		for _, s := range subs {
			for _, d := range s.received() {
				_ = s.Subscription.Term(context.Background(), []*driver.Delivery{d})
			}
		}
	}
	f.Driver.Crash()
}

func (f *faulty) Close(ctx context.Context) error {
	if f.fault == "close-is-crash" {
		f.Driver.Crash()
		return nil
	}
	return f.wrapErr(f.Driver.Close(ctx))
}

func (f *faulty) DeclareGroup(ctx context.Context, dest driver.Destination, opts driver.SubscribeOptions) error {
	if f.fault == "declare-is-noop" {
		return nil
	}
	return f.Driver.DeclareGroup(ctx, dest, opts)
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
	var dup error
	switch f.fault {
	case "drop-every-500th":
		kept := msgs[:0:0]
		for _, m := range msgs {
			if f.published.Add(1)%500 != 0 {
				kept = append(kept, m)
			}
		}
		msgs = kept
	case "dedups-by-id":
		kept := msgs[:0:0]
		f.seen.mu.Lock()
		for _, m := range msgs {
			if f.seen.ids[m.ID] {
				dup = driver.ErrDuplicate
				continue
			}
			f.seen.ids[m.ID] = true
			kept = append(kept, m)
		}
		f.seen.mu.Unlock()
		msgs = kept
	case "trims-ids", "drops-bad-extensions", "drops-bad-headers":
		// Repair what CheckEnvelope would refuse, instead of refusing it.
		fixed := make([]*driver.Message, len(msgs))
		for i, m := range msgs {
			m = m.Clone()
			switch f.fault {
			case "trims-ids":
				m.ID = strings.TrimSpace(m.ID)
			case "drops-bad-extensions":
				maps.DeleteFunc(m.Extensions, func(name, _ string) bool { return driver.ExtensionNameProblem(name) != "" })
			case "drops-bad-headers":
				maps.DeleteFunc(m.Header, func(name string, _ []string) bool { return driver.HeaderNameProblem(name) != "" })
			}
			fixed[i] = m
		}
		msgs = fixed
	}
	if err := f.Driver.Publish(ctx, dest, msgs); err != nil {
		return f.wrapErr(err)
	}
	return dup
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
	fs := &faultySub{f: f, Subscription: sub, ackWait: opts.AckWait, batchOf: make(map[*driver.Delivery]*heldBatch)}
	if fs.ackWait <= 0 {
		fs.ackWait = membus.DefaultAckWait
	}
	f.mu.Lock()
	f.subs = append(f.subs, fs)
	f.mu.Unlock()
	return fs, nil
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
	ackWait time.Duration
	closing sync.Once

	mu  sync.Mutex
	got []*driver.Delivery
	// batchOf holds, for "acks-whole-batches", the Receive batch of every
	// delivery not acked yet.
	batchOf map[*driver.Delivery]*heldBatch
}

// heldBatch is one Receive batch whose acks "acks-whole-batches" holds back
// until every delivery of it was acked.
type heldBatch struct {
	ds    []*driver.Delivery
	acked int
}

func (s *faultySub) received() []*driver.Delivery {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.got)
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
	case "loses-mode":
		for _, d := range ds {
			d.Message.Mode = driver.Binary
		}
	case "expires-held":
		// A broker whose deadline the driver does not extend redelivers
		// after the ack wait, however alive the subscription is.
		for _, d := range ds {
			time.AfterFunc(s.ackWait, func() { _ = s.Subscription.Nack(context.Background(), []*driver.Delivery{d}, 0) })
		}
	case "acks-whole-batches":
		b := &heldBatch{ds: slices.Clone(ds)}
		s.mu.Lock()
		for _, d := range ds {
			s.batchOf[d] = b
		}
		s.mu.Unlock()
	}
	s.mu.Lock()
	s.got = append(s.got, ds...)
	s.mu.Unlock()
	return ds, nil
}

func (s *faultySub) Ack(ctx context.Context, ds []*driver.Delivery) error {
	switch s.f.fault {
	case "ack-is-noop":
		return nil
	case "duplicates":
		ds = uniqueDeliveries(ds)
	case "acks-whole-batches":
		var ready []*driver.Delivery
		s.mu.Lock()
		for _, d := range ds {
			if b := s.batchOf[d]; b != nil {
				delete(s.batchOf, d)
				if b.acked++; b.acked == len(b.ds) {
					ready = append(ready, b.ds...)
				}
			}
		}
		s.mu.Unlock()
		ds = ready
		if len(ds) == 0 {
			return nil
		}
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
	if s.f.fault == "close-ignores-deadline" {
		s.closing.Do(func() { time.Sleep(3 * time.Second) })
	}
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
