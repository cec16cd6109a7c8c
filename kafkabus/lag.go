package kafkabus

import (
	"context"
	"fmt"

	"github.com/twmb/franz-go/pkg/kadm"

	"github.com/marty-msf/eventbus/driver"
)

var _ driver.LagReporter = (*subscription)(nil)

// Lag implements driver.LagReporter: the records of the subscription's
// topic, and of its retry topic, past its group's committed offsets (the
// group's lag as kadm computes it: a group description, an offset fetch
// and a listing of end offsets).
func (s *subscription) Lag(ctx context.Context) (uint64, error) {
	lags, err := kadm.NewClient(s.cl).Lag(ctx, s.groupID)
	if err != nil {
		return 0, fmt.Errorf("kafkabus: lag of group %q: %w", s.groupID, err)
	}
	l, ok := lags[s.groupID]
	if !ok {
		return 0, fmt.Errorf("kafkabus: lag of group %q: not described", s.groupID)
	}
	if err := l.Error(); err != nil {
		return 0, fmt.Errorf("kafkabus: lag of group %q: %w", s.groupID, err)
	}
	byTopic := l.Lag.TotalByTopic()
	n := byTopic[s.topic].Lag
	if s.retryTopic != "" {
		n += byTopic[s.retryTopic].Lag
	}
	return uint64(max(n, 0)), nil
}
