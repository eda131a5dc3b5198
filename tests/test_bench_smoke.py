"""The bench's floor proxy and load generator keep working (so `make bench` does not rot).

Real sockets throughout: the mock provider on its own port, the floor as its own
process (`python -m bench.floor`), the load generator as its own process.
"""

from __future__ import annotations

import contextlib
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import orjson
import pytest

from bench.procs import free_port, started, tcp_open, wait_ready
from tests.support import MockServer

CHAT = "/v1/chat/completions"
HEADERS = {"authorization": "Bearer sk-floor-000000", "x-mock-chunks": "16"}
StartFloor = Callable[[str], str]


@pytest.fixture
def start_floor(tmp_path: Path) -> Iterator[StartFloor]:
    """Starts a floor proxy in front of an upstream URL; returns its base URL."""
    with contextlib.ExitStack() as stack:

        def start(upstream: str) -> str:
            port = free_port()
            argv = [sys.executable, "-m", "bench.floor", "--port", str(port)]
            process = stack.enter_context(
                started([*argv, "--upstream", upstream], {}, tmp_path / f"floor-{port}.log")
            )
            wait_ready(tcp_open(port), process, "floor proxy", 20)
            return f"http://127.0.0.1:{port}"

        yield start


def test_floor_forwards_streams_unchanged(start_floor: StartFloor, mock: MockServer) -> None:
    """A streamed chat response through the floor is byte for byte the direct one."""
    floor = start_floor(mock.url)
    body = orjson.dumps(
        {"model": "m", "stream": True, "messages": [{"role": "user", "content": "f"}]}
    )
    direct = httpx.post(f"{mock.url}{CHAT}", content=body, headers=HEADERS)
    proxied = httpx.post(f"{floor}{CHAT}", content=body, headers=HEADERS)
    assert direct.status_code == 200
    assert direct.content.count(b"data: ") > 16
    assert (direct.status_code, direct.content) == (proxied.status_code, proxied.content)
    assert direct.headers["content-type"] == proxied.headers["content-type"]


def test_floor_answers_502_when_upstream_is_unreachable(start_floor: StartFloor) -> None:
    """Nothing listening upstream: the floor answers 502 itself, it does not crash."""
    floor = start_floor(f"http://127.0.0.1:{free_port()}")
    response = httpx.post(f"{floor}{CHAT}", content=b"{}", headers=HEADERS)
    assert 502 == response.status_code


def test_loadgen_reports_every_request(start_floor: StartFloor, mock: MockServer) -> None:
    """The load generator sends exactly the requests asked for, and all succeed."""
    floor = start_floor(mock.url)
    argv = [sys.executable, "-m", "bench.loadgen", "--url", f"{floor}{CHAT}"]
    out = subprocess.run(
        [*argv, "--requests", "50", "--concurrency", "4", "--stream"],
        capture_output=True,
        check=True,
        timeout=60,
    ).stdout
    result = orjson.loads(out)
    assert (50, 50, 0) == (result["requests"], result["ok"], result["errors"])
    assert 0 < result["p50_ms"] <= result["p99_ms"]


def test_at_ref_runs_the_cli_of_the_checkout_it_is_given(tmp_path: Path) -> None:
    """`bench.run --against REF` runs another checkout's gateway: `bench.at_ref` imports
    the package from that checkout, and refuses when it would import this one."""
    repo = Path(__file__).resolve().parent.parent

    def at_ref(checkout: Path) -> subprocess.CompletedProcess[str]:
        argv = [sys.executable, "-m", "bench.at_ref", str(checkout), "--help"]
        return subprocess.run(argv, capture_output=True, text=True, timeout=60, cwd=repo)

    done = at_ref(repo)
    assert done.returncode == 0 and "serve" in done.stdout, done.stderr
    empty = tmp_path / "not-a-checkout"
    empty.mkdir()
    refused = at_ref(empty)
    assert refused.returncode != 0
    assert f"not from {empty}" in refused.stderr
