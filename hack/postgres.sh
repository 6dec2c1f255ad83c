#!/usr/bin/env bash
# The shop's PostgreSQL (Debian's PostgreSQL 15 binaries, never its system service), as a
# detached server: its password in .state/postgres/, its data (as root) under /var/lib/pilotboat.
#   hack/postgres.sh up       initdb once, start if not running, wait until it answers
#   hack/postgres.sh down     stop it (the data stays), one line on stdout; exit 0 when it
#                             does not run
#   hack/postgres.sh purge    stop it and delete its data
#   hack/postgres.sh status   exit 0 when it answers
#   hack/postgres.sh env      print PGHOST/PGPORT/PGUSER/PGPASSWORD lines for `eval`
#
# Port ${PILOTBOAT_PG_PORT:-15432} on 127.0.0.1 (the operator, the demo's integrity check)
# and on 10.244.0.1, the pod network's gateway on the bridge pb0, so the shop's pods reach
# it; `up` waits (60 s at most) for pb0 to carry that address, i.e. for hack/node.sh up.
# PILOTBOAT_PG_LISTEN overrides the addresses (e.g. 127.0.0.1 alone, without a node).
# Authentication is scram-sha-256 on every connection, for the superuser `postgres` too;
# its password is generated once into .state/postgres/superuser-password (mode 600).
# As root the data belongs to the `postgres` system user and the server runs as it.
set -euo pipefail

hack="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$hack/.." && pwd)"
state="${PILOTBOAT_STATE:-$repo/.state}"
dir="$state/postgres"
# What the server itself opens (data, socket, log) must be reachable by its system user,
# and a checkout's parent folders may not be (a private temporary folder, say): as root
# that part lives under /var/lib/pilotboat, one folder per state dir.
if [ "$(id -u)" -eq 0 ]; then
  srv="${PILOTBOAT_PG_SERVER_DIR:-/var/lib/pilotboat/postgres-$(printf %s "$dir" | sha256sum | cut -c1-12)}"
else
  srv="$dir"
fi
data="$srv/data"
port="${PILOTBOAT_PG_PORT:-15432}"
gateway=10.244.0.1
listen="${PILOTBOAT_PG_LISTEN:-127.0.0.1,$gateway}"
pwfile="$dir/superuser-password"
bin="${PILOTBOAT_PG_BIN:-/usr/lib/postgresql/15/bin}"
superuser=postgres
system_user=postgres

log() { echo "postgres: $*" >&2; }
die() { log "$*"; exit 1; }

as_server() {  # run a PostgreSQL binary as the server's system user when we are root
  if [ "$(id -u)" -eq 0 ]; then runuser -u "$system_user" -- "$@"; else "$@"; fi
}

answers() {
  PGPASSWORD="$(cat "$pwfile" 2>/dev/null)" "$bin/psql" -h 127.0.0.1 -p "$port" \
    -U "$superuser" -d postgres -tAqc 'select 1' >/dev/null 2>&1
}

running() { as_server "$bin/pg_ctl" status -D "$data" >/dev/null 2>&1; }

init() {
  if [ -s "$data/PG_VERSION" ]; then
    [ -s "$pwfile" ] && return 0
    # Server files without this checkout's password: they are an earlier checkout's at the
    # same path (a clean clone where one was), and nothing here can log in to them. Start over.
    log "$srv has no password in $dir (an earlier checkout's server): starting it afresh"
    running && as_server "$bin/pg_ctl" stop -D "$data" -m immediate -w -t 30 >/dev/null
    rm -rf "$srv"
  fi
  [ -x "$bin/initdb" ] || "$hack/deps.sh"
  [ -x "$bin/initdb" ] || die "no PostgreSQL binaries in $bin"
  mkdir -p "$dir" "$srv"
  if [ ! -s "$pwfile" ]; then
    (umask 077 && openssl rand -base64 24 | tr -d '/+=\n' >"$pwfile")
  fi
  local tmp_pw
  tmp_pw="$(mktemp)"
  cp "$pwfile" "$tmp_pw"
  if [ "$(id -u)" -eq 0 ]; then
    chown "$system_user:" "$srv" "$tmp_pw"
  fi
  log "initdb in $data"
  as_server "$bin/initdb" -D "$data" -U "$superuser" --pwfile="$tmp_pw" \
    --auth-host=scram-sha-256 --auth-local=scram-sha-256 -E UTF8 --locale=C.UTF-8 \
    >"$dir/initdb.log" 2>&1 || { rm -f "$tmp_pw"; die "initdb failed; see $dir/initdb.log"; }
  rm -f "$tmp_pw"
  # Pods come from 10.244.0.0/24 (their source address on pb0); the host from loopback.
  cat >"$data/pg_hba.conf" <<'HBA'
# TYPE  DATABASE  USER  ADDRESS          METHOD   (written by hack/postgres.sh)
local   all       all                    scram-sha-256
host    all       all   127.0.0.1/32     scram-sha-256
host    all       all   10.244.0.0/24    scram-sha-256
HBA
}

wait_gateway() {
  case ",$listen," in *",$gateway,"*) ;; *) return 0 ;; esac
  local i
  for ((i = 0; i < 600; i++)); do
    ip -4 addr show dev pb0 2>/dev/null | grep -q "inet $gateway/" && return 0
    sleep 0.1
  done
  die "the pod network's gateway $gateway is not on pb0 after 60s (hack/node.sh up first, or PILOTBOAT_PG_LISTEN=127.0.0.1)"
}

up() {
  init
  if running; then
    answers || die "running but not answering on 127.0.0.1:$port; see $srv/server.log"
    return 0
  fi
  wait_gateway
  log "starting on ${listen//,/ and }, port $port"
  # unix socket in the data dir's parent (owned by the server's user), not /var/run.
  local sockdir="$srv/run"
  mkdir -p "$sockdir"
  [ "$(id -u)" -ne 0 ] || chown "$system_user:" "$sockdir"
  touch "$srv/server.log"
  [ "$(id -u)" -ne 0 ] || chown "$system_user:" "$srv/server.log"
  as_server "$bin/pg_ctl" start -D "$data" -l "$srv/server.log" -w -t 60 -o \
    "-c listen_addresses=$listen -c port=$port -c unix_socket_directories=$sockdir \
     -c max_connections=200 -c shared_buffers=64MB -c fsync=off -c synchronous_commit=off \
     -c full_page_writes=off -c log_min_messages=warning" >/dev/null \
    || die "did not start; see $srv/server.log"
  local i
  for ((i = 0; i < 100; i++)); do answers && return 0; sleep 0.1; done
  die "started but does not answer; see $srv/server.log"
}

# Postmasters of our data dir, by command line: also those pg_ctl no longer finds because
# postmaster.pid went (the data dir deleted under the running server, as `rm -rf .state`
# does when not root).
postmasters() {
  local d args
  for d in /proc/[0-9]*; do
    mapfile -d '' args 2>/dev/null <"$d/cmdline" || continue
    [[ "${args[*]} " == *"/postgres -D $data "* ]] && echo "${d#/proc/}"
  done
  return 0
}

down() {
  local pm=() pids i
  if running; then
    # postmaster.pid: pid, data dir, start time, port, ...
    { mapfile -t pm <"$data/postmaster.pid"; } 2>/dev/null || true
    if as_server "$bin/pg_ctl" stop -D "$data" -m fast -w -t 30 >/dev/null; then
      echo "postgres: stopped PostgreSQL on port ${pm[3]:-$port} (pid ${pm[0]:-?})"
    else
      log "pg_ctl stop failed (see $srv/server.log); signalling the server"
    fi
  fi
  pids="$(postmasters)"
  [ -n "$pids" ] || return 0
  # shellcheck disable=SC2086
  kill -INT $pids 2>/dev/null || true  # SIGINT: the fast shutdown pg_ctl -m fast asks for
  for ((i = 0; i < 300; i++)); do
    [ -n "$(postmasters)" ] || break
    sleep 0.1
  done
  # shellcheck disable=SC2086
  [ -z "$(postmasters)" ] || kill -KILL $pids 2>/dev/null || true
  sleep 0.2
  [ -z "$(postmasters)" ] || die "still running: $(postmasters | tr '\n' ' ')"
  echo "postgres: stopped PostgreSQL of $data by signal (pid ${pids//$'\n'/ })"
}

case "${1:-}" in
  up) up ;;
  down) down ;;
  purge) down; rm -rf "$dir" "$srv" ;;
  status) running && answers ;;
  env)
    [ -s "$pwfile" ] || die "no $pwfile; run: $0 up"
    printf 'PGHOST=127.0.0.1\nPGPORT=%s\nPGUSER=%s\nPGPASSWORD=%s\n' "$port" "$superuser" "$(cat "$pwfile")" ;;
  *) echo "usage: $0 up|down|purge|status|env" >&2; exit 2 ;;
esac
