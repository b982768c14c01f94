#!/usr/bin/env bash
# Scale-up reaction: time from LPUSH of the first task into an empty queue to the worker pod's creation,
# measured by a pod watch, for qscaler-operator at its default poll interval against the same operator
# polling every 5 s (the original QScaler's interval) in the same run. Prints a table and the ratio.
#
#   bench/scale-up.sh [TRIALS]        (default 10 trials per setting; needs root; ~2 min)
#
# Uses the running local cluster if `tests/cluster.sh env` works, else brings one up and down itself.
set -euo pipefail
cd "$(dirname "$0")/.."
TRIALS=${1:-10}
OWN_CLUSTER=0
if ! tests/cluster.sh env >/dev/null 2>&1; then
  export QSCALER_CLUSTER_DIR=/tmp/qscaler-bench-cluster
  tests/cluster.sh up
  OWN_CLUSTER=1
fi
eval "$(tests/cluster.sh env)"
cargo build -q -p qscaler-operator --release
OPERATOR=${CARGO_TARGET_DIR:-target}/release/qscaler-operator
redis_port=${REDIS_URL##*:}
redis_port=${redis_port%/}
kubectl apply --server-side -f crds/qworker.yaml -f crds/scalerconfig.yaml >/dev/null 2>&1
kubectl wait --for condition=established crd/qworkers.quickube.com --timeout 30s >/dev/null 2>&1
work=$(mktemp -d)
NS=bench-scale-up-$$
cleanup() {
  [ -f "$work/operator.pid" ] && kill "$(cat "$work/operator.pid")" 2>/dev/null || true
  [ -f "$work/watch.pid" ] && kill "$(cat "$work/watch.pid")" 2>/dev/null || true
  kubectl delete namespace "$NS" --wait=false >/dev/null 2>&1 || true
  [ "$OWN_CLUSTER" = 1 ] && tests/cluster.sh down >/dev/null 2>&1
  rm -rf "$work"
}
trap cleanup EXIT
kubectl create namespace "$NS" >/dev/null 2>&1
kubectl apply -n "$NS" -f - >/dev/null 2>&1 <<EOF
apiVersion: quickube.com/v1alpha1
kind: ScalerConfig
metadata: {name: redis}
spec: {type: redis, config: {host: 127.0.0.1, port: "$redis_port"}}
EOF

now() { date +%s.%N; }

# Pod ADDED events, each stamped with the time this script saw it.
kubectl get pods -n "$NS" --watch-only -o 'custom-columns=QW:.metadata.labels.quickube\.com/qworker' --no-headers 2>/dev/null |
  while read -r qw; do echo "$(now) $qw"; done >"$work/events" &
echo $! >"$work/watch.pid"

trial() { # setting, n → seconds from push to pod
  local name="$1-$2" queue="bench-$1-$2-$$"
  kubectl apply -n "$NS" -f - >/dev/null 2>&1 <<EOF
apiVersion: quickube.com/v1alpha1
kind: QWorker
metadata: {name: $name}
spec:
  podSpec:
    containers: [{name: worker, image: busybox, command: [sleep, "3600"]}]
  scaleConfig: {scalerConfigRef: redis, queue: $queue, minReplicas: 0, maxReplicas: 1, scalingFactor: 1}
EOF
  # Wait until the operator has seen the QWorker (status written), so only the queue path is timed.
  for _ in $(seq 1 100); do
    [ -n "$(kubectl get qw -n "$NS" "$name" -o 'jsonpath={.status.observedGeneration}' 2>/dev/null)" ] && break
    sleep 0.1
  done
  # Land the push at a random phase of the poll cycle, as a real producer would.
  sleep "0.$((RANDOM % 1000))"
  local t0
  t0=$(now)
  redis-cli -p "$redis_port" LPUSH "$queue" task >/dev/null
  for _ in $(seq 1 300); do
    local seen
    seen=$(awk -v q="$name" '$2 == q { print $1; exit }' "$work/events")
    if [ -n "$seen" ]; then
      python3 -c "print(f'{$seen - $t0:.3f}')"
      kubectl delete qw -n "$NS" "$name" --wait=false >/dev/null 2>&1
      return
    fi
    sleep 0.05
  done
  echo "timeout"
}

run_setting() { # label, poll interval
  "$OPERATOR" --namespace "$NS" --leader-elect=false --metrics-bind-address 127.0.0.1:0 \
    --health-probe-bind-address 127.0.0.1:0 --poll-interval "$2" \
    >"$work/operator-$1.log" 2>&1 &
  echo $! >"$work/operator.pid"
  local n
  for n in $(seq 1 "$TRIALS"); do trial "$1" "$n"; done >"$work/$1.times"
  kill "$(cat "$work/operator.pid")"; wait "$(cat "$work/operator.pid")" 2>/dev/null || true
  rm -f "$work/operator.pid"
}

echo "scale-up reaction, $TRIALS trials each (push into an empty queue -> worker pod created)" >&2
run_setting qscaler 500ms
run_setting baseline 5s

python3 - "$work/qscaler.times" "$work/baseline.times" <<'EOF'
import statistics, sys
def load(path):
    vals = [l.strip() for l in open(path)]
    bad = [v for v in vals if v == "timeout"]
    if bad:
        sys.exit(f"{len(bad)} trial(s) in {path} timed out")
    return sorted(float(v) for v in vals)
ours, base = load(sys.argv[1]), load(sys.argv[2])
def row(name, v):
    p90 = v[min(len(v) - 1, int(0.9 * len(v)))]
    return f"| {name} | {statistics.median(v)*1000:.0f} ms | {p90*1000:.0f} ms | {max(v)*1000:.0f} ms |"
print("| setting | median | p90 | max |")
print("|---|---|---|---|")
print(row("qscaler-operator (default, 500 ms poll)", ours))
print(row("baseline: same operator polling every 5 s", base))
print(f"\nratio baseline/qscaler (median): {statistics.median(base)/statistics.median(ours):.1f}x faster")
EOF
