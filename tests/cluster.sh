#!/usr/bin/env bash
# A real local Kubernetes control plane for the e2e tests:
# etcd + kube-apiserver + kube-controller-manager 1.20.2 (built once from Debian's source package),
# redis-server, and the stand-in kubelet from this workspace.
#
#   tests/cluster.sh up       install what is missing, build once, start everything, wait until ready
#   tests/cluster.sh down     stop everything started by `up` (by pid) and remove the run state
#   tests/cluster.sh status   say what runs
#   tests/cluster.sh env      print `export KUBECONFIG=... REDIS_URL=...` lines to eval
#   tests/cluster.sh build    only install packages and build/cache the control-plane binaries
#   tests/cluster.sh restart-apiserver   stop and start the kube-apiserver (etcd keeps the state)
#
# Run state in $QSCALER_CLUSTER_DIR: kubeconfig, pki/, logs/<component>.log, <component>.pid, and the
# stand-in kubelet's pods/<namespace>_<pod>/{<container>.log,<container>.pid,kubeconfig}.
#
# Settings (env): QSCALER_CLUSTER_DIR (run state, default /tmp/qscaler-cluster),
# QSCALER_K8S_CACHE (binary cache, default /var/cache/qscaler), QSCALER_SKIP_KUBELET=1 (no stand-in kubelet).
set -euo pipefail

K8S_VERSION=1.20.2
K8S_DEB_VERSION=1.20.5+really1.20.2-1.1+deb12u1
STATE=${QSCALER_CLUSTER_DIR:-/tmp/qscaler-cluster}
CACHE_ROOT=${QSCALER_K8S_CACHE:-/var/cache/qscaler}
BIN_CACHE="$CACHE_ROOT/kubernetes-v$K8S_VERSION"
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
ADMIN_TOKEN_FILE="$STATE/admin.token"

LOG_TAG=${LOG_TAG:-cluster}
log() { printf '[%s] %s\n' "$LOG_TAG" "$*" >&2; }
die() { printf '[%s] error: %s\n' "$LOG_TAG" "$*" >&2; exit 1; }

need_root() { [ "$(id -u)" = 0 ] || die "must run as root (it installs packages and uses PID namespaces and cgroups)"; }

# --- packages ------------------------------------------------------------------------------------

APT_UPDATED=0
apt_update_once() {
  if [ "$APT_UPDATED" = 0 ]; then
    log "apt-get update"
    apt-get update -qq >/dev/null
    APT_UPDATED=1
  fi
}

# The machine's own Debian mirror, "URI|keyring": the first binary entry for this release (deb822 `.sources`
# files first, then one-line `sources.list` entries). No mirror host is written into the repo.
debian_mirror() {
  local codename f
  codename=$(. /etc/os-release && echo "${VERSION_CODENAME:-bookworm}")
  for f in /etc/apt/sources.list.d/*.sources; do
    [ -f "$f" ] || continue
    awk -v want="$codename" '
      function flush() {
        if (types ~ /(^| )deb( |$)/ && (" " suites " ") ~ (" " want " ") && uris != "") { print uris "|" key; done = 1; exit }
        types = suites = uris = key = ""
      }
      /^[[:space:]]*$/ { flush(); next }
      /^#/ { next }
      /^Types:/ { sub(/^Types:[[:space:]]*/, ""); types = $0 }
      /^Suites:/ { sub(/^Suites:[[:space:]]*/, ""); suites = $0 }
      /^URIs:/ { sub(/^URIs:[[:space:]]*/, ""); uris = $1 }
      /^Signed-By:/ { sub(/^Signed-By:[[:space:]]*/, ""); key = $1 }
      END { if (!done) flush() }' "$f" | grep . && return 0
  done
  grep -hsE "^deb[[:space:]]+(\[[^]]*\][[:space:]]+)?[a-z]+://[^[:space:]]+[[:space:]]+${codename}[[:space:]]" \
    /etc/apt/sources.list /etc/apt/sources.list.d/*.list |
    sed -E 's/^deb[[:space:]]+(\[[^]]*\][[:space:]]+)?([^[:space:]]+).*/\2|/' | head -n 1 | grep .
}

ensure_deb_src() {
  local f=/etc/apt/sources.list.d/qscaler-deb-src.sources
  [ -f "$f" ] && return 0
  local mirror uri key codename
  mirror=$(debian_mirror) || die "no Debian binary entry for this release in /etc/apt: cannot derive a deb-src entry"
  uri=${mirror%%|*}
  key=${mirror#*|}
  [ -n "$key" ] || key=/usr/share/keyrings/debian-archive-keyring.gpg
  codename=$(. /etc/os-release && echo "${VERSION_CODENAME:-bookworm}")
  log "adding a deb-src entry from the machine's own Debian mirror ($f)"
  cat >"$f" <<EOF
Types: deb-src
URIs: $uri
Suites: $codename $codename-updates
Components: main
Signed-By: $key
EOF
  APT_UPDATED=0
}

ensure_packages() {
  local missing=()
  local p
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  [ ${#missing[@]} = 0 ] && return 0
  apt_update_once
  log "installing Debian packages: ${missing[*]}"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

runtime_packages() {
  ensure_packages etcd-server etcd-client redis-server openssl jq python3 util-linux
}

# --- control-plane binaries ----------------------------------------------------------------------

# The control plane and the real node's binaries, built together (one make shares the common packages).
K8S_BINARIES=(kube-apiserver kube-controller-manager kube-scheduler kubelet kube-proxy)

k8s_cached() {
  local b
  for b in "${K8S_BINARIES[@]}"; do [ -x "$BIN_CACHE/$b" ] || return 1; done
  [ -f "$BIN_CACHE/pause.c" ]
}

build_k8s() {
  if k8s_cached; then
    log "using cached Kubernetes v$K8S_VERSION binaries from $BIN_CACHE"
    return 0
  fi
  need_root
  ensure_deb_src
  ensure_packages golang-go rsync jq dpkg-dev golang-github-modern-go-reflect2-dev \
    golang-github-json-iterator-go-dev ca-certificates
  apt_update_once
  local work="$CACHE_ROOT/build"
  rm -rf "$work"
  mkdir -p "$work"
  log "downloading Debian's kubernetes $K8S_DEB_VERSION source package"
  (cd "$work" && apt-get source --download-only -qq "kubernetes=$K8S_DEB_VERSION" >/dev/null)
  local dsc
  dsc=$(ls "$work"/kubernetes_*.dsc)
  log "unpacking $(basename "$dsc")"
  dpkg-source -q -x "$dsc" "$work/src" >/dev/null 2>&1 || dpkg-source -x "$dsc" "$work/src" >/dev/null
  # The vendored reflect2 1.0.1 segfaults under Go >= 1.18 the first time a custom resource is created;
  # Debian's reflect2 1.0.2 and json-iterator 1.1.12 fix it.
  local v="$work/src/vendor/github.com"
  local lib
  for lib in modern-go/reflect2 json-iterator/go; do
    rm -rf "${v:?}/$lib"
    mkdir -p "$v/$lib"
    rsync -a --exclude '*_test.go' --exclude 'test/' "/usr/share/gocode/src/github.com/$lib/" "$v/$lib/"
  done
  cat >"$work/version.env" <<EOF
KUBE_GIT_VERSION='v$K8S_VERSION'
KUBE_GIT_MAJOR='1'
KUBE_GIT_MINOR='20'
KUBE_GIT_TREE_STATE='clean'
KUBE_GIT_COMMIT='faecb196815e248d3ecfb03c680a4507229c2a56'
EOF
  mkdir -p "$work/home"
  local what b
  what=$(for b in "${K8S_BINARIES[@]}"; do printf 'cmd/%s ' "$b"; done)
  log "building ${K8S_BINARIES[*]} (about 15 minutes on 2 cores; log: $work/build.log)"
  local start=$SECONDS
  (
    cd "$work/src"
    unset GOFLAGS GOPATH GOCACHE GO111MODULE
    export HOME="$work/home" KUBE_GIT_VERSION_FILE="$work/version.env"
    make WHAT="$what" KUBE_BUILD_PLATFORMS=linux/amd64
  ) >"$work/build.log" 2>&1 &
  local pid=$!
  while kill -0 "$pid" 2>/dev/null; do
    sleep 30
    kill -0 "$pid" 2>/dev/null && log "  still building ($((SECONDS - start)) s): $(tail -n 1 "$work/build.log" | cut -c1-100)"
  done
  wait "$pid" || { tail -n 40 "$work/build.log" >&2; die "the Kubernetes build failed (see $work/build.log)"; }
  mkdir -p "$BIN_CACHE"
  local out
  out=$(find "$work/src/_output" -type f -name kube-apiserver -path '*bin*' | head -n 1)
  [ -n "$out" ] || die "build finished but no kube-apiserver under $work/src/_output"
  for b in "${K8S_BINARIES[@]}"; do install -m 0755 "$(dirname "$out")/$b" "$BIN_CACHE/$b"; done
  # The real node's pause container is built from the same source (tests/node.sh).
  install -m 0644 "$work/src/build/pause/linux/pause.c" "$BIN_CACHE/pause.c"
  log "built in $((SECONDS - start)) s; cached in $BIN_CACHE"
  rm -rf "$work"
}

# --- run state -----------------------------------------------------------------------------------

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}

# A process that exited but was not reaped yet (this machine's init reaps slowly) counts as gone.
running() { kill -0 "$1" 2>/dev/null && ! grep -q '^State:[[:space:]]*Z' "/proc/$1/status" 2>/dev/null; }
pid_alive() { [ -f "$STATE/$1.pid" ] && running "$(cat "$STATE/$1.pid")"; }

start_bg() { # name, command...
  local name=$1
  shift
  "$@" >"$STATE/logs/$name.log" 2>&1 &
  echo $! >"$STATE/$name.pid"
}

now_ms() { echo $(( $(date +%s%N) / 1000000 )); }

wait_for() { # description, timeout seconds, command...
  local what=$1 timeout=$2
  shift 2
  local deadline=$((SECONDS + timeout)) t0
  t0=$(now_ms)
  until "$@" >/dev/null 2>&1; do
    [ $SECONDS -lt $deadline ] || die "timed out after ${timeout}s waiting for $what"
    sleep 0.2
  done
  log "  $what: ready after $(( $(now_ms) - t0 )) ms"
}

# shellcheck disable=SC2120 # tests/node.sh passes the extra names
make_certs() { # extra subjectAltName entries for the apiserver, e.g. "IP:10.96.0.1,IP:10.251.0.2"
  local extra_san=${1:+,$1}
  local d="$STATE/pki"
  mkdir -p "$d"
  (
    cd "$d"
    openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.crt -days 30 -subj "/CN=qscaler-test-ca" 2>/dev/null
    openssl req -newkey rsa:2048 -nodes -keyout apiserver.key -out apiserver.csr -subj "/CN=kube-apiserver" 2>/dev/null
    printf 'subjectAltName=IP:127.0.0.1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc%s\n' "$extra_san" >san.ext
    openssl x509 -req -in apiserver.csr -CA ca.crt -CAkey ca.key -CAcreateserial -out apiserver.crt -days 30 \
      -extfile san.ext 2>/dev/null
    openssl genrsa -out sa.key 2048 2>/dev/null
    openssl rsa -in sa.key -pubout -out sa.pub 2>/dev/null
  )
}

write_kubeconfig() { # path, token [, server [, cluster name]]: an admin kubeconfig trusting our CA
  local server=${3:-https://${API_HOST:-127.0.0.1}:$(cat "$STATE/apiserver.port")} name=${4:-qscaler-local}
  cat >"$1" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: $name
  cluster:
    server: $server
    certificate-authority: $STATE/pki/ca.crt
users:
- name: admin
  user:
    token: $2
contexts:
- name: $name
  context:
    cluster: $name
    user: admin
current-context: $name
EOF
}

# Cargo's target directory: CARGO_TARGET_DIR (relative to the workspace, as cargo takes it) or <workspace>/target.
target_dir() {
  case "${CARGO_TARGET_DIR:-}" in
    "") echo "$REPO/target" ;;
    /*) echo "$CARGO_TARGET_DIR" ;;
    *) echo "$REPO/$CARGO_TARGET_DIR" ;;
  esac
}

kubelet_binary() {
  local bin
  bin="$(target_dir)/debug/qscaler-kubelet"
  if [ ! -x "$bin" ] || [ -n "$(find "$REPO/stand-in-kubelet" "$REPO/crds/src" -newer "$bin" \( -name '*.rs' -o -name '*.toml' \) 2>/dev/null | head -n 1)" ]; then
    log "building the stand-in kubelet (cargo build -p qscaler-stand-in-kubelet)"
    (cd "$REPO" && cargo build -q -p qscaler-stand-in-kubelet) >&2
  fi
  echo "$bin"
}

# The apiserver alone, from the ports in the state directory (also used by `restart-apiserver`).
start_apiserver() {
  local api_port etcd_port
  api_port=$(cat "$STATE/apiserver.port")
  etcd_port=$(cat "$STATE/etcd.port")
  log "starting kube-apiserver on https://127.0.0.1:$api_port"
  start_bg apiserver "$BIN_CACHE/kube-apiserver" --etcd-servers "http://127.0.0.1:$etcd_port" \
    --bind-address 127.0.0.1 --advertise-address 127.0.0.1 --secure-port "$api_port" \
    --tls-cert-file "$STATE/pki/apiserver.crt" --tls-private-key-file "$STATE/pki/apiserver.key" \
    --client-ca-file "$STATE/pki/ca.crt" --token-auth-file "$STATE/tokens.csv" --authorization-mode RBAC \
    --service-account-issuer https://kubernetes.default.svc --service-account-key-file "$STATE/pki/sa.pub" \
    --service-account-signing-key-file "$STATE/pki/sa.key" --service-cluster-ip-range 10.96.0.0/16 \
    --allow-privileged=true --enable-priority-and-fairness=false
  wait_for "kube-apiserver /readyz" 90 kubectl --kubeconfig "$STATE/kubeconfig" get --raw /readyz
}

# Stops and starts the kube-apiserver (etcd keeps the state): for tests of clients surviving an outage.
restart_apiserver() {
  pid_alive apiserver || die "the apiserver is not running (state in $STATE)"
  stop_pid apiserver
  start_apiserver
}

up() {
  need_root
  if pid_alive apiserver; then
    log "already up (state in $STATE); run '$0 down' first to restart"
    return 0
  fi
  local t0=$SECONDS
  runtime_packages
  build_k8s
  rm -rf "$STATE"
  mkdir -p "$STATE/logs" "$STATE/etcd" "$STATE/pods"
  make_certs
  local etcd_port etcd_peer api_port redis_port
  etcd_port=$(free_port); etcd_peer=$(free_port); api_port=$(free_port); redis_port=$(free_port)
  echo "$api_port" >"$STATE/apiserver.port"
  echo "$redis_port" >"$STATE/redis.port"
  head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$ADMIN_TOKEN_FILE"
  local admin_token
  admin_token=$(cat "$ADMIN_TOKEN_FILE")
  # Static tokens: the admin (system:masters) and an unprivileged user for RBAC tests.
  printf '%s,admin,admin,system:masters\n%s,nobody,nobody\n' "$admin_token" "nobody-$admin_token" >"$STATE/tokens.csv"
  write_kubeconfig "$STATE/kubeconfig" "$admin_token"

  log "starting etcd on 127.0.0.1:$etcd_port"
  start_bg etcd etcd --name qscaler --data-dir "$STATE/etcd" \
    --listen-client-urls "http://127.0.0.1:$etcd_port" --advertise-client-urls "http://127.0.0.1:$etcd_port" \
    --listen-peer-urls "http://127.0.0.1:$etcd_peer" --initial-advertise-peer-urls "http://127.0.0.1:$etcd_peer" \
    --initial-cluster "qscaler=http://127.0.0.1:$etcd_peer" --quota-backend-bytes 2147483648
  wait_for "etcd" 30 etcdctl --endpoints "http://127.0.0.1:$etcd_port" endpoint health
  echo "$etcd_port" >"$STATE/etcd.port"

  start_apiserver

  log "starting kube-controller-manager"
  start_bg controller-manager "$BIN_CACHE/kube-controller-manager" --kubeconfig "$STATE/kubeconfig" \
    --leader-elect=false --service-account-private-key-file "$STATE/pki/sa.key" --root-ca-file "$STATE/pki/ca.crt" \
    --use-service-account-credentials=false --bind-address 127.0.0.1 --secure-port 0 --port 0 \
    --controllers '*,-nodeipam,-nodelifecycle,-cloud-node-lifecycle,-route,-service'

  log "starting redis-server on 127.0.0.1:$redis_port"
  start_bg redis redis-server --port "$redis_port" --bind 127.0.0.1 --save '' --appendonly no
  wait_for "redis" 20 redis-cli -p "$redis_port" ping

  wait_for "the default ServiceAccount" 60 kubectl --kubeconfig "$STATE/kubeconfig" get serviceaccount default -n default

  if [ "${QSCALER_SKIP_KUBELET:-0}" != 1 ]; then
    local kubelet
    kubelet=$(kubelet_binary)
    log "starting the stand-in kubelet"
    start_bg kubelet "$kubelet" --kubeconfig "$STATE/kubeconfig" --state-dir "$STATE/pods" \
      --image-table "$REPO/stand-in-kubelet/images.toml" --bin-dir "$(target_dir)/debug"
    wait_for "node qscaler-node Ready" 60 bash -c \
      "kubectl --kubeconfig '$STATE/kubeconfig' get node qscaler-node -o jsonpath='{.status.conditions[?(@.type==\"Ready\")].status}' | grep -q True"
  fi
  log "up in $((SECONDS - t0)) s; eval \"\$($0 env)\" to use it"
}

stop_pid() {
  local name=$1
  [ -f "$STATE/$name.pid" ] || return 0
  local pid
  pid=$(cat "$STATE/$name.pid")
  if running "$pid"; then
    local t0
    t0=$(now_ms)
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 1 100); do running "$pid" || break; sleep 0.05; done
    running "$pid" && { log "$name did not stop on SIGTERM; SIGKILL"; kill -KILL "$pid" 2>/dev/null || true; }
    log "stopped $name (pid $pid) in $(( $(now_ms) - t0 )) ms"
  fi
  rm -f "$STATE/$name.pid"
}

down() {
  [ -d "$STATE" ] || { log "nothing to stop ($STATE does not exist)"; return 0; }
  # The kubelet first: on SIGTERM it ends the pod processes it started.
  local n
  for n in kubelet controller-manager apiserver redis etcd; do stop_pid "$n"; done
  # Pod processes still alive (the kubelet was killed before it could end them): each container's
  # launcher pid is in <pod dir>/<container>.pid; killing it kills the namespace's init (its parent-death
  # signal), and the whole PID namespace dies with its init.
  local f p cgroups=()
  for f in "$STATE"/pods/*/*.pid; do
    [ -f "$f" ] || continue
    p=$(cat "$f")
    if [ -n "$p" ] && tr '\0' ' ' <"/proc/$p/cmdline" 2>/dev/null | grep -q ' __launch '; then
      log "killing left-over pod process $p ($f)"
      # Its cgroups (the `--cgroup DIR/cgroup.procs` arguments) go once it is dead.
      mapfile -t -O "${#cgroups[@]}" cgroups < <(tr '\0' '\n' <"/proc/$p/cmdline" | sed -n 's|/cgroup.procs$||p')
      kill -KILL "$p" 2>/dev/null || true
    fi
  done
  local d
  for d in "${cgroups[@]}"; do
    for _ in $(seq 1 20); do rmdir "$d" 2>/dev/null && break; [ -d "$d" ] || break; sleep 0.1; done
    rmdir "$(dirname "$d")" 2>/dev/null || true
  done
  # Anything a pod left behind in its own PID namespace dies with its namespace's init; check for strays.
  local stray
  stray=$(pgrep -f "$STATE/" || true)
  if [ -n "$stray" ]; then
    log "killing stray processes: $stray"
    kill -KILL $stray 2>/dev/null || true
  fi
  rm -rf "$STATE"
  log "down"
}

# Whether each named component of $STATE runs (also tests/node.sh's status).
component_status() {
  [ -d "$STATE" ] || { echo "not running"; return 0; }
  local n
  for n in "$@"; do
    if pid_alive "$n"; then echo "$n: running (pid $(cat "$STATE/$n.pid"))"; else echo "$n: not running"; fi
  done
}

status() { component_status etcd apiserver controller-manager redis kubelet; }

env_lines() {
  [ -f "$STATE/kubeconfig" ] || die "not up: run '$0 up' first"
  echo "export KUBECONFIG=$STATE/kubeconfig"
  echo "export REDIS_URL=redis://127.0.0.1:$(cat "$STATE/redis.port")/"
  echo "export QSCALER_CLUSTER_DIR=$STATE"
}

# Sourced by tests/node.sh for the shared helpers: run the command only when executed.
[ "${BASH_SOURCE[0]}" = "$0" ] || return 0

case "${1:-}" in
  up) up ;;
  down) down ;;
  status) status ;;
  env) env_lines ;;
  build) need_root; runtime_packages; build_k8s ;;
  restart-apiserver) restart_apiserver ;;
  *) echo "usage: $0 up|down|status|env|build|restart-apiserver" >&2; exit 2 ;;
esac
