"""Every Anthropic SDK call goes to Anthropic with `base_url` = the gateway root:
a bare `/v1/*` request that carries `anthropic-version` or an Anthropic-shaped key
is Anthropic's, whatever its path (`/v1/models` and `/v1/files` exist on both).

The gateway here has two upstreams, two mock servers, so a test can tell which
provider each call reached and with which key."""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anthropic
import httpx
import openai
import pytest

from tests.conftest import FAKE_ANTHROPIC_KEY, FAKE_OPENAI_KEY
from tests.ledger_support import Tenant, make_tenant, stored
from tests.support import Gateway, MockServer, set_provider_key

WORKSPACE_ANTHROPIC_KEY = "sk-ant-api03-wsKey7Qm2Zt9Lx4Rb8Nc1Vd6Hf3Jk0Pq5Sw"
WORKSPACE_OPENAI_KEY = "sk-proj-wsKey4Hn8Cz1Xv5Bm9Lq2Wr6Ty3Ui7Op0As"


@pytest.fixture(scope="module")
def anthropic_mock() -> Iterator[MockServer]:
    server = MockServer()
    yield server
    server.close()


@pytest.fixture(scope="module")
def gateway2(
    mock: MockServer, anthropic_mock: MockServer, workdir: Path, db_env: dict[str, str]
) -> Iterator[Gateway]:
    """A gateway whose OpenAI upstream is `mock` and Anthropic upstream `anthropic_mock`."""
    gw = Gateway(
        {
            **db_env,
            "RECOVEA_UPSTREAM_OPENAI": mock.url,
            "RECOVEA_UPSTREAM_ANTHROPIC": anthropic_mock.url,
            "RECOVEA_UPSTREAM_OPENROUTER": f"{mock.url}/api",
        },
        workdir,
    )
    yield gw
    gw.stop()


@pytest.fixture(scope="module")
def tenant(db_env: dict[str, str]) -> Tenant:
    made = make_tenant(db_env, "anthropic-routing")
    set_provider_key(db_env, made.workspace, "anthropic", WORKSPACE_ANTHROPIC_KEY)
    set_provider_key(db_env, made.workspace, "openai", WORKSPACE_OPENAI_KEY)
    return made


@pytest.fixture
def seen(mock: MockServer, anthropic_mock: MockServer) -> Iterator[dict[str, MockServer]]:
    mock.clear()
    anthropic_mock.clear()
    yield {"openai": mock, "anthropic": anthropic_mock}


def _credential(entry: dict[str, Any]) -> str:
    headers = entry["headers"]
    return str(headers.get("x-api-key") or headers.get("authorization", "").removeprefix("Bearer "))


def _reached(seen: dict[str, MockServer]) -> list[tuple[str, str, str, str]]:
    """(provider, method, path, credential) of every request the upstreams received."""
    return [
        (provider, entry["method"], entry["path"], _credential(entry))
        for provider, server in seen.items()
        for entry in server.requests()
    ]


def test_every_anthropic_sdk_endpoint_reaches_anthropic_with_the_callers_key(
    gateway2: Gateway, seen: dict[str, MockServer]
) -> None:
    """Passthrough: messages, count_tokens, batches, models and files, called through
    the official SDK at the gateway root, all reach Anthropic with the caller's own
    key, in Anthropic's objects; nothing reaches OpenAI."""
    with anthropic.Anthropic(
        base_url=gateway2.url, api_key=FAKE_ANTHROPIC_KEY, max_retries=0
    ) as client:
        message = client.messages.create(
            model="claude-haiku-4-5",
            max_tokens=16,
            messages=[{"role": "user", "content": "route-me"}],
        )
        assert message.type == "message"
        counted = client.messages.count_tokens(
            model="claude-haiku-4-5", messages=[{"role": "user", "content": "count"}]
        )
        assert counted.input_tokens > 0
        batch = client.messages.batches.create(
            requests=[
                {
                    "custom_id": "one",
                    "params": {
                        "model": "claude-haiku-4-5",
                        "max_tokens": 8,
                        "messages": [{"role": "user", "content": "batched"}],
                    },
                }
            ]
        )
        assert batch.id.startswith("msgbatch_")
        assert client.messages.batches.retrieve(batch.id).id == batch.id
        assert [b.type for b in client.messages.batches.list()] == ["message_batch"]
        models = client.models.list()
        assert models.data and all(m.type == "model" for m in models.data)
        assert client.models.retrieve("claude-haiku-4-5").id == "claude-haiku-4-5"
        uploaded = client.beta.files.upload(
            file=("notes.txt", io.BytesIO(b"anthropic file body"), "text/plain")
        )
        assert uploaded.type == "file" and uploaded.size_bytes == len(b"anthropic file body")
        assert [f.id for f in client.beta.files.list()] == [uploaded.id]
        assert client.beta.files.retrieve_metadata(uploaded.id).filename == "notes.txt"
        client.beta.files.delete(uploaded.id)

    reached = _reached(seen)
    assert {provider for provider, *_ in reached} == {"anthropic"}
    assert {credential for *_, credential in reached} == {FAKE_ANTHROPIC_KEY}
    paths = [(method, path) for _, method, path, _ in reached]
    assert paths == [
        ("POST", "/v1/messages"),
        ("POST", "/v1/messages/count_tokens"),
        ("POST", "/v1/messages/batches"),
        ("GET", f"/v1/messages/batches/{batch.id}"),
        ("GET", "/v1/messages/batches"),
        ("GET", "/v1/models"),
        ("GET", "/v1/models/claude-haiku-4-5"),
        ("POST", "/v1/files"),
        ("GET", "/v1/files"),
        ("GET", f"/v1/files/{uploaded.id}"),
        ("DELETE", f"/v1/files/{uploaded.id}"),
    ]


def test_an_rcv_key_on_an_anthropic_call_uses_the_workspaces_anthropic_key(
    gateway2: Gateway, tenant: Tenant, seen: dict[str, MockServer]
) -> None:
    """With an rcv_ key, `models.list` is fetched with the workspace's Anthropic key from
    Anthropic, and its row says so."""
    with anthropic.Anthropic(base_url=gateway2.url, api_key=tenant.key, max_retries=0) as client:
        raw = client.models.with_raw_response.list()
        assert all(m.type == "model" for m in raw.parse().data)
        listing = client.beta.files.list()
        assert listing.data == []
    assert _reached(seen) == [
        ("anthropic", "GET", "/v1/models", WORKSPACE_ANTHROPIC_KEY),
        ("anthropic", "GET", "/v1/files", WORKSPACE_ANTHROPIC_KEY),
    ]
    request_id = raw.headers["x-request-id"]
    row = stored(gateway2, tenant, "requests", request_id)
    assert (row["provider"], row["customer_id"]) == ("anthropic", tenant.workspace)
    logged = gateway2.record(request_id)
    assert (logged["provider"], logged["route"]) == ("anthropic", "/v1/models")


@pytest.mark.parametrize(
    "headers",
    [
        {"x-api-key": FAKE_ANTHROPIC_KEY},
        {"authorization": f"Bearer {FAKE_ANTHROPIC_KEY}"},
        {"authorization": f"bearer  {FAKE_ANTHROPIC_KEY}"},
        {"authorization": f"Bearer {FAKE_OPENAI_KEY}", "anthropic-version": "2023-06-01"},
    ],
    ids=["x-api-key", "bearer", "bearer-any-case", "anthropic-version"],
)
def test_an_anthropic_key_shape_or_version_header_alone_routes_to_anthropic(
    gateway2: Gateway, seen: dict[str, MockServer], headers: dict[str, str]
) -> None:
    """Either sign is enough, on a path OpenAI also has."""
    response = httpx.get(f"{gateway2.url}/v1/models", headers=headers)
    assert response.status_code == 200
    [(provider, _, path, _)] = _reached(seen)
    assert (provider, path) == ("anthropic", "/v1/models")


def test_openai_calls_stay_with_openai(
    gateway2: Gateway, tenant: Tenant, seen: dict[str, MockServer]
) -> None:
    """The OpenAI SDK (no anthropic-version, an OpenAI or rcv_ key) still reaches
    OpenAI on the same paths, with the workspace's OpenAI key."""
    with openai.OpenAI(base_url=f"{gateway2.url}/v1", api_key=tenant.key, max_retries=0) as client:
        assert [m.object for m in client.models.list().data][:1] == ["model"]
        uploaded = client.files.create(file=("a.jsonl", b"{}\n"), purpose="batch")
        assert uploaded.object == "file"
    assert _reached(seen) == [
        ("openai", "GET", "/v1/models", WORKSPACE_OPENAI_KEY),
        ("openai", "POST", "/v1/files", WORKSPACE_OPENAI_KEY),
    ]


def test_an_explicit_provider_prefix_is_never_rerouted(
    gateway2: Gateway, seen: dict[str, MockServer]
) -> None:
    """`/openai/v1/*` is OpenAI's even with Anthropic's header (and `/anthropic/v1/*`
    Anthropic's without it)."""
    response = httpx.get(
        f"{gateway2.url}/openai/v1/models",
        headers={"authorization": f"Bearer {FAKE_OPENAI_KEY}", "anthropic-version": "2023-06-01"},
    )
    assert response.status_code == 200
    response = httpx.get(
        f"{gateway2.url}/anthropic/v1/models", headers={"x-api-key": FAKE_ANTHROPIC_KEY}
    )
    assert response.status_code == 200
    assert [(p, path) for p, _, path, _ in _reached(seen)] == [
        ("openai", "/v1/models"),
        ("anthropic", "/v1/models"),
    ]


def test_a_refusal_on_a_rerouted_path_is_in_anthropics_shape(gateway2: Gateway) -> None:
    """A bad rcv_ key on an Anthropic `/v1/models` call gets Anthropic's error shape."""
    response = httpx.get(
        f"{gateway2.url}/v1/models",
        headers={"x-api-key": "rcv_live_" + "x" * 40, "anthropic-version": "2023-06-01"},
    )
    assert response.status_code == 401
    body = response.json()
    assert body["type"] == "error" and body["error"]["type"] == "authentication_error"
