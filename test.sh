#!/usr/bin/env bash
# Install everything the tests need (first run only), then lint, type-check and run all tests.
# Extra arguments go to pytest (e.g. `./test.sh -k batcher`).
set -euo pipefail
cd "$(dirname "$0")"
scripts/setup.sh test
if ! command -v chromium >/dev/null 2>&1 && ! command -v chromium-browser >/dev/null 2>&1; then
  if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
    echo "test: installing Debian's chromium for the browser tests" >&2
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium) >&2
  else
    echo "test: chromium not found; browser tests will be skipped (apt-get install -y chromium)" >&2
  fi
fi
export TF_CPP_MIN_LOG_LEVEL=2
.venv/bin/ruff check run.py core server training bench streamer cluster tests tools
.venv/bin/mypy run.py core server training bench streamer cluster
.venv/bin/lint-imports --no-cache   # the layout's import rules (pyproject.toml)
exec .venv/bin/python -m pytest -q -p no:cacheprovider "$@"
