#!/usr/bin/env bash
# A real Kubernetes node on this machine: etcd, kube-apiserver, kube-controller-manager, kube-scheduler,
# Debian's Docker 20.10, kubelet (dockershim) and kube-proxy (iptables) v1.20.2, and redis-server — all inside
# a network namespace of their own that has no route out. The host reaches it over a veth pair.
#
#   tests/node.sh up        install what is missing, build once, start everything, wait until the node is Ready
#   tests/node.sh down      stop everything, remove containers, mounts, cgroups, the namespace; restore sysctls;
#                           then compare the host with what `up` recorded and fail on any difference
#   tests/node.sh status    say what runs
#   tests/node.sh env       print `export KUBECONFIG=... REDIS_URL=... DOCKER_HOST=...` lines to eval
#   tests/node.sh egress    print the packets the host dropped at the namespace's border (must be 0) and the
#                           namespace's tracked connections to anything outside it (must be none)
#
# Containment: the namespace holds only loopback, its end of the veth pair ($NODE_IP) and the bridges Docker
# makes in it; it has no default route, so a packet to any other address fails inside it. On the host, every
# packet from the namespace that is not addressed to the host's end of the veth is counted and dropped
# (raw table, chain QSCALER-NODE-EGRESS). The kubelet runs with AWS_EC2_METADATA_DISABLED=true and pods get
# a resolv.conf naming only their own loopback.
#
# Settings (env): QSCALER_NODE_DIR (run state, default /tmp/qscaler-node), QSCALER_NODE_NET (the veth /29's
# first three octets, default 10.251.0), QSCALER_K8S_CACHE (binary cache, shared with tests/cluster.sh).
# One real node per machine (its `down` checks the whole host); it can run beside tests/cluster.sh clusters.
set -euo pipefail

LOG_TAG=node
# shellcheck source=tests/cluster.sh
source "$(dirname "${BASH_SOURCE[0]}")/cluster.sh"

STATE=${QSCALER_NODE_DIR:-/tmp/qscaler-node}
BEFORE="$STATE.host-before"
NET=${QSCALER_NODE_NET:-10.251.0}
HOST_IP=$NET.1
NODE_IP=$NET.2
API_HOST=$NODE_IP
NETNS=qscaler-node-$(printf '%s' "$STATE" | cksum | cut -c1-6)
VETH_HOST=qsn$(printf '%s' "$STATE" | cksum | cut -c1-4)h
VETH_NODE=qsn$(printf '%s' "$STATE" | cksum | cut -c1-4)n
NODE_NAME=qscaler-real-node
SERVICE_CIDR=10.96.0.0/16
SERVICE_IP=10.96.0.1
POD_CIDR=172.17.0.0/16
API_PORT=6443
REDIS_PORT=6379
PAUSE_IMAGE=qscaler/pause:3.2-local
EGRESS_CHAIN=QSCALER-NODE-EGRESS
# Host settings the kubelet and kube-proxy change at start (seen on this machine): recorded at up, restored at down.
HOST_SYSCTLS=(kernel.panic kernel.panic_on_oops vm.overcommit_memory vm.panic_on_oom kernel.keys.root_maxkeys
  kernel.keys.root_maxbytes net.netfilter.nf_conntrack_max)
# Directories the kubelet writes outside its root dir.
HOST_DIRS=(/var/log/pods /var/log/containers)

# nsenter execs the command, so a pid recorded by start_bg is the component's own.
NSX=(nsenter "--net=/run/netns/$NETNS")
in_ns() { "${NSX[@]}" "$@"; }
dock() { /usr/bin/docker -H "unix://$STATE/docker.sock" "$@"; }

node_packages() {
  runtime_packages
  ensure_packages docker.io busybox-static iptables conntrack iproute2 gcc libc6-dev jq
}

# The pause container from the Kubernetes source package's pause.c, as a static binary (cached).
build_pause() {
  [ -x "$BIN_CACHE/pause" ] && return 0
  [ -f "$BIN_CACHE/pause.c" ] || die "no pause.c in $BIN_CACHE: run 'tests/cluster.sh build' (it keeps it)"
  log "building the pause binary from pause.c"
  gcc -Os -static -DVERSION=v3.2-qscaler -o "$BIN_CACHE/pause" "$BIN_CACHE/pause.c"
}

# --- what the host looks like, for `down` to prove it left nothing -------------------------------------

host_snapshot() {
  local s
  for s in "${HOST_SYSCTLS[@]}"; do printf 'sysctl %s=%s\n' "$s" "$(sysctl -n "$s" 2>/dev/null || echo absent)"; done
  ip -o link show | awk -F': ' '{print "link " $2}' | sed 's/@.*//'
  ip netns list | awk '{print "netns " $1}'
  local t
  for t in raw filter nat mangle; do iptables -t "$t" -S 2>/dev/null | sed "s/^/iptables $t /"; done
  findmnt -rn -o TARGET | grep -E "^($STATE|/var/lib/kubelet|/var/lib/docker|/run/docker)" | sed 's/^/mount /' || true
  find /sys/fs/cgroup -maxdepth 2 -type d \( -name kubepods -o -name docker \) 2>/dev/null | sed 's/^/cgroup /'
  for t in "${HOST_DIRS[@]}"; do [ -e "$t" ] && echo "dir $t"; done
  # Process names as the kernel keeps them (15 characters): the node's own kinds, which nothing else here runs.
  # Zombies are left out: a stopped component waits for this machine's slow init to reap it.
  ps -eo stat=,comm= | awk '$1 !~ /^Z/ {print $2}' |
    grep -xE 'dockerd|containerd|containerd-shim|kubelet|kube-proxy|kube-scheduler' | sort |
    uniq -c | awk '{print "process " $2 " x" $1}' || true
}

# --- the network namespace ----------------------------------------------------------------------------------

make_netns() {
  ip netns add "$NETNS"
  # IPv4 only, and no multicast (IGMP reports) from the namespace's stack: nothing but unicast to known peers.
  in_ns sysctl -q -w net.ipv6.conf.all.disable_ipv6=1 net.ipv6.conf.default.disable_ipv6=1 2>/dev/null || true
  in_ns iptables -t raw -A OUTPUT -d 224.0.0.0/4 -j DROP
  ip link add "$VETH_HOST" type veth peer name "$VETH_NODE"
  sysctl -q -w "net.ipv6.conf.$VETH_HOST.disable_ipv6=1" 2>/dev/null || true
  # The border, on the host, before any link is up: count (and drop) anything from the namespace that is not
  # for the host's end of the veth.
  iptables -t raw -N "$EGRESS_CHAIN"
  iptables -t raw -A "$EGRESS_CHAIN" -d "$HOST_IP" -j RETURN
  iptables -t raw -A "$EGRESS_CHAIN" -j DROP
  iptables -t raw -I PREROUTING -i "$VETH_HOST" -j "$EGRESS_CHAIN"
  ip link set "$VETH_NODE" netns "$NETNS"
  ip addr add "$HOST_IP/29" dev "$VETH_HOST"
  ip link set "$VETH_HOST" up
  in_ns ip link set lo up
  in_ns ip addr add "$NODE_IP/29" dev "$VETH_NODE"
  in_ns ip link set "$VETH_NODE" up
  [ -z "$(in_ns ip route show default)" ] || die "the namespace has a default route"
}

remove_netns() {
  iptables -t raw -D PREROUTING -i "$VETH_HOST" -j "$EGRESS_CHAIN" 2>/dev/null || true
  iptables -t raw -F "$EGRESS_CHAIN" 2>/dev/null || true
  iptables -t raw -X "$EGRESS_CHAIN" 2>/dev/null || true
  ip link del "$VETH_HOST" 2>/dev/null || true
  ip netns del "$NETNS" 2>/dev/null || true
  # The kernel tears a namespace's devices down asynchronously.
  local _
  for _ in $(seq 1 50); do ip link show "$VETH_HOST" >/dev/null 2>&1 || break; sleep 0.1; done
}

# What crossed the border: packets from the namespace to the host (the API, Redis and kubectl answers: proof
# the counters see traffic), packets the host dropped (anything else: must be 0), the namespace's default
# route (must be none) and the addresses outside it that its tracked connections name (must be none).
egress() {
  local counts
  counts=$(iptables -t raw -L "$EGRESS_CHAIN" -v -x -n 2>/dev/null) || die "no border chain: is the node up?"
  echo "to_host=$(awk '$3 == "RETURN" {print $1}' <<<"$counts")"
  echo "dropped_at_border=$(awk '$3 == "DROP" {print $1}' <<<"$counts")"
  echo "default_route=$(in_ns ip route show default | head -n 1)"
  local far
  far=$(in_ns conntrack -L 2>/dev/null | grep -oE 'dst=[0-9a-f.:]+' | cut -d= -f2 | sort -u |
    grep -vE "^(127\.|${NET//./\\.}\.|172\.17\.|10\.96\.|::1$)" || true)
  echo "far_destinations=$(echo "$far" | tr '\n' ' ' | sed 's/ *$//')"
}

# --- certificates ---------------------------------------------------------------------------------------

sign() { # name, subject, extension lines
  local name=$1 subj=$2 ext=$3
  (
    cd "$STATE/pki"
    openssl req -newkey rsa:2048 -nodes -keyout "$name.key" -out "$name.csr" -subj "$subj" 2>/dev/null
    printf '%b\n' "$ext" >"$name.ext"
    openssl x509 -req -in "$name.csr" -CA ca.crt -CAkey ca.key -CAcreateserial -out "$name.crt" -days 30 \
      -extfile "$name.ext" 2>/dev/null
  )
}

node_certs() {
  make_certs "IP:$NODE_IP,IP:$SERVICE_IP,DNS:kubernetes.default.svc.cluster.local"
  # The kubelet's serving certificate (kubectl logs/exec reach it at its InternalIP) and the apiserver's
  # client certificate for talking to it.
  sign kubelet "/CN=$NODE_NAME" "subjectAltName=IP:$NODE_IP,DNS:$NODE_NAME"
  sign apiserver-kubelet-client "/O=system:masters/CN=kube-apiserver-kubelet-client" "extendedKeyUsage=clientAuth"
}

# --- the runtime ---------------------------------------------------------------------------------------------

# dockershim asks for a negative oom_score_adj (-998 for sandboxes), which needs CAP_SYS_RESOURCE that root
# lacks here: runc then fails every sandbox. This wrapper, dockerd's default runtime, clamps it to 0.
write_runc_wrapper() {
  cat >"$STATE/bin/qscaler-runc" <<'EOF'
#!/bin/sh
bundle=
prev=
for a in "$@"; do
  case "$prev" in --bundle|-b) bundle=$a ;; esac
  case "$a" in --bundle=*) bundle=${a#--bundle=} ;; esac
  prev=$a
done
if [ -n "$bundle" ] && [ -f "$bundle/config.json" ]; then
  tmp="$bundle/config.json.qscaler"
  jq 'if (.process.oomScoreAdj // 0) < 0 then .process.oomScoreAdj = 0 else . end' "$bundle/config.json" >"$tmp" &&
    mv "$tmp" "$bundle/config.json"
fi
exec /usr/sbin/runc "$@"
EOF
  chmod 0755 "$STATE/bin/qscaler-runc"
}

start_docker() {
  write_runc_wrapper
  printf '{}\n' >"$STATE/daemon.json"
  log "starting dockerd in the namespace"
  start_bg dockerd "${NSX[@]}" /usr/sbin/dockerd --config-file "$STATE/daemon.json" -H "unix://$STATE/docker.sock" \
    --data-root "$STATE/docker" --exec-root "$STATE/docker-run" --pidfile "$STATE/docker-run/dockerd.pid" \
    --bip 172.17.0.1/16 --exec-opt native.cgroupdriver=cgroupfs --storage-driver overlay2 \
    --add-runtime "qscaler-runc=$STATE/bin/qscaler-runc" --default-runtime qscaler-runc \
    --dns 127.0.0.1 --log-level warn
  wait_for "dockerd" 60 dock info
}

load_pause_image() {
  local ctx="$STATE/images/pause"
  mkdir -p "$ctx"
  cp "$BIN_CACHE/pause" "$ctx/pause"
  printf 'FROM scratch\nCOPY pause /pause\nUSER 65535:65535\nENTRYPOINT ["/pause"]\n' >"$ctx/Dockerfile"
  DOCKER_BUILDKIT=0 dock build -q -t "$PAUSE_IMAGE" "$ctx" >/dev/null
  log "  pause image $PAUSE_IMAGE built"
}

# --- the control plane and the node ---------------------------------------------------------------------

start_control_plane() {
  local token
  token=$(head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n')
  printf '%s,admin,admin,system:masters\n%s,nobody,nobody\n' "$token" "nobody-$token" >"$STATE/tokens.csv"
  echo "$API_PORT" >"$STATE/apiserver.port"
  write_kubeconfig "$STATE/kubeconfig" "$token" "https://$NODE_IP:$API_PORT" qscaler-real-node

  log "starting etcd in the namespace"
  start_bg etcd "${NSX[@]}" etcd --name qscaler --data-dir "$STATE/etcd" \
    --listen-client-urls http://127.0.0.1:2379 --advertise-client-urls http://127.0.0.1:2379 \
    --listen-peer-urls http://127.0.0.1:2380 --initial-advertise-peer-urls http://127.0.0.1:2380 \
    --initial-cluster qscaler=http://127.0.0.1:2380 --quota-backend-bytes 2147483648
  wait_for "etcd" 30 in_ns etcdctl --endpoints http://127.0.0.1:2379 endpoint health

  log "starting kube-apiserver on https://$NODE_IP:$API_PORT"
  start_bg apiserver "${NSX[@]}" "$BIN_CACHE/kube-apiserver" --etcd-servers http://127.0.0.1:2379 \
    --bind-address 0.0.0.0 --advertise-address "$NODE_IP" --secure-port "$API_PORT" \
    --tls-cert-file "$STATE/pki/apiserver.crt" --tls-private-key-file "$STATE/pki/apiserver.key" \
    --client-ca-file "$STATE/pki/ca.crt" --token-auth-file "$STATE/tokens.csv" --authorization-mode RBAC \
    --service-account-issuer https://kubernetes.default.svc --service-account-key-file "$STATE/pki/sa.pub" \
    --service-account-signing-key-file "$STATE/pki/sa.key" --service-cluster-ip-range "$SERVICE_CIDR" \
    --kubelet-client-certificate "$STATE/pki/apiserver-kubelet-client.crt" \
    --kubelet-client-key "$STATE/pki/apiserver-kubelet-client.key" \
    --kubelet-certificate-authority "$STATE/pki/ca.crt" --kubelet-preferred-address-types InternalIP \
    --allow-privileged=true --enable-priority-and-fairness=false
  wait_for "kube-apiserver /readyz" 90 kubectl --kubeconfig "$STATE/kubeconfig" get --raw /readyz

  log "starting kube-controller-manager and kube-scheduler"
  start_bg controller-manager "${NSX[@]}" "$BIN_CACHE/kube-controller-manager" --kubeconfig "$STATE/kubeconfig" \
    --leader-elect=false --service-account-private-key-file "$STATE/pki/sa.key" \
    --root-ca-file "$STATE/pki/ca.crt" --use-service-account-credentials=false --bind-address 127.0.0.1 \
    --secure-port 0 --port 0 --controllers '*,-nodeipam,-cloud-node-lifecycle,-route,-service'
  start_bg scheduler "${NSX[@]}" "$BIN_CACHE/kube-scheduler" --kubeconfig "$STATE/kubeconfig" --leader-elect=false \
    --bind-address 127.0.0.1 --secure-port 0 --port 0

  log "starting redis-server on $NODE_IP:$REDIS_PORT"
  # Bound inside the namespace only, which nothing outside this machine can reach.
  start_bg redis "${NSX[@]}" redis-server --port "$REDIS_PORT" --bind 0.0.0.0 --protected-mode no --save '' \
    --appendonly no
  wait_for "redis" 20 redis-cli -h "$NODE_IP" -p "$REDIS_PORT" ping
  echo "redis://$NODE_IP:$REDIS_PORT/" >"$STATE/redis.url"
}

start_node() {
  mkdir -p "$STATE/kubelet" "$STATE/dockershim"
  # Pods resolve nothing: their resolv.conf names only their own loopback.
  printf 'nameserver 127.0.0.1\noptions ndots:1 timeout:1 attempts:1\n' >"$STATE/resolv.conf"
  log "starting the kubelet (node $NODE_NAME at $NODE_IP)"
  start_bg kubelet "${NSX[@]}" env AWS_EC2_METADATA_DISABLED=true "$BIN_CACHE/kubelet" \
    --kubeconfig "$STATE/kubeconfig" --root-dir "$STATE/kubelet" --cert-dir "$STATE/kubelet/pki" \
    --experimental-dockershim-root-directory "$STATE/dockershim" \
    --container-runtime docker --docker-endpoint "unix://$STATE/docker.sock" \
    --pod-infra-container-image "$PAUSE_IMAGE" --cgroup-driver cgroupfs \
    --hostname-override "$NODE_NAME" --node-ip "$NODE_IP" --address "$NODE_IP" --port 10250 \
    --read-only-port 0 --healthz-bind-address 127.0.0.1 \
    --tls-cert-file "$STATE/pki/kubelet.crt" --tls-private-key-file "$STATE/pki/kubelet.key" \
    --client-ca-file "$STATE/pki/ca.crt" --anonymous-auth=false --authorization-mode AlwaysAllow \
    --resolv-conf "$STATE/resolv.conf" --cluster-domain cluster.local --fail-swap-on=false \
    --image-gc-high-threshold 100 --image-gc-low-threshold 99 \
    --eviction-hard 'memory.available<100Mi' --node-status-update-frequency 4s \
    --volume-plugin-dir "$STATE/kubelet/volume-plugins" --v 1
  wait_for "node $NODE_NAME Ready" 120 bash -c \
    "kubectl --kubeconfig '$STATE/kubeconfig' get node $NODE_NAME -o jsonpath='{.status.conditions[?(@.type==\"Ready\")].status}' | grep -q True"
  # The node-lifecycle controller lifts the not-ready taint once it sees the node Ready.
  wait_for "node $NODE_NAME schedulable (no not-ready taint)" 60 bash -c \
    "! kubectl --kubeconfig '$STATE/kubeconfig' get node $NODE_NAME -o jsonpath='{.spec.taints[*].key}' | grep -q not-ready"

  log "starting kube-proxy (iptables)"
  start_bg kube-proxy "${NSX[@]}" "$BIN_CACHE/kube-proxy" --kubeconfig "$STATE/kubeconfig" \
    --hostname-override "$NODE_NAME" --bind-address "$NODE_IP" --proxy-mode iptables --cluster-cidr "$POD_CIDR" \
    --conntrack-max-per-core 0 --conntrack-tcp-timeout-established 0 --conntrack-tcp-timeout-close-wait 0 \
    --metrics-bind-address 127.0.0.1:10249 --healthz-bind-address 127.0.0.1:10256
  wait_for "kube-proxy rules for the kubernetes Service" 60 bash -c \
    "nsenter --net=/run/netns/$NETNS iptables -t nat -S KUBE-SERVICES 2>/dev/null | grep -q '$SERVICE_IP/32'"
}

up() {
  need_root
  if pid_alive apiserver; then
    log "already up (state in $STATE); run '$0 down' first to restart"
    return 0
  fi
  [ ! -e "/run/netns/$NETNS" ] || die "namespace $NETNS exists from an earlier run: run '$0 down' first"
  # One real node per machine: `down` compares the whole host with what `up` recorded.
  ! iptables -t raw -S "$EGRESS_CHAIN" >/dev/null 2>&1 ||
    die "another real node is up on this machine (chain $EGRESS_CHAIN exists): run 'tests/node.sh down' with its QSCALER_NODE_DIR first"
  local t0=$SECONDS
  node_packages
  build_k8s
  build_pause
  rm -rf "$STATE"
  mkdir -p "$STATE/logs" "$STATE/etcd" "$STATE/bin" "$STATE/images"
  host_snapshot >"$BEFORE"
  make_netns
  node_certs
  start_control_plane
  start_docker
  load_pause_image
  start_node
  wait_for "the default ServiceAccount" 60 kubectl --kubeconfig "$STATE/kubeconfig" get serviceaccount default -n default
  log "up in $((SECONDS - t0)) s; eval \"\$($0 env)\" to use it; images: docker/build.sh --tag dev"
}

# Depth-first removal of the cgroups the kubelet and Docker made (only those that did not exist before).
remove_cgroups() {
  local d
  while IFS= read -r d; do
    grep -qx "cgroup $d" "$BEFORE" 2>/dev/null && continue
    find "$d" -depth -type d -exec rmdir {} \; 2>/dev/null || true
  done < <(find /sys/fs/cgroup -maxdepth 2 -type d \( -name kubepods -o -name docker \) 2>/dev/null)
}

restore_sysctls() {
  local line key value
  [ -f "$BEFORE" ] || return 0
  while IFS= read -r line; do
    case "$line" in sysctl\ *) ;; *) continue ;; esac
    key=${line#sysctl }; value=${key#*=}; key=${key%%=*}
    [ "$value" = absent ] && continue
    [ "$(sysctl -n "$key" 2>/dev/null)" = "$value" ] || sysctl -q -w "$key=$value" >/dev/null || log "could not restore $key"
  done <"$BEFORE"
}

down() {
  if [ ! -d "$STATE" ] && [ ! -e "/run/netns/$NETNS" ]; then
    log "nothing to stop ($STATE does not exist)"
    return 0
  fi
  local t0=$SECONDS n
  # The node first (the kubelet leaves containers running when it stops), then every container.
  for n in kube-proxy kubelet; do stop_pid "$n"; done
  if [ -S "$STATE/docker.sock" ] && dock info >/dev/null 2>&1; then
    local ids
    ids=$(dock ps -aq)
    [ -z "$ids" ] || { log "removing $(echo "$ids" | wc -w) containers"; dock rm -f $ids >/dev/null 2>&1 || true; }
  fi
  for n in dockerd scheduler controller-manager apiserver redis etcd; do stop_pid "$n"; done
  # Shims outlive dockerd when it is killed; they belong to this state directory.
  local stray
  stray=$(pgrep -f "$STATE/" || true)
  [ -z "$stray" ] || { log "killing stray processes: $(echo "$stray" | tr '\n' ' ')"; kill -KILL $stray 2>/dev/null || true; }
  local m
  for m in $(findmnt -rn -o TARGET | grep -E "^$STATE(/|$)" | sort -r); do
    umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || log "could not unmount $m"
  done
  remove_cgroups
  remove_netns
  restore_sysctls
  for n in "${HOST_DIRS[@]}"; do
    grep -qx "dir $n" "$BEFORE" 2>/dev/null || rm -rf "$n"
  done
  rm -rf "$STATE"
  log "down in $((SECONDS - t0)) s"
  if [ -f "$BEFORE" ]; then
    local diff_out
    diff_out=$(diff <(sort "$BEFORE") <(host_snapshot | sort) || true)
    rm -f "$BEFORE"
    if [ -n "$diff_out" ]; then
      printf '%s\n' "$diff_out" >&2
      die "the host differs from before 'up' (lines: < before, > now)"
    fi
    log "the host is as 'up' found it: no process, container, mount, cgroup, iptables rule, link or sysctl left"
  fi
}

status() { component_status etcd apiserver controller-manager scheduler redis dockerd kubelet kube-proxy; }

env_lines() {
  [ -f "$STATE/kubeconfig" ] || die "not up: run '$0 up' first"
  echo "export KUBECONFIG=$STATE/kubeconfig"
  echo "export REDIS_URL=$(cat "$STATE/redis.url")"
  echo "export DOCKER_HOST=unix://$STATE/docker.sock"
  echo "export QSCALER_NODE_DIR=$STATE"
}

case "${1:-}" in
  up) up ;;
  down) down ;;
  status) status ;;
  env) env_lines ;;
  egress) egress ;;
  *) echo "usage: $0 up|down|status|env|egress" >&2; exit 2 ;;
esac
