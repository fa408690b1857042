#!/usr/bin/env bash
# A private PostgreSQL cluster on loopback for deployhook's shared-store tests.
#
#   .ci/postgres.sh start    start or reuse the cluster; last stdout line = database URL
#   .ci/postgres.sh url      print the URL if the cluster answers, else exit 1
#   .ci/postgres.sh stop     stop the cluster (keeps its data)
#   .ci/postgres.sh purge    stop, then delete the cluster
#
# Debian's PostgreSQL binaries (/usr/lib/postgresql/<newest>/bin), a data directory in
# ${DEPLOYHOOK_PG_BASE:-/tmp/deployhook-postgres}, listening on 127.0.0.1 only (and a
# socket in that directory), trust authentication: for tests on this machine, never for
# a real store. initdb refuses to run as root, so as root the cluster runs as the
# `postgres` user. The port is ${DEPLOYHOOK_PG_PORT:-55432}, or a free one if that is
# taken by something else; it is remembered in the base directory.
# Only stdout's last line of "start"/"url" is meant for machines:
#   export DEPLOYHOOK_TEST_DATABASE_URL=$(.ci/postgres.sh start | tail -n1)
set -euo pipefail

PROG=postgres.sh
log() { printf '%s: %s\n' "$PROG" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

BASE=${DEPLOYHOOK_PG_BASE:-/tmp/deployhook-postgres}
DATA=$BASE/data
RUN=$BASE/run
LOGF=$BASE/postgres.log
PORTF=$BASE/port
DB=${DEPLOYHOOK_PG_DATABASE:-deployhook_test}
BIN=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n1 || true)
[[ -n $BIN && -x $BIN/initdb ]] || die "no /usr/lib/postgresql/*/bin/initdb (apt-get install postgresql)"

usage() { sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2; }

# runuser is in /usr/sbin, which a PATH given to tests or cron may leave out.
PATH=$PATH:/usr/sbin:/sbin

# Run a PostgreSQL binary as the cluster's owner.
as_owner() {
  if [[ $(id -u) -eq 0 ]]; then
    runuser -u postgres -- "$@"
  else
    "$@"
  fi
}

port_in_use() { # is something listening on 127.0.0.1:$1?
  (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

pick_port() {
  local want=${DEPLOYHOOK_PG_PORT:-55432} p
  if [[ -f $PORTF ]]; then cat "$PORTF"; return; fi
  if ! port_in_use "$want"; then echo "$want"; return; fi
  for p in $(seq 55433 55532); do
    if ! port_in_use "$p"; then echo "$p"; return; fi
  done
  die "no free port in 55432..55532"
}

url() { echo "postgresql://postgres@127.0.0.1:$PORT/$DB"; }

answers() { as_owner "$BIN/pg_isready" -q -h 127.0.0.1 -p "$PORT" -d postgres -t 2; }

running() { [[ -f $DATA/postmaster.pid ]] && as_owner "$BIN/pg_ctl" status -D "$DATA" >/dev/null 2>&1; }

cmd_start() {
  mkdir -p "$BASE"
  if [[ $(id -u) -eq 0 ]]; then
    id postgres >/dev/null 2>&1 || die "running as root needs the 'postgres' user (apt-get install postgresql)"
    chown postgres: "$BASE"
  fi
  PORT=$(pick_port)
  if running && answers; then
    log "cluster in $DATA already running on port $PORT, reusing"
  else
    if [[ ! -f $DATA/PG_VERSION ]]; then
      log "initdb $DATA ($("$BIN/postgres" --version))"
      rm -rf "$DATA"
      as_owner "$BIN/initdb" -D "$DATA" -U postgres --auth=trust --encoding=UTF8 \
        --locale=C.UTF-8 >"$BASE/initdb.log" 2>&1 || { cat "$BASE/initdb.log" >&2; die "initdb failed"; }
    fi
    if port_in_use "$PORT"; then
      log "port $PORT is taken by another program; picking another"
      rm -f "$PORTF"; PORT=$(pick_port)
    fi
    as_owner mkdir -p "$RUN"
    log "starting PostgreSQL on 127.0.0.1:$PORT (log $LOGF)"
    # Several test runs share the machine: room for their connection pools. The server
    # must not inherit the flock on fd 8, or it would hold it for its whole life.
    as_owner "$BIN/pg_ctl" start -D "$DATA" -l "$LOGF" -w -t 60 -o \
      "-c listen_addresses=127.0.0.1 -p $PORT -k $RUN -c max_connections=300 -c shared_buffers=64MB" \
      >&2 8>&- || { tail -n 30 "$LOGF" >&2 || true; die "pg_ctl start failed"; }
  fi
  echo "$PORT" >"$PORTF"
  if ! as_owner "$BIN/psql" -h 127.0.0.1 -p "$PORT" -U postgres -d postgres -tAc \
      "SELECT 1 FROM pg_database WHERE datname = '$DB'" | grep -q 1; then
    as_owner "$BIN/createdb" -h 127.0.0.1 -p "$PORT" -U postgres "$DB"
    log "created database $DB"
  fi
  url
}

cmd_url() {
  [[ -f $PORTF ]] || die "no cluster started in $BASE"
  PORT=$(cat "$PORTF")
  running && answers || die "the cluster in $DATA does not answer"
  url
}

cmd_stop() {
  if [[ -f $DATA/postmaster.pid ]] && running; then
    log "stopping the cluster in $DATA"
    as_owner "$BIN/pg_ctl" stop -D "$DATA" -m fast -w -t 60 >&2
  else
    log "cluster in $DATA not running"
  fi
}

cmd_purge() {
  cmd_stop
  rm -rf "$BASE"
  log "removed $BASE"
}

cmd=${1:-}
case $cmd in
  start|url|stop|purge)
    mkdir -p "$BASE"
    exec 8>"$BASE/.lock"
    flock -w 120 8 || die "$BASE is locked by another start/stop"
    "cmd_$cmd"
    ;;
  *) usage ;;
esac
