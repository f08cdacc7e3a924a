"""``run.py bench``: it runs end to end (short), and its server never outlives it.



"""

from __future__ import annotations

import os
import select
import subprocess
import sys
import textwrap

import pytest

from tests.helpers import ROOT

MODEL = ROOT / "models" / "default"


@pytest.mark.slow
@pytest.mark.timeout(400)
def test_quick_bench_prints_every_section(tmp_path):
    r = subprocess.run(
        [sys.executable, str(ROOT / "run.py"), "bench", "--quick", "--clients", "1",
         "--seconds", "3", "--repeat", "2", "--out", str(tmp_path)],
        capture_output=True, text=True, timeout=380, cwd=ROOT,
        env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"))
    assert r.returncode == 0, (r.stdout + r.stderr)[-3000:]
    text = (tmp_path / "bench.txt").read_text()
    for part in ("== 1. Classifier", "keras eager model(x)", "litert-int8",
                 "== 2. Isolated pipeline", "isolated pipeline:", "== 3. Live server",
                 "== Goals (issues 4 and 16)", "one client p95", "CPU ms/frame",
                 "live overhead:", "client video:", "decode H264 -> BGR"):
        assert part in text, text
    # The live table's one-client row: the client received results (fps/client min > 0).
    live = text.split("== 3. Live server")[1].splitlines()
    header = next(i for i, line in enumerate(live) if line.startswith("clients"))
    row = live[header + 2].split()
    assert row[0] == "1" and float(row[1]) > 0, live[header:header + 3]
    # ... and the load-adaptive columns: the share of faces reused, the server's reuse age
    # (between --reuse-s 0.2 and --reuse-max-s 0.3 by default), and the share of frames shed
    # to the fast detector (none with one client).
    assert "faces reused" in live[header], live[header]
    assert live[header].rstrip().endswith("reuse s at end  shed"), live[header]
    assert row[-3].endswith("%") and 0.2 <= float(row[-2]) <= 0.3, row
    assert row[-1] == "0%", row
    # --repeat 2: the row is the lower of two interleaved runs, both listed under the table
    rounds = next(line for line in live if line.startswith("1 client(s), 2 runs: total "))
    totals = [float(v) for v in rounds.split("total ")[1].split(" results/s")[0].split(" / ")]
    assert "2 interleaved rounds" in live[0] and float(row[3]) == min(totals), rounds
    assert "Traceback" not in r.stderr


@pytest.mark.timeout(120)
def test_bench_server_dies_with_a_killed_bench(tmp_path):
    # A bench process that starts its server, then is SIGKILLed (no finally, no atexit).
    script = textwrap.dedent(f"""
        import os, signal, sys
        from pathlib import Path
        sys.path.insert(0, {str(ROOT)!r})
        from bench.bench import Server
        s = Server({str(MODEL)!r}, Path({str(tmp_path)!r}), 8, 0.0)
        print(s.proc.pid, flush=True)
        os.kill(os.getpid(), signal.SIGKILL)
    """)
    r = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                       timeout=60, cwd=ROOT)
    pid = int(r.stdout.split()[0])
    try:
        pidfd = os.pidfd_open(pid)
    except ProcessLookupError:
        return  # gone (and reaped) already
    try:
        # Readable once the process has exited: a bounded wait on that, not a polling loop.
        exited = select.select([pidfd], [], [], 30)[0]
    finally:
        os.close(pidfd)
    if not exited:
        os.kill(pid, 9)
        pytest.fail(f"bench server {pid} outlived its killed parent")
