#!/usr/bin/env bash
# Runs every test of the workspace, the MongoDB ones included: starts the MongoDB-compatible test
# servers (installing them if needed), runs `cargo test`, stops the servers.
# Extra arguments go to `cargo test`.
set -euo pipefail
cd "$(dirname "$0")/.."
exec scripts/mongo-test-server.sh cargo test --workspace --all-targets "$@"
