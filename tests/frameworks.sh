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

[ $# -gt 0 ] || set -- rq celery
for fw in "$@"; do
  case "$fw" in
    rq | celery) python_frameworks ;;
    *)
      echo "frameworks.sh: unknown framework $fw" >&2
      exit 2
      ;;
  esac
done
