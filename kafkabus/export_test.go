package kafkabus

import (
	"context"
	"maps"
	"slices"
)

// MarksCommitted reports whether the broker holds, for every group
// subscription of d, the delivered marks of all it handed out and did not
// settle: what a member has done once it lived markDelay and a round trip
// past its last hand-out. A crash test that kills a member before then
// tests the documented window instead (see the package documentation).
func MarksCommitted(ctx context.Context, d *Driver) (bool, error) {
	d.mu.Lock()
	subs := slices.Collect(maps.Keys(d.subs))
	d.mu.Unlock()
	for _, s := range subs {
		if s.groupID == "" {
			continue
		}
		want := map[topicPartition]int64{}
		s.mu.Lock()
		for tp, st := range s.parts {
			if !st.released && st.commit >= 0 && st.next > st.commit {
				want[tp] = st.next
			}
		}
		s.mu.Unlock()
		if len(want) == 0 {
			continue
		}
		resp, err := d.Admin().FetchOffsets(ctx, s.groupID)
		if err != nil {
			return false, err
		}
		for tp, end := range want {
			o, ok := resp.Lookup(tp.topic, tp.part)
			if !ok {
				return false, nil
			}
			if m, ok := parseMark(o.Metadata); !ok || m.end < end {
				return false, nil
			}
		}
	}
	return true, nil
}
