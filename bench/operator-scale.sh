#!/usr/bin/env bash
# qscaler-operator at scale: time to converge, CPU, memory and reconcile latency p50/p99 with many QWorkers
# and pods (no-op `sleep` pods run by the stand-in kubelet), against a baseline 10x smaller measured in the
# same run by the same release binary. Prints a markdown table and the ratios (large / baseline).
#
#   bench/operator-scale.sh [QWORKERS [PODS_PER_QWORKER [BASELINE_QWORKERS]]]    (default 200 5 20; root)
#
# Settings (env): WINDOW (s, churn window, default 30), IDLE_WINDOW (s, default 15),
# CONVERGE_TIMEOUT (s per setting, default 900), QSCALER_CLUSTER_DIR (default /tmp/qc-bench).
#
# Per setting: a fresh namespace, one ScalerConfig on the cluster's Redis, QWORKERS QWorkers (own queue,
# minReplicas = maxReplicas = PODS_PER_QWORKER, busybox `sleep 100000`); then the operator is started and
# timed until every pod exists and every QWorker's status says currentReplicas = PODS_PER_QWORKER (and, in
# parentheses, until the stand-in kubelet reports every pod Running). After that, with every pod Running:
# an idle window (no input: CPU only), then a churn window in which every queue's depth flips
# between 0 and 1 each second (LPUSH/LPOP), so each QWorker's status is refreshed, i.e. reconciled, every
# few seconds: CPU, and reconcile p50/p99 from the `qscaler_reconcile_duration_seconds{controller="qworker"}`
# bucket counts scraped before and after the window (interpolated inside a bucket, as Prometheus'
# histogram_quantile does; the p99's bucket is shown beside it). RSS is read at the end; peak RSS is VmHWM
# over the whole run.
#
# The API server's bill (issue 17 item 5): the kube-apiserver's own /metrics (`kubectl get --raw /metrics`) is
# read before and after each window: writes (POST, PUT, PATCH, DELETE, APPLY in apiserver_request_total, dry
# runs left out) and watch events sent (apiserver_watch_events_total), per QWorker per minute. The metrics
# carry no client or user agent, so writes are attributed by resource: qworkers (status, finalizers), pod
# creates and deletes, and events are the operator's; pod PATCHes without a subresource are annotations (the
# operator's drain, or qsupervisors' activity and usage: none here, the pods run plain `sleep`); pods/status,
# nodes, leases and the rest are the kubelet's and the control plane's. With the cluster of its own that this
# bench brings up (QSCALER_CLUSTER_DIR default), nothing else writes to that API server.
#
# Uses the cluster in QSCALER_CLUSTER_DIR if it answers, else brings one up and tears it down at the end.
set -euo pipefail
cd "$(dirname "$0")/.."
BIG_N=${1:-200}
PODS=${2:-5}
BASE_N=${3:-$((BIG_N / 10))}
WINDOW=${WINDOW:-30}
IDLE_WINDOW=${IDLE_WINDOW:-15}
CONVERGE_TIMEOUT=${CONVERGE_TIMEOUT:-900}
export QSCALER_CLUSTER_DIR=${QSCALER_CLUSTER_DIR:-/tmp/qc-bench}
t_start=$SECONDS

log() { printf '[bench] %s\n' "$*" >&2; }

. bench/lib.sh
work=$(mktemp -d)
OPERATOR_PID=""
CHURN_PID=""
NAMESPACES=()

stop_pid() { # pid: TERM, wait up to 20 s, then KILL
  local pid=$1 i
  kill "$pid" 2>/dev/null || return 0
  for i in $(seq 1 200); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  [ "$i" = 200 ] && kill -KILL "$pid" 2>/dev/null
  wait "$pid" 2>/dev/null || true
}

cleanup() {
  local ns
  [ -n "$CHURN_PID" ] && stop_pid "$CHURN_PID"
  [ -n "$OPERATOR_PID" ] && stop_pid "$OPERATOR_PID"
  if [ "$OWN_CLUSTER" = 1 ]; then
    tests/cluster.sh down >/dev/null 2>&1 || true
  else
    for ns in "${NAMESPACES[@]}"; do
      # No operator runs now to release the finalizers.
      kubectl get qworkers,scalerconfigs -n "$ns" -o name 2>/dev/null | while read -r obj; do
        kubectl patch -n "$ns" "$obj" --type=merge -p '{"metadata":{"finalizers":null}}' >/dev/null 2>&1 || true
      done
      kubectl delete namespace "$ns" --wait=false >/dev/null 2>&1 || true
    done
  fi
  rm -rf "$work"
}
trap cleanup EXIT

# --- cluster and operator ------------------------------------------------------------------------

stand_in_cluster "$QSCALER_CLUSTER_DIR"
redis_port=${REDIS_URL##*:}
redis_port=${redis_port%/}

log "building qscaler-operator (release)"
timeout 1800 cargo build -q --release -p qscaler-operator
OPERATOR=${CARGO_TARGET_DIR:-target}/release/qscaler-operator

kubectl apply --server-side -f crds/qworker.yaml -f crds/scalerconfig.yaml >/dev/null 2>&1
kubectl wait --for condition=established crd/qworkers.quickube.com crd/scalerconfigs.quickube.com \
  --timeout 60s >/dev/null

CLK_TCK=$(getconf CLK_TCK)
cpu_ticks() { # pid → utime + stime in clock ticks (fields 14, 15 of /proc/pid/stat, after the comm)
  local stat
  stat=$(cat "/proc/$1/stat")
  stat=${stat##*) }
  # After "comm) ", field 3 (state) is the first word: utime and stime are words 12 and 13.
  awk '{ print $12 + $13 }' <<<"$stat"
}
status_kib() { awk -v k="$2:" '$1 == k { print $2 }' "/proc/$1/status"; } # pid, VmRSS|VmHWM
free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
scrape() { curl -sf --max-time 20 "http://127.0.0.1:$1/metrics"; }
# The kube-apiserver's request and watch-event counters.
api_scrape() { kubectl get --raw /metrics | grep -E '^apiserver_(request|watch_events)_total\{' >"$1"; }

# --- one setting ---------------------------------------------------------------------------------

# Flip every queue's depth between 1 and 0 once a second, one redis-cli round trip per flip.
churn() { # queue file
  local push=1
  while true; do
    if [ "$push" = 1 ]; then
      awk '{ print "LPUSH", $1, "task" }' "$1" | redis-cli -p "$redis_port" >/dev/null
      push=0
    else
      awk '{ print "LPOP", $1 }' "$1" | redis-cli -p "$redis_port" >/dev/null
      push=1
    fi
    sleep 1
  done
}

write_objects() { # namespace, label, n → manifests on stdout
  local ns=$1 label=$2 n=$3 i
  cat <<EOF
apiVersion: quickube.com/v1alpha1
kind: ScalerConfig
metadata: {name: redis, namespace: $ns}
spec: {type: redis, config: {host: 127.0.0.1, port: "$redis_port"}}
EOF
  for i in $(seq 1 "$n"); do
    cat <<EOF
---
apiVersion: quickube.com/v1alpha1
kind: QWorker
metadata: {name: w$i, namespace: $ns}
spec:
  podSpec:
    terminationGracePeriodSeconds: 1
    containers: [{name: worker, image: busybox, command: [sleep, "100000"]}]
  scaleConfig:
    scalerConfigRef: redis
    queue: bench-$label-$$-q$i
    minReplicas: $PODS
    maxReplicas: $PODS
    scalingFactor: 1
EOF
  done
}

wait_namespace_gone() { # namespace, timeout s
  local i
  kubectl delete namespace "$1" --wait=false >/dev/null 2>&1 || true
  for i in $(seq 1 "$2"); do
    kubectl get namespace "$1" >/dev/null 2>&1 || return 0
    sleep 1
  done
  log "namespace $1 still there after $2 s"
  return 1
}

run_setting() { # label, QWorkers, first|last → one result line in $work/results
  local label=$1 n=$2 ns="bench-opscale-$1-$$" want port t0 now i ready
  local t_pods="" t_conv="" ticks_conv t_setting
  want=$((n * PODS))
  NAMESPACES+=("$ns")
  kubectl create namespace "$ns" >/dev/null
  # The namespace's default ServiceAccount must exist before pods can be created in it.
  for i in $(seq 1 60); do
    kubectl get serviceaccount default -n "$ns" >/dev/null 2>&1 && break
    sleep 1
  done
  write_objects "$ns" "$label" "$n" >"$work/$label.yaml"
  seq 1 "$n" | sed "s/^/bench-$label-$$-q/" >"$work/$label.queues"
  kubectl apply -f "$work/$label.yaml" >/dev/null
  log "$label: $n QWorkers x $PODS pods in $ns; starting the operator"

  port=$(free_port)
  t_setting=$SECONDS
  t0=$(date +%s.%N)
  "$OPERATOR" --namespace "$ns" --leader-elect=false --metrics-bind-address "127.0.0.1:$port" \
    --health-probe-bind-address 127.0.0.1:0 --log-format json \
    >"$work/operator-$label.log" 2>&1 &
  OPERATOR_PID=$!

  # Converged: all pods exist, and every QWorker's status says currentReplicas = PODS. Polled through the
  # operator's own metrics (pods created, current replicas), which costs the API server nothing; the
  # status is read with kubectl only once the metrics say so, and the pods are counted once at the end.
  local created=0 at_m=0 last_status=0
  i=0
  while [ $((SECONDS - t_setting)) -lt "$CONVERGE_TIMEOUT" ]; do
    i=$((i + 1))
    kill -0 "$OPERATOR_PID" 2>/dev/null || { tail -20 "$work/operator-$label.log" >&2; log "operator died"; return 1; }
    now=$(date +%s.%N)
    if scrape "$port" >"$work/poll.metrics" 2>/dev/null; then
      created=$(awk '/^qscaler_pods_created_total/ { s += $NF } END { print s + 0 }' "$work/poll.metrics")
      at_m=$(awk -v m="$PODS" '/^qscaler_current_replicas\{/ && $NF == m { c++ } END { print c + 0 }' "$work/poll.metrics")
    fi
    if [ -z "$t_pods" ] && [ "$created" -ge "$want" ]; then
      t_pods=$(python3 -c "print(f'{$now - $t0:.2f}')")
    fi
    if [ -n "$t_pods" ] && [ "$at_m" -ge "$n" ] && [ $((SECONDS - last_status)) -ge 1 ]; then
      last_status=$SECONDS
      ready=$(kubectl get qworkers -n "$ns" -o jsonpath='{range .items[*]}{.status.currentReplicas}{"\n"}{end}' |
        grep -cx "$PODS" || true)
      if [ "$ready" = "$n" ]; then
        t_conv=$(python3 -c "print(f'{$now - $t0:.2f}')")
        break
      fi
    fi
    [ $((i % 50)) = 0 ] && log "$label: $created/$want pods created, $at_m/$n QWorkers at $PODS"
    sleep 0.2
  done
  if [ -z "$t_conv" ]; then
    log "$label: not converged within $CONVERGE_TIMEOUT s ($created/$want pods created, $at_m/$n QWorkers at $PODS)"
    return 1
  fi
  ticks_conv=$(cpu_ticks "$OPERATOR_PID")
  local running pods t_run=""
  pods=$(kubectl get pods -n "$ns" -o name | wc -l)
  log "$label: converged in $t_conv s (pods created in $t_pods s; $pods pods)"
  if [ "$pods" != "$want" ]; then
    log "$label: $pods pods exist, expected $want"
    return 1
  fi
  # The windows below start once the stand-in kubelet runs every pod, so no pod change falls in them.
  while [ $((SECONDS - t_setting)) -lt "$CONVERGE_TIMEOUT" ]; do
    now=$(date +%s.%N)
    running=$(kubectl get pods -n "$ns" --field-selector status.phase=Running -o name | wc -l || true)
    if [ "$running" = "$want" ]; then
      t_run=$(python3 -c "print(f'{$now - $t0:.2f}')")
      break
    fi
    sleep 1
  done
  if [ -z "$t_run" ]; then
    log "$label: only ${running:-?}/$want pods Running after $CONVERGE_TIMEOUT s"
    return 1
  fi
  log "$label: all pods Running at $t_run s"

  # Idle window: nothing changes, the operator only polls.
  sleep 5
  local i0 i1 iw0 iw1
  api_scrape "$work/$label.api0"
  i0=$(cpu_ticks "$OPERATOR_PID")
  iw0=$(date +%s.%N)
  sleep "$IDLE_WINDOW"
  i1=$(cpu_ticks "$OPERATOR_PID")
  iw1=$(date +%s.%N)
  api_scrape "$work/$label.api1"

  # Churn window: every queue's depth flips each second, so every QWorker is reconciled every few seconds.
  local c0 c1 w0 w1
  scrape "$port" >"$work/$label.metrics0"
  c0=$(cpu_ticks "$OPERATOR_PID")
  w0=$(date +%s.%N)
  churn "$work/$label.queues" &
  CHURN_PID=$!
  sleep "$WINDOW"
  stop_pid "$CHURN_PID"
  CHURN_PID=""
  c1=$(cpu_ticks "$OPERATOR_PID")
  w1=$(date +%s.%N)
  api_scrape "$work/$label.api2"
  scrape "$port" >"$work/$label.metrics1"
  local rss hwm
  rss=$(status_kib "$OPERATOR_PID" VmRSS)
  hwm=$(status_kib "$OPERATOR_PID" VmHWM)
  awk '{ print "DEL", $1 }' "$work/$label.queues" | redis-cli -p "$redis_port" >/dev/null

  python3 - "$work/$label.metrics0" "$work/$label.metrics1" >"$work/$label.latency" <<'EOF'
import re, sys
def buckets(path):
    out = {}
    for line in open(path):
        m = re.match(r'qscaler_reconcile_duration_seconds_bucket\{(.*)\} (\S+)$', line.strip())
        if not m:
            continue
        labels = dict(re.findall(r'(\w+)="([^"]*)"', m.group(1)))
        if labels.get("controller") != "qworker":
            continue
        le = float("inf") if labels["le"] == "+Inf" else float(labels["le"])
        out[le] = out.get(le, 0) + float(m.group(2))
    return out
a, b = buckets(sys.argv[1]), buckets(sys.argv[2])
diff = {le: b[le] - a.get(le, 0) for le in b}
scope = "window"
if diff.get(float("inf"), 0) < 20:  # too few reconciles in the window: use the whole run
    diff, scope = b, "run"
les = sorted(diff)
total = diff[les[-1]]
def q(p):
    rank, prev_le, prev_c = p * total, 0.0, 0.0
    for le in les:
        c = diff[le]
        if c >= rank:
            if le == float("inf"):
                return prev_le, (prev_le, le)
            return prev_le + (le - prev_le) * (rank - prev_c) / max(c - prev_c, 1e-9), (prev_le, le)
        prev_le, prev_c = le, c
    return prev_le, (prev_le, float("inf"))
(p50, _), (p99, (lo, hi)) = q(0.5), q(0.99)
bucket = f"{lo * 1000:g}-{hi * 1000:g}ms" if hi != float("inf") else f">{lo * 1000:g}ms"
print(f"{p50 * 1000:.1f} {p99 * 1000:.1f} {int(total)} {scope} {bucket}")
EOF
  local p50 p99 count scope bucket
  read -r p50 p99 count scope bucket <"$work/$label.latency"
  # API writes and watch events per QWorker per minute, idle and churn.
  python3 - "$work/$label.api0" "$work/$label.api1" "$work/$label.api2" "$n" \
    "$(python3 -c "print($iw1 - $iw0)")" "$(python3 -c "print($w1 - $w0)")" >"$work/$label.api" <<'EOF'
import json, re, sys
from collections import Counter
WRITES = {"POST", "PUT", "PATCH", "DELETE", "APPLY"}
def read(path):
    writes, watch = Counter(), Counter()
    for line in open(path):
        m = re.match(r'(apiserver_\w+)\{(.*)\} (\S+)$', line.strip())
        if not m:
            continue
        labels = dict(re.findall(r'(\w+)="([^"]*)"', m.group(2)))
        v = float(m.group(3))
        if m.group(1) == "apiserver_request_total":
            if labels.get("verb") in WRITES and not labels.get("dry_run"):
                sub = labels.get("subresource", "")
                res = labels.get("resource", "") + ("/" + sub if sub else "")
                writes[(labels["verb"], res)] += v
        elif m.group(1) == "apiserver_watch_events_total":
            watch[labels.get("kind", "")] += v
    return writes, watch
def who(verb, res):
    if (res.startswith("qworkers") and verb in ("PATCH", "PUT", "APPLY")) or (res == "events" and verb != "DELETE") \
            or (res == "pods" and verb in ("POST", "DELETE")):
        return "operator"
    if res == "pods" and verb in ("PATCH", "APPLY", "PUT"):
        return "annotations"
    return "other"
snaps = [read(p) for p in sys.argv[1:4]]
n, secs = int(sys.argv[4]), {"idle": float(sys.argv[5]), "churn": float(sys.argv[6])}
out = {}
for name, (a, b) in (("idle", (snaps[0], snaps[1])), ("churn", (snaps[1], snaps[2]))):
    per = 60.0 / secs[name] / n  # per QWorker per minute
    w = {k: (b[0][k] - a[0].get(k, 0)) * per for k in b[0]}
    e = {k: (b[1][k] - a[1].get(k, 0)) * per for k in b[1]}
    out[name] = {
        "writes": {f"{v} {r}": x for (v, r), x in w.items() if x > 0},
        "by": {g: sum(x for (v, r), x in w.items() if who(v, r) == g) for g in ("operator", "annotations", "other")},
        "watch": {k: x for k, x in e.items() if x > 0},
    }
print(json.dumps(out))
EOF
  local errors load
  load=$(cut -d' ' -f1 /proc/loadavg)
  errors=$(awk '/^qscaler_reconcile_errors_total/ { s += $NF } END { print s + 0 }' "$work/$label.metrics1")
  if [ "$errors" != 0 ]; then
    log "$label: $errors reconcile errors; by kind:"
    grep '^qscaler_reconcile_errors_total' "$work/$label.metrics1" >&2 || true
    grep -i '"level":"\(error\|warn\)' "$work/operator-$label.log" | head -3 >&2 || true
  fi
  python3 - <<EOF >>"$work/results"
tck = $CLK_TCK
print("$label", $n, $want, "$t_pods", "$t_conv", f"{$ticks_conv / tck:.2f}",
      f"{($i1 - $i0) / tck / $IDLE_WINDOW:.4f}", f"{($c1 - $c0) / tck / ($w1 - $w0):.4f}",
      f"{$rss / 1024:.1f}", f"{$hwm / 1024:.1f}", "$p50", "$p99", "$count", "$scope", "$t_run", $errors, $load,
      "$bucket")
EOF
  if [ "$3" = last ] && [ "$OWN_CLUSTER" = 1 ]; then
    log "$label: done; the cluster teardown removes $ns"
  else
    # While the operator runs: the QWorkers' and ScalerConfig's finalizers need it.
    log "$label: done; deleting $ns (waiting for its pods to go)"
    wait_namespace_gone "$ns" 600
  fi
  stop_pid "$OPERATOR_PID"
  OPERATOR_PID=""
}

log "baseline: $BASE_N QWorkers x $PODS pods; large: $BIG_N QWorkers x $PODS pods"
: >"$work/results"
run_setting baseline "$BASE_N" first
run_setting large "$BIG_N" last

python3 - "$work/results" "$WINDOW" "$IDLE_WINDOW" "$work" <<'EOF'
import json, os, sys
rows = [l.split() for l in open(sys.argv[1])]
window, idle = sys.argv[2], sys.argv[3]
api = {row[0]: json.load(open(os.path.join(sys.argv[4], row[0] + ".api"))) for row in rows}
def bill(label):
    a = api[label]
    w = lambda win: sum(a[win]["by"].values())
    return (f"{w('idle'):.1f} ({a['idle']['by']['operator']:.1f}) / {w('churn'):.1f} ({a['churn']['by']['operator']:.1f})")
def watch(label):
    a = api[label]
    return f"{sum(a['idle']['watch'].values()):.1f} / {sum(a['churn']['watch'].values()):.1f}"
print("| setting | QWorkers | pods | pods created | converged (all Running) | CPU to converge | CPU idle | CPU churn "
      "| RSS / peak RSS | reconciles (errors) | CPU per reconcile | reconcile p50 / p99 (p99's bucket) "
      "| API writes /QWorker/min idle / churn (operator's) | watch events /QWorker/min idle / churn |")
print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
def per_reconcile(row):
    # Operator CPU over the churn window divided by the reconciles in it: its own cost per reconcile,
    # apart from the time a reconcile waits for the API server (which the latency includes).
    count = float(row[12])
    return float(row[7]) * float(window) / count * 1000 if count > 0 else 0.0
for row in rows:
    (label, n, pods, t_pods, t_conv, cpu_conv, idle_c, churn_c, rss, hwm, p50, p99, count, scope, t_run,
     errors, load, bucket) = row
    print(f"| {label} | {n} | {pods} | {t_pods} s | {t_conv} s ({t_run} s) | {cpu_conv} CPU-s "
          f"| {float(idle_c):.4f} cores | {float(churn_c):.4f} cores | {rss} / {hwm} MiB "
          f"| {count} in {scope} ({errors}) | {per_reconcile(row):.2f} ms "
          f"| {p50} / {p99} ms ({bucket}) | {bill(label)} | {watch(label)} |")
b, l = rows[0], rows[1]
def r(i):
    x, y = float(l[i]), float(b[i])
    return f"{x / y:.1f}x" if y > 0 else "n/a"
print(f"\nratios large/baseline ({int(l[1]) // int(b[1])}x the QWorkers and pods): converge {r(4)}, "
      f"CPU to converge {r(5)}, CPU idle {r(6)}, CPU churn {r(7)}, RSS {r(8)}, peak RSS {r(9)}, "
      f"CPU per reconcile {per_reconcile(l) / per_reconcile(b):.1f}x, reconcile p50 {r(10)}, p99 {r(11)}")
print(f"\nCPU idle: {idle} s with no input; CPU churn and reconcile latency: {window} s in which every queue's "
      "depth flips 0/1 each second (each QWorker's status is refreshed at most every 3 s).")
print("1-min load average at the end of each churn window (the whole machine): "
      + ", ".join(f"{row[0]} {row[16]}" for row in rows) + f" ({os.cpu_count()} cores)")
# The bill in detail: every write kind and watched kind, per QWorker per minute.
cols = [(row[0], win) for row in rows for win in ("idle", "churn")]
print("\nAPI server's bill per QWorker per minute (kube-apiserver /metrics; writes by verb and resource, "
      "then watch events sent, by kind):\n")
print("| | " + " | ".join(f"{l} {w}" for l, w in cols) + " |")
print("|---|" + "---|" * len(cols))
def line(name, get):
    vals = [get(l, w) for l, w in cols]
    if any(v > 0 for v in vals):
        print(f"| {name} | " + " | ".join(f"{v:.2f}" for v in vals) + " |")
for k in sorted({k for l, w in cols for k in api[l][w]["writes"]}):
    line(k, lambda l, w: api[l][w]["writes"].get(k, 0.0))
for g in ("operator", "annotations", "other"):
    line(f"**writes: {g}**", lambda l, w: api[l][w]["by"][g])
for k in sorted({k for l, w in cols for k in api[l][w]["watch"]}):
    line(f"watch events: {k}", lambda l, w: api[l][w]["watch"].get(k, 0.0))
EOF
log "wall time $((SECONDS - t_start)) s"
