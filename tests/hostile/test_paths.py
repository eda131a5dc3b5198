"""Metering cannot be bypassed through the path: paths are checked on their raw bytes,
and a path the gateway might read differently from the provider is refused with 400
`invalid_path` in the surface's shape — never forwarded. `stream_options: null`
cannot switch off the usage the gateway asks for."""

from __future__ import annotations

import httpx
import orjson
import pytest

from tests.hostile.conftest import assert_unharmed
from tests.hostile.rawhttp import exchange, request_bytes
from tests.ledger_support import Tenant, stored
from tests.support import Gateway, MockServer, metric_value

CHAT = b'{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}]}'
MESSAGE = b'{"model":"claude-3-5-haiku","max_tokens":8,"messages":[{"role":"user","content":"hi"}]}'

# (surface mount, the endpoint under it, its error shape, a body it accepts)
SURFACES = [
    ("/v1", "chat/completions", "openai", CHAT),
    ("/v1", "messages", "anthropic", MESSAGE),
    ("/openai/v1", "chat/completions", "openai", CHAT),
    ("/anthropic/v1", "messages", "anthropic", MESSAGE),
    ("/openrouter/api/v1", "chat/completions", "openai", CHAT),
]
ANTHROPIC_SDK = {"anthropic-version": "2023-06-01"}
# Ways to name the endpoint that a gateway and a provider may read differently.
TRICKS = [
    "{mount}/x/../{endpoint}",
    "{mount}/./{endpoint}",
    "{mount}/%2e/{endpoint}",
    "{mount}/%2E%2E/{mount_tail}/{endpoint}",
    "{mount}//{endpoint}",
    "{mount}/{endpoint}/",
    "{mount}/{endpoint}%3Fx=1",
    "{mount}/{endpoint}%23x",
    "{mount}/{endpoint}%00",
    "{mount}/{endpoint}%2F",
    "{mount}/{endpoint_encoded}",
    "{mount}/{endpoint}%zz",
    "{mount}/{endpoint}%5C..",
    "{mount}/{endpoint}/..",
    "{mount}/{endpoint}/.",
]


def error_code(shape: str, body: object) -> str:
    assert isinstance(body, dict)
    if shape == "anthropic":
        assert body["type"] == "error"
        assert body["error"]["type"] == "invalid_request_error"
    else:
        assert body["error"]["type"] == "invalid_request_error"
    code: str = body["error"]["code"]
    return code


@pytest.mark.parametrize(("mount", "endpoint", "shape", "body"), SURFACES)
def test_tricky_paths_are_refused_in_the_surfaces_shape_and_never_forwarded(
    target: Gateway, victim: Tenant, mock: MockServer, mount: str, endpoint: str, shape: str,
    body: bytes,
) -> None:
    """Dot segments, empty segments, a trailing slash, encoded `/ ? # . %00 \\`, encoded
    letters, malformed escapes: 400 `invalid_path` in the surface's error shape (an
    Anthropic SDK's `anthropic-version` decides it where the path no longer names the
    surface), and the provider never sees the request."""
    mock.clear()
    headers = {**victim.bearer, "content-type": "application/json"}
    if shape == "anthropic":
        headers.update(ANTHROPIC_SDK)
    encoded = endpoint[:-1] + f"%{ord(endpoint[-1]):02X}"
    for trick in TRICKS:
        path = trick.format(
            mount=mount, endpoint=endpoint, endpoint_encoded=encoded, mount_tail=mount[1:]
        )
        response = exchange(
            target.port,
            request_bytes("POST", path, headers, body),
        )
        assert response.status == 400, (path, response.status, response.body)
        assert error_code(shape, response.json()) == "invalid_path", path
    assert mock.requests() == []
    assert_unharmed(target, victim)


def test_climbing_out_of_the_openrouter_base_path_is_refused(
    target: Gateway, victim: Tenant, mock: MockServer
) -> None:
    """`/openrouter/api/v1/../../x` would leave the upstream's `/api` base: refused."""
    mock.clear()
    for path in ("/openrouter/api/v1/../../x", "/openrouter/api/v1/%2e%2e/%2e%2e/x"):
        response = exchange(target.port, request_bytes("GET", path, victim.bearer))
        assert response.status == 400
        assert error_code("openai", response.json()) == "invalid_path"
    assert mock.requests() == []


def test_a_query_outside_printable_ascii_is_refused(
    target: Gateway, victim: Tenant, mock: MockServer
) -> None:
    """The query string is forwarded as sent, so it must be plain printable ASCII."""
    mock.clear()
    for query in ("x=\xe9", "x=\x7f"):
        response = exchange(
            target.port,
            request_bytes("GET", f"/v1/models?{query}", victim.bearer),
        )
        assert response.status == 400
        assert error_code("openai", response.json()) in ("invalid_path", "invalid_request")
    assert mock.requests() == []


def test_an_escape_a_provider_path_needs_is_forwarded_as_sent(
    target: Gateway, victim: Tenant, mock: MockServer
) -> None:
    """A fine-tuned model id's `:` may come percent-encoded: it reaches the provider
    byte for byte, with the query, as the client sent it."""
    mock.clear()
    path = "/v1/models/ft%3Agpt-4o-mini%3Aacme%3A7p4lURel?limit=2"
    response = exchange(target.port, request_bytes("GET", path, victim.bearer))
    assert response.status in (200, 404)
    [seen] = mock.requests()
    assert seen["raw_path"] == path
    assert seen["path"] == "/v1/models/ft:gpt-4o-mini:acme:7p4lURel"


def test_refused_paths_are_counted_and_leave_no_row(target: Gateway, victim: Tenant) -> None:
    """A refused path is counted under the bounded route label `invalid_path`."""
    before = metric_value(target.metrics(), "recovea_requests_total", route="invalid_path")
    response = exchange(
        target.port, request_bytes("POST", "/v1/chat/../chat/completions", victim.bearer, CHAT)
    )
    assert response.status == 400
    after = metric_value(target.metrics(), "recovea_requests_total", route="invalid_path")
    assert after == before + 1


def test_stream_options_null_still_gets_usage_metered_and_hidden(
    target: Gateway, victim: Tenant, mock: MockServer
) -> None:
    """`"stream_options": null` is treated as absent: the provider is asked for usage
    (so the row has tokens), and the client still receives no usage chunk."""
    mock.clear()
    body = {
        "model": "gpt-4o-mini",
        "messages": [{"role": "user", "content": "hi"}],
        "stream": True,
        "stream_options": None,
    }
    response = httpx.post(
        f"{target.url}/v1/chat/completions", json=body, headers=victim.bearer, timeout=30
    )
    assert response.status_code == 200
    [seen] = mock.requests()
    assert seen["body"]["stream_options"] == {"include_usage": True}
    assert b'"usage"' not in response.content
    row = stored(target, victim, "requests", response.headers["x-request-id"])
    assert (row["input_tokens"], row["output_tokens"]) == (12, 16)


def test_unmetered_forwarded_requests_are_visible(
    target: Gateway, victim: Tenant
) -> None:
    """A forwarded request whose usage the gateway could not read keeps NULL tokens and
    is counted by route, so an operator can see unmetered traffic."""
    before = metric_value(
        target.metrics(), "recovea_unmetered_requests_total", route="/v1/chat/completions"
    )
    response = httpx.post(
        f"{target.url}/v1/chat/completions",
        content=orjson.dumps(
            {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}
        ),
        headers={**victim.bearer, "x-mock-fault": "no-usage"},
        timeout=30,
    )
    assert response.status_code == 200
    row = stored(target, victim, "requests", response.headers["x-request-id"])
    assert (row["input_tokens"], row["output_tokens"]) == (None, None)
    after = metric_value(
        target.metrics(), "recovea_unmetered_requests_total", route="/v1/chat/completions"
    )
    assert after == before + 1


def test_a_query_reaches_the_provider_byte_for_byte(
    target: Gateway, victim: Tenant, mock: MockServer
) -> None:
    """Escapes in a query string (`%2F`, `%3D`, `%26`, `+`) are not decoded or
    re-encoded on the way: the provider reads the query the client wrote."""
    mock.clear()
    path = "/v1/files?purpose=fine%2Dtune&after=file%2Fabc%3D%26x&q=a+b%20c&empty=&flag"
    response = exchange(target.port, request_bytes("GET", path, victim.bearer))
    assert response.status in (200, 404)
    [seen] = mock.requests()
    assert seen["raw_path"] == path
