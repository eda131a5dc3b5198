"""A provider key is bound to its row: a ciphertext copied from one workspace's row into
another's (by someone with the owner role, or a bad migration) fails to open, and the
request is refused with 503 `auth_unavailable`; the other tenant's secret is never
sent upstream on its behalf."""

from __future__ import annotations

import secrets
import uuid
from collections.abc import Callable
from dataclasses import dataclass

import httpx
import orjson

from tests.ledger_support import owner_query
from tests.support import Gateway, MockServer, Postgres, cli_json, set_provider_key, wait_until

CHAT = orjson.dumps({"model": "gpt-4o", "messages": [{"role": "user", "content": "x"}]})
SEALED_COLUMNS = ("ciphertext", "nonce", "wrapped_data_key", "master_key_id", "backend")


@dataclass(frozen=True)
class Workspace:
    """A workspace with one rcv_ key and an OpenAI key of its own."""

    id: str
    rcv_key: str
    provider_key: str


def workspace_with_openai_key(env: dict[str, str], name: str) -> Workspace:
    workspace = cli_json("workspace", "create", name, env=env)["workspace_id"]
    rcv_key = cli_json("key", "create", "--workspace", workspace, env=env)["key"]
    provider_key = f"sk-binding-{name}-{secrets.token_hex(12)}"
    set_provider_key(env, workspace, "openai", provider_key)
    return Workspace(workspace, rcv_key, provider_key)


def copy_sealed_row(url: str, source: Workspace, target: Workspace) -> None:
    """As the database owner, overwrite the target's sealed OpenAI key with the source's
    (every sealed field; the target row keeps its own id and workspace)."""
    assignments = ", ".join(f"{c} = src.{c}" for c in SEALED_COLUMNS)
    owner_query(
        url,
        f"UPDATE recovea.provider_keys AS dst SET {assignments}"
        " FROM recovea.provider_keys AS src"
        " WHERE src.customer_id = $1 AND src.provider = 'openai'"
        " AND dst.customer_id = $2 AND dst.provider = 'openai'",
        uuid.UUID(source.id),
        uuid.UUID(target.id),
    )
    rows = owner_query(
        url,
        f"SELECT {', '.join(SEALED_COLUMNS)} FROM recovea.provider_keys"
        " WHERE provider = 'openai' AND customer_id = ANY($1::uuid[])",
        [uuid.UUID(source.id), uuid.UUID(target.id)],
    )
    assert len(rows) == 2 and rows[0] == rows[1], "the copy did not take"


def chat(gateway: Gateway, workspace: Workspace, probe: str) -> httpx.Response:
    """One chat completion on the workspace's rcv_ key, tagged so the mock's journal
    can tell which request it received."""
    return httpx.post(
        f"{gateway.url}/v1/chat/completions",
        content=CHAT,
        headers={"authorization": f"Bearer {workspace.rcv_key}", "x-binding-probe": probe},
    )


def received(mock: MockServer, probe: str) -> list[str]:
    """The authorization headers the mock received on requests tagged `probe`."""
    return [
        entry["headers"].get("authorization", "")
        for entry in mock.requests()
        if entry["headers"].get("x-binding-probe") == probe
    ]


def test_a_provider_key_copied_into_another_workspace_is_refused_not_served(
    postgres: Postgres,
    db_env: dict[str, str],
    mock: MockServer,
    start_gateway: Callable[..., Gateway],
) -> None:
    """Workspace A's sealed OpenAI key copied over B's row does not open for B: B's
    request gets 503 auth_unavailable and never reaches the provider, while A's own
    request still goes out on A's key."""
    a = workspace_with_openai_key(db_env, "binding-a")
    b = workspace_with_openai_key(db_env, "binding-b")
    assert a.provider_key != b.provider_key

    copy_sealed_row(postgres.url, source=a, target=b)
    # A gateway of its own: no provider key or data key cached from before the copy.
    gateway = start_gateway()

    probe_b = secrets.token_hex(8)
    refused = chat(gateway, b, probe_b)
    assert 503 == refused.status_code
    assert "auth_unavailable" == refused.json()["error"]["code"]
    assert [] == received(mock, probe_b)

    probe_a = secrets.token_hex(8)
    served = chat(gateway, a, probe_a)
    assert 200 == served.status_code
    assert [f"Bearer {a.provider_key}"] == received(mock, probe_a)


def test_a_copied_row_is_refused_also_when_the_data_key_was_cached(
    postgres: Postgres,
    db_env: dict[str, str],
    mock: MockServer,
    start_gateway: Callable[..., Gateway],
) -> None:
    """A gateway that served B before the copy (B's data key cached) answers B with 503
    auth_unavailable once its cached row expires: still never A's secret upstream."""
    a = workspace_with_openai_key(db_env, "binding-cached-a")
    b = workspace_with_openai_key(db_env, "binding-cached-b")
    gateway = start_gateway(RECOVEA_KEY_CACHE_TTL_S="0.2")
    probe_b = secrets.token_hex(8)
    assert 200 == chat(gateway, b, probe_b).status_code
    assert [f"Bearer {b.provider_key}"] == received(mock, probe_b)

    copy_sealed_row(postgres.url, source=a, target=b)

    def refused() -> httpx.Response | None:
        response = chat(gateway, b, probe_b)
        return None if response.status_code == 200 else response

    response: httpx.Response = wait_until(refused, what="the copied row to be read")
    assert all(line == f"Bearer {b.provider_key}" for line in received(mock, probe_b))
    assert 503 == response.status_code
    assert "auth_unavailable" == response.json()["error"]["code"]
