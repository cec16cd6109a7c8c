package kafkabus

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/marty-msf/eventbus/driver"
)

var _ driver.DeadLetterStore = (*Driver)(nil)

// DeadLetterDestinations lists the dead-letter destinations whose topics
// exist on the cluster: those under the driver's TopicPrefix whose names
// map back to a destination, and those this driver published to.
func (d *Driver) DeadLetterDestinations(ctx context.Context) ([]driver.Destination, error) {
	if d.isClosed() {
		return nil, fmt.Errorf("kafkabus: dead-letter destinations: %w", driver.ErrClosed)
	}
	details, err := d.admin.ListTopics(ctx)
	if err == nil {
		err = details.Error()
	}
	if err != nil {
		return nil, fmt.Errorf("kafkabus: list topics: %w", classify(err))
	}
	prefix := d.cfg.TopicPrefix + driver.DeadLetter.Prefix() + "."
	names := map[string]bool{}
	for topic := range details {
		if name, ok := strings.CutPrefix(topic, d.cfg.TopicPrefix); ok && strings.HasPrefix(topic, prefix) && topicName(d.cfg.TopicPrefix, name) == topic {
			names[name] = true
		}
	}
	d.topicsMu.Lock()
	for name, topic := range d.deadLetters {
		if _, ok := details[topic]; ok {
			names[name] = true
		}
	}
	d.topicsMu.Unlock()
	dests := make([]driver.Destination, 0, len(names))
	for name := range names {
		dests = append(dests, driver.Destination{Pattern: driver.DeadLetter, Name: name})
	}
	slices.SortFunc(dests, func(a, b driver.Destination) int { return strings.Compare(a.Name, b.Name) })
	return dests, nil
}

// bounds lists the log start and the high watermark of every partition of
// topic; a topic that does not exist has none.
func (d *Driver) bounds(ctx context.Context, topic string) (start, end map[int32]int64, err error) {
	starts, err := d.admin.ListStartOffsets(ctx, topic)
	if err == nil {
		err = starts.Error()
	}
	if errors.Is(err, kerr.UnknownTopicOrPartition) {
		return nil, nil, nil
	}
	if err != nil {
		return nil, nil, fmt.Errorf("kafkabus: list offsets of %q: %w", topic, classify(err))
	}
	ends, err := d.admin.ListEndOffsets(ctx, topic)
	if err == nil {
		err = ends.Error()
	}
	if err != nil {
		return nil, nil, fmt.Errorf("kafkabus: list offsets of %q: %w", topic, classify(err))
	}
	start, end = map[int32]int64{}, map[int32]int64{}
	starts.Each(func(o kadm.ListedOffset) { start[o.Partition] = o.Offset })
	ends.Each(func(o kadm.ListedOffset) { end[o.Partition] = o.Offset })
	return start, end, nil
}

func (d *Driver) checkDeadLetter(op string, dl driver.Destination) error {
	if d.isClosed() {
		return fmt.Errorf("kafkabus: %s: %w", op, driver.ErrClosed)
	}
	if dl.Pattern != driver.DeadLetter || dl.Name == "" {
		return fmt.Errorf("kafkabus: %s: %s is not a dead-letter destination", op, dl)
	}
	return nil
}

// ReadDeadLetters reads dl's topic from each partition's log start to the
// high watermark it had when the read began, with a client of its own that
// joins no group and commits nothing. Entries come oldest first per
// partition; Ref is "<topic>/<partition>/<offset>". A partition is done at
// its last offset, or at the first one past it, or when its log start moves
// past it (records removed since the read began): offsets that never come
// as records (transaction markers, compacted or removed records) do not
// keep the read waiting.
func (d *Driver) ReadDeadLetters(ctx context.Context, dl driver.Destination, fn func(driver.DeadLetterEntry) bool) error {
	if err := d.checkDeadLetter("read dead letters", dl); err != nil {
		return err
	}
	topic := d.Topic(dl)
	start, end, err := d.bounds(ctx, topic)
	if err != nil {
		return err
	}
	from := map[int32]kgo.Offset{}
	left := map[int32]int64{} // the last offset to read, per partition
	for p, s := range start {
		if e := end[p]; e > s {
			from[p] = kgo.NewOffset().At(s)
			left[p] = e - 1
		}
	}
	if len(from) == 0 {
		return nil
	}
	// Control records (transaction markers) are kept so that an offset
	// they hold counts as read: the last offset of a partition may be one.
	opts := append(append(d.baseOpts[:len(d.baseOpts):len(d.baseOpts)], d.cfg.consumerOpts()...),
		kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{topic: from}), kgo.KeepControlRecords())
	cl, err := kgo.NewClient(opts...)
	if err != nil {
		return fmt.Errorf("kafkabus: read dead letters of %s: %w", dl, err)
	}
	defer cl.Close()
	for len(left) > 0 {
		// A poll that brings nothing for a while makes the read look at
		// the log starts again: a partition whose records up to its last
		// offset were removed meanwhile fetches nothing (kgo passes on no
		// empty partition) and is done.
		pctx, cancel := context.WithTimeout(ctx, deadLetterIdlePoll)
		fs := cl.PollFetches(pctx)
		idle := pctx.Err() != nil
		cancel()
		if err := ctx.Err(); err != nil {
			return err
		}
		var ferr error
		fs.EachError(func(_ string, _ int32, err error) {
			if ferr == nil && !(idle && errors.Is(err, context.DeadlineExceeded)) {
				ferr = err
			}
		})
		if ferr != nil {
			return fmt.Errorf("kafkabus: read dead letters of %s: %w", dl, classify(ferr))
		}
		stop := false
		fs.EachPartition(func(p kgo.FetchTopicPartition) {
			for _, r := range p.Records {
				last, ok := left[r.Partition]
				if stop || !ok {
					return
				}
				if r.Offset >= last {
					// An offset past last, or last itself: the offsets up to
					// it that did not come are gone (compacted, removed).
					delete(left, r.Partition)
				}
				if r.Offset > last || r.Attrs.IsControl() {
					continue
				}
				m, _, _ := decode(r)
				if !fn(driver.DeadLetterEntry{Ref: deadLetterRef(topic, r.Partition, r.Offset), Message: m}) {
					stop = true
				}
			}
			if last, ok := left[p.Partition]; ok && nothingLeft(p.FetchPartition, last) {
				delete(left, p.Partition)
			}
		})
		if stop {
			return nil
		}
		if idle && len(left) > 0 {
			starts, err := d.admin.ListStartOffsets(ctx, topic)
			if err == nil {
				err = starts.Error()
			}
			if err != nil {
				return fmt.Errorf("kafkabus: read dead letters of %s: list offsets: %w", dl, classify(err))
			}
			starts.Each(func(o kadm.ListedOffset) {
				if last, ok := left[o.Partition]; ok && o.Offset > last {
					delete(left, o.Partition)
				}
			})
		}
	}
	return nil
}

// deadLetterIdlePoll is how long a dead-letter read polls without a record
// before it checks whether what it waits for was removed.
const deadLetterIdlePoll = 2 * time.Second

// nothingLeft reports whether a fetch's partition shows that no record up
// to last remains to be read: its log start moved past last (DeleteRecords
// or retention since the read took its bounds). Without this, a read would
// wait for an offset that will never come.
func nothingLeft(p kgo.FetchPartition, last int64) bool {
	return p.LogStartOffset > last
}

func deadLetterRef(topic string, partition int32, offset int64) string {
	return topic + "/" + strconv.FormatInt(int64(partition), 10) + "/" + strconv.FormatInt(offset, 10)
}

// parseRef reads a Ref of topic; a Ref of another topic, or no Ref, is not.
func parseRef(topic, ref string) (int32, int64, bool) {
	rest, ok := strings.CutPrefix(ref, topic+"/")
	if !ok {
		return 0, 0, false
	}
	ps, os, ok := strings.Cut(rest, "/")
	p, err1 := strconv.ParseInt(ps, 10, 32)
	o, err2 := strconv.ParseInt(os, 10, 64)
	if !ok || err1 != nil || err2 != nil || p < 0 || o < 0 {
		return 0, 0, false
	}
	return int32(p), o, true
}

// DeleteDeadLetters removes the records named by refs from dl's topic. A
// Kafka log loses records only from its head: in each partition, the refs
// that form an unbroken run from the log start are removed by advancing the
// log start past them (DeleteRecords); the others are kept, and the error
// then matches driver.ErrUnsupported and names them. Refs below the log
// start, at or past the high watermark, or of another topic are skipped.
func (d *Driver) DeleteDeadLetters(ctx context.Context, dl driver.Destination, refs []string) (int, error) {
	if err := d.checkDeadLetter("delete dead letters", dl); err != nil {
		return 0, err
	}
	topic := d.Topic(dl)
	start, end, err := d.bounds(ctx, topic)
	if err != nil {
		return 0, err
	}
	named := map[int32]map[int64]bool{}
	for _, ref := range refs {
		p, o, ok := parseRef(topic, ref)
		if _, held := start[p]; !ok || !held || o < start[p] || o >= end[p] {
			continue
		}
		if named[p] == nil {
			named[p] = map[int64]bool{}
		}
		named[p][o] = true
	}
	to := kadm.Offsets{}
	var kept []string
	for p, offsets := range named {
		at := start[p]
		for offsets[at] {
			at++
		}
		if at > start[p] {
			to.AddOffset(topic, p, at, -1)
		}
		for o := range offsets {
			if o >= at {
				kept = append(kept, deadLetterRef(topic, p, o))
			}
		}
	}
	removed, err := d.deleteRecords(ctx, topic, start, to)
	if err != nil {
		return removed, err
	}
	if len(kept) > 0 {
		slices.Sort(kept)
		return removed, fmt.Errorf("kafkabus: delete dead letters of %s: a Kafka log loses records only from its head; kept %s: %w",
			dl, strings.Join(kept, ", "), driver.ErrUnsupported)
	}
	return removed, nil
}

// PurgeDeadLetters removes every record of dl's topic by advancing each
// partition's log start to its high watermark.
func (d *Driver) PurgeDeadLetters(ctx context.Context, dl driver.Destination) (int, error) {
	if err := d.checkDeadLetter("purge dead letters", dl); err != nil {
		return 0, err
	}
	topic := d.Topic(dl)
	start, end, err := d.bounds(ctx, topic)
	if err != nil {
		return 0, err
	}
	to := kadm.Offsets{}
	for p, e := range end {
		if e > start[p] {
			to.AddOffset(topic, p, e, -1)
		}
	}
	return d.deleteRecords(ctx, topic, start, to)
}

// deleteRecords advances the log starts of topic's partitions to the
// offsets of to, and returns how many records that removed.
func (d *Driver) deleteRecords(ctx context.Context, topic string, start map[int32]int64, to kadm.Offsets) (int, error) {
	if len(to) == 0 {
		return 0, nil
	}
	resps, err := d.admin.DeleteRecords(ctx, to)
	if err != nil {
		return 0, fmt.Errorf("kafkabus: delete records of %q: %w", topic, classify(err))
	}
	removed := 0
	var errs []error
	resps.Each(func(r kadm.DeleteRecordsResponse) {
		if r.Err != nil {
			errs = append(errs, fmt.Errorf("kafkabus: delete records of %q partition %d: %w", topic, r.Partition, classify(r.Err)))
			return
		}
		if o, ok := to.Lookup(topic, r.Partition); ok {
			removed += int(o.At - start[r.Partition])
		}
	})
	return removed, errors.Join(errs...)
}
