"""Step 6 and 7 of the pipeline: a response, from its source to the client, and its
receipt as the last bytes.

The pipe reads any `sources.ResponseSource` (the provider, a cache replay, a flight
in progress) the same way:

- a JSON body up to `_BUFFER_JSON_MAX` is read whole (usage is read from it, the
  receipt goes in a header);
- anything else streams through, chunk by chunk, unchanged and unbuffered, past the
  observers; an SSE stream ends with the receipt as a comment line. A JSON body too
  large to buffer has its usage read from its last bytes (`JsonTailTap`); its
  headers left before the receipt existed, so its receipt is only in the ledger
  (`/v1/recovea/receipts/{request_id}`), as for any streamed body that is not SSE.

Observers (`Observer`: `feed` each chunk, `close` at the end) read the bytes as they
pass: the usage tap, and whatever a lever attached (the cache recorder, say). They
fail open: an observer that raises is dropped and counted
(`gateway_fail_open_total{layer="observer"}`); the client's bytes keep flowing. The
one exception is `StopStream` (a spend cap's `cut`): the stream ends there with the
provider-shaped error event, as a broken upstream stream does.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from typing import Any

import orjson

from recovea_proxy.asgi import Send
from recovea_proxy.clean import ID_MAX, clean_text, clean_usage
from recovea_proxy.disconnect import DisconnectWatcher
from recovea_proxy.errors import GatewayError, error_body, stream_error_event
from recovea_proxy.exchange import Exchange
from recovea_proxy.headers import response_headers
from recovea_proxy.observers import LeverObserver, Observer, Recorder, StopStream
from recovea_proxy.providers.base import StreamFilter, StreamTap
from recovea_proxy.providers.usage import copy_usage
from recovea_proxy.record import RequestRecord
from recovea_proxy.runtime import Runtime
from recovea_proxy.sources import ResponseSource

# Non-streamed JSON up to this size is buffered whole (usage is read from it and the
# receipt header needs it); anything else streams through.
_BUFFER_JSON_MAX = 16 * 1024 * 1024
_JSON_TYPE = b"application/json"
_SSE_TYPE = b"text/event-stream"
_CACHE_HEADER = {"hit": b"hit", "miss": b"miss", "skip": b"skip"}


async def deliver(
    x: Exchange,
    source: ResponseSource,
    *,
    hide_usage: bool = False,
    observers: list[LeverObserver] | None = None,
    recorder: Recorder | None = None,
) -> None:
    """Send the response of `source` to the client; settle the record's outcome and
    usage. `hide_usage`: undo the usage the gateway asked for on the client's behalf;
    `observers`: what the levers attached; `recorder`: the one of them that keeps every
    chunk (a leader's flight), whose buffer a stream's chunks are appended to inline."""
    x.record.status_code = source.status
    response = _Response(x, source)
    if observers:
        for observer in observers:
            try:
                observer.begin(source)
            except Exception as exc:  # fail-open, as for every observer
                response.drop(observer, exc)
            else:
                if observer is recorder:
                    response.recorder = recorder
                else:
                    response.observers.append(observer)
    length = source.content_length
    if (
        source.content_type.startswith(_JSON_TYPE)
        and (length is None or length <= _BUFFER_JSON_MAX)
        and source.identity_encoded
    ):
        await response.send_buffered()
    else:
        await response.send_streamed(hide_usage)


class _Response:
    """One response on its way: where it comes from, who reads it as it passes."""

    __slots__ = ("observers", "recorder", "source", "tap", "x")

    def __init__(self, x: Exchange, source: ResponseSource) -> None:
        self.x = x
        self.source = source
        self.observers: list[Observer] = []
        #: the observer that keeps every chunk, fed inline (`Recorder`), closed last
        self.recorder: Recorder | None = None
        self.tap: StreamTap | None = None

    async def send_streamed(self, hide_usage: bool) -> None:
        """Anything but a bufferable JSON body: chunk by chunk, the receipt last."""
        x, source, record = self.x, self.source, self.x.record
        provider = x.surface.provider
        is_sse = source.content_type.startswith(_SSE_TYPE)
        if is_sse:
            self._attach(provider.stream_tap(x.surface.kind))
        elif source.content_type.startswith(_JSON_TYPE) and source.identity_encoded:
            self._attach(provider.json_tail_tap(x.surface.kind))
        stream_filter = provider.stream_filter() if is_sse and hide_usage else None
        out_headers, upstream_id = response_headers(
            source.raw_headers, provider.request_id_header, keep_length=stream_filter is None
        )
        await self._start(out_headers, upstream_id)
        hasher = record.response_hash = hashlib.sha256()
        watcher = DisconnectWatcher(x.receive, record)
        try:
            last = await self._stream(stream_filter, hasher)
        except asyncio.CancelledError:
            if not record.client_gone:
                raise
            current = asyncio.current_task()
            if current is not None:
                current.uncancel()
            self._settle()
            return
        finally:
            watcher.stop()
        self._settle()
        hasher.update(last)
        if is_sse:
            last += x.rt.receipts.sse_line(x.rt.receipts.sign(record, hasher.hexdigest()))
        await x.send({"type": "http.response.body", "body": last, "more_body": False})

    def _attach(self, tap: StreamTap | None) -> None:
        """The usage tap reads first (and is settled before the other observers)."""
        if tap is not None:
            self.tap = tap
            self.observers.insert(0, tap)

    async def _start(
        self, out_headers: list[tuple[bytes, bytes]], upstream_id: bytes | None
    ) -> None:
        record = self.x.record
        _note_upstream_id(record, upstream_id)
        add_gateway_headers(out_headers, record)
        self.source.start_body()
        record.responded = True
        await self.x.send(
            {"type": "http.response.start", "status": self.source.status, "headers": out_headers}
        )

    async def _stream(self, stream_filter: StreamFilter | None, hasher: Any) -> bytes:
        """Pipe the body through; return the last bytes (a filter's tail, or an error
        event when the source broke), which the caller sends with the receipt."""
        x, source, record, observers = self.x, self.source, self.x.record, self.observers
        read, send = source.read, x.send
        perf = time.perf_counter_ns
        sent = 0
        # The recorder's buffer takes each chunk by a list append, within `room`; past
        # it (a bound of the flight: a chunk may change what it keeps) by `feed_past`.
        recorder = self.recorder
        keep, room = recorder.intake() if recorder is not None else (_kept_nowhere, 0)
        taken = 0
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
                    except StopStream:
                        raise
                    except Exception as fault:  # fail-open: the client's bytes keep flowing
                        faulty = [*(faulty or ()), (observer, fault)]
                if faulty:
                    for broken, error in faulty:
                        self.drop(broken, error)
                if recorder is not None:
                    size = len(chunk)
                    if taken + size <= room:
                        keep(chunk)
                        taken += size
                        if recorder.waiter is not None:
                            recorder.notify()
                    else:
                        try:
                            recorder.feed_past(taken, chunk)
                            keep, room = recorder.intake()
                        except Exception as fault:  # fail-open, as for every observer
                            self.drop(recorder, fault)
                            recorder = None
                        taken = 0
                if stream_filter is not None:
                    chunk = stream_filter.feed(chunk)
                    if not chunk:
                        continue
                hasher.update(chunk)
                sent += len(chunk)
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
            return stream_filter.flush() if stream_filter is not None else b""
        except StopStream as stop:
            record.error_code = stop.code
            x.rt.log.warning("stream_stopped", request_id=record.request_id, code=stop.code)
            return stream_error_event(x.surface.error_shape, stop.code, stop.message)
        except source.errors as exc:
            kind = source.kind_of(exc)
            surface = x.surface
            x.rt.metrics.upstream_errors.labels(surface.provider.name, kind).inc()
            record.error_code = f"upstream_{kind}"
            x.rt.log.warning("upstream_stream_broken", request_id=record.request_id, kind=kind)
            return stream_error_event(
                surface.error_shape, record.error_code, f"The provider stream broke ({kind})."
            )
        finally:
            record.response_bytes += sent
            if recorder is not None and recorder is self.recorder:
                recorder.settle(taken)

    async def send_buffered(self) -> None:
        """A JSON body read whole: usage from it, the receipt in a header."""
        x, source, record = self.x, self.source, self.x.record
        provider = x.surface.provider
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
                    await self._pass_oversized(parts)
                    return
            body = b"".join(parts)
        except source.errors as exc:
            kind = source.kind_of(exc)
            x.rt.metrics.upstream_errors.labels(provider.name, kind).inc()
            x.rt.metrics.fail_open.labels("upstream", kind).inc()
            record.error_code = "upstream_unreachable"
            self._close_observers()
            raise GatewayError(
                502, "upstream_unreachable", f"The provider response broke off ({kind})."
            ) from exc
        finally:
            record.upstream_wait_ns += time.perf_counter_ns() - waited
        plan = source.plan
        if plan is not None and plan.usage is not None:  # a replay: read at its first one
            record.usage = copy_usage(plan.usage)
        else:
            try:
                parsed = orjson.loads(body) if body else None
            except orjson.JSONDecodeError:
                parsed = None
            record.usage = clean_usage(provider.usage_from_json(x.surface.kind, parsed))
            if plan is not None:
                plan.usage = copy_usage(record.usage)
        record.success = 200 <= source.status < 300 and not record.usage.error
        if plan is None:
            out_headers, upstream_id = response_headers(
                source.raw_headers, provider.request_id_header, keep_length=False
            )
        else:
            out_headers, upstream_id = plan.returned_headers(
                provider.request_id_header, source.raw_headers
            )
        _note_upstream_id(record, upstream_id)
        out_headers.append((b"content-length", str(len(body)).encode()))
        add_gateway_headers(out_headers, record)
        add_receipt_header(x.rt, out_headers, record, body)
        if self.observers:
            self._feed_and_close(body)
        recorder = self.recorder
        if recorder is not None:  # last: it keeps the answer once all is settled
            try:
                recorder.whole(body)
            except Exception as exc:  # fail-open, as for every observer
                self.drop(recorder, exc)
        record.responded = True
        await x.send(
            {"type": "http.response.start", "status": source.status, "headers": out_headers}
        )
        await x.send({"type": "http.response.body", "body": body, "more_body": False})

    async def _pass_oversized(self, head: list[bytes]) -> None:
        """A JSON body of unannounced length outgrew the buffer: stream it on, its usage
        read from its tail."""
        x, record = self.x, self.x.record
        self._attach(x.surface.provider.json_tail_tap(x.surface.kind))
        out_headers, upstream_id = response_headers(
            self.source.raw_headers, x.surface.provider.request_id_header, keep_length=False
        )
        await self._start(out_headers, upstream_id)
        first = b"".join(head)
        hasher = record.response_hash = hashlib.sha256(first)
        self._feed_all(first)
        await x.send({"type": "http.response.body", "body": first, "more_body": True})
        last = await self._stream(None, hasher)
        hasher.update(last)
        self._settle()
        await x.send({"type": "http.response.body", "body": last, "more_body": False})

    def _settle(self) -> None:
        """Step 7 for a streamed response: its usage (from the tap, if it survived) and
        outcome; then the other observers are closed."""
        record, tap = self.x.record, self.tap
        if tap is not None and tap in self.observers:
            self.observers.remove(tap)
            try:
                tap.close()
            except Exception as exc:  # fail-open: the usage stays unknown (NULL)
                self.drop(tap, exc)
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
        self._close_observers()

    def _all(self) -> list[Observer]:
        """Every observer, the recorder last (it keeps the answer once all is settled)."""
        if self.recorder is None:
            return list(self.observers)
        return [*self.observers, self.recorder]

    def _feed_all(self, chunk: bytes) -> None:
        for observer in self._all():
            try:
                observer.feed(chunk)
            except Exception as exc:
                self.drop(observer, exc)

    def _feed_and_close(self, body: bytes) -> None:
        """A whole body's observers but the recorder: each fed the body, then closed
        (one pass)."""
        for observer in list(self.observers):
            try:
                observer.feed(body)
                observer.close()
            except Exception as exc:
                self.drop(observer, exc)

    def _close_observers(self) -> None:
        for observer in self._all():
            try:
                observer.close()
            except Exception as exc:
                self.drop(observer, exc)

    def drop(self, observer: Observer, exc: Exception) -> None:
        """A faulty observer leaves the response; counted and logged (by type only)."""
        if observer in self.observers:
            self.observers.remove(observer)
        elif observer is self.recorder:
            self.recorder = None
        reason = type(exc).__name__
        self.x.rt.metrics.fail_open.labels("observer", reason).inc()
        self.x.rt.log.warning("observer_fault", observer=type(observer).__name__, error=reason)


def _kept_nowhere(chunk: bytes) -> None:
    """The append of a response without a recorder (never called)."""


def _note_upstream_id(record: RequestRecord, upstream_id: bytes | None) -> None:
    if upstream_id is not None:
        record.upstream_request_id = clean_text(upstream_id.decode("latin-1"), ID_MAX)


def add_gateway_headers(headers: list[tuple[bytes, bytes]], record: RequestRecord) -> None:
    """The gateway's own response headers: request and trace ids, and what the cache
    did (`hit`, `miss`, or `skip` when it was off or the request not shareable; a
    cache fault reads as a miss)."""
    headers.append((b"x-request-id", record.request_id.encode()))
    headers.append((b"x-recovea-trace-id", record.trace_id.encode("latin-1")))
    cache = record.levers_fired.get("cache")
    headers.append((b"x-recovea-cache", _CACHE_HEADER.get(cache, b"miss") if cache else b"skip"))


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
