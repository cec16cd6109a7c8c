// Command eventbus is an operations tool for developers poking at a running
// eventbus system: it runs a server, publishes, listens and queries through
// the same Bus API that services use, so what it sends and prints is exactly
// what services send and receive; it manages sagas and dead letters, measures
// a backend, and runs a demo of the order saga on the embedded default.
//
// # Commands
//
//	eventbus server [--data DIR] [--host 127.0.0.1] [--port 4222]
//
// runs a NATS server with JetStream file storage in DIR (default
// ./eventbus-data) until interrupted (SIGINT or SIGTERM), and prints the URL
// that other processes connect to. --port -1 picks a free port. The server
// holds DIR (a lock on DIR/eventbus.lock, released when it exits): a second
// server on the same DIR fails at once, and so do a taken port and a DIR
// that cannot be written, each naming its cause.
//
//	eventbus publish TYPE [JSON|-] [--file F] [--lines [--window N]] [--command SERVICE | --broadcast | --stream NAME] [--key K] [--subject S] [--source SRC]
//
// publishes an event of type TYPE (default), a command to SERVICE, a broadcast
// or a message on stream NAME. The payload is the JSON argument, the file F,
// or standard input; it must be valid JSON. Once the server confirmed the
// message, its id is printed. With --lines every line of the input is one
// message: all lines are checked first, then handed to the pipelined
// Publisher with up to N awaiting their confirmation at once; progress shows
// on standard error and the ids are printed in the input's order.
//
//	eventbus listen|tail TYPE... [--group G] [--from-start] [--broadcast] [--count N] [--format json|text]
//
// prints every event (or, with --broadcast, every broadcast) of the given types
// as it arrives: with --format json (the default when standard output is not
// a terminal) one JSON line in the CloudEvents JSON format, the attributes
// and "data" (JSON payloads), a string (other text) or "data_base64"
// (binary); with --format text one line for a person. Without a group it
// sees every message published while it runs; with --group it joins that
// consumer group, competing with its other members, and --from-start
// replays what the server retains when the group is new. It stops after N
// messages (--count, 0 means no limit) or when interrupted; a message
// received after the N-th is given back for redelivery, never acknowledged
// unprinted; the tool retries without limit, so what it gives back is never
// dead-lettered by it.
//
//	eventbus query|request SERVICE TYPE [JSON|-] [--timeout 5s] [--source SRC]
//
// sends a query and prints the reply's data.
//
//	eventbus respond SERVICE TYPE (--reply JSON | --exec COMMAND) [--count N]
//
// answers the queries of TYPE sent to SERVICE with a fixed JSON reply, or
// with the standard output of a shell command that reads the query's data
// on its standard input; a command's non-zero exit status becomes a remote
// error with code exit_<status>.
//
//	eventbus saga list [--state S] [--name N] [--limit N] [--json]
//	eventbus saga show ID [--json]
//	eventbus saga cancel|retry ID [--wait D]
//
// read and manage the sagas of a saga store: --store names it by URL
// (postgres://user@host:5432/db or sqlite:FILE), else the configuration
// file's (--config, $EVENTBUS_CONFIG: its saga.store, or the SQLite file in
// its data_dir), else $EVENTBUS_SAGA_STORE. list prints one line per saga
// (id, definition, state, current step, last update, reason), show its data,
// each step's state, attempts and replies, and its history; --json prints
// JSON lines (list) or the instance (show). cancel (of a running saga) and
// retry (of a failed saga's compensation) record a request in the store,
// for a saga of any definition; an orchestrator that runs the definition on
// that store applies it at its next poll and records the outcome in the
// saga's history. They wait up to --wait (default 30s; 0: not at all) for
// the outcome and print it.
//
//	eventbus dlq list [filters] [--json]
//	eventbus dlq show ID [--json]
//	eventbus dlq replay [ID...] [filters | --all] [--to DEST] [--to-backend B] [--altered]
//	eventbus dlq purge [ID...] [filters | --all]
//
// browse the dead letters that the backends hold (those whose driver can
// browse them: see the README's backends table): list shows id, type,
// origin, group, attempts, time and reason; replay publishes them again to
// their origin (or --to) and removes each once confirmed; purge removes
// them. The filters
// are --backend, --origin, --type, --source, --reason, --group, --since,
// --older-than and --limit; replay and purge act on the ids given, or on
// what the filters select, or with --all on every dead letter. A replay that
// the backend drops as a duplicate (JetStream de-duplicates ids for two
// minutes by default) stays a dead letter, and the tool says so.
//
//	eventbus bench [--messages N] [--size BYTES] [--round-trips N]
//
// measures, on the configured backend (--url, --config, $NATS_URL) or else
// on the embedded default, the latency of events published one at a time
// (until confirmed, until delivered: p50, p90, p99, max) and the throughput
// of N events through the pipelined Publisher, with a progress bar. A quick
// check; the programs under bench/ measure for comparison.
//
//	eventbus demo [--orders N] [--failure-rate R] [--data DIR]
//
// runs N orders through the e-commerce order saga (reserve inventory,
// authorize the payment, arrange shipping) on the embedded default and a
// SQLite saga store, nothing to install; the payments of a share R of the
// orders are declined and their reservations compensated. Each saga's steps
// print as they happen, then a summary: completed, compensated and failed
// sagas, their durations, and a check of the shop's stock and payments.
// With --data the sagas stay in DIR/saga.db for the saga commands.
//
//	eventbus version
//
// prints the tool's version.
//
// # Connection flags
//
// Every command but server takes --url (default $NATS_URL, else
// nats://127.0.0.1:4222; several URLs separated by commas; a bare host:port
// means nats://host:port), --user, --password, --token and --creds (defaults
// $NATS_USER, $NATS_PASSWORD, $NATS_TOKEN and $NATS_CREDS, which keep secrets
// off the command line), --tls-ca, --tls-cert and --tls-key, --connect-timeout
// (default 10s: how long a client keeps trying to reach a server that is
// not up yet, so that it may be started together with the server), and
// --stream-prefix and --subject-prefix, which must match the
// services' natsbus Options. Credentials are never printed: URLs are shown
// without their user information, and help never shows values taken from the
// environment. Like any service's bus, the client commands create the
// JetStream streams they need, or update their limits, when they connect.
// A lost connection and each reconnection are reported on standard error;
// the commands keep waiting for the server meanwhile.
//
// # Configuration file
//
// Instead of the connection flags, --config (default $EVENTBUS_CONFIG) names
// the YAML file the services read (package config): the tool opens the same
// backends, routes and defaults, with the environment overrides that package
// defines. A file that declares no backend means the embedded server in its
// data_dir, which only one process at a time may open. A problem of the file
// is reported with its file, line and key, with exit status 2. --config and
// --url exclude each other.
//
// # Exit status
//
// 0 on success (an interrupted listen or server included), 1 on a failure
// (refused publish, server that cannot start, unknown saga or dead letter...),
// 6 when the server or the saga store could not be reached (the server within
// --connect-timeout), 2 on a usage error (unknown command or flag, wrong
// arguments, invalid JSON, names or URLs). query adds 3 when no reply came in
// time, 4 when nobody handles the query and 5 when the handler returned an
// error, printed with its code; saga cancel and retry exit with 3 when no
// orchestrator applied the request within --wait (it stays recorded).
// Errors go to standard error, once, each saying what to do next.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	// The backends a configuration file (--config) may name by URL.
	_ "github.com/marty-msf/eventbus/awsbus"
	_ "github.com/marty-msf/eventbus/kafkabus"
	_ "github.com/marty-msf/eventbus/membus"
	_ "github.com/marty-msf/eventbus/natsbus"
	_ "github.com/marty-msf/eventbus/rabbitbus"
	_ "github.com/marty-msf/eventbus/redisbus"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Getenv, os.Stdin, os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}
