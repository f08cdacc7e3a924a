#!/usr/bin/env bash
# Install what is needed (first run only) and serve the shipped model on http://127.0.0.1:8080.
# Any arguments go to `python run.py` (e.g. `./serve.sh serve --port 9000`).
set -euo pipefail
cd "$(dirname "$0")"
scripts/setup.sh
exec .venv/bin/python run.py "$@"
