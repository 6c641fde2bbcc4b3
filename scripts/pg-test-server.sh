#!/usr/bin/env bash
# Installs (Debian's package, when missing) and starts a PostgreSQL test server on loopback, runs
# the command given as arguments with its address in the environment, and stops the server
# however the command ends.
#
#   POSTGRES_URI       postgres://audit_test:PASSWORD@127.0.0.1:PORT/postgres — a role that may
#                      create databases (each test makes one of its own)
#   POSTGRES_BIN       the server's binaries (pg_ctl), for the outage test that stops and restarts it
#   POSTGRES_DATA      its data directory
#   POSTGRES_RUN_AS    the user the server runs as (it refuses to run as root)
#
# The server runs from a temporary data directory with durability traded for speed (no fsync):
# it is a test server, thrown away at the end.
set -euo pipefail

find_bin() {
  local d
  for d in /usr/lib/postgresql/*/bin; do
    if [ -x "$d/pg_ctl" ] && [ -x "$d/initdb" ]; then echo "$d"; return 0; fi
  done
  return 1
}

if ! BIN="$(find_bin)"; then
  echo "installing postgresql (test server)..." >&2
  if [ "$(id -u)" -eq 0 ]; then SUDO=""; else SUDO="sudo"; fi
  $SUDO apt-get update -qq >&2
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq postgresql >&2
  BIN="$(find_bin)" || { echo "postgresql installed but pg_ctl not found" >&2; exit 1; }
fi

# The server refuses to run as root: as root it runs as `postgres` (created with the package).
if [ "$(id -u)" -eq 0 ]; then
  RUN_AS="postgres"
  as_server() { runuser -u "$RUN_AS" -- "$@"; }
else
  RUN_AS="$(id -un)"
  as_server() { "$@"; }
fi

PYTHON="${PYTHON:-python3}"
workdir="$(mktemp -d "${TMPDIR:-/tmp}/audit-pg.XXXXXX")"
chmod 755 "$workdir"
data="$workdir/data"
mkdir -p "$data"
[ "$(id -u)" -eq 0 ] && chown "$RUN_AS" "$workdir" "$data"

port="$("$PYTHON" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
password="$("$PYTHON" -c 'import secrets; print(secrets.token_hex(16))')"

cleanup() {
  as_server "$BIN/pg_ctl" -D "$data" -m immediate stop >/dev/null 2>&1 || true
  rm -rf "$workdir"
}
trap cleanup EXIT INT TERM

as_server "$BIN/initdb" -D "$data" -U postgres --auth=trust -E UTF8 --locale=C.UTF-8 >"$workdir/initdb.log" 2>&1 \
  || { cat "$workdir/initdb.log" >&2; exit 1; }
cat >>"$data/postgresql.conf" <<CONF
listen_addresses = '127.0.0.1'
port = $port
unix_socket_directories = '$workdir'
fsync = off
synchronous_commit = off
full_page_writes = off
max_connections = 300
CONF
# Password authentication over TCP, as an application connects; trust on the socket for setup.
cat >"$data/pg_hba.conf" <<HBA
local all all trust
host all all 127.0.0.1/32 scram-sha-256
HBA
as_server "$BIN/pg_ctl" -D "$data" -l "$workdir/server.log" -w -t 60 start >/dev/null \
  || { cat "$workdir/server.log" >&2; exit 1; }

as_server "$BIN/psql" -h "$workdir" -p "$port" -U postgres -d postgres -v ON_ERROR_STOP=1 -q \
  -c "CREATE ROLE audit_test LOGIN CREATEDB PASSWORD '$password'" >/dev/null

export POSTGRES_URI="postgres://audit_test:$password@127.0.0.1:$port/postgres"
export POSTGRES_BIN="$BIN"
export POSTGRES_DATA="$data"
export POSTGRES_RUN_AS="$RUN_AS"
echo "test server: postgres on 127.0.0.1:$port" >&2
"$@"
