#!/usr/bin/env bash
# Where the audited server's time goes: runs the load test for one configuration under
# `perf record` and prints, for the request threads (`http`) and the storing thread
# (`audit-writer`), the share of the kernel and the top symbols. The README's "where the time goes"
# comes from these profiles.
#
#   scripts/profile-loadtest.sh [configuration] [requests]   # default: audited-async-sqlite 40000
#
# Needs `perf` (linux-perf) and permission to profile (perf_event_paranoid <= 1, or root).
set -euo pipefail
cd "$(dirname "$0")/.."
config="${1:-audited-async-sqlite}"
requests="${2:-40000}"
out="target/profile"
mkdir -p "$out"
cargo build --quiet --release -p audit-examples --example loadtest
perf record -F 2000 -g -o "$out/perf.data" -- \
  target/release/examples/loadtest --only "$config" --requests "$requests" --rate 0 >"$out/loadtest.log"
for thread in http audit-writer; do
  echo "== $thread: top symbols"
  perf report -i "$out/perf.data" --comms "$thread" --percentage relative --no-children \
    --sort symbol --stdio -g none 2>/dev/null | grep '%' | head -20 | cut -c1-120 || true
done
