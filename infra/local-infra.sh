#!/usr/bin/env bash
# Installs (once) and starts (idempotently) the local RabbitMQ and FerretDB that
# `make run` and `make test` need. Nothing is started when AMQP_URL / MONGODB_URL
# point at servers other than the local defaults.
#
#   infra/local-infra.sh up      install what is missing, start what is not running
#   infra/local-infra.sh down    stop what this script started
#   infra/local-infra.sh status
set -euo pipefail

LOG_TAG=infra
# shellcheck source=infra/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
FERRETDB_VERSION="1.24.2"
DEFAULT_AMQP="amqp://guest:guest@127.0.0.1:5672/"
DEFAULT_MONGO="mongodb://127.0.0.1:27017"

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

wait_port() {  # port seconds name
  local i
  for ((i = 0; i < $2 * 5; i++)); do port_open "$1" && return 0; sleep 0.2; done
  log "$3 did not open port $1 within $2 s"; return 1
}

# --- RabbitMQ --------------------------------------------------------------
RMQ_HOME="$STATE/rabbitmq"
rmq_env() {
  export HOME="$RMQ_HOME" RABBITMQ_NODENAME=rabbit@localhost RABBITMQ_NODE_IP_ADDRESS=127.0.0.1
  export RABBITMQ_MNESIA_BASE="$RMQ_HOME/mnesia" RABBITMQ_LOG_BASE="$RMQ_HOME/log"
  export RABBITMQ_ENABLED_PLUGINS_FILE="$RMQ_HOME/enabled_plugins"
  export RABBITMQ_CONFIG_FILE="$RMQ_HOME/rabbitmq" RABBITMQ_PID_FILE="$RMQ_HOME/rabbitmq.pid"
}

rabbitmq_up() {
  if [ "${AMQP_URL:-$DEFAULT_AMQP}" != "$DEFAULT_AMQP" ]; then log "AMQP_URL is set: using it, starting no RabbitMQ"; return; fi
  if port_open 5672; then log "RabbitMQ already listening on 5672"; return; fi
  if [ ! -x /usr/lib/rabbitmq/bin/rabbitmq-server ]; then
    log "installing rabbitmq-server from apt"
    apt_install rabbitmq-server
  fi
  mkdir -p "$RMQ_HOME/log" "$RMQ_HOME/mnesia"
  # A node started by this script keeps everything under $STATE, so it never
  # touches a system-wide RabbitMQ installation.
  cat >"$RMQ_HOME/rabbitmq.conf" <<CONF
listeners.tcp.default = 127.0.0.1:5672
loopback_users = none
log.console = false
log.file.level = warning
CONF
  (
    rmq_env
    /usr/lib/rabbitmq/bin/rabbitmq-plugins enable --offline rabbitmq_consistent_hash_exchange >/dev/null
    log "starting RabbitMQ (state in $RMQ_HOME)"
    # A session of its own: a Ctrl-C meant for `make run` must not reach the server directly.
    setsid nohup /usr/lib/rabbitmq/bin/rabbitmq-server >"$RMQ_HOME/log/stdout.log" 2>&1 &
    echo $! >"$RMQ_HOME/server.pid"
  )
  wait_port 5672 90 RabbitMQ
  (rmq_env; /usr/lib/rabbitmq/bin/rabbitmqctl -q await_startup >/dev/null)
  log "RabbitMQ ready on 127.0.0.1:5672"
}

rabbitmq_down() {
  [ -f "$RMQ_HOME/server.pid" ] || return 0
  (rmq_env; /usr/lib/rabbitmq/bin/rabbitmqctl -q stop >/dev/null 2>&1 || kill "$(cat "$RMQ_HOME/server.pid")" 2>/dev/null || true)
  rm -f "$RMQ_HOME/server.pid"
  log "RabbitMQ stopped"
}

# --- FerretDB --------------------------------------------------------------
FDB_DIR="$STATE/ferretdb"
ferretdb_binary() {
  local key
  key="$(cat "$ROOT"/infra/ferretdb/{go.mod,go.sum,main.go,sqlite.patch} | sha256sum | cut -c1-12)"
  echo "$CACHE/ferretdb-$FERRETDB_VERSION-$key/ferretdb-local"
}

# FerretDB's SQLite backend reads whole tables for any filter but a lone `_id`, its `_id`
# lookups miss the `_id` index, and concurrent writers poll SQLite's lock with sleeps.
# sqlite.patch lets SQLite use the collections' indexes (equality and $in on string fields,
# `_id` wherever it appears; FerretDB still applies the whole filter to the rows SQLite
# returns, so results are unchanged) and queues writers on a mutex instead.
ferretdb_build() {
  local bin dir src; bin="$(ferretdb_binary)"
  [ -x "$bin" ] && return 0
  command -v go >/dev/null || { log "Go is needed once to build FerretDB $FERRETDB_VERSION"; return 1; }
  log "building FerretDB $FERRETDB_VERSION (once; cached in $(dirname "$bin"))"
  dir="$(dirname "$bin")"; rm -rf "$dir/build" "$dir/src"; mkdir -p "$dir/build"
  cp "$ROOT"/infra/ferretdb/{go.mod,go.sum,main.go} "$dir/build/"
  src="$(cd "$dir/build" && go mod download -json "github.com/FerretDB/FerretDB@v$FERRETDB_VERSION" \
    | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')"
  [ -d "$src" ] || { log "could not download FerretDB $FERRETDB_VERSION"; return 1; }
  cp -r "$src" "$dir/src" && chmod -R u+w "$dir/src"
  if command -v patch >/dev/null; then patch -s -d "$dir/src" -p1 <"$ROOT/infra/ferretdb/sqlite.patch"
  else (cd "$dir/src" && git apply -p1 "$ROOT/infra/ferretdb/sqlite.patch"); fi
  (cd "$dir/build" && go mod edit -replace "github.com/FerretDB/FerretDB=$dir/src" \
    && CGO_ENABLED=0 go build -trimpath -o "$bin.tmp" . && mv "$bin.tmp" "$bin")
  rm -rf "$dir/build" "$dir/src"
}

ferretdb_up() {
  if [ "${MONGODB_URL:-$DEFAULT_MONGO}" != "$DEFAULT_MONGO" ]; then log "MONGODB_URL is set: using it, starting no FerretDB"; return; fi
  if port_open 27017; then log "MongoDB-compatible server already listening on 27017"; return; fi
  ferretdb_build
  mkdir -p "$FDB_DIR/data"
  log "starting FerretDB (data in $FDB_DIR/data)"
  setsid nohup "$(ferretdb_binary)" -listen 127.0.0.1:27017 -data-dir "$FDB_DIR/data" >"$FDB_DIR/ferretdb.log" 2>&1 &
  echo $! >"$FDB_DIR/server.pid"
  wait_port 27017 30 FerretDB
  log "FerretDB ready on 127.0.0.1:27017"
}

ferretdb_down() {
  [ -f "$FDB_DIR/server.pid" ] || return 0
  kill "$(cat "$FDB_DIR/server.pid")" 2>/dev/null || true
  rm -f "$FDB_DIR/server.pid"
  log "FerretDB stopped"
}

case "${1:-up}" in
  up) rabbitmq_up; ferretdb_up ;;
  down) ferretdb_down; rabbitmq_down ;;
  rabbitmq-up) rabbitmq_up ;;
  rabbitmq-down) rabbitmq_down ;;
  ferretdb-up) ferretdb_up ;;
  ferretdb-down) ferretdb_down ;;
  build) ferretdb_build ;;
  ferretdb-binary) ferretdb_build && ferretdb_binary ;;
  status)
    port_open 5672 && echo "rabbitmq: up" || echo "rabbitmq: down"
    port_open 27017 && echo "ferretdb: up" || echo "ferretdb: down" ;;
  *) echo "usage: $0 up|down|status|build|ferretdb-binary|rabbitmq-up|rabbitmq-down|ferretdb-up|ferretdb-down" >&2; exit 2 ;;
esac
