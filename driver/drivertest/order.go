package drivertest

import (
	"fmt"
	"testing"

	"github.com/marty-msf/eventbus/driver"
)

// testOrderByKey checks that one consumer receives each key's messages in
// publish order, with three keys interleaved.
func (s *suite) testOrderByKey(t *testing.T) {
	s.requireCaps(t, "OrderingByKey")
	p := s.groupPattern(t, driver.Stream, driver.Event, driver.Command)
	dst := dest(p, "order")
	sub := subscribe(t, s.open(t), dst, driver.SubscribeOptions{Group: s.group()})

	const keys, total = 3, 300
	type position struct {
		key string
		seq int
	}
	msgs := make([]*driver.Message, total)
	pos := make(map[string]position, total)
	for i := range msgs {
		key := fmt.Sprintf("key%d", i%keys)
		m := newMessage(fmt.Sprintf("%s/%d", key, i/keys))
		m.Key = key
		msgs[i] = m
		pos[m.ID] = position{key, i / keys}
	}
	pub := s.open(t)
	// Batches and single publishes alike keep their order.
	for i := 0; i < total; {
		n := 1 + i%20
		publish(t, pub, dst, msgs[i:min(i+n, total)]...)
		i += n
	}

	got := receiveAndAck(t, sub, total, 50)
	next := make(map[string]int, keys)
	var disorder []string
	for _, d := range got {
		p, ok := pos[d.Message.ID]
		if !ok {
			continue // reported by checkExactlyOnce
		}
		if p.seq != next[p.key] {
			disorder = append(disorder, fmt.Sprintf("%s/%d where %s/%d was next", p.key, p.seq, p.key, next[p.key]))
		}
		next[p.key] = p.seq + 1
	}
	if len(disorder) > 0 {
		t.Errorf("%d messages arrived out of their key's order: %s", len(disorder), sample(disorder))
	}
	checkExactlyOnce(t, "the consumer", msgs, got)
}
