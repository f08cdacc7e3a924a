#!/usr/bin/env bash
# Runs a command with its CPU time capped (a stand-in for a slower machine with the same cores):
# the command and every process it starts share CPUS cores' worth of time per 10 ms, through a
# Linux cgroup (v2 cpu.max, or v1 cpu.cfs_quota_us). Needs root and a writable cgroup tree.
# Usage: scripts/cpu_quota.sh CPUS COMMAND...   e.g. scripts/cpu_quota.sh 1.0 .venv/bin/python run.py bench
set -euo pipefail
if [ $# -lt 2 ]; then
  echo "usage: $0 CPUS COMMAND..." >&2
  exit 2
fi
cpus=$1
shift
period=10000  # microseconds: a short period keeps the cap smooth (less stop-and-go per frame)
quota=$(awk -v c="$cpus" -v p="$period" 'BEGIN { q = int(c * p); if (c + 0 <= 0 || q < 1000) exit 1; print q }') || {
  echo "$0: CPUS must be a number of cores > 0.1, not '$cpus'" >&2
  exit 2
}
name="facedapps-quota-$$"
if [ -f /sys/fs/cgroup/cgroup.controllers ]; then  # cgroup v2
  dir=/sys/fs/cgroup/$name
  mkdir "$dir" 2>/dev/null || { echo "$0: cannot create $dir (root and cgroup v2 with the cpu controller needed)" >&2; exit 1; }
  echo "$quota $period" > "$dir/cpu.max"
elif [ -d /sys/fs/cgroup/cpu ]; then  # cgroup v1
  dir=/sys/fs/cgroup/cpu/$name
  mkdir "$dir" 2>/dev/null || { echo "$0: cannot create $dir (root needed)" >&2; exit 1; }
  echo "$period" > "$dir/cpu.cfs_period_us"
  echo "$quota" > "$dir/cpu.cfs_quota_us"
else
  echo "$0: no cgroup cpu controller under /sys/fs/cgroup" >&2
  exit 1
fi
cleanup() { rmdir "$dir" 2>/dev/null || true; }
trap cleanup EXIT
echo "cpu_quota: $cpus cores' worth of CPU time ($quota us per $period us) for: $*" >&2
# The child joins the cgroup before it starts the command; this shell stays outside it and
# removes the group when the command ends.
bash -c 'echo $$ > "$1/cgroup.procs" && shift && exec "$@"' _ "$dir" "$@"
