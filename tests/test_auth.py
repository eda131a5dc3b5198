"""rcv_ keys end to end: created with the CLI, resolved by the gateway, revoked,
refused when unknown, and fail-closed when the key store is down."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import httpx
import orjson
import pytest

from tests.support import Gateway, MockServer, Postgres, cli, cli_json, set_provider_key, wait_until

PROVIDER_SECRET = "sk-proj-Workspace0penAIKey9xQ7"
CHAT = orjson.dumps({"model": "gpt-4o", "messages": [{"role": "user", "content": "auth"}]})


def new_workspace(env: dict[str, str], name: str) -> str:
    workspace: str = cli_json("workspace", "create", name, env=env)["workspace_id"]
    set_provider_key(env, workspace, "openai", PROVIDER_SECRET)
    return workspace


def post(gateway: Gateway, key: str, path: str = "/v1/chat/completions") -> httpx.Response:
    return httpx.post(
        f"{gateway.url}{path}", content=CHAT, headers={"authorization": f"Bearer {key}"}
    )


def test_rcv_key_calls_upstream_with_the_workspace_key(
    gateway: Gateway, mock: MockServer, db_env: dict[str, str]
) -> None:
    """The rcv_ key is stripped; the provider sees the workspace's own key."""
    workspace = new_workspace(db_env, "auth-upstream")
    key = cli_json("key", "create", "--workspace", workspace, "--env", "test", env=db_env)
    assert key["key"].startswith("rcv_test_") and len(key["key"]) >= 9 + 43
    mock.clear()
    response = post(gateway, key["key"])
    assert response.status_code == 200, response.text
    seen = [r for r in mock.requests() if r["path"] == "/v1/chat/completions"][-1]["headers"]
    assert seen["authorization"] == f"Bearer {PROVIDER_SECRET}"
    assert key["key"] not in str(seen)
    record = gateway.record(response.headers["x-request-id"])
    assert record["customer_id"] == workspace
    assert record["rcv_key_id"] == key["key_id"]
    assert record["env"] == "test"


def test_anthropic_surface_gets_x_api_key(
    gateway: Gateway, mock: MockServer, db_env: dict[str, str]
) -> None:
    """On Anthropic the workspace key travels as x-api-key."""
    workspace = new_workspace(db_env, "auth-anthropic")
    set_provider_key(db_env, workspace, "anthropic", "sk-ant-api03-WorkspaceKeyForTests-XYZW")
    key = cli_json("key", "create", "--workspace", workspace, env=db_env)["key"]
    mock.clear()
    response = httpx.post(
        f"{gateway.url}/v1/messages",
        content=b'{"model":"claude-sonnet-5-5","max_tokens":8,"messages":[]}',
        headers={"x-api-key": key, "anthropic-version": "2023-06-01"},
    )
    assert response.status_code == 200, response.text
    seen = [r for r in mock.requests() if r["path"] == "/v1/messages"][-1]["headers"]
    assert seen["x-api-key"] == "sk-ant-api03-WorkspaceKeyForTests-XYZW"


@pytest.mark.parametrize(
    "key",
    ["rcv_live_" + "A" * 43, "rcv_test_short", "rcv_live_" + "B" * 43 + "\u00e9"],
)
def test_unknown_keys_are_401(gateway: Gateway, key: str) -> None:
    """Unknown or malformed rcv_ keys get 401 invalid_api_key in the surface's shape."""
    response = httpx.post(
        f"{gateway.url}/v1/messages", content=CHAT, headers={"x-api-key": key.encode("utf-8")}
    )
    assert response.status_code == 401
    assert response.json()["error"]["type"] == "authentication_error"
    assert response.json()["error"]["code"] == "invalid_api_key"


def test_revocation_reaches_the_gateway_within_a_second(
    gateway: Gateway, db_env: dict[str, str]
) -> None:
    """A revoked key stops working at once, even though it was cached."""
    workspace = new_workspace(db_env, "auth-revoke")
    key = cli_json("key", "create", "--workspace", workspace, env=db_env)
    assert post(gateway, key["key"]).status_code == 200  # now cached
    cli_json("key", "revoke", key["key_id"], env=db_env)
    wait_until(lambda: post(gateway, key["key"]).status_code == 401, 1.0, "revocation")


def test_missing_provider_key_is_a_clear_400(gateway: Gateway, db_env: dict[str, str]) -> None:
    """A workspace without a key for the provider gets a 400 that says what to do."""
    workspace = cli_json("workspace", "create", "auth-nokey", env=db_env)["workspace_id"]
    key = cli_json("key", "create", "--workspace", workspace, env=db_env)["key"]
    response = post(gateway, key)
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "provider_key_missing"


def test_key_store_down_fails_closed(start_gateway: Callable[..., Gateway], workdir: Path) -> None:
    """With Postgres stopped, a cached key keeps working and an uncached one gets 503."""
    own = Postgres()
    try:
        env = {
            "RECOVEA_DATABASE_URL": own.url,
            "RECOVEA_MASTER_KEY_FILE": str(workdir / "own-master.key"),
        }
        workspace = new_workspace(env, "down")
        cached = cli_json("key", "create", "--workspace", workspace, env=env)["key"]
        uncached = cli_json("key", "create", "--workspace", workspace, env=env)["key"]
        gw = start_gateway(**env)
        assert post(gw, cached).status_code == 200
        own.stop()
        assert post(gw, cached).status_code == 200
        refused = post(gw, uncached)
        assert refused.status_code == 503
        assert refused.json()["error"]["code"] == "auth_unavailable"
        assert post(gw, "rcv_live_" + "C" * 43).status_code == 503
        own.start()
        wait_until(lambda: post(gw, uncached).status_code == 200, 20, "recovery")
        # The revocation listener reconnects by itself: revocations work again.
        later = cli_json("key", "create", "--workspace", workspace, env=env)
        assert post(gw, later["key"]).status_code == 200
        cli_json("key", "revoke", later["key_id"], env=env)
        wait_until(lambda: post(gw, later["key"]).status_code == 401, 15, "revocation")
    finally:
        own.stop()


def test_cli_never_prints_a_provider_key(db_env: dict[str, str]) -> None:
    """provider-key set shows only the last four characters."""
    workspace = cli_json("workspace", "create", "auth-print", env=db_env)["workspace_id"]
    done = cli(
        "provider-key",
        "set",
        "--workspace",
        workspace,
        "--provider",
        "openrouter",
        env=db_env,
        stdin="sk-or-v1-NeverPrintThisKey5678\n",
    )
    assert done.returncode == 0, done.stderr
    assert "5678" in done.stdout
    assert "NeverPrintThisKey" not in done.stdout + done.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("key", "create", "--workspace", "not-a-uuid"), "must be a UUID"),
        (("key", "create", "--workspace", "00000000-0000-0000-0000-000000000000"), "no workspace"),
        (("key", "revoke", "00000000-0000-0000-0000-000000000000"), "no active key"),
        (("workspace", "create", "x" * 101), "1 to 100"),
    ],
)
def test_cli_rejects_bad_input_clearly(
    db_env: dict[str, str], args: tuple[str, ...], message: str
) -> None:
    """Bad ids and names get exit code 1 and a one-line reason."""
    done = cli(*args, env=db_env)
    assert done.returncode == 1
    assert message in done.stderr


def test_init_prints_the_admin_key_once(workdir: Path) -> None:
    """`recovea init` on a fresh database creates `default` and an admin key; a second
    run refuses instead of minting another."""
    own = Postgres()
    try:
        env = {"RECOVEA_DATABASE_URL": own.url, "RECOVEA_MASTER_KEY_FILE": str(own.data_dir / "m")}
        first = cli("init", env=env)
        assert first.returncode == 0, first.stderr
        assert "rcv_live_" in first.stdout and "shown once" in first.stdout
        again = cli("init", env=env)
        assert again.returncode == 1
        assert "already initialized" in again.stderr
        assert "rcv_live_" not in again.stdout
    finally:
        own.stop()
