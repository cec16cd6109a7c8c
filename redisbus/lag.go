package redisbus

import (
	"context"
	"fmt"

	"github.com/marty-msf/eventbus/driver"
)

var _ driver.LagReporter = (*streamSub)(nil)

// Lag implements driver.LagReporter: the entries of the stream not yet
// delivered to the subscription's group (XINFO GROUPS's lag, Redis 7 or
// later; one round trip). It fails when Redis cannot tell the lag (after
// entries were deleted from the middle of the stream).
func (s *streamSub) Lag(ctx context.Context) (uint64, error) {
	groups, err := s.d.rdb.XInfoGroups(ctx, s.key).Result()
	if err != nil {
		return 0, fmt.Errorf("redisbus: lag of group %q: %w", s.group, err)
	}
	for _, g := range groups {
		if g.Name != s.group {
			continue
		}
		if g.Lag < 0 {
			return 0, fmt.Errorf("redisbus: lag of group %q: unknown to the server", s.group)
		}
		return uint64(g.Lag), nil
	}
	return 0, fmt.Errorf("redisbus: lag of group %q: no such group", s.group)
}
