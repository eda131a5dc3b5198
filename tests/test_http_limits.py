"""The HTTP server bounds what a connection may cost before it has delivered a request:
headers per request and their size (431 `headers_too_large`), the time to send them,
and the connections open at once. Real gateway processes, raw sockets."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import FAKE_OPENAI_KEY, upstream_env
from tests.raw_http import (
    CHAT,
    chat_headers,
    closed_within,
    connect,
    exchange,
    padded,
    read_response,
    read_until_closed,
    request,
)
from tests.support import Gateway, MockServer, running_gateway, wait_until

MAX_HEADERS = 100  # RECOVEA_MAX_HEADER_COUNT's default
MAX_BYTES = 32 * 1024  # RECOVEA_MAX_HEADER_KB's default
CHAT_PATH = b"/v1/chat/completions"
MESSAGES_PATH = b"/v1/messages"


def assert_431(gw: Gateway, data: bytes, shape: str = "openai") -> None:
    """`data` gets a 431 `headers_too_large` in `shape`, and the connection closes."""
    with connect(gw.port) as sock:
        sock.sendall(data)
        response = read_response(sock)
        assert closed_within(sock, 5) is not None
    assert response.status == 431
    assert response.headers[b"content-type"] == b"application/json"
    assert response.headers[b"connection"] == b"close"
    body = response.json()
    if shape == "anthropic":
        assert body == {
            "type": "error",
            "error": {
                "type": "invalid_request_error",
                "message": body["error"]["message"],  # type: ignore[index]
                "code": "headers_too_large",
            },
        }
    else:
        assert body == {
            "error": {
                "message": body["error"]["message"],  # type: ignore[index]
                "type": "invalid_request_error",
                "param": None,
                "code": "headers_too_large",
            }
        }


def test_too_many_headers_get_431_in_openai_shape(gateway: Gateway) -> None:
    """101 headers on an OpenAI path: 431 headers_too_large, OpenAI's error shape."""
    headers = padded(chat_headers(gateway.port), CHAT_PATH, MAX_HEADERS + 1, 4000)
    assert_431(gateway, request(CHAT_PATH, headers, CHAT), "openai")


def test_too_many_headers_get_431_in_anthropic_shape(gateway: Gateway) -> None:
    """101 headers on /v1/messages: the same 431 in Anthropic's error shape."""
    headers = padded(chat_headers(gateway.port), MESSAGES_PATH, MAX_HEADERS + 1, 4000)
    assert_431(gateway, request(MESSAGES_PATH, headers, CHAT), "anthropic")


def test_headers_too_large_in_total_get_431(gateway: Gateway) -> None:
    """A few large headers, one byte over the size bound in all: 431."""
    headers = padded(chat_headers(gateway.port), CHAT_PATH, 10, MAX_BYTES + 1)
    assert_431(gateway, request(CHAT_PATH, headers, CHAT))


@pytest.mark.parametrize("where", ["header", "target"])
def test_one_huge_header_or_target_gets_431(gateway: Gateway, where: str) -> None:
    """A single 1 MB header value (which the parser buffers until it ends) or a 1 MB
    request target is refused with 431, and the client, still sending, reads it."""
    huge = b"a" * (1024 * 1024)
    if where == "header":
        data = request(CHAT_PATH, [*chat_headers(gateway.port), (b"x-huge", huge)], CHAT)
    else:
        data = request(CHAT_PATH + b"?q=" + huge, chat_headers(gateway.port), CHAT)
    assert_431(gateway, data)


def test_request_at_both_bounds_is_served(gateway: Gateway) -> None:
    """Exactly 100 headers whose names, values and target make exactly 32 KiB: served."""
    headers = padded(chat_headers(gateway.port), CHAT_PATH, MAX_HEADERS, MAX_BYTES)
    response = exchange(gateway.port, request(CHAT_PATH, headers, CHAT))
    assert response.status == 200, response.body
    assert response.json()["object"] == "chat.completion"  # type: ignore[index]


def test_expect_100_continue_is_kept(gateway: Gateway) -> None:
    """The bounded protocol reads headers as uvicorn does: a client that sends
    `Expect: 100-continue` (with trailing whitespace) gets 100 Continue, then its
    answer."""
    headers = [*chat_headers(gateway.port), (b"expect", b"100-continue  ")]
    with connect(gateway.port) as sock:
        sock.sendall(request(CHAT_PATH, headers))
        interim = b""
        while b"\r\n\r\n" not in interim:
            chunk = sock.recv(1)
            assert chunk, "closed before 100 Continue"
            interim += chunk
        assert interim == b"HTTP/1.1 100 Continue\r\n\r\n"
        sock.sendall(CHAT)
        assert read_response(sock).status == 200


def test_gateway_serves_after_refusals(gateway: Gateway) -> None:
    """Refused requests leave the gateway serving requests and /readyz."""
    for count in (MAX_HEADERS + 1, 500, 2000):
        headers = padded(chat_headers(gateway.port), CHAT_PATH, count, 60_000)
        assert_431(gateway, request(CHAT_PATH, headers, CHAT))
    assert httpx.get(f"{gateway.url}/readyz").status_code == 200
    response = httpx.post(
        f"{gateway.url}/v1/chat/completions",
        content=CHAT,
        headers={"authorization": f"Bearer {FAKE_OPENAI_KEY}"},
    )
    assert response.status_code == 200


def test_pipelined_refusal_does_not_break_the_response_in_flight(gateway: Gateway) -> None:
    """A request over the bound pipelined behind a stream: the stream is delivered
    whole, no answer is written into it, and the connection closes after it."""
    port = gateway.port
    stream = b'{"model":"gpt-4o","stream":true,"messages":[{"role":"user","content":"p"}]}'
    first = request(
        CHAT_PATH,
        [*chat_headers(port, stream), (b"x-mock-chunks", b"5"), (b"x-mock-chunk-delay-ms", b"50")],
        stream,
    )
    second = request(CHAT_PATH, padded(chat_headers(port), CHAT_PATH, MAX_HEADERS + 1, 4000))
    with connect(port) as sock:
        sock.sendall(first + second)
        answer = read_until_closed(sock)
    assert answer.startswith(b"HTTP/1.1 200")
    assert answer.count(b"HTTP/1.1 ") == 1
    assert b"data: [DONE]" in answer
    assert answer.endswith(b"\r\n0\r\n\r\n")


@pytest.mark.parametrize("flood", ["many", "huge"])
def test_trailer_flood_closes_the_connection(gateway: Gateway, flood: str) -> None:
    """Trailers after a chunked body count against the same bounds: 200 trailer fields,
    or one 1 MB trailer, close the connection instead of being served."""
    if flood == "many":
        trailers = b"".join(b"x-trailer-%03d: t\r\n" % i for i in range(200))
    else:
        trailers = b"x-trailer: " + b"t" * (1024 * 1024) + b"\r\n"
    headers = [
        *chat_headers(gateway.port)[:3],
        (b"transfer-encoding", b"chunked"),
    ]
    chunked = b"%x\r\n" % len(CHAT) + CHAT + b"\r\n0\r\n" + trailers + b"\r\n"
    with connect(gateway.port) as sock:
        try:
            sock.sendall(request(CHAT_PATH, headers, chunked))
        except (BrokenPipeError, ConnectionResetError):
            pass  # closed while still sending: refused
        answer = read_until_closed(sock)
    assert not answer.startswith(b"HTTP/1.1 200"), answer[:200]


def test_header_flood_does_not_grow_memory(gateway: Gateway) -> None:
    """Four connections each sending 4,000 headers of 1 KB (4 MB) are refused with
    431 and the process's resident memory does not grow by megabytes."""
    headers = chat_headers(gateway.port)
    headers += [(b"x-flood-%04d" % i, b"f" * 1024) for i in range(4000)]
    flood = request(CHAT_PATH, headers)  # content-length announced, body never sent
    before = _rss_kb(gateway.process.pid)
    sockets = [connect(gateway.port, timeout_s=5) for _ in range(4)]
    try:
        statuses = []
        for sock in sockets:
            sock.sendall(flood)
        for sock in sockets:
            try:
                statuses.append(read_response(sock).status)
            except TimeoutError:
                statuses.append(None)
        grown_kb = _rss_kb(gateway.process.pid) - before
    finally:
        for sock in sockets:
            sock.close()
    assert grown_kb < 8 * 1024, f"RSS grew by {grown_kb} kB"
    assert statuses == [431] * 4


def _rss_kb(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS")


@pytest.fixture(scope="module")
def quick_deadline(mock: MockServer, workdir: Path, db_env: dict[str, str]) -> Iterator[Gateway]:
    """A gateway whose connections must deliver their headers within 0.3 s."""
    env = {**upstream_env(mock), **db_env, "RECOVEA_HEADER_TIMEOUT_S": "0.3"}
    with running_gateway(env, workdir) as gw:
        yield gw


def test_silent_connection_is_closed(quick_deadline: Gateway) -> None:
    """A connection that sends nothing is closed once the header timeout passes."""
    with connect(quick_deadline.port) as sock:
        waited = closed_within(sock, 5)
    assert waited is not None, "still open 5 s after connecting"
    assert waited >= 0.25


def test_slowloris_is_closed(quick_deadline: Gateway) -> None:
    """A client sending its headers one byte every 20 ms is closed at the header
    timeout: the bytes it keeps sending do not restart it."""
    port = quick_deadline.port
    trickle = request(CHAT_PATH, [*chat_headers(port), (b"x-slow", b"s" * 10_000)], CHAT)
    with connect(port) as sock:
        start = time.monotonic()
        sent = 0
        closed = None
        while closed is None and time.monotonic() - start < 5:
            try:
                sock.send(trickle[sent : sent + 1])
            except (BrokenPipeError, ConnectionResetError):
                closed = time.monotonic() - start
                break
            sent += 1
            if closed_within(sock, 0.02) is not None:
                closed = time.monotonic() - start
    assert closed is not None, f"still open after 5 s and {sent} bytes"
    assert sent > 5 and closed >= 0.25


def test_slow_responses_and_idle_keep_alive_outlive_the_header_timeout(
    quick_deadline: Gateway,
) -> None:
    """The header timeout covers headers only: a stream that takes longer is served in
    full, and a kept-alive connection may then idle past the timeout and be reused."""
    port = quick_deadline.port
    stream = b'{"model":"gpt-4o","stream":true,"messages":[{"role":"user","content":"x"}]}'
    headers = [
        *chat_headers(port, stream),
        (b"x-mock-chunks", b"8"),
        (b"x-mock-chunk-delay-ms", b"100"),
    ]
    with connect(port) as sock:
        sock.sendall(request(CHAT_PATH, headers, stream))
        data = b""
        while b"0\r\n\r\n" not in data:
            chunk = sock.recv(65536)
            assert chunk, "closed during the stream"
            data += chunk
        assert data.startswith(b"HTTP/1.1 200")
        assert b"data: [DONE]" in data
        assert closed_within(sock, 0.8) is None  # idle, kept alive
        sock.sendall(request(b"/healthz", [(b"host", b"x")], method=b"GET"))
        assert read_response(sock).body == b"ok\n"


def test_headers_split_over_reads_are_served(quick_deadline: Gateway) -> None:
    """A request whose headers arrive in several pieces within the timeout is served."""
    port = quick_deadline.port
    data = request(CHAT_PATH, chat_headers(port), CHAT)
    with connect(port) as sock:
        for start in range(0, len(data), 40):
            sock.sendall(data[start : start + 40])
        assert read_response(sock).status == 200


def test_connections_over_the_bound_are_closed_at_once(
    start_gateway: Callable[..., Gateway],
) -> None:
    """With RECOVEA_MAX_CONNECTIONS=5, a 6th concurrent connection is closed at once;
    the first five keep working, and once one closes a new one is served."""
    gw = start_gateway(RECOVEA_MAX_CONNECTIONS="5")
    health = request(b"/healthz", [(b"host", b"x")], method=b"GET")
    five = [connect(gw.port) for _ in range(5)]
    try:
        for sock in five:
            sock.sendall(health)
            assert read_response(sock).body == b"ok\n"
        with connect(gw.port) as sixth:
            waited = closed_within(sixth, 5)
        assert waited is not None and waited < 2, "the 6th connection was kept open"
        for sock in five:
            sock.sendall(health)
            assert read_response(sock).body == b"ok\n"
        five.pop().close()
        wait_until(lambda: _served(gw.port, health), 10, "a connection after one closed")
    finally:
        for sock in five:
            sock.close()


def _served(port: int, data: bytes) -> bool:
    with connect(port) as sock:
        sock.sendall(data)
        try:
            return read_response(sock).body == b"ok\n"
        except (ConnectionError, TimeoutError):
            return False


def test_workers_apply_the_bounds(start_gateway: Callable[..., Gateway]) -> None:
    """With --workers 2, whichever worker answers refuses too many headers and closes
    silent connections: the bounds reach the worker processes."""
    gw = start_gateway(_args="--workers 2", RECOVEA_HEADER_TIMEOUT_S="0.3")
    headers = padded(chat_headers(gw.port), CHAT_PATH, MAX_HEADERS + 1, 4000)
    for _ in range(6):
        assert_431(gw, request(CHAT_PATH, headers, CHAT))
    for _ in range(4):
        with connect(gw.port) as sock:
            assert closed_within(sock, 5) is not None
