package membus

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"

	"github.com/marty-msf/eventbus/driver"
)

// Defaults of the dead-letter store's bounds (Options.DeadLetterLimit and
// Options.DeadLetterMaxBytes).
const (
	DefaultDeadLetterLimit    = 10000
	DefaultDeadLetterMaxBytes = 64 << 20
)

var _ driver.DeadLetterStore = (*Driver)(nil)

// deadLetters keeps a copy of every message published to a dead-letter
// destination of one broker, oldest first, within its bounds; it is what
// the broker's connections browse and remove through driver.DeadLetterStore.
type deadLetters struct {
	maxMsgs, maxBytes int

	mu      sync.Mutex
	seq     uint64
	count   int
	bytes   int
	dropped uint64
	dests   map[string]*dlLog // by destination name; a log stays once created
}

// dlLog is one destination's dead letters, oldest first.
type dlLog struct {
	entries []dlEntry
}

type dlEntry struct {
	seq  uint64
	size int
	m    *driver.Message
}

func newDeadLetters(maxMsgs, maxBytes int) *deadLetters {
	if maxMsgs <= 0 {
		maxMsgs = DefaultDeadLetterLimit
	}
	if maxBytes <= 0 {
		maxBytes = DefaultDeadLetterMaxBytes
	}
	return &deadLetters{maxMsgs: maxMsgs, maxBytes: maxBytes, dests: make(map[string]*dlLog)}
}

// keep stores copies of msgs published to the dead-letter destination name,
// dropping the oldest dead letters of the broker beyond its bounds.
func (s *deadLetters) keep(name string, msgs []*driver.Message) {
	s.mu.Lock()
	defer s.mu.Unlock()
	l := s.dests[name]
	if l == nil {
		l = new(dlLog)
		s.dests[name] = l
	}
	for _, m := range msgs {
		s.seq++
		e := dlEntry{seq: s.seq, size: m.Size(), m: m.Clone()}
		l.entries = append(l.entries, e)
		s.count++
		s.bytes += e.size
	}
	for s.count > s.maxMsgs || s.bytes > s.maxBytes {
		s.dropOldest()
	}
}

// dropOldest removes the oldest dead letter of the broker, under s.mu.
func (s *deadLetters) dropOldest() {
	var oldest *dlLog
	for _, l := range s.dests {
		if len(l.entries) > 0 && (oldest == nil || l.entries[0].seq < oldest.entries[0].seq) {
			oldest = l
		}
	}
	if oldest == nil {
		return
	}
	s.count--
	s.bytes -= oldest.entries[0].size
	s.dropped++
	oldest.entries[0] = dlEntry{}
	oldest.entries = oldest.entries[1:]
}

// DeadLettersDropped reports how many dead letters the broker dropped, the
// oldest first, to stay within Options.DeadLetterLimit and
// Options.DeadLetterMaxBytes.
func (d *Driver) DeadLettersDropped() uint64 {
	d.b.dl.mu.Lock()
	defer d.b.dl.mu.Unlock()
	return d.b.dl.dropped
}

// DeadLetterDestinations lists the dead-letter destinations that any
// connection of the broker published to, and those that any subscription
// opened, sorted by name, whether or not they hold messages.
func (d *Driver) DeadLetterDestinations(ctx context.Context) ([]driver.Destination, error) {
	if err := d.dlCheck(ctx, "list dead-letter destinations", ""); err != nil {
		return nil, err
	}
	prefix := driver.DeadLetter.Prefix() + "."
	names := make(map[string]struct{})
	d.b.dl.mu.Lock()
	for n := range d.b.dl.dests {
		names[n] = struct{}{}
	}
	d.b.dl.mu.Unlock()
	d.b.mu.RLock()
	for n := range d.b.dests {
		if strings.HasPrefix(n, prefix) {
			names[n] = struct{}{}
		}
	}
	d.b.mu.RUnlock()
	out := make([]driver.Destination, 0, len(names))
	for n := range names {
		out = append(out, driver.Destination{Pattern: driver.DeadLetter, Name: n})
	}
	slices.SortFunc(out, func(a, b driver.Destination) int { return strings.Compare(a.Name, b.Name) })
	return out, nil
}

// ReadDeadLetters passes the dead letters held on dl, oldest first, each
// with its own copy of the message; Ref is a sequence number of the broker.
func (d *Driver) ReadDeadLetters(ctx context.Context, dl driver.Destination, fn func(driver.DeadLetterEntry) bool) error {
	if err := d.dlCheck(ctx, "read dead letters", dl.Name); err != nil {
		return err
	}
	// A snapshot, so that fn runs without the lock and may call the store.
	d.b.dl.mu.Lock()
	var held []dlEntry
	if l := d.b.dl.dests[dl.Name]; l != nil {
		held = slices.Clone(l.entries)
	}
	d.b.dl.mu.Unlock()
	for _, e := range held {
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("membus: read dead letters of %q: %w", dl.Name, err)
		}
		if !fn(driver.DeadLetterEntry{Ref: strconv.FormatUint(e.seq, 10), Message: e.m.Clone()}) {
			return nil
		}
	}
	return nil
}

// DeleteDeadLetters removes the dead letters named by refs from dl. A ref
// that names no dead letter held on dl is skipped.
func (d *Driver) DeleteDeadLetters(ctx context.Context, dl driver.Destination, refs []string) (int, error) {
	if err := d.dlCheck(ctx, "delete dead letters", dl.Name); err != nil {
		return 0, err
	}
	remove := make(map[uint64]struct{}, len(refs))
	for _, r := range refs {
		if seq, err := strconv.ParseUint(r, 10, 64); err == nil {
			remove[seq] = struct{}{}
		}
	}
	s := d.b.dl
	s.mu.Lock()
	defer s.mu.Unlock()
	l := s.dests[dl.Name]
	if l == nil || len(remove) == 0 {
		return 0, nil
	}
	n := 0
	l.entries = slices.DeleteFunc(l.entries, func(e dlEntry) bool {
		if _, ok := remove[e.seq]; !ok {
			return false
		}
		n++
		s.count--
		s.bytes -= e.size
		return true
	})
	return n, nil
}

// PurgeDeadLetters removes every dead letter held on dl.
func (d *Driver) PurgeDeadLetters(ctx context.Context, dl driver.Destination) (int, error) {
	if err := d.dlCheck(ctx, "purge dead letters", dl.Name); err != nil {
		return 0, err
	}
	s := d.b.dl
	s.mu.Lock()
	defer s.mu.Unlock()
	l := s.dests[dl.Name]
	if l == nil {
		return 0, nil
	}
	n := len(l.entries)
	for _, e := range l.entries {
		s.bytes -= e.size
	}
	s.count -= n
	l.entries = nil
	return n, nil
}

// dlCheck fails a dead-letter call on a closed connection or a done context.
func (d *Driver) dlCheck(ctx context.Context, op, name string) error {
	if name != "" {
		op += " of " + strconv.Quote(name)
	}
	if d.closed.Load() {
		return fmt.Errorf("membus: %s: %w", op, driver.ErrClosed)
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("membus: %s: %w", op, err)
	}
	return nil
}
