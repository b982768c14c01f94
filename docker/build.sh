#!/usr/bin/env bash
# Builds QScaler's images from static musl binaries, FROM scratch: no base image is pulled and no registry is
# needed, so it runs the same with or without one.
#
#   docker/build.sh [--tag TAG] [--repo PREFIX] [--debug] [--test] [--push]
#
#   PREFIX/operator:TAG      qscaler-operator and a CA bundle; non-root (install.sh --image PREFIX/operator)
#   PREFIX/qsupervisor:TAG   qsupervisor alone, to COPY --from into your worker images
#   PREFIX/worker:TAG        qsupervisor as entrypoint plus busybox's shell: a ready worker image
#   PREFIX/test-worker:TAG   (--test) the worker image plus the e2e tests' queue worker
#
# Defaults: --tag 0.1.0 (the workspace version), --repo qscaler, release binaries (--debug: debug ones, a faster
# build for tests). --push pushes every image it built (log in to your registry first). The Docker daemon is
# the one DOCKER_HOST names (tests/node.sh env sets it to the real node's); DOCKER picks the client (default:
# Debian's /usr/bin/docker when present, else docker on PATH).
set -euo pipefail
cd "$(dirname "$0")/.."
log() { printf '[images] %s\n' "$*" >&2; }
die() { printf '[images] error: %s\n' "$*" >&2; exit 1; }

TAG=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n 1)
REPO_PREFIX=qscaler
PROFILE=--release
TEST=0
PUSH=0
while [ $# -gt 0 ]; do
  case "$1" in
    --tag) TAG=${2:-}; [ -n "$TAG" ] || die "--tag needs a value"; shift ;;
    --repo) REPO_PREFIX=${2:-}; [ -n "$REPO_PREFIX" ] || die "--repo needs a value"; shift ;;
    --debug) PROFILE= ;;
    --test) TEST=1 ;;
    --push) PUSH=1 ;;
    -h|--help) sed -n '2,17p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) die "unknown argument $1 (see --help)" ;;
  esac
  shift
done
[ "$TAG" != latest ] || die "use a tag other than 'latest': with it the kubelet always tries to pull"

if [ -z "${DOCKER:-}" ]; then
  if [ -x /usr/bin/docker ]; then DOCKER=/usr/bin/docker; else DOCKER=docker; fi
fi
command -v "$DOCKER" >/dev/null || die "no docker client ($DOCKER); install Docker or set DOCKER"
"$DOCKER" info >/dev/null 2>&1 || die "the Docker daemon at ${DOCKER_HOST:-the default socket} does not answer"
CA_BUNDLE=/etc/ssl/certs/ca-certificates.crt
[ -f "$CA_BUNDLE" ] || die "no CA bundle at $CA_BUNDLE (apt-get install ca-certificates)"
BUSYBOX=$(command -v busybox || true)
[ -n "$BUSYBOX" ] && ! ldd "$BUSYBOX" >/dev/null 2>&1 || die "no static busybox (apt-get install busybox-static)"

bins=(qscaler-operator qsupervisor)
[ "$TEST" = 0 ] || bins+=(qscaler-test-worker)
# shellcheck disable=SC2086 # PROFILE is empty or one flag
out=$(tests/static-build.sh $PROFILE "${bins[@]}")
case "$out" in /*) ;; *) out="$PWD/$out" ;; esac

ctx=$(mktemp -d)
trap 'rm -rf "$ctx"' EXIT
# Debug builds carry hundreds of MB of debug info that a container would only page in: strip it.
for b in "${bins[@]}"; do
  if [ -z "$PROFILE" ] && command -v strip >/dev/null; then strip --strip-debug -o "$ctx/$b" "$out/$b"; else cp "$out/$b" "$ctx/$b"; fi
done
cp "$CA_BUNDLE" "$ctx/ca-certificates.crt"
mkdir -p "$ctx/bin"
cp "$BUSYBOX" "$ctx/bin/busybox"
for applet in $("$BUSYBOX" --list); do [ "$applet" = busybox ] || ln -s busybox "$ctx/bin/$applet"; done

built=()
image() { # name, Dockerfile, extra build args...
  local ref="$REPO_PREFIX/$1:$TAG" file=$2
  shift 2
  log "building $ref"
  DOCKER_BUILDKIT=0 "$DOCKER" build -q -f "docker/$file" -t "$ref" "$@" "$ctx" >/dev/null
  built+=("$ref")
}
image operator operator.Dockerfile
image qsupervisor qsupervisor.Dockerfile
image worker worker.Dockerfile
[ "$TEST" = 0 ] || image test-worker test-worker.Dockerfile --build-arg "WORKER_IMAGE=$REPO_PREFIX/worker:$TAG"

if [ "$PUSH" = 1 ]; then
  for ref in "${built[@]}"; do log "pushing $ref"; "$DOCKER" push "$ref" >/dev/null; done
fi
"$DOCKER" images --format '{{.Repository}}:{{.Tag}}  {{.Size}}' | grep -E "^$REPO_PREFIX/" | grep -F ":$TAG " >&2 || true
printf '%s\n' "${built[@]}"
