"""Headers cross the gateway unchanged, except hop-by-hop ones and the gateway's own."""

from __future__ import annotations

import re

import httpx
import orjson
import pytest

from tests.conftest import FAKE_OPENAI_KEY
from tests.raw_http import connect, read_response, request
from tests.support import Gateway, MockServer

AUTH = {"authorization": f"Bearer {FAKE_OPENAI_KEY}"}


def echo(gateway: Gateway, headers: dict[str, str]) -> tuple[httpx.Response, dict[str, str]]:
    response = httpx.post(f"{gateway.url}/v1/_mock/echo", content=b"{}", headers=headers)
    assert response.status_code == 200
    received: dict[str, str] = response.json()["headers"]
    return response, received


def test_provider_headers_are_forwarded(gateway: Gateway) -> None:
    """OpenAI-Organization, OpenAI-Project and x-stainless-* reach the provider as sent."""
    _, received = echo(
        gateway,
        {
            **AUTH,
            "OpenAI-Organization": "org-123",
            "OpenAI-Project": "proj_9",
            "X-Stainless-Lang": "python",
            "X-Stainless-Retry-Count": "0",
            "User-Agent": "OpenAI/Python 9.9",
        },
    )
    assert received["openai-organization"] == "org-123"
    assert received["openai-project"] == "proj_9"
    assert received["x-stainless-lang"] == "python"
    assert received["x-stainless-retry-count"] == "0"
    assert received["user-agent"] == "OpenAI/Python 9.9"
    assert received["authorization"] == f"Bearer {FAKE_OPENAI_KEY}"


def test_hop_by_hop_and_gateway_headers_are_not_forwarded(gateway: Gateway) -> None:
    """Connection-scoped headers and X-Recovea-* stay at the gateway; identity is asked."""
    _, received = echo(
        gateway,
        {
            **AUTH,
            "Connection": "keep-alive, X-Private-Hop",
            "X-Private-Hop": "secret-hop",
            "Keep-Alive": "timeout=5",
            "Proxy-Authorization": "Basic abc",
            "TE": "trailers",
            "Accept-Encoding": "gzip, br",
            "X-Recovea-Feature": "search",
            "X-Recovea-Customer": "user-1",
        },
    )
    for name in ("keep-alive", "proxy-authorization", "te", "x-private-hop"):
        assert name not in received, name
    assert not any(k.startswith("x-recovea-") for k in received)
    assert received["accept-encoding"] == "identity"


@pytest.mark.parametrize("connection", ["keep-alive, X-Drop-Me", "close"])
def test_the_connection_header_itself_is_not_forwarded(gateway: Gateway, connection: str) -> None:
    """`Connection` is about the caller's hop: neither it nor a header it lists reaches
    the provider, whatever it says (keep-alive with a list, or close)."""
    _, received = echo(gateway, {**AUTH, "Connection": connection, "X-Drop-Me": "hop"})
    assert "connection" not in received
    if "X-Drop-Me" in connection:
        assert "x-drop-me" not in received
    else:
        assert "hop" == received["x-drop-me"]


def test_every_connection_line_names_hop_by_hop_headers(gateway: Gateway) -> None:
    """A request may carry `Connection` on several lines (it is a list): the headers
    named on each of them stay at the gateway, not only those of the last line."""
    headers = [
        (b"host", f"127.0.0.1:{gateway.port}".encode()),
        (b"authorization", AUTH["authorization"].encode()),
        (b"content-length", b"2"),
        (b"Connection", b"X-First-Hop"),
        (b"connection", b"keep-alive, x-second-hop"),
        (b"x-first-hop", b"one"),
        (b"x-second-hop", b"two"),
        (b"x-end-to-end", b"three"),
    ]
    with connect(gateway.port) as sock:
        sock.sendall(request(b"/v1/_mock/echo", headers, b"{}"))
        response = read_response(sock)
    assert 200 == response.status
    received = orjson.loads(response.body)["headers"]
    watched = ("connection", "x-first-hop", "x-second-hop", "x-end-to-end")
    assert {"x-end-to-end": "three"} == {k: v for k, v in received.items() if k in watched}


def test_gateway_ids_are_on_every_response(gateway: Gateway) -> None:
    """x-request-id and x-recovea-trace-id are set; the provider's id is kept aside."""
    response = httpx.post(
        f"{gateway.url}/v1/chat/completions",
        content=b'{"model":"gpt-4o","messages":[]}',
        headers=AUTH,
    )
    assert re.fullmatch(r"[0-9a-f]{32}", response.headers["x-request-id"])
    assert re.fullmatch(r"[0-9a-f]{32}", response.headers["x-recovea-trace-id"])
    assert response.headers["x-recovea-upstream-request-id"].startswith("req_")
    assert response.headers.get_list("x-request-id") == [response.headers["x-request-id"]]
    error = httpx.post(f"{gateway.url}/v1/chat/completions", content=b"{}")
    assert error.status_code == 401
    assert re.fullmatch(r"[0-9a-f]{32}", error.headers["x-request-id"])


def test_traceparent_gives_the_trace_id(gateway: Gateway) -> None:
    """A W3C traceparent's trace id becomes the request's trace id."""
    trace = "4bf92f3577b34da6a3ce929d0e0e4736"
    response = httpx.post(
        f"{gateway.url}/v1/_mock/echo",
        content=b"{}",
        headers={**AUTH, "traceparent": f"00-{trace}-00f067aa0ba902b7-01"},
    )
    assert response.headers["x-recovea-trace-id"] == trace
    assert response.json()["headers"]["traceparent"].startswith("00-" + trace)


def test_feature_and_customer_tags_are_recorded_and_cleaned(gateway: Gateway) -> None:
    """Tags are recorded; control characters are removed and long values cut, not rejected."""
    response = httpx.post(
        f"{gateway.url}/v1/chat/completions",
        content=b'{"model":"gpt-4o","messages":[]}',
        headers={**AUTH, "X-Recovea-Feature": "checkout\t-flow", "X-Recovea-Customer": "c" * 500},
    )
    assert response.status_code == 200
    record = gateway.record(response.headers["x-request-id"])
    assert record["feature"] == "checkout-flow"
    assert record["end_user_id"] == "c" * 128


def test_response_headers_from_the_provider_come_back(gateway: Gateway, mock: MockServer) -> None:
    """Provider response headers (e.g. openai-processing-ms) reach the client unchanged."""
    response = httpx.post(
        f"{gateway.url}/v1/chat/completions",
        content=b'{"model":"gpt-4o","messages":[]}',
        headers=AUTH,
    )
    assert "openai-processing-ms" in response.headers
    assert response.headers["content-type"].startswith("application/json")
    assert int(response.headers["content-length"]) == len(response.content)
