"""The lever wrapper is fail-open: a lever's fault is recorded and contained."""

from __future__ import annotations

import asyncio
import time

from recovea_proxy.levers import run_guarded
from recovea_proxy.proxy import LeverContext
from recovea_proxy.record import RequestRecord


class Broken:
    name = "cache"

    async def before(self, request: LeverContext) -> str:
        raise RuntimeError("cache backend exploded")


class Working:
    name = "slim"

    async def before(self, request: LeverContext) -> str:
        request.body = request.body.replace(b"  ", b" ")
        return "hit"


def context() -> LeverContext:
    record = RequestRecord(
        request_id="r", trace_id="t", started_ns=time.perf_counter_ns(), ts_epoch_ms=0
    )
    return LeverContext(record, {"model": "m"}, b'{"model":  "m"}')


def test_a_faulty_lever_is_recorded_counted_and_contained() -> None:
    """A lever that raises leaves the request as it was, marks `error`, and is counted."""
    request = context()
    faults: list[tuple[str, str]] = []
    asyncio.run(
        run_guarded(Broken(), request, lambda layer, reason: faults.append((layer, reason)))
    )
    assert request.record.levers_fired == {"cache": "error"}
    assert faults == [("cache", "RuntimeError")]
    assert request.body == b'{"model":  "m"}'


def test_a_working_lever_reports_its_outcome() -> None:
    """A lever's own outcome lands on the record; its rewrite is kept."""
    request = context()
    asyncio.run(run_guarded(Working(), request, lambda layer, reason: None))
    assert request.record.levers_fired == {"slim": "hit"}
    assert request.body == b'{"model": "m"}'
