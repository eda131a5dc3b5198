"""Odd requests, swept broadly: bodies framed to mislead (a content-length that lies,
one the parser refuses), every method on the provider paths, `Expect: 100-continue`,
HTTP/1.0, pipelining, a request line naming another host. After each the invariants
hold: no 500 of the gateway's own, no traceback, internal error or key in its log, the
victim's next request served and metered; what reached the provider with a workspace
has its row, and nothing ever reaches a host other than the configured provider."""

from __future__ import annotations

import socket

import orjson

from tests.hostile.conftest import assert_unharmed, from_provider, gateway_code
from tests.hostile.rawhttp import (
    Connection,
    RawResponse,
    chat_head,
    exchange,
    framed,
    request_bytes,
)
from tests.ledger_support import Tenant, stored
from tests.support import Gateway, MockServer

CHAT = b'{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}]}'
STREAM = b'{"model":"gpt-4o-mini","stream":true,"messages":[{"role":"user","content":"hi"}]}'
MADE_UP = "rcv_live_" + "A" * 43


def test_a_body_shorter_than_its_content_length_is_never_forwarded(
    target: Gateway, victim: Tenant, mock: MockServer
) -> None:
    """A body shorter than its content-length, then the client closes its side: nothing
    is forwarded, nothing answered, and the gateway is unharmed."""
    mock.clear()
    with Connection(target.port) as conn:
        conn.send(chat_head(victim.key, "content-length: 5000") + b"\r\n" + CHAT)
        conn.sock.shutdown(socket.SHUT_WR)
        assert conn.rest() == b""
    assert mock.requests() == []
    assert_unharmed(target, victim)


def test_a_request_followed_by_garbage_is_answered_before_the_400(
    target: Gateway, victim: Tenant, mock: MockServer
) -> None:
    """A body longer than its content-length (the announced bytes are the request, the
    rest is no request), or a whole request followed by junk in the same write: the
    request is answered first (the provider's answer, and the row that says so); then
    the rest gets the parser's 400 or the connection closes, as after a pipelined
    request over the header bounds (tests/test_http_limits.py)."""
    longer = chat_head(victim.key, "content-length: 10") + b"\r\n" + CHAT
    junk = framed(chat_head(victim.key), CHAT) + b"JUNK\x01\r\n\r\n"
    # (the bytes, the body the provider gets, its answer: ten bytes are no JSON)
    for data, length, answer in ((longer, 10, 400), (junk, len(CHAT), 200)):
        mock.clear()
        with Connection(target.port) as conn:
            conn.send(data)
            first, *after = conn.responses() or [RawResponse(0, {}, b"")]
        assert (first.status, from_provider(first.headers)) == (answer, True), first
        # then the parser's 400 for the rest, or the connection closed without one
        assert [(a.status, from_provider(a.headers)) for a in after] in ([], [(400, False)])
        [seen] = mock.requests()
        assert seen["body_bytes"] == length
        stored(target, victim, "requests", first.headers["x-request-id"])
    assert_unharmed(target, victim)


def test_content_lengths_the_parser_refuses_are_a_4xx_never_forwarded(
    target: Gateway, victim: Tenant, mock: MockServer
) -> None:
    """Negative, non-numeric, hexadecimal, signed, over 2^64, twice with different
    values, a list, or beside `transfer-encoding: chunked`; a transfer coding the
    server does not know: a 4xx, and the provider sees nothing."""
    framings = [
        "content-length: -1",
        "content-length: abc",
        "content-length: 1e3",
        "content-length: 0x10",
        "content-length: +70",
        "content-length: 18446744073709551616",
        "content-length: 5\r\ncontent-length: 6",
        "content-length: 70, 70",
        "content-length: 10\r\ntransfer-encoding: chunked",
        "transfer-encoding: gzip",
    ]
    mock.clear()
    for framing in framings:
        response = exchange(
            target.port, chat_head(victim.key, "connection: close", framing) + b"\r\n" + CHAT
        )
        assert 400 <= response.status < 500, (framing, response.status)
    assert mock.requests() == []
    assert_unharmed(target, victim)


def test_other_methods_on_provider_paths_are_forwarded_and_metered(
    target: Gateway, victim: Tenant, mock: MockServer
) -> None:
    """GET, PUT, DELETE, PATCH, OPTIONS, HEAD and TRACE on chat and messages: forwarded
    with their method (the provider answers), each with its row; never a 500."""
    statuses = []
    for path in ("/v1/chat/completions", "/v1/messages"):
        for method in ("GET", "PUT", "DELETE", "PATCH", "OPTIONS", "HEAD", "TRACE"):
            mock.clear()
            body = CHAT if method in ("PUT", "PATCH", "DELETE") else b""
            with Connection(target.port) as conn:
                conn.send(request_bytes(method, path, victim.bearer, body))
                response = conn.response(head_only=method == "HEAD")
            statuses.append(response.status)
            assert from_provider(response.headers), (method, path, response.status)
            [seen] = mock.requests()
            assert (seen["method"], seen["path"]) == (method, path)
            stored(target, victim, "requests", response.headers["x-request-id"])
    assert 500 not in statuses
    assert_unharmed(target, victim)


def test_expect_100_continue_is_answered_before_the_body(
    target: Gateway, victim: Tenant, mock: MockServer
) -> None:
    """`Expect: 100-continue` with a valid key: `100 Continue`, then the body, then the
    provider's answer and a row. With a made-up key: 401 at once, no `100 Continue`,
    nothing forwarded."""
    with Connection(target.port) as conn:
        head = chat_head(victim.key, "expect: 100-continue", f"content-length: {len(CHAT)}")
        conn.send(head + b"\r\n")
        assert conn.response().status == 100
        conn.send(CHAT)
        served = conn.response()
    assert served.status == 200
    stored(target, victim, "requests", served.headers["x-request-id"])

    mock.clear()
    with Connection(target.port) as conn:
        conn.send(chat_head(MADE_UP, "expect: 100-continue", f"content-length: {len(CHAT)}"))
        conn.send(b"\r\n")
        refused = conn.response()
    assert refused.status == 401 and gateway_code(refused) == "invalid_api_key"
    assert mock.requests() == []
    assert_unharmed(target, victim)


def http_1_0(key: str, body: bytes) -> bytes:
    head = chat_head(key).replace(b" HTTP/1.1\r\n", b" HTTP/1.0\r\n", 1)
    return framed(head, body)


def test_an_http_1_0_request_is_served_and_the_connection_closed(
    target: Gateway, victim: Tenant
) -> None:
    """An HTTP/1.0 request (no keep-alive): served with a content-length, a row, and
    the connection closed after it."""
    with Connection(target.port) as conn:
        conn.send(http_1_0(victim.key, CHAT))
        response = conn.response()
        assert conn.rest() == b""
    assert response.status == 200
    assert orjson.loads(response.body)["object"] == "chat.completion"
    stored(target, victim, "requests", response.headers["x-request-id"])
    assert_unharmed(target, victim)


def test_an_http_1_0_stream_is_delimited_by_the_close(target: Gateway, victim: Tenant) -> None:
    """A streamed answer to an HTTP/1.0 request is not chunked: its body runs to the
    close, the provider's events and the receipt line as they are."""
    with Connection(target.port) as conn:
        conn.send(http_1_0(victim.key, STREAM))
        response = conn.response()
    assert response.status == 200
    assert "transfer-encoding" not in response.headers
    assert response.body.startswith(b"data: {")
    assert b"data: [DONE]\n\n: recovea-receipt-v1 " in response.body


def test_pipelined_requests_are_answered_in_order_each_metered(
    target: Gateway, victim: Tenant
) -> None:
    """A stream, a request with a made-up key and a normal request, sent in one write on
    one connection: answered in that order (200 streamed, 401, 200), each served
    request with its own row."""
    first = framed(chat_head(victim.key), STREAM)
    second = framed(chat_head(MADE_UP), CHAT)
    third = framed(chat_head(victim.key, "connection: close"), CHAT)
    with Connection(target.port) as conn:
        conn.send(first + second + third)
        answers = conn.responses()
    assert [a.status for a in answers] == [200, 401, 200]
    assert b"data: [DONE]\n\n: recovea-receipt-v1 " in answers[0].body
    assert gateway_code(answers[1]) == "invalid_api_key"
    for served in (answers[0], answers[2]):
        stored(target, victim, "requests", served.headers["x-request-id"])
    assert answers[0].headers["x-request-id"] != answers[2].headers["x-request-id"]
    assert_unharmed(target, victim)


def test_a_request_line_naming_another_host_never_reaches_it(
    target: Gateway, victim: Tenant, mock: MockServer
) -> None:
    """`POST http://<another host>/v1/chat/completions` (an absolute URI, with that
    host's Host header) goes to the configured provider, never to that host; `CONNECT`
    to it, `OPTIONS *` and a path that starts `//<host>` are refused (4xx)."""
    evil = MockServer()
    try:
        elsewhere = f"127.0.0.1:{evil.port}"
        mock.clear()
        head = chat_head(victim.key, "connection: close", host=elsewhere)
        absolute = head.replace(b"/v1/", f"http://{elsewhere}/v1/".encode(), 1)
        response = exchange(target.port, framed(absolute, CHAT))
        assert response.status == 200 and from_provider(response.headers)
        [seen] = mock.requests()
        assert seen["headers"]["host"] == f"127.0.0.1:{mock.port}"
        stored(target, victim, "requests", response.headers["x-request-id"])

        odd_lines = (f"CONNECT {elsewhere}", "OPTIONS *", f"POST //{elsewhere}/v1/chat/completions")
        for line in odd_lines:
            odd = head.replace(b"POST /v1/chat/completions", line.encode(), 1)
            refused = exchange(target.port, framed(odd, CHAT))
            assert 400 <= refused.status < 500, (line, refused.status)
        assert evil.requests() == []
        assert [r["path"] for r in mock.requests()] == ["/v1/chat/completions"]
    finally:
        evil.close()
    assert_unharmed(target, victim)


def test_header_values_reach_the_provider_byte_for_byte_or_not_at_all(
    target: Gateway, victim: Tenant, mock: MockServer
) -> None:
    """A UTF-8 header value (`café`) reaches the provider as sent; one that is not UTF-8
    (a lone 0xff byte), which could not cross unchanged, is not forwarded."""
    mock.clear()
    response = exchange(
        target.port,
        framed(
            chat_head(victim.key, "x-note: caf\xc3\xa9", "x-junk: a\xffb", "connection: close"),
            CHAT,
        ),
    )
    assert response.status == 200
    [seen] = mock.requests()
    assert seen["headers"]["x-note"] == "café"
    assert "x-junk" not in seen["headers"]
