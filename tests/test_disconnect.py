"""A client that goes away mid-stream cancels the upstream request at once: the provider
sees its connection closed, and the request's record is written as abandoned."""

from __future__ import annotations

import socket
import time
from typing import Any

import orjson

from tests.conftest import FAKE_OPENAI_KEY
from tests.support import Gateway, MockServer, metric_value, wait_until

CHUNKS = 50
CHUNK_DELAY_MS = 200  # the whole stream would take 50 x 200 ms = 10 s


def test_client_leaving_mid_stream_cancels_upstream(gateway: Gateway, mock: MockServer) -> None:
    """Within 5 s of the client leaving (half the stream's length), the mock provider
    has seen the gateway close the upstream connection after only some of the events,
    and the record is written with `client_gone` and `success` None."""
    marker = f"bye-{time.monotonic_ns()}"
    body = orjson.dumps(
        {"model": "gpt-4o", "stream": True, "messages": [{"role": "user", "content": marker}]}
    )
    request = (
        b"POST /v1/chat/completions HTTP/1.1\r\n"
        b"Host: gw\r\n"
        b"Authorization: Bearer " + FAKE_OPENAI_KEY.encode() + b"\r\n"
        b"Content-Type: application/json\r\n"
        b"x-mock-chunks: " + str(CHUNKS).encode() + b"\r\n"
        b"x-mock-chunk-delay-ms: " + str(CHUNK_DELAY_MS).encode() + b"\r\n"
        b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body
    )
    with socket.create_connection(("127.0.0.1", gateway.port)) as sock:
        sock.sendall(request)
        head = sock.recv(65536)
        assert head.startswith(b"HTTP/1.1 200")
        request_id = head.split(b"x-request-id: ", 1)[1].split(b"\r\n", 1)[0].decode()
    left = time.monotonic()

    def upstream_closed() -> dict[str, Any] | None:
        for entry in mock.requests():
            if marker in str(entry.get("body")) and entry["stream"]["end"] != "streaming":
                return dict(entry["stream"])
        return None

    stream = wait_until(upstream_closed, deadline_s=5, what="the mock to see the stream end")
    assert time.monotonic() - left < 5
    assert stream["end"] == "client_closed"
    assert stream["events"] < CHUNKS

    record = gateway.record(request_id, deadline_s=5)
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
