"""The request pipeline: one coroutine per provider request, read top to bottom.

1. surface (resolved by the dispatcher, on the checked raw path)
2. auth (fail-closed) → principal, from the headers alone; then the body (bounded),
   parsed once
3. spend cap (fail-closed-hybrid)                          [caps issue]
4. levers, each through the one fault-catching wrapper     [levers issue]
5. upstream call on the shared session
6. response pipe: tap the bytes on their way to the client, unchanged
7. end: finalize the record, sign the receipt, send it as the response's last bytes
8. after the response: report it (log, metrics, meter queue; later: cap settle)
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from typing import Any

import aiohttp
import orjson
from yarl import URL

from recovea_proxy.asgi import Receive, Scope, Send
from recovea_proxy.clean import ID_MAX, clean_model, clean_text, clean_usage
from recovea_proxy.disconnect import DisconnectWatcher
from recovea_proxy.errors import GatewayError, error_body, stream_error_event
from recovea_proxy.headers import response_headers, split_request_headers
from recovea_proxy.ids import new_id
from recovea_proxy.levers import run_guarded
from recovea_proxy.providers.base import StreamTap
from recovea_proxy.record import RequestRecord
from recovea_proxy.request_body import ClientGone, parse_json_object, read_body
from recovea_proxy.runtime import Runtime
from recovea_proxy.surfaces import Surface, query_is_clean
from recovea_proxy.upstream import UpstreamUnreachable, classify

# Non-streamed JSON up to this size is buffered whole (usage is read from it and,
# later, the receipt header needs it); anything else streams through.
_BUFFER_JSON_MAX = 16 * 1024 * 1024
_JSON_TYPE = b"application/json"
_SSE_TYPE = b"text/event-stream"


class LeverContext:
    """The mutable request a lever may inspect or rewrite."""

    __slots__ = ("body", "parsed", "record")

    def __init__(self, record: RequestRecord, parsed: dict[str, Any] | None, body: bytes) -> None:
        self.record = record
        self.parsed = parsed
        self.body = body


async def handle(rt: Runtime, surface: Surface, scope: Scope, receive: Receive, send: Send) -> None:
    """Serve one provider request; always report it, whatever happens."""
    record = RequestRecord(
        request_id=new_id(),
        trace_id="",
        started_ns=time.perf_counter_ns(),
        ts_epoch_ms=time.time_ns() // 1_000_000,
    )
    record.method = scope["method"]
    record.provider = surface.provider.name
    record.route = surface.route
    record.kind = surface.kind
    rt.in_flight += 1
    try:
        if surface.invalid or (scope["query_string"] and not query_is_clean(scope["query_string"])):
            raise GatewayError(
                400,
                "invalid_path",
                "The path holds dot segments, empty segments, encoded / ? # . % or "
                "characters that need no encoding, or bytes outside printable ASCII.",
            )
        if rt.in_flight > rt.settings.max_in_flight:
            raise _overloaded()
        await _serve(rt, surface, scope, receive, send, record)
    except GatewayError as exc:
        record.status_code = exc.status
        record.error_code = exc.code
        record.success = False
        shape = _refused_path_shape(scope) if surface.invalid else surface.error_shape
        await _send_error(rt, send, record, shape, exc)
    except ClientGone:
        record.client_gone = True
        record.success = None
    except asyncio.CancelledError:
        # The server is shutting down past its grace: the outcome is unknown.
        record.success = None
        record.error_code = "cancelled"
        raise
    except Exception:
        # A bug, not a provider fault: answer in the caller's shape if nothing was sent yet.
        record.success = False
        record.error_code = "internal_error"
        rt.log.exception("request_failed", request_id=record.request_id)
        if not record.responded:
            record.status_code = 500
            error = GatewayError(500, "internal_error", "The gateway failed to handle the request.")
            await _send_error(rt, send, record, surface.error_shape, error)
    finally:
        record.end(time.perf_counter_ns())
        rt.in_flight -= 1
        rt.finish(record)


async def _serve(
    rt: Runtime, surface: Surface, scope: Scope, receive: Receive, send: Send, record: RequestRecord
) -> None:
    headers = split_request_headers(scope["headers"])
    record.trace_id = headers.trace_id or new_id()
    record.feature = headers.feature
    record.end_user_id = headers.customer

    # Auth reads the headers only: a caller without a valid key costs no body read.
    principal = rt.auth.known_principal(headers, surface.provider) or await rt.auth.load_principal(
        headers, surface.provider
    )
    record.workspace_id = principal.workspace_id
    record.project_id = principal.project_id
    record.team_id = principal.team_id
    record.rcv_key_id = principal.key_id
    record.env = principal.env

    body = await read_body(receive, headers, rt.settings.max_body_bytes)
    record.request_bytes = len(body)
    record.request_sha256 = hashlib.sha256(body).hexdigest()
    parsed = parse_json_object(body)
    if parsed is not None:
        record.model = clean_model(parsed.get("model"))
        record.stream = parsed.get("stream") is True

    if rt.levers:
        context = LeverContext(record, parsed, body)
        for lever in rt.levers:
            await run_guarded(lever, context, _fault_counter(rt))
        body, parsed = context.body, context.parsed

    provider = surface.provider
    hide_usage = False
    if parsed is not None:
        body, hide_usage = provider.prepare_request(surface.kind, parsed, body)

    forward = headers.forward
    forward.extend(principal.upstream_credentials)
    # Built only from the checked raw path and query, sent as they are (no requoting).
    url = rt.upstream_base[provider.name] + surface.upstream_path
    query = scope["query_string"]
    if query:
        url += "?" + query.decode("ascii")
    upstream_url = URL(url, encoded=True)

    waited = time.perf_counter_ns()
    try:
        upstream = await rt.session.request(
            scope["method"],
            upstream_url,
            headers=forward,
            data=body or None,
            allow_redirects=False,
        )
    except (TimeoutError, aiohttp.ClientError, OSError) as exc:
        kind = classify(exc)
        rt.metrics.upstream_errors.labels(provider.name, kind).inc()
        # Looked up here, on the failure path only: a success pays nothing for it.
        rt.metrics.fail_open.labels("upstream", kind).inc()
        raise GatewayError(
            502, "upstream_unreachable", f"The provider could not be reached ({kind})."
        ) from UpstreamUnreachable(kind)
    finally:
        record.upstream_wait_ns += time.perf_counter_ns() - waited

    try:
        await _pipe(rt, surface, upstream, send, receive, record, hide_usage)
    finally:
        if record.client_gone or record.error_code:
            upstream.close()  # a broken or abandoned response: drop the connection
        else:
            upstream.release()


async def _pipe(
    rt: Runtime,
    surface: Surface,
    upstream: aiohttp.ClientResponse,
    send: Send,
    receive: Receive,
    record: RequestRecord,
    hide_usage: bool,
) -> None:
    """Step 6: the response, from the provider to the client."""
    record.status_code = upstream.status
    content_type = upstream.headers.get("content-type", "").encode("latin-1").lower()
    length = upstream.content_length
    if (
        content_type.startswith(_JSON_TYPE)
        and (length is None or length <= _BUFFER_JSON_MAX)
        and upstream.headers.get("content-encoding") in (None, "identity")
    ):
        await _send_buffered(rt, surface, upstream, send, record)
        return
    is_sse = content_type.startswith(_SSE_TYPE)
    tap = surface.provider.stream_tap(surface.kind) if is_sse else None
    stream_filter = surface.provider.stream_filter() if is_sse and hide_usage else None
    out_headers, upstream_id = response_headers(
        upstream.raw_headers,
        surface.provider.request_id_header,
        keep_length=stream_filter is None,
    )
    _note_upstream_id(record, upstream_id)
    _add_gateway_headers(out_headers, record)
    protocol = upstream.connection.protocol if upstream.connection else None
    if protocol is not None:
        # From here on the read timeout is the idle timeout between body chunks.
        protocol.read_timeout = rt.settings.idle_read_timeout_s
        protocol.start_timeout()
    record.responded = True
    await send({"type": "http.response.start", "status": upstream.status, "headers": out_headers})
    hasher = record.response_hash = hashlib.sha256()
    watcher = DisconnectWatcher(receive, record)
    try:
        last = await _stream(rt, surface, upstream, send, record, tap, stream_filter, hasher)
    except asyncio.CancelledError:
        if not record.client_gone:
            raise
        current = asyncio.current_task()
        if current is not None:
            current.uncancel()
        _settle_stream(record, tap)
        return
    finally:
        watcher.stop()
    _settle_stream(record, tap)
    hasher.update(last)
    if is_sse:
        last += rt.receipts.sse_line(rt.receipts.sign(record, hasher.hexdigest()))
    await send({"type": "http.response.body", "body": last, "more_body": False})


async def _stream(
    rt: Runtime,
    surface: Surface,
    upstream: aiohttp.ClientResponse,
    send: Send,
    record: RequestRecord,
    tap: StreamTap | None,
    stream_filter: Any,
    hasher: Any,
) -> bytes:
    """Pipe the body through; return the last bytes (a filter's tail, or an error event
    when the provider's stream broke), which the caller sends with the receipt."""
    content = upstream.content
    perf = time.perf_counter_ns
    try:
        while True:
            waited = perf()
            chunk = await content.readany()
            record.upstream_wait_ns += perf() - waited
            if not chunk:
                break
            if tap is not None:
                tap.feed(chunk)
            if stream_filter is not None:
                chunk = stream_filter.feed(chunk)
                if not chunk:
                    continue
            hasher.update(chunk)
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
        return stream_filter.flush() if stream_filter is not None else b""
    except (TimeoutError, aiohttp.ClientError, OSError) as exc:
        kind = classify(exc)
        if kind == "timeout":
            kind = "idle_timeout"
        rt.metrics.upstream_errors.labels(surface.provider.name, kind).inc()
        record.error_code = f"upstream_{kind}"
        rt.log.warning("upstream_stream_broken", request_id=record.request_id, kind=kind)
        return stream_error_event(
            surface.error_shape, record.error_code, f"The provider stream broke ({kind})."
        )


async def _send_buffered(
    rt: Runtime,
    surface: Surface,
    upstream: aiohttp.ClientResponse,
    send: Send,
    record: RequestRecord,
) -> None:
    waited = time.perf_counter_ns()
    parts: list[bytes] = []
    size = 0
    try:
        while chunk := await upstream.content.readany():
            parts.append(chunk)
            size += len(chunk)
            if size > _BUFFER_JSON_MAX:
                record.upstream_wait_ns += time.perf_counter_ns() - waited
                await _pass_oversized(rt, surface, upstream, send, record, parts)
                return
        body = b"".join(parts)
    except (TimeoutError, aiohttp.ClientError, OSError) as exc:
        kind = classify(exc)
        rt.metrics.upstream_errors.labels(surface.provider.name, kind).inc()
        rt.metrics.fail_open.labels("upstream", kind).inc()
        record.error_code = "upstream_unreachable"
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
    record.success = 200 <= upstream.status < 300 and not record.usage.error
    out_headers, upstream_id = response_headers(
        upstream.raw_headers, surface.provider.request_id_header, keep_length=False
    )
    _note_upstream_id(record, upstream_id)
    out_headers.append((b"content-length", str(len(body)).encode()))
    _add_gateway_headers(out_headers, record)
    _add_receipt_header(rt, out_headers, record, body)
    record.responded = True
    await send({"type": "http.response.start", "status": upstream.status, "headers": out_headers})
    await send({"type": "http.response.body", "body": body, "more_body": False})


async def _pass_oversized(
    rt: Runtime,
    surface: Surface,
    upstream: aiohttp.ClientResponse,
    send: Send,
    record: RequestRecord,
    head: list[bytes],
) -> None:
    """A JSON body of unannounced length outgrew the buffer: stream it on, unread."""
    out_headers, upstream_id = response_headers(
        upstream.raw_headers, surface.provider.request_id_header, keep_length=False
    )
    _note_upstream_id(record, upstream_id)
    _add_gateway_headers(out_headers, record)
    record.responded = True
    await send({"type": "http.response.start", "status": upstream.status, "headers": out_headers})
    first = b"".join(head)
    hasher = record.response_hash = hashlib.sha256(first)
    await send({"type": "http.response.body", "body": first, "more_body": True})
    last = await _stream(rt, surface, upstream, send, record, None, None, hasher)
    hasher.update(last)
    _settle_stream(record, None)
    await send({"type": "http.response.body", "body": last, "more_body": False})


def _settle_stream(record: RequestRecord, tap: StreamTap | None) -> None:
    """Step 7 for a streamed response: what its outcome was."""
    if tap is not None:
        tap.close()
        record.usage = clean_usage(tap.usage)
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


def _refused_path_shape(scope: Scope) -> str:
    """The error shape for a refused path, which may not name its surface: Anthropic's
    when the request carries `anthropic-version` (every Anthropic SDK sends it)."""
    for name, _ in scope["headers"]:
        if name == b"anthropic-version":
            return "anthropic"
    return "anthropic" if scope.get("raw_path", b"").startswith(b"/anthropic/") else "openai"


def _overloaded() -> GatewayError:
    return GatewayError(
        503,
        "gateway_overloaded",
        "The gateway is serving as many requests as it is configured for; retry shortly.",
        ((b"retry-after", b"1"),),
    )


def _note_upstream_id(record: RequestRecord, upstream_id: bytes | None) -> None:
    if upstream_id is not None:
        record.upstream_request_id = clean_text(upstream_id.decode("latin-1"), ID_MAX)


def _add_gateway_headers(headers: list[tuple[bytes, bytes]], record: RequestRecord) -> None:
    headers.append((b"x-request-id", record.request_id.encode()))
    headers.append((b"x-recovea-trace-id", record.trace_id.encode("latin-1")))


def _add_receipt_header(
    rt: Runtime, headers: list[tuple[bytes, bytes]], record: RequestRecord, body: bytes
) -> None:
    """A whole (non-streamed) body's receipt, as a header, for a workspace's request."""
    if record.workspace_id is not None:
        token = rt.receipts.sign(record, hashlib.sha256(body).hexdigest())
        headers.append((b"recovea-receipt", token))


async def _send_error(
    rt: Runtime, send: Send, record: RequestRecord, shape: str, exc: GatewayError
) -> None:
    body = error_body(shape, exc.status, exc.code, exc.message)
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
    ]
    if exc.status in (401, 403, 413):
        headers.append((b"x-should-retry", b"false"))
    headers.extend(exc.headers)
    _add_gateway_headers(headers, record)
    _add_receipt_header(rt, headers, record, body)
    record.responded = True
    await send({"type": "http.response.start", "status": exc.status, "headers": headers})
    await send({"type": "http.response.body", "body": body, "more_body": False})


def _fault_counter(rt: Runtime) -> Any:
    def count(layer: str, reason: str) -> None:
        rt.metrics.fail_open.labels(layer, reason).inc()

    return count
