"""A client that goes away mid-stream cancels the upstream request at once."""

from __future__ import annotations

import socket
import time

import orjson

from tests.conftest import FAKE_OPENAI_KEY
from tests.support import Gateway, metric_value, wait_until


def test_client_leaving_mid_stream_cancels_upstream(gateway: Gateway) -> None:
    """The record is written (success None) long before the upstream would have finished."""
    body = orjson.dumps(
        {"model": "gpt-4o", "stream": True, "messages": [{"role": "user", "content": "bye"}]}
    )
    request = (
        b"POST /v1/chat/completions HTTP/1.1\r\n"
        b"Host: gw\r\n"
        b"Authorization: Bearer " + FAKE_OPENAI_KEY.encode() + b"\r\n"
        b"Content-Type: application/json\r\n"
        b"x-mock-chunks: 50\r\n"
        b"x-mock-chunk-delay-ms: 200\r\n"
        b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body
    )
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", gateway.port)) as sock:
        sock.sendall(request)
        head = sock.recv(65536)
        assert head.startswith(b"HTTP/1.1 200")
        request_id = head.split(b"x-request-id: ", 1)[1].split(b"\r\n", 1)[0].decode()
    # The full stream would take 50 x 200 ms = 10 s.
    record = gateway.record(request_id, deadline_s=5)
    assert time.monotonic() - started < 5
    assert record["client_gone"] is True
    assert record["success"] is None
    assert record["latency_total_ms"] < 5000
    wait_until(
        lambda: metric_value(gateway.metrics(), "recovea_requests_in_flight") == 0,
        what="in-flight gauge back to 0",
    )
    assert (
        metric_value(gateway.metrics(), "recovea_client_disconnects_total", provider="openai") >= 1
    )
