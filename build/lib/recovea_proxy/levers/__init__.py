"""Optimization levers (slim, routing, cache, dedup) and the one wrapper they run in.

Every lever is fail-open: `run_guarded` catches any fault, records `error` for the
lever on the request record, counts `gateway_fail_open_total{layer=<lever>}` and
lets the request continue as if the lever were absent. The chain is built once
at startup from the configuration; a lever that is off is not in it at all, so
with no lever enabled the pipeline skips this step entirely.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

import structlog

from recovea_proxy.record import RequestRecord

_log = structlog.get_logger("recovea.levers")


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
    """Run one lever; a fault becomes `error` on the record, never the caller's error."""
    try:
        outcome = await lever.before(request)
    except Exception as exc:  # fail-open by design: any fault in a lever is contained
        request.record.levers_fired[lever.name] = "error"
        count_fault(lever.name, type(exc).__name__)
        _log.warning("lever_fault", lever=lever.name, error=type(exc).__name__)
        return
    request.record.levers_fired[lever.name] = outcome


def build_chain() -> tuple[Lever, ...]:
    """The enabled levers, in their fixed order (slim, routing, cache, dedup)."""
    return ()
