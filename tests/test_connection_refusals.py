"""What the HTTP protocol refuses before the app sees it is counted on /metrics, by
reason, so an operator can see a header flood, slow clients or a connection storm
(`recovea_connections_refused_total{reason}`)."""

from __future__ import annotations

import socket
from collections.abc import Callable

import httpx

from tests.raw_http import (
    CHAT,
    chat_headers,
    closed_within,
    connect,
    exchange,
    padded,
    request,
)
from tests.support import Gateway, metric_value, wait_until


def refused(gateway: Gateway, reason: str) -> float:
    """The count for `reason` (-1 while the scrape itself is refused: the test holds the
    connection bound for a moment)."""
    try:
        text = gateway.metrics()
    except httpx.HTTPError:
        return -1
    return metric_value(text, "recovea_connections_refused_total", reason=reason)


def test_each_kind_of_refusal_is_counted_once(start_gateway: Callable[..., Gateway]) -> None:
    """A header flood (431), a garbled request (400), a silent connection (header
    timeout), a stalled body (408) and a connection over the bound each add one to
    their reason, and nothing else is counted."""
    gw = start_gateway(
        RECOVEA_HEADER_TIMEOUT_S="0.3",
        RECOVEA_BODY_IDLE_TIMEOUT_S="0.3",
        RECOVEA_MAX_CONNECTIONS="3",
    )
    headers = chat_headers(gw.port)
    flood = request(b"/v1/chat/completions", padded(headers, b"/v1/chat/completions", 200, 4000))
    assert exchange(gw.port, flood + CHAT).status == 431
    assert exchange(gw.port, b"GARBAGE \x01\r\n\r\n").status == 400

    with connect(gw.port) as silent:
        assert closed_within(silent, 10) is not None

    with connect(gw.port) as stalled:
        stalled.sendall(request(b"/v1/chat/completions", headers) + CHAT[:5])
        assert closed_within(stalled, 10) is not None

    held: list[socket.socket] = [connect(gw.port) for _ in range(3)]
    try:
        for sock in held:
            sock.sendall(b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n")
            assert sock.recv(65536).startswith(b"HTTP/1.1 200 ")
        with connect(gw.port) as extra:
            assert closed_within(extra, 10) is not None
    finally:
        for sock in held:
            sock.close()

    expected = {
        "headers_too_large": 1,
        "invalid_request": 1,
        "header_timeout": 1,
        "body_timeout": 1,
        "too_many_connections": 1,
    }
    wait_until(lambda: refused(gw, "too_many_connections") == 1, 10, "the refusal counted")
    assert {reason: refused(gw, reason) for reason in expected} == expected
