#!/usr/bin/env bash
# The project's test command: lint, bring the local cluster up, run every test, always tear it down.
#   tests/run.sh            everything (what CI runs)
#   tests/run.sh -- ARGS    extra arguments for `cargo test` (e.g. a test name filter)
set -euo pipefail
cd "$(dirname "$0")/.."
phase() { printf '\n==> %s (%s)\n' "$1" "$(date +%T)"; }

phase "format and lint"
cargo fmt --all --check
cargo clippy --workspace --all-targets -q -- -D warnings
tests/lint-static.sh

phase "build"
cargo build --workspace --bins -q
tests/static-build.sh >/dev/null   # the musl qsupervisor that supervisor/tests/static_root.rs runs

phase "local cluster up"
keep_up=${QSCALER_KEEP_CLUSTER:-0}
if [ "$keep_up" != 1 ]; then trap 'phase "local cluster down"; tests/cluster.sh down' EXIT; fi
tests/cluster.sh up
eval "$(tests/cluster.sh env)"

phase "tests"
[ "${1:-}" = "--" ] && shift
cargo test --workspace -- "$@"
