"""Instructions per request under callgrind: the same comparison as `bench.run`, counted
in CPU instructions instead of CPU time, so the ratio does not move with a noisy
neighbour, frequency scaling or the other core's load (repeat runs agree within
~0.1% here, where CPU-time ratios wander by ±20%).

    python -m bench.instructions [--requests N] [--targets floor,gateway-auth]

Each proxy target runs under `valgrind --tool=callgrind --instr-atstart=no` (10-50x
slower, so the runs are small); the mock, the load generator and the embedded
Postgres run natively. For every mode: a warm-up, then instrumentation is switched
on with `callgrind_control` for exactly the measured requests and the total is read
from the dump. Work moved to the database is not counted here (see `bench.run`'s
db µs/req). Needs valgrind (Debian package `valgrind`).
"""

from __future__ import annotations

import argparse
import contextlib
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from bench.procs import NotReady, free_port, http_ok, started, tcp_open, wait_ready
from bench.run import MODES, Mode, loadgen_argv
from bench.targets import Target, stop_embedded_postgres, targets

READY_DEADLINE_S = 600.0


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


def run_target(target: Target, args: argparse.Namespace, workdir: Path) -> dict[str, float]:
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
    try:
        with started(argv, env, out_dir / "log") as process:
            check = http_ok(base + target.ready_path) if target.ready_path else tcp_open(port)
            wait_ready(check, process, target.name, READY_DEADLINE_S)
            url = f"{base}/v1/chat/completions"
            modes = [mode for mode in MODES if mode.name in args.modes.split(",")]
            return {
                mode.name: counted(process.pid, out_dir, url, mode, key, args) for mode in modes
            }
    finally:
        stop_embedded_postgres(out_dir / "data")


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.instructions")
    parser.add_argument("--requests", type=int, default=400, help="per measured run")
    parser.add_argument("--warmup", type=int, default=200)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--targets", default="floor,gateway,gateway-auth")
    parser.add_argument("--modes", default=",".join(mode.name for mode in MODES))
    parser.add_argument(
        "--keep", action="store_true", help="keep the callgrind dumps (for callgrind_annotate)"
    )
    args = parser.parse_args()
    if shutil.which("valgrind") is None:
        raise SystemExit("valgrind is not installed (apt-get install valgrind)")
    workdir = Path(tempfile.mkdtemp(prefix="rcv-instr-"))
    mock_port = free_port()
    mock_url = f"http://127.0.0.1:{mock_port}"
    wanted = args.targets.split(",")
    chosen = [t for t in targets(mock_url) if t.name in wanted and t.argv is not None]
    results: dict[str, dict[str, float]] = {}
    with contextlib.ExitStack() as stack:
        mock_argv = [sys.executable, "-m", "recovea_proxy.mock_provider", "--port", str(mock_port)]
        mock = stack.enter_context(started(mock_argv, {}, workdir / "mock.log"))
        wait_ready(tcp_open(mock_port), mock, "mock", 30)
        for target in chosen:
            try:
                results[target.name] = run_target(target, args, workdir)
            except (NotReady, subprocess.CalledProcessError, RuntimeError) as exc:
                print(f"{target.name}: skipped ({exc})", file=sys.stderr)
    print(f"{args.requests} requests per run, concurrency {args.concurrency}, under callgrind")
    print(f"{'target':14} {'mode':22} {'instructions/req':>17} {'vs floor':>9}")
    floor = results.get("floor", {})
    for name, modes in results.items():
        for mode, value in modes.items():
            ratio = f"x{value / floor[mode]:.2f}" if mode in floor else ""
            print(f"{name:14} {mode:22} {value:17,.0f} {ratio:>9}")
    if args.keep:
        print(f"callgrind dumps kept under {workdir}")
    else:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
