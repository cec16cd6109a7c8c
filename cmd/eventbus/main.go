// Command eventbus is an operations tool for developers poking at a running
// eventbus system over NATS: it runs a server, publishes, listens and queries
// through the same Bus API that services use, so what it sends and prints is
// exactly what services send and receive.
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
// message: all lines are checked first, up to N publishes await their
// confirmation at once, progress shows on standard error and the ids are
// printed in the input's order.
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
// (refused publish, server that cannot start...), 6 when the server could
// not be reached within --connect-timeout, 2 on a usage error (unknown
// command or flag, wrong arguments, invalid JSON or names). query adds 3 when
// no reply came in time, 4 when nobody handles the query and 5 when the
// handler returned an error, printed with its code. Errors go to standard
// error.
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
