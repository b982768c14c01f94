#!/usr/bin/env bash
# The project's test command: lint, build, then two clusters one after the other — the local control plane
# with the stand-in kubelet for the workspace's tests, and the real node (kubelet + Docker, tests/node.sh)
# for the real-node suite and its containment check. Each cluster is always torn down.
#   tests/run.sh                  everything (what CI runs)
#   tests/run.sh -- ARGS          extra arguments for the stand-in phase's `cargo test` (e.g. a name filter)
#   QSCALER_SKIP_REAL_NODE=1      leave out the real-node phase
#   QSCALER_SKIP_STAND_IN=1       leave out the stand-in phase
set -euo pipefail
cd "$(dirname "$0")/.."
phase() { printf '\n==> %s (%s)\n' "$1" "$(date +%T)"; }
[ "${1:-}" = "--" ] && shift

phase "format and lint"
cargo fmt --all --check
cargo clippy --workspace --all-targets -q -- -D warnings
tests/lint-static.sh

phase "build"
cargo build --workspace --bins -q
# The static binaries: the musl qsupervisor that supervisor/tests/static_root.rs runs, and what the images hold.
tests/static-build.sh qsupervisor qscaler-operator qscaler-test-worker >/dev/null

teardown=()
cleanup() {
  local rc=$? t
  for t in "${teardown[@]}"; do phase "$t"; $t || rc=1; done
  exit "$rc"
}
trap cleanup EXIT

if [ "${QSCALER_SKIP_STAND_IN:-0}" != 1 ]; then
  phase "local cluster up (stand-in kubelet), Redis Cluster and Sentinel"
  teardown=("tests/cluster.sh down" "tests/redis-topologies.sh down")
  tests/cluster.sh up
  tests/redis-topologies.sh up
  (
    eval "$(tests/cluster.sh env)"
    eval "$(tests/redis-topologies.sh env)"
    export QSCALER_REQUIRE_CLUSTER=1 # a suite that finds no cluster fails here instead of skipping
    phase "queue frameworks for the preset tests (tests/frameworks.sh)"
    tests/frameworks.sh
    phase "tests on the stand-in kubelet"
    cargo test --workspace -- "$@"
  )
  phase "local cluster down"
  teardown=()
  tests/redis-topologies.sh down
  tests/cluster.sh down
fi

if [ "${QSCALER_SKIP_REAL_NODE:-0}" != 1 ]; then
  phase "real node up (kubelet + Docker in a network namespace)"
  teardown=("tests/node.sh down")
  tests/node.sh up
  (
    eval "$(tests/node.sh env)"
    phase "images (docker/build.sh --debug --test --tag e2e)"
    docker/build.sh --debug --test --tag e2e >/dev/null
    phase "tests on the real node"
    cargo test -p qscaler-tests --test real_node_e2e -- --ignored --test-threads 3 --skip node_drain
    phase "node drain (alone: it cordons the node)"
    cargo test -p qscaler-tests --test real_node_e2e -- --ignored node_drain
    phase "containment: nothing left the node's network namespace"
    cargo test -p qscaler-tests --test real_node_containment -- --ignored
  )
  phase "real node down (and the host as it was)"
  teardown=()
  tests/node.sh down
fi
