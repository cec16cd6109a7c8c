package middleware

import (
	"container/list"
	"context"
	"sync"
	"time"

	"github.com/marty-msf/eventbus"
)

// DedupOptions configures NewDedup. The zero value is the documented
// default.
type DedupOptions struct {
	// Size bounds the (source, id) pairs remembered; the least recently
	// handled is forgotten first. Default 10000.
	Size int
	// TTL forgets a pair this long after its message was handled. Default
	// 1h.
	TTL time.Duration
}

// Dedup drops a message whose (source, id) it has seen handled
// successfully, within a bounded memory (Size pairs, each kept TTL). It
// acknowledges the duplicate without calling the handler. Two deliveries of
// one message at the same time run one handler: the second waits for the
// first and is dropped if it succeeded, run if it failed.
//
// Memory is per process and forgets: it stops the duplicates an
// at-least-once backend redelivers within minutes to this process (a lost
// ack, a redelivery after a restart of the consumer's peer), not those that
// arrive after a restart or at another member of the group. For
// exactly-once processing record (source, id) in the handler's own
// transaction with outbox.Inbox. Safe for concurrent use; share one Dedup
// between subscriptions only when they handle the same messages the same
// way.
type Dedup struct {
	size int
	ttl  time.Duration
	now  func() time.Time

	mu      sync.Mutex
	lru     *list.List // of *dedupEntry, most recent first
	seen    map[dedupKey]*list.Element
	running map[dedupKey]chan struct{}
}

type dedupKey struct{ source, id string }

type dedupEntry struct {
	key dedupKey
	at  time.Time
}

// NewDedup returns an empty Dedup. opts may be nil.
func NewDedup(opts *DedupOptions) *Dedup {
	d := &Dedup{size: 10000, ttl: time.Hour, now: time.Now, lru: list.New(),
		seen: map[dedupKey]*list.Element{}, running: map[dedupKey]chan struct{}{}}
	if opts != nil && opts.Size > 0 {
		d.size = opts.Size
	}
	if opts != nil && opts.TTL > 0 {
		d.ttl = opts.TTL
	}
	return d
}

// Len returns the number of pairs remembered.
func (d *Dedup) Len() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.lru.Len()
}

// Wrap is the Dedup's eventbus.Middleware.
func (d *Dedup) Wrap(next eventbus.Handler) eventbus.Handler {
	return eventbus.HandlerFunc(func(ctx context.Context, m *eventbus.Message) error {
		k := dedupKey{m.Source, m.ID}
		for {
			d.mu.Lock()
			if d.seenLocked(k) {
				d.mu.Unlock()
				return nil
			}
			wait, busy := d.running[k]
			if !busy {
				done := make(chan struct{})
				d.running[k] = done
				d.mu.Unlock()
				err := next.Handle(ctx, m)
				d.mu.Lock()
				delete(d.running, k)
				if err == nil {
					d.addLocked(k)
				}
				d.mu.Unlock()
				close(done)
				return err
			}
			d.mu.Unlock()
			select {
			case <-wait:
			case <-ctx.Done():
				return context.Cause(ctx)
			}
		}
	})
}

func (d *Dedup) seenLocked(k dedupKey) bool {
	e, ok := d.seen[k]
	if !ok {
		return false
	}
	if d.now().Sub(e.Value.(*dedupEntry).at) >= d.ttl {
		d.lru.Remove(e)
		delete(d.seen, k)
		return false
	}
	return true
}

func (d *Dedup) addLocked(k dedupKey) {
	now := d.now()
	if e, ok := d.seen[k]; ok {
		e.Value.(*dedupEntry).at = now
		d.lru.MoveToFront(e)
		return
	}
	d.seen[k] = d.lru.PushFront(&dedupEntry{key: k, at: now})
	// Forget the oldest: over the bound, or expired.
	for d.lru.Len() > 0 {
		last := d.lru.Back()
		if d.lru.Len() <= d.size && now.Sub(last.Value.(*dedupEntry).at) < d.ttl {
			break
		}
		d.lru.Remove(last)
		delete(d.seen, last.Value.(*dedupEntry).key)
	}
}
