#!/usr/bin/env bash
# Builds static (musl) binaries, the form that goes into the images (docker/build.sh), installing what it
# needs when missing: the Rust target x86_64-unknown-linux-musl (rustup) and musl-gcc (Debian's musl-tools,
# for the C parts of the TLS stack).
#   tests/static-build.sh [--release] [BIN...]   default BIN: qsupervisor
#   e.g. tests/static-build.sh --release qscaler-operator qsupervisor
# Binaries land in <target dir>/x86_64-unknown-linux-musl/<debug|release>/; prints that directory on stdout.
set -euo pipefail
cd "$(dirname "$0")/.."
TARGET=x86_64-unknown-linux-musl
log() { printf '[static] %s\n' "$*" >&2; }

if ! command -v musl-gcc >/dev/null; then
  [ "$(id -u)" = 0 ] || { log "error: musl-gcc is missing; apt-get install musl-tools (as root)"; exit 1; }
  log "installing musl-tools (musl-gcc)"
  apt-get update -qq >/dev/null
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends musl-tools >/dev/null
fi
if ! rustup target list --installed | grep -qx "$TARGET"; then
  log "adding the Rust target $TARGET"
  rustup target add "$TARGET" >&2
fi

profile=debug
args=()
if [ "${1:-}" = --release ]; then profile=release; args=(--release); shift; fi
[ $# -gt 0 ] || set -- qsupervisor
# Each binary's package, as the workspace lays them out.
for bin in "$@"; do
  case "$bin" in
    qsupervisor) args+=(-p qsupervisor --bin qsupervisor) ;;
    qscaler-operator) args+=(-p qscaler-operator --bin qscaler-operator) ;;
    kubectl-qworker) args+=(-p kubectl-qworker --bin kubectl-qworker) ;;
    qscaler-test-worker) args+=(-p qscaler-tests --bin qscaler-test-worker) ;;
    *) log "error: unknown binary $bin"; exit 2 ;;
  esac
done
log "building $* for $TARGET ($profile)"
cargo build -q --target "$TARGET" "${args[@]}" >&2
target_dir=${CARGO_TARGET_DIR:-target}
echo "$target_dir/$TARGET/$profile"
