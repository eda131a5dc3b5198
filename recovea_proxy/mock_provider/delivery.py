"""How a response leaves the mock: JSON bodies (gzip on request), paced SSE streams,
and the transport faults — cut connections, hangs and stalls.

A stream is written with one `write` per event, with the chunk delay between events,
over chunked transfer encoding. The mid-stream faults count events, not bytes:
`reset-mid-stream` sends 3 events and cuts the connection, `stall-mid-stream` sends 2
and goes silent, `error-event` sends 2 and then the provider's error event
(`error-event-first`: the error event first, before any content). The
journal follows each stream: events written and how it ended (see `journal`).
"""

from __future__ import annotations

import asyncio
import gzip
from collections.abc import Callable, Iterable

from aiohttp import web

from recovea_proxy.mock_provider import journal
from recovea_proxy.mock_provider.controls import Plan

LONG_WAIT_S = 600.0
JSON_TYPE = "application/json"
SSE_TYPE = "text/event-stream; charset=utf-8"
RESET_AFTER_EVENTS = 3
STALL_AFTER_EVENTS = 2
ERROR_AFTER_EVENTS = 2
_POLL_S = 0.25


def abort(request: web.Request) -> web.StreamResponse:
    """Cut the TCP connection without (the rest of) a response.

    The returned response is never sent: aiohttp finds the transport closed, treats it
    as a client that went away, and logs nothing above debug.
    """
    transport = request.transport
    if transport is not None:
        transport.abort()
    return web.Response(status=204)


async def idle(request: web.Request, seconds: float = LONG_WAIT_S) -> bool:
    """Wait `seconds` or until the client goes away; True if it went away."""
    loop = asyncio.get_running_loop()
    end = loop.time() + seconds
    while True:
        transport = request.transport
        if transport is None or transport.is_closing():
            return True
        left = end - loop.time()
        if left <= 0:
            return False
        await asyncio.sleep(min(left, _POLL_S))


def accepts_gzip(accept_encoding: str) -> bool:
    """Whether an Accept-Encoding value allows gzip (`gzip`, `x-gzip` or `*`, q > 0)."""
    for item in accept_encoding.split(","):
        coding, _, params = item.partition(";")
        if coding.strip().lower() not in ("gzip", "x-gzip", "*"):
            continue
        q = params.strip().lower()
        if q.startswith("q="):
            try:
                return float(q[2:]) > 0
            except ValueError:
                return False
        return True
    return False


def json_response(
    request: web.Request, plan: Plan, body: bytes, headers: dict[str, str], status: int = 200
) -> web.Response:
    """A JSON response, gzipped when `x-mock-fault: gzip` and the client accepts gzip,
    chunked (no content-length) when `x-mock-chunked: 1`."""
    if plan.fault == "gzip" and accepts_gzip(request.headers.get("accept-encoding", "")):
        headers = {**headers, "content-encoding": "gzip"}
        body = gzip.compress(body, compresslevel=5, mtime=0)
    response = web.Response(body=body, status=status, content_type=JSON_TYPE, headers=headers)
    if plan.chunked:
        response.enable_chunked_encoding()
    return response


async def stream_response(
    request: web.Request,
    plan: Plan,
    headers: dict[str, str],
    events: Iterable[bytes],
    error_event: Callable[[int], bytes],
    prelude: bytes = b"",
) -> web.StreamResponse:
    """Send `events` as an SSE stream (chunked: no content-length), paced and faulted
    as the plan says.

    `error_event(n)` is the provider's mid-stream error as the n-th event; `prelude`
    (OpenRouter's keep-alive comment) goes first and is not counted as an event.
    """
    response = web.StreamResponse(headers={"content-type": SSE_TYPE, **headers})
    state = journal.stream_state(request)
    await response.prepare(request)
    delay = plan.shape.chunk_delay_ms / 1000
    fault = plan.fault
    try:
        if prelude:
            await response.write(prelude)
        for index, event in enumerate(events):
            if index and delay:
                await asyncio.sleep(delay)
            if fault is not None:
                if fault == "reset-mid-stream" and index == RESET_AFTER_EVENTS:
                    state["end"] = "reset"
                    abort(request)
                    return response
                if fault == "stall-mid-stream" and index == STALL_AFTER_EVENTS:
                    if await idle(request):
                        state["end"] = "client_closed"
                        return response
                if (fault == "error-event" and index == ERROR_AFTER_EVENTS) or (
                    fault == "error-event-first" and index == 0
                ):
                    event = error_event(index)
                    await response.write(event)
                    state["events"] += 1
                    break
            await response.write(event)
            state["events"] += 1
        await response.write_eof()
        state["end"] = "completed"
    except ConnectionError:
        # The client went away; aiohttp notices it too and closes the connection.
        state["end"] = "client_closed"
    except asyncio.CancelledError:
        # The client went away between writes (handler cancellation).
        state["end"] = "client_closed"
        raise
    return response
