"""scripts/avx2_only.sh: a command and its threads and children see no AVX-512 (CPUID faulting)."""

from __future__ import annotations

import platform
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from bench.cpu import cpu_info

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "avx2_only.sh"


FLAGS = cpu_info()[1]
needs_shim = pytest.mark.skipif(
    platform.machine() != "x86_64" or "cpuid_fault" not in FLAGS or shutil.which("gcc") is None
    or "avx512f" not in FLAGS,
    reason="needs x86-64 Linux with CPUID faulting, gcc, and AVX-512 to hide")

SEEN = """
import threading, subprocess, sys
from bench.cpu import cpu_model
out = {}
def first_numpy_import():  # NumPy reads CPUID on import: here in a thread started later
    from numpy._core._multiarray_umath import __cpu_features__ as f
    out.update(f)
t = threading.Thread(target=first_numpy_import); t.start(); t.join()
child = subprocess.run([sys.executable, "-c",
    "from numpy._core._multiarray_umath import __cpu_features__ as f; print(f['AVX512F'])"],
    capture_output=True, text=True, check=True).stdout.strip()
print(out["AVX512F"], out["AVX2"], child)
print(cpu_model())
"""


def run(*cmd: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(SCRIPT), *cmd], cwd=ROOT, capture_output=True, text=True,
                          timeout=120)


@needs_shim
def test_threads_and_children_see_avx2_without_avx512() -> None:
    plain = subprocess.run([sys.executable, "-c", SEEN], cwd=ROOT, capture_output=True,
                           text=True, timeout=120, check=True).stdout.splitlines()
    assert plain[0] == "True True True"
    assert "avx512f" in plain[1]
    hidden = run(sys.executable, "-c", SEEN)
    assert hidden.returncode == 0, hidden.stderr
    lines = hidden.stdout.splitlines()
    assert lines[0] == "False True False"
    assert "avx512f" not in lines[1] and "hidden by scripts/avx2_only.sh" in lines[1]


@needs_shim
def test_a_real_crash_still_reaches_the_programs_handler() -> None:
    # faulthandler installs its SIGSEGV handler after the shim's: a real fault must reach it.
    crash = run(sys.executable, "-X", "faulthandler", "-c", "import ctypes; ctypes.string_at(0)")
    assert crash.returncode == 128 + 11  # the shell's code for a command killed by SIGSEGV
    assert "Fatal Python error: Segmentation fault" in crash.stderr  # faulthandler's report


@needs_shim
def test_exit_status_is_the_commands() -> None:
    assert run(sys.executable, "-c", "raise SystemExit(7)").returncode == 7


def test_usage() -> None:
    done = subprocess.run([str(SCRIPT)], capture_output=True, text=True, timeout=30)
    assert done.returncode == 2 and "usage" in done.stderr
