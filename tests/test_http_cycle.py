"""The gateway's response writer (`http_cycle.GatewayCycle`) writes what uvicorn's
writes and refuses what uvicorn's refuses: for any status, method, keep-alive and list
of headers (framing headers in any order, repeated, malformed; names and values with
forbidden bytes), the bytes on the wire, the error raised and the framing state it
leaves are the same as `uvicorn`'s `RequestResponseCycle`."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from uvicorn.protocols.http.flow_control import FlowControl
from uvicorn.protocols.http.httptools_impl import RequestResponseCycle

from recovea_proxy.http_cycle import GatewayCycle


class Wire:
    """A transport that keeps what is written to it."""

    def __init__(self) -> None:
        self.written: list[bytes] = []
        self.closed = False

    def write(self, data: bytes) -> None:
        self.written.append(bytes(data))

    def writelines(self, pieces: Any) -> None:
        self.written.append(b"".join(pieces))  # one writev(2)

    def close(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed

    def pause_reading(self) -> None: ...

    def resume_reading(self) -> None: ...


def _cycle(
    kind: type[RequestResponseCycle], wire: Wire, case: dict[str, Any], done: list[bool]
) -> RequestResponseCycle:
    """A cycle of `kind` writing to `wire`, for the case's method, defaults and
    keep-alive; each finished response appends to `done`."""
    return kind(
        scope={"method": case["method"], "http_version": "1.1"},  # type: ignore[typeddict-item]
        transport=wire,  # type: ignore[arg-type]
        flow=FlowControl(wire),  # type: ignore[arg-type]
        logger=logging.getLogger("test"),
        access_logger=logging.getLogger("test.access"),
        access_log=False,
        default_headers=case["defaults"],
        message_event=asyncio.Event(),
        expect_100_continue=False,
        keep_alive=case["keep_alive"],
        on_response=lambda: done.append(True),
    )


def _run(kind: type[RequestResponseCycle], case: dict[str, Any]) -> tuple[Any, ...]:
    wire = Wire()
    done: list[bool] = []
    cycle = _cycle(kind, wire, case, done)
    start = {"type": "http.response.start", "status": case["status"], "headers": case["headers"]}
    messages = [start] + [
        {"type": "http.response.body", "body": body, "more_body": more}
        for body, more in case["bodies"]
    ]
    error = None
    try:
        for message in messages:
            asyncio.run(cycle.send(message))  # type: ignore[arg-type]
    except (RuntimeError, ValueError) as exc:
        error = (type(exc), str(exc))
    state = (cycle.keep_alive, cycle.chunked_encoding, cycle.expected_content_length)
    return wire.written, wire.closed, error, state, done, cycle.response_complete


_NAMES = st.sampled_from(
    [
        b"content-type",
        b"Content-Length",
        b"content-length",
        b"Transfer-Encoding",
        b"transfer-encoding",
        b"Connection",
        b"connection",
        b"x-request-id",
        b"X-Recovea-Cache",
        b"bad name",
        b"bad\x01",
        b"bad\nname",
        b"",
        b"set-cookie",
    ]
)
_VALUES = st.sampled_from(
    [
        b"application/json",
        b"5",
        b"0",
        b"12",
        b"not-a-number",
        b"chunked",
        b"Chunked",
        b"gzip",
        b"close",
        b"keep-alive, Close",
        b"keep-alive",
        b"a\tb",
        b"bad\r\nvalue",
        b"\x7f",
        b"",
    ]
)
_CASES = st.fixed_dictionaries(
    {
        "status": st.sampled_from([200, 204, 304, 400, 429, 500, 599]),
        "method": st.sampled_from(["POST", "GET", "HEAD"]),
        "keep_alive": st.booleans(),
        "defaults": st.sampled_from(
            [[], [(b"server", b"uvicorn"), (b"date", b"Sun, 06 Dec 2026 17:00:00 GMT")]]
        ),
        "headers": st.lists(st.tuples(_NAMES, _VALUES), max_size=8),
        "bodies": st.lists(
            st.tuples(st.sampled_from([b"", b"hello", b"12345"]), st.booleans()), max_size=3
        ).map(lambda pieces: [*pieces, (b"", False)]),
    }
)


@settings(max_examples=600, deadline=None)
@given(_CASES)
def test_the_gateway_writes_and_refuses_as_uvicorn_does(case: dict[str, Any]) -> None:
    written, *rest = _run(GatewayCycle, case)
    uvicorn_written, *uvicorn_rest = _run(RequestResponseCycle, case)
    # the same bytes on the wire (the gateway may write them in fewer calls)
    assert (b"".join(written), rest) == (b"".join(uvicorn_written), uvicorn_rest)


def test_a_typical_answer_is_written_whole() -> None:
    """A JSON answer with a length and the gateway's headers, as a client reads it."""
    case = {
        "status": 200,
        "method": "POST",
        "keep_alive": True,
        "defaults": [(b"date", b"Sun, 06 Dec 2026 17:00:00 GMT")],
        "headers": [
            (b"Content-Type", b"application/json"),
            (b"content-length", b"5"),
            (b"x-recovea-cache", b"miss"),
        ],
        "bodies": [(b"hello", False)],
    }
    written, closed, error, state, done, complete = _run(GatewayCycle, case)
    # one write: the header block waits for the body (one segment, one send)
    assert written == [
        b"HTTP/1.1 200 OK\r\n"
        b"date: Sun, 06 Dec 2026 17:00:00 GMT\r\n"
        b"content-type: application/json\r\n"
        b"content-length: 5\r\n"
        b"x-recovea-cache: miss\r\n"
        b"\r\n"
        b"hello"
    ]
    assert (closed, error, state, done, complete) == (False, None, (True, False, 0), [True], True)


def test_a_large_answer_leaves_with_its_head_in_one_call() -> None:
    body = b"x" * (200 * 1024)
    case = {
        "status": 200,
        "method": "POST",
        "keep_alive": True,
        "defaults": [],
        "headers": [(b"content-length", str(len(body)).encode())],
        "bodies": [(body, False)],
    }
    written, _, error, _, done, complete = _run(GatewayCycle, case)
    assert written == [b"HTTP/1.1 200 OK\r\ncontent-length: 204800\r\n\r\n" + body]
    assert (error, done, complete) == (None, [True], True)


def test_a_stream_sends_its_head_before_any_body() -> None:
    """A response without a length (an SSE stream) is not held: the client reads the
    status and headers while the first event is still on its way."""
    wire = Wire()
    cycle = _cycle(GatewayCycle, wire, {"method": "POST", "defaults": [], "keep_alive": True}, [])
    start = {
        "type": "http.response.start",
        "status": 200,
        "headers": [(b"content-type", b"text/event-stream")],
    }
    asyncio.run(cycle.send(start))  # type: ignore[arg-type]
    assert wire.written == [
        b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n"
    ]
