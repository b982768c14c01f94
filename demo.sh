#!/usr/bin/env bash
# The local demo: a real control plane on this machine, QScaler installed with install.sh, and a queue of
# tasks that scales workers up and back down without interrupting one of them.
#
#   ./demo.sh            run it all, then tear the cluster down
#   ./demo.sh --keep     leave the cluster running at the end (tests/cluster.sh down to stop it)
#
# Run as root (the local cluster uses PID namespaces and cgroups). First run: ~10 min to build the control
# plane from Debian's source package (cached afterwards) plus the cargo build.
set -euo pipefail
cd "$(dirname "$0")"
KEEP=0
[ "${1:-}" = "--keep" ] && KEEP=1
NS=demo
QUEUE=demo-tasks
TASKS=${DEMO_TASKS:-30}

step() { printf '\n\033[1m==> %s\033[0m\n' "$*"; }

step "building the binaries"
cargo build --workspace --bins -q

step "bringing up the local cluster (tests/cluster.sh up)"
tests/cluster.sh up
eval "$(tests/cluster.sh env)"
[ "$KEEP" = 1 ] || trap 'step "tearing down"; tests/cluster.sh down' EXIT
export PATH="$PWD/target/debug:$PATH" # kubectl finds the kubectl-qworker plugin here
redis_port=${REDIS_URL##*:}
redis_port=${redis_port%/}

step "installing QScaler with install.sh (the operator runs as a pod under the stand-in kubelet)"
./install.sh --image qscaler/operator --tag dev --timeout 180

step "a namespace for workers, with the RBAC they need"
kubectl create namespace "$NS" --dry-run=client -o yaml | kubectl apply -f - >/dev/null
./install.sh --worker-rbac "$NS"

step "a Redis user for the workers, its password in a Secret"
password=$(head -c 12 /dev/urandom | od -An -tx1 | tr -d ' \n')
redis-cli -p "$redis_port" ACL SETUSER demo on ">$password" '~*' '+@all' >/dev/null
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
    host: 127.0.0.1
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
      image: qscaler/qsupervisor:dev
      # Task mode: qsupervisor takes one task at a time from the queue and runs this with it on stdin.
      args: ["--task", "--", "sh", "-c", "read -r task; echo \"working on \$task\"; sleep 3"]
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
  echo "--- $(date +%T)  queue: $(redis-cli -p "$redis_port" LLEN "$QUEUE") tasks"
  kubectl -n "$NS" get qworkers 2>/dev/null
  kubectl qworker top -n "$NS" 2>/dev/null || true
}

step "pushing $TASKS tasks"
for i in $(seq 1 "$TASKS"); do redis-cli -p "$redis_port" LPUSH "$QUEUE" "task-$i" >/dev/null; done

step "watching the workers scale up, drain the queue, and scale back down"
deadline=$((SECONDS + 240))
scaled_up=0
while [ $SECONDS -lt $deadline ]; do
  show
  current=$(kubectl -n "$NS" get qworker demo-worker -o jsonpath='{.status.currentReplicas}' 2>/dev/null || echo 0)
  [ "${current:-0}" -gt 0 ] && scaled_up=1
  if [ "$scaled_up" = 1 ] && [ "${current:-0}" = 0 ] && [ "$(redis-cli -p "$redis_port" LLEN "$QUEUE")" = 0 ]; then
    break
  fi
  sleep 2
done
show

step "what happened"
kubectl -n "$NS" get events --sort-by=.lastTimestamp 2>/dev/null | tail -n 20 || true
dead=$(redis-cli -p "$redis_port" LLEN "$QUEUE:dead")
echo "queue left: $(redis-cli -p "$redis_port" LLEN "$QUEUE"), dead-lettered: $dead"
if [ "$scaled_up" = 1 ] && [ "${current:-0}" = 0 ]; then
  echo "demo: scaled up, worked off $TASKS tasks, scaled back to 0"
else
  echo "demo: did not finish within 240 s (see the output above)" >&2
  exit 1
fi
