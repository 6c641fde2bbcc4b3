#!/usr/bin/env bash
# A short run of the load test (2,000 requests per configuration, closed loop; MongoDB too when
# MONGODB_URI is set, PostgreSQL when POSTGRES_URI is): it fails when an audited server stored a
# different number of records than it answered; then the JSON it wrote must hold every
# configuration and target, and the chart script must draw it. Run it under
# scripts/mongo-test-server.sh and scripts/pg-test-server.sh to include those stores.
set -euo pipefail
cd "$(dirname "$0")/.."

out="target/loadtest-smoke"
mkdir -p "$out"
cargo run --quiet -p audit-examples --example loadtest -- \
  --requests 2000 --rate 0 --rounds 2 --json "$out/results.json"

python3 - "$out/results.json" <<'PY'
import json, sys
doc = json.load(open(sys.argv[1]))
runs = {r["config"]: r for r in doc["runs"]}
want = ["bare", "trace-json", "audited-sync-sqlite", "audited-async-sqlite", "audited-async-sqlite-forward", "bare-again"]
import os
if os.environ.get("MONGODB_URI"):
    want.append("audited-async-mongodb")
if os.environ.get("POSTGRES_URI"):
    want += ["audited-async-postgres", "audited-sync-postgres"]
missing = [c for c in want if c not in runs]
assert not missing, f"configurations missing from the results: {missing}"
for name, r in runs.items():
    assert r["requests"] == 2000, (name, r["requests"])
    assert r["rps"] > 0 and r["p99_us"] >= r["p50_us"] > 0, (name, r)
    if name.startswith("audited"):
        assert r["records_written"] == r["records_expected"] == 2000 + 500, (name, r)
        assert r["writer_cpu_us_per_record"] > 0, (name, r)
assert len(doc["targets"]) == 11, doc["targets"]
assert doc["stores"]["store_docs_per_s"] > 0
print(f"loadtest smoke: {len(runs)} configurations, records written = requests answered")
PY

python3 scripts/perf-chart.py "$out/results.json" "$out/chart.svg"
python3 -c "import sys, xml.dom.minidom; xml.dom.minidom.parse(sys.argv[1])" "$out/chart.svg"
echo "loadtest smoke: chart drawn ($out/chart.svg)"
