#!/usr/bin/env bash
# Redis topologies for the e2e tests, beside the single server of tests/cluster.sh, on loopback ports:
#   * a Redis Cluster of 3 primaries (no replicas; slots spread by `redis-cli --cluster create`);
#   * a primary + one replica watched by 3 sentinels (master name `qscaler`, quorum 2, down after 1 s).
# From Debian's redis-server / redis-sentinel (installed when missing).
#
#   tests/redis-topologies.sh up       install what is missing, start both, wait until settled
#   tests/redis-topologies.sh down     stop everything started by `up` (by pid) and remove the run state
#   tests/redis-topologies.sh status   say what runs
#   tests/redis-topologies.sh env      print `export ...` lines to eval (the tests read them)
#   tests/redis-topologies.sh revive   restart a stopped Sentinel data node as a replica of the current
#                                      primary (after a test killed the primary), and wait for it to sync
#
# Run state in $QSCALER_TOPOLOGIES_DIR (default /tmp/qscaler-topologies): <name>.port, <name>.pid,
# logs/<name>.log, data/<name>/.
set -euo pipefail

STATE=${QSCALER_TOPOLOGIES_DIR:-/tmp/qscaler-topologies}
MASTER_NAME=qscaler
LOG_TAG=topologies
log() { printf '[%s] %s\n' "$LOG_TAG" "$*" >&2; }
die() { printf '[%s] error: %s\n' "$LOG_TAG" "$*" >&2; exit 1; }

CLUSTER_NODES=(cluster-1 cluster-2 cluster-3)
SENTINEL_DATA=(sentinel-data-1 sentinel-data-2)
SENTINELS=(sentinel-1 sentinel-2 sentinel-3)

ensure_packages() {
  local missing=() p
  for p in redis-server redis-sentinel redis-tools python3; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  [ ${#missing[@]} = 0 ] && return 0
  [ "$(id -u)" = 0 ] || die "must run as root to install ${missing[*]}"
  log "installing Debian packages: ${missing[*]}"
  apt-get update -qq >/dev/null
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  # Debian's packages start their own system-wide service where systemd runs; ours are started below, on
  # other ports: the services the install just started are stopped again.
  if command -v systemctl >/dev/null && [ -d /run/systemd/system ]; then
    for p in "${missing[@]}"; do
      case $p in redis-server | redis-sentinel) systemctl disable --now "$p" >/dev/null 2>&1 || true ;; esac
    done
  fi
}

# A free loopback port whose +10000 (the cluster bus) is free too.
free_port() {
  python3 - <<'EOF'
import random, socket
def free(p):
    s = socket.socket()
    try:
        s.bind(("127.0.0.1", p)); return True
    except OSError:
        return False
    finally:
        s.close()
while True:
    # Below the kernel's ephemeral range (32768+), bus port included: outgoing connections cannot hold it.
    p = random.randint(20000, 22700)
    if free(p) and free(p + 10000):
        print(p); break
EOF
}

running() { kill -0 "$1" 2>/dev/null && ! grep -q '^State:[[:space:]]*Z' "/proc/$1/status" 2>/dev/null; }
alive() { [ -f "$STATE/$1.pid" ] && running "$(cat "$STATE/$1.pid")"; }
port_of() { cat "$STATE/$1.port"; }
cli() { local port=$1; shift; redis-cli -h 127.0.0.1 -p "$port" "$@"; }

wait_for() { # what, seconds, command...
  local what=$1 secs=$2 i
  shift 2
  for ((i = 0; i < secs * 10; i++)); do
    if "$@" >/dev/null 2>&1; then return 0; fi
    sleep 0.1
  done
  die "timed out waiting for $what"
}

start_bg() { # name, command...
  local name=$1
  shift
  setsid "$@" >"$STATE/logs/$name.log" 2>&1 &
  echo $! >"$STATE/$name.pid"
}

start_server() { # name, extra args...
  local name=$1 port
  shift
  port=$(port_of "$name")
  mkdir -p "$STATE/data/$name"
  start_bg "$name" redis-server --bind 127.0.0.1 --port "$port" --dir "$STATE/data/$name" \
    --save "" --appendonly no --daemonize no --protected-mode no "$@"
  wait_for "$name on port $port" 20 cli "$port" ping
}

sentinel_bin() {
  if command -v redis-sentinel >/dev/null; then echo redis-sentinel; else echo "redis-server --sentinel"; fi
}

up() {
  if alive cluster-1; then
    log "already up (state in $STATE)"
    return 0
  fi
  ensure_packages
  rm -rf "$STATE"
  mkdir -p "$STATE/logs" "$STATE/data"
  local n
  for n in "${CLUSTER_NODES[@]}" "${SENTINEL_DATA[@]}" "${SENTINELS[@]}"; do free_port >"$STATE/$n.port"; done

  local addrs=()
  for n in "${CLUSTER_NODES[@]}"; do
    start_server "$n" --cluster-enabled yes --cluster-config-file "$STATE/data/$n/nodes.conf" \
      --cluster-node-timeout 2000
    addrs+=("127.0.0.1:$(port_of "$n")")
  done
  log "creating the cluster of ${addrs[*]}"
  redis-cli --cluster create "${addrs[@]}" --cluster-yes >"$STATE/logs/cluster-create.log" 2>&1
  wait_for "cluster state ok" 30 cluster_ok

  local primary
  primary=$(port_of sentinel-data-1)
  start_server sentinel-data-1
  start_server sentinel-data-2 --replicaof 127.0.0.1 "$primary"
  for n in "${SENTINELS[@]}"; do
    cat >"$STATE/data/$n.conf" <<EOF
bind 127.0.0.1
port $(port_of "$n")
daemonize no
dir $STATE/data
sentinel monitor $MASTER_NAME 127.0.0.1 $primary 2
sentinel down-after-milliseconds $MASTER_NAME 1000
sentinel failover-timeout $MASTER_NAME 5000
sentinel parallel-syncs $MASTER_NAME 1
EOF
    # shellcheck disable=SC2046
    start_bg "$n" $(sentinel_bin) "$STATE/data/$n.conf"
  done
  wait_for "the sentinels to see the replica and each other" 30 sentinels_settled
  log "up: cluster ${addrs[*]}; sentinels $(sentinel_list) (master $MASTER_NAME)"
}

cluster_ok() {
  local n
  for n in "${CLUSTER_NODES[@]}"; do
    cli "$(port_of "$n")" cluster info | grep -q 'cluster_state:ok' || return 1
  done
}

sentinels_settled() {
  local n
  for n in "${SENTINELS[@]}"; do
    cli "$(port_of "$n")" sentinel master "$MASTER_NAME" | tr -d '\r' |
      awk 'p { print; exit } /^num-other-sentinels$/ { p = 1 }' | grep -qx 2 || return 1
    cli "$(port_of "$n")" sentinel replicas "$MASTER_NAME" | grep -q 'slave\|replica' || return 1
  done
}

sentinel_list() {
  local out=() n
  for n in "${SENTINELS[@]}"; do out+=("127.0.0.1:$(port_of "$n")"); done
  (IFS=,; echo "${out[*]}")
}

cluster_list() {
  local out=() n
  for n in "${CLUSTER_NODES[@]}"; do out+=("127.0.0.1:$(port_of "$n")"); done
  (IFS=,; echo "${out[*]}")
}

# The port the sentinels name as the primary now.
current_primary() {
  cli "$(port_of sentinel-1)" sentinel get-master-addr-by-name "$MASTER_NAME" | tail -n 1 | tr -d '\r'
}

revive() {
  local n primary
  primary=$(current_primary)
  for n in "${SENTINEL_DATA[@]}"; do
    alive "$n" && continue
    [ "$(port_of "$n")" = "$primary" ] && die "$n is the primary the sentinels name, and it is down"
    log "restarting $n as a replica of 127.0.0.1:$primary"
    start_server "$n" --replicaof 127.0.0.1 "$primary"
    wait_for "$n to sync" 30 replica_synced "$(port_of "$n")"
  done
  wait_for "the sentinels to see the replica" 30 sentinels_settled
}

replica_synced() { cli "$1" info replication | grep -q 'master_link_status:up'; }

down() {
  [ -d "$STATE" ] || return 0
  local f pid
  for f in "$STATE"/*.pid; do
    [ -f "$f" ] || continue
    pid=$(cat "$f")
    if running "$pid"; then kill "$pid" 2>/dev/null || true; fi
  done
  for f in "$STATE"/*.pid; do
    [ -f "$f" ] || continue
    pid=$(cat "$f")
    for _ in $(seq 50); do running "$pid" || break; sleep 0.1; done
    if running "$pid"; then kill -9 "$pid" 2>/dev/null || true; fi
  done
  rm -rf "$STATE"
  log "down"
}

status() {
  local n
  [ -d "$STATE" ] || { echo "not running"; return 0; }
  for n in "${CLUSTER_NODES[@]}" "${SENTINEL_DATA[@]}" "${SENTINELS[@]}"; do
    if alive "$n"; then echo "$n: running on 127.0.0.1:$(port_of "$n")"; else echo "$n: stopped"; fi
  done
}

env_lines() {
  [ -f "$STATE/cluster-1.port" ] || die "not up (state in $STATE)"
  echo "export QSCALER_TOPOLOGIES_DIR=$STATE"
  echo "export QSCALER_TEST_CLUSTER_NODES=$(cluster_list)"
  echo "export QSCALER_TEST_SENTINELS=$(sentinel_list)"
  echo "export QSCALER_TEST_SENTINEL_MASTER=$MASTER_NAME"
}

case "${1:-}" in
  up) up ;;
  down) down ;;
  status) status ;;
  env) env_lines ;;
  revive) revive ;;
  *) die "usage: $0 up|down|status|env|revive" ;;
esac
