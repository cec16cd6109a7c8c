package redisbus

import (
	"context"
	"fmt"
	"hash/fnv"
	"slices"
	"strconv"
	"strings"
	"sync"

	"github.com/redis/go-redis/v9"

	"github.com/marty-msf/eventbus/driver"
)

var _ driver.DeadLetterStore = (*Driver)(nil)

// deadLetterPage is how many entries one XRANGE of ReadDeadLetters reads.
const deadLetterPage = 256

// DeadLetterDestinations lists the dead-letter streams under the key
// prefix (SCAN ... TYPE stream, on every master of a Cluster), sorted by
// name. A stream emptied by DeleteDeadLetters or PurgeDeadLetters is still
// listed.
func (d *Driver) DeadLetterDestinations(ctx context.Context) ([]driver.Destination, error) {
	if d.isClosed() {
		return nil, fmt.Errorf("redisbus: dead-letter destinations: %w", driver.ErrClosed)
	}
	prefix := d.opts.KeyPrefix + ":{" + driver.DeadLetter.Prefix() + "."
	match := escapeGlob(prefix) + "*}"
	var (
		mu    sync.Mutex
		names = map[string]bool{}
	)
	scan := func(ctx context.Context, c redis.Cmdable) error {
		iter := c.ScanType(ctx, 0, match, 1000, "stream").Iterator()
		for iter.Next(ctx) {
			key := iter.Val()
			if !strings.HasPrefix(key, prefix) || !strings.HasSuffix(key, "}") {
				continue
			}
			mu.Lock()
			names[key[len(d.opts.KeyPrefix)+2:len(key)-1]] = true
			mu.Unlock()
		}
		return iter.Err()
	}
	var err error
	if cc, ok := d.rdb.(*redis.ClusterClient); ok {
		err = cc.ForEachMaster(ctx, func(ctx context.Context, c *redis.Client) error { return scan(ctx, c) })
	} else {
		err = scan(ctx, d.rdb)
	}
	if err != nil {
		return nil, fmt.Errorf("redisbus: dead-letter destinations: %w", d.classify(err))
	}
	out := make([]driver.Destination, 0, len(names))
	for name := range names {
		out = append(out, driver.Destination{Pattern: driver.DeadLetter, Name: name})
	}
	slices.SortFunc(out, func(a, b driver.Destination) int { return strings.Compare(a.Name, b.Name) })
	return out, nil
}

// escapeGlob escapes the characters that SCAN MATCH reads as a pattern.
func escapeGlob(s string) string {
	var b strings.Builder
	for _, r := range s {
		if strings.ContainsRune(`*?[]\`, r) {
			b.WriteByte('\\')
		}
		b.WriteRune(r)
	}
	return b.String()
}

// ReadDeadLetters reads dl's stream oldest first with XRANGE, a page at a
// time, up to the last entry held when it started. Each entry's Ref is its
// stream entry id and a tag of dl ("1732000000000-0@1a2b3c4d"): entry ids
// are times, so two streams may hold the same one. Reading takes nothing
// from the groups of the stream.
func (d *Driver) ReadDeadLetters(ctx context.Context, dl driver.Destination, fn func(driver.DeadLetterEntry) bool) error {
	key, err := d.deadLetterKey("read dead letters", dl)
	if err != nil {
		return err
	}
	last, err := d.rdb.XRevRangeN(ctx, key, "+", "-", 1).Result()
	if err != nil {
		return fmt.Errorf("redisbus: read dead letters of %q: %w", dl.Name, d.classify(err))
	}
	if len(last) == 0 {
		return nil
	}
	end, start := last[0].ID, "-"
	tag := refTag(dl)
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		res, err := d.rdb.Do(ctx, "xrange", key, start, end, "count", deadLetterPage).Result()
		if err != nil {
			return fmt.Errorf("redisbus: read dead letters of %q: %w", dl.Name, d.classify(err))
		}
		entries := parseEntries(res)
		for _, e := range entries {
			// An entry that is no envelope comes with what could be read
			// and its raw data.
			m, _ := decode(e.fields)
			if !fn(driver.DeadLetterEntry{Ref: e.id + "@" + tag, Message: m}) {
				return nil
			}
		}
		list, _ := res.([]any)
		if len(list) < deadLetterPage {
			return nil
		}
		var lastID string
		if pair, ok := list[len(list)-1].([]any); ok && len(pair) > 0 {
			lastID, _ = pair[0].(string)
		}
		if lastID == "" || lastID == end {
			return nil
		}
		start = "(" + lastID
	}
}

// DeleteDeadLetters removes the entries named by refs from dl's stream
// (XDEL). Refs of another destination, or that name no entry of dl, remove
// nothing.
func (d *Driver) DeleteDeadLetters(ctx context.Context, dl driver.Destination, refs []string) (int, error) {
	key, err := d.deadLetterKey("delete dead letters", dl)
	if err != nil {
		return 0, err
	}
	tag := refTag(dl)
	ids := make([]string, 0, len(refs))
	for _, r := range refs {
		if id, t, ok := strings.Cut(r, "@"); ok && t == tag && isEntryID(id) {
			ids = append(ids, id)
		}
	}
	removed := 0
	for len(ids) > 0 {
		n := min(len(ids), scriptChunk)
		got, err := d.rdb.XDel(ctx, key, ids[:n]...).Result()
		removed += int(got)
		if err != nil {
			return removed, fmt.Errorf("redisbus: delete dead letters of %q: %w", dl.Name, d.classify(err))
		}
		ids = ids[n:]
	}
	return removed, nil
}

// refTag names dl in its entries' Refs: a hash of its name.
func refTag(dl driver.Destination) string {
	h := fnv.New32a()
	_, _ = h.Write([]byte(dl.Name))
	return strconv.FormatUint(uint64(h.Sum32()), 16)
}

// isEntryID reports whether s is a stream entry id (ms-seq).
func isEntryID(s string) bool {
	ms, seq, ok := strings.Cut(s, "-")
	digits := func(p string) bool {
		if p == "" || len(p) > 20 {
			return false
		}
		for _, c := range p {
			if c < '0' || c > '9' {
				return false
			}
		}
		return true
	}
	return ok && digits(ms) && digits(seq)
}

// PurgeDeadLetters removes every entry of dl's stream (XTRIM MAXLEN 0),
// keeping the stream and its groups.
func (d *Driver) PurgeDeadLetters(ctx context.Context, dl driver.Destination) (int, error) {
	key, err := d.deadLetterKey("purge dead letters", dl)
	if err != nil {
		return 0, err
	}
	n, err := d.rdb.XTrimMaxLen(ctx, key, 0).Result()
	if err != nil {
		return 0, fmt.Errorf("redisbus: purge dead letters of %q: %w", dl.Name, d.classify(err))
	}
	return int(n), nil
}

// deadLetterKey checks dl and returns its stream's key.
func (d *Driver) deadLetterKey(op string, dl driver.Destination) (string, error) {
	if d.isClosed() {
		return "", fmt.Errorf("redisbus: %s of %q: %w", op, dl.Name, driver.ErrClosed)
	}
	if err := checkDest(dl); err != nil {
		return "", err
	}
	if dl.Pattern != driver.DeadLetter {
		return "", fmt.Errorf("redisbus: %s of %q: pattern %v is not a dead-letter destination: %w", op, dl.Name, dl.Pattern, driver.ErrInvalid)
	}
	return d.StreamKey(dl), nil
}
