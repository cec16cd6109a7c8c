package eventbus

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/marty-msf/eventbus/driver"
)

// ErrDeadLetterNotFound: no dead letter has the id that was asked for.
var ErrDeadLetterNotFound = errors.New("dead letter not found")

// ErrDeadLetterAltered: the dead letter is not the message as it was
// consumed — the backend could not carry it whole, so part of it was cut or
// set aside (its reason says what) — and replaying it would publish the
// altered message. ReplayOptions.Altered allows it.
var ErrDeadLetterAltered = errors.New("dead letter altered")

// alteredMark introduces, in a dead letter's reason, the notes on what the
// bus cut or set aside to make it fit its backend (see deadLetterMessage).
const alteredMark = " (dead letter: "

// DeadLetters browses, replays and purges the dead letters held by the
// backends of a bus; see [Bus.DeadLetters].
type DeadLetters struct {
	b *Bus
}

// DeadLetters returns the bus's dead-letter API. It works on every
// registered backend whose driver implements [driver.DeadLetterStore],
// before or after Start; it does not need the bus's routes or handlers.
func (b *Bus) DeadLetters() *DeadLetters { return &DeadLetters{b: b} }

// DeadLetter is one dead-lettered message, as a backend holds it.
type DeadLetter struct {
	// Backend is the name of the registered backend that holds it.
	Backend string
	// Destination is the dead-letter destination, deadletter.<origin>.
	Destination string
	// Ref is the backend's name for the message ([driver.DeadLetterEntry]).
	Ref string
	// Message is the dead letter: the original attributes, extensions,
	// headers and data, plus the dead-letter extensions.
	Message *Message
	// Origin is the destination it was consumed from: its deadletterorigin
	// extension, or else Destination without its prefix.
	Origin string
	// Reason is why it was dead-lettered (deadletterreason).
	Reason string
	// Attempts is how often it was delivered before (deadletterattempts),
	// 0 when unknown.
	Attempts int
	// Group is the consumer group that gave it up (deadlettergroup), empty
	// for a private subscription.
	Group string
	// Time is when it was dead-lettered (deadlettertime), zero when unknown.
	Time time.Time
}

// Altered reports whether the bus cut or set aside part of the message to
// dead-letter it (its Reason then says what).
func (dl *DeadLetter) Altered() bool { return strings.Contains(dl.Reason, alteredMark) }

// DeadLetterFilter selects dead letters. Every field that is set must match;
// the zero value selects every dead letter of every backend.
type DeadLetterFilter struct {
	// Backend selects the dead letters of one registered backend.
	Backend string
	// Origin selects those consumed from one destination
	// ("events.order.created", "commands.billing.charge").
	Origin string
	// Type and Source select by the message's CloudEvents type and source.
	Type, Source string
	// IDs selects messages by id, any of them.
	IDs []string
	// Reason selects those whose reason contains it, ignoring case.
	Reason string
	// Group selects those given up by one consumer group.
	Group string
	// Since and Until select those dead-lettered at or after Since and
	// before Until; a dead letter without a time matches neither.
	Since, Until time.Time
	// Limit, when positive, stops after that many dead letters.
	Limit int
}

func (f *DeadLetterFilter) match(dl *DeadLetter) bool {
	m := dl.Message
	switch {
	case f.Origin != "" && dl.Origin != f.Origin,
		f.Type != "" && m.Type != f.Type,
		f.Source != "" && m.Source != f.Source,
		len(f.IDs) > 0 && !slices.Contains(f.IDs, m.ID),
		f.Reason != "" && !strings.Contains(strings.ToLower(dl.Reason), strings.ToLower(f.Reason)),
		f.Group != "" && dl.Group != f.Group,
		!f.Since.IsZero() && (dl.Time.IsZero() || dl.Time.Before(f.Since)),
		!f.Until.IsZero() && (dl.Time.IsZero() || !dl.Time.Before(f.Until)):
		return false
	}
	return true
}

// store is a backend that holds dead letters.
type store struct {
	be *backend
	st driver.DeadLetterStore
}

// stores returns the backends that f reads: the one it names, which must
// hold dead letters, or every backend that does (at least one).
func (d *DeadLetters) stores(f *DeadLetterFilter) ([]store, error) {
	b := d.b
	if b.closed.Load() {
		return nil, ErrClosed
	}
	b.mu.Lock()
	backends := slices.Clone(b.backends)
	named := b.byName[f.Backend]
	b.mu.Unlock()
	if f.Backend != "" {
		if named == nil {
			return nil, fmt.Errorf("%w %q", ErrUnknownBackend, f.Backend)
		}
		backends = []*backend{named}
	}
	var out []store
	var lacking []string
	for _, be := range backends {
		st, ok := be.drv.(driver.DeadLetterStore)
		if !ok || !be.caps.Serves(driver.DeadLetter) {
			lacking = append(lacking, fmt.Sprintf("%q (%s)", be.name, be.caps.Name))
			continue
		}
		out = append(out, store{be, st})
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("%w: backend %s keeps no dead letters it can browse", ErrCapability, strings.Join(lacking, ", "))
	}
	return out, nil
}

// destinations returns the dead-letter destinations of s that f selects:
// the one of f.Origin, or all that s lists.
func (s store) destinations(ctx context.Context, f *DeadLetterFilter) ([]driver.Destination, error) {
	if f.Origin != "" {
		origin, err := parseDestination(f.Origin)
		if err != nil {
			return nil, err
		}
		return []driver.Destination{driver.DeadLetterOf(origin)}, nil
	}
	dests, err := s.st.DeadLetterDestinations(ctx)
	if err != nil {
		return nil, fmt.Errorf("backend %s: %w", s.be.name, err)
	}
	return dests, nil
}

// read passes the dead letters that f selects to fn, backend by backend in
// registration order, destination by destination in name order, oldest
// first, until fn returns false or f.Limit is reached.
func (d *DeadLetters) read(ctx context.Context, f *DeadLetterFilter, fn func(*DeadLetter, store) bool) error {
	stores, err := d.stores(f)
	if err != nil {
		return err
	}
	n := 0
	for _, s := range stores {
		dests, err := s.destinations(ctx, f)
		if err != nil {
			return err
		}
		for _, dst := range dests {
			more := true
			err := s.st.ReadDeadLetters(ctx, dst, func(e driver.DeadLetterEntry) bool {
				dl := newDeadLetter(s.be.name, dst, e)
				if !f.match(dl) {
					return true
				}
				n++
				more = fn(dl, s) && (f.Limit <= 0 || n < f.Limit)
				return more
			})
			if err != nil {
				return fmt.Errorf("backend %s: %w", s.be.name, err)
			}
			if !more {
				return nil
			}
		}
	}
	return nil
}

func newDeadLetter(backend string, dst driver.Destination, e driver.DeadLetterEntry) *DeadLetter {
	m := e.Message
	if m == nil {
		m = &Message{}
	}
	ext := m.Extensions
	dl := &DeadLetter{
		Backend:     backend,
		Destination: dst.Name,
		Ref:         e.Ref,
		Message:     m,
		Origin:      ext[driver.ExtDeadLetterOrigin],
		Reason:      ext[driver.ExtDeadLetterReason],
		Group:       ext[driver.ExtDeadLetterGroup],
	}
	if dl.Origin == "" {
		dl.Origin = strings.TrimPrefix(dst.Name, driver.DeadLetter.Prefix()+".")
	}
	if n, err := strconv.Atoi(ext[driver.ExtDeadLetterAttempts]); err == nil && n > 0 {
		dl.Attempts = n
	}
	if t, err := time.Parse(time.RFC3339Nano, ext[driver.ExtDeadLetterTime]); err == nil {
		dl.Time = t
	}
	return dl
}

// parseDestination reads a destination name of a user-facing pattern
// ("events.order.created").
func parseDestination(name string) (driver.Destination, error) {
	prefix, rest, _ := strings.Cut(name, ".")
	for _, p := range driver.Patterns() {
		if p.Prefix() == prefix && rest != "" {
			if err := validateTokens(rest, true); err != nil {
				break
			}
			return driver.Destination{Pattern: p, Name: name}, nil
		}
	}
	return driver.Destination{}, fmt.Errorf("%w: destination %q: want events.<type>, commands.<service>.<type>, "+
		"queries.<service>.<type>, streams.<name> or broadcast.<type>", ErrInvalidName, name)
}

// List returns the dead letters that f selects: backend by backend in
// registration order, destination by destination in name order, oldest
// first. Backends whose driver cannot browse dead letters are left out when
// f names no backend; the error matches ErrCapability when none can, or when
// f names one that cannot, and ErrUnknownBackend when f names one that is not
// registered.
func (d *DeadLetters) List(ctx context.Context, f DeadLetterFilter) ([]*DeadLetter, error) {
	var out []*DeadLetter
	err := d.read(ctx, &f, func(dl *DeadLetter, _ store) bool {
		out = append(out, dl)
		return true
	})
	if err != nil {
		return nil, fmt.Errorf("eventbus: list dead letters: %w", err)
	}
	return out, nil
}

// Get returns the dead letters of the message with id: one per consumer
// group that gave it up, on every backend, in the order of List. It fails
// with ErrDeadLetterNotFound when there is none.
func (d *DeadLetters) Get(ctx context.Context, id string) ([]*DeadLetter, error) {
	out, err := d.List(ctx, DeadLetterFilter{IDs: []string{id}})
	if err != nil {
		return nil, err
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("eventbus: dead letter %q: %w", id, ErrDeadLetterNotFound)
	}
	return out, nil
}

// ReplayOptions says where Replay publishes. The zero value (and nil)
// replays each dead letter to its origin on the backend that holds it.
type ReplayOptions struct {
	// To, when set, is the destination to publish to instead of each
	// message's origin ("events.order.created", "commands.billing.charge").
	To string
	// Backend, when set, is the registered backend to publish on instead of
	// the one that holds the dead letter.
	Backend string
	// Altered allows replaying dead letters that the bus cut to make them
	// fit their backend ([DeadLetter.Altered]); without it they fail with
	// ErrDeadLetterAltered and stay.
	Altered bool
}

// ReplayResult is what Replay did with one dead letter.
type ReplayResult struct {
	DeadLetter *DeadLetter
	// Backend and Destination are where it was published.
	Backend, Destination string
	// Replayed: the backend confirmed the publish.
	Replayed bool
	// Removed: the dead letter was removed afterwards.
	Removed bool
	// Err says why it was not replayed, or not removed after it was. The
	// dead letter stays unless Removed.
	Err error
}

// Replay publishes the dead letters that f selects again — to their origin,
// or where opts says — and removes each one once its publish is confirmed,
// never before. The message is published as it was consumed: same id,
// source, attributes, extensions, headers and data, without the dead-letter
// extensions. Dead letters of one message given up by several groups are
// published once and removed together.
//
// A replay goes to the destination, not to the group that gave the message
// up: every group subscribed there receives it again; consumers that
// de-duplicate by (source, id) drop it. The replayed message carries the
// extension "replayed" (the time of the replay), which a broker's own
// de-duplication counts: JetStream accepts a replay to the destination it
// stored the original on a moment ago, within its duplicate window.
//
// Dead letters are removed per dead-letter destination, up to 256 at once,
// after the publishes of all of them were confirmed: a Replay that stops
// half-way (a crash, a cancelled context) leaves at most that many replayed
// and still held, to be replayed again.
//
// Replay reports on every selected dead letter, in the order of List; a
// dead letter it did not replay, or replayed and did not remove, has Err
// set. The error is for the call as a
// whole: an unknown backend, an invalid destination, a backend that cannot
// browse dead letters, and ErrDeadLetterNotFound when f.IDs names ids of
// which no dead letter is held (then nothing is replayed).
func (d *DeadLetters) Replay(ctx context.Context, f DeadLetterFilter, opts *ReplayOptions) ([]ReplayResult, error) {
	var o ReplayOptions
	if opts != nil {
		o = *opts
	}
	var to driver.Destination
	var err error
	if o.To != "" {
		if to, err = parseDestination(o.To); err != nil {
			return nil, fmt.Errorf("eventbus: replay dead letters: %w", err)
		}
	}
	var target *backend
	if o.Backend != "" {
		d.b.mu.Lock()
		target = d.b.byName[o.Backend]
		d.b.mu.Unlock()
		if target == nil {
			return nil, fmt.Errorf("eventbus: replay dead letters: %w %q", ErrUnknownBackend, o.Backend)
		}
	}
	type held struct {
		dl *DeadLetter
		s  store
	}
	var sel []held
	err = d.read(ctx, &f, func(dl *DeadLetter, s store) bool {
		sel = append(sel, held{dl, s})
		return true
	})
	if err != nil {
		return nil, fmt.Errorf("eventbus: replay dead letters: %w", err)
	}
	if missing := missingIDs(f.IDs, sel, func(h held) string { return h.dl.Message.ID }); len(missing) > 0 {
		return nil, fmt.Errorf("eventbus: replay dead letters: %w: %s", ErrDeadLetterNotFound, strings.Join(missing, ", "))
	}

	results := make([]ReplayResult, len(sel))
	// published remembers each message published by this call, by where it
	// went and what it is, so that its other dead letters are not published
	// again.
	type key struct{ backend, dest, source, id string }
	published := make(map[key]error)
	// Replayed dead letters are removed together, per dead-letter
	// destination, in chunks: on brokers that read a queue to remove from
	// it (SQS, RabbitMQ) one removal per dead letter would read the queue
	// once per dead letter.
	pending := make(map[heldOn][]int)
	for i, h := range sel {
		r := &results[i]
		r.DeadLetter = h.dl
		be, dest := h.s.be, to
		if target != nil {
			be = target
		}
		if o.To == "" {
			if dest, err = parseDestination(h.dl.Origin); err != nil {
				r.Err = fmt.Errorf("eventbus: replay dead letter %q: origin: %w", h.dl.Message.ID, err)
				continue
			}
		}
		r.Backend, r.Destination = be.name, dest.Name
		m := h.dl.Message
		k := key{be.name, dest.Name, m.Source, m.ID}
		perr, done := published[k]
		switch {
		case done:
		case h.dl.Altered() && !o.Altered:
			r.Err = fmt.Errorf("eventbus: replay dead letter %q: %w: %s", m.ID, ErrDeadLetterAltered, h.dl.Reason)
			continue
		default:
			perr = d.publish(ctx, be, dest, m)
			published[k] = perr
		}
		if perr != nil {
			r.Err = fmt.Errorf("eventbus: replay dead letter %q to %s via %s: %w", m.ID, dest.Name, be.name, perr)
			continue
		}
		r.Replayed = true
		on := heldOn{h.s, h.dl.Destination}
		if pending[on] = append(pending[on], i); len(pending[on]) == removeChunk {
			d.remove(ctx, on, pending[on], results)
			delete(pending, on)
		}
	}
	for on, idx := range pending {
		d.remove(ctx, on, idx, results)
	}
	return results, nil
}

// heldOn is a dead-letter destination of a backend.
type heldOn struct {
	s    store
	dest string
}

// removeChunk bounds the dead letters removed in one call, so that a
// replay that stops half-way has removed what it replayed up to its last
// chunk.
const removeChunk = 256

// remove removes the replayed dead letters results[idx] from on and sets
// their Removed, or Err. When the backend removed fewer than asked, or
// failed, it reads the destination again to tell which are still held.
func (d *DeadLetters) remove(ctx context.Context, on heldOn, idx []int, results []ReplayResult) {
	dst := driver.Destination{Pattern: driver.DeadLetter, Name: on.dest}
	refs := make([]string, len(idx))
	for j, i := range idx {
		refs[j] = results[i].DeadLetter.Ref
	}
	n, err := on.s.st.DeleteDeadLetters(ctx, dst, refs)
	if err == nil && n == len(refs) {
		for _, i := range idx {
			results[i].Removed = true
		}
		return
	}
	want := make(map[string]bool, len(refs))
	for _, ref := range refs {
		want[ref] = true
	}
	still := make(map[string]bool)
	rerr := on.s.st.ReadDeadLetters(ctx, dst, func(e driver.DeadLetterEntry) bool {
		if want[e.Ref] {
			still[e.Ref] = true
		}
		return true
	})
	for _, i := range idx {
		r := &results[i]
		id := r.DeadLetter.Message.ID
		switch {
		case rerr != nil:
			r.Err = fmt.Errorf("eventbus: dead letter %q replayed, but whether it was removed from %s is unknown: %w", id, on.dest, errors.Join(err, rerr))
		case !still[r.DeadLetter.Ref]:
			r.Removed = true
		case err != nil:
			r.Err = fmt.Errorf("eventbus: dead letter %q replayed, but not removed from %s: %w", id, on.dest, err)
		default:
			r.Err = fmt.Errorf("eventbus: dead letter %q replayed, but not removed from %s (held by another reader at the moment); it may be replayed again", id, on.dest)
		}
	}
}

// publish sends a copy of m without its dead-letter extensions to dest on
// be, and returns once be confirmed it.
func (d *DeadLetters) publish(ctx context.Context, be *backend, dest driver.Destination, m *Message) error {
	if d.b.closed.Load() {
		return ErrClosed
	}
	if err := patternCapable(be, dest.Pattern); err != nil {
		return err
	}
	m = m.Clone()
	for _, k := range [...]string{driver.ExtDeadLetterReason, driver.ExtDeadLetterAttempts, driver.ExtDeadLetterOrigin,
		driver.ExtDeadLetterGroup, driver.ExtDeadLetterTime} {
		delete(m.Extensions, k)
	}
	if m.Extensions == nil {
		m.Extensions = make(map[string]string, 1)
	}
	m.Extensions[driver.ExtReplayed] = time.Now().UTC().Format(time.RFC3339Nano)
	one := [1]*Message{m}
	return d.b.send(ctx, be, dest, one[:])
}

// missingIDs returns the ids of want that no element of got has.
func missingIDs[T any](want []string, got []T, id func(T) string) []string {
	var missing []string
	for _, w := range want {
		if !slices.ContainsFunc(got, func(g T) bool { return id(g) == w }) {
			missing = append(missing, w)
		}
	}
	return missing
}

// Purge removes the dead letters that f selects and returns how many it
// removed. A filter that selects whole destinations (at most Backend and
// Origin set) purges them on the backend at once; any other reads them and
// removes each one selected. Errors are those of List; on an error, the
// count is what was removed before it.
func (d *DeadLetters) Purge(ctx context.Context, f DeadLetterFilter) (int, error) {
	whole := f.Type == "" && f.Source == "" && len(f.IDs) == 0 && f.Reason == "" && f.Group == "" &&
		f.Since.IsZero() && f.Until.IsZero() && f.Limit <= 0
	if whole {
		n, err := d.purgeWhole(ctx, f)
		if err != nil {
			return n, fmt.Errorf("eventbus: purge dead letters: %w", err)
		}
		return n, nil
	}
	type held struct {
		s   store
		dst string
	}
	refs := make(map[held][]string)
	var order []held
	err := d.read(ctx, &f, func(dl *DeadLetter, s store) bool {
		h := held{s, dl.Destination}
		if _, ok := refs[h]; !ok {
			order = append(order, h)
		}
		refs[h] = append(refs[h], dl.Ref)
		return true
	})
	if err != nil {
		return 0, fmt.Errorf("eventbus: purge dead letters: %w", err)
	}
	total := 0
	for _, h := range order {
		n, err := h.s.st.DeleteDeadLetters(ctx, driver.Destination{Pattern: driver.DeadLetter, Name: h.dst}, refs[h])
		total += n
		if err != nil {
			return total, fmt.Errorf("eventbus: purge dead letters: backend %s: %w", h.s.be.name, err)
		}
	}
	return total, nil
}

// purgeWhole purges every destination f selects.
func (d *DeadLetters) purgeWhole(ctx context.Context, f DeadLetterFilter) (int, error) {
	stores, err := d.stores(&f)
	if err != nil {
		return 0, err
	}
	total := 0
	for _, s := range stores {
		dests, err := s.destinations(ctx, &f)
		if err != nil {
			return total, err
		}
		for _, dst := range dests {
			n, err := s.st.PurgeDeadLetters(ctx, dst)
			total += n
			if err != nil {
				return total, fmt.Errorf("backend %s: %w", s.be.name, err)
			}
		}
	}
	return total, nil
}
