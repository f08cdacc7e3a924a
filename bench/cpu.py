"""The CPU a bench ran on, as every bench prints it (figures differ 2-3x between CPU types)."""

from __future__ import annotations

import contextlib
import importlib
import os

EXTENSIONS = ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile")


def hidden_avx512(flags: set[str]) -> bool:
    """True when the CPU has AVX-512 but this process's libraries do not see it
    (``scripts/avx2_only.sh``): NumPy's run-time detection reads the same CPUID as LiteRT's."""
    if "avx512f" not in flags:
        return False
    for module in ("numpy._core._multiarray_umath", "numpy.core._multiarray_umath"):  # 2.x, 1.x
        with contextlib.suppress(ImportError, AttributeError):
            seen = importlib.import_module(module).__cpu_features__
            return not seen.get("AVX512F", True)
    return False


def cpu_info() -> tuple[str, set[str]]:
    """The first CPU's model name and flags in /proc/cpuinfo (``"unknown CPU"`` and no flags
    where there is none)."""
    name, flags = "unknown CPU", set[str]()
    with contextlib.suppress(OSError):
        for line in open("/proc/cpuinfo"):
            key, _, value = line.partition(":")
            if key.strip() == "model name" and name == "unknown CPU":
                name = value.strip()
            elif key.strip() == "flags" and not flags:
                flags = set(value.split())
    return name, flags


def cpu_model() -> str:
    """The CPU's model name, its core count and the vector extensions that matter here (from
    /proc/cpuinfo, less those hidden from this process)."""
    name, flags = cpu_info()
    ext = [f for f in EXTENSIONS if f in flags]
    if hidden_avx512(flags):
        ext = [f for f in ext if f == "avx2"]
        ext.append("AVX-512, AMX and AVX-VNNI hidden by scripts/avx2_only.sh")
    return f"{os.cpu_count()} cores of {name} ({', '.join(ext) or 'no AVX2'})"
