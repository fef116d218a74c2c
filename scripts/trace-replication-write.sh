#!/usr/bin/env bash
# Where a 4 KiB write's way to a standby goes, step by step, without changing the code: runs
# the replication benchmark (node/tests/replication.rs, `replication_benchmark`) and records,
# with `perf`, the system calls of every process that mark each step while its writes run;
# then prints, for each write, when the active read the file, wrote the push, the watched
# standby read it, began and ended its apply, and the benchmark read the file — and the
# medians. (Earlier sessions added timestamps to the code for this, then took them out.)
#
#   scripts/trace-replication-write.sh [SECONDS]    # as root; SECONDS of writes traced (12)
#
# Needs: root (system-wide tracepoints), perf (Debian's linux-perf), python3, and the
# benchmark built: cargo test --release -p drchain-node --test replication --no-run.
# TMPDIR chooses the filesystem the nodes run on, as for the benchmark itself. Tracing
# slows every step a little; compare runs traced alike.
set -euo pipefail

seconds="${1:-12}"
here="$(cd "$(dirname "$0")" && pwd)"
root="$(dirname "$here")"

[ "$(id -u)" = 0 ] || { echo "trace-replication-write: needs root (system-wide tracepoints)" >&2; exit 1; }
command -v perf >/dev/null || { echo "trace-replication-write: perf is missing: apt-get install linux-perf" >&2; exit 1; }
command -v python3 >/dev/null || { echo "trace-replication-write: python3 is missing: apt-get install python3" >&2; exit 1; }
bench="$(ls -t "$root"/target/release/deps/replication-* 2>/dev/null | grep -v '\.d$' | head -1 || true)"
[ -n "$bench" ] && [ -x "$root/target/release/drchain" ] || {
  echo "trace-replication-write: build first: cargo build --release -p drchain-node && cargo test --release -p drchain-node --test replication --no-run" >&2
  exit 1
}

out="$(mktemp -d)"
trap 'rm -rf "$out"' EXIT
# Enough writes (one every ~0.33 s) to cover the traced seconds after the nodes start.
trials=$(( seconds * 3 + 60 ))
DRCHAIN_REPLICATION_TRIALS="$trials" "$bench" --ignored --nocapture replication_benchmark \
  >"$out/benchmark.txt" 2>&1 &
benchmark=$!

# The nodes' processes by name, once all four run.
for _ in $(seq 1 120); do
  ps -eo pid=,args= | awk '/drchain run/ { for (i = 1; i <= NF; i++) if ($i == "--name") print $1, $(i + 1) }' \
    >"$out/nodes.txt"
  [ "$(wc -l <"$out/nodes.txt")" -ge 4 ] && break
  sleep 0.5
done
[ "$(wc -l <"$out/nodes.txt")" -ge 4 ] || { echo "trace-replication-write: the benchmark's nodes did not start" >&2; cat "$out/benchmark.txt" >&2; exit 1; }
# Past the start: elections, the first checkpoint, the first writes.
sleep 8
perf record -q -o "$out/perf.data" -a \
  -e syscalls:sys_exit_rename -e syscalls:sys_enter_openat -e syscalls:sys_enter_sendto \
  -e syscalls:sys_exit_recvfrom -e syscalls:sys_enter_symlink -e syscalls:sys_enter_syncfs \
  --exclude-perf -- sleep "$seconds" 2>/dev/null
perf script -i "$out/perf.data" -F comm,pid,tid,cpu,time,event,trace >"$out/perf.txt" 2>/dev/null
wait "$benchmark" || { echo "trace-replication-write: the benchmark failed:" >&2; cat "$out/benchmark.txt" >&2; exit 1; }
grep -E '^4 KiB' "$out/benchmark.txt" || true
python3 "$here/trace_replication_write.py" "$out/perf.txt" "$out/nodes.txt"
