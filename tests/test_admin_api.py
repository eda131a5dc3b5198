"""The management API: admin keys manage their own workspace, member keys get 403,
bad input gets a clear 4xx, and secrets appear once."""

from __future__ import annotations

import asyncio
from typing import Any

import asyncpg
import httpx
import orjson
import pytest

from tests.support import Gateway, cli, cli_json


@pytest.fixture(scope="module")
def admin_setup(db_env: dict[str, str]) -> dict[str, Any]:
    workspace = cli_json("workspace", "create", "admin-api", env=db_env)["workspace_id"]
    admin = cli_json("key", "create", "--workspace", workspace, "--role", "admin", env=db_env)
    member = cli_json("key", "create", "--workspace", workspace, env=db_env)
    other = cli_json("workspace", "create", "admin-api-other", env=db_env)["workspace_id"]
    other_key = cli_json("key", "create", "--workspace", other, env=db_env)
    return {"workspace": workspace, "admin": admin, "member": member, "other_key": other_key}


def call(gateway: Gateway, key: str, method: str, path: str, **kwargs: Any) -> httpx.Response:
    return httpx.request(
        method,
        f"{gateway.url}/admin/v1{path}",
        headers={"authorization": f"Bearer {key}"},
        **kwargs,
    )


def test_member_keys_are_forbidden(gateway: Gateway, admin_setup: dict[str, Any]) -> None:
    """A member key gets 403 forbidden on every admin route."""
    member = admin_setup["member"]["key"]
    for method, path in (("GET", "/keys"), ("POST", "/keys"), ("GET", "/workspace")):
        response = call(gateway, member, method, path, json={})
        assert response.status_code == 403, (method, path)
        assert response.json()["error"]["code"] == "forbidden"


def test_no_or_unknown_key_is_401(gateway: Gateway) -> None:
    """Without a valid rcv_ key the admin API answers 401."""
    assert httpx.get(f"{gateway.url}/admin/v1/keys").status_code == 401
    assert call(gateway, "rcv_live_" + "Z" * 43, "GET", "/keys").status_code == 401


def test_admin_creates_lists_and_revokes_keys(
    gateway: Gateway, admin_setup: dict[str, Any]
) -> None:
    """A created key is shown once; listings show only its last four; revoke works."""
    admin = admin_setup["admin"]["key"]
    created = call(gateway, admin, "POST", "/keys", json={"env": "test", "project": "billing"})
    assert created.status_code == 201, created.text
    secret = created.json()["key"]
    assert secret.startswith("rcv_test_")
    listing = call(gateway, admin, "GET", "/keys")
    assert listing.status_code == 200
    assert secret not in listing.text
    entry = next(k for k in listing.json()["data"] if k["id"] == created.json()["id"])
    assert entry["last_four"] == secret[-4:]
    assert entry["project"] == "billing"
    revoked = call(gateway, admin, "DELETE", f"/keys/{created.json()['id']}")
    assert revoked.status_code == 200
    assert call(gateway, admin, "DELETE", f"/keys/{created.json()['id']}").status_code == 404


def test_admin_cannot_touch_another_workspace(
    gateway: Gateway, admin_setup: dict[str, Any]
) -> None:
    """Another workspace's key id is a 404, and its keys never show up in a listing."""
    admin = admin_setup["admin"]["key"]
    other_id = admin_setup["other_key"]["key_id"]
    assert call(gateway, admin, "DELETE", f"/keys/{other_id}").status_code == 404
    ids = {k["id"] for k in call(gateway, admin, "GET", "/keys").json()["data"]}
    assert other_id not in ids


def test_provider_keys_are_set_and_listed_by_last_four(
    gateway: Gateway, admin_setup: dict[str, Any]
) -> None:
    """PUT stores a provider key; GET lists it by its last four characters only."""
    admin = admin_setup["admin"]["key"]
    secret = "sk-ant-api03-AdminApiStoredKey-QRST"
    stored = call(gateway, admin, "PUT", "/provider-keys/anthropic", json={"key": secret})
    assert stored.status_code == 200, stored.text
    listing = call(gateway, admin, "GET", "/provider-keys")
    assert secret not in listing.text
    assert {"provider": "anthropic", "last_four": "QRST"}.items() <= listing.json()["data"][
        0
    ].items()
    assert "AdminApiStoredKey" not in gateway.log_text()


@pytest.mark.parametrize(
    ("method", "path", "kwargs", "status"),
    [
        ("POST", "/keys", {"content": b"not json"}, 400),
        ("POST", "/keys", {"json": {"role": "root"}}, 400),
        ("POST", "/keys", {"json": {"surprise": "x"}}, 400),
        ("POST", "/keys", {"json": {"project": "p" * 101}}, 400),
        ("POST", "/keys", {"json": {"env": 5}}, 400),
        ("POST", "/keys", {"content": b"{" + b" " * 70_000 + b"}"}, 413),
        ("DELETE", "/keys/not-a-uuid", {}, 400),
        ("PUT", "/provider-keys/azure", {"json": {"key": "sk-xxxxxxxxxxxx"}}, 404),
        ("PUT", "/provider-keys/openai", {"json": {"key": "short"}}, 400),
        ("POST", "/workspaces", {"json": {"name": "nope"}}, 403),
    ],
)
def test_bad_input_gets_a_clear_4xx(
    gateway: Gateway,
    admin_setup: dict[str, Any],
    method: str,
    path: str,
    kwargs: dict[str, Any],
    status: int,
) -> None:
    """Malformed bodies, bad ids, unknown providers and oversized names are refused."""
    admin = admin_setup["admin"]["key"]
    before = call(gateway, admin, "GET", "/keys").json()["data"]
    response = call(gateway, admin, method, path, **kwargs)
    assert response.status_code == status, response.text
    assert response.json()["error"]["message"]
    assert call(gateway, admin, "GET", "/keys").json()["data"] == before, "nothing half-written"


def test_operator_creates_workspaces(gateway: Gateway, db_env: dict[str, str]) -> None:
    """The `default` workspace's admin creates a workspace and gets its first admin key."""
    first_run = cli("init", "--json", env=db_env)
    if first_run.returncode == 0:
        operator = orjson.loads(first_run.stdout)["key"]
    else:
        default = _default_id(db_env)
        operator = cli_json("key", "create", "--workspace", default, "--role", "admin", env=db_env)[
            "key"
        ]
    created = call(
        gateway, operator, "POST", "/workspaces", json={"name": "via-api", "plan": "pro"}
    )
    assert created.status_code == 201, created.text
    new_admin = created.json()["admin_key"]
    me = call(gateway, new_admin, "GET", "/workspace").json()
    assert (me["name"], me["plan"], me["id"]) == ("via-api", "pro", created.json()["id"])
    duplicate = call(gateway, operator, "POST", "/workspaces", json={"name": "via-api"})
    assert duplicate.status_code == 400


def _default_id(env: dict[str, str]) -> str:
    async def fetch() -> str:
        conn = await asyncpg.connect(env["RECOVEA_DATABASE_URL"])
        try:
            return str(
                await conn.fetchval(
                    "SELECT customer_id FROM recovea.workspaces WHERE name = 'default'"
                )
            )
        finally:
            await conn.close()

    return asyncio.run(fetch())


def test_chunked_oversized_body_is_cut_off(gateway: Gateway, admin_setup: dict[str, Any]) -> None:
    """A body without a length that grows past 64 KB is refused with 413 as it streams."""

    def chunks() -> Any:
        for _ in range(100):
            yield b" " * 1024

    response = call(gateway, admin_setup["admin"]["key"], "POST", "/keys", content=chunks())
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "request_too_large"
