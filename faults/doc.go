// Package faults is the fault suite of eventbus: tests that break a real
// broker under a running Bus — a broker process killed with SIGKILL and
// started again, connections reset or black-holed by a TCP proxy — and
// count what was published and confirmed, delivered, lost (which must be
// zero) and duplicated, and how long the stream took to flow again. Every
// test prints these figures:
//
//	go test -v -run . ./faults/
//
// The brokers a test breaks are processes it starts itself, each on a free
// port of 127.0.0.1 and a data directory of its own, killed by their own
// process id: never the shared services on the default ports. NATS runs as
// an embedded nats-server program and Kafka as a kfake program (with its
// data directory), both built from testdata; Redis is the redis-server on
// the PATH, with an append-only file synced on every write. Without
// redis-server the Redis tests are skipped, and fail when CI is set.
//
// Each test has a short variant, always on, and a long one behind
// EVENTBUS_SOAK=1 (more messages, more faults in a row).
//
// The exported helpers are the suite's tools and serve other fault tests
// too: [Proxy] cuts and black-holes connections, [Process] starts, kills
// and restarts a broker, [Tally] keeps the figures.
package faults
