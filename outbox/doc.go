// Package outbox is the transactional outbox and inbox of eventbus, on
// PostgreSQL (pgx's database/sql driver) and SQLite (modernc.org/sqlite).
//
// # Outbox
//
// A service writes its business data and the messages that announce it in
// one transaction: Outbox.PublishEvent, SendCommand, Broadcast and
// PublishStream take the caller's *sql.Tx and insert a row. Nothing is
// published unless the transaction commits. A Relay (Outbox.Relay, then
// Run) claims committed rows, publishes them through the Bus and deletes
// each row once the bus confirmed it. Its promises:
//
//   - At least once. A row is deleted only after its publication was
//     confirmed; a relay that crashes (or whose delete fails) leaves its
//     rows under a lease (RelayOptions.Lease), and another relay, or the
//     same one restarted, publishes them again once it passed. The id and
//     time of a message are fixed when it is enqueued, so the copies are
//     identical and consumers deduplicate them (Inbox, middleware.Dedup, or
//     a backend's own de-duplication, which the relay takes as success).
//   - In order per group. A group is one destination and one Key (messages
//     without a Key share their destination's group). A relay claims only
//     the head of a group's queue, and no relay claims from a group while
//     any of its rows is under a live lease, so a group is published by one
//     relay at a time, in enqueue order; messages of transactions that
//     committed one after the other are in commit order. A failed
//     publication holds its group back (exponential backoff from 100ms to
//     RelayOptions.MaxBackoff) rather than letting later messages pass it.
//   - No concurrent double publication. Claims are serialized (a
//     transaction-scoped advisory lock on PostgreSQL, with FOR UPDATE SKIP
//     LOCKED on the rows; the database's write lock on SQLite) and a relay
//     stops publishing a claim when a fifth of its lease is left, so a row
//     is never being published by two relays at once. This relies on the
//     relays' clocks agreeing to well within a fifth of the lease.
//   - A message the bus refuses for good (too large, invalid) is set aside
//     in its row (dead = 1, with the error) and logged; its group goes on.
//     Stats counts such rows.
//
// Published rows are deleted at once; the table holds only what is pending
// or set aside.
//
// # Inbox
//
// Inbox.Handler wraps a TxHandler: in one transaction it records the
// message's (source, id) for its consumer and runs the handler's writes, so
// a message delivered twice is processed once — exactly-once processing
// over at-least-once delivery. A handler may enqueue its own outgoing
// messages in that transaction through an Outbox. Entries older than
// InboxOptions.TTL are removed now and then after a commit, or by
// Inbox.Expire.
//
// # Databases
//
// New and NewInbox take the caller's *sql.DB and its Dialect and create
// their tables (Options.TablePrefix, default "outbox_") when missing. On
// PostgreSQL open the database with sql.Open("pgx", url) (or
// stdlib.OpenDBFromPool for a pgxpool). On SQLite use OpenSQLite, whose one
// connection queues the process's writers; several processes may share the
// file (the crash test runs a relay in a child process).
//
// Errors are prefixed "outbox:" and wrap the database's error.
package outbox
