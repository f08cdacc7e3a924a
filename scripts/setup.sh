#!/usr/bin/env bash
# Creates .venv (once) and installs FaceDApps with the given extras; idempotent and quiet.
# Usage: scripts/setup.sh [extras]   e.g. scripts/setup.sh test
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  echo "setup: creating .venv" >&2
  "$PY" -m venv .venv
fi
stamp=".venv/.facedapps-installed-${1:-base}"
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  echo "setup: installing Python packages (first run takes a few minutes)" >&2
  .venv/bin/python -m pip install -q --upgrade pip >&2
  if [ -n "${1:-}" ]; then spec=".[$1]"; else spec="."; fi
  .venv/bin/python -m pip install -q -e "$spec" >&2
  touch "$stamp"
fi
