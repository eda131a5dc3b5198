"""The bench's output: per-round results reduced to medians, the gateway/floor
ratios, the differences between two gateways (or two modes) in units of the floor's
CPU, the table printed after a run, and the JSON written to
`bench/results/latest.json`.
"""

from __future__ import annotations

import os
import statistics
from pathlib import Path
from typing import Any

import orjson

Row = dict[str, Any]
#: per (target, mode), one load generator result per round, in round order
Runs = dict[tuple[str, str], list[dict[str, float]]]
#: (target, mode) set beside (reference target, reference mode)
Pairs = list[tuple[tuple[str, str], tuple[str, str]]]

_COLUMNS = (
    # (heading, row key, format)
    ("req/s", "rps", "{:>8.0f}"),
    ("cpu µs/req", "cpu_us_per_req", "{:>10.0f}"),
    ("±%", "cpu_spread_pct", "{:>4.0f}"),
    ("(ticks)", "cpu_stat_us_per_req", "{:>8.0f}"),
    ("mock µs/req", "mock_cpu_us_per_req", "{:>11.0f}"),
    ("db µs/req", "db_cpu_us_per_req", "{:>9.0f}"),
    ("p50 ms", "p50_ms", "{:>7.2f}"),
    ("p99 ms", "p99_ms", "{:>7.2f}"),
    ("errors", "errors", "{:>6.0f}"),
)
#: what answered a gateway's requests, from its request log (lever modes only)
_LEVER_COLUMNS = (
    ("hit %", "cache_hit_pct", "{:>5.0f}"),
    ("joined %", "flight_join_pct", "{:>8.0f}"),
)


def table(rows: list[Row], *, levers: bool = False) -> str:
    """One line per target and mode, the figures aligned; `levers`: with the share of
    requests the cache answered and the share that joined a flight."""
    columns = _COLUMNS + _LEVER_COLUMNS if levers else _COLUMNS
    name_w = max([len("target"), *(len(r["target"]) for r in rows)])
    mode_w = max([len("mode"), *(len(r["mode"]) for r in rows)])
    head = f"{'target':<{name_w}}  {'mode':<{mode_w}}"
    head += "".join(f"  {h:>{len(fmt.format(0))}}" for h, _, fmt in columns)
    lines = [head]
    for row in rows:
        line = f"{row['target']:<{name_w}}  {row['mode']:<{mode_w}}"
        line += "".join(f"  {fmt.format(row.get(key, 0.0))}" for _, key, fmt in columns)
        lines.append(line)
    return "\n".join(lines)


def summarize(runs: Runs) -> list[Row]:
    """One row per target and mode: each figure's median over the rounds, errors
    summed, and the CPU figure's spread (half its range, in % of the median)."""
    out: list[Row] = []
    for (name, mode), results in runs.items():
        row: Row = {"target": name, "mode": mode}
        row |= {key: statistics.median(r[key] for r in results) for key in results[0]}
        row["errors"] = sum(r["errors"] for r in results)
        cpu = [r["cpu_us_per_req"] for r in results]
        row["cpu_spread_pct"] = (max(cpu) - min(cpu)) / 2 / row["cpu_us_per_req"] * 100
        out.append(row)
    return out


def ratios(runs: Runs, modes: list[str]) -> dict[str, dict[str, float]]:
    """Per gateway-like target and mode, its CPU/request and p50 over the floor's.

    Taken round by round (rounds interleave the targets, so drift common to a round
    cancels out), then the median over the rounds, with the lowest and highest.
    `cpu_best` is the ratio of each side's lowest CPU/request over the rounds: a
    busy neighbour only ever adds CPU time, so the least-disturbed run of each is
    the closest to its own cost."""
    names = dict.fromkeys(n for n, _ in runs if n not in ("direct", "floor"))
    out: dict[str, dict[str, float]] = {}
    for name in names:
        for mode in modes:
            floor, target = runs.get(("floor", mode)), runs.get((name, mode))
            if not floor or not target:
                continue
            pairs = [
                (t, f)
                for t, f in zip(target, floor, strict=True)
                if f["cpu_us_per_req"] and f["p50_ms"]
            ]
            if not pairs:
                continue
            cpu = [t["cpu_us_per_req"] / f["cpu_us_per_req"] for t, f in pairs]
            with_db = [
                (t["cpu_us_per_req"] + t["db_cpu_us_per_req"]) / f["cpu_us_per_req"]
                for t, f in pairs
            ]
            p50 = [t["p50_ms"] / f["p50_ms"] for t, f in pairs]
            best = min(t["cpu_us_per_req"] for t, _ in pairs) / min(
                f["cpu_us_per_req"] for _, f in pairs
            )
            out[f"{name}/floor {mode}"] = {
                "cpu": round(statistics.median(cpu), 3),
                "cpu_best": round(best, 3),
                "cpu_min": round(min(cpu), 3),
                "cpu_max": round(max(cpu), 3),
                "cpu_with_db": round(statistics.median(with_db), 3),
                "p50": round(statistics.median(p50), 3),
            }
    return out


def ratio_lines(found: dict[str, dict[str, float]]) -> str:
    """The ratios, one line each."""
    width = max((len(k) for k in found), default=0)
    lines = []
    for key, r in found.items():
        line = f"{key:<{width}}  cpu x{r['cpu']:.2f} ({r['cpu_min']:.2f}-{r['cpu_max']:.2f})"
        line += f"  best x{r['cpu_best']:.2f}"
        line += f"  p50 x{r['p50']:.2f}"
        if r["cpu_with_db"] - r["cpu"] >= 0.01:
            line += f"  (cpu with its database x{r['cpu_with_db']:.2f})"
        lines.append(line)
    return "\n".join(lines)


def deltas(runs: Runs, pairs: Pairs) -> dict[str, dict[str, float]]:
    """For each pair, the first side's CPU/request minus the second's, in units of the
    floor's CPU/request in the second side's mode: the yardstick of "rises by no more
    than 0.05x the floor's". Round by round (the sides of a pair ran in the same round),
    then the median with the lowest and highest; `best` sets each side's lowest figure
    over the rounds against the floor's lowest. Pairs with a side not run are left out."""
    out: dict[str, dict[str, float]] = {}
    for (name, mode), (ref, ref_mode) in pairs:
        target, other = runs.get((name, mode)), runs.get((ref, ref_mode))
        floor = runs.get(("floor", ref_mode))
        if not target or not other or not floor:
            continue
        cpu = "cpu_us_per_req"
        steps = [
            (t[cpu] - o[cpu]) / f[cpu]
            for t, o, f in zip(target, other, floor, strict=True)
            if f[cpu]
        ]
        if not steps:
            continue
        lowest = [min(r[cpu] for r in side) for side in (target, other, floor)]
        out[f"{name} {mode} - {ref} {ref_mode}"] = {
            "delta": round(statistics.median(steps), 3),
            "delta_min": round(min(steps), 3),
            "delta_max": round(max(steps), 3),
            "delta_best": round((lowest[0] - lowest[1]) / lowest[2], 3),
        }
    return out


def delta_lines(found: dict[str, dict[str, float]]) -> str:
    """The differences, one line each, in units of the floor's CPU/request."""
    width = max((len(k) for k in found), default=0)
    lines = []
    for key, d in found.items():
        line = f"{key:<{width}}  {d['delta']:+.3f} floor ({d['delta_min']:+.3f} to "
        line += f"{d['delta_max']:+.3f})  best {d['delta_best']:+.3f}"
        lines.append(line)
    return "\n".join(lines)


def write_json(path: Path, doc: dict[str, Any]) -> None:
    """Write `doc` to `path` whole or not at all."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".json.tmp")
    partial.write_bytes(orjson.dumps(doc, option=orjson.OPT_INDENT_2))
    os.replace(partial, path)
