#!/usr/bin/env bash
# Builds qsupervisor as a static (musl) binary, the form that is copied into worker images
# (docker/qsupervisor.Dockerfile does the same), installing what it needs when missing: the Rust
# target x86_64-unknown-linux-musl (rustup) and musl-gcc (Debian's musl-tools, for the C parts of
# the TLS stack).
#   tests/static-build.sh             debug build   → target/x86_64-unknown-linux-musl/debug/qsupervisor
#   tests/static-build.sh --release   release build → target/x86_64-unknown-linux-musl/release/qsupervisor
# Prints the binary's path on stdout.
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
if [ "${1:-}" = --release ]; then profile=release; args=(--release); fi
log "building qsupervisor for $TARGET ($profile)"
cargo build -q -p qsupervisor --target "$TARGET" "${args[@]}" >&2
target_dir=${CARGO_TARGET_DIR:-target}
echo "$target_dir/$TARGET/$profile/qsupervisor"
