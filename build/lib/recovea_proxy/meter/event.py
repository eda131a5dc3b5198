"""The body-free facts of one finished request, as a flat dict (the log line today,
the `request_events` row tomorrow). Nothing here can hold prompt or response text.
"""

from __future__ import annotations

from typing import Any

from recovea_proxy.record import RequestRecord


def event_fields(record: RequestRecord) -> dict[str, Any]:
    """The record's body-free fields under the metering row's column names."""
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
        "status": "success" if record.success is not False else "error",
        "http_status": record.status_code,
        "error_code": record.error_code,
        "client_gone": record.client_gone,
        "upstream_request_id": record.upstream_request_id,
        "latency_total_ms": record.latency_ms,
        "gateway_overhead_ms": record.overhead_ms,
        "env": record.env,
        "levers_fired": record.levers_fired,
    }
