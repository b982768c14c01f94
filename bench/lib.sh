# shellcheck shell=bash
# Shared by the benchmark scripts; sourced from the repository's root after `log` is defined.

# The stand-in cluster to measure on: the one `tests/cluster.sh env` names when its API server
# answers, else a new one in $1. OWN_CLUSTER=1 says the script brought it up, and
# `down_own_cluster` (in the script's EXIT trap) takes only such a cluster down.
OWN_CLUSTER=0
stand_in_cluster() {
  if tests/cluster.sh env >/dev/null 2>&1 &&
    (eval "$(tests/cluster.sh env)" && timeout 10 kubectl get --raw /readyz >/dev/null 2>&1); then
    eval "$(tests/cluster.sh env)"
    log "on the stand-in cluster in $QSCALER_CLUSTER_DIR"
  else
    export QSCALER_CLUSTER_DIR=$1
    log "bringing up a stand-in cluster in $QSCALER_CLUSTER_DIR"
    OWN_CLUSTER=1
    tests/cluster.sh up
    eval "$(tests/cluster.sh env)"
  fi
}

down_own_cluster() {
  if [ "$OWN_CLUSTER" = 1 ]; then tests/cluster.sh down >/dev/null 2>&1 || true; fi
}
