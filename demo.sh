#!/usr/bin/env bash
# The local demo: a real Kubernetes node on this machine (kubelet + Docker, in a network namespace of its own),
# QScaler's images built FROM scratch, QScaler installed with install.sh, and a queue of tasks that scales
# real worker containers up and back down without interrupting one of them.
#
#   ./demo.sh               run it all on the real node, then tear it down
#   ./demo.sh --keep        leave the cluster running at the end (tests/node.sh down to stop it)
#   ./demo.sh --stand-in    the same on the stand-in kubelet (processes instead of containers; faster)
#
# Run as root. First run on a fresh machine: ~15 min to build Kubernetes from Debian's source package (cached
# afterwards) plus the cargo builds.
set -euo pipefail
cd "$(dirname "$0")"
KEEP=0
MODE=real
for a in "$@"; do
  case "$a" in
    --keep) KEEP=1 ;;
    --stand-in) MODE=stand-in ;;
    *) echo "usage: $0 [--keep] [--stand-in]" >&2; exit 2 ;;
  esac
done
NS=demo
QUEUE=demo-tasks
TASKS=${DEMO_TASKS:-30}
TAG=dev

bold() { if [ -t 1 ]; then printf '\033[1m%s\033[0m' "$*"; else printf '%s' "$*"; fi; }
step() { printf '\n==> %s\n' "$(bold "$*")"; }

step "building the binaries"
cargo build --workspace --bins -q
export PATH="${CARGO_TARGET_DIR:-$PWD/target}/debug:$PATH" # kubectl finds the kubectl-qworker plugin here

if [ "$MODE" = real ]; then
  CLUSTER=tests/node.sh
  step "bringing up the real node (tests/node.sh up)"
else
  CLUSTER=tests/cluster.sh
  step "bringing up the local cluster with the stand-in kubelet (tests/cluster.sh up)"
fi
$CLUSTER up
eval "$($CLUSTER env)"
[ "$KEEP" = 1 ] || trap 'step "tearing down"; $CLUSTER down' EXIT
redis_host=${REDIS_URL#redis://}
redis_host=${redis_host%/}
redis_port=${redis_host##*:}
redis_host=${redis_host%:*}
rcli() { redis-cli -h "$redis_host" -p "$redis_port" "$@"; }

if [ "$MODE" = real ]; then
  step "building the images FROM scratch into the node's Docker (docker/build.sh --tag $TAG)"
  docker/build.sh --tag "$TAG"
  WORKER_IMAGE=qscaler/worker:$TAG
else
  WORKER_IMAGE=qscaler/qsupervisor:$TAG # the stand-in maps it to the local qsupervisor binary
fi

step "installing QScaler with install.sh (the operator runs as a pod)"
./install.sh --image qscaler/operator --tag "$TAG" --timeout 180

step "a namespace for workers, with the RBAC they need"
kubectl create namespace "$NS" --dry-run=client -o yaml | kubectl apply -f - >/dev/null
./install.sh --worker-rbac "$NS"

step "a Redis user for the workers, its password in a Secret"
password=$(head -c 12 /dev/urandom | od -An -tx1 | tr -d ' \n')
rcli ACL SETUSER demo on ">$password" '~*' '+@all' >/dev/null
kubectl -n "$NS" create secret generic redis --from-literal=password="$password" --dry-run=client -o yaml |
  kubectl apply -f - >/dev/null

step "a ScalerConfig and a QWorker: one worker per 5 queued tasks, at most 4"
kubectl apply -f - <<EOF
apiVersion: quickube.com/v1alpha1
kind: ScalerConfig
metadata:
  name: redis
  namespace: $NS
spec:
  type: redis
  config:
    host: $redis_host
    port: "$redis_port"
    username: demo
    password:
      valueFrom:
        secretKeyRef: {name: redis, key: password}
---
apiVersion: quickube.com/v1alpha1
kind: QWorker
metadata:
  name: demo-worker
  namespace: $NS
spec:
  podSpec:
    serviceAccountName: qscaler-worker
    containers:
    - name: worker
      image: $WORKER_IMAGE
      # Task mode: qsupervisor takes one task at a time from the queue and runs this with it on stdin.
      args: ["--task", "--", "sh", "-c", "read -r task; echo \"working on \$task\"; sleep 3; echo \"done with \$task\""]
      resources:
        requests: {cpu: 50m, memory: 32Mi}
  scaleConfig:
    scalerConfigRef: redis
    queue: $QUEUE
    minReplicas: 0
    maxReplicas: 4
    scalingFactor: 0.2
    scaleDownStabilizationSeconds: 5
EOF

show() {
  echo "--- $(date +%T)  queue: $(rcli LLEN "$QUEUE") tasks"
  kubectl -n "$NS" get qworkers 2>/dev/null
  kubectl qworker top -n "$NS" 2>/dev/null || true
}

# A picture of the whole run: kubectl qworker timeline records in the background until told to stop
# (SIGTERM), at most 8 minutes.
OUT=${DEMO_OUT:-/tmp/qscaler-demo}
mkdir -p "$OUT"
step "recording a timeline of the run in the background (kubectl qworker timeline)"
kubectl qworker timeline demo-worker -n "$NS" --for 8m -o "$OUT/timeline.svg" \
  --save-samples "$OUT/timeline.json" >"$OUT/timeline.log" 2>&1 &
timeline_pid=$!
# The operator announces a scale (an Event: a mark on the timeline) once it has a status to scale from.
for _ in $(seq 1 60); do
  [ -n "$(kubectl -n "$NS" get qworker demo-worker -o jsonpath='{.status.queueDepth}' 2>/dev/null)" ] && break
  sleep 1
done

step "pushing $TASKS tasks"
for i in $(seq 1 "$TASKS"); do rcli LPUSH "$QUEUE" "task-$i" >/dev/null; done

step "watching the workers scale up, drain the queue, and scale back down"
# On a terminal a live view (kubectl qworker top --watch redraws in place until told to stop);
# piped (CI), the tables once per pass.
live_pid=""
if [ -t 1 ]; then
  kubectl qworker top -n "$NS" --watch --interval 1s 2>/dev/null &
  live_pid=$!
fi
deadline=$((SECONDS + 300))
scaled_up=0
last_worker=""
last_log=""
while [ $SECONDS -lt $deadline ]; do
  [ -n "$live_pid" ] || show
  # Keep the log of a worker while it exists: workers are deleted once they have exited.
  running=$(kubectl -n "$NS" get pods -l quickube.com/qworker=demo-worker \
    -o jsonpath='{.items[?(@.status.phase=="Running")].metadata.name}' 2>/dev/null || true)
  pod=${running%% *}
  if [ -n "$pod" ]; then
    log=$(kubectl -n "$NS" logs "$pod" -c worker 2>/dev/null || true)
    [ -z "$log" ] || { last_worker=$pod; last_log=$log; }
  fi
  current=$(kubectl -n "$NS" get qworker demo-worker -o jsonpath='{.status.currentReplicas}' 2>/dev/null || echo 0)
  [ "${current:-0}" -gt 0 ] && scaled_up=1
  if [ "$scaled_up" = 1 ] && [ "${current:-0}" = 0 ] && [ "$(rcli LLEN "$QUEUE")" = 0 ]; then
    break
  fi
  sleep 2
done
if [ -n "$live_pid" ]; then
  kill -TERM "$live_pid" 2>/dev/null || true
  wait "$live_pid" 2>/dev/null || true
fi
show

step "what happened"
kubectl -n "$NS" get events --sort-by=.lastTimestamp 2>/dev/null | tail -n 20 || true
if [ -n "$last_worker" ]; then
  step "kubectl logs $last_worker (the last worker seen running)"
  printf '%s\n' "$last_log" | tail -n 25
fi
step "the timeline of the run"
kill -TERM "$timeline_pid" 2>/dev/null || true
wait "$timeline_pid" || echo "kubectl qworker timeline failed, see $OUT/timeline.log" >&2
tail -n 2 "$OUT/timeline.log"
kubectl qworker timeline --from-samples "$OUT/timeline.json" -o "$OUT/timeline.png" ||
  echo "(no PNG; the SVG needs no fonts)" >&2
echo "timeline: $OUT/timeline.svg ($OUT/timeline.png; samples in $OUT/timeline.json)"

dead=$(rcli LLEN "{$QUEUE}:dead")
echo "queue left: $(rcli LLEN "$QUEUE"), dead-lettered: $dead"
if [ "$scaled_up" = 1 ] && [ "${current:-0}" = 0 ]; then
  echo "demo: scaled up, worked off $TASKS tasks, scaled back to 0"
else
  echo "demo: did not finish within 300 s (see the output above)" >&2
  exit 1
fi
