#!/usr/bin/env python3
"""Kept for old command lines: ``python tools/reexport.py ARGS`` runs
``python run.py ensemble ARGS``."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from run import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(["ensemble", *sys.argv[1:]]))
