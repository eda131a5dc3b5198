"""The request log: one JSON line per request, written in batches by the log itself
(the interpreter's stdout buffering is off in containers), none lost at shutdown."""

from __future__ import annotations

import asyncio
import io
import os
import sys

import orjson
import pytest

from recovea_proxy import ids
from recovea_proxy.observability.logging import RequestLog


class CountingRaw(io.RawIOBase):
    """An unbuffered stdout, as with PYTHONUNBUFFERED=1: each write is a system call."""

    def __init__(self) -> None:
        self.calls: list[bytes] = []

    def writable(self) -> bool:
        return True

    def write(self, data: bytes) -> int:  # type: ignore[override]
        self.calls.append(bytes(data))
        return len(data)


class UnbufferedStdout:
    def __init__(self, raw: CountingRaw) -> None:
        self.buffer = raw


def test_request_lines_are_written_together_and_flushed(monkeypatch: pytest.MonkeyPatch) -> None:
    raw = CountingRaw()
    monkeypatch.setattr(sys, "stdout", UnbufferedStdout(raw))

    async def run() -> None:
        log = RequestLog("json")
        for n in range(200):
            log.write({"request_id": f"r{n}", "status": "success"})
        assert raw.calls == []  # nothing written per request
        await asyncio.sleep(RequestLog.FLUSH_AFTER_S * 3)  # the log's own timer
        assert len(raw.calls) == 1
        log.write({"request_id": "last", "status": "error"})
        log.flush()  # what shutdown does

    asyncio.run(run())
    lines = [orjson.loads(line) for line in b"".join(raw.calls).splitlines()]
    assert [line["request_id"] for line in lines] == [f"r{n}" for n in range(200)] + ["last"]
    assert {line["event"] for line in lines} == {"request"}
    assert all(line["timestamp"].endswith("Z") for line in lines)
    assert len(raw.calls) == 2


def test_a_full_buffer_is_written_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    raw = CountingRaw()
    monkeypatch.setattr(sys, "stdout", UnbufferedStdout(raw))

    async def run() -> None:
        log = RequestLog("json")
        filler = "x" * 1000
        while not raw.calls:
            log.write({"request_id": "r", "tag": filler})
        assert sum(map(len, raw.calls)) >= RequestLog.BUFFER_BYTES
        log.flush()

    asyncio.run(run())


def test_ids_are_random_hex_and_never_repeat() -> None:
    made = [ids.new_id() for _ in range(3 * ids.POOL_BYTES // 16 + 5)]  # several refills
    assert all(len(one) == 32 and int(one, 16) >= 0 for one in made)
    assert len(set(made)) == len(made)


def test_a_forked_child_does_not_reuse_the_parents_ids() -> None:
    ids.new_id()  # a half-used pool, inherited by the child
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        os.write(write, "".join(ids.new_id() for _ in range(8)).encode())
        os._exit(0)
    os.close(write)
    _, status = os.waitpid(pid, 0)
    child = os.read(read, 4096).decode()
    os.close(read)
    parent = "".join(ids.new_id() for _ in range(8))
    assert status == 0 and len(child) == len(parent) == 8 * 32
    assert {child[i : i + 32] for i in range(0, 256, 32)}.isdisjoint(
        {parent[i : i + 32] for i in range(0, 256, 32)}
    )
