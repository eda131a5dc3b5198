"""Optimization levers (slim, routing, cache, dedup) and the one wrapper they run in.

Every lever is fail-open: `run_guarded` catches any fault, records `error` for the
lever on the request record, counts `gateway_fail_open_total{layer=<lever>}` and
lets the request continue as if the lever were absent: whatever the lever changed
before it failed (the body, the parsed body, the record's usage and the fields in
`LEVER_FIELDS`) is put back as it was when the lever started. The chain is built once
at startup from the configuration; a lever that is off is not in it at all, so
with no lever enabled the pipeline skips this step entirely.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any, Protocol

import orjson
import structlog

from recovea_proxy.record import RequestRecord

_log = structlog.get_logger("recovea.levers")

#: the record fields a lever may set (the model it routes to, what answered); a
#: faulty lever's changes to them are undone
LEVER_FIELDS = (
    "model",
    "realized_model",
    "cache_hit",
    "cache_type",
    "dedup_singleflight",
    "fell_back",
)


class LeverRequest(Protocol):
    """What a lever sees and may change before the upstream call."""

    record: RequestRecord
    parsed: dict[str, Any] | None
    body: bytes


class Lever(Protocol):
    """One optimization lever."""

    name: str

    async def before(self, request: LeverRequest) -> str:
        """Act before the upstream call; return `hit`, `miss` or `skip`."""
        ...


async def run_guarded(
    lever: Lever, request: LeverRequest, count_fault: Callable[[str, str], None]
) -> None:
    """Run one lever; a fault becomes `error` on the record, never the caller's error,
    and leaves the request as the lever found it."""
    record = request.record
    body = request.body
    was_parsed = request.parsed is not None
    fields = [getattr(record, name) for name in LEVER_FIELDS]
    usage = copy.copy(record.usage)
    try:
        outcome = await lever.before(request)
    except Exception as exc:  # fail-open by design: any fault in a lever is contained
        request.body = body
        # The lever may have changed the parsed dict in place: read it again from the body.
        request.parsed = _parsed(body) if was_parsed else None
        for name, value in zip(LEVER_FIELDS, fields, strict=True):
            setattr(record, name, value)
        record.usage = usage
        record.levers_fired[lever.name] = "error"
        count_fault(lever.name, type(exc).__name__)
        _log.warning("lever_fault", lever=lever.name, error=type(exc).__name__)
        return
    request.record.levers_fired[lever.name] = outcome


def _parsed(body: bytes) -> dict[str, Any] | None:
    """The body as a JSON object again, or None (it then goes upstream as it is)."""
    try:
        parsed = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    return parsed if isinstance(parsed, dict) else None


def build_chain() -> tuple[Lever, ...]:
    """The enabled levers, in their fixed order (slim, routing, cache, dedup)."""
    return ()
