"""What the exact cache and singleflight cost a request they miss, measured in one
gateway process: two workspaces, one under the default cache policy and one with its
levers `off`, take turns with the same requests, beside the floor.

`bench.run` compares gateway-auth and gateway-nolevers as two processes, each with its
own database, heap and history; on this VM two such processes differ by more than the
levers cost (`bench/README.md`). Here the only difference between the two sides is the
workspace's policy: the same process, the same database, the same warm caches, turns
of a few seconds in alternating order (A B F, then F B A, …), each turn's CPU read from
the process tree's schedstat around its measured requests. A turn of one side and the
next of the other are a pair; the figure is the median over the pairs of their
difference over the floor's CPU per request in the same round, with a bootstrap 95 %
interval of that median.

    python -m bench.levers_ab [--pairs 40] [--requests 1000] [--rate 800]
                              [--modes chat-cache-miss,chat-stream-16-cache-miss]
                              [--cache-max-mb MB] [--against REF]

`--against REF`: the off side is instead the gateway as of commit REF (a temporary
worktree, a second process on the same core), its workspace's levers off: what the
whole gateway with the levers on and missing costs over that commit's gateway
without them. Two processes differ by more than one process's two workspaces do, so
its interval is wider; the turns still alternate, so the machine's drift pairs out.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import random
import shutil
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

from bench.modes import Mode, chosen
from bench.procs import free_port, pinned, started, tcp_open, wait_ready
from bench.run import READY_DEADLINE_S, Live, Plan, measure, start_target, worktree
from bench.targets import Target, at_ref, no_levers_key, targets, workspace_key

#: the resamples behind the interval of a median
_RESAMPLES = 5000


def both_keys(env: dict[str, str]) -> str:
    """A workspace under the default policy and one with its levers off, in the same
    database: their two rcv_ keys, space-separated."""
    return f"{workspace_key(env)} {no_levers_key(env, name='bench-levers-off')}"


def interval(values: list[float]) -> tuple[float, float]:
    """A bootstrap 95 % interval of the median of `values` (seeded: a rerun over the
    same figures prints the same interval)."""
    draw = random.Random(0)
    medians = sorted(
        statistics.median(draw.choices(values, k=len(values))) for _ in range(_RESAMPLES)
    )
    return medians[int(0.025 * _RESAMPLES)], medians[int(0.975 * _RESAMPLES) - 1]


def run(args: argparse.Namespace) -> None:
    cores = os.cpu_count() or 1
    proxy_cores, others_cores = (str(cores - 1), f"0-{cores - 2}") if cores >= 2 else (None, None)
    try:
        modes: tuple[Mode, ...] = chosen(args.modes)
    except ValueError as exc:
        raise SystemExit(str(exc)) from None
    plan = Plan(args.requests, args.warmup, 16, args.rate, others_cores)
    workdir = Path(tempfile.mkdtemp(prefix="rcv-ab-"))
    mock_port = free_port()
    mock_url = f"http://127.0.0.1:{mock_port}"
    known = {t.name: t for t in targets(mock_url)}
    auth = known["gateway-auth"]
    env = dict(auth.env)
    if args.cache_max_mb is not None:
        env["RECOVEA_CACHE_MAX_MB"] = str(args.cache_max_mb)
    gateway = Target("gateway-ab", auth.argv, env, auth.ready_path, both_keys, request_log=True)
    with contextlib.ExitStack() as stack:
        mock_argv = [sys.executable, "-m", "recovea_proxy.mock_provider", "--port", str(mock_port)]
        stack.callback(shutil.rmtree, workdir, ignore_errors=True)  # runs last
        mock = stack.enter_context(
            started(pinned(mock_argv, others_cores), {}, workdir / "mock.log")
        )
        wait_ready(tcp_open(mock_port), mock, "mock provider", READY_DEADLINE_S)
        live = start_target(stack, gateway, mock_url, mock.pid, workdir, proxy_cores, others_cores)
        assert live.key is not None
        on_key, off_key = live.key.split()
        floor = start_target(
            stack, known["floor"], mock_url, mock.pid, workdir, proxy_cores, others_cores
        )
        sides = {
            "on": Live(gateway, live.base_url, live.pid, live.db_pid, on_key, live.log),
            "off": Live(gateway, live.base_url, live.pid, live.db_pid, off_key, live.log),
            "floor": floor,
        }
        if args.against:
            checkout = workdir / "against"
            stack.enter_context(worktree(args.against, checkout))
            reference = at_ref(args.against, mock_url, checkout, levers="off")
            sides["off"] = start_target(
                stack, reference, mock_url, mock.pid, workdir, proxy_cores, others_cores
            )
            print(f"off: {reference.name}", file=sys.stderr, flush=True)
        for mode in modes:
            cpu: dict[str, list[float]] = {name: [] for name in sides}
            answered = {"on": 0.0, "off": 0.0}
            for n in range(args.pairs):
                order = list(sides) if n % 2 == 0 else list(reversed(sides))
                for name in order:
                    result = measure(plan, sides[name], mock.pid, mode)
                    cpu[name].append(result["cpu_us_per_req"])
                    if name in answered:
                        answered[name] += result["cache_hit_pct"] + result["flight_join_pct"]
                print(f"{mode.name} pair {n + 1}/{args.pairs}", file=sys.stderr, flush=True)
            report(mode, cpu, {name: pct / args.pairs for name, pct in answered.items()})


def report(mode: Mode, cpu: dict[str, list[float]], answered: dict[str, float]) -> None:
    """The medians, and the difference in µs and in floors; `answered`: the share of
    each workspace's requests a cache hit or a flight answered (0 % for both in a miss
    mode: the difference is what a miss costs)."""
    on, off, floor = cpu["on"], cpu["off"], cpu["floor"]
    steps = [(a - b) / f for a, b, f in zip(on, off, floor, strict=True)]
    low, high = interval(steps)
    micro = [a - b for a, b in zip(on, off, strict=True)]
    print(
        f"{mode.name}: floor {statistics.median(floor):.0f} µs/req, levers on "
        f"{statistics.median(on):.0f}, off {statistics.median(off):.0f} (medians of "
        f"{len(steps)} turns each)\n"
        f"  on - off: {statistics.median(micro):+.1f} µs/req, "
        f"{statistics.median(steps):+.3f} floor (95 % interval of the median "
        f"{low:+.3f} to {high:+.3f}; pairs {min(steps):+.3f} to {max(steps):+.3f}); "
        f"answered by a hit or a flight: on {answered['on']:.1f} %, off {answered['off']:.1f} %",
        flush=True,
    )


def _at_least(low: float, kind: type[int] | type[float] = int) -> Any:
    """An argparse type: a number of `kind`, refused below `low` (a bench of no turns
    or no requests has no median to print)."""

    def parse(text: str) -> int | float:
        value = kind(text)
        if value < low:
            raise argparse.ArgumentTypeError(f"must be at least {low:g}, not {text}")
        return value

    parse.__name__ = kind.__name__  # argparse names it in "invalid int value"
    return parse


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.levers_ab")
    parser.add_argument(
        "--pairs", type=_at_least(1), default=40, help="turns of each side per mode"
    )
    parser.add_argument(
        "--requests", type=_at_least(1), default=1000, help="measured requests a turn"
    )
    parser.add_argument(
        "--warmup", type=_at_least(0), default=100, help="requests before each turn"
    )
    parser.add_argument(
        "--rate", type=_at_least(1, float), default=800, help="open loop, requests/s"
    )
    parser.add_argument("--modes", default="chat-cache-miss,chat-stream-16-cache-miss")
    parser.add_argument(
        "--cache-max-mb",
        type=_at_least(1),
        help="the gateway's RECOVEA_CACHE_MAX_MB (default: its own, 256): a small one is "
        "full after the first turns, so the misses measured evict as they store",
    )
    parser.add_argument(
        "--against",
        metavar="REF",
        help="the off side is the gateway as of this commit, its workspace's levers off",
    )
    run(parser.parse_args())


if __name__ == "__main__":
    main()
