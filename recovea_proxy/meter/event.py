"""The body-free facts of one finished request: the log line's fields and the
`request_events` row. Nothing here can hold prompt or response text.

The hot path builds the row as a flat tuple of plain values (strings, ints, bools,
None, the levers dict) in `COLUMNS` order — cheap to build, and just as cheap to
write to the spool as JSON. The writer puts the route id in and lets Postgres cast
ids and the epoch-millisecond time.
"""

from __future__ import annotations

import uuid
from typing import Any

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
#: where the hot-path row keeps the route's path (the drainer puts the route id there)
ROUTE = COLUMNS.index("route_id")
_CUSTOMER = COLUMNS.index("customer_id")
_PROVIDER = COLUMNS.index("provider")
_MODEL = COLUMNS.index("baseline_model")
LEVERS = COLUMNS.index("levers_fired")
_ROUTE_NAMESPACE = uuid.UUID("7d0c3f5e-2a61-4c55-9a43-8f1d6b0e2c11")

Row = tuple[Any, ...]


def status_of(record: RequestRecord) -> str:
    """`error` when the request failed; `success` otherwise (ambiguous ends included)."""
    return "error" if record.success is False else "success"


def event_row(record: RequestRecord) -> Row:
    """The request's `request_events` row, plain values, route path in the route slot."""
    usage = record.usage
    model = record.model
    return (
        record.request_id,
        record.trace_id,
        record.workspace_id,
        record.project_id,
        record.team_id,
        record.rcv_key_id,
        record.route,
        record.feature,
        record.end_user_id,
        model,
        record.realized_model or model,
        usage.input_tokens,
        usage.output_tokens,
        usage.cached_tokens,
        usage.reasoning_tokens,
        record.levers_fired,
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
    )


def route_id(customer_id: str | None, provider: str, path: str) -> uuid.UUID:
    """The route's id: the same (workspace, provider, path) always gives the same id, in
    every process, so no lookup is needed to name it."""
    return uuid.uuid5(_ROUTE_NAMESPACE, f"{customer_id}|{provider}|{path}")


def route_key(row: Row) -> tuple[str | None, str, str, str | None]:
    """(workspace, provider, path, model) of a hot-path row."""
    return row[_CUSTOMER], row[_PROVIDER], row[ROUTE], row[_MODEL]


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
