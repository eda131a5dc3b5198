"""The code scopes every read to the caller's workspace on its own, without row-level
security behind it: in a database where the gateway's role bypasses RLS, workspace A's
keys ask every ledger and admin path for workspace B's ids and data, and find only A's.

Tenancy has two lines of defence (DESIGN.md, Tenancy): each query names the caller's
`customer_id`, and Postgres RLS (FORCEd, on a role that owns no table) returns zero
rows for a mis-scoped query. With both in place a query that forgets its scope still
answers correctly, so no test could tell the first line was gone. Here the second is
taken away — `ALTER ROLE recovea_app BYPASSRLS`, the most direct way: the policies and
FORCE stay as they are and the role simply skips them, on every table at once, and the
gateway (started afterwards, so every connection of its pool is made under the new
role attribute) runs unchanged. `tests/test_tenancy.py` proves the backstop alone;
this module proves the first line alone.

One database, one gateway and one set of data for the module: workspace B is made
first (so its provider keys lie first in the table, where a query that forgot its
workspace would find them), then A; both send traffic through the gateway and are
rolled up, and each has a price override of its own.
"""

from __future__ import annotations

import asyncio
import shutil
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest

from recovea_proxy.store.database import APP_ROLE
from tests.conftest import FAKE_ANTHROPIC_KEY, FAKE_OPENAI_KEY, upstream_env
from tests.ledger_support import Tenant, make_tenant, owner_query, stored
from tests.support import Gateway, MockServer, Postgres, cli_json, set_provider_key

#: A's OpenAI key differs from B's (the fixed test key), so the upstream shows whose was used
A_OPENAI_KEY = "sk-test-scope-a-Lw7Qe2Rt9Yu4Io1Pa6Sd3Fg8Hj5Kz0X"
B_OPENROUTER_KEY = "sk-or-test-scope-b-Vn4Bm7Xc1Zq9Wr3Et6Yu2Io8Pa5Sd0F"
#: every table of customer data the read paths below touch
TABLES = (
    "workspaces",
    "projects",
    "teams",
    "rcv_keys",
    "provider_keys",
    "request_events",
    "receipts",
    "routes",
    "usage_rollups",
    "model_prices",
)
PRICE = {"input": "1", "cached_input": "0.5", "output": "2"}
TOKENS = {"x-mock-input-tokens": "100", "x-mock-cached-tokens": "0", "x-mock-output-tokens": "10"}
#: A's usage as every grouping must show it: its two gpt-4o calls, nothing of B's
A_USAGE = {
    "feature": {"a-feature": 2},
    "model": {"gpt-4o": 2},
    "realized_model": {"gpt-4o": 2},
    "end_user": {"a-user": 2},
    "project": {"a-project": 2},
    "team": {"a-team": 2},
    "route": {"openai /v1/chat/completions": 2},
    "provider": {"openai": 2},
}


@dataclass
class Side:
    """One workspace: a member key (in a project and a team), an admin key, and what
    its traffic left in the ledger."""

    workspace: str
    member: Tenant
    admin: Tenant
    request_ids: list[str] = field(default_factory=list)
    chains: set[str] = field(default_factory=set)

    @property
    def keys(self) -> tuple[Tenant, Tenant]:
        return (self.member, self.admin)


@dataclass
class World:
    """The module's database (RLS bypassed for the app role), gateway and workspaces."""

    postgres: Postgres
    env: dict[str, str]
    gateway: Gateway
    a: Side
    b: Side

    def get(self, key: Tenant, path: str, **params: str) -> httpx.Response:
        return httpx.get(f"{self.gateway.url}{path}", params=params, headers=key.bearer)

    def owner(self, sql: str, *args: Any) -> list[asyncpg.Record]:
        return owner_query(self.postgres.url, sql, *args)


def side(env: dict[str, str], name: str) -> Side:
    member = make_tenant(env, f"scope-{name}", project=f"{name}-project", team=f"{name}-team")
    created = cli_json("key", "create", "--workspace", member.workspace, "--role", "admin", env=env)
    admin = Tenant(member.workspace, created["key"], created["key_id"])
    return Side(member.workspace, member, admin)


def call(gateway: Gateway, key: Tenant, path: str, model: str, marker: str, tag: str) -> str:
    """One request through the gateway, tagged with the workspace's feature and end
    user; its request id."""
    body: dict[str, Any] = {"model": model, "messages": [{"role": "user", "content": marker}]}
    if path == "/v1/messages":
        body["max_tokens"] = 50
    response = httpx.post(
        f"{gateway.url}{path}",
        json=body,
        headers={
            **key.bearer,
            **TOKENS,
            **({"anthropic-version": "2023-06-01"} if path == "/v1/messages" else {}),
            "x-recovea-feature": f"{tag}-feature",
            "x-recovea-customer": f"{tag}-user",
        },
        timeout=30,
    )
    assert response.status_code == 200, response.text
    return response.headers["x-request-id"]


def assert_not_found(response: httpx.Response) -> None:
    assert response.status_code == 404, response.text
    assert response.json()["error"]["code"] == "not_found"


def set_price(gateway: Gateway, key: Tenant, model: str) -> None:
    response = httpx.put(f"{gateway.url}/admin/v1/prices/{model}", json=PRICE, headers=key.bearer)
    assert response.status_code == 200, response.text


@pytest.fixture(scope="module")
def world(mock: MockServer, workdir: Path) -> Iterator[World]:
    """A database of the module's own in which the app role bypasses RLS, a gateway
    started after that, and two workspaces with traffic, receipts, routes, rollups and
    price overrides."""
    postgres = Postgres()
    env = {
        "RECOVEA_DATABASE_URL": postgres.url,
        "RECOVEA_MASTER_KEY_FILE": str(workdir / "scope-master.key"),
    }
    gateway: Gateway | None = None
    try:
        cli_json("migrate", env=env)
        owner_query(postgres.url, f"ALTER ROLE {APP_ROLE} BYPASSRLS")
        b = side(env, "b")
        a = side(env, "a")
        set_provider_key(env, a.workspace, "openai", A_OPENAI_KEY)
        set_provider_key(env, b.workspace, "openrouter", B_OPENROUTER_KEY)
        gateway = Gateway({**upstream_env(mock), **env}, workdir)
        a.request_ids = [
            call(gateway, a.member, "/v1/chat/completions", "gpt-4o", "scope marker A", "a")
            for _ in range(2)
        ]
        b.request_ids = [
            call(gateway, b.member, "/v1/chat/completions", "gpt-4o-mini", "scope marker B", "b"),
            call(gateway, b.member, "/v1/messages", "claude-sonnet-4-5", "scope marker B", "b"),
        ]
        for s, name in ((a, "a"), (b, "b")):
            for request_id in s.request_ids:
                stored(gateway, s.member, "receipts", request_id)
            set_price(gateway, s.admin, f"{name}-house-model")
        cli_json("rollup", env=env)
        world = World(postgres, env, gateway, a, b)
        for s in (a, b):
            s.chains = {
                r["chain_id"]
                for r in world.owner(
                    "SELECT DISTINCT chain_id FROM recovea.receipts WHERE customer_id = $1",
                    uuid.UUID(s.workspace),
                )
            }
        assert a.chains and b.chains and not a.chains & b.chains
        yield world
    finally:
        if gateway is not None:
            gateway.stop()
        postgres.stop()
        shutil.rmtree(postgres.data_dir, ignore_errors=True)


def rows_of_other_workspace(world: World, table: str) -> int:
    """How many of B's rows the app role reads from `table` in A's scope."""

    async def count() -> int:
        conn = await asyncpg.connect(world.postgres.url.replace("postgres:@", f"{APP_ROLE}@", 1))
        try:
            assert await conn.fetchval("SELECT current_user") == APP_ROLE
            async with conn.transaction():
                await conn.execute(
                    "SELECT set_config('recovea.customer_id', $1, true)", world.a.workspace
                )
                found: int = await conn.fetchval(
                    f"SELECT count(*) FROM recovea.{table} WHERE customer_id = $1",
                    uuid.UUID(world.b.workspace),
                )
        finally:
            await conn.close()
        return found

    return asyncio.run(count())


def test_rls_is_out_of_the_way_in_this_database(world: World) -> None:
    """The premise: the gateway's role, scoped to A, reads B's rows in every table of
    customer data, so whatever keeps them from A below is the code's own filter."""
    assert {table: rows_of_other_workspace(world, table) > 0 for table in TABLES} == {
        table: True for table in TABLES
    }


def test_another_workspaces_request_is_not_found(world: World) -> None:
    """`GET /v1/recovea/requests/{id}` answers 404 for each of B's request ids, to A's
    member and admin keys alike, while A's own ids are found (and are A's)."""
    for key in world.a.keys:
        for request_id in world.b.request_ids:
            response = world.get(key, f"/v1/recovea/requests/{request_id}")
            assert_not_found(response)
        for request_id in world.a.request_ids:
            response = world.get(key, f"/v1/recovea/requests/{request_id}")
            assert response.status_code == 200, response.text
            assert response.json()["customer_id"] == world.a.workspace


def test_another_workspaces_receipt_is_not_found(world: World) -> None:
    """`GET /v1/recovea/receipts/{id}` answers 404 for each of B's request ids, to A's
    member and admin keys alike, while A's own receipts are found, on A's chains."""
    for key in world.a.keys:
        for request_id in world.b.request_ids:
            response = world.get(key, f"/v1/recovea/receipts/{request_id}")
            assert_not_found(response)
        for request_id in world.a.request_ids:
            response = world.get(key, f"/v1/recovea/receipts/{request_id}")
            assert response.status_code == 200, response.text
            assert response.json()["chain"] in world.a.chains


def test_the_ledger_lists_only_the_callers_chains(world: World) -> None:
    """`GET /v1/recovea/ledger` lists exactly A's chains, with A's receipt count."""
    for key in world.a.keys:
        response = world.get(key, "/v1/recovea/ledger")
        assert response.status_code == 200, response.text
        chains = response.json()["data"]
        assert {c["chain"] for c in chains} == world.a.chains
        assert sum(c["receipts"] for c in chains) == len(world.a.request_ids)


def test_another_workspaces_chain_reads_as_empty(world: World) -> None:
    """`GET /v1/recovea/ledger?chain=<B's chain>` is an empty chain to A: no receipts
    and no first or last seq."""
    for key in world.a.keys:
        for chain in world.b.chains:
            response = world.get(key, "/v1/recovea/ledger", chain=chain)
            assert response.status_code == 200, response.text
            page = response.json()
            assert (page["receipts"], page["first_seq"], page["last_seq"]) == ([], None, None)


@pytest.mark.parametrize("group_by", sorted(A_USAGE))
def test_usage_counts_only_the_callers_requests(world: World, group_by: str) -> None:
    """`GET /v1/recovea/usage` in every grouping counts A's two requests and none of
    B's: no key of B's, and totals that are A's alone."""
    for key in world.a.keys:
        response = world.get(key, "/v1/recovea/usage", group_by=group_by)
        assert response.status_code == 200, response.text
        usage = response.json()
        assert {row["key"]: row["requests"] for row in usage["data"]} == A_USAGE[group_by]
        assert usage["totals"]["requests"] == len(world.a.request_ids)


@pytest.mark.parametrize("group_by", ["key", "hour", "day"])
def test_usage_by_key_and_over_time_counts_only_the_callers_requests(
    world: World, group_by: str
) -> None:
    """`group_by=key|hour|day` counts A's two requests and none of B's; by key, only
    A's member key (the one that sent them) appears."""
    for key in world.a.keys:
        response = world.get(key, "/v1/recovea/usage", group_by=group_by)
        assert response.status_code == 200, response.text
        usage = response.json()
        assert sum(row["requests"] for row in usage["data"]) == len(world.a.request_ids)
        assert usage["totals"]["requests"] == len(world.a.request_ids)
        if group_by == "key":
            assert [row["key"] for row in usage["data"]] == [world.a.member.key_id]


def test_the_latest_requests_are_only_the_callers(world: World) -> None:
    """`GET /v1/recovea/requests` lists exactly A's rows, none of B's."""
    for key in world.a.keys:
        response = world.get(key, "/v1/recovea/requests")
        assert response.status_code == 200, response.text
        rows = response.json()["data"]
        assert {row["request_id"] for row in rows} == {
            uuid.UUID(i).hex for i in world.a.request_ids
        }
        assert {row["customer_id"] for row in rows} == {world.a.workspace}


def test_the_workspace_is_the_callers(world: World) -> None:
    """`GET /admin/v1/workspace` describes A's workspace."""
    response = world.get(world.a.admin, "/admin/v1/workspace")
    assert response.status_code == 200, response.text
    assert (response.json()["id"], response.json()["name"]) == (world.a.workspace, "scope-a")


def test_the_key_list_holds_only_the_callers_keys(world: World) -> None:
    """`GET /admin/v1/keys` lists exactly A's rcv_ keys (as the owner reads them),
    none of B's."""
    response = world.get(world.a.admin, "/admin/v1/keys")
    assert response.status_code == 200, response.text
    listed = {k["id"] for k in response.json()["data"]}
    owned = world.owner(
        "SELECT id::text FROM recovea.rcv_keys WHERE customer_id = $1", uuid.UUID(world.a.workspace)
    )
    assert listed == {r["id"] for r in owned}
    assert {world.b.member.key_id, world.b.admin.key_id}.isdisjoint(listed)


def test_the_provider_key_list_holds_only_the_callers_keys(world: World) -> None:
    """`GET /admin/v1/provider-keys` lists A's OpenAI and Anthropic keys (A's last
    four), not B's OpenRouter key."""
    response = world.get(world.a.admin, "/admin/v1/provider-keys")
    assert response.status_code == 200, response.text
    listed = {k["provider"]: k["last_four"] for k in response.json()["data"]}
    assert listed == {"anthropic": FAKE_ANTHROPIC_KEY[-4:], "openai": A_OPENAI_KEY[-4:]}


def test_the_price_list_shows_only_the_callers_overrides(world: World) -> None:
    """`GET /admin/v1/prices` marks A's override and does not show B's."""
    response = world.get(world.a.admin, "/admin/v1/prices")
    assert response.status_code == 200, response.text
    data = response.json()["data"]
    assert {model for model, price in data.items() if price["override"]} == {"a-house-model"}
    assert "b-house-model" not in data


def test_requests_go_out_on_the_callers_own_provider_key(world: World, mock: MockServer) -> None:
    """The provider key read on the hot path is the caller's: A's requests reached the
    provider with A's OpenAI key, B's with B's. (A load that forgot the workspace would
    find B's key first; the envelope's binding to the workspace then refuses to open
    it, so today that slip shows as a 503 in the fixture's traffic before this check.)"""
    seen = {
        (marker, r["headers"].get("authorization"))
        for r in mock.requests()
        if r["path"] == "/v1/chat/completions"
        and (marker := _first_content(r["body"])) in ("scope marker A", "scope marker B")
    }
    assert seen == {
        ("scope marker A", f"Bearer {A_OPENAI_KEY}"),
        ("scope marker B", f"Bearer {FAKE_OPENAI_KEY}"),
    }


def _first_content(body: object) -> str | None:
    """The first message's content of a recorded chat body (the shared mock also holds
    other tests' requests: bodies without messages, or with none)."""
    messages = body.get("messages") if isinstance(body, dict) else None
    if isinstance(messages, list) and messages and isinstance(messages[0], dict):
        content = messages[0].get("content")
        return content if isinstance(content, str) else None
    return None


def test_another_workspaces_key_cannot_be_revoked(world: World) -> None:
    """`DELETE /admin/v1/keys/{B's key id}` with A's admin key is a 404 and B's key
    stays active."""
    victim = cli_json("key", "create", "--workspace", world.b.workspace, env=world.env)["key_id"]
    response = httpx.delete(
        f"{world.gateway.url}/admin/v1/keys/{victim}", headers=world.a.admin.bearer
    )
    assert_not_found(response)
    [row] = world.owner("SELECT revoked_at FROM recovea.rcv_keys WHERE id = $1", uuid.UUID(victim))
    assert row["revoked_at"] is None


def test_another_workspaces_price_override_cannot_be_deleted(world: World) -> None:
    """`DELETE /admin/v1/prices/b-house-model` with A's admin key is a 404 and B's
    override stays."""
    response = httpx.delete(
        f"{world.gateway.url}/admin/v1/prices/b-house-model", headers=world.a.admin.bearer
    )
    assert_not_found(response)
    kept = world.owner(
        "SELECT model FROM recovea.model_prices WHERE customer_id = $1",
        uuid.UUID(world.b.workspace),
    )
    assert [r["model"] for r in kept] == ["b-house-model"]


def test_a_new_key_named_into_another_workspaces_project_gets_its_own(world: World) -> None:
    """`POST /admin/v1/keys` naming B's project and team gives A's new key a project and
    a team of A's own, never B's rows of that name."""
    response = httpx.post(
        f"{world.gateway.url}/admin/v1/keys",
        json={"project": "b-project", "team": "b-team"},
        headers=world.a.admin.bearer,
    )
    assert response.status_code == 201, response.text
    [row] = world.owner(
        "SELECT p.customer_id::text AS project_of, t.customer_id::text AS team_of"
        " FROM recovea.rcv_keys k JOIN recovea.projects p ON p.id = k.project_id"
        " JOIN recovea.teams t ON t.id = k.team_id WHERE k.id = $1",
        uuid.UUID(response.json()["id"]),
    )
    assert (row["project_of"], row["team_of"]) == (world.a.workspace, world.a.workspace)


def test_setting_retention_changes_only_the_callers_workspace(world: World) -> None:
    """`PATCH /admin/v1/workspace` with A's admin key sets A's retention and leaves
    B's as it was."""
    response = httpx.patch(
        f"{world.gateway.url}/admin/v1/workspace",
        json={"retention_days": 400},
        headers=world.a.admin.bearer,
    )
    assert response.status_code == 200, response.text
    rows = world.owner(
        "SELECT customer_id::text AS id, retention_days FROM recovea.workspaces"
        " WHERE customer_id = ANY($1::uuid[])",
        [uuid.UUID(world.a.workspace), uuid.UUID(world.b.workspace)],
    )
    assert {r["id"]: r["retention_days"] for r in rows} == {
        world.a.workspace: 400,
        world.b.workspace: None,
    }
