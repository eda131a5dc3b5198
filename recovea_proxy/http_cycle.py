"""One request's response writer on the gateway's HTTP/1.1 connection: uvicorn's
`RequestResponseCycle` with its `send` done in fewer steps, and `start_cycle`, which
makes one for each request the connection has read the headers of.

uvicorn's `send` walks a response's headers one by one in Python (two regular
expressions, a lowercase copy, three comparisons and a list extend a header: ~600
bytecodes a request for the ~15 headers a gateway answer has, more than any other
function a request runs), and its regular expressions scan a value at ~5 ns a byte
(~7 µs for the values of a gateway answer, most of it the receipt). Here the start
of a response:

- checks every name in one C pass over the names joined (`bytes.translate` deleting
  the bytes uvicorn refuses: a shorter result means one was there), and every value
  in one pass over the values joined by a tab (`header_check.holds_refused_byte`;
  a tab is the one control character a value may hold, so the join adds nothing the
  pass would find); a response found at fault is handed to uvicorn's `send`, which
  refuses it with the error it meets first;
- finds the three framing headers (`content-length`, `transfer-encoding`,
  `connection`) by set intersection and acts on them in their order;
- writes the header block with two C-level joins; a response of known length
  (`content-length`) holds it back and writes it with the first piece of the body,
  in one write(2): a JSON answer leaves as one segment instead of two (~3 µs of the
  gateway's CPU a request here, the kernel's send path taken once).

What it writes, and what it refuses (`RuntimeError`, as uvicorn raises it), are
uvicorn's, byte for byte (`tests/test_http_cycle.py` holds the two side by side).
The body is written as uvicorn writes it.
"""

from __future__ import annotations

import asyncio
import urllib.parse
from collections.abc import Callable
from typing import Any

import httptools
from uvicorn.protocols.http.flow_control import service_unavailable
from uvicorn.protocols.http.httptools_impl import (
    STATUS_LINE,
    HttpToolsProtocol,
    RequestResponseCycle,
)

from recovea_proxy.header_check import holds_refused_byte, holds_refused_name_byte

#: the headers that frame the response (uvicorn acts on them as it writes them)
_FRAMING = frozenset({b"content-length", b"transfer-encoding", b"connection"})
_HEADER_SEPARATOR = b": ".join
_NO_BODY_STATUS = (204, 304)
#: a body up to this size is joined to the held header block; a larger one is written
#: beside it (one writev)
_JOIN_MAX = 64 * 1024


class GatewayCycle(RequestResponseCycle):
    """uvicorn's request/response cycle; `send` as the module docstring says."""

    #: the header block of a response of known length, until its body's first piece
    _head: bytes | None = None
    #: called once if the connection is lost before the response is complete (`lost`):
    #: set by whoever streams the response (`disconnect.DisconnectWatcher`)
    on_disconnect: Callable[[], object] | None = None

    def lost(self) -> None:
        """The connection was lost (uvicorn's `connection_lost` has marked the cycle
        `disconnected` if its response was not complete): tell whoever watches."""
        gone = self.on_disconnect
        if gone is not None and self.disconnected:
            self.on_disconnect = None
            gone()

    async def send(self, message: Any) -> None:
        if self.response_started or self.access_log or message["type"] != "http.response.start":
            if (
                self.response_started
                and not self.response_complete
                and not self.flow.write_paused
                and not self.disconnected
            ):
                self._body(message)
                return
            if self._head is not None:  # uvicorn's send writes the body: the head first
                self._write_head()
            await RequestResponseCycle.send(self, message)
            return
        pairs = self.default_headers + list(message.get("headers", ()))
        names = [name.lower() for name, _ in pairs]
        values = [value for _, value in pairs]
        joined_names = b"".join(names)
        joined_values = b"\t".join(values)
        if holds_refused_name_byte(joined_names) or holds_refused_byte(joined_values):
            # refused: by uvicorn's loop, so that the error is the one it raises first
            await RequestResponseCycle.send(self, message)
            return
        if self.flow.write_paused and not self.disconnected:
            await self.flow.drain()
        if self.disconnected:
            return
        self.response_started = True
        self.waiting_for_100_continue = False
        status = message["status"]
        closes = False
        framing = _FRAMING.intersection(names)
        if framing:
            closes = self._framing(framing, names, values)
        lines = [STATUS_LINE[status]]
        if pairs:
            lines += (
                b"\r\n".join(map(_HEADER_SEPARATOR, zip(names, values, strict=True))),
                b"\r\n",
            )
        if not self.keep_alive and not closes:
            lines.append(b"connection: close\r\n")
        if (
            self.chunked_encoding is None
            and self.scope["method"] != "HEAD"
            and status not in _NO_BODY_STATUS
        ):
            # Neither content-length nor transfer-encoding specified
            self.chunked_encoding = True
            lines.append(b"transfer-encoding: chunked\r\n")
        lines.append(b"\r\n")
        if self.chunked_encoding is False:
            self._head = b"".join(lines)  # written with the body's first piece
        else:
            self.transport.write(b"".join(lines))

    def _write_head(self) -> None:
        """Write the held header block on its own (the body goes another way)."""
        head, self._head = self._head, None
        if head is not None and not self.disconnected:
            self.transport.write(head)

    def _framing(self, framing: frozenset[bytes], names: list[bytes], values: list[bytes]) -> bool:
        """Act on the framing headers in their order, as uvicorn's loop does; whether
        one says `connection: close`."""
        closes = False
        if any(names.count(name) > 1 for name in framing):  # one of them more than once
            for name, value in zip(names, values, strict=True):
                if name in framing:
                    closes = self._frame(name, value) or closes
            return closes
        for name in sorted(framing, key=names.index):
            closes = self._frame(name, values[names.index(name)]) or closes
        return closes

    def _frame(self, name: bytes, value: bytes) -> bool:
        """uvicorn's step for one framing header; whether it says `connection: close`."""
        if name == b"content-length":
            if self.chunked_encoding is None:
                self.expected_content_length = int(value.decode())
                self.chunked_encoding = False
        elif name == b"transfer-encoding":
            if value.lower() == b"chunked":
                self.expected_content_length = 0
                self.chunked_encoding = True
        elif b"close" in [token.lower().strip() for token in value.split(b",")]:
            self.keep_alive = False
            return True
        return False

    def _body(self, message: Any) -> None:
        """A piece of the body, after the start and before the end (uvicorn's body step,
        the held header block written with the first piece)."""
        if message["type"] != "http.response.body":
            self._write_head()
            raise RuntimeError(
                f"Expected ASGI message 'http.response.body', but got '{message['type']}'."
            )
        body = message.get("body", b"")
        more_body = message.get("more_body", False)
        head = self._head
        if self.scope["method"] == "HEAD":
            self.expected_content_length = 0
            self._write_head()
        elif self.chunked_encoding:
            if body:
                content = [b"%x\r\n" % len(body), body, b"\r\n"]
            else:
                content = []
            if not more_body:
                content.append(b"0\r\n\r\n")
            self.transport.write(b"".join(content))
        else:
            num_bytes = len(body)
            if num_bytes > self.expected_content_length:
                self._write_head()  # as uvicorn had written it at the start
                raise RuntimeError("Response content longer than Content-Length")
            self.expected_content_length -= num_bytes
            if head is None:
                self.transport.write(body)
            else:
                self._head = None
                if num_bytes <= _JOIN_MAX:
                    self.transport.write(head + body)
                else:  # one writev(2), without copying a large body
                    self.transport.writelines((head, body))
        if not more_body:
            if self.expected_content_length != 0:
                raise RuntimeError("Response content shorter than Content-Length")
            self.response_complete = True
            self.message_event.set()
            if not self.keep_alive:
                self.transport.close()
            self.on_response()


def start_cycle(protocol: HttpToolsProtocol) -> None:
    """uvicorn's `on_headers_complete` (0.55, the oldest pyproject.toml allows) for the
    connection `protocol` (the gateway's protocol calls it there), making a `GatewayCycle`
    instead of uvicorn's cycle."""
    parser = protocol.parser
    http_version = parser.get_http_version()
    scope = protocol.scope
    scope["method"] = parser.get_method().decode("ascii")
    if http_version != "1.1":
        scope["http_version"] = http_version
    if parser.should_upgrade() and protocol._should_upgrade():
        return
    parsed_url = httptools.parse_url(protocol.url)
    raw_path = parsed_url.path
    path = raw_path.decode("ascii")
    if "%" in path:
        path = urllib.parse.unquote(path)
    scope["path"] = protocol.root_path + path
    scope["raw_path"] = protocol.root_path.encode("ascii") + raw_path
    scope["query_string"] = parsed_url.query or b""
    if protocol.limit_concurrency is not None and (
        len(protocol.connections) >= protocol.limit_concurrency
        or len(protocol.tasks) >= protocol.limit_concurrency
    ):
        app = service_unavailable
        protocol.logger.warning("Exceeded concurrency limit.")
    else:
        app = protocol.app
    existing_cycle = protocol.cycle
    protocol.cycle = GatewayCycle(
        scope=scope,
        transport=protocol.transport,
        flow=protocol.flow,
        logger=protocol.logger,
        access_logger=protocol.access_logger,
        access_log=protocol.access_log,
        default_headers=protocol.server_state.default_headers,
        message_event=asyncio.Event(),
        expect_100_continue=protocol.expect_100_continue,
        keep_alive=http_version != "1.0" and parser.should_keep_alive(),
        on_response=protocol.on_response_complete,
    )
    if existing_cycle is None or existing_cycle.response_complete:
        protocol._start_asgi_task(protocol.cycle, app)
    else:  # a pipelined request: queued behind the one in progress
        protocol.flow.pause_reading()
        protocol.pipeline.appendleft((protocol.cycle, app))
