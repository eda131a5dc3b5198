"""`make bench`: direct vs floor vs gateway, non-streamed and streamed chat, in one run.

For each target and mode: a warm-up, then a measured closed-loop run. Reported:
requests/s, CPU µs per request of the proxy's process tree (from /proc; for
`direct`, the mock's), p50/p99 latency, errors, and the gateway/floor ratios.
CPU per request is the figure that holds on a shared 2-core machine; wall-time
numbers drift ±25% between runs (see ../shared/PARTS.md).

    python -m bench.run [--requests N] [--concurrency C] [--rounds R] [--quick] [--no-pin]

Add a target (e.g. the gateway with metering on) by appending to `targets()`.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import orjson

from bench.cpu import tree_cpu_us

RESULTS = Path(__file__).parent / "results"
# (name, streamed, client asks for stream_options.include_usage). Without it the
# gateway asks upstream for usage itself (and hides it again), which the floor does not.
MODES = (
    ("chat", False, False),
    ("chat-stream-16", True, False),
    ("chat-stream-16-usage", True, True),
)


@dataclass
class Target:
    """A proxy to measure: how to start it (None = call the mock directly)."""

    name: str
    argv: list[str] | None
    env: dict[str, str] = field(default_factory=dict)
    ready_path: str = "/healthz"
    #: prepares the target's data (given its environment) and returns the key to send
    setup: Callable[[dict[str, str]], str] | None = None


def targets(mock_url: str) -> list[Target]:
    upstreams = {
        "RECOVEA_UPSTREAM_OPENAI": mock_url,
        "RECOVEA_UPSTREAM_ANTHROPIC": mock_url,
        "RECOVEA_PASSTHROUGH": "on",
        "RECOVEA_LOG_FORMAT": "json",
    }
    return [
        Target("direct", None),
        Target("floor", [sys.executable, "-m", "bench.floor", "--upstream", mock_url]),
        Target("gateway", [sys.executable, "-m", "recovea_proxy", "serve"], upstreams),
        Target(
            "gateway-auth",
            [sys.executable, "-m", "recovea_proxy", "serve"],
            {**upstreams, "RECOVEA_PASSTHROUGH": "off"},
            setup=workspace_key,
        ),
    ]


def workspace_key(env: dict[str, str]) -> str:
    """A workspace with an OpenAI key and an rcv_ key, made with the CLI; the rcv_ key."""

    def recovea(*args: str, stdin: str | None = None) -> dict[str, str]:
        done = subprocess.run(
            [sys.executable, "-m", "recovea_proxy", *args, "--json"],
            input=stdin,
            capture_output=True,
            text=True,
            env={**os.environ, **env},
            check=True,
        )
        result: dict[str, str] = orjson.loads(done.stdout)
        return result

    workspace = recovea("workspace", "create", "bench")["workspace_id"]
    recovea(
        "provider-key",
        "set",
        "--workspace",
        workspace,
        "--provider",
        "openai",
        stdin="sk-bench-provider-0000000000\n",
    )
    return recovea("key", "create", "--workspace", workspace)["key"]


def stop_embedded_postgres(data_dir: Path) -> None:
    """Stop the embedded Postgres a target started (it outlives its processes)."""
    from recovea_proxy.store.embedded import postmaster_pid

    pid = postmaster_pid(data_dir)
    if pid is not None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGINT)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_ready(url: str, process: subprocess.Popen[bytes], deadline_s: float = 20) -> None:
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        if process.poll() is not None:
            raise RuntimeError(f"{url}: process exited with {process.returncode}")
        try:
            if httpx.get(url, timeout=1).status_code < 500:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.05)
    raise RuntimeError(f"{url} not ready within {deadline_s}s")


@contextlib.contextmanager
def started(argv: list[str], env: dict[str, str], log: Path) -> Iterator[subprocess.Popen[bytes]]:
    with log.open("wb") as out:
        process = subprocess.Popen(
            argv,
            env={**os.environ, **env},
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            yield process
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(5)


def _pinned(argv: list[str], cores: str | None) -> list[str]:
    """`argv` under `taskset -c cores` when pinning is on and taskset exists."""
    if cores is None or shutil.which("taskset") is None:
        return argv
    return ["taskset", "-c", cores, *argv]


# Set by --pin: the proxy under test gets the last core to itself; the mock and the
# load generator share the others. Less migration and cache interference, steadier
# CPU-per-request figures (throughput then reflects one core per proxy).
PIN: dict[str, str | None] = {"proxy": None, "others": None}


def load(
    url: str, requests: int, concurrency: int, stream: bool, usage: bool, key: str | None
) -> dict[str, float]:
    argv = [
        sys.executable,
        "-m",
        "bench.loadgen",
        "--url",
        url,
        "--requests",
        str(requests),
        "--concurrency",
        str(concurrency),
    ]
    if stream:
        argv.append("--stream")
    if usage:
        argv.append("--include-usage")
    if key:
        argv += ["--key", key]
    out = subprocess.run(
        _pinned(argv, PIN["others"]), capture_output=True, check=True, timeout=600
    ).stdout
    result: dict[str, float] = orjson.loads(out)
    return result


def measure(
    base_url: str,
    cpu_pid: int,
    requests: int,
    concurrency: int,
    stream: bool,
    usage: bool,
    key: str | None = None,
) -> dict[str, float]:
    url = f"{base_url}/v1/chat/completions"
    load(url, max(200, requests // 5), concurrency, stream, usage, key)  # warm-up
    before = tree_cpu_us(cpu_pid)
    result = load(url, requests, concurrency, stream, usage, key)
    result["cpu_us_per_req"] = (tree_cpu_us(cpu_pid) - before) / max(1, result["requests"])
    return result


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.run")
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds (median)")
    parser.add_argument("--quick", action="store_true", help="500 requests, 1 round")
    parser.add_argument("--targets", help="comma-separated subset of targets (default: all)")
    parser.add_argument(
        "--no-pin",
        dest="pin",
        action="store_false",
        help="let every process float over all cores (default: the proxy under test "
        "gets the last core, the mock and load generator the others)",
    )
    args = parser.parse_args()
    cores = os.cpu_count() or 1
    if args.pin and cores >= 2:
        PIN["proxy"] = str(cores - 1)
        PIN["others"] = f"0-{cores - 2}"
    requests = 500 if args.quick else args.requests
    rounds = 1 if args.quick else args.rounds
    workdir = Path(tempfile.mkdtemp(prefix="rcv-bench-"))
    mock_port = free_port()
    mock_url = f"http://127.0.0.1:{mock_port}"
    wanted = set(args.targets.split(",")) if args.targets else None
    chosen = [t for t in targets(mock_url) if wanted is None or t.name in wanted]
    runs: dict[tuple[str, str], list[dict[str, float]]] = {}
    with contextlib.ExitStack() as stack:
        mock = stack.enter_context(
            started(
                _pinned(
                    [sys.executable, "-m", "recovea_proxy.mock_provider", "--port", str(mock_port)],
                    PIN["others"],
                ),
                {},
                workdir / "mock.log",
            )
        )
        wait_ready(f"{mock_url}/v1/models", mock)
        # Every proxy runs for the whole bench (idle ones cost nothing); rounds
        # interleave the targets so drift on a shared machine hits them alike.
        live: list[tuple[Target, str, int, str | None]] = []
        for target in chosen:
            if target.argv is None:
                live.append((target, mock_url, mock.pid, None))
                continue
            port = free_port()
            env = {**target.env, "RECOVEA_DATA_DIR": str(workdir / target.name)}
            stack.callback(stop_embedded_postgres, workdir / target.name)
            key = target.setup(env) if target.setup else None
            proxy = stack.enter_context(
                started(
                    _pinned([*target.argv, "--port", str(port)], PIN["proxy"]),
                    env,
                    workdir / f"{target.name}.log",
                )
            )
            base = f"http://127.0.0.1:{port}"
            try:
                wait_ready(base + target.ready_path, proxy)
            except RuntimeError as exc:
                print(f"skipping {target.name}: {exc}", file=sys.stderr)
                continue
            live.append((target, base, proxy.pid, key))
        for _ in range(rounds):
            for target, base, pid, key in live:
                for mode, stream, usage in MODES:
                    result = measure(base, pid, requests, args.concurrency, stream, usage, key)
                    runs.setdefault((target.name, mode), []).append(result)
    rows = [
        {"target": name, "mode": mode, **_median(results)} for (name, mode), results in runs.items()
    ]
    report(rows, requests, args.concurrency, rounds)


def _median(results: list[dict[str, float]]) -> dict[str, float]:
    """Per metric, the median over the rounds."""
    return {key: statistics.median(r[key] for r in results) for key in results[0]}


def report(rows: list[dict[str, object]], requests: int, concurrency: int, rounds: int) -> None:
    print(
        f"\n{requests} requests per run, concurrency {concurrency}, "
        f"median of {rounds} interleaved rounds\n"
    )
    print(
        f"{'target':<10} {'mode':<21} {'req/s':>8} {'cpu µs/req':>11} {'p50 ms':>8} "
        f"{'p99 ms':>8} {'errors':>6}"
    )
    for row in rows:
        print(
            f"{row['target']:<10} {row['mode']:<21} {row['rps']:>8.0f} "
            f"{row['cpu_us_per_req']:>11.0f} {row['p50_ms']:>8.2f} {row['p99_ms']:>8.2f} "
            f"{row['errors']:>6.0f}"
        )
    by = {(str(r["target"]), str(r["mode"])): r for r in rows}
    ratios: dict[str, dict[str, float]] = {}
    print()
    for mode, _, _ in MODES:
        floor = by.get(("floor", mode))
        for target in sorted({str(r["target"]) for r in rows} - {"direct", "floor"}):
            row = by.get((target, mode))
            if floor is None or row is None:
                continue
            cpu = float(row["cpu_us_per_req"]) / float(floor["cpu_us_per_req"])  # type: ignore[arg-type]
            p50 = float(row["p50_ms"]) / float(floor["p50_ms"])  # type: ignore[arg-type]
            ratios[f"{target}/floor {mode}"] = {"cpu": round(cpu, 3), "p50": round(p50, 3)}
            print(f"{target}/floor {mode:<21} cpu x{cpu:.2f}   p50 x{p50:.2f}")
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "latest.json").write_bytes(
        orjson.dumps(
            {
                "requests": requests,
                "concurrency": concurrency,
                "rounds": rounds,
                "rows": rows,
                "ratios": ratios,
            },
            option=orjson.OPT_INDENT_2,
        )
    )


if __name__ == "__main__":
    main()
