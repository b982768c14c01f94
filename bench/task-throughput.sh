#!/usr/bin/env bash
# Task-mode throughput of one worker on trivial tasks (`true`), against a minimal hand-written loop
# doing the same on the same Redis (queue/examples/minimal_loop.rs: BLMOVE, fork/exec with the
# payload on stdin, LREM), and the CPU each spends per task.
#   For each round and each worker: a fresh queue of N tasks, the worker started, the clock stopped
#   when the queue and every processing list are empty (polled every 20 ms); CPU = utime + stime of
#   the worker and of the tasks it reaped (/proc/PID/stat), and of redis-server over the same time.
# Usage: bench/task-throughput.sh [TASKS] [ROUNDS]   (default 2000 tasks, 3 rounds; the median is shown)
# Needs: cargo, redis-server and redis-cli.
set -euo pipefail

TASKS=${1:-2000}
ROUNDS=${2:-3}
REPO=$(cd "$(dirname "$0")/.." && pwd)
WORK=$(mktemp -d /tmp/task-bench.XXXXXX)
QUEUE=bench
REDIS_PID=
WORKER_PID=
cleanup() {
  [ -n "$WORKER_PID" ] && kill -KILL "$WORKER_PID" 2>/dev/null
  [ -n "$REDIS_PID" ] && kill -TERM "$REDIS_PID" 2>/dev/null
  rm -rf "$WORK"
}
trap cleanup EXIT

for tool in redis-server redis-cli; do
  command -v "$tool" >/dev/null || { echo "missing: $tool (apt-get install -y redis-server)" >&2; exit 1; }
done

echo "building: cargo build --release -p qsupervisor -p qscaler-queue --example minimal_loop" >&2
(cd "$REPO" && cargo build --release -q -p qsupervisor && cargo build --release -q -p qscaler-queue --example minimal_loop)
QS="$REPO/target/release/qsupervisor"
BASE="$REPO/target/release/examples/minimal_loop"
TRUE=$(command -v true)

# A free loopback port, then a redis-server on it without persistence (loopback only).
PORT=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
redis-server --port "$PORT" --bind 127.0.0.1 --save '' --appendonly no --dir "$WORK" >"$WORK/redis.log" 2>&1 &
REDIS_PID=$!
rcli() { redis-cli -p "$PORT" "$@"; }
for _ in $(seq 200); do rcli ping >/dev/null 2>&1 && break; sleep 0.05; done
rcli ping >/dev/null
URL="redis://127.0.0.1:$PORT/0"

# Tasks left: queued plus held in any processing list (an empty list does not exist in Redis).
LEFT="return redis.call('LLEN', KEYS[1]) + #redis.call('KEYS', '{' .. KEYS[1] .. '}:processing:*')"
left() { rcli --raw eval "$LEFT" 1 "$QUEUE"; }

ticks() { # utime + stime + cutime + cstime of a process, in clock ticks
  awk '{ sub(/^.*\) /, ""); print $12 + $13 + $14 + $15 }' "/proc/$1/stat"
}
HZ=$(getconf CLK_TCK)

# name|command (the worker; it runs until SIGTERM)
WORKERS=(
  "minimal loop (baseline)|$BASE $URL $QUEUE -- $TRUE"
  "qsupervisor|$QS --task --redis-url $URL --queue $QUEUE --pod-name bench -- $TRUE"
  "qsupervisor (sampler off)|$QS --task --redis-url $URL --queue $QUEUE --pod-name bench --sample-interval 0 -- $TRUE"
)

run_one() { # prints: seconds, worker CPU ms, redis CPU ms
  local cmd=$1 t0 t1 r0 r1 w
  rcli flushall >/dev/null
  seq "$TASKS" | awk -v q="$QUEUE" '{ printf "LPUSH %s task-%d\n", q, $1 }' | rcli >/dev/null
  [ "$(left)" = "$TASKS" ] || { echo "queue not filled" >&2; exit 1; }
  r0=$(ticks "$REDIS_PID")
  t0=$(date +%s.%N)
  # shellcheck disable=SC2086
  $cmd >/dev/null 2>"$WORK/worker.log" &
  WORKER_PID=$!
  until [ "$(left)" = 0 ]; do
    kill -0 "$WORKER_PID" 2>/dev/null || { echo "worker died:" >&2; tail "$WORK/worker.log" >&2; exit 1; }
    sleep 0.02
  done
  t1=$(date +%s.%N)
  w=$(ticks "$WORKER_PID")
  r1=$(ticks "$REDIS_PID")
  kill -TERM "$WORKER_PID"
  wait "$WORKER_PID" 2>/dev/null || true
  WORKER_PID=
  awk -v t0="$t0" -v t1="$t1" -v w="$w" -v r="$((r1 - r0))" -v hz="$HZ" \
    'BEGIN { printf "%.3f %.1f %.1f\n", t1 - t0, w * 1000 / hz, r * 1000 / hz }'
}

median() { sort -g | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }

echo "$TASKS tasks of \`true\` per run, $ROUNDS rounds (interleaved); redis-server $(redis-server --version | awk '{print $3}' | tr -d v=) on 127.0.0.1:$PORT" >&2
declare -A SECS WCPU RCPU
for round in $(seq "$ROUNDS"); do
  for e in "${WORKERS[@]}"; do
    name=${e%%|*}
    read -r s w r < <(run_one "${e#*|}")
    echo "  round $round: $name: ${s}s, worker CPU ${w} ms, redis CPU ${r} ms" >&2
    SECS[$name]+="$s "; WCPU[$name]+="$w "; RCPU[$name]+="$r "
  done
done

printf '\n%-28s %10s %10s %18s %18s %14s %14s\n' "worker" "wall (s)" "tasks/s" "CPU ms/task" "Redis CPU ms/task" "time ratio" "CPU ratio"
base_s=""; base_w=""
for e in "${WORKERS[@]}"; do
  name=${e%%|*}
  s=$(tr ' ' '\n' <<<"${SECS[$name]}" | grep . | median)
  w=$(tr ' ' '\n' <<<"${WCPU[$name]}" | grep . | median)
  r=$(tr ' ' '\n' <<<"${RCPU[$name]}" | grep . | median)
  [ -z "$base_s" ] && { base_s=$s; base_w=$w; }
  awk -v n="$name" -v s="$s" -v w="$w" -v r="$r" -v t="$TASKS" -v bs="$base_s" -v bw="$base_w" \
    'BEGIN { printf "%-28s %10.3f %10.0f %18.3f %18.3f %13.2fx %13.2fx\n", n, s, t / s, w / t, r / t, s / bs, w / bw }'
done
echo
echo "CPU: the worker's utime+stime plus its reaped tasks'; ratios against the baseline (target: time within 1.5x)."
echo "machine: $(nproc) cores, $(uname -r)"
