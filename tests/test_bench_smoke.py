"""The bench's floor proxy and load generator keep working (so `make bench` does not rot)."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator

import httpx
import orjson
import pytest

from tests.support import MockServer, free_port, wait_until


@pytest.fixture
def floor(mock: MockServer) -> Iterator[str]:
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "bench.floor", "--port", str(port), "--upstream", mock.url],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"

    def up() -> bool:
        try:
            return httpx.get(f"{url}/v1/models", headers={"authorization": "Bearer x"}).is_success
        except httpx.HTTPError:
            return False

    try:
        wait_until(up, 20, "floor proxy")
        yield url
    finally:
        process.terminate()
        process.wait(10)


def test_floor_forwards_streams_unchanged(floor: str, mock: MockServer) -> None:
    """The floor is a faithful pass-through: same bytes as a direct call."""
    body = orjson.dumps(
        {"model": "m", "stream": True, "messages": [{"role": "user", "content": "f"}]}
    )
    headers = {"authorization": "Bearer sk-floor-000000"}
    direct = httpx.post(f"{mock.url}/v1/chat/completions", content=body, headers=headers)
    proxied = httpx.post(f"{floor}/v1/chat/completions", content=body, headers=headers)
    assert proxied.content == direct.content


def test_loadgen_reports_every_request(floor: str) -> None:
    """The load generator sends exactly the requests asked for and reports latencies."""
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench.loadgen",
            "--url",
            f"{floor}/v1/chat/completions",
            "--requests",
            "50",
            "--concurrency",
            "4",
            "--stream",
        ],
        capture_output=True,
        check=True,
        timeout=60,
    ).stdout
    result = orjson.loads(out)
    assert result["requests"] == 50
    assert result["errors"] == 0
    assert 0 < result["p50_ms"] <= result["p99_ms"]
