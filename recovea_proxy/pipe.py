"""Step 6 and 7 of the pipeline: a response, from its source to the client, and its
receipt as the last bytes.

The pipe reads any `sources.ResponseSource` (the provider, a cache replay, a flight
in progress) the same way:

- a JSON body up to `_BUFFER_JSON_MAX` is read whole (usage is read from it, the
  receipt goes in a header);
- anything else streams through, chunk by chunk, unchanged and unbuffered, past the
  observers; an SSE stream ends with the receipt as a comment line.

Observers (`Observer`: `feed` each chunk, `close` at the end) read the bytes as they
pass: the usage tap, and whatever a lever attached (the cache recorder, say). They
fail open: an observer that raises is dropped and counted
(`gateway_fail_open_total{layer="observer"}`); the client's bytes keep flowing.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from typing import Any, Protocol

import orjson

from recovea_proxy.asgi import Receive, Send
from recovea_proxy.clean import ID_MAX, clean_text, clean_usage
from recovea_proxy.disconnect import DisconnectWatcher
from recovea_proxy.errors import GatewayError, error_body, stream_error_event
from recovea_proxy.headers import response_headers
from recovea_proxy.providers.base import StreamFilter, StreamTap
from recovea_proxy.record import RequestRecord
from recovea_proxy.runtime import Runtime
from recovea_proxy.sources import ResponseSource
from recovea_proxy.surfaces import Surface

# Non-streamed JSON up to this size is buffered whole (usage is read from it and the
# receipt header needs it); anything else streams through.
_BUFFER_JSON_MAX = 16 * 1024 * 1024
_JSON_TYPE = b"application/json"
_SSE_TYPE = b"text/event-stream"


class Observer(Protocol):
    """Reads a response's bytes on their way to the client."""

    def feed(self, chunk: bytes) -> None:
        """One chunk (for a buffered JSON body: the whole body, once)."""

    def close(self) -> None:
        """The response has ended (normally, broken or abandoned); the record is
        settled by now."""


async def deliver(
    rt: Runtime,
    surface: Surface,
    source: ResponseSource,
    send: Send,
    receive: Receive,
    record: RequestRecord,
    *,
    hide_usage: bool = False,
    observers: list[Observer] | None = None,
) -> None:
    """Send the response of `source` to the client; settle the record's outcome and
    usage. `hide_usage`: undo the usage the gateway asked for on the client's behalf."""
    record.status_code = source.status
    watchers = observers or []
    length = source.content_length
    if (
        source.content_type.startswith(_JSON_TYPE)
        and (length is None or length <= _BUFFER_JSON_MAX)
        and source.identity_encoded
    ):
        await _send_buffered(rt, surface, source, send, record, watchers)
        return
    is_sse = source.content_type.startswith(_SSE_TYPE)
    tap = surface.provider.stream_tap(surface.kind) if is_sse else None
    stream_filter = surface.provider.stream_filter() if is_sse and hide_usage else None
    out_headers, upstream_id = response_headers(
        source.raw_headers,
        surface.provider.request_id_header,
        keep_length=stream_filter is None,
    )
    _note_upstream_id(record, upstream_id)
    add_gateway_headers(out_headers, record)
    source.start_body()
    record.responded = True
    await send({"type": "http.response.start", "status": source.status, "headers": out_headers})
    hasher = record.response_hash = hashlib.sha256()
    if tap is not None:
        watchers = [tap, *watchers]
    watcher = DisconnectWatcher(receive, record)
    try:
        last = await _stream(rt, surface, source, send, record, watchers, stream_filter, hasher)
    except asyncio.CancelledError:
        if not record.client_gone:
            raise
        current = asyncio.current_task()
        if current is not None:
            current.uncancel()
        _settle_stream(rt, record, tap, watchers)
        return
    finally:
        watcher.stop()
    _settle_stream(rt, record, tap, watchers)
    hasher.update(last)
    if is_sse:
        last += rt.receipts.sse_line(rt.receipts.sign(record, hasher.hexdigest()))
    await send({"type": "http.response.body", "body": last, "more_body": False})


async def _stream(
    rt: Runtime,
    surface: Surface,
    source: ResponseSource,
    send: Send,
    record: RequestRecord,
    observers: list[Observer],
    stream_filter: StreamFilter | None,
    hasher: Any,
) -> bytes:
    """Pipe the body through; return the last bytes (a filter's tail, or an error event
    when the source broke), which the caller sends with the receipt."""
    read = source.read
    perf = time.perf_counter_ns
    try:
        while True:
            waited = perf()
            chunk = await read()
            record.upstream_wait_ns += perf() - waited
            if not chunk:
                break
            faulty = None
            for observer in observers:
                try:
                    observer.feed(chunk)
                except Exception as fault:  # fail-open: the client's bytes keep flowing
                    faulty = [*(faulty or ()), (observer, fault)]
            if faulty:
                for broken, error in faulty:
                    _drop(rt, observers, broken, error)
            if stream_filter is not None:
                chunk = stream_filter.feed(chunk)
                if not chunk:
                    continue
            hasher.update(chunk)
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
        return stream_filter.flush() if stream_filter is not None else b""
    except source.errors as exc:
        kind = source.kind_of(exc)
        rt.metrics.upstream_errors.labels(surface.provider.name, kind).inc()
        record.error_code = f"upstream_{kind}"
        rt.log.warning("upstream_stream_broken", request_id=record.request_id, kind=kind)
        return stream_error_event(
            surface.error_shape, record.error_code, f"The provider stream broke ({kind})."
        )


def _drop(rt: Runtime, observers: list[Observer], observer: Observer, exc: Exception) -> None:
    """A faulty observer leaves the response; counted and logged (by type only)."""
    if observer in observers:
        observers.remove(observer)
    reason = type(exc).__name__
    rt.metrics.fail_open.labels("observer", reason).inc()
    rt.log.warning("observer_fault", observer=type(observer).__name__, error=reason)


async def _send_buffered(
    rt: Runtime,
    surface: Surface,
    source: ResponseSource,
    send: Send,
    record: RequestRecord,
    observers: list[Observer],
) -> None:
    waited = time.perf_counter_ns()
    parts: list[bytes] = []
    size = 0
    read = source.read
    try:
        while chunk := await read():
            parts.append(chunk)
            size += len(chunk)
            if size > _BUFFER_JSON_MAX:
                record.upstream_wait_ns += time.perf_counter_ns() - waited
                await _pass_oversized(rt, surface, source, send, record, parts, observers)
                return
        body = b"".join(parts)
    except source.errors as exc:
        kind = source.kind_of(exc)
        rt.metrics.upstream_errors.labels(surface.provider.name, kind).inc()
        rt.metrics.fail_open.labels("upstream", kind).inc()
        record.error_code = "upstream_unreachable"
        _close_observers(rt, observers)
        raise GatewayError(
            502, "upstream_unreachable", f"The provider response broke off ({kind})."
        ) from exc
    finally:
        record.upstream_wait_ns += time.perf_counter_ns() - waited
    try:
        parsed = orjson.loads(body) if body else None
    except orjson.JSONDecodeError:
        parsed = None
    record.usage = clean_usage(surface.provider.usage_from_json(surface.kind, parsed))
    record.success = 200 <= source.status < 300 and not record.usage.error
    out_headers, upstream_id = response_headers(
        source.raw_headers, surface.provider.request_id_header, keep_length=False
    )
    _note_upstream_id(record, upstream_id)
    out_headers.append((b"content-length", str(len(body)).encode()))
    add_gateway_headers(out_headers, record)
    add_receipt_header(rt, out_headers, record, body)
    if observers:
        for observer in list(observers):
            try:
                observer.feed(body)
            except Exception as exc:
                _drop(rt, observers, observer, exc)
        _close_observers(rt, observers)
    record.responded = True
    await send({"type": "http.response.start", "status": source.status, "headers": out_headers})
    await send({"type": "http.response.body", "body": body, "more_body": False})


async def _pass_oversized(
    rt: Runtime,
    surface: Surface,
    source: ResponseSource,
    send: Send,
    record: RequestRecord,
    head: list[bytes],
    observers: list[Observer],
) -> None:
    """A JSON body of unannounced length outgrew the buffer: stream it on, unread."""
    out_headers, upstream_id = response_headers(
        source.raw_headers, surface.provider.request_id_header, keep_length=False
    )
    _note_upstream_id(record, upstream_id)
    add_gateway_headers(out_headers, record)
    source.start_body()
    record.responded = True
    await send({"type": "http.response.start", "status": source.status, "headers": out_headers})
    first = b"".join(head)
    hasher = record.response_hash = hashlib.sha256(first)
    for observer in list(observers):
        try:
            observer.feed(first)
        except Exception as exc:
            _drop(rt, observers, observer, exc)
    await send({"type": "http.response.body", "body": first, "more_body": True})
    last = await _stream(rt, surface, source, send, record, observers, None, hasher)
    hasher.update(last)
    _settle_stream(rt, record, None, observers)
    await send({"type": "http.response.body", "body": last, "more_body": False})


def _settle_stream(
    rt: Runtime, record: RequestRecord, tap: StreamTap | None, observers: list[Observer]
) -> None:
    """Step 7 for a streamed response: its usage (from the tap, if it survived) and
    outcome; then the other observers are closed."""
    if tap is not None and tap in observers:
        observers.remove(tap)
        try:
            tap.close()
        except Exception as exc:  # fail-open: the usage stays unknown (NULL)
            _drop(rt, [], tap, exc)
            tap = None
        else:
            record.usage = clean_usage(tap.usage)
    else:
        tap = None
    if record.client_gone:
        record.success = None
    elif record.error_code or not 200 <= record.status_code < 300:
        record.success = False
    elif tap is None:
        record.success = True
    elif tap.usage.error:
        record.success = False
    else:
        record.success = True if tap.usage.terminal else None
    _close_observers(rt, observers)


def _close_observers(rt: Runtime, observers: list[Observer]) -> None:
    for observer in list(observers):
        try:
            observer.close()
        except Exception as exc:
            _drop(rt, observers, observer, exc)


def _note_upstream_id(record: RequestRecord, upstream_id: bytes | None) -> None:
    if upstream_id is not None:
        record.upstream_request_id = clean_text(upstream_id.decode("latin-1"), ID_MAX)


def add_gateway_headers(headers: list[tuple[bytes, bytes]], record: RequestRecord) -> None:
    """The gateway's own response headers: request and trace ids."""
    headers.append((b"x-request-id", record.request_id.encode()))
    headers.append((b"x-recovea-trace-id", record.trace_id.encode("latin-1")))


def add_receipt_header(
    rt: Runtime, headers: list[tuple[bytes, bytes]], record: RequestRecord, body: bytes
) -> None:
    """A whole (non-streamed) body's receipt, as a header, for a workspace's request."""
    if record.workspace_id is not None:
        token = rt.receipts.sign(record, hashlib.sha256(body).hexdigest())
        headers.append((b"recovea-receipt", token))


async def send_error(
    rt: Runtime, send: Send, record: RequestRecord, shape: str, exc: GatewayError
) -> None:
    """The gateway's own error, in `shape`, with its receipt for a workspace's request."""
    body = error_body(shape, exc.status, exc.code, exc.message)
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
    ]
    if exc.status in (401, 403, 413):
        headers.append((b"x-should-retry", b"false"))
    headers.extend(exc.headers)
    add_gateway_headers(headers, record)
    add_receipt_header(rt, headers, record, body)
    record.responded = True
    await send({"type": "http.response.start", "status": exc.status, "headers": headers})
    await send({"type": "http.response.body", "body": body, "more_body": False})
