#!/usr/bin/env bash
# A bursty workload under the factor rule and under the drain-time target (issue 15 item 5): WAVES waves of
# TASKS task-mode tasks of TASK_MS each, PAUSE_SECONDS apart, on one fresh task-mode QWorker per rule
# (qsupervisor --task -- qscaler-test-worker --stdin-task on the stand-in kubelet, one operator per run,
# polling every 200 ms). Both runs: minReplicas 0, maxReplicas MAX_REPLICAS, scaleDownStabilizationSeconds 5.
# - factor rule: scalingFactor 1 (one worker per waiting or running task, the original meaning);
# - drain target: targetDrainSeconds TARGET_SECONDS, taskSeconds TASK_MS/1000 as the prior (learned after 3).
# Prints a markdown table: total pod-seconds (alive worker pods sampled every 50 ms, from the first wave to
# the last pod gone), p95 and max wait from enqueue to start (this process's clock: before the LPUSH, and
# when it first sees the task's `start` event, read every 20 ms), the scale changes (the operator's ScaledUp
# and ScaledDown Events, repeats counted), and the tasks measured. The measuring code is the ignored test
# `bursty_bench` in tests/tests/drain_target_e2e.rs.
#
#   bench/bursty.sh        (~5 min with the defaults)
#
# Settings (env): WAVES (4), TASKS (30), TASK_MS (500), PAUSE_SECONDS (20), TARGET_SECONDS (10),
# MAX_REPLICAS (10).
# Uses the stand-in cluster `tests/cluster.sh env` names when it answers, else brings one up in
# /tmp/qscaler-bench-cluster and down again.
set -euo pipefail
cd "$(dirname "$0")/.."
log() { printf '[bursty] %s\n' "$*" >&2; }

. bench/lib.sh
trap down_own_cluster EXIT
stand_in_cluster /tmp/qscaler-bench-cluster

log "building the operator, qsupervisor and qscaler-test-worker (debug, as the e2e tests run them)"
timeout 1800 cargo build -q -p qscaler-operator -p qsupervisor
timeout 1800 cargo build -q -p qscaler-tests --bins
export WAVES=${WAVES:-4} TASKS=${TASKS:-30} TASK_MS=${TASK_MS:-500} PAUSE_SECONDS=${PAUSE_SECONDS:-20}
export TARGET_SECONDS=${TARGET_SECONDS:-10} MAX_REPLICAS=${MAX_REPLICAS:-10}
timeout 3600 cargo test -q -p qscaler-tests --test drain_target_e2e bursty_bench -- --ignored --nocapture
echo
echo "1-min load average at the end: $(cut -d' ' -f1 /proc/loadavg) ($(nproc) cores)"
