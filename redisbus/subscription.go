package redisbus

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/marty-msf/eventbus/driver"
)

// Scripts run where a check and a change must be one step.
var (
	// reclaimScript claims, for ARGV[2], up to ARGV[5] entries of group
	// ARGV[1] pending for at least ARGV[3] ms, scanning from cursor ARGV[4]
	// (XAUTOCLAIM), and returns the next cursor, the entries and each one's
	// delivery count, which XAUTOCLAIM does not report.
	reclaimScript = redis.NewScript(`
local r = redis.call('XAUTOCLAIM', KEYS[1], ARGV[1], ARGV[2], ARGV[3], ARGV[4], 'COUNT', ARGV[5])
local counts = {}
for i, e in ipairs(r[2]) do
  local p = redis.call('XPENDING', KEYS[1], ARGV[1], e[1], e[1], 1)
  if p[1] then counts[i] = p[1][4] else counts[i] = 1 end
end
return {r[1], r[2], counts}`)

	// ownScript acts on those of the ids ARGV[4..] that are still pending
	// for consumer ARGV[2] of group ARGV[1] (another member may have
	// reclaimed one): "keep" resets their idle time, so that nobody reclaims
	// them; "release" makes them look idle since 1970, so that the next
	// reclaim of any member takes them; "claim" delivers them again to the
	// same consumer, counting a delivery, and returns them.
	ownScript = redis.NewScript(`
local args = {'XCLAIM', KEYS[1], ARGV[1], ARGV[2], 0}
local n = 0
for i = 4, #ARGV do
  local p = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[i], ARGV[i], 1)
  if p[1] and p[1][2] == ARGV[2] then
    args[#args + 1] = ARGV[i]
    n = n + 1
  end
end
if n == 0 then return {} end
if ARGV[3] == 'release' then
  args[#args + 1] = 'TIME'
  args[#args + 1] = 1
end
if ARGV[3] ~= 'claim' then args[#args + 1] = 'JUSTID' end
return redis.call(unpack(args))`)

	// leaseScript keeps the reader lease KEYS[1] of a stream's group for
	// consumer ARGV[1] for ARGV[2] ms. "acquire" takes it when free (2),
	// renews it when held by ARGV[1] (1), and leaves it to another holder
	// (0); "release" deletes it when held by ARGV[1].
	leaseScript = redis.NewScript(`
local v = redis.call('GET', KEYS[1])
if ARGV[3] == 'release' then
  if v == ARGV[1] then redis.call('DEL', KEYS[1]) end
  return 0
end
if not v then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 2
end
if v == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
return 0`)

	// sweepScript deletes the consumers of group ARGV[1] that hold nothing
	// and are ARGV[2] itself or idle for over ARGV[3] ms: members that left.
	sweepScript = redis.NewScript(`
local cs = redis.call('XINFO', 'CONSUMERS', KEYS[1], ARGV[1])
local n = 0
for _, c in ipairs(cs) do
  local f = {}
  for i = 1, #c, 2 do f[c[i]] = c[i + 1] end
  if f['pending'] == 0 and (f['name'] == ARGV[2] or f['idle'] > tonumber(ARGV[3])) then
    redis.call('XGROUP', 'DELCONSUMER', KEYS[1], ARGV[1], f['name'])
    n = n + 1
  end
end
return n`)
)

// scriptChunk bounds the ids of one script call (Lua's unpack has a limit).
const scriptChunk = 1000

// sweepIdle is how long a consumer with nothing pending stays in its group.
const sweepIdle = 10 * time.Minute

// streamSub is one member of a consumer group on a destination's stream.
//
// It reads new entries Options.ReadAhead at a time (XREADGROUP COUNT) into
// stash, and hands them out from there; when stash runs low, one goroutine
// reads more ahead (without blocking) while the consumer handles what it
// has. Reads of new entries never overlap, so they are handed out in stream
// order. Entries read by a Receive whose context ended go to stash too.
// The keep-alive goroutine resets the idle time of everything the
// subscription holds (handed out, stashed or nacked with a delay) every
// third of the ack wait, so that no other member reclaims it while this
// one lives.
type streamSub struct {
	d        *Driver
	dest     driver.Destination
	key      string
	group    string
	consumer string
	private  bool
	ackWait  time.Duration
	every    time.Duration // reclaim interval
	limit    int           // MaxInFlight; 0: no limit
	ahead    int           // Options.ReadAhead; 0: none
	lease    string        // the reader lease of a stream's group; "": members compete

	mu          sync.Mutex
	held        map[string]struct{}
	reserved    int // entries being read for a Receive, counted against limit
	stash       []*driver.Delivery
	delayed     map[string]delayedEntry
	changed     chan struct{} // closed and replaced when room, due or stashed entries appear
	closed      bool
	reading     bool          // a read of new entries is in progress
	acking      int           // XACKs sent and not answered yet
	fillEnd     chan struct{} // closed when the read ahead in progress (if any) ended
	nextReclaim time.Time
	cursor      string
	leader      bool      // holds the lease
	nextLease   time.Time // when a member without the lease asks again

	ctx       context.Context // cancelled by Close
	cancel    context.CancelFunc
	keeperEnd chan struct{}
}

// delayedEntry is a nacked entry waiting for its delay: still pending for
// this consumer, kept fresh, delivered again by Receive when due.
type delayedEntry struct {
	due     time.Time
	attempt int
}

func (d *Driver) subscribeStream(ctx context.Context, dest driver.Destination, consumer string, opts driver.SubscribeOptions) (*streamSub, error) {
	key := d.StreamKey(dest)
	group := opts.Group
	private := group == ""
	if private {
		group = "private-" + consumer
	}
	if err := d.createGroup(ctx, key, group, opts.StartAt); err != nil {
		return nil, fmt.Errorf("redisbus: subscribe to %q: %w", dest.Name, err)
	}
	ackWait := opts.AckWait
	if ackWait <= 0 {
		ackWait = d.opts.AckWait
	}
	ackWait = max(ackWait, minAckWait)
	s := &streamSub{
		d:         d,
		dest:      dest,
		key:       key,
		group:     group,
		consumer:  consumer,
		private:   private,
		ackWait:   ackWait,
		every:     min(d.opts.ReclaimInterval, ackWait/2),
		limit:     max(opts.MaxInFlight, 0),
		ahead:     max(d.opts.ReadAhead, 0),
		held:      make(map[string]struct{}),
		delayed:   make(map[string]delayedEntry),
		changed:   make(chan struct{}),
		cursor:    "0-0",
		keeperEnd: make(chan struct{}),
	}
	if dest.Pattern == driver.Stream && !private {
		s.lease = d.opts.KeyPrefix + ":{" + dest.Name + "}:reader:" + group
	}
	s.ctx, s.cancel = context.WithCancel(context.Background())
	if dest.Pattern == driver.Reply {
		_ = d.rdb.PExpire(ctx, key, replyTTL).Err()
	}
	go s.keep()
	return s, nil
}

// notifyLocked wakes the Receive calls that wait for room or due entries.
func (s *streamSub) notifyLocked() {
	close(s.changed)
	s.changed = make(chan struct{})
}

func (s *streamSub) closedErr() error {
	return fmt.Errorf("redisbus: subscription to %q: %w", s.dest.Name, driver.ErrClosed)
}

// Receive returns between 1 and max deliveries: entries nacked earlier whose
// delay is over, entries reclaimed from members that died or gave them back,
// and new entries, in that order of preference.
func (s *streamSub) Receive(ctx context.Context, max int) ([]*driver.Delivery, error) {
	max = maxInt(max, 1)
	for {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		s.mu.Lock()
		if s.closed {
			s.mu.Unlock()
			return nil, s.closedErr()
		}
		if s.lease != "" && !s.leader {
			if err := s.lead(ctx); err != nil {
				return nil, err
			}
			continue
		}
		room := max
		if s.limit > 0 {
			room = min(max, s.limit-len(s.held)-s.reserved)
		}
		if room <= 0 {
			ch := s.changed
			s.mu.Unlock()
			select {
			case <-ch:
				continue
			case <-ctx.Done():
				return nil, ctx.Err()
			case <-s.ctx.Done():
				return nil, s.closedErr()
			}
		}
		now := time.Now()
		var due []string
		var attempts map[string]int
		wait := s.d.opts.BlockTime
		for id, e := range s.delayed {
			if !e.due.After(now) {
				if len(due) < room {
					if attempts == nil {
						attempts = make(map[string]int)
					}
					due = append(due, id)
					attempts[id] = e.attempt
					delete(s.delayed, id)
				}
				continue
			}
			wait = min(wait, e.due.Sub(now))
		}
		reclaim := len(due) == 0 && !now.Before(s.nextReclaim)
		if reclaim {
			s.nextReclaim = now.Add(s.every)
		} else {
			wait = min(wait, s.nextReclaim.Sub(now))
		}
		if len(due) == 0 && !reclaim {
			if len(s.stash) > 0 {
				n := min(room, len(s.stash))
				ds := make([]*driver.Delivery, n)
				copy(ds, s.stash)
				clear(s.stash[:n])
				s.stash = s.stash[n:]
				for _, d := range ds {
					s.held[*d.Handle.(*string)] = struct{}{}
				}
				s.fillLocked()
				s.mu.Unlock()
				return ds, nil
			}
			if s.reading {
				// The read ahead is under way: its entries come first.
				ch := s.changed
				s.mu.Unlock()
				if err := s.await(ctx, ch, wait); err != nil {
					return nil, err
				}
				continue
			}
		}
		read := len(due) == 0 && !reclaim
		n := room
		if read {
			s.reading = true
			n = s.aheadLocked(room)
		}
		s.reserved += room
		ch := s.changed
		s.mu.Unlock()

		var (
			ds  []*driver.Delivery
			err error
		)
		switch {
		case len(due) > 0:
			ds, err = s.claim(ctx, due, attempts)
		case reclaim:
			ds, err = s.reclaim(ctx, room)
		default:
			ds, err = s.read(ctx, n, wait, ch)
		}
		if ds, err := s.handOut(ctx, room, read, ds, err); err != nil || len(ds) > 0 {
			return ds, err
		}
	}
}

// lead, called with s.mu held (and returning with it released), tries to
// become the group's one reader of a stream, at most every reclaim
// interval. The new reader first takes over every entry pending in the
// group, in stream order: the entries of the reader before it (given back
// at its Close, or held when it died) come before anything new, so that
// each key's messages keep their order across a change of reader.
func (s *streamSub) lead(ctx context.Context) error {
	if s.reading {
		ch := s.changed
		s.mu.Unlock()
		return s.await(ctx, ch, s.every)
	}
	if wait := time.Until(s.nextLease); wait > 0 {
		ch := s.changed
		s.mu.Unlock()
		return s.await(ctx, ch, wait)
	}
	s.reading = true
	s.mu.Unlock()
	got, err := leaseScript.Run(ctx, s.d.rdb, []string{s.lease}, s.consumer, s.ackWait.Milliseconds(), "acquire").Int()
	var ds []*driver.Delivery
	if err == nil && got > 0 {
		ds, err = s.takeOver(ctx)
	}
	s.mu.Lock()
	s.reading = false
	s.notifyLocked()
	if s.closed {
		s.mu.Unlock()
		if len(ds) > 0 {
			s.giveBack(ctx, ds)
		}
		return s.closedErr()
	}
	switch {
	case err != nil:
		s.nextLease = time.Now().Add(s.every)
		s.mu.Unlock()
		if ctx.Err() != nil {
			return ctx.Err()
		}
		return fmt.Errorf("redisbus: receive from %q: %w", s.dest.Name, s.d.classify(err))
	case got == 0:
		s.nextLease = time.Now().Add(s.every)
	default:
		s.leader = true
		s.stash = append(ds, s.stash...)
		s.d.log.Debug("redisbus: reading the stream for the group", "destination", s.dest.Name, "group", s.group, "taken over", len(ds))
	}
	s.mu.Unlock()
	return nil
}

// takeOver claims every entry pending in the group, in stream order.
func (s *streamSub) takeOver(ctx context.Context) ([]*driver.Delivery, error) {
	var all []*driver.Delivery
	cursor := "0-0"
	for {
		ds, next, err := s.claimIdle(ctx, cursor, 0, 1000)
		if err != nil {
			return all, err
		}
		all = append(all, ds...)
		if next == "0-0" || next == "" {
			return all, nil
		}
		cursor = next
	}
}

// await waits for ch, at most wait.
func (s *streamSub) await(ctx context.Context, ch <-chan struct{}, wait time.Duration) error {
	t := time.NewTimer(max(wait, time.Millisecond))
	defer t.Stop()
	select {
	case <-ch:
	case <-t.C:
	case <-ctx.Done():
		return ctx.Err()
	case <-s.ctx.Done():
		return s.closedErr()
	}
	return nil
}

// aheadLocked returns how many new entries to read when a Receive has room
// for room: Options.ReadAhead, within MaxInFlight.
func (s *streamSub) aheadLocked(room int) int {
	n := max(room, s.ahead)
	if s.limit > 0 {
		n = min(n, s.limit-len(s.held)-s.reserved-len(s.stash))
	}
	return max(n, room)
}

// fillLocked starts a read ahead when stash runs low and no read is under
// way.
func (s *streamSub) fillLocked() {
	if s.ahead == 0 || s.reading || s.closed || len(s.stash) > s.ahead/2 {
		return
	}
	n := s.ahead - len(s.stash)
	if s.limit > 0 {
		n = min(n, s.limit-len(s.held)-s.reserved-len(s.stash))
	}
	if n <= 0 {
		return
	}
	s.reading = true
	end := make(chan struct{})
	s.fillEnd = end
	go s.fill(n, end)
}

// fill reads up to n new entries without blocking, into stash.
func (s *streamSub) fill(n int, end chan struct{}) {
	defer close(end)
	ctx, cancel := context.WithTimeout(s.ctx, pipeTimeout)
	defer cancel()
	ds, err := s.xread(ctx, n, -1)
	s.mu.Lock()
	s.reading = false
	if s.closed {
		s.mu.Unlock()
		if len(ds) > 0 {
			gctx, gcancel := context.WithTimeout(context.Background(), time.Second)
			s.giveBack(gctx, ds)
			gcancel()
		}
		return
	}
	s.stash = append(s.stash, ds...)
	s.notifyLocked()
	s.mu.Unlock()
	if err != nil && s.ctx.Err() == nil {
		// The next Receive reads again and reports the failure.
		s.d.log.Debug("redisbus: read ahead failed", "destination", s.dest.Name, "err", s.d.classify(err))
	}
}

// handOut records what a Receive got from Redis, or gives it back when the
// subscription closed meanwhile. A read of new entries (read) may bring
// more than room: the rest goes to stash.
func (s *streamSub) handOut(ctx context.Context, room int, read bool, ds []*driver.Delivery, err error) ([]*driver.Delivery, error) {
	s.mu.Lock()
	s.reserved -= room
	if read {
		s.reading = false
		s.notifyLocked()
	}
	if s.closed {
		s.mu.Unlock()
		if len(ds) > 0 {
			s.giveBack(ctx, ds)
		}
		return nil, s.closedErr()
	}
	defer s.mu.Unlock()
	if len(ds) > 0 && ctx.Err() != nil {
		s.stash = append(s.stash, ds...)
		return nil, ctx.Err()
	}
	if len(ds) > room {
		s.stash = append(s.stash, ds[room:]...)
		ds = ds[:room:room]
	}
	for _, d := range ds {
		s.held[*d.Handle.(*string)] = struct{}{}
	}
	if err != nil && len(ds) == 0 {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		return nil, fmt.Errorf("redisbus: receive from %q: %w", s.dest.Name, s.d.classify(err))
	}
	return ds, nil
}

// giveBack releases deliveries read after the subscription closed.
func (s *streamSub) giveBack(ctx context.Context, ds []*driver.Delivery) {
	ids := make([]string, len(ds))
	for i, d := range ds {
		ids[i] = *d.Handle.(*string)
	}
	ctx, cancel := boundedContext(ctx, time.Second)
	defer cancel()
	if err := s.own(ctx, "release", ids); err != nil {
		s.d.log.Warn("redisbus: give back after close failed; the entries are reclaimed after the ack wait", "destination", s.dest.Name, "err", err)
	}
}

// read reads new entries (XREADGROUP >), blocking for at most wait.
func (s *streamSub) read(ctx context.Context, n int, wait time.Duration, changed <-chan struct{}) ([]*driver.Delivery, error) {
	select {
	case <-changed:
		return nil, nil // room or due entries: look again
	default:
	}
	if dl, ok := ctx.Deadline(); ok {
		wait = min(wait, time.Until(dl)-10*time.Millisecond)
	}
	return s.xread(ctx, n, max(wait, time.Millisecond))
}

// xread reads up to n new entries, blocking for at most block (not at all
// when block is negative).
func (s *streamSub) xread(ctx context.Context, n int, block time.Duration) ([]*driver.Delivery, error) {
	args := make([]any, 0, 10)
	args = append(args, "xreadgroup", "group", s.group, s.consumer, "count", n)
	if block >= 0 {
		args = append(args, "block", block.Milliseconds())
	}
	args = append(args, "streams", s.key, ">")
	// The reply is parsed from its raw bytes (see parseXRead); an error
	// reply goes through go-redis's own reading again, which follows a
	// Cluster's redirections and reports the error.
	reply := getReply()
	cmd := redis.NewRawWriteToCmd(ctx, reply, args...)
	err := s.d.rdb.Process(ctx, cmd)
	if err == nil {
		err = cmd.Err()
	}
	if err == nil && !isErrorReply(reply.b) {
		entries, err := parseXRead(reply.b)
		putReply(reply)
		if err != nil {
			return nil, err
		}
		return s.deliveries(entries, nil, 1), nil
	}
	putReply(reply)
	var res any
	if err == nil {
		res, err = s.d.rdb.Do(ctx, args...).Result()
	} else if dl, ok := ctx.Deadline(); ok && !time.Now().Before(dl) {
		// The connection's deadline is the context's: report the
		// context's end, which its timer may not have marked yet.
		<-ctx.Done()
		return nil, ctx.Err()
	}
	if errors.Is(err, redis.Nil) {
		return nil, nil
	}
	if err != nil {
		if strings.HasPrefix(err.Error(), "NOGROUP") {
			// The stream was deleted (a reply stream that expired, say):
			// start again from whatever it holds now.
			return nil, s.d.createGroup(ctx, s.key, s.group, driver.StartFirst)
		}
		return nil, err
	}
	var entries []entry
	switch v := res.(type) {
	case []any:
		for _, st := range v {
			if pair, ok := st.([]any); ok && len(pair) == 2 {
				entries = parseEntries(pair[1])
			}
		}
	case map[any]any:
		for _, es := range v {
			entries = parseEntries(es)
		}
	}
	return s.deliveries(entries, nil, 1), nil
}

// reclaim takes entries pending in the group for longer than the ack wait:
// held by a member that died, or given back by one that closed or nacked.
func (s *streamSub) reclaim(ctx context.Context, n int) ([]*driver.Delivery, error) {
	s.mu.Lock()
	cursor := s.cursor
	s.mu.Unlock()
	ds, next, err := s.claimIdle(ctx, cursor, s.ackWait, n)
	if err != nil {
		return nil, err
	}
	s.mu.Lock()
	s.cursor = next
	if next != "0-0" {
		// More to scan: the next Receive goes on at once.
		s.nextReclaim = time.Time{}
	}
	s.mu.Unlock()
	return ds, nil
}

// claimIdle claims up to n entries pending for at least idle, scanning
// from cursor, and returns them and the next cursor ("0-0" at the end).
func (s *streamSub) claimIdle(ctx context.Context, cursor string, idle time.Duration, n int) ([]*driver.Delivery, string, error) {
	res, err := reclaimScript.Run(ctx, s.d.rdb, []string{s.key}, s.group, s.consumer,
		idle.Milliseconds(), cursor, n).Result()
	if err != nil {
		if strings.HasPrefix(err.Error(), "NOGROUP") {
			return nil, "0-0", s.d.createGroup(ctx, s.key, s.group, driver.StartFirst)
		}
		return nil, "", err
	}
	r, ok := res.([]any)
	if !ok || len(r) != 3 {
		return nil, "", fmt.Errorf("unexpected XAUTOCLAIM reply %T", res)
	}
	next, _ := r[0].(string)
	counts := make(map[string]int)
	entries := parseEntries(r[1])
	if cs, ok := r[2].([]any); ok {
		for i, e := range entries {
			if i < len(cs) {
				if c, ok := cs[i].(int64); ok {
					counts[e.id] = int(c)
				}
			}
		}
	}
	return s.deliveries(entries, counts, 2), next, nil
}

// claim delivers again the nacked entries whose delay is over.
func (s *streamSub) claim(ctx context.Context, ids []string, attempts map[string]int) ([]*driver.Delivery, error) {
	res, err := ownScript.Run(ctx, s.d.rdb, []string{s.key}, ownArgs(s.group, s.consumer, "claim", ids)...).Result()
	if err != nil {
		// Still pending for this consumer: the keep-alive stops refreshing
		// them, so a reclaim takes them after the ack wait.
		return nil, err
	}
	counts := make(map[string]int, len(ids))
	for id, a := range attempts {
		counts[id] = a + 1
	}
	return s.deliveries(parseEntries(res), counts, 2), nil
}

func ownArgs(group, consumer, mode string, ids []string) []any {
	args := make([]any, 0, 3+len(ids))
	args = append(args, group, consumer, mode)
	for _, id := range ids {
		args = append(args, id)
	}
	return args
}

// own runs ownScript on ids, in chunks.
func (s *streamSub) own(ctx context.Context, mode string, ids []string) error {
	for len(ids) > 0 {
		n := min(len(ids), scriptChunk)
		if err := ownScript.Run(ctx, s.d.rdb, []string{s.key}, ownArgs(s.group, s.consumer, mode, ids[:n])...).Err(); err != nil && !errors.Is(err, redis.Nil) {
			return err
		}
		ids = ids[n:]
	}
	return nil
}

// deliveries turns entries into deliveries; counts gives each one's
// Attempt, else fallback. The deliveries, their messages and their handles
// (a *string: the entry id) are allocated together.
func (s *streamSub) deliveries(entries []entry, counts map[string]int, fallback int) []*driver.Delivery {
	if len(entries) == 0 {
		return nil
	}
	ds := make([]*driver.Delivery, len(entries))
	slab := make([]driver.Delivery, len(entries))
	msgs := make([]driver.Message, len(entries))
	ids := make([]string, len(entries))
	for i, e := range entries {
		m, err := decodeInto(&msgs[i], e)
		attempt := fallback
		if c, ok := counts[e.id]; ok && c > 0 {
			attempt = c
		}
		ids[i] = e.id
		slab[i] = driver.Delivery{Message: m, Attempt: attempt, Err: err, Handle: &ids[i]}
		ds[i] = &slab[i]
	}
	return ds
}

// parseEntries reads a RESP array of entries: [id, [field, value, ...]].
// Entries without fields (deleted since) are skipped. The fields of all
// entries share one slice.
func parseEntries(v any) []entry {
	list, ok := v.([]any)
	if !ok {
		return nil
	}
	total := 0
	for _, item := range list {
		if pair, ok := item.([]any); ok && len(pair) == 2 {
			if raw, ok := pair[1].([]any); ok {
				total += len(raw)
			}
		}
	}
	all := make([]string, total)
	out := make([]entry, 0, len(list))
	for _, item := range list {
		pair, ok := item.([]any)
		if !ok || len(pair) != 2 {
			continue
		}
		id, _ := pair[0].(string)
		raw, ok := pair[1].([]any)
		if id == "" || !ok {
			continue
		}
		fields := all[:len(raw):len(raw)]
		all = all[len(raw):]
		for i, f := range raw {
			fields[i], _ = f.(string)
		}
		out = append(out, entry{id: id, fields: fields})
	}
	return out
}

// Ack acknowledges the deliveries: XACK, sent at once (concurrent calls
// share pipelines) without waiting for the reply, so that the consumer goes
// on meanwhile. A failed XACK is logged; the entries are then delivered
// again after the ack wait. Close waits for the XACKs under way.
func (s *streamSub) Ack(ctx context.Context, ds []*driver.Delivery) error {
	return s.ack(ctx, "ack", ds)
}

// Term settles the deliveries for good: XACK, like Ack.
func (s *streamSub) Term(ctx context.Context, ds []*driver.Delivery) error {
	return s.ack(ctx, "term", ds)
}

func (s *streamSub) ack(ctx context.Context, what string, ds []*driver.Delivery) error {
	// The handles are *string: arguments that go-redis writes without a
	// copy in an interface.
	args := make([]any, 0, 3+len(ds))
	args = append(args, "xack", &s.key, &s.group)
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return s.closedErr()
	}
	for _, d := range ds {
		if id, ok := d.Handle.(*string); ok && id != nil {
			delete(s.held, *id)
			args = append(args, id)
		}
	}
	s.notifyLocked()
	if len(args) == 3 {
		s.mu.Unlock()
		return nil
	}
	s.acking++
	s.mu.Unlock()
	n := len(args) - 3
	err := s.d.pipe.start(ctx, []redis.Cmder{redis.NewIntCmd(ctx, args...)}, func(err error) {
		if err != nil {
			s.d.log.Warn("redisbus: "+what+" failed; the messages will be delivered again after the ack wait",
				"destination", s.dest.Name, "count", n, "err", s.d.classify(err))
		}
		s.acked()
	})
	if err != nil {
		s.acked()
		return fmt.Errorf("redisbus: %s on %q: %w", what, s.dest.Name, s.d.classify(err))
	}
	return nil
}

// acked counts an XACK that ran.
func (s *streamSub) acked() {
	s.mu.Lock()
	s.acking--
	s.notifyLocked()
	s.mu.Unlock()
}

// awaitAcks waits, within ctx, for the XACKs under way.
func (s *streamSub) awaitAcks(ctx context.Context) {
	for {
		s.mu.Lock()
		n, ch := s.acking, s.changed
		s.mu.Unlock()
		if n == 0 {
			return
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return
		}
	}
}

// Nack redelivers the deliveries to this subscription after delay. They
// stay pending for this consumer meanwhile, kept fresh; should the
// subscription close or its process die first, another member reclaims them
// after the ack wait.
func (s *streamSub) Nack(_ context.Context, ds []*driver.Delivery, delay time.Duration) error {
	due := time.Now().Add(max(delay, 0))
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return s.closedErr()
	}
	for _, d := range ds {
		p, ok := d.Handle.(*string)
		if !ok || p == nil {
			continue
		}
		id := *p
		delete(s.held, id)
		s.delayed[id] = delayedEntry{due: due, attempt: d.Attempt}
	}
	s.notifyLocked()
	return nil
}

// keep resets the idle time of everything the subscription holds, every
// third of the ack wait, until Close.
func (s *streamSub) keep() {
	defer close(s.keeperEnd)
	tick := s.ackWait / 3
	t := time.NewTicker(tick)
	defer t.Stop()
	for {
		select {
		case <-s.ctx.Done():
			return
		case <-t.C:
		}
		s.mu.Lock()
		ids := make([]string, 0, len(s.held)+len(s.stash)+len(s.delayed))
		for id := range s.held {
			ids = append(ids, id)
		}
		for _, d := range s.stash {
			ids = append(ids, *d.Handle.(*string))
		}
		for id := range s.delayed {
			ids = append(ids, id)
		}
		s.mu.Unlock()
		ctx, cancel := context.WithTimeout(s.ctx, tick)
		if len(ids) > 0 {
			if err := s.own(ctx, "keep", ids); err != nil && s.ctx.Err() == nil {
				s.d.log.Warn("redisbus: keeping held messages failed; they may be redelivered", "destination", s.dest.Name, "err", err)
			}
		}
		if s.dest.Pattern == driver.Reply {
			_ = s.d.rdb.PExpire(ctx, s.key, replyTTL).Err()
		}
		s.renew(ctx)
		cancel()
	}
}

// renew keeps the lease of a stream group's reader. A reader that lost it
// (it could not renew within the ack wait) stops reading and drops what it
// read ahead: the new reader takes those entries over.
func (s *streamSub) renew(ctx context.Context) {
	s.mu.Lock()
	leader := s.leader
	s.mu.Unlock()
	if !leader {
		return
	}
	got, err := leaseScript.Run(ctx, s.d.rdb, []string{s.lease}, s.consumer, s.ackWait.Milliseconds(), "acquire").Int()
	if err != nil {
		if s.ctx.Err() == nil {
			s.d.log.Warn("redisbus: renewing the stream reader's lease failed", "destination", s.dest.Name, "err", s.d.classify(err))
		}
		return
	}
	if got != 0 {
		return
	}
	s.mu.Lock()
	s.leader = false
	s.stash = nil
	s.notifyLocked()
	s.mu.Unlock()
	s.d.log.Warn("redisbus: another member reads the stream now; messages in progress may be delivered twice", "destination", s.dest.Name, "group", s.group)
}

// Close stops the subscription and gives back at once what it holds (and
// what was nacked without a delay still to run), so that another member
// reclaims it at its next look. A private subscription's group is deleted,
// and a bus instance's reply stream with it.
func (s *streamSub) Close(ctx context.Context) error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	ids := make([]string, 0, len(s.held)+len(s.stash))
	for id := range s.held {
		ids = append(ids, id)
	}
	for _, d := range s.stash {
		ids = append(ids, *d.Handle.(*string))
	}
	now := time.Now()
	for id, e := range s.delayed {
		if !e.due.After(now) {
			ids = append(ids, id)
		}
	}
	s.held, s.stash, s.delayed = nil, nil, nil
	s.notifyLocked()
	fillEnd := s.fillEnd
	s.mu.Unlock()
	if fillEnd != nil {
		// A read ahead under way gives back what it reads.
		select {
		case <-fillEnd:
		case <-ctx.Done():
		}
	}
	s.cancel()
	if fillEnd != nil {
		<-fillEnd
	}
	<-s.keeperEnd
	defer s.d.forget(s)

	ctx, cancel := boundedContext(ctx, time.Second)
	defer cancel()
	s.awaitAcks(ctx)
	var err error
	switch {
	case s.private:
		err = s.d.rdb.XGroupDestroy(ctx, s.key, s.group).Err()
		if err == nil && s.dest.Pattern == driver.Reply {
			err = s.d.rdb.Del(ctx, s.key).Err()
		}
	default:
		if len(ids) > 0 {
			err = s.own(ctx, "release", ids)
		}
		if err == nil && s.lease != "" {
			err = leaseScript.Run(ctx, s.d.rdb, []string{s.lease}, s.consumer, 0, "release").Err()
		}
		if err == nil {
			err = sweepScript.Run(ctx, s.d.rdb, []string{s.key}, s.group, s.consumer, sweepIdle.Milliseconds()).Err()
		}
	}
	if err != nil {
		return fmt.Errorf("redisbus: close subscription to %q: %w", s.dest.Name, s.d.classify(err))
	}
	return nil
}

// boundedContext is ctx, or, when ctx has ended already, a context of its
// own bounded by grace, so that a close still tries to give back.
func boundedContext(ctx context.Context, grace time.Duration) (context.Context, context.CancelFunc) {
	if ctx.Err() == nil {
		return context.WithCancel(ctx)
	}
	return context.WithTimeout(context.WithoutCancel(ctx), grace)
}

func maxInt(a, b int) int {
	if a > b {
		return a
	}
	return b
}

// channelSub is a Pub/Sub subscription for broadcasts: at most once,
// nothing kept, settlement changes nothing.
type channelSub struct {
	d       *Driver
	dest    driver.Destination
	ps      *redis.PubSub
	ch      <-chan *redis.Message
	done    chan struct{}
	closeMu sync.Mutex
	closed  bool
}

func (d *Driver) subscribeChannel(ctx context.Context, dest driver.Destination) (*channelSub, error) {
	ps := d.rdb.Subscribe(ctx, d.StreamKey(dest))
	// The first reply confirms the subscription: from now on, every
	// broadcast reaches it.
	if _, err := ps.Receive(ctx); err != nil {
		_ = ps.Close()
		return nil, fmt.Errorf("redisbus: subscribe to %q: %w", dest.Name, d.classify(err))
	}
	return &channelSub{d: d, dest: dest, ps: ps, ch: ps.Channel(redis.WithChannelSize(4096)), done: make(chan struct{})}, nil
}

func (c *channelSub) closedErr() error {
	return fmt.Errorf("redisbus: subscription to %q: %w", c.dest.Name, driver.ErrClosed)
}

func (c *channelSub) Receive(ctx context.Context, max int) ([]*driver.Delivery, error) {
	max = maxInt(max, 1)
	var first *redis.Message
	select {
	case first = <-c.ch:
	case <-ctx.Done():
		return nil, ctx.Err()
	case <-c.done:
		return nil, c.closedErr()
	}
	if first == nil {
		return nil, c.closedErr()
	}
	ds := []*driver.Delivery{c.delivery(first)}
	for len(ds) < max {
		select {
		case m := <-c.ch:
			if m == nil {
				return ds, nil
			}
			ds = append(ds, c.delivery(m))
		default:
			return ds, nil
		}
	}
	return ds, nil
}

func (c *channelSub) delivery(m *redis.Message) *driver.Delivery {
	msg, err := decodeBroadcast(m.Payload)
	return &driver.Delivery{Message: msg, Attempt: 1, Err: err}
}

func (c *channelSub) settle() error {
	c.closeMu.Lock()
	defer c.closeMu.Unlock()
	if c.closed {
		return c.closedErr()
	}
	return nil
}

// Ack does nothing: Pub/Sub has no acknowledgement.
func (c *channelSub) Ack(context.Context, []*driver.Delivery) error { return c.settle() }

// Nack does nothing: Pub/Sub cannot redeliver.
func (c *channelSub) Nack(context.Context, []*driver.Delivery, time.Duration) error {
	return c.settle()
}

// Term does nothing: Pub/Sub never redelivers.
func (c *channelSub) Term(context.Context, []*driver.Delivery) error { return c.settle() }

func (c *channelSub) Close(context.Context) error {
	c.closeMu.Lock()
	if c.closed {
		c.closeMu.Unlock()
		return nil
	}
	c.closed = true
	close(c.done)
	c.closeMu.Unlock()
	defer c.d.forget(c)
	if err := c.ps.Close(); err != nil && !errors.Is(err, redis.ErrClosed) {
		return fmt.Errorf("redisbus: close subscription to %q: %w", c.dest.Name, c.d.classify(err))
	}
	return nil
}
