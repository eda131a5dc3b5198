"""Relaying one accepted WebSocket session: client → provider and provider → client,
each a task the session owns and awaits. Messages pass as they come, text and binary
alike; each side reads its next message only once the last one was written, so a
slow reader slows its sender instead of filling memory. Pings are answered by the
libraries on each side.

How a session ends (the `reason` label of `gateway_websocket_sessions_closed_total`):

| what happened                                | the other side gets     | reason          |
| the client closed                            | its code and reason     | client_closed   |
| the client vanished (no close frame: 1006)   | 1011                    | client_gone     |
| the provider closed                          | its code and reason     | upstream_closed |
| the provider vanished or broke the protocol  | 1011                    | upstream_gone   |
| a message over `RECOVEA_WS_MAX_FRAME_KB`     | 1009, both ways         | too_large       |
| the gateway shuts down                       | client 1012, provider 1001 | shutdown    |
| a fault in the gateway                       | 1011, both ways         | error           |

A code that may not be sent on is mapped: 1005 (none given) → 1000, 1006 and other
unsendable codes → 1011.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass
from typing import Any

import aiohttp
import structlog
from aiohttp import WSMsgType
from aiohttp.http_websocket import WebSocketError
from prometheus_client import Counter

from recovea_proxy.asgi import Receive, Send
from recovea_proxy.websocket_meter import WebSocketMeter

#: how long the other side gets to finish its close once one side ended
CLOSE_WAIT_S = 10.0
_NORMAL = frozenset({1000, 1001, 1005})
_REASON_MAX = 123  # bytes: a close frame's payload is at most 125


@dataclass(frozen=True, slots=True)
class Ending:
    """How a session ended, for its rows, its log line and its metrics."""

    reason: str
    success: bool | None
    error_code: str | None = None
    #: the client left (a response in progress is then cut by the client's side)
    client_left: bool = False


SHUTDOWN = Ending("shutdown", None, "shutdown")
FAULT = Ending("error", False, "internal_error")
_TOO_LARGE = Ending("too_large", False, "message_too_large")
_UPSTREAM_GONE = Ending("upstream_gone", False, "upstream_reset")


def client_ending(code: int) -> Ending:
    """The ending when the client's side closed with `code`."""
    if code == 1006:
        return Ending("client_gone", None, None, client_left=True)
    if code == 1009:
        return _TOO_LARGE
    if code == 1012:
        return SHUTDOWN
    return Ending("client_closed", True, None, client_left=True)


def upstream_ending(code: int) -> Ending:
    """The ending when the provider closed with `code`."""
    if code in _NORMAL:
        return Ending("upstream_closed", True)
    if code == 1009:
        return _TOO_LARGE
    return Ending("upstream_closed", False, "upstream_closed")


def sendable(code: int) -> int:
    """A close code received from one side, as it may be sent to the other."""
    if code == 1005:
        return 1000
    if code == 1012:
        return 1001  # the server shutting down: the provider sees the gateway go away
    if 1000 <= code <= 1003 or 1007 <= code <= 1014 or 3000 <= code <= 4999:
        return code
    return 1011


@dataclass(frozen=True, slots=True)
class Counters:
    """The session's metric children, looked up once."""

    up_frames: Counter
    up_bytes: Counter
    down_frames: Counter
    down_bytes: Counter


class Relay:
    """Both directions of one session, until either side ends it."""

    def __init__(
        self,
        upstream: aiohttp.ClientWebSocketResponse[Any],
        receive: Receive,
        send: Send,
        meter: WebSocketMeter,
        counters: Counters,
        log: structlog.typing.FilteringBoundLogger,
    ) -> None:
        self._upstream = upstream
        self._receive = receive
        self._send = send
        self._meter = meter
        self._counters = counters
        self._log = log
        #: set by whichever side ends first
        self.ending: Ending | None = None

    def _end(self, ending: Ending) -> None:
        if self.ending is None:
            self.ending = ending

    async def run(self) -> Ending:
        """Relay until both directions are done; how the session ended."""
        tasks = (
            asyncio.create_task(self._client_to_upstream(), name="ws-client-to-upstream"),
            asyncio.create_task(self._upstream_to_client(), name="ws-upstream-to-client"),
        )
        try:
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            # Each direction tells the other side as it ends; the other one then ends
            # too, once that side's close handshake is through.
            await asyncio.wait(tasks, timeout=CLOSE_WAIT_S)
        except asyncio.CancelledError:
            self._end(SHUTDOWN)
            raise
        finally:
            for task in tasks:
                task.cancel()
            results = await asyncio.gather(*tasks, return_exceptions=True)
            faults = [r for r in results if isinstance(r, Exception)]
            if faults:
                self._log.error("websocket_relay_failed", exc_info=faults[0])
                self._end(FAULT)
                await self._close_client(1011)
            if not self._upstream.closed:
                await self._upstream.close(code=1001 if self.ending is SHUTDOWN else 1011)
        return self.ending or FAULT

    async def _client_to_upstream(self) -> None:
        receive, upstream, meter = self._receive, self._upstream, self._meter
        frames, size = self._counters.up_frames, self._counters.up_bytes
        while True:
            message = await receive()
            if message["type"] == "websocket.receive":
                began = time.perf_counter_ns()
                text = message.get("text")
                if text is not None:
                    data, opcode = text.encode(), WSMsgType.TEXT
                else:
                    data, opcode = message.get("bytes") or b"", WSMsgType.BINARY
                meter.client_message(data)
                frames.inc()
                size.inc(len(data))
                meter.overhead_ns += time.perf_counter_ns() - began
                try:
                    await upstream.send_frame(data, opcode)
                except (aiohttp.ClientError, ConnectionError):
                    return  # the provider's side is gone; its direction reports it
            elif message["type"] == "websocket.disconnect":
                code = message.get("code") or 1005
                self._end(client_ending(code))
                reason = (message.get("reason") or "").encode()[:_REASON_MAX]
                await upstream.close(code=sendable(code), message=reason)
                return

    async def _upstream_to_client(self) -> None:
        upstream, send, meter = self._upstream, self._send, self._meter
        frames, size = self._counters.down_frames, self._counters.down_bytes
        while True:
            msg = await upstream.receive()
            kind = msg.type
            if kind is WSMsgType.TEXT or kind is WSMsgType.BINARY:
                began = time.perf_counter_ns()
                data: bytes = msg.data
                text = kind is WSMsgType.TEXT
                meter.server_message(data, text=text)
                frames.inc()
                size.inc(len(data))
                out = (
                    {"type": "websocket.send", "text": data.decode()}
                    if text
                    else {"type": "websocket.send", "bytes": data}
                )
                meter.overhead_ns += time.perf_counter_ns() - began
                try:
                    await send(out)
                except OSError:
                    return  # the client is gone; its direction reports it
            elif kind is WSMsgType.CLOSE:
                code = int(msg.data)
                self._end(upstream_ending(code))
                await self._close_client(sendable(code), str(msg.extra or ""))
                return
            elif kind is WSMsgType.ERROR:
                error = msg.data
                too_large = isinstance(error, WebSocketError) and error.code == 1009
                self._end(_TOO_LARGE if too_large else _UPSTREAM_GONE)
                await self._close_client(1009 if too_large else 1011)
                return
            else:
                # CLOSING / CLOSED: closed on the client's behalf, or the connection dropped
                self._end(_UPSTREAM_GONE)
                await self._close_client(1011)
                return

    async def _close_client(self, code: int, reason: str = "") -> None:
        reason = reason.encode()[:_REASON_MAX].decode("utf-8", "ignore")
        # the client may be gone already, or closed: nothing more to tell it then
        with contextlib.suppress(OSError, RuntimeError):
            await self._send({"type": "websocket.close", "code": code, "reason": reason})
