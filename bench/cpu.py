"""CPU time of a process and its descendants, from /proc (Linux), in microseconds."""

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
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0.0
    fields = stat.rsplit(")", 1)[1].split()
    utime, stime = int(fields[11]), int(fields[12])
    return (utime + stime) * _TICK_US


def tree_cpu_us(pid: int) -> float:
    """utime + stime of `pid` and every live descendant, in µs (10 ms resolution)."""
    total = 0.0
    stack = [pid]
    while stack:
        current = stack.pop()
        total += _own_cpu_us(current)
        stack.extend(_children(current))
    return total
