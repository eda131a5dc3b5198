"""SIGTERM lets in-flight streams finish, then the gateway exits cleanly."""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Callable

import httpx
import orjson
import pytest

from tests.conftest import FAKE_OPENAI_KEY
from tests.ledger_support import owner_query
from tests.support import Gateway, Postgres, wait_until, without_receipt


def test_sigterm_finishes_in_flight_streams(start_gateway: Callable[..., Gateway]) -> None:
    """A stream that started before SIGTERM completes; new connections are refused; exit 0."""
    gw = start_gateway(RECOVEA_SHUTDOWN_GRACE_S="20")
    body = orjson.dumps(
        {"model": "gpt-4o", "stream": True, "messages": [{"role": "user", "content": "drain"}]}
    )
    first_chunk = threading.Event()
    result: dict[str, object] = {}

    def consume() -> None:
        with httpx.stream(
            "POST",
            f"{gw.url}/v1/chat/completions",
            content=body,
            headers={
                "authorization": f"Bearer {FAKE_OPENAI_KEY}",
                "x-mock-chunks": "10",
                "x-mock-chunk-delay-ms": "100",
            },
            timeout=30,
        ) as response:
            data = b""
            for chunk in response.iter_raw():
                data += chunk
                first_chunk.set()
            result["body"] = data

    reader = threading.Thread(target=consume)
    reader.start()
    assert first_chunk.wait(10)
    gw.process.send_signal(signal.SIGTERM)
    wait_until(lambda: _refused(gw.url), 10, "listener closed after SIGTERM")
    reader.join(30)
    assert without_receipt(result["body"]).endswith(b"data: [DONE]\n\n")  # type: ignore[arg-type]
    # uvicorn re-raises the signal it caught once shutdown is complete.
    assert gw.process.wait(30) in (0, -signal.SIGTERM)
    lines = gw.log_lines()
    assert any(line.get("event") == "gateway_stopping" for line in lines)
    assert sum(1 for line in lines if line.get("event") == "request") == 1


@pytest.mark.parametrize("grace", ["0", "0.5"])
def test_grace_under_one_second_bounds_the_shutdown(
    start_gateway: Callable[..., Gateway], postgres: Postgres, grace: str
) -> None:
    """RECOVEA_SHUTDOWN_GRACE_S under 1 (0 included) is a bound, not "wait forever":
    with a 60 s stream in flight, SIGTERM ends the process within seconds (0 cancels
    the stream at once) and the exit is clean. The cut stream's ledger row is still
    written: the metering flush has its own minimum time."""
    gw = start_gateway(RECOVEA_SHUTDOWN_GRACE_S=grace)
    first_chunk = threading.Event()
    request_ids: list[str] = []

    def consume() -> None:
        try:
            with httpx.stream(
                "POST",
                f"{gw.url}/v1/chat/completions",
                content=_STREAM_BODY,
                headers={
                    "authorization": f"Bearer {FAKE_OPENAI_KEY}",
                    "x-mock-chunks": "600",
                    "x-mock-chunk-delay-ms": "100",
                },
                timeout=90,
            ) as response:
                request_ids.append(response.headers["x-request-id"])
                for _ in response.iter_raw():
                    first_chunk.set()
        except httpx.HTTPError:
            pass  # the gateway cut the stream: what this test expects

    reader = threading.Thread(target=consume)
    reader.start()
    assert first_chunk.wait(10)
    started = time.monotonic()
    code = gw.stop(timeout=15)  # SIGTERM, then SIGKILL if still running after 15 s
    took = time.monotonic() - started
    reader.join(30)
    assert code in (0, -signal.SIGTERM), f"exit {code} after {took:.1f} s"
    assert not reader.is_alive()
    rows = owner_query(
        postgres.url,
        "SELECT success FROM recovea.request_events WHERE request_id = $1::uuid",
        request_ids[0],
    )
    assert [row["success"] for row in rows] == [None]  # cut short: an ambiguous outcome


_STREAM_BODY = orjson.dumps(
    {"model": "gpt-4o", "stream": True, "messages": [{"role": "user", "content": "long"}]}
)


def _refused(url: str) -> bool:
    try:
        httpx.get(f"{url}/healthz", timeout=1)
    except httpx.ConnectError:
        return True
    except httpx.HTTPError:
        return False
    return False


def test_workers_serve_on_one_port(start_gateway: Callable[..., Gateway]) -> None:
    """--workers 2 runs two worker processes behind one port, both serving."""
    gw = start_gateway(_args="--workers 2")
    children = wait_until(
        lambda: _children(gw.process.pid) if len(_children(gw.process.pid)) >= 2 else None,
        15,
        "2 workers",
    )
    assert len(children) == 2
    for _ in range(20):
        assert httpx.get(f"{gw.url}/healthz").text == "ok\n"


def _children(pid: int) -> list[int]:
    """Worker processes of the supervisor (multiprocessing's resource tracker excluded)."""
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as handle:
            children = [int(p) for p in handle.read().split()]
    except OSError:
        return []
    workers = []
    for child in children:
        try:
            with open(f"/proc/{child}/cmdline", "rb") as handle:
                if b"resource_tracker" not in handle.read():
                    workers.append(child)
        except OSError:
            continue
    return workers
