"""`make bench`: the floor, the gateway with everything on, a cache hit, and the peers
(LiteLLM, Portkey), measured in one run, with met / not met for issue 17's targets.

    python -m bench.suite [--quick] [--targets floor,gateway-everything,...]
                          [--rate 500] [--requests N] [--rounds R]
                          [--streams 1000,10000] [--no-drain] [--out FILE]

Targets: `direct` (the mock itself), `floor` (bench/floor.py), `gateway-everything`
(auth, metering and receipts, the exact cache and singleflight on and missing, a
routing rule that matches, slim on, a spend cap and rate/concurrency limits enabled
and far away), `gateway-everything-cp` (the same, receipts signed as checkpoints:
`RECOVEA_RECEIPT_SIGNING=checkpoint`), `gateway-hit` (the same workspace setup as
gateway-everything, every request a cache hit),
`litellm` and `portkey` (bench/peers.py). Two modes: `json` (non-streamed chat) and
`stream-16` (16 chunks). Every request body has `temperature` 0 and a prompt no other
request repeats (the gateway's cache and singleflight look and miss; the others just
forward it), except gateway-hit's, which is one fixed prompt.

Phases, for the targets that started (one that cannot be installed or started is
skipped with the reason, and the run goes on):

1. closed loop: 16 clients as fast as the target answers; CPU µs per request of the
   target's own process tree, and its throughput at saturation;
2. open loop at `--rate` (500/s): CPU µs per request and latency. A target whose
   saturation is below 1.5x the rate gets a lower rate (half its saturation,
   rounded down to 5/s), and direct, floor and gateway-everything are run at that
   rate too, so a peer's ratio is taken at the arrivals it saw. Added latency is the
   target's p50/p90/p99 (and for streams the time to first byte) minus direct's at
   the same rate;
3. memory: N slow streams at once (`--streams`, chunks 600 ms apart, ~10 s each,
   opened at 2,000/s), sampling the RSS of the target's process tree every 100 ms;
   `open_peak` is how many streams were open at once at the client (the bench raises
   its open-files limit as far as it is allowed; each proxied stream takes two);
4. the metering drain (`bench.drain`): 20,000 events/s offered for 10 s into the
   embedded Postgres, checked that every one is written.

Then the table, the ratios (gateway ÷ floor, peer ÷ gateway), met / not met
(`bench.suite_report`), the JSON (`bench/results/latest.json`) and a chart beside it
(`latest.png`).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import orjson

from bench import peers, report
from bench.cpu import CpuTime, tree, tree_cpu
from bench.modes import Mode
from bench.procs import NotReady, free_port, pinned, started, tcp_open, wait_ready
from bench.run import Live, start_target
from bench.suite_report import ALL, MODES, chart, print_report, ratio_table, verdicts
from bench.targets import Target, everything_key, gateway
from bench.targets import targets as base_targets

RESULTS = Path(__file__).parent / "results" / "latest.json"
#: always run at every open-loop rate, so every target has them at its own
ANCHORS = ("direct", "floor", "gateway-everything")
SLOW_CHUNK_DELAY_MS = 600
STREAM_OPEN_RATE = 2000
#: a closed-loop or open-loop run stops at its request count or this many seconds
RUN_CAP_S = 12.0
WARMUP_CAP_S = 3.0


@dataclass(frozen=True)
class Sizes:
    requests: int
    rounds: int
    rate: float
    streams: tuple[int, ...]
    drain: bool
    others_cores: str | None


def raise_open_files() -> tuple[int, int]:
    """The soft open-files limit up to the hard one (children inherit it); tries
    higher first, which only a process allowed to raise its hard limit may."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    for want in (65536, hard):
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (max(want, soft), max(want, hard)))
            break
    return resource.getrlimit(resource.RLIMIT_NOFILE)


def all_targets(
    names: set[str], mock_url: str, slow_url: str, workdir: Path, skipped: dict[str, str]
) -> list[Target]:
    """The wanted targets, in report order; a peer that cannot be installed is added
    to `skipped` with the reason."""
    known = {t.name: t for t in base_targets(mock_url)}
    # The memory phase holds 10,000 streams open in one process: the gateway's own
    # bounds on connections (client and upstream, 10,000 and 1,000 by default) are
    # raised past that, as an operator expecting that many streams would raise them.
    room = {
        "RECOVEA_PASSTHROUGH": "off",
        "RECOVEA_UPSTREAM_MAX_CONNECTIONS": "12000",
        "RECOVEA_MAX_CONNECTIONS": "12000",
        "RECOVEA_MAX_IN_FLIGHT": "12000",
    }
    everything = gateway("gateway-everything", mock_url, room, setup=everything_key)
    made: dict[str, Target] = {
        "direct": known["direct"],
        "floor": known["floor"],
        "gateway-everything": everything,
        # the same, with receipts signed as checkpoints (RECOVEA_RECEIPT_SIGNING)
        "gateway-everything-cp": replace(
            everything,
            name="gateway-everything-cp",
            env={**everything.env, "RECOVEA_RECEIPT_SIGNING": "checkpoint"},
        ),
        "gateway-hit": replace(everything, name="gateway-hit", body="cache-hit"),
    }
    for name, build in (
        ("litellm", lambda: peers.litellm(mock_url, slow_url, workdir / "litellm-conf")),
        ("portkey", lambda: peers.portkey(mock_url)),
    ):
        if name not in names:
            continue
        print(f"installing {name} (cached in {peers.CACHE})", file=sys.stderr, flush=True)
        try:
            made[name] = build()
        except peers.PeerUnavailable as exc:
            skipped[name] = str(exc)
            print(f"skipping {name}: {exc}", file=sys.stderr)
    return [made[n] for n in ALL if n in names and n in made]


def loadgen(
    live: Live,
    mode: Mode,
    requests: int,
    *,
    rate: float | None,
    cap_s: float,
    others_cores: str | None,
    extra: tuple[str, ...] = (),
    model: str | None = None,
) -> dict[str, float]:
    """One load generator run against `live`, in its own process; its summary."""
    target = live.target
    argv = [sys.executable, "-m", "bench.loadgen", "--url", f"{live.base_url}/v1/chat/completions"]
    argv += ["--requests", str(requests), "--duration", f"{cap_s:g}", "--concurrency", "16"]
    if rate:
        argv += ["--rate", f"{rate:g}"]
    if mode.stream:
        argv.append("--stream")
    argv += ["--body", target.body or mode.body]
    if live.key:
        argv += ["--key", live.key]
    if model:
        argv += ["--model", model]
    for name, value in target.headers.items():
        argv += ["--header", f"{name}: {value}"]
    done = subprocess.run(
        pinned([*argv, *extra], others_cores), capture_output=True, check=True, timeout=900
    )
    result: dict[str, float] = orjson.loads(done.stdout)
    return result


def measured(
    live: Live, mode: Mode, sizes: Sizes, rate: float | None, requests: int
) -> dict[str, float]:
    """A warm-up, then a measured run with the CPU of the target's process tree (the
    mock's, for direct) read around it."""
    warm = max(100, requests // 5)
    loadgen(live, mode, warm, rate=rate, cap_s=WARMUP_CAP_S, others_cores=sizes.others_cores)
    before = tree_cpu(live.pid)
    result = loadgen(
        live, mode, requests, rate=rate, cap_s=RUN_CAP_S, others_cores=sizes.others_cores
    )
    spent: CpuTime = tree_cpu(live.pid) - before
    served = max(1.0, result["requests"])
    result["cpu_us_per_req"] = spent.best_us / served
    result["rate"] = rate or 0.0
    return result


def rss_mb(pid: int) -> float:
    """The resident memory of `pid`'s process tree, MB."""
    total_kb = 0
    for member in tree(pid):
        with contextlib.suppress(OSError, ValueError, IndexError):
            for line in Path(f"/proc/{member}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total_kb += int(line.split()[1])
    return total_kb / 1024


def memory(live: Live, streams: int, sizes: Sizes) -> dict[str, float | None]:
    """`streams` slow streams opened at STREAM_OPEN_RATE/s; the target tree's RSS
    sampled every 100 ms: idle before, and the peak."""
    idle = rss_mb(live.pid)
    peak = [idle]
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            peak[0] = max(peak[0], rss_mb(live.pid))
            stop.wait(0.1)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    mode = Mode("stream-slow", stream=True, body="cache-miss")
    extra = ("--chunk-delay-ms", str(SLOW_CHUNK_DELAY_MS), "--timeout", "90")
    extra += ("--max-in-flight", str(streams))
    try:
        result = loadgen(
            live,
            mode,
            streams,
            rate=STREAM_OPEN_RATE,
            cap_s=streams / STREAM_OPEN_RATE + 1,
            others_cores=sizes.others_cores,
            extra=extra,
            model=live.target.slow_model,
        )
    except subprocess.SubprocessError as exc:
        result = {"error": 1.0}
        print(f"memory run of {live.target.name} with {streams} failed: {exc}", file=sys.stderr)
    finally:
        stop.set()
        sampler.join()
    opened = result.get("open_peak", 0.0)
    return {
        "streams": streams,
        "idle_rss_mb": round(idle, 1),
        "peak_rss_mb": round(peak[0], 1),
        # what each stream open at the peak added (a run cut short by the open-files
        # limit still says what 10,000 would take: idle + 10,000 x this)
        "kb_per_stream": round((peak[0] - idle) * 1024 / opened, 1) if opened else None,
        "open_peak": result.get("open_peak", 0.0),
        "ok": result.get("ok", 0.0),
        "errors": result.get("errors", 0.0),
    }


def drain(quick: bool) -> dict[str, Any]:
    """`bench.drain` at 20,000 events/s for 10 s (2 s in quick mode): what it wrote."""
    seconds = 2 if quick else 10
    argv = [sys.executable, "-m", "bench.drain", "--rate", "20000", "--seconds", str(seconds)]
    argv += ["--events", "5000" if quick else "50000"]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=900, check=False)
    out: dict[str, Any] = {"seconds": seconds, "rate": 20000, "status": done.returncode}
    if burst := re.search(r"written at ([\d,]+) events/s", done.stdout):
        out["burst_events_per_s"] = float(burst.group(1).replace(",", ""))
    if steady := re.search(r"→ (\{.*\})", done.stdout):
        fields = re.findall(r"'(\w+)': ([\d.]+)", steady.group(1))
        out.update({k: float(v) for k, v in fields})
    if done.returncode != 0:
        out["stderr"] = done.stderr.strip().splitlines()[-3:]
    return out


def pick_rates(
    closed: dict[tuple[str, str], list[dict[str, float]]], rate: float
) -> dict[tuple[str, str], float]:
    """Per target and mode, the open-loop rate: `rate`, or half the closed-loop
    saturation (rounded down to 5/s) when that is below 1.5x `rate`."""
    out: dict[tuple[str, str], float] = {}
    for key, results in closed.items():
        if sum(r["errors"] for r in results) > 0.01 * sum(r["requests"] for r in results):
            continue  # it fails this mode: no open-loop figure would mean anything
        saturation = statistics.median(r["rps"] for r in results)
        out[key] = rate if saturation >= 1.5 * rate else max(5.0, saturation // 2 // 5 * 5)
    return out


def median_row(results: list[dict[str, float]]) -> dict[str, float]:
    row = {k: statistics.median(r[k] for r in results) for k in results[0]}
    row["errors"] = sum(r["errors"] for r in results)
    return row


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.suite")
    parser.add_argument("--targets", help=f"comma-separated subset of {', '.join(ALL)}")
    parser.add_argument("--rate", type=float, default=500.0, help="open loop requests/s")
    parser.add_argument("--requests", type=int, default=3000, help="per measured run (capped)")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--streams", default="1000,10000", help="slow streams at once")
    parser.add_argument("--no-drain", dest="drain", action="store_false")
    parser.add_argument("--quick", action="store_true", help="300 requests, 1 round, 100 streams")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--no-pin", dest="pin", action="store_false")
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    cores = os.cpu_count() or 1
    pin = args.pin and cores >= 2
    proxy_cores, others_cores = (str(cores - 1), f"0-{cores - 2}") if pin else (None, None)
    streams = tuple(int(s) for s in args.streams.split(",") if s.strip())
    sizes = Sizes(
        300 if args.quick else args.requests,
        1 if args.quick else args.rounds,
        args.rate,
        (100,) if args.quick and args.streams == "1000,10000" else streams,
        args.drain,
        others_cores,
    )
    names = set(args.targets.split(",")) if args.targets else set(ALL)
    if unknown := names - set(ALL):
        raise SystemExit(f"unknown target(s): {', '.join(sorted(unknown))}")
    nofile = raise_open_files()
    load_before = os.getloadavg()
    skipped: dict[str, str] = {}
    began = time.monotonic()
    workdir = Path(tempfile.mkdtemp(prefix="rcv-suite-"))
    closed: dict[tuple[str, str], list[dict[str, float]]] = {}
    opened: dict[tuple[str, str, float], list[dict[str, float]]] = {}
    mem: list[dict[str, Any]] = []
    with contextlib.ExitStack() as stack:
        mocks = []
        for delay in (0, SLOW_CHUNK_DELAY_MS):
            port = free_port()
            argv = [sys.executable, "-m", "recovea_proxy.mock_provider", "--port", str(port)]
            argv += ["--chunk-delay-ms", str(delay)]
            proc = stack.enter_context(
                started(pinned(argv, others_cores), {}, workdir / f"mock-{delay}.log")
            )
            wait_ready(tcp_open(port), proc, "mock provider", 30)
            mocks.append((f"http://127.0.0.1:{port}", proc.pid))
        (mock_url, mock_pid), (slow_url, _) = mocks
        live: list[Live] = []
        for target in all_targets(names, mock_url, slow_url, workdir, skipped):
            try:
                one = start_target(
                    stack, target, mock_url, mock_pid, workdir, proxy_cores, others_cores
                )
            except NotReady as exc:
                skipped[target.name] = str(exc)
                print(f"skipping {exc} (log: {workdir / target.name}.log)", file=sys.stderr)
                continue
            live.append(one)
        for n in range(sizes.rounds):
            for mode in MODES:
                for one in live if n % 2 == 0 else reversed(live):
                    print(f"closed {n + 1} {mode.name} {one.target.name}", file=sys.stderr)
                    result = measured(one, mode, sizes, None, sizes.requests)
                    closed.setdefault((one.target.name, mode.name), []).append(result)
        rates = pick_rates(closed, sizes.rate)
        for n in range(sizes.rounds):
            for mode in MODES:
                wanted = sorted({r for (_, m), r in rates.items() if m == mode.name} | {sizes.rate})
                for at in wanted:
                    for one in live if n % 2 == 0 else reversed(live):
                        name = one.target.name
                        if name not in ANCHORS and rates.get((name, mode.name)) != at:
                            continue
                        print(f"open {n + 1} {mode.name} {name} @{at:g}", file=sys.stderr)
                        requests = int(min(sizes.requests, at * RUN_CAP_S))
                        result = measured(one, mode, sizes, at, requests)
                        opened.setdefault((name, mode.name, at), []).append(result)
        for one in live:
            if one.target.name in ("direct", "gateway-hit"):
                continue
            for count in sizes.streams:
                print(f"memory {one.target.name} {count}", file=sys.stderr)
                mem.append({"target": one.target.name, **memory(one, count, sizes)})
                time.sleep(2)  # let the sockets of the last run close
    drained = drain(args.quick) if sizes.drain else None
    doc: dict[str, Any] = {
        "when": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "machine": {
            "cores": cores,
            "python": platform.python_version(),
            "node": subprocess.run(
                ["node", "--version"], capture_output=True, text=True, check=False
            ).stdout.strip(),
            "load_before": [round(x, 2) for x in load_before],
            "load_after": [round(x, 2) for x in os.getloadavg()],
            "open_files_limit": list(nofile),
        },
        "rate": sizes.rate,
        "requests": sizes.requests,
        "rounds": sizes.rounds,
        "pinned": pin,
        "closed": {
            f"{name} {mode}": {"target": name, "mode": mode, **median_row(r)}
            for (name, mode), r in closed.items()
        },
        "open": {
            f"{name} {mode} @{at:g}": {"target": name, "mode": mode, **median_row(r)}
            for (name, mode, at), r in opened.items()
        },
        "memory": mem,
        "drain": drained,
        "skipped": skipped,
        "seconds": round(time.monotonic() - began),
    }
    added: dict[str, dict[str, float]] = {}
    for key, row in doc["open"].items():
        direct = doc["open"].get(f"direct {row['mode']} @{row['rate']:g}")
        if row["target"] == "direct" or not direct:
            continue
        keys = ("ttfb_p50_ms", "ttfb_p90_ms", "ttfb_p99_ms") if row["mode"] != "json" else ()
        keys = ("p50_ms", "p90_ms", "p99_ms", *keys)
        added[key] = {k[:-3]: round(row[k] - direct[k], 3) for k in keys}
    doc["added"] = added
    doc["ratios"] = ratio_table(doc, sizes.rate)
    doc["verdicts"] = verdicts(doc, sizes.rate)
    print_report(doc)
    report.write_json(args.out, doc)
    why = chart(doc, sizes.rate, args.out.with_suffix(".png"))
    png = args.out.with_suffix(".png")
    print(f"\nwritten to {args.out}" + (f"; {why}" if why else f" and {png}"))
    if not skipped:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        print("interrupted; every child process was stopped", file=sys.stderr)
        raise SystemExit(130) from None
