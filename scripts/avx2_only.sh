#!/usr/bin/env bash
# Runs a command as if this CPU had AVX2 but no AVX-512, AMX or AVX-VNNI (a stand-in for the
# AVX2-only machines some deployments get): every library's run-time CPU detection (LiteRT's
# XNNPACK, OpenCV, NumPy, oneDNN) then picks its AVX2 kernels. The command and the processes it
# starts all see it. Needs x86-64 Linux with CPUID faulting (the "cpuid_fault" flag in
# /proc/cpuinfo) and gcc. It changes the instructions used, not the clock or the caches: a real
# AVX2-only CPU is also older, so read the figures as the code's cost on AVX2, not as that CPU's.
# Usage: scripts/avx2_only.sh COMMAND...   e.g. scripts/avx2_only.sh .venv/bin/python run.py bench
set -euo pipefail
if [ $# -lt 1 ]; then
  echo "usage: $0 COMMAND..." >&2
  exit 2
fi
if ! grep -qw cpuid_fault /proc/cpuinfo 2>/dev/null; then
  echo "$0: this CPU or kernel has no CPUID faulting (cpuid_fault); AVX-512 cannot be hidden" >&2
  exit 2
fi
if ! command -v gcc >/dev/null 2>&1; then
  echo "$0: gcc is needed to build the CPUID shim (apt-get install gcc)" >&2
  exit 2
fi
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
gcc -O2 -shared -fPIC -o "$dir/hide_avx512.so" "$(dirname "$0")/hide_avx512.c" -ldl
echo "avx2_only: AVX-512, AMX and AVX-VNNI hidden for: $*" >&2
# glibc picks its string functions before the shim loads: its tunables hide the same features.
status=0
LD_PRELOAD="$dir/hide_avx512.so${LD_PRELOAD:+:$LD_PRELOAD}" \
  GLIBC_TUNABLES="glibc.cpu.hwcaps=-AVX512F,-AVX512DQ,-AVX512CD,-AVX512BW,-AVX512VL,-AVX_VNNI${GLIBC_TUNABLES:+:$GLIBC_TUNABLES}" \
  "$@" || status=$?
exit "$status"
