"""CPU time of a process and its descendants, from /proc (Linux), in microseconds.

Reads each thread's `schedstat` (nanoseconds on CPU) where the kernel provides it,
which is far finer than `stat`'s utime + stime (10 ms clock ticks).
"""

from __future__ import annotations

import os
from pathlib import Path

_TICK_US = 1_000_000 / os.sysconf("SC_CLK_TCK")


def _children(pid: int) -> list[int]:
    out: list[int] = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            out.extend(int(p) for p in (task / "children").read_text().split())
        except OSError:
            continue
    return out


def _own_cpu_us(pid: int) -> float:
    total_ns = 0
    found = False
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            total_ns += int((task / "schedstat").read_text().split()[0])
            found = True
        except (OSError, ValueError, IndexError):
            continue
    if found:
        return total_ns / 1000
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0.0
    fields = stat.rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) * _TICK_US


def tree_cpu_us(pid: int) -> float:
    """CPU time of `pid` and every live descendant, in µs."""
    total = 0.0
    stack = [pid]
    while stack:
        current = stack.pop()
        total += _own_cpu_us(current)
        stack.extend(_children(current))
    return total
