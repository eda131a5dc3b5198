"""Instructions per request under callgrind: the same comparison as `bench.run`, counted
in CPU instructions instead of CPU time, so the ratio does not move with a noisy
neighbour, frequency scaling or the other core's load (repeat runs of one build agree
within ~0.6 % here, ±5,000 to 8,000 instructions a gateway request, where CPU-time ratios
wander by ±20%: a difference smaller than that needs several runs).

    python -m bench.instructions [--requests N] [--targets floor,gateway-auth]
                                 [--modes levers] [--against REF]

Each proxy target runs under `valgrind --tool=callgrind --instr-atstart=no` (10-50x
slower, so the runs are small); the mock, the load generator and the embedded
Postgres run natively. For every mode: a warm-up, then instrumentation is switched
on with `callgrind_control` for exactly the measured requests and the total is read
from the dump. Work moved to the database is not counted here (see `bench.run`'s
db µs/req). Needs valgrind (Debian package `valgrind`).

`--modes` takes the names `bench.run` does (`bench.modes`); a lever mode's line also
gives its count minus the same target's in the mode's `base`, over the floor's in
that mode (`Δ base`), gateway-auth's minus `gateway-nolevers`'s in the same mode
when that target ran (`Δ off`: the same requests with the workspace's levers off),
and for a gateway what answered the measured requests (cache
hits, flight joins, from its request log). `--against REF` adds gateway-auth as of
that commit, as `bench.run --against` does.
"""

from __future__ import annotations

import argparse
import contextlib
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from bench import lever_log
from bench.modes import NAMED, Mode, chosen, loadgen_argv
from bench.procs import NotReady, free_port, http_ok, started, tcp_open, wait_ready
from bench.run import worktree
from bench.targets import Target, at_ref, stop_embedded_postgres, targets

READY_DEADLINE_S = 600.0
#: a gateway under callgrind flushes its request log late
LOG_DEADLINE_S = 60.0


def require_valgrind() -> None:
    """Exit with a one-line reason when valgrind is not installed."""
    if shutil.which("valgrind") is None:
        raise SystemExit("valgrind is not installed (apt-get install valgrind)")


def callgrind(pid: int, *command: str) -> None:
    subprocess.run(["callgrind_control", *command, str(pid)], capture_output=True, check=True)


def loadgen(url: str, mode: Mode, key: str | None, requests: int, concurrency: int) -> None:
    argv = loadgen_argv(url, mode, key, requests, concurrency)
    done = subprocess.run(argv, capture_output=True, check=True, timeout=1800)
    if b'"errors":0' not in done.stdout:
        raise RuntimeError(f"the load generator saw errors: {done.stdout.decode()}")


def counted(
    pid: int, out_dir: Path, url: str, mode: Mode, key: str | None, args: argparse.Namespace
) -> float:
    """Instructions per request of one measured run."""
    loadgen(url, mode, key, args.warmup, args.concurrency)
    before = set(out_dir.glob("*.out.*"))
    callgrind(pid, "--zero")
    callgrind(pid, "--instr=on")
    loadgen(url, mode, key, args.requests, args.concurrency)
    callgrind(pid, "--instr=off")
    callgrind(pid, "--dump")
    dump = next(iter(set(out_dir.glob("*.out.*")) - before))
    for line in dump.read_text().splitlines():
        if line.startswith("totals:"):
            return int(line.split()[1]) / float(args.requests)
    raise RuntimeError(f"no totals in {dump}")


Counts = dict[str, dict[str, float]]


def run_target(
    target: Target, modes: tuple[Mode, ...], args: argparse.Namespace, workdir: Path
) -> Counts:
    """Per mode: instructions per request, and for a gateway the shares of the measured
    requests the cache and a flight answered."""
    assert target.argv is not None
    out_dir = workdir / target.name
    out_dir.mkdir()
    env = {**target.env, "RECOVEA_DATA_DIR": str(out_dir / "data")}
    key = target.setup(env) if target.setup else None
    port = free_port()
    argv = [
        "valgrind",
        "--tool=callgrind",
        "--instr-atstart=no",
        f"--callgrind-out-file={out_dir}/callgrind.out",
        *target.argv,
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
    ]
    base = f"http://127.0.0.1:{port}"
    log = out_dir / "log"
    found: Counts = {}
    try:
        with started(argv, env, log) as process:
            check = http_ok(base + target.ready_path) if target.ready_path else tcp_open(port)
            wait_ready(check, process, target.name, READY_DEADLINE_S)
            url = f"{base}/v1/chat/completions"
            for mode in modes:
                mark = lever_log.size(log)
                found[mode.name] = {"instr": counted(process.pid, out_dir, url, mode, key, args)}
                if target.request_log:
                    expected = args.warmup + args.requests
                    seen = lever_log.read(log, mark, expected, LOG_DEADLINE_S)
                    # the warm-up's lines come first; the shares are of the measured ones
                    found[mode.name]["hits"] = seen.cache_hits
                    found[mode.name]["joined"] = seen.flight_joins
            return found
    finally:
        stop_embedded_postgres(out_dir / "data")


def table(results: dict[str, Counts], modes: tuple[Mode, ...], args: argparse.Namespace) -> str:
    """One line per target and mode."""
    name_w = max([len("target"), *(len(name) for name in results)])
    mode_w = max([len("mode"), *(len(mode.name) for mode in modes)])
    head = f"{'target':{name_w}} {'mode':{mode_w}} {'instructions/req':>17} {'vs floor':>9}"
    lines = [head + f" {'Δ base':>8} {'Δ off':>7} {'hits':>6} {'joined':>7}"]
    floor = results.get("floor", {})
    # the same requests with the workspace's levers off (when that target ran)
    off = results.get("gateway-nolevers", {})
    base_of = {mode.name: mode.base for mode in modes}
    for name, counts in results.items():
        for mode, found in counts.items():
            value = found["instr"]
            ratio = f"x{value / floor[mode]['instr']:.2f}" if mode in floor else ""
            base = base_of.get(mode)
            step = ""
            if base and base in counts and base in floor:
                step = f"{(value - counts[base]['instr']) / floor[base]['instr']:+.3f}"
            beside = ""
            if name == "gateway-auth" and base and mode in off and mode in floor:
                beside = f"{(value - off[mode]['instr']) / floor[mode]['instr']:+.3f}"
            hits = f"{found['hits']:.0f}" if "hits" in found else ""
            joined = f"{found['joined']:.0f}" if "joined" in found else ""
            line = f"{name:{name_w}} {mode:{mode_w}} {value:17,.0f} {ratio:>9} {step:>8}"
            lines.append(line + f" {beside:>7} {hits:>6} {joined:>7}")
    total = args.warmup + args.requests
    lines.append(f"(hits, joined: of the {total} requests of warm-up and measured run together)")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.instructions")
    parser.add_argument("--requests", type=int, default=400, help="per measured run")
    parser.add_argument("--warmup", type=int, default=200)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--targets", default="floor,gateway,gateway-auth")
    parser.add_argument(
        "--modes",
        help=f"comma-separated request modes, or one of {', '.join(NAMED)} (default: as bench.run)",
    )
    parser.add_argument("--against", metavar="REF", help="also gateway-auth as of this commit")
    parser.add_argument(
        "--against-levers",
        choices=("on", "off"),
        default="on",
        help="`off`: the --against gateway's workspace has its levers off",
    )
    parser.add_argument(
        "--keep", action="store_true", help="keep the callgrind dumps (for callgrind_annotate)"
    )
    args = parser.parse_args()
    try:
        modes = chosen(args.modes)
    except ValueError as exc:
        raise SystemExit(str(exc)) from None
    require_valgrind()
    workdir = Path(tempfile.mkdtemp(prefix="rcv-instr-"))
    mock_port = free_port()
    mock_url = f"http://127.0.0.1:{mock_port}"
    wanted = args.targets.split(",")
    chosen_targets = [t for t in targets(mock_url) if t.name in wanted and t.argv is not None]
    results: dict[str, Counts] = {}
    with contextlib.ExitStack() as stack:
        if args.against:
            checkout = workdir / "against"
            chosen_targets.append(at_ref(args.against, mock_url, checkout, args.against_levers))
            stack.enter_context(worktree(args.against, checkout))
        mock_argv = [sys.executable, "-m", "recovea_proxy.mock_provider", "--port", str(mock_port)]
        mock = stack.enter_context(started(mock_argv, {}, workdir / "mock.log"))
        wait_ready(tcp_open(mock_port), mock, "mock", 30)
        for target in chosen_targets:
            try:
                results[target.name] = run_target(target, modes, args, workdir)
            except (NotReady, subprocess.CalledProcessError, RuntimeError) as exc:
                print(f"{target.name}: skipped ({exc})", file=sys.stderr)
    print(f"{args.requests} requests per run, concurrency {args.concurrency}, under callgrind")
    print(table(results, modes, args))
    if args.keep:
        print(f"callgrind dumps kept under {workdir}")
    else:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
