#!/usr/bin/env bash
# Runs every test of the workspace, the MongoDB and PostgreSQL ones included: starts the
# MongoDB-compatible test servers and a PostgreSQL server (installing them if needed), runs
# `cargo test`, stops the servers.
# Extra arguments go to `cargo test`.
set -euo pipefail
cd "$(dirname "$0")/.."

# The console's browser tests drive Debian's Chromium through chromedriver. Installed once; a
# machine that has both skips apt entirely. The tests fail (never skip) when they are missing.
if ! command -v chromedriver >/dev/null 2>&1 || [ ! -x /usr/bin/chromium ]; then
  echo "installing chromium and chromium-driver (console browser tests)..." >&2
  if [ "$(id -u)" -eq 0 ]; then SUDO=""; else SUDO="sudo"; fi
  $SUDO apt-get update -qq >&2
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq chromium chromium-driver >&2
fi

exec scripts/mongo-test-server.sh scripts/pg-test-server.sh cargo test --workspace --all-targets "$@"
