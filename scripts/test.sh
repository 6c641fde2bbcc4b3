#!/usr/bin/env bash
# Runs every test of the workspace, the MongoDB and PostgreSQL ones included: starts the
# MongoDB-compatible test servers and a PostgreSQL server (installing them if needed), runs
# `cargo test`, stops the servers.
# Extra arguments go to `cargo test`.
set -euo pipefail
cd "$(dirname "$0")/.."

# Debian packages the tests drive, installed once (a machine that has them skips apt entirely);
# the tests fail, never skip, when they are missing:
# - chromium and chromium-driver: the console's browser tests;
# - rsyslog: the forwarder's syslog receiver (the tests start rsyslogd on a loopback port).
packages=()
if ! command -v chromedriver >/dev/null 2>&1 || [ ! -x /usr/bin/chromium ]; then
  packages+=(chromium chromium-driver)
fi
if [ ! -x /usr/sbin/rsyslogd ]; then
  packages+=(rsyslog)
fi
if [ ${#packages[@]} -gt 0 ]; then
  echo "installing ${packages[*]} (test receivers and browser)..." >&2
  if [ "$(id -u)" -eq 0 ]; then SUDO=""; else SUDO="sudo"; fi
  $SUDO apt-get update -qq >&2
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${packages[@]}" >&2
fi

exec scripts/mongo-test-server.sh scripts/pg-test-server.sh cargo test --workspace --all-targets "$@"
