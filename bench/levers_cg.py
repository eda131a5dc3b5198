"""What a lever miss costs the CPU's caches, beside its instructions: one gateway under
callgrind with its cache simulation, two workspaces (one under the default policy,
one with its levers `off`, as in `bench.levers_ab`) in alternating turns, each turn's
counts read for exactly its measured requests.

Per request and per side: instructions (Ir), L1 instruction-cache misses (I1mr), L1
data read and write misses (D1mr, D1mw) and last-level data write misses (DLmw, what
is written to memory nothing had touched), then on - off. Callgrind simulates the
host's caches (`I1`, `D1`, `LL` as it detects them; printed first). Its counts repeat
between runs far better than CPU time does, and they say where a miss's CPU time goes
beyond its instructions: on this VM a gateway request takes ~27,000 L1 instruction
misses (~2 % of its instructions), so code a request runs for the first time costs
more than its instruction count says.

    python -m bench.levers_cg [--mode chat-cache-miss] [--requests 1000] [--turns 2]
"""

from __future__ import annotations

import argparse
import contextlib
import shutil
import sys
import tempfile
from pathlib import Path

from bench.instructions import callgrind, loadgen, require_valgrind
from bench.levers_ab import both_keys
from bench.modes import chosen
from bench.procs import free_port, http_ok, started, tcp_open, wait_ready
from bench.run import READY_DEADLINE_S
from bench.targets import stop_embedded_postgres, targets

#: callgrind's events, in the order of a dump's `totals:` line with `--cache-sim=yes`
EVENTS = ("Ir", "Dr", "Dw", "I1mr", "D1mr", "D1mw", "ILmr", "DLmr", "DLmw")
#: the ones printed
SHOWN = ("Ir", "I1mr", "D1mr", "D1mw", "DLmw")


def counts_of(dump: Path, requests: int) -> dict[str, float]:
    """A dump's totals per request, by event."""
    for line in dump.read_text().splitlines():
        if line.startswith("totals:"):
            values = [int(value) / requests for value in line.split()[1:]]
            return dict(zip(EVENTS, values, strict=True))
    raise RuntimeError(f"no totals in {dump}")


def caches_of(dump: Path) -> str:
    """The caches callgrind simulated, as its dump names them."""
    found = [line for line in dump.read_text().splitlines() if line.startswith("desc: ")]
    return "; ".join(line.removeprefix("desc: ") for line in found if " cache: " in line)


def run(args: argparse.Namespace) -> None:
    try:
        (mode,) = chosen(args.mode)
    except ValueError as exc:
        raise SystemExit(str(exc)) from None
    require_valgrind()
    workdir = Path(tempfile.mkdtemp(prefix="rcv-cg-"))
    mock_port = free_port()
    mock_url = f"http://127.0.0.1:{mock_port}"
    auth = {t.name: t for t in targets(mock_url)}["gateway-auth"]
    assert auth.argv is not None
    env = {**auth.env, "RECOVEA_DATA_DIR": str(workdir / "gateway")}
    sides: dict[str, list[dict[str, float]]] = {"on": [], "off": []}
    with contextlib.ExitStack() as stack:
        stack.callback(shutil.rmtree, workdir, ignore_errors=True)  # runs last
        stack.callback(stop_embedded_postgres, workdir / "gateway")
        mock_argv = [sys.executable, "-m", "recovea_proxy.mock_provider", "--port", str(mock_port)]
        mock = stack.enter_context(started(mock_argv, {}, workdir / "mock.log"))
        wait_ready(tcp_open(mock_port), mock, "mock provider", READY_DEADLINE_S)
        on_key, off_key = both_keys(env).split()
        port = free_port()
        argv = [
            "valgrind",
            "--tool=callgrind",
            "--cache-sim=yes",
            "--instr-atstart=no",
            f"--callgrind-out-file={workdir}/callgrind.out",
            *auth.argv,
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
        ]
        gateway = stack.enter_context(started(argv, env, workdir / "gateway.log"))
        base = f"http://127.0.0.1:{port}"
        wait_ready(http_ok(f"{base}{auth.ready_path}"), gateway, "gateway", 600)
        url = f"{base}/v1/chat/completions"
        keys = {"on": on_key, "off": off_key}
        for key in keys.values():
            loadgen(url, mode, key, args.warmup, 4)
        caches = ""
        for turn in range(args.turns):
            order = ("on", "off") if turn % 2 == 0 else ("off", "on")
            for side in order:
                before = set(workdir.glob("callgrind.out.*"))
                callgrind(gateway.pid, "--zero")
                callgrind(gateway.pid, "--instr=on")
                loadgen(url, mode, keys[side], args.requests, 4)
                callgrind(gateway.pid, "--instr=off")
                callgrind(gateway.pid, "--dump")
                dump = next(iter(set(workdir.glob("callgrind.out.*")) - before))
                caches = caches or caches_of(dump)
                sides[side].append(counts_of(dump, args.requests))
                print(f"turn {turn + 1}/{args.turns}: {side}", file=sys.stderr, flush=True)
    print(report(mode.name, sides, args.requests, caches))


def report(mode: str, sides: dict[str, list[dict[str, float]]], requests: int, caches: str) -> str:
    """One line per side and turn, then the mean of on - off over the turns."""
    lines = [f"{mode}, {requests} requests a turn, per request (caches: {caches or 'as detected'})"]
    lines.append(f"{'side':10}" + "".join(f"{event:>12}" for event in SHOWN))
    for side, turns in sides.items():
        for number, counts in enumerate(turns, 1):
            cells = "".join(f"{counts[event]:12,.0f}" for event in SHOWN)
            lines.append(f"{side} {number:<7}" + cells)
    pairs = list(zip(sides["on"], sides["off"], strict=True))
    mean = {event: sum(on[event] - off[event] for on, off in pairs) / len(pairs) for event in SHOWN}
    lines.append(f"{'on - off':10}" + "".join(f"{mean[event]:+12,.0f}" for event in SHOWN))
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.levers_cg")
    parser.add_argument("--mode", default="chat-cache-miss", help="one request mode")
    parser.add_argument("--requests", type=int, default=1000, help="measured requests a turn")
    parser.add_argument("--warmup", type=int, default=300, help="requests of each side first")
    parser.add_argument("--turns", type=int, default=2, help="turns of each side")
    args = parser.parse_args()
    if args.requests < 1 or args.turns < 1 or args.warmup < 0:
        parser.error("--requests and --turns must be at least 1, --warmup at least 0")
    run(args)


if __name__ == "__main__":
    main()
