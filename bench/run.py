"""`make bench`: direct vs floor vs gateway, non-streamed and streamed chat, in one run.

Starts the mock provider, then every target of `bench.targets` side by side (a
target that does not become ready is skipped with its reason). Each round runs,
for every mode (`bench.modes`) and target, a warm-up and then a measured run of
`bench.loadgen` in its own process (closed loop, or open loop with `--rate`);
rounds interleave the targets so drift on a shared machine hits them alike, and
the report shows per-figure medians. Measured: requests/s, CPU µs per request of
the target's process tree over the measured run only (the mock's for `direct`; the
mock's and the embedded database's as context), p50/p99 latency, errors, each
gateway's CPU and p50 over the floor's, and — for the lever modes — what answered
the gateway's requests (cache hits, flight joins, from its request log) and
gateway-auth's CPU beside the `--against` gateway's and its own in the mode of
today's requests, in units of the floor's. Prints a table; writes
`bench/results/latest.json` (or `--out`).

    python -m bench.run [--requests N] [--concurrency C] [--rounds R] [--quick]
                        [--targets floor,gateway] [--no-pin] [--rate R]
                        [--modes levers] [--against REF] [--out FILE]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import orjson

from bench import lever_log, report
from bench.cpu import CpuTime, tree, tree_cpu
from bench.modes import NAMED, Mode, loadgen_argv
from bench.modes import chosen as chosen_modes
from bench.procs import (
    NotReady,
    free_port,
    http_ok,
    pin_tree,
    pinned,
    started,
    tcp_open,
    wait_ready,
)
from bench.targets import (
    Target,
    at_ref,
    postmaster_pid,
    stop_embedded_postgres,
    targets,
)

RESULTS = Path(__file__).parent / "results" / "latest.json"
READY_DEADLINE_S = 30.0


@dataclass(frozen=True)
class Live:
    """A started target: where to send requests, which processes to watch."""

    target: Target
    base_url: str
    pid: int
    db_pid: int | None
    key: str | None
    #: the gateway's output, with its JSON request log (None: the target has none)
    log: Path | None = None


@dataclass(frozen=True)
class Plan:
    """The sizes of each run, and the cores the load generator may use."""

    requests: int
    warmup: int
    concurrency: int
    #: open loop: requests per second (None: closed loop at `concurrency`)
    rate: float | None
    others_cores: str | None  # where the load generator runs


def load(plan: Plan, url: str, mode: Mode, key: str | None, requests: int) -> dict[str, float]:
    """One load generator run, in its own process; its JSON summary."""
    argv = loadgen_argv(url, mode, key, requests, plan.concurrency, plan.rate)
    done = subprocess.run(
        pinned(argv, plan.others_cores), capture_output=True, check=True, timeout=600
    )
    result: dict[str, float] = orjson.loads(done.stdout)
    return result


def measure(plan: Plan, live: Live, mock_pid: int, mode: Mode) -> dict[str, float]:
    """Warm up, then one measured run with the CPU of the watched trees around it; for
    a gateway, what answered the measured requests (from its request log, read after
    the CPU)."""
    url = f"{live.base_url}/v1/chat/completions"
    mark = lever_log.size(live.log) if live.log else 0
    warm = load(plan, url, mode, live.key, plan.warmup)
    if live.log:
        mark = lever_log.read(live.log, mark, int(warm["requests"])).end
    watched = {"cpu": live.pid, "mock": mock_pid, "db": live.db_pid}
    before = {name: tree_cpu(pid) if pid else CpuTime(0, 0) for name, pid in watched.items()}
    result = load(plan, url, mode, live.key, plan.requests)
    spent = {
        name: (tree_cpu(pid) if pid else CpuTime(0, 0)) - before[name]
        for name, pid in watched.items()
    }
    served = max(1.0, result["requests"])
    result["cpu_us_per_req"] = spent["cpu"].best_us / served
    result["cpu_stat_us_per_req"] = spent["cpu"].stat_us / served
    result["mock_cpu_us_per_req"] = spent["mock"].best_us / served
    result["db_cpu_us_per_req"] = spent["db"].best_us / served
    seen = lever_log.read(live.log, mark, int(result["requests"])) if live.log else None
    result["cache_hit_pct"] = 100 * seen.cache_hits / served if seen else 0.0
    result["flight_join_pct"] = 100 * seen.flight_joins / served if seen else 0.0
    return result


def start_target(
    stack: contextlib.ExitStack,
    target: Target,
    mock_url: str,
    mock_pid: int,
    workdir: Path,
    proxy_cores: str | None,
    others_cores: str | None = None,
) -> Live:
    """Start `target` (NotReady if it cannot be started) and keep it until `stack` closes.

    A gateway's embedded Postgres goes to `others_cores` with the mock and the load
    generator: the measured process has its core to itself, as the floor has, and
    the database's CPU is reported on its own (db µs/req)."""
    if target.argv is None:
        return Live(target, mock_url, mock_pid, None, None)
    data_dir = workdir / target.name
    env = {**target.env, "RECOVEA_DATA_DIR": str(data_dir)}
    stack.callback(stop_embedded_postgres, data_dir)
    key = None
    if target.setup is not None:
        try:
            key = target.setup(env)
        except (
            subprocess.CalledProcessError,
            subprocess.TimeoutExpired,
            ValueError,
            KeyError,
        ) as exc:
            raise NotReady(f"{target.name}: setup failed: {exc}") from exc
    port = free_port()
    argv = [*target.argv, *target.listen_argv(port)]
    log = workdir / f"{target.name}.log"
    process = stack.enter_context(started(pinned(argv, proxy_cores), env, log))
    base = f"http://127.0.0.1:{port}"
    check = http_ok(base + target.ready_path) if target.ready_path else tcp_open(port)
    wait_ready(check, process, target.name, READY_DEADLINE_S)
    db_pid = postmaster_pid(data_dir)
    if db_pid is not None:
        pin_tree(tree(db_pid), others_cores)
    return Live(target, base, process.pid, db_pid, key, log if target.request_log else None)


def delta_pairs(modes: tuple[Mode, ...], name: str, reference: str | None) -> report.Pairs:
    """What `name`'s CPU per request is set beside, mode by mode: the `--against`
    gateway's in the same mode and in the mode's `base` (today's requests of the same
    shape), its own in the `base` mode, and in a lever mode `gateway-nolevers`'s in
    the same mode (the same requests with the workspace's levers off)."""
    pairs: report.Pairs = []
    for mode in modes:
        base = mode.base or mode.name
        if reference:
            pairs.append(((name, mode.name), (reference, mode.name)))
        if base != mode.name:
            if reference:
                pairs.append(((name, mode.name), (reference, base)))
            pairs.append(((name, mode.name), (name, base)))
            pairs.append(((name, mode.name), ("gateway-nolevers", mode.name)))
    return pairs


@contextlib.contextmanager
def worktree(ref: str, path: Path) -> Iterator[None]:
    """A temporary git worktree of `ref` at `path` (the repository this bench is in)."""
    repo = Path(__file__).resolve().parent.parent
    subprocess.run(
        ["git", "-C", str(repo), "worktree", "add", "--detach", str(path), ref],
        check=True,
        capture_output=True,
    )
    try:
        yield
    finally:
        subprocess.run(
            ["git", "-C", str(repo), "worktree", "remove", "--force", str(path)],
            check=False,
            capture_output=True,
        )


def clean_up(workdir: Path, skipped: dict[str, str]) -> None:
    """Remove the run's scratch directory, unless a skipped target's log explains why."""
    if not skipped:
        shutil.rmtree(workdir, ignore_errors=True)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.run")
    parser.add_argument("--requests", type=int, default=3000, help="per measured run")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument(
        "--against",
        metavar="REF",
        help="also run gateway-auth as of this git commit (a temporary worktree), to "
        "compare before and after in one run",
    )
    parser.add_argument(
        "--against-levers",
        choices=("on", "off"),
        default="on",
        help="`off`: the --against gateway's workspace has its levers off "
        "(gateway-nolevers@REF: that commit's gateway without the levers)",
    )
    parser.add_argument(
        "--rate",
        type=float,
        help="open loop at this many requests/s instead of closed loop (every target then "
        "serves the same arrivals, none of them saturated)",
    )
    parser.add_argument("--rounds", type=int, default=4, help="interleaved rounds (median)")
    parser.add_argument("--quick", action="store_true", help="600 requests, 1 round")
    parser.add_argument("--targets", help="comma-separated subset of targets (default: all)")
    parser.add_argument(
        "--modes",
        help="comma-separated request modes, or one of "
        f"{', '.join(NAMED)} (default: {', '.join(m.name for m in NAMED['default'])}); "
        "`levers` adds the exact cache's and singleflight's (see bench/README.md)",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=RESULTS,
        help=f"where the JSON goes (default {RESULTS.relative_to(RESULTS.parent.parent.parent)})",
    )
    parser.add_argument(
        "--no-pin",
        dest="pin",
        action="store_false",
        help="let every process use every core (default: the target under test gets the "
        "last core; the mock and the load generator the others)",
    )
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    cores = os.cpu_count() or 1
    pin = args.pin and cores >= 2
    proxy_cores, others_cores = (str(cores - 1), f"0-{cores - 2}") if pin else (None, None)
    requests = 600 if args.quick else args.requests
    rounds = 1 if args.quick else args.rounds
    try:
        modes = chosen_modes(args.modes)
    except ValueError as exc:
        raise SystemExit(str(exc)) from None
    plan = Plan(requests, max(200, requests // 5), args.concurrency, args.rate, others_cores)
    mock_port = free_port()
    mock_url = f"http://127.0.0.1:{mock_port}"
    known = targets(mock_url)
    wanted = set(args.targets.split(",")) if args.targets else {t.name for t in known}
    if unknown := wanted - {t.name for t in known}:
        names = ", ".join(t.name for t in known)
        raise SystemExit(f"unknown target(s): {', '.join(sorted(unknown))} (known: {names})")
    chosen = [t for t in known if t.name in wanted]
    skipped: dict[str, str] = {}
    runs: report.Runs = {}
    began = time.monotonic()
    workdir = Path(tempfile.mkdtemp(prefix="rcv-bench-"))
    with contextlib.ExitStack() as stack:
        stack.callback(clean_up, workdir, skipped)  # runs last
        reference = None
        if args.against:
            against = at_ref(args.against, mock_url, workdir / "against", args.against_levers)
            reference = against.name
            chosen.append(against)
            stack.enter_context(worktree(args.against, workdir / "against"))
        mock_argv = [sys.executable, "-m", "recovea_proxy.mock_provider", "--port", str(mock_port)]
        mock = stack.enter_context(
            started(pinned(mock_argv, others_cores), {}, workdir / "mock.log")
        )
        wait_ready(tcp_open(mock_port), mock, "mock provider", READY_DEADLINE_S)
        live: list[Live] = []
        for target in chosen:
            try:
                live.append(
                    start_target(
                        stack, target, mock_url, mock.pid, workdir, proxy_cores, others_cores
                    )
                )
            except NotReady as exc:
                skipped[target.name] = str(exc)
                print(f"skipping {exc} (log: {workdir / target.name}.log)", file=sys.stderr)
        for n in range(rounds):
            print(f"round {n + 1}/{rounds}", file=sys.stderr, flush=True)
            for mode in modes:
                # Each mode's targets back to back, in alternating order: a pair of
                # runs compared in a ratio is as close in time as it can be.
                for one in live if n % 2 == 0 else reversed(live):
                    result = measure(plan, one, mock.pid, mode)
                    runs.setdefault((one.target.name, mode.name), []).append(result)
    rows = report.summarize(runs)
    found = report.ratios(runs, [m.name for m in modes])
    steps = report.deltas(runs, delta_pairs(modes, "gateway-auth", reference))
    print(
        f"\n{requests} requests per run (warm-up {plan.warmup}), "
        f"{f'open loop at {args.rate:g}/s' if args.rate else f'concurrency {args.concurrency}'}, "
        f"median of {rounds} interleaved round(s), "
        f"{'target pinned to core ' + proxy_cores if proxy_cores else 'unpinned'}, "
        f"{time.monotonic() - began:.0f} s\n"
    )
    print(report.table(rows, levers=any(m.body != "plain" for m in modes)))
    print()
    print(report.ratio_lines(found))
    if steps:
        print()
        print(report.delta_lines(steps))
    for name, reason in skipped.items():
        print(f"skipped {name}: {reason}")
    report.write_json(
        args.out,
        {
            "when": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "machine": {"cores": cores, "python": platform.python_version()},
            "requests": requests,
            "warmup": plan.warmup,
            "concurrency": args.concurrency,
            "rate": args.rate,
            "rounds": rounds,
            "pinned": pin,
            "rows": rows,
            "runs": [
                {"target": name, "mode": mode, "rounds": results}
                for (name, mode), results in runs.items()
            ],
            "ratios": found,
            "deltas_over_floor": steps,
            "skipped": skipped,
        },
    )
    print(f"\nwritten to {args.out}")


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        print("interrupted; every child process was stopped", file=sys.stderr)
        raise SystemExit(130) from None
