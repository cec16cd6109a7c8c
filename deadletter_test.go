package eventbus_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/marty-msf/eventbus"
	"github.com/marty-msf/eventbus/driver"
	"github.com/marty-msf/eventbus/membus"
	"github.com/marty-msf/eventbus/natsbus"
)

// dlBound bounds every wait of the dead-letter tests: generous, for a loaded
// machine; a wait ends as soon as its condition holds.
const dlBound = 20 * time.Second

func dlCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), dlBound)
	t.Cleanup(cancel)
	return ctx
}

// eventually polls cond until it holds, failing the test after dlBound.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(dlBound)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %s", what, dlBound)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// handled counts what a handler processed, by message id.
type handled struct {
	mu  sync.Mutex
	n   map[string]int
	msg map[string]*eventbus.Message
}

func newHandled() *handled {
	return &handled{n: map[string]int{}, msg: map[string]*eventbus.Message{}}
}

func (h *handled) add(m *eventbus.Message) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.n[m.ID]++
	h.msg[m.ID] = m
}

func (h *handled) count(id string) int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.n[id]
}

func (h *handled) get(id string) *eventbus.Message {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.msg[id]
}

// plainDriver hides every optional interface of the driver it wraps: a
// backend that cannot browse its dead letters.
type plainDriver struct{ driver.Driver }

// dlScenario is a bus with two backends: orders go to "main", refunds to
// "second". Billing refuses every order and refund until fixed; an auditor
// takes what is replayed to its own destination.
type dlScenario struct {
	bus               *eventbus.Bus
	orderType, refund string
	auditType         string
	fixed             atomic.Bool
	billing, audit    *handled
	orderOrigin       string
	start             time.Time
}

func newDLScenario(t *testing.T, main, second driver.Driver) *dlScenario {
	u := fmt.Sprintf("%x", time.Now().UnixNano())
	s := &dlScenario{
		orderType: "dlapi.order." + u, refund: "dlapi.refund." + u, auditType: "dlapi.audit." + u,
		billing: newHandled(), audit: newHandled(), start: time.Now(),
	}
	s.orderOrigin = "events." + s.orderType
	s.bus = eventbus.New(&eventbus.Options{
		Source: "billing",
		Retry:  eventbus.RetryPolicy{MaxAttempts: 1},
		Routes: []eventbus.Route{{Pattern: eventbus.EventPattern, Match: "dlapi.refund.*", Backend: "second"}, {Backend: "main"}},
	})
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), dlBound)
		defer cancel()
		if err := s.bus.Close(ctx); err != nil {
			t.Error(err)
		}
	})
	must(t, s.bus.Register("main", main))
	must(t, s.bus.Register("second", second))
	bill := eventbus.HandlerFunc(func(_ context.Context, m *eventbus.Message) error {
		if !s.fixed.Load() {
			return eventbus.Permanent(fmt.Errorf("card declined for %s", m.ID))
		}
		s.billing.add(m)
		return nil
	})
	refund := eventbus.HandlerFunc(func(_ context.Context, m *eventbus.Message) error {
		if !s.fixed.Load() {
			return eventbus.Permanent(errors.New("refund refused by the bank"))
		}
		s.billing.add(m)
		return nil
	})
	must(t, errOnly(s.bus.SubscribeEvents(dlCtx(t), []string{s.orderType}, "billing", bill)))
	must(t, errOnly(s.bus.SubscribeEvents(dlCtx(t), []string{s.refund}, "billing", refund)))
	must(t, errOnly(s.bus.SubscribeEvents(dlCtx(t), []string{s.auditType}, "audit", eventbus.HandlerFunc(func(_ context.Context, m *eventbus.Message) error {
		s.audit.add(m)
		return nil
	}))))
	must(t, s.bus.Start(dlCtx(t)))
	return s
}

// deadLetter publishes the orders o1..o3 and the refund r1, and waits until
// all four are dead letters.
func (s *dlScenario) deadLetter(t *testing.T) {
	for _, id := range []string{"o1", "o2", "o3"} {
		m := &eventbus.Message{ID: id, Type: s.orderType, Subject: "order/" + id, Data: []byte(`{"order":"` + id + `"}`),
			Extensions: map[string]string{"tenant": "acme"}, Header: map[string][]string{"X-Shop": {"eu", "1"}}}
		must(t, s.bus.PublishEvent(dlCtx(t), m))
	}
	must(t, s.bus.PublishEvent(dlCtx(t), &eventbus.Message{ID: "r1", Type: s.refund, Data: []byte(`{"refund":1}`)}))
	eventually(t, "four dead letters listed", func() bool {
		all, err := s.bus.DeadLetters().List(dlCtx(t), eventbus.DeadLetterFilter{})
		must(t, err)
		return len(all) >= 4
	})
}

// list lists with f and returns the ids, in order.
func (s *dlScenario) list(t *testing.T, f eventbus.DeadLetterFilter) []string {
	t.Helper()
	dls, err := s.bus.DeadLetters().List(dlCtx(t), f)
	if err != nil {
		t.Fatalf("List(%+v): %v", f, err)
	}
	ids := make([]string, len(dls))
	for i, dl := range dls {
		ids[i] = dl.Message.ID
	}
	return ids
}

func (s *dlScenario) checkFilters(t *testing.T) {
	t.Helper()
	later := time.Now().Add(time.Minute)
	for _, c := range []struct {
		name string
		f    eventbus.DeadLetterFilter
		want []string
	}{
		{"all, backends in registration order", eventbus.DeadLetterFilter{}, []string{"o1", "o2", "o3", "r1"}},
		{"backend", eventbus.DeadLetterFilter{Backend: "second"}, []string{"r1"}},
		{"origin", eventbus.DeadLetterFilter{Origin: s.orderOrigin}, []string{"o1", "o2", "o3"}},
		{"type", eventbus.DeadLetterFilter{Type: s.refund}, []string{"r1"}},
		{"source", eventbus.DeadLetterFilter{Source: "billing"}, []string{"o1", "o2", "o3", "r1"}},
		{"another source", eventbus.DeadLetterFilter{Source: "shop"}, []string{}},
		{"ids", eventbus.DeadLetterFilter{IDs: []string{"o3", "r1", "zz"}}, []string{"o3", "r1"}},
		{"reason, any case", eventbus.DeadLetterFilter{Reason: "REFUSED BY"}, []string{"r1"}},
		{"group", eventbus.DeadLetterFilter{Group: "billing"}, []string{"o1", "o2", "o3", "r1"}},
		{"another group", eventbus.DeadLetterFilter{Group: "audit"}, []string{}},
		{"time range", eventbus.DeadLetterFilter{Since: s.start.Add(-time.Second), Until: later}, []string{"o1", "o2", "o3", "r1"}},
		{"since later", eventbus.DeadLetterFilter{Since: later}, []string{}},
		{"until earlier", eventbus.DeadLetterFilter{Until: s.start.Add(-time.Second)}, []string{}},
		{"limit, oldest first", eventbus.DeadLetterFilter{Limit: 2}, []string{"o1", "o2"}},
		{"origin and limit", eventbus.DeadLetterFilter{Origin: s.orderOrigin, Limit: 1, Since: s.start.Add(-time.Second)}, []string{"o1"}},
	} {
		if got := s.list(t, c.f); !slices.Equal(got, c.want) && (len(got) > 0 || len(c.want) > 0) {
			t.Errorf("List %s: %v, want %v", c.name, got, c.want)
		}
	}
	_, err := s.bus.DeadLetters().List(dlCtx(t), eventbus.DeadLetterFilter{Backend: "nope"})
	if !errors.Is(err, eventbus.ErrUnknownBackend) {
		t.Errorf("List of an unknown backend: %v, want ErrUnknownBackend", err)
	}
	_, err = s.bus.DeadLetters().List(dlCtx(t), eventbus.DeadLetterFilter{Origin: "orders"})
	if !errors.Is(err, eventbus.ErrInvalidName) {
		t.Errorf("List of origin %q: %v, want ErrInvalidName", "orders", err)
	}
}

func (s *dlScenario) checkGet(t *testing.T) {
	t.Helper()
	dls, err := s.bus.DeadLetters().Get(dlCtx(t), "o2")
	must(t, err)
	if len(dls) != 1 {
		t.Fatalf("Get(o2): %d dead letters", len(dls))
	}
	dl := dls[0]
	m := dl.Message
	switch {
	case dl.Backend != "main", dl.Destination != "deadletter."+s.orderOrigin, dl.Origin != s.orderOrigin, dl.Ref == "":
		t.Errorf("Get(o2): backend %q destination %q origin %q ref %q", dl.Backend, dl.Destination, dl.Origin, dl.Ref)
	case dl.Reason != "card declined for o2", dl.Attempts != 1, dl.Group != "billing", dl.Altered():
		t.Errorf("Get(o2): reason %q attempts %d group %q altered %v", dl.Reason, dl.Attempts, dl.Group, dl.Altered())
	case dl.Time.Before(s.start.Add(-time.Second)) || dl.Time.After(time.Now()):
		t.Errorf("Get(o2): time %s, want after %s", dl.Time, s.start)
	case m.Source != "billing", m.Type != s.orderType, m.Subject != "order/o2", string(m.Data) != `{"order":"o2"}`,
		m.Extensions["tenant"] != "acme", !slices.Equal(m.Header["X-Shop"], []string{"eu", "1"}):
		t.Errorf("Get(o2): message changed: %+v", m)
	}
	if _, err := s.bus.DeadLetters().Get(dlCtx(t), "nope"); !errors.Is(err, eventbus.ErrDeadLetterNotFound) {
		t.Errorf("Get of an id never dead-lettered: %v, want ErrDeadLetterNotFound", err)
	}
}

// replay replays f, retrying while the backend still refuses the replay as
// a duplicate of the original publish (JetStream's duplicate window), and
// checks that each dead letter was replayed and removed.
func (s *dlScenario) replay(t *testing.T, f eventbus.DeadLetterFilter, opts *eventbus.ReplayOptions) []eventbus.ReplayResult {
	t.Helper()
	var rs []eventbus.ReplayResult
	eventually(t, fmt.Sprintf("replay of %v accepted", f.IDs), func() bool {
		var err error
		rs, err = s.bus.DeadLetters().Replay(dlCtx(t), f, opts)
		must(t, err)
		return !slices.ContainsFunc(rs, func(r eventbus.ReplayResult) bool { return errors.Is(r.Err, eventbus.ErrDuplicate) })
	})
	for _, r := range rs {
		if !r.Replayed || !r.Removed || r.Err != nil {
			t.Fatalf("replay of %s: replayed %v, removed %v: %v", r.DeadLetter.Message.ID, r.Replayed, r.Removed, r.Err)
		}
	}
	return rs
}

func (s *dlScenario) checkReplayAndPurge(t *testing.T) {
	t.Helper()
	dla := s.bus.DeadLetters()
	// Bad requests change nothing.
	if _, err := dla.Replay(dlCtx(t), eventbus.DeadLetterFilter{IDs: []string{"o1", "zz"}}, nil); !errors.Is(err, eventbus.ErrDeadLetterNotFound) {
		t.Errorf("Replay of an unknown id: %v, want ErrDeadLetterNotFound", err)
	}
	if _, err := dla.Replay(dlCtx(t), eventbus.DeadLetterFilter{IDs: []string{"o1"}}, &eventbus.ReplayOptions{Backend: "nope"}); !errors.Is(err, eventbus.ErrUnknownBackend) {
		t.Errorf("Replay to an unknown backend: %v, want ErrUnknownBackend", err)
	}
	if _, err := dla.Replay(dlCtx(t), eventbus.DeadLetterFilter{IDs: []string{"o1"}}, &eventbus.ReplayOptions{To: "deadletter.x"}); !errors.Is(err, eventbus.ErrInvalidName) {
		t.Errorf("Replay to a dead-letter destination: %v, want ErrInvalidName", err)
	}
	if got := s.list(t, eventbus.DeadLetterFilter{}); !slices.Equal(got, []string{"o1", "o2", "o3", "r1"}) {
		t.Fatalf("after refused replays: %v", got)
	}

	// The handler is fixed: o1 replayed to its origin is processed once, as
	// it was published, and is no dead letter any more.
	s.fixed.Store(true)
	rs := s.replay(t, eventbus.DeadLetterFilter{IDs: []string{"o1"}}, nil)
	if len(rs) != 1 || rs[0].Backend != "main" || rs[0].Destination != s.orderOrigin {
		t.Fatalf("replay results %+v", rs)
	}
	eventually(t, "o1 handled", func() bool { return s.billing.count("o1") > 0 })
	m := s.billing.get("o1")
	if string(m.Data) != `{"order":"o1"}` || m.Source != "billing" || m.Extensions["tenant"] != "acme" || m.Extensions["deadletterreason"] != "" {
		t.Errorf("replayed o1 arrived as %+v", m)
	}
	// o2 to another destination: the auditor gets it, billing does not.
	s.replay(t, eventbus.DeadLetterFilter{IDs: []string{"o2"}}, &eventbus.ReplayOptions{To: "events." + s.auditType})
	eventually(t, "o2 audited", func() bool { return s.audit.count("o2") > 0 })
	if m := s.audit.get("o2"); string(m.Data) != `{"order":"o2"}` || m.Type != s.orderType || len(m.Extensions) != 2 || m.Extensions[driver.ExtReplayed] == "" {
		t.Errorf("o2 replayed to the auditor arrived as %+v", m)
	}
	if got := s.list(t, eventbus.DeadLetterFilter{}); !slices.Equal(got, []string{"o3", "r1"}) {
		t.Errorf("after replaying o1 and o2, the dead letters are %v", got)
	}

	// Purge by filter, then all.
	n, err := dla.Purge(dlCtx(t), eventbus.DeadLetterFilter{Reason: "refused"})
	if err != nil || n != 1 {
		t.Fatalf("Purge of the refund: %d, %v", n, err)
	}
	n, err = dla.Purge(dlCtx(t), eventbus.DeadLetterFilter{})
	if err != nil || n != 1 {
		t.Fatalf("Purge of all: %d, %v", n, err)
	}
	if got := s.list(t, eventbus.DeadLetterFilter{}); len(got) != 0 {
		t.Errorf("after purging, the dead letters are %v", got)
	}
	// Exactly once: nothing more arrives for a while.
	time.Sleep(300 * time.Millisecond)
	if s.billing.count("o1") != 1 || s.billing.count("o2") != 0 || s.audit.count("o2") != 1 {
		t.Errorf("billing handled o1 %d times and o2 %d times, the auditor o2 %d times; want 1, 0, 1",
			s.billing.count("o1"), s.billing.count("o2"), s.audit.count("o2"))
	}
}

func (s *dlScenario) run(t *testing.T) {
	s.deadLetter(t)
	t.Run("List", s.checkFilters)
	t.Run("Get", s.checkGet)
	t.Run("ReplayAndPurge", s.checkReplayAndPurge)
}

func TestDeadLettersOnMembus(t *testing.T) {
	newDLScenario(t, membus.New(nil), membus.New(nil)).run(t)
}

func TestDeadLettersOnNATS(t *testing.T) {
	srv, err := natsbus.StartServer(dlCtx(t), &natsbus.EmbeddedOptions{Port: -1, DataDir: t.TempDir()})
	must(t, err)
	t.Cleanup(func() { _ = srv.Shutdown(context.Background()) })
	open := func(prefix string) driver.Driver {
		d, err := natsbus.Open(dlCtx(t), &natsbus.Config{Servers: []string{srv.ClientURL()}, Options: natsbus.Options{
			StreamPrefix: strings.ToUpper(prefix), SubjectPrefix: prefix,
			// A short duplicate window, so that a replay to the origin is
			// accepted soon after the original publish.
			Streams: natsbus.StreamConfig{Duplicates: 200 * time.Millisecond},
		}})
		must(t, err)
		return d
	}
	newDLScenario(t, open("main"), open("second")).run(t)
}

// Within JetStream's duplicate window (the default two minutes), a replay
// to the origin is not a repeat of the original publish: it is stored,
// handled once by the fixed handler, carries the replayed extension, and
// the dead letter is gone.
func TestDeadLetterReplayWithinDuplicateWindow(t *testing.T) {
	srv, err := natsbus.StartServer(dlCtx(t), &natsbus.EmbeddedOptions{Port: -1, DataDir: t.TempDir()})
	must(t, err)
	t.Cleanup(func() { _ = srv.Shutdown(context.Background()) })
	d, err := natsbus.Open(dlCtx(t), &natsbus.Config{Servers: []string{srv.ClientURL()}})
	must(t, err)
	s := newDLScenario(t, d, membus.New(nil))
	s.deadLetter(t)
	s.fixed.Store(true)
	rs, err := s.bus.DeadLetters().Replay(dlCtx(t), eventbus.DeadLetterFilter{IDs: []string{"o1"}}, nil)
	must(t, err)
	if len(rs) != 1 || !rs[0].Replayed || !rs[0].Removed || rs[0].Err != nil {
		t.Fatalf("replay within the duplicate window: %+v, want replayed and removed", rs)
	}
	eventually(t, "o1 handled", func() bool { return s.billing.count("o1") == 1 })
	if m := s.billing.get("o1"); m.Extensions[driver.ExtReplayed] == "" || m.Extensions[driver.ExtDeadLetterReason] != "" {
		t.Errorf("replayed message's extensions: %v, want replayed and no dead-letter reason", m.Extensions)
	}
	if got := s.list(t, eventbus.DeadLetterFilter{IDs: []string{"o1"}}); len(got) != 0 {
		t.Fatalf("after the replay: %v still held", got)
	}
	// A second replay of the same message finds nothing to replay.
	if _, err := s.bus.DeadLetters().Replay(dlCtx(t), eventbus.DeadLetterFilter{IDs: []string{"o1"}}, nil); !errors.Is(err, eventbus.ErrDeadLetterNotFound) {
		t.Fatalf("second replay: %v, want ErrDeadLetterNotFound", err)
	}
	if n := s.billing.count("o1"); n != 1 {
		t.Fatalf("o1 handled %d times, want 1", n)
	}
}

// A backend whose driver cannot browse dead letters is left out of a listing
// of all backends, and named alone it is a capability error. One message
// given up by two groups is replayed once.
func TestDeadLettersCapabilityAndGroups(t *testing.T) {
	main := membus.New(nil)
	s := newDLScenario(t, main, plainDriver{membus.New(nil)})
	must(t, errOnly(s.bus.SubscribeEvents(dlCtx(t), []string{s.orderType}, "shipping", eventbus.HandlerFunc(func(_ context.Context, m *eventbus.Message) error {
		if !s.fixed.Load() {
			return eventbus.Permanent(errors.New("no address"))
		}
		return nil
	}))))
	must(t, s.bus.PublishEvent(dlCtx(t), &eventbus.Message{ID: "o9", Type: s.orderType}))
	eventually(t, "o9 dead-lettered by both groups", func() bool {
		return len(s.list(t, eventbus.DeadLetterFilter{IDs: []string{"o9"}})) == 2
	})
	if _, err := s.bus.DeadLetters().List(dlCtx(t), eventbus.DeadLetterFilter{Backend: "second"}); !errors.Is(err, eventbus.ErrCapability) {
		t.Fatalf("List of a backend that cannot browse: %v, want ErrCapability", err)
	}
	dls, err := s.bus.DeadLetters().Get(dlCtx(t), "o9")
	must(t, err)
	groups := []string{dls[0].Group, dls[1].Group}
	slices.Sort(groups)
	if !slices.Equal(groups, []string{"billing", "shipping"}) {
		t.Fatalf("o9's dead letters come from groups %v", groups)
	}
	s.fixed.Store(true)
	s.replay(t, eventbus.DeadLetterFilter{IDs: []string{"o9"}}, nil)
	eventually(t, "o9 handled", func() bool { return s.billing.count("o9") > 0 })
	time.Sleep(300 * time.Millisecond)
	if n := s.billing.count("o9"); n != 1 {
		t.Fatalf("billing handled o9 %d times after one replay of its two dead letters, want 1", n)
	}
	if got := s.list(t, eventbus.DeadLetterFilter{}); len(got) != 0 {
		t.Fatalf("dead letters left: %v", got)
	}
}

func ExampleDeadLetters() {
	ctx := context.Background()
	bus := eventbus.New(&eventbus.Options{Source: "shop", Retry: eventbus.RetryPolicy{MaxAttempts: 1}})
	_ = bus.Register("memory", membus.New(nil))
	var fixed atomic.Bool
	handled := make(chan string, 1)
	_, _ = bus.SubscribeEvents(ctx, []string{"order.created"}, "billing", eventbus.HandlerFunc(func(_ context.Context, m *eventbus.Message) error {
		if !fixed.Load() {
			return eventbus.Permanent(errors.New("card declined"))
		}
		handled <- m.ID
		return nil
	}))
	_ = bus.Start(ctx)
	defer bus.Close(ctx)
	_ = bus.PublishEvent(ctx, &eventbus.Message{ID: "order-1", Type: "order.created"})

	// Dead-lettering happens in the consumer: wait until it is listed.
	var dls []*eventbus.DeadLetter
	for deadline := time.Now().Add(dlBound); len(dls) == 0 && time.Now().Before(deadline); time.Sleep(time.Millisecond) {
		dls, _ = bus.DeadLetters().List(ctx, eventbus.DeadLetterFilter{Origin: "events.order.created"})
	}
	fmt.Println(dls[0].Message.ID, dls[0].Group, dls[0].Reason)

	// Once the handler is fixed, replay it to where it came from.
	fixed.Store(true)
	rs, _ := bus.DeadLetters().Replay(ctx, eventbus.DeadLetterFilter{IDs: []string{"order-1"}}, nil)
	fmt.Println(rs[0].Destination, rs[0].Replayed, rs[0].Removed)
	fmt.Println("handled", <-handled)
	// Output:
	// order-1 billing card declined
	// events.order.created true true
	// handled order-1
}

// A dead letter that was cut to fit its backend is replayed only on request:
// otherwise the cut message would be published as if it were the original.
func TestDeadLetterAlteredReplay(t *testing.T) {
	const limit = 4096
	b := eventbus.New(&eventbus.Options{Source: "shop", Retry: eventbus.RetryPolicy{MaxAttempts: 1}})
	t.Cleanup(func() { _ = b.Close(context.Background()) })
	must(t, b.Register("memory", membus.New(&membus.Options{MaxMessageSize: limit})))
	got := newHandled()
	var fixed atomic.Bool
	must(t, errOnly(b.SubscribeEvents(dlCtx(t), []string{"upload.received"}, "scanner", eventbus.HandlerFunc(func(_ context.Context, m *eventbus.Message) error {
		if !fixed.Load() {
			return eventbus.Permanent(errors.New("virus found"))
		}
		got.add(m)
		return nil
	}))))
	must(t, b.Start(dlCtx(t)))
	m := &eventbus.Message{ID: "u1", Type: "upload.received"}
	m.Data = []byte(strings.Repeat("x", limit-m.Size()-64))
	must(t, b.PublishEvent(dlCtx(t), m))
	var dls []*eventbus.DeadLetter
	eventually(t, "u1 dead-lettered", func() bool {
		var err error
		dls, err = b.DeadLetters().List(dlCtx(t), eventbus.DeadLetterFilter{})
		must(t, err)
		return len(dls) == 1
	})
	if !dls[0].Altered() || !strings.Contains(dls[0].Reason, "data cut") {
		t.Fatalf("dead letter of a message at the size limit: altered %v, reason %q", dls[0].Altered(), dls[0].Reason)
	}
	fixed.Store(true)
	rs, err := b.DeadLetters().Replay(dlCtx(t), eventbus.DeadLetterFilter{}, nil)
	must(t, err)
	if len(rs) != 1 || rs[0].Replayed || rs[0].Removed || !errors.Is(rs[0].Err, eventbus.ErrDeadLetterAltered) {
		t.Fatalf("replay of an altered dead letter: %+v, want ErrDeadLetterAltered", rs)
	}
	rs, err = b.DeadLetters().Replay(dlCtx(t), eventbus.DeadLetterFilter{}, &eventbus.ReplayOptions{Altered: true})
	must(t, err)
	if len(rs) != 1 || !rs[0].Replayed || !rs[0].Removed || rs[0].Err != nil {
		t.Fatalf("replay of an altered dead letter with Altered: %+v", rs)
	}
	eventually(t, "u1 handled", func() bool { return got.count("u1") == 1 })
	if n := len(got.get("u1").Data); n >= len(m.Data) {
		t.Fatalf("the replayed message has %d bytes of data, the original %d: it should be the cut one", n, len(m.Data))
	}
	must(t, b.Close(dlCtx(t)))
	if _, err := b.DeadLetters().List(dlCtx(t), eventbus.DeadLetterFilter{}); !errors.Is(err, eventbus.ErrClosed) {
		t.Fatalf("List after Close: %v, want ErrClosed", err)
	}
}

// Two groups that give up the same message each leave a dead letter, on
// JetStream with its default duplicate window: the broker's de-duplication
// counts the dead letter's group and time.
func TestDeadLettersOfTwoGroupsOnNATS(t *testing.T) {
	srv, err := natsbus.StartServer(dlCtx(t), &natsbus.EmbeddedOptions{Port: -1, DataDir: t.TempDir()})
	must(t, err)
	t.Cleanup(func() { _ = srv.Shutdown(context.Background()) })
	d, err := natsbus.Open(dlCtx(t), &natsbus.Config{Servers: []string{srv.ClientURL()}})
	must(t, err)
	bus := eventbus.New(&eventbus.Options{Source: "shop", Retry: eventbus.RetryPolicy{MaxAttempts: 1}})
	t.Cleanup(func() { _ = bus.Close(context.Background()) })
	must(t, bus.Register("nats", d))
	for _, g := range []string{"billing", "shipping"} {
		_, err := bus.SubscribeEvents(dlCtx(t), []string{"dlapi.twogroups"}, g, eventbus.HandlerFunc(func(context.Context, *eventbus.Message) error {
			return eventbus.Permanent(errors.New(g + " refuses"))
		}))
		must(t, err)
	}
	must(t, bus.Start(dlCtx(t)))
	must(t, bus.PublishEvent(dlCtx(t), &eventbus.Message{ID: "tg1", Type: "dlapi.twogroups", Data: []byte("{}")}))
	var groups []string
	eventually(t, "a dead letter from each group", func() bool {
		dls, err := bus.DeadLetters().Get(dlCtx(t), "tg1")
		if err != nil && !errors.Is(err, eventbus.ErrDeadLetterNotFound) {
			t.Fatal(err)
		}
		groups = groups[:0]
		for _, dl := range dls {
			groups = append(groups, dl.Group)
		}
		slices.Sort(groups)
		return len(groups) >= 2
	})
	if !slices.Equal(groups, []string{"billing", "shipping"}) {
		t.Fatalf("dead letters of groups %v, want billing and shipping", groups)
	}
	// A dead letter is counted once its publish returned, which can be
	// after the store shows it.
	eventually(t, "both dead letters counted", func() bool { return bus.Stats().DeadLettered >= 2 })
	if st := bus.Stats(); st.DeadLettered != 2 || st.Dropped != 0 {
		t.Fatalf("stats %+v, want 2 dead-lettered and none dropped", st)
	}
}

// halfRemover is a membus driver whose dead-letter store removes only the
// first of the dead letters it is asked to remove, as a broker does when
// another reader holds the rest at the moment.
type halfRemover struct{ driver.Driver }

func (h halfRemover) store() driver.DeadLetterStore { return h.Driver.(driver.DeadLetterStore) }

func (h halfRemover) DeadLetterDestinations(ctx context.Context) ([]driver.Destination, error) {
	return h.store().DeadLetterDestinations(ctx)
}

func (h halfRemover) ReadDeadLetters(ctx context.Context, dl driver.Destination, fn func(driver.DeadLetterEntry) bool) error {
	return h.store().ReadDeadLetters(ctx, dl, fn)
}

func (h halfRemover) DeleteDeadLetters(ctx context.Context, dl driver.Destination, refs []string) (int, error) {
	return h.store().DeleteDeadLetters(ctx, dl, refs[:min(len(refs), 1)])
}

func (h halfRemover) PurgeDeadLetters(ctx context.Context, dl driver.Destination) (int, error) {
	return h.store().PurgeDeadLetters(ctx, dl)
}

// A replay whose removal the backend performs only in part reports, for
// each dead letter, whether it was removed: the one still held has Err set
// and stays listed.
func TestDeadLetterReplayReportsWhatWasNotRemoved(t *testing.T) {
	s := newDLScenario(t, halfRemover{membus.New(nil)}, membus.New(nil))
	must(t, errOnly(s.bus.SubscribeEvents(dlCtx(t), []string{s.orderType}, "shipping", eventbus.HandlerFunc(func(_ context.Context, m *eventbus.Message) error {
		if !s.fixed.Load() {
			return eventbus.Permanent(errors.New("no address"))
		}
		return nil
	}))))
	must(t, s.bus.PublishEvent(dlCtx(t), &eventbus.Message{ID: "o8", Type: s.orderType}))
	eventually(t, "o8 dead-lettered by both groups", func() bool {
		return len(s.list(t, eventbus.DeadLetterFilter{IDs: []string{"o8"}})) == 2
	})
	s.fixed.Store(true)
	rs, err := s.bus.DeadLetters().Replay(dlCtx(t), eventbus.DeadLetterFilter{IDs: []string{"o8"}}, nil)
	must(t, err)
	var removed, kept int
	for _, r := range rs {
		switch {
		case !r.Replayed:
			t.Errorf("%+v not replayed", r)
		case r.Removed && r.Err == nil:
			removed++
		case !r.Removed && r.Err != nil && strings.Contains(r.Err.Error(), "not removed"):
			kept++
		default:
			t.Errorf("result %+v: want removed, or not removed with an error saying so", r)
		}
	}
	if removed != 1 || kept != 1 {
		t.Fatalf("%d removed and %d kept, want 1 and 1", removed, kept)
	}
	if got := s.list(t, eventbus.DeadLetterFilter{IDs: []string{"o8"}}); len(got) != 1 {
		t.Fatalf("held after the replay: %v, want the one not removed", got)
	}
}
