#!/usr/bin/env bash
# The static checks CI runs before the tests: each one catches breakage that the test suite
# (`cargo test --workspace --all-targets`, default features) cannot see. Every check runs even
# when an earlier one failed (and `--keep-going` goes on past a crate that fails), so one run lists
# every problem; the script fails if any did.
# `CHECKS_CARGO` may name a wrapper to run instead of plain `cargo` (for instance a lock shared
# with other builds on the same machine: CHECKS_CARGO="flock /tmp/build.lock cargo").
set -uo pipefail
cd "$(dirname "$0")/.."

failed=()
cargo_() {
  echo "==> cargo $*" >&2
  # Unquoted on purpose: the wrapper is a command line.
  ${CHECKS_CARGO:-cargo} "$@"
}
check() {
  cargo_ "$@" || failed+=("cargo $*")
}

# One formatting, so a diff shows what changed and not code reflowed by someone's editor.
check fmt --all --check

# Lints as errors, on every target (tests, benches, examples, binaries) and with every feature on,
# so code behind an optional feature or only in a test is linted too.
check clippy --workspace --all-targets --all-features --keep-going -- -D warnings

# The documentation as docs.rs builds it (every feature): a broken intra-doc link or a malformed
# doc comment fails here instead of showing up broken after a release.
RUSTDOCFLAGS="-D warnings" check doc --workspace --no-deps --all-features --keep-going

# No database driver type in audit-runtime's public API (a public variant, parameter or return
# type): it would tie the crate's API to the driver's version, so a driver upgrade would break
# users. Read from the documentation just built, which shows exactly what is public.
drivers="$(grep -rlE 'rusqlite|mongodb::|mongodb/|sqlx::|sqlx/' target/doc/audit_runtime 2>/dev/null | head -5)"
if [ -n "$drivers" ]; then
  echo "driver types in the public API of audit-runtime, in: $drivers" >&2
  failed+=("driver types in the public API (see the pages above)")
fi

# The examples in the docs: `--all-targets` leaves doctests out, so this is the only run of them.
check test --workspace --doc

# audit-runtime with each feature on its own: a feature that only builds because another one
# happens to be on (an import or a dependency it forgot to enable) fails here. A build needs a
# store, so every feature is paired with the smaller one, `embedded-store`; the two stores are
# also checked alone (the minimal valid builds). The feature list is read from the manifest, so a
# new feature is checked without editing this script. `cargo check`: type-checking is what finds
# these, and it is much faster than a build.
features="$(cargo_ metadata --no-deps --format-version 1 | python3 -c '
import json, sys
pkg = next(p for p in json.load(sys.stdin)["packages"] if p["name"] == "audit-runtime")
print(" ".join(sorted(f for f in pkg["features"] if f != "default")))
')" || { echo "cannot read the features of audit-runtime" >&2; exit 1; }
check check -p audit-runtime --no-default-features --features embedded-store
check check -p audit-runtime --no-default-features --features mongodb
for feature in $features; do
  case "$feature" in
    embedded-store | mongodb) ;; # checked alone above
    *) check check -p audit-runtime --no-default-features --features "embedded-store,$feature" ;;
  esac
done

if [ ${#failed[@]} -gt 0 ]; then
  echo "==> failed checks:" >&2
  printf '    %s\n' "${failed[@]}" >&2
  exit 1
fi
echo "==> all checks passed" >&2
