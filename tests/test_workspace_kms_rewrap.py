"""A workspace's own KMS key, set and cleared: `recovea workspace kms set|clear` and
`/admin/v1/workspace/kms` re-wrap the workspace's provider keys all or nothing — the
stored wrapped keys change, the ciphertexts and the provider keys do not — and a key
gone for good can be let go of only by dropping the keys it held.

Real parts throughout (tests/workspace_kms_support.py): moto's KMS server over HTTP
through boto3, behind a front that refuses as AWS KMS does; a gateway process; the
CLI; an embedded Postgres of the module's own.
"""

from __future__ import annotations

import secrets
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.kms_front import Refusal
from tests.support import MockServer, cli, cli_json, set_provider_key, wait_until
from tests.workspace_kms_support import (
    Workspace,
    World,
    chat,
    kms_answering,
    kms_set,
    message,
    new_workspace,
    open_world,
    received,
    refused,
    sealed_rows,
    served,
    show,
)


@pytest.fixture(scope="module")
def world(mock: MockServer, workdir: Path) -> Iterator[World]:
    with open_world(mock, workdir) as opened:
        yield opened


@pytest.fixture(autouse=True)
def kms_answers(world: World) -> Iterator[None]:
    """Every test starts and ends with KMS answering everything."""
    with kms_answering(world):
        yield


def test_kms_set_rewraps_existing_provider_keys_and_clear_puts_them_back(world: World) -> None:
    """`kms set` (given an alias) on a workspace that has provider keys re-wraps their
    data keys under the key's ARN: the stored wrapped keys change, the ciphertexts and
    the provider keys do not. A provider key stored afterwards is sealed under the
    workspace's key, `provider-key rotate` leaves them all there, and `kms clear`
    re-wraps them under the deployment's key."""
    workspace = new_workspace(world, "rewrap")
    assert served(world, workspace)
    before = sealed_rows(world, workspace.id)
    assert {row[4] for row in before} == {world.keys.deployment}

    result = kms_set(world, workspace.id, world.keys.two_alias)
    assert (result["rewrapped"], result["kms_key_arn"]) == (2, world.keys.two_arn)
    after = sealed_rows(world, workspace.id)
    for old, new in zip(before, after, strict=True):
        assert new[:3] == old[:3], "the ciphertext changed"
        assert new[3] != old[3], "the data key was not re-wrapped"
        assert new[4:] == (world.keys.two_arn, "kms")
    mark = world.front.mark()
    wait_until(lambda: served(world, workspace), 10, "served on the re-wrapped key")
    probe = uuid.uuid4().hex
    assert message(world, workspace, probe).status_code == 200
    assert received(world, probe)[0]["x-api-key"] == workspace.anthropic
    assert {
        call.key_id
        for call in world.front.calls_since(mark)
        if call.operation == "Decrypt" and call.context.get("workspace") == workspace.id
    } == {world.keys.two_arn}

    set_provider_key(world.env, workspace.id, "openrouter", "sk-or-v1-" + secrets.token_hex(16))
    cli_json("provider-key", "rotate", env=world.env)
    assert {row[4] for row in sealed_rows(world, workspace.id)} == {world.keys.two_arn}

    cleared = cli_json("workspace", "kms", "clear", "--workspace", workspace.id, env=world.env)
    assert cleared["rewrapped"] == 3
    back = sealed_rows(world, workspace.id)
    assert {row[4] for row in back} == {world.keys.deployment}
    assert [row[:3] for row in back if row[0] != "openrouter"] == [row[:3] for row in before]
    wait_until(lambda: served(world, workspace), 10, "served on the deployment key")
    assert show(world, workspace.id)["kms"]["key_arn"] is None


def test_a_rewrap_that_fails_halfway_changes_nothing(world: World) -> None:
    """`kms set` whose re-wrap fails at the second of two provider keys (the first
    already re-wrapped and written) rolls everything back: the stored keys are byte
    for byte as before, the workspace keeps its old key and is still served."""
    workspace = new_workspace(world, "halfway", key=world.keys.one)
    before = sealed_rows(world, workspace.id)
    world.front.refuse(
        Refusal(
            world.keys.two,
            "AccessDeniedException",
            operation="Encrypt",
            when_context=(("workspace", workspace.id), ("provider", "openai")),
        )
    )
    mark = world.front.mark()
    done = cli(
        "workspace",
        "kms",
        "set",
        "--workspace",
        workspace.id,
        "--key-id",
        world.keys.two,
        env=world.env,
    )
    assert done.returncode == 1
    assert "nothing was changed" in done.stderr and "access_denied" in done.stderr
    encrypts = [
        (call.context.get("provider"), call.refused)
        for call in world.front.calls_since(mark)
        if call.operation == "Encrypt" and "provider" in call.context
    ]
    assert encrypts == [("anthropic", None), ("openai", "AccessDeniedException")]
    assert sealed_rows(world, workspace.id) == before
    assert show(world, workspace.id)["kms"]["key_arn"] == world.keys.one_arn
    assert served(world, workspace)


def test_the_admin_api_sets_shows_and_clears_the_workspace_key_for_admins_only(
    world: World,
) -> None:
    """`/admin/v1/workspace/kms`: member keys get 403; an admin key sets the key (a key
    the gateway cannot use is 400 and changes nothing), reads it, and clears it (503
    `provider_key_unavailable`, changing nothing, while the key refuses)."""
    workspace = new_workspace(world, "admin-api")
    env = world.env
    admin_key = cli_json("key", "create", "--workspace", workspace.id, "--role", "admin", env=env)[
        "key"
    ]

    def call(key: str, method: str, body: dict[str, str] | None = None) -> httpx.Response:
        return httpx.request(
            method,
            f"{world.gateway.url}/admin/v1/workspace/kms",
            headers={"authorization": f"Bearer {key}"},
            json=body,
            timeout=60,
        )

    for method in ("GET", "PUT", "DELETE"):
        forbidden = call(workspace.rcv_key, method, {"key_id": world.keys.two})
        assert forbidden.status_code == 403, method
    assert show(world, workspace.id)["kms"]["key_arn"] is None

    unusable = call(admin_key, "PUT", {"key_id": str(uuid.uuid4())})
    assert unusable.status_code == 400, unusable.text
    assert unusable.json()["error"]["code"] == "invalid_request"
    assert "not_found" in unusable.json()["error"]["message"]
    assert call(admin_key, "GET").json()["key_arn"] is None

    put = call(admin_key, "PUT", {"key_id": world.keys.two})
    assert put.status_code == 200, put.text
    assert (put.json()["kms_key_arn"], put.json()["rewrapped"]) == (world.keys.two_arn, 2)
    assert call(admin_key, "GET").json()["key_arn"] == world.keys.two_arn
    assert served(world, workspace)

    before = sealed_rows(world, workspace.id)
    world.front.refuse(Refusal(world.keys.two, "DisabledException"))
    blocked = call(admin_key, "DELETE")
    assert blocked.status_code == 503, blocked.text
    assert blocked.json()["error"]["code"] == "provider_key_unavailable"
    assert sealed_rows(world, workspace.id) == before
    world.front.allow_all()

    cleared = call(admin_key, "DELETE")
    assert cleared.status_code == 200, cleared.text
    assert call(admin_key, "GET").json()["key_arn"] is None
    assert {row[4] for row in sealed_rows(world, workspace.id)} == {world.keys.deployment}
    wait_until(lambda: served(world, workspace), 10, "served on the deployment key")


def test_a_key_gone_for_good_is_cleared_only_by_dropping_the_provider_keys(world: World) -> None:
    """When the workspace's key is deleted, `kms clear` cannot re-wrap (it needs the
    key) and changes nothing; `kms clear --drop-provider-keys` deletes the provider
    keys that can no longer be opened and puts the workspace back on the deployment's
    key, where new provider keys are stored and served."""
    workspace = new_workspace(world, "gone", key=world.keys.one)
    before = sealed_rows(world, workspace.id)
    world.front.refuse(Refusal(world.keys.one, "NotFoundException"))
    done = cli("workspace", "kms", "clear", "--workspace", workspace.id, env=world.env)
    assert done.returncode == 1
    assert "not_found" in done.stderr and "nothing was changed" in done.stderr
    assert sealed_rows(world, workspace.id) == before
    wait_until(lambda: refused(chat(world, workspace, uuid.uuid4().hex)), 10, "a 503")

    dropped = cli_json(
        "workspace",
        "kms",
        "clear",
        "--workspace",
        workspace.id,
        "--drop-provider-keys",
        env=world.env,
    )
    assert (dropped["dropped"], dropped["kms_key_arn"]) == (2, None)
    assert sealed_rows(world, workspace.id) == []
    fresh = f"sk-proj-after-{secrets.token_hex(12)}"
    set_provider_key(world.env, workspace.id, "openai", fresh)
    assert {row[4] for row in sealed_rows(world, workspace.id)} == {world.keys.deployment}
    renewed = Workspace(workspace.id, workspace.rcv_key, fresh, workspace.anthropic)
    wait_until(lambda: served(world, renewed), 10, "served on the new provider key")
