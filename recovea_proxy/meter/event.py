"""The body-free facts of one finished request: the log line's fields and the
`request_events` row. Nothing here can hold prompt or response text.

The hot path builds the row exactly as the drainer's staging table takes it
(`STAGING_COLUMNS`: the `request_events` columns, then the receipt's place and
token, the route's path, then the pricing facts the row has no column for — cache
writes by lifetime and the service tier, which go to `pricing_facts`): a flat tuple
of plain values that goes to COPY as it is and to the spool as JSON. Postgres casts
the ids and the epoch-millisecond time, and creates routes from the batch, so the
drainer does no per-event Python work.
"""

from __future__ import annotations

import uuid
from typing import Any

import orjson

from recovea_proxy.record import RequestRecord

#: the `request_events` columns, in the order the row tuple holds them
COLUMNS = (
    "request_id",
    "trace_id",
    "customer_id",
    "project_id",
    "team_id",
    "rcv_key_id",
    "route_id",
    "feature",
    "end_user_id",
    "baseline_model",
    "realized_model",
    "input_tokens",
    "output_tokens",
    "cached_tokens",
    "reasoning_tokens",
    "levers_fired",
    "cache_hit",
    "cache_type",
    "dedup_singleflight",
    "finish_reason",
    "success",
    "fell_back_to_baseline",
    "status",
    "latency_total_ms",
    "gateway_overhead_ms",
    "provider",
    "env",
    "ts",
    "baseline_cost",
    "realized_cost",
)
#: the facts pricing needs beyond the row (`pricing_facts`)
PRICING_COLUMNS = ("cache_write_5m_tokens", "cache_write_1h_tokens", "service_tier")
#: what the hot path queues per request: the row, the receipt (or NULLs), the route's
#: path, the pricing facts. New columns go at the end: a shorter row (spooled by an
#: older version) is read with NULLs for them.
STAGING_COLUMNS = (*COLUMNS, "chain_id", "seq", "kid", "token", "route_path", *PRICING_COLUMNS)
_ROUTE_NAMESPACE = uuid.UUID("7d0c3f5e-2a61-4c55-9a43-8f1d6b0e2c11")
_NO_RECEIPT = (None, None, None, None)

Row = tuple[Any, ...]


def status_of(record: RequestRecord) -> str:
    """`error` when the request failed; `success` otherwise (ambiguous ends included)."""
    return "error" if record.success is False else "success"


def event_row(record: RequestRecord, route: str | None) -> Row:
    """The request's staging row (see `STAGING_COLUMNS`)."""
    usage = record.usage
    model = record.model
    levers = record.levers_fired
    place = record.receipt_place
    return (
        record.request_id,
        record.trace_id,
        record.workspace_id,
        record.project_id,
        record.team_id,
        record.rcv_key_id,
        route,
        record.feature,
        record.end_user_id,
        model,
        record.realized_model or model,
        usage.input_tokens,
        usage.output_tokens,
        usage.cached_tokens,
        usage.reasoning_tokens,
        orjson.dumps(levers).decode() if levers else "{}",
        record.cache_hit,
        record.cache_type,
        record.dedup_singleflight,
        usage.finish_reason,
        record.success,
        record.fell_back,
        "error" if record.success is False else "success",
        record.latency_ms,
        record.overhead_ms,
        record.provider,
        record.env,
        record.ts_epoch_ms,
        None,
        None,
        *((place[0], place[1], place[2], record.receipt) if place else _NO_RECEIPT),
        record.route,
        usage.cache_write_5m_tokens,
        usage.cache_write_1h_tokens,
        usage.service_tier,
    )


class RouteIds:
    """Route ids by (workspace, provider, path). An id is derived from those three, so
    every process names a route alike without a lookup; this only caches the
    derivation."""

    __slots__ = ("_ids",)

    def __init__(self) -> None:
        self._ids: dict[tuple[str, str, str], str] = {}

    def id_for(self, record: RequestRecord) -> str | None:
        """The route id of a request (None without a workspace)."""
        workspace = record.workspace_id
        if workspace is None:
            return None
        key = (workspace, record.provider, record.route)
        found = self._ids.get(key)
        if found is None:
            found = self._ids[key] = str(route_id(*key))
        return found


def route_id(customer_id: str | None, provider: str, path: str) -> uuid.UUID:
    """The route's id: the same (workspace, provider, path) always gives the same id."""
    return uuid.uuid5(_ROUTE_NAMESPACE, f"{customer_id}|{provider}|{path}")


def event_fields(record: RequestRecord) -> dict[str, Any]:
    """The record's body-free fields for the request log line."""
    usage = record.usage
    return {
        "request_id": record.request_id,
        "trace_id": record.trace_id,
        "customer_id": record.workspace_id,
        "rcv_key_id": record.rcv_key_id,
        "provider": record.provider,
        "route": record.route,
        "method": record.method,
        "baseline_model": record.model,
        "realized_model": record.realized_model or record.model,
        "fell_back_to_baseline": record.fell_back,
        "stream": record.stream,
        "feature": record.feature,
        "end_user_id": record.end_user_id,
        "input_tokens": usage.input_tokens,
        "output_tokens": usage.output_tokens,
        "cached_tokens": usage.cached_tokens,
        "reasoning_tokens": usage.reasoning_tokens,
        "finish_reason": usage.finish_reason,
        "success": record.success,
        "status": status_of(record),
        "http_status": record.status_code,
        "error_code": record.error_code,
        "client_gone": record.client_gone,
        "upstream_request_id": record.upstream_request_id,
        "latency_total_ms": record.latency_ms,
        "gateway_overhead_ms": record.overhead_ms,
        "env": record.env,
        "levers_fired": record.levers_fired,
    }
