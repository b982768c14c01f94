#!/usr/bin/env bash
# Installs QScaler into the current kubectl context: the CRDs, a namespace, the operator's ServiceAccount and
# least-privilege RBAC, and the operator Deployment; then waits until the operator is available.
#
#   ./install.sh                          install or upgrade (idempotent: server-side apply)
#   ./install.sh --dry-run                print every manifest, change nothing
#   ./install.sh --uninstall              remove everything install.sh created (QWorkers and their pods too)
#   ./install.sh --worker-rbac NAMESPACE  create the ServiceAccount/Role/RoleBinding workers need in NAMESPACE
#
# Options: --namespace NS (default qscaler-system), --image IMAGE (default qscaler/operator), --tag TAG
# (default the version below), --timeout SECONDS (default 120), --context CTX, --kubeconfig FILE.
set -euo pipefail

VERSION=0.1.0
NAMESPACE=qscaler-system
IMAGE=qscaler/operator
TAG=$VERSION
TIMEOUT=120
ACTION=install
WORKER_NS=
DRY_RUN=0
KUBECTL_ARGS=()
FIELD_MANAGER=qscaler-install
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

die() { printf 'install.sh: error: %s\n' "$*" >&2; exit 1; }
say() { printf 'install.sh: %s\n' "$*" >&2; }

usage() { sed -n '2,14p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; }

while [ $# -gt 0 ]; do
  case "$1" in
    --dry-run) DRY_RUN=1 ;;
    --uninstall) ACTION=uninstall ;;
    --worker-rbac) ACTION=worker-rbac; WORKER_NS=${2:-}; [ -n "$WORKER_NS" ] || die "--worker-rbac needs a namespace"; shift ;;
    --namespace|-n) NAMESPACE=${2:-}; [ -n "$NAMESPACE" ] || die "--namespace needs a value"; shift ;;
    --image) IMAGE=${2:-}; [ -n "$IMAGE" ] || die "--image needs a value"; shift ;;
    --tag) TAG=${2:-}; [ -n "$TAG" ] || die "--tag needs a value"; shift ;;
    --timeout) TIMEOUT=${2:-}; [[ "$TIMEOUT" =~ ^[0-9]+$ ]] || die "--timeout needs a number of seconds"; shift ;;
    --context) KUBECTL_ARGS+=(--context "${2:-}"); shift ;;
    --kubeconfig) KUBECTL_ARGS+=(--kubeconfig "${2:-}"); shift ;;
    -h|--help) usage; exit 0 ;;
    *) usage >&2; die "unknown option: $1" ;;
  esac
  shift
done

k() { kubectl "${KUBECTL_ARGS[@]}" "$@"; }

# --- manifests -----------------------------------------------------------------------------------

crds() {
  local f
  for f in "$HERE/crds/qworker.yaml" "$HERE/crds/scalerconfig.yaml"; do
    [ -f "$f" ] || die "missing $f: run install.sh from a QScaler checkout"
    echo "---"
    grep -v '^#' "$f"
  done
}

namespace_manifest() {
  cat <<EOF
---
apiVersion: v1
kind: Namespace
metadata:
  name: $NAMESPACE
  labels:
    app.kubernetes.io/part-of: qscaler
EOF
}

operator_rbac() {
  cat <<EOF
---
apiVersion: v1
kind: ServiceAccount
metadata:
  name: qscaler-operator
  namespace: $NAMESPACE
  labels:
    app.kubernetes.io/name: qscaler-operator
    app.kubernetes.io/part-of: qscaler
---
# What the operator does, and no more: it creates, drains (patch) and deletes worker pods; reads one
# Secret key per ScalerConfig (get only, never list/watch); writes QWorker/ScalerConfig status; keeps
# ControllerRevisions for rollout history; records Events.
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata:
  name: qscaler-operator
  labels:
    app.kubernetes.io/name: qscaler-operator
    app.kubernetes.io/part-of: qscaler
rules:
- apiGroups: [""]
  resources: [pods]
  verbs: [create, delete, get, list, watch, patch]
- apiGroups: [""]
  resources: [secrets]
  verbs: [get]
- apiGroups: [quickube.com]
  resources: [qworkers, scalerconfigs]
  verbs: [get, list, watch, patch, update]
- apiGroups: [quickube.com]
  resources: [qworkers/status, scalerconfigs/status]
  verbs: [get, patch, update]
- apiGroups: [apps]
  resources: [controllerrevisions]
  verbs: [create, delete, get, list, watch, patch, update]
- apiGroups: ["", events.k8s.io]
  resources: [events]
  verbs: [create, patch]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata:
  name: qscaler-operator
  labels:
    app.kubernetes.io/name: qscaler-operator
    app.kubernetes.io/part-of: qscaler
roleRef:
  apiGroup: rbac.authorization.k8s.io
  kind: ClusterRole
  name: qscaler-operator
subjects:
- kind: ServiceAccount
  name: qscaler-operator
  namespace: $NAMESPACE
---
# Leader election: one Lease in the operator's own namespace.
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata:
  name: qscaler-operator-leader-election
  namespace: $NAMESPACE
  labels:
    app.kubernetes.io/name: qscaler-operator
    app.kubernetes.io/part-of: qscaler
rules:
- apiGroups: [coordination.k8s.io]
  resources: [leases]
  verbs: [get, create, update, patch]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata:
  name: qscaler-operator-leader-election
  namespace: $NAMESPACE
  labels:
    app.kubernetes.io/name: qscaler-operator
    app.kubernetes.io/part-of: qscaler
roleRef:
  apiGroup: rbac.authorization.k8s.io
  kind: Role
  name: qscaler-operator-leader-election
subjects:
- kind: ServiceAccount
  name: qscaler-operator
  namespace: $NAMESPACE
EOF
}

operator_deployment() {
  cat <<EOF
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: qscaler-operator
  namespace: $NAMESPACE
  labels:
    app.kubernetes.io/name: qscaler-operator
    app.kubernetes.io/part-of: qscaler
    app.kubernetes.io/version: "$TAG"
spec:
  replicas: 1
  selector:
    matchLabels:
      app.kubernetes.io/name: qscaler-operator
  strategy:
    type: Recreate
  template:
    metadata:
      labels:
        app.kubernetes.io/name: qscaler-operator
        app.kubernetes.io/part-of: qscaler
    spec:
      serviceAccountName: qscaler-operator
      terminationGracePeriodSeconds: 30
      securityContext:
        runAsNonRoot: true
        runAsUser: 65532
        runAsGroup: 65532
        seccompProfile:
          type: RuntimeDefault
      containers:
      - name: operator
        image: $IMAGE:$TAG
        args: ["--leader-elect=true", "--metrics-bind-address=0.0.0.0:8080", "--health-probe-bind-address=0.0.0.0:8081"]
        env:
        - name: POD_NAME
          valueFrom:
            fieldRef:
              fieldPath: metadata.name
        - name: POD_NAMESPACE
          valueFrom:
            fieldRef:
              fieldPath: metadata.namespace
        - name: RUST_LOG
          value: info
        # Metrics and probes on separate ports, as controller-runtime and KEDA have them.
        ports:
        - name: metrics
          containerPort: 8080
          protocol: TCP
        - name: probes
          containerPort: 8081
          protocol: TCP
        readinessProbe:
          httpGet:
            path: /readyz
            port: probes
          periodSeconds: 5
        livenessProbe:
          httpGet:
            path: /livez
            port: probes
          initialDelaySeconds: 10
          periodSeconds: 10
        resources:
          requests:
            cpu: 50m
            memory: 64Mi
          limits:
            memory: 256Mi
        securityContext:
          allowPrivilegeEscalation: false
          readOnlyRootFilesystem: true
          capabilities:
            drop: [ALL]
---
apiVersion: v1
kind: Service
metadata:
  name: qscaler-operator-metrics
  namespace: $NAMESPACE
  labels:
    app.kubernetes.io/name: qscaler-operator
    app.kubernetes.io/part-of: qscaler
spec:
  selector:
    app.kubernetes.io/name: qscaler-operator
  ports:
  # protocol is spelled out: server-side apply on 1.20 needs every key of this associative list.
  - name: metrics
    port: 8080
    targetPort: metrics
    protocol: TCP
EOF
}

worker_rbac() {
  cat <<EOF
---
apiVersion: v1
kind: ServiceAccount
metadata:
  name: qscaler-worker
  namespace: $WORKER_NS
  labels:
    app.kubernetes.io/part-of: qscaler
---
# What qsupervisor needs: read and watch its own pod (the drain annotation) and patch it (usage reports).
# RBAC cannot name "its own pod", so this grants the namespace's pods; nothing else (no secrets, no delete).
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata:
  name: qscaler-worker
  namespace: $WORKER_NS
  labels:
    app.kubernetes.io/part-of: qscaler
rules:
- apiGroups: [""]
  resources: [pods]
  verbs: [get, watch, patch]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata:
  name: qscaler-worker
  namespace: $WORKER_NS
  labels:
    app.kubernetes.io/part-of: qscaler
roleRef:
  apiGroup: rbac.authorization.k8s.io
  kind: Role
  name: qscaler-worker
subjects:
- kind: ServiceAccount
  name: qscaler-worker
  namespace: $WORKER_NS
EOF
}

# --- actions -------------------------------------------------------------------------------------

check_cluster() {
  command -v kubectl >/dev/null 2>&1 || die "kubectl not found on PATH: install it (https://kubernetes.io/docs/tasks/tools/)"
  local err
  if ! err=$(k version -o json 2>&1 >/dev/null) && ! k get --raw /readyz >/dev/null 2>&1; then
    die "cannot reach the cluster of the current kubectl context ($(k config current-context 2>/dev/null || echo none)): ${err##*$'\n'}"
  fi
}

apply() { # manifests on stdin
  k apply --server-side --force-conflicts --field-manager "$FIELD_MANAGER" -f - >&2
}

install() {
  if [ "$DRY_RUN" = 1 ]; then
    crds; namespace_manifest; operator_rbac; operator_deployment
    return
  fi
  check_cluster
  say "installing the CRDs"
  crds | apply
  k wait --for condition=established --timeout "${TIMEOUT}s" crd/qworkers.quickube.com crd/scalerconfigs.quickube.com >/dev/null
  say "installing the operator into namespace $NAMESPACE (image $IMAGE:$TAG)"
  { namespace_manifest; operator_rbac; operator_deployment; } | apply
  say "waiting up to ${TIMEOUT}s for the operator to be available"
  if ! k -n "$NAMESPACE" rollout status deployment/qscaler-operator --timeout "${TIMEOUT}s" >&2; then
    k -n "$NAMESPACE" get pods -l app.kubernetes.io/name=qscaler-operator >&2 || true
    die "the operator did not become available; see: kubectl -n $NAMESPACE logs deployment/qscaler-operator"
  fi
  say "installed. Next: ./install.sh --worker-rbac <namespace>, then apply a ScalerConfig and a QWorker (crds/examples/)"
}

uninstall() {
  if [ "$DRY_RUN" = 1 ]; then
    say "would delete: every QWorker and ScalerConfig (while the operator runs, so in-flight tasks return), the operator Deployment, Service, RBAC and namespace $NAMESPACE, then the CRDs"
    return
  fi
  check_cluster
  # QWorkers and ScalerConfigs carry the operator's finalizer: delete them while it runs, so their workers
  # drain and their in-flight tasks go back to their queues; whatever the operator could not finish in time
  # (or it is not running) is released by hand before the CRDs go.
  if k get crd qworkers.quickube.com >/dev/null 2>&1; then
    say "deleting every QWorker and ScalerConfig while the operator runs (workers drain, in-flight tasks return)"
    k delete qworkers,scalerconfigs --all --all-namespaces --wait=true --timeout "${TIMEOUT}s" >&2 ||
      say "not all were finished in ${TIMEOUT}s; releasing their finalizers"
    local left
    left=$(k get qworkers,scalerconfigs --all-namespaces -o jsonpath='{range .items[*]}{.metadata.namespace}{" "}{.kind}{"/"}{.metadata.name}{"\n"}{end}' 2>/dev/null || true)
    while read -r ns obj; do
      [ -n "$obj" ] || continue
      k -n "$ns" patch "$obj" --type merge -p '{"metadata":{"finalizers":null}}' >/dev/null 2>&1 || true
    done <<<"$left"
  fi
  say "removing the operator"
  { operator_deployment; operator_rbac; } | k delete --ignore-not-found -f - >&2
  k delete namespace "$NAMESPACE" --ignore-not-found --wait=true --timeout "${TIMEOUT}s" >&2
  say "removing the CRDs (QWorkers, ScalerConfigs and their pods go with them)"
  crds | k delete --ignore-not-found --wait=true --timeout "${TIMEOUT}s" -f - >&2
  say "uninstalled"
}

install_worker_rbac() {
  if [ "$DRY_RUN" = 1 ]; then
    worker_rbac
    return
  fi
  check_cluster
  k get namespace "$WORKER_NS" >/dev/null 2>&1 || die "namespace $WORKER_NS does not exist: kubectl create namespace $WORKER_NS"
  worker_rbac | apply
  say "workers in $WORKER_NS can now use serviceAccountName: qscaler-worker"
}

case "$ACTION" in
  install) install ;;
  uninstall) uninstall ;;
  worker-rbac) install_worker_rbac ;;
esac
