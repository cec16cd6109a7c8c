package drivertest

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/marty-msf/eventbus"
	"github.com/marty-msf/eventbus/driver"
)

// RunDeadLetterTests runs the conformance tests of [driver.DeadLetterStore],
// each as a subtest of t. A driver whose connections do not implement it, or
// that does not serve the DeadLetter pattern, is skipped with the reason.
//
//   - Attributes: messages published to a dead-letter destination (one with
//     every attribute, extension, multi-valued header and binary data, a
//     minimal one, one with empty data) are read back exactly as published,
//     each with a non-empty Ref of its own; a second read sees the same
//     messages with the same Refs.
//   - Order: one key's messages are read oldest first; when fn returns
//     false, the read stops there.
//   - ThroughTheBus (Event): events whose handler fails with
//     eventbus.Permanent are read from the dead-letter destination of their
//     origin with their id, source, type, extensions, headers and data, and
//     with the reason, attempts, origin, group and time of their
//     dead-lettering; the bus's own connection lists that destination.
//   - Destinations: the destinations a connection published dead letters to
//     are listed, sorted by name, each with Pattern DeadLetter.
//   - Delete: removing the oldest message by its Ref removes it alone; a Ref
//     removed already is skipped without error; removing a message in the
//     middle removes it alone. A broker that can only remove from the head
//     of a log (Kafka) may refuse the middle one with an error matching
//     [driver.ErrUnsupported]: the suite then checks that the count it
//     returned is what it removed (none of the refused ones), that nothing
//     else was touched, and that removing every remaining message from the
//     head works.
//   - ForeignRefs: the Refs of another destination's messages are skipped:
//     nothing is removed from either destination.
//   - Purge: removes every message of one destination and counts them;
//     another destination keeps its own; purging again removes nothing.
//   - Missing: a destination that never held anything is read as empty and
//     purged with a count of 0, without error.
//   - ReadLeavesConsumers: reading a destination twice takes nothing away
//     from a group subscribed to it: the group still receives each message.
//   - Malformed (Harness.InjectDeadLetter): a body that is no envelope is
//     read, never skipped, with Data set to the raw body, and can be removed
//     by its Ref.
//
// Every read is bounded by ten seconds: a driver that waits for new messages
// instead of returning after the ones held fails rather than hangs.
func RunDeadLetterTests(t *testing.T, h Harness) {
	t.Helper()
	if h.Open == nil {
		t.Fatal("drivertest: Harness.Open is nil")
	}
	s := &suite{h: h}
	d := s.open(t)
	s.caps = d.Capabilities()
	_, isStore := d.(driver.DeadLetterStore)
	closeDriver(t, d)
	if !isStore {
		t.Skipf("driver %s does not implement driver.DeadLetterStore", s.caps.Name)
	}
	if !s.caps.Serves(driver.DeadLetter) {
		t.Skipf("driver %s does not serve pattern %s", s.caps.Name, driver.DeadLetter)
	}

	t.Run("Attributes", s.testDLAttributes)
	t.Run("Order", s.testDLOrder)
	t.Run("ThroughTheBus", s.testDLThroughTheBus)
	t.Run("Destinations", s.testDLDestinations)
	t.Run("Delete", s.testDLDelete)
	t.Run("ForeignRefs", s.testDLForeignRefs)
	t.Run("Purge", s.testDLPurge)
	t.Run("Missing", s.testDLMissing)
	t.Run("ReadLeavesConsumers", s.testDLReadLeavesConsumers)
	t.Run("Malformed", s.testDLMalformed)
}

// openStore opens a connection, closed when the test ends, as a
// DeadLetterStore.
func (s *suite) openStore(t *testing.T) (driver.Driver, driver.DeadLetterStore) {
	t.Helper()
	d := s.open(t)
	st, ok := d.(driver.DeadLetterStore)
	if !ok {
		t.Fatalf("a connection of driver %s does not implement driver.DeadLetterStore", s.caps.Name)
	}
	return d, st
}

// dlDest returns a dead-letter destination of a fresh origin.
func dlDest(name string) driver.Destination {
	return driver.DeadLetterOf(dest(driver.Event, name))
}

// deadLetterMsg is a message as the bus dead-letters it: an envelope with the
// dead-letter extensions, all messages of one call sharing key.
func deadLetterMsg(dl driver.Destination, id, key string) *driver.Message {
	m := messageWithID(id)
	m.Key = key
	m.Extensions = map[string]string{
		driver.ExtDeadLetterReason:   "handler refused: " + id,
		driver.ExtDeadLetterAttempts: "3",
		driver.ExtDeadLetterOrigin:   strings.TrimPrefix(dl.Name, driver.DeadLetter.Prefix()+"."),
		driver.ExtDeadLetterGroup:    "billing",
		driver.ExtDeadLetterTime:     time.Now().UTC().Format(time.RFC3339Nano),
	}
	return m
}

// publishDL publishes n dead letters to dl, one at a time, all with one key,
// and returns them.
func publishDL(t *testing.T, d driver.Driver, dl driver.Destination, name string, n int) []*driver.Message {
	t.Helper()
	prefix, key := name+"-"+unique(), name+"-key"
	msgs := make([]*driver.Message, n)
	for i := range msgs {
		msgs[i] = deadLetterMsg(dl, fmt.Sprintf("%s-%d", prefix, i), key)
		publish(t, d, dl, msgs[i].Clone())
	}
	return msgs
}

// readDL reads every message held on dl; it fails the test on an error, a
// nil message or an empty Ref.
func readDL(t *testing.T, st driver.DeadLetterStore, dl driver.Destination) []driver.DeadLetterEntry {
	t.Helper()
	var got []driver.DeadLetterEntry
	err := st.ReadDeadLetters(timeout(t, opTimeout), dl, func(e driver.DeadLetterEntry) bool {
		got = append(got, e)
		return true
	})
	if err != nil {
		t.Fatalf("ReadDeadLetters(%s): %v (after %d entries)", dl, err, len(got))
	}
	for _, e := range got {
		if e.Message == nil {
			t.Fatalf("ReadDeadLetters(%s) passed an entry with a nil Message (Ref %q)", dl, e.Ref)
		}
		if e.Ref == "" {
			t.Fatalf("ReadDeadLetters(%s) passed %q with an empty Ref", dl, e.Message.ID)
		}
	}
	return got
}

func entryIDs(es []driver.DeadLetterEntry) []string {
	out := make([]string, len(es))
	for i, e := range es {
		out[i] = e.Message.ID
	}
	return out
}

func entryRefs(es []driver.DeadLetterEntry) []string {
	out := make([]string, len(es))
	for i, e := range es {
		out[i] = e.Ref
	}
	return out
}

// expectHeld fails the test unless dl holds exactly the messages with ids
// want, in any order, and returns what it holds.
func expectHeld(t *testing.T, st driver.DeadLetterStore, dl driver.Destination, why string, want ...string) []driver.DeadLetterEntry {
	t.Helper()
	got := readDL(t, st, dl)
	if !slices.Equal(sorted(entryIDs(got)), sorted(want)) {
		t.Fatalf("%s: %s holds %v, want %v", why, dl, entryIDs(got), want)
	}
	return got
}

// deleteDL removes refs from dl, failing the test on any error.
func deleteDL(t *testing.T, st driver.DeadLetterStore, dl driver.Destination, refs ...string) int {
	t.Helper()
	n, err := st.DeleteDeadLetters(timeout(t, opTimeout), dl, refs)
	if err != nil {
		t.Fatalf("DeleteDeadLetters(%s, %q): %v", dl, refs, err)
	}
	return n
}

func purgeDL(t *testing.T, st driver.DeadLetterStore, dl driver.Destination) int {
	t.Helper()
	n, err := st.PurgeDeadLetters(timeout(t, opTimeout), dl)
	if err != nil {
		t.Fatalf("PurgeDeadLetters(%s): %v", dl, err)
	}
	return n
}

func (s *suite) testDLAttributes(t *testing.T) {
	d, st := s.openStore(t)
	dl := dlDest("dlattributes")
	full := deadLetterMsg(dl, "dl-full-"+unique(), "customer-42")
	full.Subject = "orders/42"
	full.Time = time.Date(2026, 3, 14, 15, 9, 26, 535897932, time.FixedZone("UTC+2", 2*3600))
	full.DataContentType = "application/octet-stream"
	full.DataSchema = "https://example.com/schemas/attributes/v1"
	full.CorrelationID = "corr-7f1c"
	full.CausationID = "cause-9d2e"
	full.TraceParent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
	full.TraceState = "congo=t61rcWkgMzE,rojo=00f067aa0ba902b7"
	full.Extensions["tenant"] = "acme"
	full.Header = map[string][]string{"X-Multi": {"one", "two, three", "café ☕"}, "x-lower": {"Case Matters"}}
	full.Data = []byte{0x00, 0xff, 0xfe, 0x80, 0xc3, 0x28, '\r', '\n', 'x', 0x00}
	minimal := &driver.Message{ID: "dl-minimal-" + unique(), Source: "/drivertest", Type: "drivertest.minimal", Key: "customer-42"}
	empty := deadLetterMsg(dl, "dl-empty-"+unique(), "customer-42")
	empty.Data = []byte{}
	msgs := []*driver.Message{full, minimal, empty}
	for _, m := range msgs {
		publish(t, d, dl, m.Clone())
	}

	first := readDL(t, st, dl)
	if len(first) != len(msgs) {
		t.Fatalf("ReadDeadLetters passed %d messages %v, want the %d published", len(first), entryIDs(first), len(msgs))
	}
	for _, e := range first {
		checkMessage(t, msgByID(msgs, e.Message.ID), e.Message)
	}
	refs := entryRefs(first)
	if distinct := slices.Compact(sorted(refs)); len(distinct) != len(refs) {
		t.Errorf("Refs %q are not distinct", refs)
	}
	second := readDL(t, st, dl)
	if !slices.Equal(entryIDs(second), entryIDs(first)) || !slices.Equal(entryRefs(second), refs) {
		t.Errorf("a second read passed %v with Refs %q, want %v with Refs %q: reading changed what is held",
			entryIDs(second), entryRefs(second), entryIDs(first), refs)
	}
	for _, e := range second {
		checkMessage(t, msgByID(msgs, e.Message.ID), e.Message)
	}
}

func (s *suite) testDLOrder(t *testing.T) {
	d, st := s.openStore(t)
	dl := dlDest("dlorder")
	want := ids(publishDL(t, d, dl, "dl-order", 6))
	if got := entryIDs(readDL(t, st, dl)); !slices.Equal(got, want) {
		t.Fatalf("ReadDeadLetters passed %v, want oldest first %v", got, want)
	}
	var got []string
	err := st.ReadDeadLetters(timeout(t, opTimeout), dl, func(e driver.DeadLetterEntry) bool {
		got = append(got, e.Message.ID)
		return len(got) < 2
	})
	if err != nil {
		t.Fatalf("ReadDeadLetters stopped by fn: %v", err)
	}
	if !slices.Equal(got, want[:2]) {
		t.Fatalf("fn returned false at the second message, but was called with %v", got)
	}
}

// testDLThroughTheBus dead-letters events with a real bus and reads them back
// with what the bus added.
func (s *suite) testDLThroughTheBus(t *testing.T) {
	s.requirePattern(t, driver.Event)
	typ := "dt.dlbus." + unique()
	group := "dlbus" + unique()
	origin := driver.NewDestination(driver.Event, typ)
	dl := driver.DeadLetterOf(origin)

	d, st := s.openStore(t)
	b := eventbus.New(&eventbus.Options{Source: "dlbus", Retry: busRetry})
	if err := b.Register("backend", d); err != nil {
		t.Fatal(err)
	}
	if err := errOnly(b.SubscribeEvents(context.Background(), []string{typ}, group, eventbus.HandlerFunc(func(context.Context, *eventbus.Message) error {
		return eventbus.Permanent(errors.New("refused by the handler"))
	}))); err != nil {
		t.Fatal(err)
	}
	if err := b.Start(timeout(t, opTimeout)); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { closeBus(t, b) })

	pub := s.bus(t, "dlbus-publisher", nil)
	before := time.Now()
	var sent []*driver.Message
	for i := range 2 {
		m := &eventbus.Message{
			ID: fmt.Sprintf("dlbus-%s-%d", unique(), i), Source: "dlbus-publisher", Type: typ, Time: time.Now(),
			Extensions: map[string]string{"tenant": "acme"},
			Header:     map[string][]string{"X-Order": {strconv.Itoa(i)}},
			Data:       []byte(`{"n":` + strconv.Itoa(i) + `}`),
		}
		if err := pub.PublishEvent(timeout(t, opTimeout), m.Clone()); err != nil {
			t.Fatal(err)
		}
		sent = append(sent, m)
	}
	var got []driver.DeadLetterEntry
	if !waitUntil(deliveryTimeout, func() bool {
		got = readDL(t, st, dl)
		return len(got) >= len(sent)
	}) {
		t.Fatalf("%s holds %v within %s, want the %d dead-lettered events", dl, entryIDs(got), deliveryTimeout, len(sent))
	}
	after := time.Now()
	if len(got) != len(sent) {
		t.Fatalf("%s holds %d messages %v, want %d", dl, len(got), entryIDs(got), len(sent))
	}
	for _, e := range got {
		m, want := e.Message, msgByID(sent, e.Message.ID)
		if m.Source != want.Source || m.Type != want.Type || string(m.Data) != string(want.Data) ||
			m.Extensions["tenant"] != "acme" || !slices.Equal(m.Header["X-Order"], want.Header["X-Order"]) {
			t.Errorf("dead letter %q lost its content: source %q type %q data %q tenant %q header %q",
				m.ID, m.Source, m.Type, m.Data, m.Extensions["tenant"], m.Header["X-Order"])
		}
		ext := m.Extensions
		if !strings.Contains(ext[driver.ExtDeadLetterReason], "refused by the handler") {
			t.Errorf("dead letter %q: reason %q", m.ID, ext[driver.ExtDeadLetterReason])
		}
		if ext[driver.ExtDeadLetterAttempts] != "1" {
			t.Errorf("dead letter %q: attempts %q, want 1", m.ID, ext[driver.ExtDeadLetterAttempts])
		}
		if ext[driver.ExtDeadLetterOrigin] != origin.Name {
			t.Errorf("dead letter %q: origin %q, want %q", m.ID, ext[driver.ExtDeadLetterOrigin], origin.Name)
		}
		if ext[driver.ExtDeadLetterGroup] != group {
			t.Errorf("dead letter %q: group %q, want %q", m.ID, ext[driver.ExtDeadLetterGroup], group)
		}
		at, err := time.Parse(time.RFC3339Nano, ext[driver.ExtDeadLetterTime])
		if err != nil || at.Before(before.Add(-time.Second)) || at.After(after.Add(time.Second)) {
			t.Errorf("dead letter %q: time %q, want between %s and %s", m.ID, ext[driver.ExtDeadLetterTime],
				before.UTC().Format(time.RFC3339Nano), after.UTC().Format(time.RFC3339Nano))
		}
	}
	dests, err := st.DeadLetterDestinations(timeout(t, opTimeout))
	if err != nil {
		t.Fatalf("DeadLetterDestinations: %v", err)
	}
	if !slices.Contains(dests, dl) {
		t.Fatalf("DeadLetterDestinations of the bus's connection is %v, without %s", dests, dl)
	}
}

func (s *suite) testDLDestinations(t *testing.T) {
	d, st := s.openStore(t)
	a, b := dlDest("dldestsa"), dlDest("dldestsb")
	publish(t, d, a, deadLetterMsg(a, "dl-dest-"+unique(), "k"))
	publish(t, d, b, deadLetterMsg(b, "dl-dest-"+unique(), "k"))
	dests, err := st.DeadLetterDestinations(timeout(t, opTimeout))
	if err != nil {
		t.Fatalf("DeadLetterDestinations: %v", err)
	}
	for _, want := range []driver.Destination{a, b} {
		if !slices.Contains(dests, want) {
			t.Errorf("DeadLetterDestinations is %v, without %s", dests, want)
		}
	}
	for i, dst := range dests {
		if dst.Pattern != driver.DeadLetter || !strings.HasPrefix(dst.Name, driver.DeadLetter.Prefix()+".") {
			t.Errorf("DeadLetterDestinations lists %+v, not a dead-letter destination", dst)
		}
		if i > 0 && dests[i-1].Name >= dst.Name {
			t.Errorf("DeadLetterDestinations is not sorted by name, or repeats one: %q before %q", dests[i-1].Name, dst.Name)
		}
	}
}

// testDLDelete removes by Ref: the head, a Ref gone already, one in the
// middle (which a head-only broker may refuse), and the rest.
func (s *suite) testDLDelete(t *testing.T) {
	d, st := s.openStore(t)
	dl := dlDest("dldelete")
	sent := ids(publishDL(t, d, dl, "dl-delete", 4))
	held := expectHeld(t, st, dl, "after publishing", sent...)
	ref := make(map[string]string, len(held))
	for _, e := range held {
		ref[e.Message.ID] = e.Ref
	}

	if n := deleteDL(t, st, dl, ref[sent[0]]); n != 1 {
		t.Fatalf("DeleteDeadLetters of the oldest message removed %d, want 1", n)
	}
	expectHeld(t, st, dl, "after removing the oldest", sent[1:]...)
	if n := deleteDL(t, st, dl, ref[sent[0]]); n != 0 {
		t.Fatalf("DeleteDeadLetters of a Ref removed already removed %d, want 0", n)
	}
	expectHeld(t, st, dl, "after removing a Ref again", sent[1:]...)

	// The middle one, with the Ref removed already.
	n, err := st.DeleteDeadLetters(timeout(t, opTimeout), dl, []string{ref[sent[0]], ref[sent[2]]})
	switch {
	case err == nil:
		if n != 1 {
			t.Fatalf("DeleteDeadLetters of a Ref gone and one in the middle removed %d, want 1", n)
		}
		expectHeld(t, st, dl, "after removing the one in the middle", sent[1], sent[3])
	case errors.Is(err, driver.ErrUnsupported):
		t.Logf("the driver removes from the head only: %v", err)
		if n != 0 {
			t.Fatalf("DeleteDeadLetters refused the one in the middle (%v) but counted %d removed, want 0", err, n)
		}
		expectHeld(t, st, dl, "after a refused removal", sent[1:]...)
	default:
		t.Fatalf("DeleteDeadLetters of a Ref gone and one in the middle: %v", err)
	}

	// What is left, all at once: from the head, so every broker can.
	rest := readDL(t, st, dl)
	if n := deleteDL(t, st, dl, entryRefs(rest)...); n != len(rest) {
		t.Fatalf("DeleteDeadLetters of all %d held removed %d", len(rest), n)
	}
	expectHeld(t, st, dl, "after removing every Ref")
}

// testDLForeignRefs checks that a Ref is only honoured on its own
// destination.
func (s *suite) testDLForeignRefs(t *testing.T) {
	d, st := s.openStore(t)
	a, b := dlDest("dlforeigna"), dlDest("dlforeignb")
	ma := deadLetterMsg(a, "dl-foreign-a-"+unique(), "k")
	mb := deadLetterMsg(b, "dl-foreign-b-"+unique(), "k")
	publish(t, d, a, ma)
	publish(t, d, b, mb)
	heldA := expectHeld(t, st, a, "after publishing", ma.ID)
	n, err := st.DeleteDeadLetters(timeout(t, opTimeout), b, entryRefs(heldA))
	if err != nil && !errors.Is(err, driver.ErrUnsupported) {
		t.Fatalf("DeleteDeadLetters(%s) with the Ref of a message of %s: %v", b, a, err)
	}
	if n != 0 {
		t.Fatalf("DeleteDeadLetters(%s) with the Ref of a message of %s removed %d, want 0", b, a, n)
	}
	expectHeld(t, st, a, "after removing its Ref from another destination", ma.ID)
	expectHeld(t, st, b, "after removing another destination's Ref from it", mb.ID)
}

func (s *suite) testDLPurge(t *testing.T) {
	d, st := s.openStore(t)
	a, b := dlDest("dlpurgea"), dlDest("dlpurgeb")
	publishDL(t, d, a, "dl-purge-a", 3)
	idsB := ids(publishDL(t, d, b, "dl-purge-b", 2))
	if n := purgeDL(t, st, a); n != 3 {
		t.Fatalf("PurgeDeadLetters(%s) removed %d, want 3", a, n)
	}
	expectHeld(t, st, a, "after purging it")
	expectHeld(t, st, b, "after purging another destination", idsB...)
	if n := purgeDL(t, st, a); n != 0 {
		t.Fatalf("PurgeDeadLetters(%s) again removed %d, want 0", a, n)
	}
	if n := purgeDL(t, st, b); n != 2 {
		t.Fatalf("PurgeDeadLetters(%s) removed %d, want 2", b, n)
	}
	expectHeld(t, st, b, "after purging it")
}

func (s *suite) testDLMissing(t *testing.T) {
	_, st := s.openStore(t)
	dl := dlDest("dlmissing")
	expectHeld(t, st, dl, "a destination never used")
	if n := purgeDL(t, st, dl); n != 0 {
		t.Fatalf("PurgeDeadLetters of a destination never used removed %d", n)
	}
	if n := deleteDL(t, st, dl); n != 0 {
		t.Fatalf("DeleteDeadLetters of no Refs removed %d", n)
	}
}

// testDLReadLeavesConsumers checks that reading is not consuming: a group on
// the dead-letter destination still receives every message.
func (s *suite) testDLReadLeavesConsumers(t *testing.T) {
	d, st := s.openStore(t)
	dl := dlDest("dlconsumers")
	sub := subscribe(t, s.open(t), dl, driver.SubscribeOptions{Group: s.group(), Durable: s.caps.Durable})
	msgs := publishDL(t, d, dl, "dl-consumers", 3)
	expectHeld(t, st, dl, "before the group received", ids(msgs)...)
	expectHeld(t, st, dl, "read twice", ids(msgs)...)
	got := receiveAndAck(t, sub, len(msgs), 10)
	checkExactlyOnce(t, "the group on the dead-letter destination", msgs, got)
}

func (s *suite) testDLMalformed(t *testing.T) {
	if s.h.InjectDeadLetter == nil {
		t.Skip("Harness.InjectDeadLetter is not set: the harness cannot store a malformed message")
	}
	d, st := s.openStore(t)
	dl := dlDest("dlmalformed")
	body := []byte("no envelope " + unique())
	if err := s.h.InjectDeadLetter(timeout(t, opTimeout), d, dl, body); err != nil {
		t.Fatalf("Harness.InjectDeadLetter: %v", err)
	}
	good := deadLetterMsg(dl, "dl-after-malformed-"+unique(), "k")
	publish(t, d, dl, good)
	got := readDL(t, st, dl)
	if len(got) != 2 {
		t.Fatalf("ReadDeadLetters passed %d messages, want the malformed one and %q", len(got), good.ID)
	}
	bad := slices.IndexFunc(got, func(e driver.DeadLetterEntry) bool { return e.Message.ID != good.ID })
	if bad < 0 || string(got[bad].Message.Data) != string(body) {
		t.Fatalf("ReadDeadLetters passed %v, want the malformed message with its raw body %q", entryIDs(got), body)
	}
	if n := deleteDL(t, st, dl, got[bad].Ref); n != 1 {
		t.Fatalf("DeleteDeadLetters of the malformed message removed %d, want 1", n)
	}
	expectHeld(t, st, dl, "after removing the malformed message", good.ID)
}
