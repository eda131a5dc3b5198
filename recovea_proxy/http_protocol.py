"""The gateway's HTTP/1.1 connection: uvicorn's httptools protocol with bounds on what a
connection may cost before it has delivered a request.

| bound | setting | when it is passed |
| --- | --- | --- |
| headers per request | `max_header_count` | 431 `headers_too_large`, then the connection closes |
| request target + every header name and value, in bytes | `max_header_bytes` | the same 431 |
| time to deliver a request's complete headers | `header_timeout_s` | the connection is closed |
| silence inside a request's body | `body_idle_timeout_s` | 408 `request_timeout`, then close |
| open connections per process | `max_connections` | a new connection is closed at once, unread |

llhttp (under httptools) and uvicorn keep every header they are sent; the counts are
kept here as llhttp hands the pieces over (`on_url`, `on_header`), and a callback over
a bound raises, which stops the parser: the refused request never reaches
`on_headers_complete`, so no ASGI task is started for it and its headers are never
held past the bound. httptools buffers a header until it is complete, so one huge
header is caught by counting the bytes of the reads the parser holds back (framing
included, with an allowance of `_FRAMING_PER_HEADER` bytes a header); a refusal costs
at most the bound plus the reads it arrived in. Trailers after a chunked body count
against the same bounds (uvicorn adds them to the request's headers); the app already
has that request, so passing a bound there closes the connection instead of
answering 431.

The 431 is JSON in the shape of the surface the path names (Anthropic for
`/anthropic/…` and `/v1/messages…`, else OpenAI), with `connection: close`. The
gateway then reads and discards what the client still sends, for at most
`header_timeout_s`, so that a client still writing its headers reads the answer
instead of a reset.

The header deadline costs a request that arrives in one read nothing: a timer is armed
when the connection opens and whenever a read ends with a request's headers unfinished
(or with no request in progress), and cancelled when a request's headers are complete.
It is not restarted by each byte, so a client trickling its headers is closed on time.
Idleness between requests on a kept-alive connection is uvicorn's keep-alive timeout.

The body deadline is armed the same way, when a read ends with a request's body
unfinished (a body that arrives with its headers pays nothing), and bounds the
silence between body bytes rather than the whole body: each body read notes the
time, and the timer, when it fires, waits on for the rest of the allowance if
bytes came meanwhile (or the app has paused reading, or the client waits for its
`100 Continue`). A body that stalls gets 408 `request_timeout` if no answer has
begun, and the connection closes; the app's next `receive` sees the client gone.

When the connection is lost, the request in progress hears of it at once
(`GatewayCycle.lost`): a stream is cut without a task of its own watching
(`disconnect.py`).

uvicorn instantiates the protocol itself, once per connection; `http_protocol(settings)`
gives it a picklable factory (a partial of the class defined here), so that
`--workers N` sends the same bounds to every worker process.
"""

from __future__ import annotations

import asyncio
import functools
from dataclasses import dataclass
from typing import Any, cast

from uvicorn.config import Config
from uvicorn.protocols.http.httptools_impl import (
    STATUS_LINE,
    HttpToolsProtocol,
    RequestResponseCycle,
)
from uvicorn.server import ServerState

from recovea_proxy.config import Settings
from recovea_proxy.errors import error_body
from recovea_proxy.http_cycle import GatewayCycle, start_cycle
from recovea_proxy.observability.connection_stats import REFUSALS

#: framing a header may add on the wire beyond its name and value (`: ` and CRLF),
#: with room for a little optional whitespace
_FRAMING_PER_HEADER = 8
#: the request line beyond its target (method, `HTTP/1.1`) and the closing CRLF
_FRAMING_PER_REQUEST = 1024

TOO_MANY = "Too many request headers."
#: the length uvicorn is told for an HTTP/1.0 response delimited by the close
_UNBOUNDED = 1 << 62
_MALFORMED = "The request is not valid HTTP/1.1 (request line, header or body framing)."
TOO_LARGE = "Request headers too large."


@dataclass(frozen=True, slots=True)
class ConnectionLimits:
    """What one connection may cost before its request is handed to the app."""

    max_header_count: int
    max_header_bytes: int
    header_timeout_s: float
    max_connections: int
    body_idle_timeout_s: float

    @classmethod
    def from_settings(cls, settings: Settings) -> ConnectionLimits:
        return cls(
            max_header_count=settings.max_header_count,
            max_header_bytes=settings.max_header_bytes,
            header_timeout_s=settings.header_timeout_s,
            max_connections=settings.max_connections,
            body_idle_timeout_s=settings.body_idle_timeout_s,
        )


class HeaderLimitExceeded(Exception):
    """Raised from a parser callback to stop llhttp at a bound."""


def http_protocol(settings: Settings) -> type[asyncio.Protocol]:
    """The `http=` argument of uvicorn: the bounded protocol, with the settings' limits."""
    factory = functools.partial(
        GatewayHttpProtocol, limits=ConnectionLimits.from_settings(settings)
    )
    # uvicorn annotates a protocol class but only calls it (Config.load keeps a
    # non-string `http` as it is); a partial of a module-level class pickles for
    # --workers, where a class made at run time would not.
    return cast("type[asyncio.Protocol]", factory)


def _shape_of(target: bytes) -> str:
    return "anthropic" if target.startswith((b"/anthropic/", b"/v1/messages")) else "openai"


@functools.cache
def _refusal(shape: str, message: str, status: int = 431, code: str = "headers_too_large") -> bytes:
    body = error_body(shape, status, code, message)
    return b"".join(
        [
            STATUS_LINE[status],
            b"content-type: application/json\r\n",
            b"content-length: " + str(len(body)).encode("ascii") + b"\r\n",
            b"connection: close\r\n",
            b"\r\n",
            body,
        ]
    )


def _close_delimited(cycle: RequestResponseCycle) -> None:
    """Answer an HTTP/1.0 request whose response has no length without chunked framing
    (HTTP/1.0 has none; uvicorn would add it): its body is delimited by the close, as
    HTTP/1.0 does (uvicorn closes after every HTTP/1.0 response)."""
    send = cycle.send
    unframed = False

    async def close_delimited(message: Any) -> None:
        nonlocal unframed
        if message["type"] == "http.response.start":
            names = {name.lower() for name, _ in message.get("headers", ())}
            if not names & {b"content-length", b"transfer-encoding"}:
                unframed = True
                cycle.chunked_encoding = False
                cycle.expected_content_length = _UNBOUNDED
        elif unframed and not message.get("more_body", False):
            # the last bytes: uvicorn checks they end the announced length
            cycle.expected_content_length = len(message.get("body", b""))
        await send(message)

    cycle.send = close_delimited  # type: ignore[method-assign]


class GatewayHttpProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol, bounded as the module docstring says."""

    # Slots for the bounds' state: uvicorn's own attributes then still fit the instance
    # dict's shared keys (over 30 keys it becomes a dict of its own: 1.3 KiB more per
    # connection, 13 MB with 10,000 connections open).
    __slots__ = (
        "_body_deadline",
        "_body_progress",
        "_handed_over",
        "_header_bytes",
        "_header_deadline",
        "_in_headers",
        "_limits",
        "_max_header_bytes",
        "_max_header_count",
        "_max_unparsed_bytes",
        "_progress",
        "_refused",
        "_unparsed_bytes",
    )

    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
        *,
        limits: ConnectionLimits,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        self._limits = limits
        self._max_header_count = limits.max_header_count
        self._max_header_bytes = limits.max_header_bytes
        self._max_unparsed_bytes = (
            limits.max_header_bytes
            + _FRAMING_PER_HEADER * limits.max_header_count
            + _FRAMING_PER_REQUEST
        )
        # per request: bytes llhttp handed over; bytes of reads it made no progress on
        self._header_bytes = 0
        self._unparsed_bytes = 0
        self._in_headers = False
        self._progress = False
        # per connection
        self._header_deadline: asyncio.TimerHandle | None = None
        self._body_deadline: asyncio.TimerHandle | None = None
        self._body_progress = 0.0
        self._refused: str | None = None
        self._handed_over = False

    # Connection
    def connection_made(  # type: ignore[override]
        self, transport: asyncio.Transport
    ) -> None:
        if len(self.connections) >= self._limits.max_connections:
            # uvicorn's connection_lost closes self.transport; nothing else is set up
            REFUSALS.count("too_many_connections")
            self.transport = transport
            transport.close()
            return
        super().connection_made(transport)
        self._arm_header_deadline()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_header_deadline()
        self._cancel_body_deadline()
        super().connection_lost(exc)
        cycle = self.cycle
        if isinstance(cycle, GatewayCycle):
            cycle.lost()  # a stream in progress is cut at once (`disconnect.py`)

    def data_received(self, data: bytes) -> None:
        if self._refused is not None:
            return  # after a 431: read and drop until the client or the deadline closes
        self._progress = False
        HttpToolsProtocol.data_received(self, data)
        if self._progress:
            self._unparsed_bytes = 0
        else:
            # A read in which no request began, no headers completed and no body
            # arrived is all bytes the parser holds back: a header or trailer field
            # it buffers until it ends (or junk). (A read in which a request began
            # may also hold the end of the one before, so it is not counted.)
            self._unparsed_bytes += len(data)
            if self._unparsed_bytes > self._max_unparsed_bytes:
                self._refused = TOO_LARGE
                self._refuse()
                return
        cycle = self.cycle
        if self._in_headers or cycle is None or cycle.response_complete:
            self._await_headers()
        elif cycle.more_body and self._body_deadline is None:
            self._await_body()

    def _await_headers(self) -> None:
        """A read ended with a request's headers unfinished, or with none in progress."""
        if self._refused is not None or self._handed_over or self.transport.is_closing():
            return
        if self._header_deadline is None:
            self._arm_header_deadline()

    def handle_websocket_upgrade(self) -> None:
        self._handed_over = True
        self._cancel_header_deadline()
        super().handle_websocket_upgrade()

    # Parser callbacks
    def on_message_begin(self) -> None:
        HttpToolsProtocol.on_message_begin(self)
        self._header_bytes = 0
        self._in_headers = True
        self._progress = True

    # Per request, uvicorn's methods are called on the class, not through super(),
    # which builds a proxy object each call.
    # on_url and on_header do uvicorn's work themselves rather than through super():
    # they run for every header of every request, and the extra call cost ~2,500
    # instructions each (bench.instructions: ~20k a request with 8 headers).
    def on_url(self, url: bytes) -> None:
        size = self._header_bytes + len(url)
        if size > self._max_header_bytes:
            raise self._over(TOO_LARGE)
        self._header_bytes = size
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        size = self._header_bytes + len(name) + len(value)
        if size > self._max_header_bytes:
            raise self._over(TOO_LARGE)
        if len(self.headers) >= self._max_header_count:
            raise self._over(TOO_MANY)
        self._header_bytes = size
        # as uvicorn's on_header: llhttp keeps trailing whitespace, RFC 9110 excludes it
        name = name.lower()
        value = value.rstrip(b" \t")
        if name == b"expect" and value.lower() == b"100-continue":
            self.expect_100_continue = True
        self.headers.append((name, value))

    def on_headers_complete(self) -> None:
        self._in_headers = False
        self._progress = True
        if self._header_deadline is not None:
            self._header_deadline.cancel()
            self._header_deadline = None
        start_cycle(self)
        if self.scope["http_version"] == "1.0" and self.cycle is not None:
            _close_delimited(self.cycle)

    def on_body(self, body: bytes) -> None:
        self._progress = True
        if self._body_deadline is not None:
            self._body_progress = self.loop.time()
        HttpToolsProtocol.on_body(self, body)

    def on_message_complete(self) -> None:
        self._cancel_body_deadline()
        HttpToolsProtocol.on_message_complete(self)

    # Refusals
    def _over(self, message: str) -> HeaderLimitExceeded:
        self._refused = message
        return HeaderLimitExceeded(message)

    def send_400_response(self, msg: str) -> None:
        """uvicorn answers a parser error with this: a 400 `invalid_request` in the shape
        of the surface the target names (JSON, as every other error of ours), then the
        connection closes; a bound passed is refused instead."""
        if self._refused is not None:
            self._refuse()
            return
        REFUSALS.count("invalid_request")
        cycle = self.cycle
        if cycle is not None and not cycle.response_complete:
            if not cycle.more_body:
                # The bytes behind a whole request still being answered are no request:
                # that request gets its answer, then the connection closes.
                cycle.keep_alive = False
                self._refused = _MALFORMED
                return
            if cycle.response_started:
                self.transport.close()  # a body that broke its framing mid-answer
                return
        # (a request whose own framing broke never completes: it gets the 400, and the
        # app's next `receive` sees the client gone)
        self.transport.write(_refusal(_shape_of(self.url), _MALFORMED, 400, "invalid_request"))
        self.transport.close()

    def _refuse(self) -> None:
        """Answer a request that passed a bound with 431 when an answer can follow."""
        assert self._refused is not None
        REFUSALS.count("headers_too_large")
        cycle = self.cycle
        if not self._in_headers:
            # Trailers of a request the app already has (or bytes that are no
            # request): no answer of ours can follow; the connection is closed.
            self.transport.close()
            return
        if cycle is not None and not cycle.response_complete:
            # A pipelined request was refused while the one before it is still being
            # answered: no 431 inside that response; the connection closes after it.
            cycle.keep_alive = False
            return
        self.transport.write(_refusal(_shape_of(self.url), self._refused))
        if not self.transport.can_write_eof():
            self.transport.close()
            return
        self.transport.write_eof()
        self._cancel_header_deadline()
        self._arm_header_deadline()

    # The body deadline
    def _await_body(self) -> None:
        """A read ended with a request's body unfinished."""
        if self._refused is not None or self._handed_over or self.transport.is_closing():
            return
        self._body_progress = self.loop.time()
        self._body_deadline = self.loop.call_later(
            self._limits.body_idle_timeout_s, self._body_deadline_passed
        )

    def _cancel_body_deadline(self) -> None:
        if self._body_deadline is not None:
            self._body_deadline.cancel()
            self._body_deadline = None

    def _body_deadline_passed(self) -> None:
        self._body_deadline = None
        cycle = self.cycle
        if (
            cycle is None
            or not cycle.more_body
            or cycle.response_complete
            or self.transport.is_closing()
        ):
            return
        allowance = self._limits.body_idle_timeout_s
        quiet = self.loop.time() - self._body_progress
        if quiet < allowance or self.flow.read_paused or cycle.waiting_for_100_continue:
            self._body_deadline = self.loop.call_later(
                max(allowance - quiet, 0.001), self._body_deadline_passed
            )
            return
        REFUSALS.count("body_timeout")
        if not cycle.response_started:
            message = f"The request body stalled for more than {allowance:g} s."
            self.transport.write(_refusal(_shape_of(self.url), message, 408, "request_timeout"))
        cycle.keep_alive = False
        self.transport.close()

    # The header deadline
    def _arm_header_deadline(self) -> None:
        self._header_deadline = self.loop.call_later(
            self._limits.header_timeout_s, self._header_deadline_passed
        )

    def _cancel_header_deadline(self) -> None:
        if self._header_deadline is not None:
            self._header_deadline.cancel()
            self._header_deadline = None

    def _header_deadline_passed(self) -> None:
        self._header_deadline = None
        if self._refused is None:
            REFUSALS.count("header_timeout")
        cycle = self.cycle
        if cycle is not None and not cycle.response_complete:
            # a response is still being written: the connection closes after it
            cycle.keep_alive = False
        elif not self.transport.is_closing():
            self.transport.close()
