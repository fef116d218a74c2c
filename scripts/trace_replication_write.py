#!/usr/bin/env python3
"""Reads what scripts/trace-replication-write.sh recorded (`perf script` lines of system-call
tracepoints, and the nodes' pids by name) and prints, per benchmark write, when
each step happened after the writer's rename, then the medians.

A write starts when the benchmark thread's rename returns. Then, in order:
  read     the active opens a file (the changed one; the first open after the write)
  pushed   the active writes the push to a socket (the first send of a push-sized frame)
  received the watched standby reads from a socket (the first read after the push)
  applying the watched standby's first rename (the apply takes the prepared copy)
  shown    the watched standby's rename after its new link (the target switched)
  seen     the benchmark opens the file on the target
The watched standby is the benchmark's: the first of its candidates that is not the active.
The other standby's flush (syncfs) counts as in the way when it came before that switch.
"""

import re
import statistics
import sys

LINE = re.compile(r"^\s*(.+?)\s+(-?\d+)/(-?\d+)\s+\[(\d+)\]\s+([\d.]+):\s+(\S+):\s*(.*)$")
# A push of one 4 KiB write is its manifest and chunk: larger than consensus' small messages.
PUSH_BYTES = 1800
BENCHMARK_THREAD = "replication_ben"
# The benchmark's candidates in priority order (`CANDIDATES` in node/tests/replication.rs).
CANDIDATES = ["alice", "bob", "charlie"]


def read_events(path):
    events = []
    with open(path, encoding="utf-8", errors="replace") as lines:
        for line in lines:
            m = LINE.match(line)
            if not m:
                continue
            comm, pid, _tid, _cpu, time, event, args = m.groups()
            events.append((float(time), comm, int(pid), event.split(":")[-1], args))
    events.sort(key=lambda e: e[0])
    return events


def first(events, start, test):
    for event in events[start:]:
        if test(event):
            return event
    return None


def sent_bytes(args):
    m = re.search(r"len: (0x[0-9a-f]+)", args)
    return int(m.group(1), 16) if m else 0


def main():
    if len(sys.argv) != 3:
        sys.exit("usage: trace_replication_write.py PERF_SCRIPT_OUTPUT NODES")
    nodes = {}
    with open(sys.argv[2], encoding="utf-8") as lines:
        for line in lines:
            pid, name = line.split()
            nodes[int(pid)] = name
    events = read_events(sys.argv[1])
    writes = [
        i for i, e in enumerate(events) if e[1].startswith(BENCHMARK_THREAD) and e[3] == "sys_exit_rename"
    ]
    steps = ["read", "pushed", "received", "applying", "shown", "seen"]
    rows, in_the_way = [], []
    for n, start in enumerate(writes):
        t0 = events[start][0]
        end = events[writes[n + 1]][0] if n + 1 < len(writes) else t0 + 0.05
        window = [e for e in events[start:] if e[0] < min(end, t0 + 0.05)]
        pushed = first(window, 0, lambda e: e[2] in nodes and e[3] == "sys_enter_sendto" and sent_bytes(e[4]) >= PUSH_BYTES)
        seen = first(window, 0, lambda e: e[1].startswith(BENCHMARK_THREAD) and e[3] == "sys_enter_openat")
        if not pushed or not seen:
            continue
        active = pushed[2]
        read = first(window, 0, lambda e: e[2] == active and e[3] == "sys_enter_openat")
        # The benchmark watches the first of its candidates that is not the active; the other
        # candidate is the other standby.
        standbys = [c for c in CANDIDATES if c != nodes[active]]
        pid_of = {name: pid for pid, name in nodes.items()}
        watched, other = (pid_of.get(name) for name in standbys[:2])
        # Its switch: its rename after its new link.
        link = first(window, 0, lambda e: e[2] == watched and e[3] == "sys_enter_symlink")
        shown = link and first(window, 0, lambda e: e[2] == watched and e[3] == "sys_exit_rename" and e[0] >= link[0])
        if not shown or shown[0] > seen[0]:
            continue
        received = first(window, 0, lambda e: e[2] == watched and e[3] == "sys_exit_recvfrom" and e[0] >= pushed[0])
        applying = received and first(window, 0, lambda e: e[2] == watched and e[3] == "sys_exit_rename" and e[0] >= received[0])
        flush = first(window, 0, lambda e: e[2] == other and e[3] == "sys_enter_syncfs")
        flushed_first = bool(flush and flush[0] < shown[0])
        at = {
            "read": read,
            "pushed": pushed,
            "received": received,
            "applying": applying,
            "shown": shown,
            "seen": seen,
        }
        row = {k: (v[0] - t0) * 1000 if v else float("nan") for k, v in at.items()}
        rows.append(row)
        in_the_way.append(flushed_first)
        print(
            f"write {n:3d} active={nodes[active]} watched={nodes[watched]} "
            + " ".join(f"{k}={row[k]:.2f}" for k in steps)
            + (" (the other standby flushed first)" if flushed_first else "")
        )
    if not rows:
        sys.exit("no write traced whole: trace longer, or check that the benchmark ran")
    print(f"{len(rows)} writes; medians in ms after the writer's rename:")
    for k in steps:
        values = [r[k] for r in rows if r[k] == r[k]]
        print(f"  {k:9s} {statistics.median(values):.3f}" if values else f"  {k:9s} -")
    hit = [r["shown"] for r, w in zip(rows, in_the_way) if w]
    clear = [r["shown"] for r, w in zip(rows, in_the_way) if not w]
    if hit and clear:
        print(
            f"the other standby flushed before the watched one showed the write in {len(hit)} of {len(rows)}: "
            f"shown at {statistics.median(hit):.2f} ms median then, {statistics.median(clear):.2f} ms otherwise"
        )


if __name__ == "__main__":
    main()
