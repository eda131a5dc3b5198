"""CPU time of a process and its live descendants, read from /proc (Linux), in µs.

Two sources, read side by side:

- `stat`: utime + stime of the thread group (fields 14 and 15 of
  `/proc/<pid>/stat`), in clock ticks of 1/`SC_CLK_TCK` s — 10 ms here. Counts
  threads that have already exited. A measured run must burn at least a few
  hundred ticks (several thousand requests) for the figure to mean anything.
- `schedstat`: the first field of `/proc/<pid>/task/<tid>/schedstat`, nanoseconds
  on CPU, summed over the live threads. Far finer; misses threads that exited
  during the run (none do in the processes we measure).

Descendants come from `/proc/<pid>/task/*/children`, or from a scan of every
process's parent pid when the kernel does not provide that file.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

_TICK_US = 1_000_000 / os.sysconf("SC_CLK_TCK")
_PROC = Path("/proc")


@dataclass(frozen=True)
class CpuTime:
    """One reading of a process tree: both sources, in µs."""

    stat_us: float
    schedstat_us: float

    def __sub__(self, other: CpuTime) -> CpuTime:
        return CpuTime(self.stat_us - other.stat_us, self.schedstat_us - other.schedstat_us)

    @property
    def best_us(self) -> float:
        """The finer source when the kernel keeps it, else the clock ticks."""
        return self.schedstat_us if self.schedstat_us > 0 else self.stat_us


def tree_cpu(pid: int) -> CpuTime:
    """CPU time of `pid` and every live descendant."""
    stat = sched = 0.0
    for member in tree(pid):
        stat += _stat_us(member)
        sched += _schedstat_us(member)
    return CpuTime(stat, sched)


def tree_cpu_us(pid: int) -> float:
    """CPU time of `pid` and its live descendants in µs, from the finer source."""
    return tree_cpu(pid).best_us


def tree(pid: int) -> list[int]:
    """`pid` and every live descendant."""
    members: list[int] = []
    stack = [pid]
    scanned: dict[int, list[int]] | None = None
    while stack:
        current = stack.pop()
        members.append(current)
        children = _children(current)
        if children is None:
            scanned = scanned if scanned is not None else _children_by_scan()
            children = scanned.get(current, [])
        stack.extend(children)
    return members


def _children(pid: int) -> list[int] | None:
    """Children from the kernel's per-thread lists; None when the kernel has none."""
    tasks = list((_PROC / str(pid) / "task").glob("*"))
    out: list[int] = []
    for task in tasks:
        try:
            out.extend(int(p) for p in (task / "children").read_text().split())
        except FileNotFoundError:
            if task.exists():
                return None  # CONFIG_PROC_CHILDREN is off
        except OSError:
            continue
    return out


def _children_by_scan() -> dict[int, list[int]]:
    """Every process's children, from the parent pid in each `/proc/<pid>/stat`."""
    out: dict[int, list[int]] = {}
    for entry in _PROC.iterdir():
        if not entry.name.isdigit():
            continue
        fields = _stat_fields(int(entry.name))
        if fields:
            out.setdefault(int(fields[1]), []).append(int(entry.name))
    return out


def _stat_fields(pid: int) -> list[str]:
    """Fields of /proc/<pid>/stat after the command name (field 3 is index 0)."""
    try:
        stat = (_PROC / str(pid) / "stat").read_text()
    except OSError:
        return []
    return stat.rsplit(")", 1)[1].split()


def _stat_us(pid: int) -> float:
    fields = _stat_fields(pid)
    if not fields:
        return 0.0
    return (int(fields[11]) + int(fields[12])) * _TICK_US


def _schedstat_us(pid: int) -> float:
    total_ns = 0
    for task in (_PROC / str(pid) / "task").glob("*"):
        try:
            total_ns += int((task / "schedstat").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            continue
    return total_ns / 1000
