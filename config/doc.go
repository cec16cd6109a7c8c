// Package config builds an eventbus.Bus, and its saga store, from a YAML
// file and the environment, so that one program runs on the embedded
// server on a laptop and on external brokers in production without being
// recompiled.
//
// # The file
//
//	# eventbus.yaml
//	source: orders                  # Options.Source
//	instance: orders-1              # Options.Instance (default: random)
//	data_dir: /var/lib/orders       # where the defaults keep data (default eventbus-data)
//	default_backend: nats           # Options.DefaultBackend
//	query_timeout: 10s              # Options.QueryTimeout
//	backends:                       # name → URL, opened through driver.OpenURL
//	  nats:
//	    url: nats://orders:${NATS_PASSWORD}@nats.internal:4222
//	    options:                    # the URL's query parameters, as YAML
//	      jetstream: true
//	      ack_wait: 1m
//	  local:
//	    url: mem://
//	routes:                         # first match wins, as eventbus.Route
//	  - pattern: event              # event, command, query, stream, broadcast; omitted: all
//	    match: "order.*"            # glob over the name after the pattern prefix
//	    backend: nats
//	    filter:                     # Route.Filter: also match the message (a content route)
//	      all:
//	        - exact: {source: shop}
//	        - sql: "INT(DATA('amount')) >= 1000"
//	    pipeline:                   # Route.Pipeline: steps run on publish, in order
//	      - set_extension: {name: tier, value: gold}
//	      - redact_json: [card.number, card.cvv]
//	  - pattern: event
//	    match: "audit.*"
//	    backend: local
//	schemas:                        # Options.Schemas: JSON Schema checks on publish and consume
//	  fetch: false                  # resolve unknown http(s) schema URIs over HTTP
//	  files:                        # every *.json under dir, as base_uri + its path
//	    dir: schemas
//	    base_uri: https://schemas.example.com/
//	  bind:                         # message type → schema URI
//	    order.placed: https://schemas.example.com/order/placed.json
//	retry:                          # eventbus.RetryPolicy
//	  max_attempts: 5
//	  initial_backoff: 100ms
//	  max_backoff: 30s
//	saga:
//	  store: postgres://orders:${PG_PASSWORD}@db:5432/orders?sslmode=disable
//
// Every key is optional. Durations are Go durations (100ms, 1m30s). A file
// that declares no backend runs on the embedded NATS server in data_dir
// ([DefaultBackendName], URL embedded:<data_dir>). A backend's options are
// its URL's query parameters written as YAML: each driver documents its own
// (natsbus.ParseURL, membus.ParseURL); a parameter in both the URL and the
// options is an error.
//
// URLs are opened by the packages that registered their schemes, which the
// program imports: natsbus for nats://, tls://, embedded:; membus for mem://;
// saga/sqlstore for postgres:// and sqlite:. This package imports none of
// them, so a program links only the brokers it names.
//
// # Filters, pipelines and schemas
//
// A route's filter is an [eventbus.Filter] written in the JSON form of the
// CloudEvents Subscriptions API, as a mapping with one key: exact, prefix
// or suffix with one attribute and its value ({exact: {type:
// order.created}}), all or any with a list of filters, not with a filter,
// sql with a CloudEvents SQL expression (DATA('path') reads JSON data). A
// list of filters is all of them. Every part compiles at load time, so a
// CESQL syntax error or a bad attribute name is a problem of the file,
// matching eventbus.ErrInvalidFilter. A query route takes no filter.
//
// A route's pipeline is a list of built-in steps, each a mapping with one
// key: set_extension {name, value} ([eventbus.SetExtension]),
// rename_extension {from, to} ([eventbus.RenameExtension]), redact_json
// with a path or a list of paths ([eventbus.RedactJSON]), and keep with a
// filter ([eventbus.Keep]: drop what it does not match). Steps that need
// code (upcasting, recoding) are added in Go, on the routes of the base
// options.
//
// The schemas block builds the [eventbus.Schemas] of Options.Schemas:
// files adds every *.json file under dir (relative to the working
// directory, as data_dir) under base_uri joined with its path (a list of
// such mappings adds several directories); bind maps a message type to the
// URI of its schema; fetch lets the bus fetch http and https URIs that no
// file holds. Load reads the files and compiles every bound schema
// (fetching it when fetch is true), so a missing file, a malformed schema
// or an unknown URI is a problem at its key.
//
// # The environment
//
// Values may refer to environment variables: ${NAME} is replaced by the
// variable's value, ${NAME:-default} by default when it is unset or empty,
// and $$ is a literal $. An unset variable without a default is an error.
//
// Variables named after a key override the file, and can declare what the
// file does not: EVENTBUS_SOURCE, EVENTBUS_INSTANCE, EVENTBUS_DATA_DIR,
// EVENTBUS_DEFAULT_BACKEND, EVENTBUS_QUERY_TIMEOUT,
// EVENTBUS_RETRY_MAX_ATTEMPTS, EVENTBUS_RETRY_INITIAL_BACKOFF,
// EVENTBUS_RETRY_MAX_BACKOFF, EVENTBUS_SAGA_STORE, and
// EVENTBUS_BACKENDS_<NAME>_URL for the backend NAME (upper case, with '-'
// written '_'; a name the file does not declare is declared in lower case).
// An override replaces the value; the options the file gives an overridden
// backend still apply. ${...} is expanded in overrides as well.
//
// # Errors
//
// Load reports every problem at once in an [*Error], each a [*Problem]
// naming the file (or the environment variable), the line and column, and
// the key: unknown keys ([ErrUnknownKey]), values of the wrong type
// ([ErrType]), unset variables ([ErrUnsetVariable]), invalid URLs (matching
// driver.ErrUnknownScheme, driver.ErrUnknownParam...), routes and defaults
// naming an undeclared backend (eventbus.ErrUnknownBackend), filters that
// do not compile (eventbus.ErrInvalidFilter, with the *eventbus.FilterError),
// schemas that cannot be loaded (eventbus.ErrSchema). Opening
// reports the backends that fail to open the same way.
//
// Secrets never appear in an error: the user information of every URL (a
// password, or a bare name that may be a token) and the values of
// parameters and options whose names suggest a secret (password, token,
// secret, key) are replaced by REDACTED in every message.
package config
