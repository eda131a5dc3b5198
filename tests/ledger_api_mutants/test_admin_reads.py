"""The admin API's reads, scoped by the code alone: keys and provider keys of the caller's
workspace only (last four characters), members refused (and documented so); on the
gateway's own role each read also sets the scope row-level security reads; an
unreachable database is 503 everywhere.

Written while reviewing the surviving mutants of `make mutate`
(mutation-survivors.md); each test states the behaviour a user would notice.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime

import asyncpg
import httpx
import pytest

from recovea_proxy.meter.receipt_keys import PublishedKeys
from recovea_proxy.openapi import document
from tests.ledger_api_mutants.support import (
    Ledger,
    World,
    _app,
    get,
    routes,
)
from tests.support import free_port

pytestmark = pytest.mark.asyncio(loop_scope="module")

# --- the admin API's reads ------------------------------------------------------------


async def test_the_workspace_read_is_the_callers_own(ledger: Ledger) -> None:
    """GET /admin/v1/workspace describes the caller's workspace, whichever exists."""
    for tenant in (ledger.mine, ledger.theirs):
        body = (await get(ledger, "/admin/v1/workspace", tenant)).json()
        assert body["id"] == tenant.id
        assert body["plan"] == "free"
        assert datetime.fromisoformat(body["created_at"]) <= datetime.now(UTC)


async def test_the_key_list_is_the_callers_own_without_secrets(ledger: Ledger) -> None:
    """GET /admin/v1/keys lists the workspace's keys (project and team by name, last
    four characters only), none of another workspace."""
    body = (await get(ledger, "/admin/v1/keys")).json()
    ids = {key["id"] for key in body["data"]}
    assert ids == {ledger.mine.admin.id, ledger.mine.member.id}
    member = next(key for key in body["data"] if key["id"] == ledger.mine.member.id)
    assert (member["role"], member["project"], member["team"], member["revoked_at"]) == (
        "member",
        "web",
        None,
        None,
    )
    assert member["last_four"] == ledger.mine.member.secret[-4:]
    assert ledger.mine.member.secret not in str(body)


async def test_the_provider_key_list_is_the_callers_own(ledger: Ledger) -> None:
    """GET /admin/v1/provider-keys lists the workspace's provider keys (last four
    characters only), none of another workspace."""
    body = (await get(ledger, "/admin/v1/provider-keys")).json()
    assert [(k["provider"], k["last_four"]) for k in body["data"]] == [("openai", "6789")]
    assert "sk-mine" not in str(body)


async def test_the_admin_reads_need_an_admin_key(ledger: Ledger) -> None:
    """A member key on an admin route is 403 `forbidden`; no key is 401."""
    member = await get(ledger, "/admin/v1/keys", role="member")
    assert (member.status_code, member.json()["error"]["code"]) == (403, "forbidden")
    assert member.json()["error"]["message"] == "This route needs an admin key."
    assert member.headers["content-type"] == "application/json"
    anonymous = await ledger.client.get("/admin/v1/keys")
    assert (anonymous.status_code, anonymous.json()["error"]["code"]) == (401, "invalid_api_key")
    ledger_anonymous = await ledger.client.get("/v1/recovea/ledger")
    assert ledger_anonymous.status_code == 401


async def test_only_the_admin_routes_are_documented_as_admin_only() -> None:
    """In `/openapi.json`, each admin route says it needs an admin key and may answer
    403; a ledger read, open to any key of the workspace, says neither."""
    for path, operations in document(routes())["paths"].items():
        for method, operation in operations.items():
            admin_only = path.startswith("/admin/")
            assert ("403" in operation["responses"]) is admin_only, (method, path)
            assert ("description" in operation) is admin_only, (method, path)
            if admin_only:
                assert operation["description"] == (
                    "Admin keys only (member keys get 403 `forbidden`)."
                )


async def test_the_receipt_keys_are_published_without_auth(ledger: Ledger) -> None:
    """The receipt public keys need no key and may be cached for five minutes."""
    answer = await ledger.client.get("/.well-known/recovea-receipt-keys")
    assert answer.status_code == 200
    assert answer.headers["cache-control"] == "public, max-age=300"
    assert answer.headers["content-type"] == "application/json"
    assert answer.json()["keys"]


async def test_revoking_another_workspaces_key_is_not_found(ledger: Ledger) -> None:
    """An admin key cannot revoke a key of another workspace (404), with row-level
    security out of the way; its own member key it can."""
    theirs = await ledger.client.delete(
        f"/admin/v1/keys/{ledger.theirs.member.id}", headers=ledger.mine.auth()
    )
    assert theirs.status_code == 404
    still = await get(ledger, "/v1/recovea/ledger", ledger.theirs, role="member")
    assert still.status_code == 200


async def test_with_row_level_security_on_each_read_is_the_callers_own(
    world: World, secured: httpx.AsyncClient
) -> None:
    """On the gateway's own role, bound by row-level security, every read still answers
    the caller's rows: each one scopes its transaction to the caller's workspace (a read
    left unscoped would find nothing at all)."""
    mine, headers = world.mine, world.mine.auth()
    described = (await secured.get("/admin/v1/workspace", headers=headers)).json()
    assert described["id"] == mine.id
    keys = (await secured.get("/admin/v1/keys", headers=headers)).json()["data"]
    assert {key["id"] for key in keys} == {mine.admin.id, mine.member.id}
    provider_keys = (await secured.get("/admin/v1/provider-keys", headers=headers)).json()
    assert [key["last_four"] for key in provider_keys["data"]] == ["6789"]
    row = await secured.get(f"/v1/recovea/requests/{mine.requests[0]}", headers=headers)
    assert row.json()["customer_id"] == mine.id
    receipt = await secured.get(f"/v1/recovea/receipts/{mine.requests[0]}", headers=headers)
    assert receipt.json()["chain"] == mine.chain
    chains = (await secured.get("/v1/recovea/ledger", headers=headers)).json()["data"]
    assert [chain["chain"] for chain in chains] == [mine.chain]
    page = (await secured.get(f"/v1/recovea/ledger?chain={mine.chain}", headers=headers)).json()
    assert [receipt["seq"] for receipt in page["receipts"]] == [1, 2, 3, 4]
    usage = (await secured.get("/v1/recovea/usage", headers=headers)).json()
    assert usage["totals"]["requests"] == 4
    theirs = await secured.get(f"/v1/recovea/requests/{world.theirs.requests[0]}", headers=headers)
    assert theirs.status_code == 404


async def test_an_unreachable_database_is_a_503_store_unavailable(world: World) -> None:
    """With the database out of reach, every ledger and admin route answers 503
    `store_unavailable` in the OpenAI error shape (never a 500 or a hang), and the
    receipt keys route, whose document was never loaded, 503 `store_unavailable` too."""
    dead = await asyncpg.create_pool(
        f"postgresql://recovea@127.0.0.1:{free_port()}/recovea", min_size=0, max_size=1
    )
    try:
        runtime = replace(world.runtime, pool=dead, published_keys=PublishedKeys(dead))
        transport = httpx.ASGITransport(app=_app(runtime))
        async with httpx.AsyncClient(transport=transport, base_url="http://gateway") as client:
            headers = world.mine.auth()
            request_id = world.mine.requests[0]
            for path in (
                f"/v1/recovea/requests/{request_id}",
                f"/v1/recovea/receipts/{request_id}",
                "/v1/recovea/ledger",
                f"/v1/recovea/ledger?chain={world.mine.chain}",
                "/v1/recovea/usage",
                "/admin/v1/workspace",
                "/admin/v1/keys",
                "/admin/v1/provider-keys",
            ):
                answer = await client.get(path, headers=headers)
                assert answer.status_code == 503, path
                assert answer.headers["content-type"] == "application/json"
                assert answer.json() == {
                    "error": {
                        "message": "The database is unreachable.",
                        "type": "api_error",
                        "param": None,
                        "code": "store_unavailable",
                    }
                }
            keys = await client.get("/.well-known/recovea-receipt-keys")
            assert keys.status_code == 503
            assert keys.headers["content-type"] == "application/json"
            assert keys.json() == {
                "error": {"message": "The key store is unreachable.", "code": "store_unavailable"}
            }
    finally:
        await dead.close()
