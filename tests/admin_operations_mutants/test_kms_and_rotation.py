"""`init`'s defaults, a workspace on its own KMS key (its provider keys sealed under
that key or not stored at all), and `provider-key rotate` (rewrapped under the
current master, or moved off a KMS key the deployment no longer names)."""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import Callable, Coroutine, Iterator
from typing import Any

import asyncpg
import pytest

from recovea_proxy.admin import operations as ops
from recovea_proxy.auth.envelope import LocalMasterKey, Sealed, context_for, open_sealed
from recovea_proxy.auth.keyring import Keyring
from recovea_proxy.auth.keys import key_hash
from recovea_proxy.auth.kms import KmsMasterKey
from recovea_proxy.store.database import connect
from tests.admin_operations_mutants.support import name, refusal
from tests.support import free_port


async def put_on_kms(owner: asyncpg.Connection, workspace: str, arn: str) -> None:
    """What `recovea workspace kms set` records (after it has tried the key)."""
    await owner.execute(
        "UPDATE recovea.workspaces SET kms_key_id = $2, kms_key_arn = $2, kms_set_at = now()"
        " WHERE customer_id = $1",
        uuid.UUID(workspace),
        arn,
    )


async def test_a_provider_key_of_a_workspace_whose_own_kms_key_is_unreachable_is_not_stored(
    app: asyncpg.Connection,
    owner: asyncpg.Connection,
    keyring: Keyring,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A workspace on its own KMS key has its provider keys sealed under that key and no
    other: when KMS cannot be reached the key is refused (503 `unreachable`, with a line
    that says so) and nothing is stored — never sealed under the deployment's key
    instead."""
    monkeypatch.setenv("AWS_ENDPOINT_URL_KMS", f"http://127.0.0.1:{free_port()}")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    workspace = await ops.create_workspace(owner, name("kms"))
    await put_on_kms(owner, workspace, "arn:aws:kms:us-east-1:111122223333:key/ops-test")
    with pytest.raises(ops.KmsRefusedError) as caught:
        await ops.set_provider_key(app, keyring, workspace, "openai", "sk-never-stored-0001")
    assert str(caught.value) == (
        "the workspace's KMS key refused or could not be reached (unreachable);"
        " the key was not stored"
    )
    assert (caught.value.reason, caught.value.status) == ("unreachable", 503)
    assert await ops.list_provider_keys(owner, workspace) == []


class _SlowMaster(LocalMasterKey):
    """The deployment's master key, while an operator puts the workspace on its own KMS
    key between the read of the workspace and the write of the sealed key."""

    meanwhile: Callable[[], Coroutine[Any, Any, None]]
    loop: asyncio.AbstractEventLoop

    def generate_data_key(self, context: dict[str, str]) -> tuple[bytes, bytes]:
        asyncio.run_coroutine_threadsafe(self.meanwhile(), self.loop).result(10)
        return super().generate_data_key(context)


async def test_a_provider_key_sealed_while_the_workspace_moved_to_its_own_kms_key_is_refused(
    owner: asyncpg.Connection, migrated: str
) -> None:
    """A key sealed under the deployment's master while `workspace kms set` put the
    workspace on its own key is not stored (it would sit outside the key the customer
    controls); the operator is told to store it again."""
    workspace = await ops.create_workspace(owner, name("moved"))
    other = await connect(migrated)
    master = _SlowMaster(os.urandom(32), f"local:{uuid.uuid4().hex[:16]}")
    master.loop = asyncio.get_running_loop()
    master.meanwhile = lambda: put_on_kms(other, workspace, "arn:aws:kms:eu-west-1:1:key/moved")
    try:
        assert await refusal(
            ops.set_provider_key(owner, Keyring(master, {}), workspace, "openai", "sk-moved-0001")
        ) == ("the workspace's KMS key changed meanwhile; store the key again")
    finally:
        await other.close()
    assert await ops.list_provider_keys(owner, workspace) == []


async def test_init_makes_workspace_default_on_the_free_plan_with_one_live_admin_key(
    empty: asyncpg.Connection,
) -> None:
    """On a new database `init` makes workspace `default` (free plan) and one live admin
    key, stored as its hash; a second `init` is refused with a pointer to `key create`."""
    workspace, key = await ops.init(empty)
    described = await ops.describe_workspace(empty, workspace)
    assert (described["name"], described["plan"]) == ("default", "free")
    assert (key.workspace_id, key.role, key.env) == (workspace, "admin", "live")
    assert key.secret.startswith("rcv_live_")
    listed = await ops.list_keys(empty, workspace)
    assert [(k["id"], k["role"], k["env"]) for k in listed] == [(key.id, "admin", "live")]
    stored = await empty.fetchval(
        "SELECT key_sha256 FROM recovea.rcv_keys WHERE id = $1", uuid.UUID(key.id)
    )
    assert stored == key_hash(key.secret)
    assert await refusal(ops.init(empty)) == (
        "already initialized: workspace 'default' exists"
        " (create more keys with `recovea key create`)"
    )


async def test_rotation_rewraps_every_provider_key_under_the_current_master_but_own_kms_ones(
    empty: asyncpg.Connection,
) -> None:
    """`provider-key rotate` re-wraps each stored data key under the current master key
    (the ciphertext stays, and opens with the re-wrapped key under its own row's
    context), counts the rows it rewrote, and leaves the rows of a workspace on its own
    KMS key exactly as they were."""
    old = LocalMasterKey(os.urandom(32), f"local:{uuid.uuid4().hex[:16]}")
    new = LocalMasterKey(os.urandom(32), f"local:{uuid.uuid4().hex[:16]}")
    before = Keyring(old, {})
    one = await ops.create_workspace(empty, name("rot"))
    two = await ops.create_workspace(empty, name("rot"))
    own = await ops.create_workspace(empty, name("rot"))
    secrets = {
        (one, "openai"): "sk-one-openai-0001",
        (one, "anthropic"): "sk-one-anthropic-0002",
        (two, "openai"): "sk-two-openai-0003",
    }
    for (workspace, provider), secret in secrets.items():
        await ops.set_provider_key(empty, before, workspace, provider, secret)
    await ops.set_provider_key(empty, before, own, "openai", "sk-own-openai-0004")
    await put_on_kms(empty, own, "arn:aws:kms:us-east-1:111122223333:key/own")
    query = (
        "SELECT id, customer_id, provider, ciphertext, nonce, wrapped_data_key,"
        " master_key_id, backend FROM recovea.provider_keys"
    )
    was = {(str(r["customer_id"]), r["provider"]): r for r in await empty.fetch(query)}

    assert await ops.rewrap_provider_keys(empty, Keyring(new, {old.key_id: old})) == 3

    now = {(str(r["customer_id"]), r["provider"]): r for r in await empty.fetch(query)}
    assert now[(own, "openai")] == was[(own, "openai")]
    for (workspace, provider), secret in secrets.items():
        row = now[(workspace, provider)]
        assert (row["master_key_id"], row["backend"]) == (new.key_id, "local")
        assert row["ciphertext"] == was[(workspace, provider)]["ciphertext"]
        context = context_for(workspace, provider, str(row["id"]))
        sealed = Sealed(
            row["ciphertext"], row["nonce"], row["wrapped_data_key"], new.key_id, "local"
        )
        assert open_sealed(new.unwrap(row["wrapped_data_key"], context), sealed, context) == (
            bytearray(secret.encode())
        )


@pytest.fixture
def kms_key(monkeypatch: pytest.MonkeyPatch) -> Iterator[KmsMasterKey]:
    """A key in moto's KMS server (over HTTP, through boto3), which the process's KMS
    clients reach by the usual AWS environment."""
    import boto3
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    monkeypatch.setenv("AWS_ENDPOINT_URL_KMS", f"http://{host}:{port}")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    client = boto3.client("kms", region_name="us-east-1")
    yield KmsMasterKey(client.create_key(Description="ops")["KeyMetadata"]["Arn"], client)
    server.stop()


async def test_rotation_moves_keys_off_a_kms_key_the_deployment_no_longer_names(
    empty: asyncpg.Connection, kms_key: KmsMasterKey
) -> None:
    """A provider key stored while RECOVEA_KMS_KEY_ID was set is still read through that
    KMS key after it is unset (the row names its backend and key), and `rotate` moves it
    under the local master."""
    workspace = await ops.create_workspace(empty, name("unkms"))
    await ops.set_provider_key(empty, Keyring(kms_key, {}), workspace, "openai", "sk-kms-era-0001")
    local = LocalMasterKey(os.urandom(32), f"local:{uuid.uuid4().hex[:16]}")
    assert await ops.rewrap_provider_keys(empty, Keyring(local, {})) == 1
    row = await empty.fetchrow(
        "SELECT id, ciphertext, nonce, wrapped_data_key, master_key_id, backend"
        " FROM recovea.provider_keys WHERE customer_id = $1",
        uuid.UUID(workspace),
    )
    assert (row["master_key_id"], row["backend"]) == (local.key_id, "local")
    context = context_for(workspace, "openai", str(row["id"]))
    sealed = Sealed(row["ciphertext"], row["nonce"], row["wrapped_data_key"], local.key_id, "local")
    assert open_sealed(local.unwrap(row["wrapped_data_key"], context), sealed, context) == (
        bytearray(b"sk-kms-era-0001")
    )
