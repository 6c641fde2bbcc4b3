#!/usr/bin/env bash
# Installs (pinned) and starts the MongoDB-wire-compatible test servers on loopback, then runs the
# command given as arguments with their addresses in the environment, and stops the servers by PID
# however the command ends.
#
#   MONGODB_URI             a server without authentication
#   MONGODB_AUTH_URI        a server with --auth (SCRAM-SHA-256), no credentials in the URI
#   MONGODB_AUTH_USER/...PASSWORD/...DB   an audit user with readWrite on that database only
#
# The server is SecantusDB (a GPL-2.0 MongoDB-compatible server on WiredTiger, from PyPI); it runs
# as a separate process and is never linked into the project.
set -euo pipefail

SECANTUS_VERSION="0.7.0b3"
PYTHON="${PYTHON:-python3}"

installed="$("$PYTHON" -m pip show SecantusDB 2>/dev/null || true)"
if ! grep -qx "Version: $SECANTUS_VERSION" <<<"$installed"; then
  echo "installing SecantusDB==$SECANTUS_VERSION (test server)..." >&2
  "$PYTHON" -m pip install --quiet --disable-pip-version-check "SecantusDB==$SECANTUS_VERSION" >&2
fi
SERVER="$("$PYTHON" -c 'import sysconfig; print(sysconfig.get_path("scripts"))')/secantusd-py"
[ -x "$SERVER" ] || { echo "secantusd-py not found at $SERVER" >&2; exit 1; }
# The outage tests start, stop and restart a server of their own.
export SECANTUS_SERVER="$SERVER"

workdir="$(mktemp -d "${TMPDIR:-/tmp}/audit-mongo.XXXXXX")"
pids=()

free_port() {
  "$PYTHON" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

wait_listening() { # port
  for _ in $(seq 1 100); do
    if "$PYTHON" -c "import socket,sys; s=socket.socket(); s.settimeout(0.2); sys.exit(s.connect_ex(('127.0.0.1', $1)))"; then
      return 0
    fi
    sleep 0.1
  done
  echo "test server on port $1 did not start; its log:" >&2
  cat "$workdir"/*.log >&2 || true
  return 1
}

stop_pid() { # pid
  kill "$1" 2>/dev/null || return 0
  for _ in $(seq 1 100); do kill -0 "$1" 2>/dev/null || return 0; sleep 0.1; done
  kill -9 "$1" 2>/dev/null || true
}

cleanup() {
  for pid in "${pids[@]}"; do stop_pid "$pid"; done
  rm -rf "$workdir"
}
trap cleanup EXIT INT TERM

# 1. The plain server, in memory.
port="$(free_port)"
"$SERVER" --host 127.0.0.1 --port "$port" --storage-path :memory: >"$workdir/plain.log" 2>&1 &
pids+=("$!")
wait_listening "$port"
export MONGODB_URI="mongodb://127.0.0.1:$port"

# 2. The authenticated server: users are created without --auth, then it restarts with --auth on
#    the same storage (the server has no localhost exception).
auth_port="$(free_port)"
mkdir -p "$workdir/auth"
"$SERVER" --host 127.0.0.1 --port "$auth_port" --storage-path "$workdir/auth" >"$workdir/auth-setup.log" 2>&1 &
setup_pid=$!
wait_listening "$auth_port"
export MONGODB_AUTH_USER="audit_user"
export MONGODB_AUTH_PASSWORD='p@ss:w/rd%'
export MONGODB_AUTH_DB="audit_auth"
"$PYTHON" - "$auth_port" <<'PY'
import os, sys, pymongo
c = pymongo.MongoClient(f"mongodb://127.0.0.1:{sys.argv[1]}")
c.admin.command("createUser", "admin", pwd="admin-pw", roles=[{"role": "root", "db": "admin"}],
                mechanisms=["SCRAM-SHA-256"])
c[os.environ["MONGODB_AUTH_DB"]].command(
    "createUser", os.environ["MONGODB_AUTH_USER"], pwd=os.environ["MONGODB_AUTH_PASSWORD"],
    roles=[{"role": "readWrite", "db": os.environ["MONGODB_AUTH_DB"]}], mechanisms=["SCRAM-SHA-256"])
PY
stop_pid "$setup_pid"
"$SERVER" --host 127.0.0.1 --port "$auth_port" --storage-path "$workdir/auth" --auth >"$workdir/auth.log" 2>&1 &
pids+=("$!")
wait_listening "$auth_port"
export MONGODB_AUTH_URI="mongodb://127.0.0.1:$auth_port"

echo "test servers: $MONGODB_URI (plain), $MONGODB_AUTH_URI (auth)" >&2
"$@"
