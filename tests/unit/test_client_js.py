"""The page's JavaScript unit tests (tests/client/*.test.mjs) under Node's built-in test runner.

The files are passed explicitly: how ``node --test <directory>`` finds files differs between
Node versions (Node 21+ reads arguments as glob patterns).
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
JS_TESTS = sorted((ROOT / "tests" / "client").glob("*.test.mjs"))
NODE = shutil.which("node")


@pytest.mark.skipif(NODE is None, reason="node is not on PATH: the page's JavaScript unit tests "
                                         "(tests/client/) need Node.js 20 or newer")
@pytest.mark.timeout(180)
def test_client_js_unit_tests():
    assert JS_TESTS, "no tests/client/*.test.mjs files found"
    # TAP output whatever the Node version's default reporter, for the summary lines below.
    proc = subprocess.run([NODE, "--test", "--test-reporter=tap", *map(str, JS_TESTS)], cwd=ROOT,
                          capture_output=True, text=True, timeout=150)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, f"node --test failed (exit {proc.returncode}):\n{output}"
    # An empty run also exits 0: check that tests ran and none was cancelled or skipped.
    counts = {k: int(v) for k, v in re.findall(r"^# (tests|pass|fail|cancelled|skipped) (\d+)$",
                                                output, re.M)}
    assert counts.get("tests", 0) > 0 and counts.get("pass") == counts["tests"], output
    print(f"node --test: {counts['tests']} tests passed in {len(JS_TESTS)} files")
