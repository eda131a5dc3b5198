"""OpenTelemetry traces (optional, `RECOVEA_OTEL_ENDPOINT`): one span per request,
sent over OTLP/HTTP as JSON, batched off the hot path.

What a span holds, built from the finished request record in `Runtime.finish` (after
the response) and nothing else — never a prompt, a completion, a tool argument, a
header or a key, whatever the GenAI conventions allow:

| attribute                                   | from the record |
| `gen_ai.provider.name`, `gen_ai.system`     | provider (openai, anthropic, openrouter) |
| `gen_ai.operation.name`                     | the endpoint kind (chat, text_completion, |
|                                             | embeddings, …) |
| `gen_ai.request.model`                      | the model the caller asked for |
| `gen_ai.response.model`                     | the model that served it (routing) |
| `gen_ai.usage.input_tokens`, `…output_tokens` | the provider's counts (absent when none) |
| `gen_ai.response.finish_reasons`            | `[finish reason]` |
| `http.request.method`, `http.route`,        | method, route template, status |
| `http.response.status_code`, `error.type`   | (and the gateway's error code) |
| `recovea.request_id`, `recovea.workspace_id`, `recovea.cache_hit`, … | the gateway's ids |

The span's trace id is the request's `x-recovea-trace-id` when that is 32 hex digits
(always, unless the caller sent a trace id of another form: then it is derived from
it and the original kept as `recovea.trace_id`); when the caller's `traceparent` gave
the trace id, the span's parent is the caller's span. Start and end come from the
record (arrival wall time, plus its measured latency).

What can be lost, and how it is counted: spans wait in a bounded queue
(`RECOVEA_OTEL_QUEUE_MAX`); a span that finds it full is dropped; a batch
(`RECOVEA_OTEL_BATCH_MAX`, at least every `RECOVEA_OTEL_FLUSH_INTERVAL_S`) that the
collector refuses or does not answer within `RECOVEA_OTEL_TIMEOUT_S` is dropped.
Both count `gateway_fail_open_total{layer="otel"}` (reason `queue_full`,
`export_failed`) and `recovea_otel_spans_total{outcome="dropped"}`; nothing is
retried and no request waits. The lifespan owns the exporter's task and flushes the
queue once at shutdown. With the variable unset there is no exporter at all.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
from collections import deque
from typing import Any

import aiohttp
import orjson
import structlog

from recovea_proxy import __version__
from recovea_proxy.config import Settings
from recovea_proxy.observability.metrics import GatewayMetrics
from recovea_proxy.record import RequestRecord

_SERVER = 2  # SpanKind.SPAN_KIND_SERVER
_STATUS_ERROR = 2
_HEX = frozenset("0123456789abcdef")
#: the gateway's endpoint kinds as GenAI operation names (others keep their kind)
_OPERATIONS = {
    "chat": "chat",
    "messages": "chat",
    "responses": "chat",
    "completions": "text_completion",
    "embeddings": "embeddings",
}

log = structlog.get_logger("recovea.otel")


def _text(key: str, value: str) -> dict[str, Any]:
    return {"key": key, "value": {"stringValue": value}}


def _int(key: str, value: int) -> dict[str, Any]:
    return {"key": key, "value": {"intValue": value}}


def _bool(key: str, value: bool) -> dict[str, Any]:
    return {"key": key, "value": {"boolValue": value}}


def otel_trace_id(trace_id: str) -> str:
    """The record's trace id as 32 lowercase hex digits: itself when it is one."""
    lowered = trace_id.lower()
    if len(lowered) == 32 and _HEX.issuperset(lowered) and lowered != "0" * 32:
        return lowered
    return hashlib.sha256(trace_id.encode("utf-8", "replace")).hexdigest()[:32]


def span_of(record: RequestRecord) -> dict[str, Any]:
    """The OTLP/JSON span of a finished request (body-free facts only)."""
    operation = _OPERATIONS.get(record.kind, record.kind or "other")
    attributes = [
        _text("gen_ai.provider.name", record.provider),
        _text("gen_ai.system", record.provider),
        _text("gen_ai.operation.name", operation),
        _text("http.request.method", record.method),
        _text("http.route", record.route),
        _int("http.response.status_code", record.status_code),
        _text("recovea.request_id", record.request_id),
        _bool("recovea.cache_hit", record.cache_hit),
        _bool("recovea.stream", record.stream),
    ]
    if record.model is not None:
        attributes.append(_text("gen_ai.request.model", record.model))
        attributes.append(_text("gen_ai.response.model", record.realized_model or record.model))
    usage = record.usage
    if usage.input_tokens is not None:
        attributes.append(_int("gen_ai.usage.input_tokens", usage.input_tokens))
    if usage.output_tokens is not None:
        attributes.append(_int("gen_ai.usage.output_tokens", usage.output_tokens))
    if usage.finish_reason is not None:
        attributes.append(
            {
                "key": "gen_ai.response.finish_reasons",
                "value": {"arrayValue": {"values": [{"stringValue": usage.finish_reason}]}},
            }
        )
    if record.workspace_id is not None:
        attributes.append(_text("recovea.workspace_id", record.workspace_id))
    if record.rcv_key_id is not None:
        attributes.append(_text("recovea.rcv_key_id", record.rcv_key_id))
    if record.upstream_request_id is not None:
        attributes.append(_text("recovea.upstream_request_id", record.upstream_request_id))
    if record.fell_back:
        attributes.append(_bool("recovea.fell_back_to_baseline", True))
    if record.error_code is not None:
        attributes.append(_text("error.type", record.error_code))
    trace_id = otel_trace_id(record.trace_id)
    if trace_id != record.trace_id:
        attributes.append(_text("recovea.trace_id", record.trace_id))
    start_ns = record.ts_epoch_ms * 1_000_000
    span: dict[str, Any] = {
        "traceId": trace_id,
        "spanId": os.urandom(8).hex(),
        "name": f"{operation} {record.model}" if record.model else operation,
        "kind": _SERVER,
        "startTimeUnixNano": str(start_ns),
        "endTimeUnixNano": str(start_ns + int(record.latency_ms * 1_000_000)),
        "attributes": attributes,
    }
    if record.parent_span_id is not None and trace_id == record.trace_id:
        span["parentSpanId"] = record.parent_span_id
    if record.success is False or record.status_code >= 500:
        span["status"] = {"code": _STATUS_ERROR, "message": record.error_code or ""}
    return span


class SpanExporter:
    """The bounded span queue and the task that sends it in batches."""

    def __init__(
        self, settings: Settings, metrics: GatewayMetrics, session: aiohttp.ClientSession
    ) -> None:
        assert settings.otel_endpoint is not None
        self._url = settings.otel_endpoint
        self._session = session
        self._max = settings.otel_queue_max
        self._batch_max = settings.otel_batch_max
        self._interval_s = settings.otel_flush_interval_s
        self._timeout = aiohttp.ClientTimeout(total=settings.otel_timeout_s)
        self._spans: deque[dict[str, Any]] = deque()
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._resource = {
            "attributes": [
                _text("service.name", settings.otel_service_name),
                _text("service.version", __version__),
            ]
        }
        self._exported = metrics.otel_spans.labels("exported")
        self._dropped = metrics.otel_spans.labels("dropped")
        self._queue_full = metrics.fail_open.labels("otel", "queue_full")
        self._export_failed = metrics.fail_open.labels("otel", "export_failed")

    def add(self, record: RequestRecord) -> None:
        """Queue the request's span (called from `Runtime.finish`); drop it when full."""
        if len(self._spans) >= self._max:
            self._dropped.inc()
            self._queue_full.inc()
            return
        self._spans.append(span_of(record))
        if len(self._spans) >= self._batch_max:
            self._wake.set()

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="otel-exporter")

    async def close(self, timeout_s: float) -> None:
        """Stop the task, then send what is queued (once, within `timeout_s`)."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._flush_all(), timeout_s)
        self._count_dropped(len(self._spans))
        self._spans.clear()

    async def _run(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self._interval_s)
            self._wake.clear()
            await self._flush_all()

    async def _flush_all(self) -> None:
        while self._spans:
            batch = [self._spans.popleft() for _ in range(min(self._batch_max, len(self._spans)))]
            await self._send(batch)

    async def _send(self, batch: list[dict[str, Any]]) -> None:
        body = orjson.dumps(
            {
                "resourceSpans": [
                    {
                        "resource": self._resource,
                        "scopeSpans": [
                            {
                                "scope": {"name": "recovea_proxy", "version": __version__},
                                "spans": batch,
                            }
                        ],
                    }
                ]
            }
        )
        try:
            async with self._session.post(
                self._url,
                data=body,
                headers={"content-type": "application/json"},
                timeout=self._timeout,
            ) as response:
                await response.read()
                ok = 200 <= response.status < 300
        except (aiohttp.ClientError, OSError, TimeoutError):
            ok = False
        if ok:
            self._exported.inc(len(batch))
        else:
            log.warning("otel_export_failed", spans=len(batch))
            self._count_dropped(len(batch))

    def _count_dropped(self, n: int) -> None:
        if n:
            self._dropped.inc(n)
            self._export_failed.inc(n)
