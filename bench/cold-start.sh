#!/usr/bin/env bash
# Cold start, measured whole (issue 17 item 3): push N tasks into the empty queue of a task-mode QWorker with
# no workers (minReplicas 0), at a random phase of the poll cycle, and time push -> first task started and
# -> last task done, split into stages along the pod that started the first task: operator reaction (pod
# created), scheduled, container running, worker ready (qsupervisor's first write to its pod, the activity
# annotation), task taken (its processing list non-empty), task started (the task's own `start` event).
# Settings: the same release operator polling every 500 ms (the default), 5 s (the original QScaler) and
# 30 s (KEDA's default polling), each for TRIALS trials. Prints a markdown table (median / p90 in ms).
#
#   bench/cold-start.sh [--real-node] [TRIALS]     (default 5 trials per setting; ~6 min on the stand-in)
#
# Stand-in cluster (default): reuses the one `tests/cluster.sh env` names when it answers, else brings one up
# in /tmp/qscaler-bench-cluster and down again. Workers are qsupervisor --task -- qscaler-test-worker
# --stdin-task from this workspace's debug build (image qscaler/qsupervisor; the stand-in kubelet runs the
# debug binaries), built here first.
# --real-node: attaches to `tests/node.sh env` (kubelet + Docker; `tests/node.sh up` and
# `docker/build.sh --debug --test --tag e2e` first) and runs the image qscaler/test-worker:$QSCALER_IMAGE_TAG
# (default e2e); pods reach Redis at the node's address. The operator runs on this host either way.
#
# Settings (env): INTERVALS (default 500ms,5s,30s), PUSH (off: every push waits for a poll; on: Redis'
# keyspace notifications set to Kl for the run, so the operator's push trigger wakes it; off,on runs both;
# default off,on), TASKS (10), TASK_MS (200), MAX_REPLICAS (5),
# RAW (a file for one tab-separated line per trial), RUST_LOG (the bench's own log, default warn).
set -euo pipefail
cd "$(dirname "$0")/.."
REAL=0
if [ "${1:-}" = --real-node ]; then
  REAL=1
  shift
fi
TRIALS=${1:-5}
INTERVALS=${INTERVALS:-500ms,5s,30s}
log() { printf '[cold-start] %s\n' "$*" >&2; }

. bench/lib.sh
trap down_own_cluster EXIT

if [ "$REAL" = 1 ]; then
  eval "$(tests/node.sh env)"
  tag=${QSCALER_IMAGE_TAG:-e2e}
  docker image inspect "qscaler/test-worker:$tag" >/dev/null 2>&1 ||
    { log "image qscaler/test-worker:$tag missing on the node: docker/build.sh --debug --test --tag $tag"; exit 1; }
  log "on the real node ($KUBECONFIG), image qscaler/test-worker:$tag"
else
  stand_in_cluster /tmp/qscaler-bench-cluster
fi

# The bench is a release build too: a debug build's pod watch, starved on a busy machine, stamps later.
log "building qscaler-operator and the bench (release), and the workers' qsupervisor and qscaler-test-worker (debug: the stand-in kubelet runs the debug build)"
timeout 1800 cargo build -q --release -p qscaler-operator
timeout 1800 cargo build -q --release -p qscaler-tests --bin qscaler-cold-start
[ "$REAL" = 1 ] || timeout 1800 cargo build -q -p qsupervisor --bin qsupervisor
[ "$REAL" = 1 ] || timeout 1800 cargo build -q -p qscaler-tests --bin qscaler-test-worker
TARGET=${CARGO_TARGET_DIR:-target}

args=(--operator "$TARGET/release/qscaler-operator" --trials "$TRIALS" --intervals "$INTERVALS" --push "${PUSH:-off,on}"
  --tasks "${TASKS:-10}" --task-ms "${TASK_MS:-200}" --max-replicas "${MAX_REPLICAS:-5}")
[ "$REAL" = 1 ] && args+=(--real-node)
[ -n "${RAW:-}" ] && args+=(--raw "$RAW")
"$TARGET/release/qscaler-cold-start" "${args[@]}"
echo
echo "1-min load average at the end: $(cut -d' ' -f1 /proc/loadavg) ($(nproc) cores)"
