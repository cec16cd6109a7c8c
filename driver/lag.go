package driver

import "context"

// LagReporter is implemented by subscriptions that know their backlog on the
// broker, for metrics: Lag returns how many messages of the subscription's
// group wait to be delivered (JetStream's pending count, a Kafka group's
// lag, a Redis Streams group's lag). It must be cheap enough to call at
// every metrics scrape and return by ctx's deadline.
type LagReporter interface {
	Lag(ctx context.Context) (uint64, error)
}
