#!/usr/bin/env bash
# The real queue frameworks the preset e2e tests drive (README "Framework presets"), installed from the
# machine's own package configuration (pip's config and PIP_* variables, npm's, apt's sources) into the
# target directory: idempotent, and quick when already there. Run as root on a fresh machine.
#   tests/frameworks.sh                 all of them
#   tests/frameworks.sh rq celery ...   only these
set -euo pipefail
cd "$(dirname "$0")/.."
dir=${CARGO_TARGET_DIR:-$PWD/target}/frameworks
mkdir -p "$dir"

# rq, celery: one Python venv, $dir/py (tests/tests/preset_py_e2e.rs runs its bin/ and bin/python).
# Pinned to the versions whose Redis layout queue/src/layouts/{rq,celery}.rs were read from.
PY_REQUIREMENTS="rq==3.0.0 celery[redis]==5.7.0 kombu[redis]==5.7.0 redis==8.1.0"
python_frameworks() {
  local venv=$dir/py
  if [ -x "$venv/bin/python" ] && [ "$(cat "$venv/.requirements" 2>/dev/null)" = "$PY_REQUIREMENTS" ]; then
    return 0
  fi
  if ! python3 -m venv --help >/dev/null 2>&1 || ! python3 -c 'import ensurepip' 2>/dev/null; then
    apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null
  fi
  rm -rf "$venv"
  python3 -m venv "$venv"
  # shellcheck disable=SC2086 # a list of requirements
  "$venv/bin/pip" install -q --disable-pip-version-check $PY_REQUIREMENTS
  echo "$PY_REQUIREMENTS" >"$venv/.requirements"
}

# sidekiq: Debian's ruby-sidekiq (tests/frameworks/sidekiq/ runs /usr/bin/sidekiq with the system ruby).
sidekiq_framework() {
  command -v sidekiq >/dev/null && return 0
  apt-get install -y -q ruby-sidekiq >/dev/null || { apt-get update -q >/dev/null && apt-get install -y -q ruby-sidekiq >/dev/null; }
}

# bullmq: from npm with Debian's node, into $dir/bullmq/node_modules (the tests set NODE_PATH to it).
# Pinned to the version whose Redis layout queue/src/layouts/bullmq.rs was read from.
BULLMQ=bullmq@5.81.5
bullmq_framework() {
  local d=$dir/bullmq
  [ "$(cat "$d/.requirements" 2>/dev/null)" = "$BULLMQ" ] && [ -d "$d/node_modules/bullmq" ] && return 0
  if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
    apt-get install -y -q nodejs npm >/dev/null || { apt-get update -q >/dev/null && apt-get install -y -q nodejs npm >/dev/null; }
  fi
  rm -rf "$d"
  mkdir -p "$d"
  (cd "$d" && npm install --silent --no-audit --no-fund --no-save "$BULLMQ" >/dev/null)
  echo "$BULLMQ" >"$d/.requirements"
}

[ $# -gt 0 ] || set -- rq celery sidekiq bullmq
for fw in "$@"; do
  case "$fw" in
    rq | celery) python_frameworks ;;
    sidekiq) sidekiq_framework ;;
    bullmq) bullmq_framework ;;
    *)
      echo "frameworks.sh: unknown framework $fw" >&2
      exit 2
      ;;
  esac
done
