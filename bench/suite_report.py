"""What a `make bench` run concludes (`bench.suite`): issue 17's targets with met /
not met, the ratios behind them, the chart and the printed report. It reads the run's
document (the JSON `bench.suite` writes) and measures nothing itself."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bench.modes import Mode

#: the run's two modes (every body a miss: `temperature` 0, a prompt never repeated)
MODES = (
    Mode("json", stream=False, body="cache-miss"),
    Mode("stream-16", stream=True, body="cache-miss"),
)
#: every target of a run, in the order the report and the chart give them
ALL = (
    "direct",
    "floor",
    "gateway-everything",
    "gateway-everything-cp",
    "gateway-hit",
    "litellm",
    "portkey",
)
TARGETS_MET = {
    "cpu_vs_floor": 1.3,
    "portkey_vs_gateway": 5.0,
    "litellm_vs_gateway": 50.0,
    "added_p99_ms": 0.3,
    "rss_10k_mb": 300.0,
    "drain_events_per_s": 20_000.0,
}


def verdicts(doc: dict[str, Any], rate: float) -> list[dict[str, Any]]:
    """Issue 17's targets, each with its figure and met / not met."""
    closed, opened = doc["closed"], doc["open"]
    out: list[dict[str, Any]] = []

    def cpu(table: dict[str, Any], target: str, mode: str, at: float | None = None) -> float:
        key = f"{target} {mode}" + (f" @{at:g}" if at is not None else "")
        row = table.get(key)
        return float(row["cpu_us_per_req"]) if row and not row["errors"] else float("nan")

    for target, receipts in (
        ("gateway-everything", ""),
        ("gateway-everything-cp", " (receipts as checkpoints)"),
    ):
        for mode in (m.name for m in MODES):
            for loop, table, at in (("open", opened, rate), ("closed", closed, None)):
                ratio = cpu(table, target, mode, at) / cpu(table, "floor", mode, at)
                out.append(
                    {
                        "what": f"everything-on{receipts} ≤ 1.3x floor CPU/request, "
                        f"{loop} loop, {mode}",
                        "figure": round(ratio, 2),
                        "met": ratio <= TARGETS_MET["cpu_vs_floor"],
                    }
                )
    for peer, need in (("portkey", 5.0), ("litellm", 50.0)):
        for mode in (m.name for m in MODES):
            ratio = cpu(closed, peer, mode) / cpu(closed, "gateway-everything", mode)
            out.append(
                {
                    "what": f"≥ {need:g}x cheaper than {peer} per request, closed loop, {mode}",
                    "figure": round(ratio, 2),
                    "met": ratio >= need,
                }
            )
    for mode in (m.name for m in MODES):
        gw, fl = (
            opened.get(f"gateway-everything {mode} @{rate:g}"),
            opened.get(f"floor {mode} @{rate:g}"),
        )
        keys = ["p99_ms"] + (["ttfb_p99_ms"] if mode != "json" else [])
        for key in keys:
            added = gw[key] - fl[key] if gw and fl else float("nan")
            out.append(
                {
                    "what": f"added {key[:-3]} over the floor ≤ 0.3 ms at {rate:g}/s, {mode}",
                    "figure": round(added, 3),
                    "met": added <= TARGETS_MET["added_p99_ms"],
                }
            )
    mem = [m for m in doc["memory"] if m["target"] == "gateway-everything"]
    biggest = max(mem, key=lambda m: m["streams"]) if mem else None
    if biggest:
        full = biggest["open_peak"] >= 10_000 and biggest["errors"] == 0
        per_stream = biggest.get("kb_per_stream")
        at_10k = (
            f", ~{biggest['idle_rss_mb'] + per_stream * 10_000 / 1024:.0f} MB at 10,000 "
            f"at {per_stream:.1f} KB a stream"
            if per_stream and not full
            else ""
        )
        out.append(
            {
                "what": "10,000 concurrent streams in one process under 300 MB "
                f"(reached {biggest['open_peak']:.0f} open, {biggest['errors']:.0f} failed"
                f"{at_10k})",
                "figure": biggest["peak_rss_mb"],
                "met": full and biggest["peak_rss_mb"] < TARGETS_MET["rss_10k_mb"],
            }
        )
    if d := doc.get("drain"):
        lost = d.get("offered", 0) - d.get("written", -1)
        rate_ok = d.get("rate", 0) >= 20_000 and d.get("drain_lag_s", 99) <= 1.0
        out.append(
            {
                "what": f"drain ≥ 20,000 events/s sustained for {d['seconds']} s, nothing lost "
                f"(lost {lost:.0f}, lag {d.get('drain_lag_s', float('nan'))} s)",
                "figure": d.get("burst_events_per_s", float("nan")),
                "met": d.get("status") == 0 and lost == 0 and rate_ok,
            }
        )
    return out


def ratio_table(doc: dict[str, Any], rate: float) -> dict[str, float]:
    """gateway ÷ floor and peer ÷ gateway-everything, per loop and mode (open loop at
    the rate the peer ran at)."""
    out: dict[str, float] = {}
    for loop in ("closed", "open"):
        table = doc[loop]
        for row in table.values():
            name, mode, at = row["target"], row["mode"], row.get("rate") or None
            suffix = f" @{at:g}" if loop == "open" else ""
            base = {
                "gateway-everything": "floor",
                "gateway-everything-cp": "floor",
                "gateway-hit": "floor",
            }.get(name, "gateway-everything" if name in ("litellm", "portkey") else None)
            other = table.get(f"{base} {mode}{suffix}") if base else None
            if other and other["cpu_us_per_req"]:
                key = f"{loop} {name}/{base} {mode}{suffix}"
                out[key] = round(row["cpu_us_per_req"] / other["cpu_us_per_req"], 2)
    return out


def chart(doc: dict[str, Any], rate: float, path: Path) -> str | None:
    """CPU per request (closed loop) and added p99 (open loop at `rate`) per target:
    a PNG at `path`; None, or why not."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as exc:
        return f"no chart: {exc} (pip install '.[bench]')"
    names = [n for n in ALL if any(r["target"] == n for r in doc["closed"].values())]
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.8))
    width = 0.38
    for i, mode in enumerate(m.name for m in MODES):
        xs = [x + (i - 0.5) * width for x in range(len(names))]
        cpus = [_measured(doc["closed"].get(f"{n} {mode}"), "cpu_us_per_req") for n in names]
        direct = _measured(doc["open"].get(f"direct {mode} @{rate:g}"), "p99_ms")
        added = []
        for n in names:
            p99 = _measured(doc["open"].get(f"{n} {mode} @{rate:g}"), "p99_ms")
            added.append(None if p99 is None or direct is None else p99 - direct)
        for ax, values, fmt in ((axes[0], cpus, "{:.0f}"), (axes[1], added, "{:.2f}")):
            bars = ax.bar(xs, [v or 0 for v in values], width, label=mode)
            # not measured (a target that cannot sustain the rate, or failed): say so
            labels = ["n/a" if v is None else fmt.format(v) for v in values]
            ax.bar_label(bars, labels=labels, fontsize=7)
    axes[0].set_yscale("log")
    axes[0].set_title("CPU µs per request (closed loop, log scale)")
    axes[1].set_title(f"added p99 over direct, ms (open loop at {rate:g}/s)")
    for ax in axes:
        ax.set_xticks(range(len(names)))
        ax.set_xticklabels(names, rotation=20, fontsize=8)
        ax.legend(fontsize=8)
    fig.suptitle(f"bench.suite {doc['when']} ({doc['machine']['cores']} cores)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return None


def _measured(row: dict[str, Any] | None, key: str) -> float | None:
    """A figure of a run that answered (None: not run, or every request failed)."""
    if row is None or key not in row or row.get("rps", 0) <= 0:
        return None
    if row.get("errors", 0) and row["errors"] >= row.get("requests", row["errors"]) / 2:
        return None
    return float(row[key])


def print_report(doc: dict[str, Any]) -> None:
    heads = ("req/s", "cpu µs", "p50", "p90", "p99", "ttfb p50", "ttfb p99", "err")
    keys = ("rps", "cpu_us_per_req", "p50_ms", "p90_ms", "p99_ms", "ttfb_p50_ms")
    keys += ("ttfb_p99_ms", "errors")
    for loop in ("closed", "open"):
        print(f"\n{loop} loop" + (" (16 clients)" if loop == "closed" else " (rate per row)"))
        print(f"{'target / mode':<36}" + "".join(f"{h:>10}" for h in heads))
        for key, row in doc[loop].items():
            line = f"{key:<36}" + "".join(f"{row.get(k, 0):>10.2f}" for k in keys)
            print(line)
    if doc["added"]:
        print("\nadded latency over direct at the same rate, ms (p50 / p90 / p99; streams: ttfb)")
        for key, a in doc["added"].items():
            print(f"  {key:<40} " + "  ".join(f"{k} {v:+.2f}" for k, v in a.items()))
    if doc["memory"]:
        print("\nslow streams at once: peak RSS of the target's process tree")
        for m in doc["memory"]:
            print(
                f"  {m['target']:<20} {m['streams']:>6} streams"
                f"  open at once {m['open_peak']:>6.0f}"
                f"  failed {m['errors']:>6.0f}  idle {m['idle_rss_mb']:>7.1f} MB"
                f"  peak {m['peak_rss_mb']:>7.1f} MB"
                f"  ({m.get('kb_per_stream') or float('nan'):.1f} KB a stream)"
            )
    if doc.get("drain"):
        print(f"\ndrain: {doc['drain']}")
    print("\nratios (CPU per request)")
    for key, value in doc["ratios"].items():
        print(f"  {key:<60} x{value:.2f}")
    print("\ntargets")
    for v in doc["verdicts"]:
        state = "no figure" if v["figure"] != v["figure"] else "met" if v["met"] else "NOT MET"
        print(f"  {state:<9}  {v['what']}: {v['figure']}")
    for name, reason in doc["skipped"].items():
        print(f"skipped {name}: {reason}")
